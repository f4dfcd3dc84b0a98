//! The HTTP api: validates each message against the generated parser, wraps it in a
//! [`MessageEnvelope`](crate::envelope::MessageEnvelope), publishes it to JetStream and answers
//! once JetStream has acked it.
//!
//! Routes: `POST /ingest/message/{entity}`, `POST /ingest/message` (entity from `?entity_type=`,
//! `X-Entity-Type` or a top-level `entity_type` member), `POST /ingest/batch/{entity}` (NDJSON),
//! `GET /ingest/status/{message_id}`, `GET /health`, `GET /ready`, `GET /metrics`,
//! `GET /api-docs/openapi.json`, `GET /swagger-ui`.
//!
//! With API keys configured ([`ApiKeys`]) every route but `/health`, `/ready` and the static
//! Swagger UI page needs a key;
//! `/metrics` needs one scoped `metrics`, or moves to its own port ([`metrics_router`]).

mod answer;
pub mod auth;
mod batch;
mod body;
pub mod budget;
mod config;
pub mod console;
pub mod detect;
mod error;
mod group;
pub mod idempotency;
mod ids;
mod ingest;
mod metrics;
mod openapi;
pub mod server;
mod status;
mod validate;

pub use config::{ApiConfig, DEFAULT_ADMIN_HOST, DEFAULT_ADMIN_PORT, env_vars};
pub use console::{CONTENT_SECURITY_POLICY, admin_openapi_document, admin_router};

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_nats::jetstream;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::Uri;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use tower::{Layer, Service};

pub use answer::IngestResponse;
pub use auth::{ApiKeys, Client};
pub use batch::MAX_ERRORS_SHOWN;
pub use budget::{BodyBudget, DEFAULT_MAX_INFLIGHT_BODY_BYTES};
pub use error::{ApiError, Dependency};
pub use metrics::ApiMetrics;
pub use openapi::{DocumentOptions, IDEMPOTENCY_KEY_PATTERN, openapi_document};
pub use server::{HttpLimits, serve};

use crate::nats::{JetStreamPublisher, Publish};
use crate::store::Store;

/// Default limit of a single message body (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default limit of a batch body (16 MiB).
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Default limit of lines in a batch.
pub const DEFAULT_MAX_BATCH_LINES: usize = 10_000;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// JetStream context to publish with.
    pub jetstream: jetstream::Context,
    /// Stream name; subjects are `<stream>.<entity>.<message_id>`.
    pub stream: String,
    /// Where messages are published (JetStream, or any [`Publish`]).
    pub publisher: Arc<dyn Publish>,
    /// The store, for status lookups and readiness (PostgreSQL, or any [`Store`]).
    pub store: Arc<dyn Store>,
    /// Prometheus metrics.
    pub metrics: ApiMetrics,
    /// Largest accepted single-message body.
    pub max_body_bytes: usize,
    /// Largest accepted batch body.
    pub max_batch_bytes: usize,
    /// Most lines in one batch.
    pub max_batch_lines: usize,
    /// The bytes of request bodies held at once (`MAX_INFLIGHT_BODY_BYTES`).
    pub body_budget: Arc<BodyBudget>,
    /// Digests of bodies sent with an `Idempotency-Key`, within the deduplication window.
    fingerprints: Arc<idempotency::Fingerprints>,
    /// API keys; none: authentication off.
    pub keys: ApiKeys,
    /// Whether `/metrics` is served by [`router`] (false when it has a port of its own).
    pub metrics_on_main_port: bool,
    /// Publishes single messages with fresh ids in groups (see [`group`]).
    groups: Arc<group::GroupPublishers>,
    /// The NATS server's `max_payload` less the room a dead letter's headers take: a message
    /// larger than this could not be dead-lettered whole.
    max_message_bytes: usize,
    /// The workers' durable consumer (`NATS_CONSUMER`), whose backlog the console shows.
    pub consumer: String,
    /// The console's own state (when the process started, the overview last read).
    console: Arc<console::ConsoleState>,
}

impl AppState {
    /// State with default limits and fresh metrics, reading status from `store`.
    pub fn new(
        jetstream: jetstream::Context,
        stream: impl Into<String>,
        store: Arc<dyn Store>,
    ) -> Self {
        let stream = stream.into();
        let metrics = ApiMetrics::new();
        let publisher: Arc<dyn Publish> = Arc::new(JetStreamPublisher::new(jetstream.clone()));
        let max_payload = publisher.max_payload();
        Self {
            max_message_bytes: max_payload.saturating_sub(crate::envelope::DEAD_LETTER_HEADROOM),
            groups: Arc::new(group::GroupPublishers::new(
                publisher.clone(),
                stream.clone(),
                metrics.publish_group_messages.clone(),
            )),
            publisher,
            jetstream,
            stream,
            store,
            metrics,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_batch_lines: DEFAULT_MAX_BATCH_LINES,
            body_budget: Arc::new(BodyBudget::default()),
            fingerprints: Arc::default(),
            keys: ApiKeys::none(),
            metrics_on_main_port: true,
            consumer: crate::defaults::CONSUMER.to_string(),
            console: Arc::default(),
        }
    }
}

