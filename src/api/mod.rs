//! The HTTP api: validates each message against the generated parser, wraps it in a
//! [`MessageEnvelope`], publishes it to JetStream and answers once JetStream has acked it.

mod error;

use std::sync::Arc;

use async_nats::jetstream;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

pub use error::ApiError;

use crate::envelope::MessageEnvelope;
use crate::generated::RootEntity;
use crate::nats::subject_for;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// JetStream context to publish with.
    pub jetstream: jetstream::Context,
    /// Stream name; subjects are `<stream>.<entity>`.
    pub stream: String,
}

/// Body of a `202 Accepted` answer.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// The id the worker will record the message under.
    pub message_id: Uuid,
    /// Always `accepted`: JetStream has stored the message.
    pub status: &'static str,
    /// When the message was accepted.
    pub timestamp: DateTime<Utc>,
}

/// Builds the router with all routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ingest/message/{entity}", post(ingest_message))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::new(state))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `GET /health`: the process is alive; lists the entities it accepts.
async fn health() -> Json<serde_json::Value> {
    let entities: Vec<&str> = RootEntity::ALL.iter().map(|e| e.snake_name()).collect();
    Json(json!({
        "status": "ok",
        "entities": entities,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `POST /ingest/message/{entity}`: validate, publish, await the JetStream ack, answer 202.
async fn ingest_message(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestResponse>), ApiError> {
    let Path(entity_name) = path.map_err(|e| ApiError::NotFound(e.body_text()))?;
    let entity = RootEntity::from_name(&entity_name)
        .ok_or_else(|| ApiError::UnknownEntity(entity_name.clone()))?;
    let body = body.map_err(|e| ApiError::Body {
        status: e.status(),
        message: e.body_text(),
    })?;
    let envelope = validate(entity, &body)?;
    publish(&state, entity, &envelope).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(IngestResponse {
            message_id: envelope.message_id,
            status: "accepted",
            timestamp: envelope.received_at,
        }),
    ))
}

/// Parses the body as `entity` and wraps it in a new envelope.
pub fn validate(entity: RootEntity, body: &[u8]) -> Result<MessageEnvelope, ApiError> {
    let value = crate::runtime::parse_json_object(body)
        .map_err(|e| ApiError::from_parse(entity.name(), e))?;
    entity
        .parse_value(&value)
        .map_err(|errors| ApiError::Invalid {
            entity: entity.name().to_string(),
            errors,
        })?;
    // The body is valid JSON (checked above), so it can be carried verbatim.
    let text = std::str::from_utf8(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    let raw = serde_json::value::RawValue::from_string(text.trim().to_string())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(MessageEnvelope {
        message_id: Uuid::new_v4(),
        entity: entity.name().to_string(),
        received_at: Utc::now(),
        body: raw,
    })
}

/// Publishes an envelope and waits for JetStream to store it.
pub async fn publish(
    state: &AppState,
    entity: RootEntity,
    envelope: &MessageEnvelope,
) -> Result<(), ApiError> {
    let payload = envelope
        .to_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", envelope.message_id.to_string().as_str());
    let subject = subject_for(&state.stream, entity.snake_name());
    let ack = state
        .jetstream
        .publish_with_headers(subject, headers, payload.into())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    ack.await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(())
}
