//! `POST /ingest/validate/{entity}`: a dry run of `POST /ingest/message/{entity}`. The body is
//! read within the same limits and checked by the same generated validator, and the answer is
//! the one ingesting would give — 200 instead of 202 — but nothing is published or counted.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::auth::Client;
use super::ingest::{check_body, read_message};
use super::server::ReadDeadline;
use super::{ApiError, AppState};

/// `POST /ingest/validate/{entity}`: 200 `{"valid": true, "entity"}`, or ingest's error.
pub(super) async fn validate(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    deadline: Option<Extension<ReadDeadline>>,
    Path(entity_name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let result = async {
        let deadline = deadline.map(|Extension(d)| d);
        let (entity, _held, body) =
            read_message(&state, &client, &entity_name, &headers, body, deadline).await?;
        check_body(entity, &body, deadline).await??;
        Ok::<_, ApiError>(entity)
    }
    .await;
    match result {
        Ok(entity) => (
            StatusCode::OK,
            Json(json!({"valid": true, "entity": entity.name()})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