impl AppState {
    /// The same state publishing through `publisher` (its groups and message limit follow it).
    pub fn with_publisher(mut self, publisher: Arc<dyn Publish>) -> Self {
        self.max_message_bytes = publisher
            .max_payload()
            .saturating_sub(crate::envelope::DEAD_LETTER_HEADROOM);
        self.groups = Arc::new(group::GroupPublishers::new(
            publisher.clone(),
            self.stream.clone(),
            self.metrics.publish_group_messages.clone(),
        ));
        self.publisher = publisher;
        self
    }
}

impl AppState {
    /// The largest body of one message (a request, a batch line): `max_body_bytes`, within what
    /// the NATS server can carry with a dead letter's headers (so every accepted message can be
    /// dead-lettered whole, see `worker::dead_letter`).
    pub fn body_limit(&self) -> usize {
        self.max_body_bytes.min(self.max_message_bytes)
    }
}

/// Builds the router with all routes.
pub fn router(state: AppState) -> Router {
    let metrics_here = state.metrics_on_main_port;
    let state = Arc::new(state);
    let mut keyed = Router::new()
        .route("/ingest/message/{entity}", post(ingest::ingest_entity))
        .route("/ingest/message", post(ingest::ingest_untyped))
        .route("/ingest/validate/{entity}", post(validate::validate))
        .route(
            "/ingest/batch/{entity}",
            // Streamed: the handler counts bytes and lines itself.
            post(batch::ingest_batch),
        )
        .route("/ingest/batch", post(batch::ingest_batch_untyped))
        .route("/ingest/status/{message_id}", get(status::message_status))
        .route("/api-docs/openapi.json", get(openapi::openapi_json));
    if metrics_here {
        keyed = keyed.route(
            "/metrics",
            get(status::metrics).layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_metrics_scope,
            )),
        );
    }
    // `route_layer`: an unknown path is a 404, not a 401.
    let keyed = keyed.route_layer(auth::RequireKeyLayer(state.clone()));
    Router::new()
        .route("/health", get(status::health))
        .route("/ready", get(status::ready))
        // The UI page and its assets are static; the page asks for a key to load the document.
        .route("/swagger-ui", get(openapi::swagger_ui))
        .route("/swagger-ui/", get(openapi::swagger_ui))
        .route("/swagger-ui/{asset}", get(openapi::swagger_asset))
        .merge(keyed)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CountRequestsLayer(state.clone()))
        .with_state(state)
}

/// `/metrics` (and `/health`) without a key, for `METRICS_PORT`: a port that only the
/// monitoring network reaches, so the main port need not expose metrics at all.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(status::metrics))
        .route("/health", get(status::health))
        .fallback(|uri: Uri| async move {
            ApiError::NotFound(format!(
                "no route for {}; this port serves GET /metrics and GET /health",
                uri.path().chars().take(200).collect::<String>()
            ))
        })
        .with_state(Arc::new(state))
}

/// The routes of [`router`], as a 404 lists them.
pub const ROUTES: &[&str] = &[
    "POST /ingest/message/{entity}",
    "POST /ingest/message",
    "POST /ingest/validate/{entity}",
    "POST /ingest/batch/{entity}",
    "POST /ingest/batch",
    "GET /ingest/status/{message_id}",
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /api-docs/openapi.json",
    "GET /swagger-ui",
];

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().chars().take(200).collect())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Counts every request by route template, method and status (all closed sets). A tower layer
/// rather than `from_fn`, which clones the route and boxes a future for every request.
#[derive(Clone)]
struct CountRequestsLayer(Arc<AppState>);

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            state: self.0.clone(),
        }
    }
}

/// See [`CountRequestsLayer`].
#[derive(Clone)]
struct CountRequests<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> Service<Request> for CountRequests<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // MatchedPath is a shared string: cloning it does not copy the route.
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = crate::labels::method_label(request.method());
        let request_id = request.headers().get(REQUEST_ID).cloned();
        Counted {
            request_id,
            inner: self.inner.call(request),
            state: Some(self.state.clone()),
            route,
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future that counts its response when it is ready.
    struct Counted<F> {
        #[pin]
        inner: F,
        state: Option<Arc<AppState>>,
        route: Option<MatchedPath>,
        method: &'static str,
        started: Instant,
        // The client's `x-request-id`, if it sent one.
        request_id: Option<axum::http::HeaderValue>,
    }
}

/// The header that names a request in the api's log lines (the client's, or one the api
/// makes up when it logs a failure).
/// (A `HeaderName`, so that looking it up on every request parses nothing.)
const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

impl<F: Future<Output = Result<Response, Infallible>>> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(failure) = response.extensions_mut().remove::<error::UpstreamFailure>() {
            // Only a failure pays for an id: a printable one the client sent, or a new one,
            // returned so that the client can quote it.
            let id = this
                .request_id
                .take()
                .filter(|v| v.to_str().is_ok_and(|s| s.len() <= 128))
                .unwrap_or_else(|| {
                    axum::http::HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
                        .expect("a UUID is a header value")
                });
            error::log_upstream_failure(&failure, id.to_str().unwrap_or_default());
            response.headers_mut().insert(REQUEST_ID, id);
        }
        let route = this.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        if let Some(state) = this.state.take() {
            state
                .metrics
                .requests
                .with_label_values(&[route, this.method, response.status().as_str()])
                .inc();
        }
        tracing::trace!(
            route,
            method = *this.method,
            status = response.status().as_u16(),
            elapsed_us = this.started.elapsed().as_micros() as u64,
            "request"
        );
        Poll::Ready(Ok(response))
    }
}
