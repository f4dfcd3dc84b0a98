//! The HTTP server around the router, with the limits a server exposed to the internet needs:
//! a header-read timeout (hyper, and before it ours on the first bytes, which hyper-util reads
//! with no timeout to tell HTTP/1 from HTTP/2), an idle timeout and HTTP/2 keep-alive pings per
//! connection, a request timeout (tower) and a body-read timeout (tower-http), and a global
//! in-flight limit that sheds excess load with 503 + `Retry-After` (tower).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::Service;
use tower::ServiceBuilder;
use tower_http::timeout::RequestBodyTimeoutLayer;

use super::ApiError;

/// Default `HEADER_READ_TIMEOUT_SECS`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `REQUEST_TIMEOUT_SECS`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `BODY_READ_TIMEOUT_SECS`.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `IDLE_TIMEOUT_SECS`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often an HTTP/2 connection is pinged, and how long the answer may take before the
/// connection is closed.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Default `MAX_IN_FLIGHT_REQUESTS`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// How long a graceful shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Time and concurrency limits of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A connection that has not sent a whole request head within this is closed.
    pub header_read_timeout: Duration,
    /// A request not answered within this is answered 408.
    pub request_timeout: Duration,
    /// A body that sends nothing for this long is abandoned (408).
    pub body_read_timeout: Duration,
    /// A connection (HTTP/1 keep-alive or HTTP/2) without a request in flight for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// Requests handled at once; more are answered 503 with `Retry-After` at once.
    pub max_in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// The router wrapped in the in-flight limit, the request timeout and the body-read timeout.
/// The layers wrap the router as one service rather than each of its routes (`Router::layer`):
/// a route's layers are cloned, boxed, for every request it serves.
pub fn with_limits(
    router: Router,
    limits: &HttpLimits,
) -> impl Service<
    axum::http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|error: tower::BoxError| async move {
            if error.is::<tower::timeout::error::Elapsed>() {
                ApiError::Timeout.into_response()
            } else {
                ApiError::Overloaded.into_response()
            }
        }))
        .load_shed()
        .concurrency_limit(limits.max_in_flight.max(1))
        .layer(DeadlineLayer {
            timeout: limits.request_timeout,
        })
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .service(router)
}

/// When a request that carries messages must have been read: its body read and checked
/// within `REQUEST_TIMEOUT_SECS` (else 408); once it publishes, it is not cut, so that its
/// answer always says what was stored (publishing is bounded by JetStream's ack wait). A
/// request extension of the ingest routes, set by [`DeadlineLayer`].
#[derive(Debug, Clone, Copy)]
pub struct ReadDeadline(pub tokio::time::Instant);

/// Whether `path` is an ingest route (its deadline covers reading only).
fn is_ingest(path: &str) -> bool {
    path.starts_with("/ingest/message") || path.starts_with("/ingest/batch")
}

/// The request timeout: the whole request on every route but the ingest ones, which get a
/// [`ReadDeadline`] instead.
#[derive(Debug, Clone, Copy)]
struct DeadlineLayer {
    timeout: Duration,
}

impl<S: Clone> tower::Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            timed: tower::timeout::Timeout::new(inner.clone(), self.timeout),
            inner,
            timeout: self.timeout,
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Debug, Clone)]
struct Deadline<S> {
    inner: S,
    timed: tower::timeout::Timeout<S>,
    timeout: Duration,
}

impl<S, B> Service<axum::http::Request<B>> for Deadline<S>
where
    S: Service<axum::http::Request<B>, Response = Response> + Clone,
    S::Error: Into<tower::BoxError>,
{
    type Response = Response;
    type Error = tower::BoxError;
    type Future = futures::future::Either<
        futures::future::ErrInto<S::Future, tower::BoxError>,
        <tower::timeout::Timeout<S> as Service<axum::http::Request<B>>>::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.timed.poll_ready(cx),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        use futures::TryFutureExt as _;
        if is_ingest(request.uri().path()) {
            let deadline = tokio::time::Instant::now() + self.timeout;
            request.extensions_mut().insert(ReadDeadline(deadline));
            futures::future::Either::Left(self.inner.call(request).err_into())
        } else {
            futures::future::Either::Right(self.timed.call(request))
        }
    }
}

/// Whether a body error is the body-read timeout.
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// The HTTP/2 connection preface, which hyper-util's auto builder waits for (or for bytes that
/// differ from it) before it starts any timer.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the first bytes on `stream` tell HTTP/1 from HTTP/2 (without consuming them);
/// false if the peer closed first.
async fn protocol_known(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        // `peek` waits for data; it returns at once while a partial preface sits unread, so
        // such a peer is looked at again a little later.
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(false);
        }
        if n == H2_PREFACE.len() || first[..n] != H2_PREFACE[..n] {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` when the last request ended.
    last_done_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
        })
    }

    /// When the connection becomes idle for `idle`, if nothing happens before.
    fn idle_at(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + idle;
        }
        let done = Duration::from_millis(self.last_done_ms.load(Ordering::Acquire));
        self.born + done + idle
    }
}

/// Ends one request's place in its connection's [`Activity`] when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let done = u64::try_from(self.0.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_done_ms.store(done, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A service that keeps its connection's [`Activity`].
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, R> Service<R> for Tracked<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        TrackedFuture {
            inner: self.inner.call(request),
            _in_flight: InFlight(self.activity.clone()),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future holding its request's place in the connection's activity.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        _in_flight: InFlight,
    }
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (at most 30 s). Every connection is bounded in time: its first bytes must come within the
/// header timeout, each request head too (hyper), and it is closed after `idle_timeout`
/// without a request (HTTP/2 connections are also pinged, and closed when a ping goes
/// unanswered).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let app = with_limits(app, limits);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    let (header_timeout, idle_timeout) = (limits.header_read_timeout, limits.idle_timeout);
    let stopping = tokio_util::sync::CancellationToken::new();
    let connections = tokio_util::task::TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, builder, stopping) = (app.clone(), builder.clone(), stopping.clone());
        connections.spawn(async move {
            let known = tokio::select! {
                known = tokio::time::timeout(header_timeout, protocol_known(&stream)) => known,
                () = stopping.cancelled() => return,
            };
            if !matches!(known, Ok(Ok(true))) {
                return;
            }
            let activity = Activity::new();
            let service = TowerToHyperService::new(Tracked {
                inner: app,
                activity: activity.clone(),
            });
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = stopping.cancelled(), if !closing => {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    () = tokio::time::sleep_until(activity.idle_at(idle_timeout).into()), if !closing => {
                        if Instant::now() >= activity.idle_at(idle_timeout) {
                            connection.as_mut().graceful_shutdown();
                            closing = true;
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 30 s; stopping anyway");
    }
}
