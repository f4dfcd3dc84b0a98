//! The HTTP server around the router, with the limits a server exposed to the internet needs:
//! a header-read timeout (hyper), a request timeout (tower) and a body-read timeout
//! (tower-http), and a global in-flight limit that sheds excess load with 503 + `Retry-After`
//! (tower).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

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
    /// Requests handled at once; more are answered 503 with `Retry-After` at once.
    pub max_in_flight: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
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
        .timeout(limits.request_timeout)
        .layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .service(router)
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

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish
/// (at most 30 s).
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 30 s; stopping anyway");
    }
}
