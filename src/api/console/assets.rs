//! The console's page, script and style, embedded in the binary (no Node.js to build or run).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::super::ApiError;

const PAGE: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/console.js");
const STYLE: &str = include_str!("assets/console.css");

/// `/` and `/console`: to the page.
pub(super) async fn to_console() -> Redirect {
    Redirect::to("/console/")
}

/// `/console/`: the page (a shell the script fills in; it holds no data).
pub(super) async fn page() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE,
    )
        .into_response()
}

/// `/console/console.js` and `/console/console.css`.
pub(super) async fn asset(Path(asset): Path<String>) -> Response {
    let (body, mime) = match asset.as_str() {
        "console.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "console.css" => (STYLE, "text/css; charset=utf-8"),
        _ => {
            return ApiError::NotFound(format!(
                "no asset {} in the console",
                crate::text::printable(&asset)
            ))
            .into_response();
        }
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, mime)], body).into_response()
}
