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
use super::body::{check_content_type, read_body, reserve, within};
use super::ingest::{allowed_entity, check};
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
        let entity = allowed_entity(&state, &client, &entity_name)?;
        check_content_type(&headers)?;
        let deadline = deadline.map(|Extension(d)| d);
        let (_held, body) = within(
            deadline,
            reserve(&state, &headers, state.body_limit(), body),
        )
        .await?;
        let body = within(deadline, read_body(body, state.body_limit())).await?;
        check(entity, crate::runtime::parse_json_object(&body)?.root())?;
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
