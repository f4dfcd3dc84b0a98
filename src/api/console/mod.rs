//! The operator console, served on `ADMIN_PORT` (never on the ingest port): a page and a small
//! script embedded in the binary, and the JSON endpoints behind it — the overview (`/stats`),
//! dead letters (grouped, listed, shown, dry-run, replayed, discarded), a message's trace, the
//! schema with a validate box, and the audit.
//!
//! Who may use it: with API keys, a key scoped `admin` (401 without a key, 403 without the
//! scope); without keys, only a loopback address is allowed to listen (`ApiConfig`) and the
//! operator is `local`. Every value from a message reaches the page as JSON and is put in the
//! document as text by the script, never as markup; the Content-Security-Policy allows only
//! the console's own script and style. Changes (replay, discard, dry run) must be
//! `application/json` POSTs from the console's own origin, so another site's page in the
//! operator's browser cannot make them; without keys, requests must name a loopback host, so a
//! DNS name rebound to 127.0.0.1 cannot read the console either.

mod assets;
mod handlers;
mod openapi;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::{ApiError, AppState, auth, status, validate};
use crate::admin::stats::Overview;

pub use openapi::admin_openapi_document;

/// The console's state: when the process started, and the overview last read (several open
/// consoles refreshing share one read every [`OVERVIEW_FRESH_FOR`]).
pub(crate) struct ConsoleState {
    started: Instant,
    overview: tokio::sync::Mutex<Option<(Instant, Overview)>>,
}

impl Default for ConsoleState {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            overview: tokio::sync::Mutex::new(None),
        }
    }
}

/// How long an overview is served again before it is read anew.
const OVERVIEW_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// The policy of every answer of the console's port: its own script and style only, no
/// frames, no plugins, no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; \
    frame-ancestors 'none'; base-uri 'none'";

/// The router of `ADMIN_PORT`.
pub fn admin_router(state: AppState) -> Router {
    let state = Arc::new(state);
    // Changes: JSON from the console's own page only (see `from_this_origin`).
    let changes = Router::new()
        .route("/admin/dead-letters/dry-run", post(handlers::dry_run))
        .route("/admin/dead-letters/replay", post(handlers::replay))
        .route("/admin/dead-letters/{id}/discard", post(handlers::discard))
        .route("/ingest/validate/{entity}", post(validate::validate))
        .route_layer(middleware::from_fn(from_this_origin));
    let endpoints = Router::new()
        .route("/stats", get(handlers::stats))
        .route("/admin/dead-letters", get(handlers::dead_letters))
        .route("/admin/dead-letters/groups", get(handlers::groups))
        .route("/admin/dead-letters/{id}", get(handlers::dead_letter))
        .route("/admin/actions", get(handlers::actions))
        .route("/admin/schema", get(handlers::schema))
        .route("/messages/{id}/trace", get(handlers::trace))
        .route("/api-docs/admin.json", get(openapi::admin_openapi_json))
        .merge(changes)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_scope,
        ));
    Router::new()
        .route("/", get(assets::to_console))
        .route("/console", get(assets::to_console))
        .route("/console/", get(assets::page))
        .route("/console/{asset}", get(assets::asset))
        .route("/health", get(status::health))
        .merge(endpoints)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), loopback_host))
        .layer(middleware::map_response(secure_headers))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {} on the console's port", uri.path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Without API keys, answers only requests naming a loopback host: a page of another site whose
/// DNS name was rebound to 127.0.0.1 cannot read the console.
async fn loopback_host(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !state.keys.enabled() && !is_loopback_host(host) {
        return ApiError::Forbidden(format!(
            "the console without API keys answers only requests to a loopback address (127.0.0.1, localhost), not `{}`",
            crate::text::printable(host)
        ))
        .into_response();
    }
    next.run(request).await
}

/// Refuses a change another origin could send from an operator's browser: a body that is not
/// `application/json` (a form or a `text/plain` fetch, which need no CORS preflight) or a
/// request that says it comes from another origin.
async fn from_this_origin(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let json = content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return ApiError::UnsupportedMediaType {
            found: crate::text::printable(content_type).into_owned(),
            expected: "application/json",
        }
        .into_response();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none");
    let foreign_origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|origin| {
            let origin = origin
                .trim_start_matches("http://")
                .trim_start_matches("https://");
            origin != host
        });
    if cross_site || foreign_origin {
        return ApiError::Forbidden(
            "the console's actions are taken from the console's own page only".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// `127.0.0.1[:port]`, `localhost[:port]`, `[::1][:port]` and the like.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Every answer: the policy above, no sniffing, no referrer, no caching, no framing.
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn only_loopback_hosts_pass_without_keys() {
        for host in [
            "127.0.0.1:8081",
            "localhost:8081",
            "[::1]:8081",
            "127.0.0.1",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:8081",
            "10.0.0.5:8081",
            "",
            "[fe80::1]:8081",
            "127.0.0.1.evil.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
