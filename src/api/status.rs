//! Read-only routes: message status, liveness, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::DirectGetErrorKind;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use uuid::Uuid;

use super::{ApiError, AppState, Client, Dependency};
use crate::envelope::MessageEnvelope;
use crate::generated::RootEntity;
use crate::nats::message_subject;
use crate::store::StoredStatus;

/// `GET /health`: the process is alive.
pub(super) async fn health() -> Json<serde_json::Value> {
    let entities: Vec<&str> = RootEntity::ALL.iter().map(|e| e.snake_name()).collect();
    Json(json!({
        "status": "ok",
        "entities": entities,
        "version": env!("CARGO_PKG_VERSION"),
        "schema_version": crate::generated::SCHEMA_VERSION,
    }))
}

/// `GET /ready`: what accepting needs — NATS connected and the stream there; 503 names what
/// failed. PostgreSQL is reported (`postgres`) but does not decide: the api accepts messages
/// during a database outage, and only `/ingest/status` needs it.
pub(super) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let timeout = Duration::from_secs(2);
    let mut failed = serde_json::Map::new();
    let nats_state = state.jetstream.client().connection_state();
    if nats_state != async_nats::connection::State::Connected {
        failed.insert("nats".into(), json!(format!("connection is {nats_state}")));
    } else {
        match tokio::time::timeout(timeout, state.jetstream.get_stream(&state.stream)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                // The upstream error is for the log; the answer says what is wrong.
                tracing::warn!(stream = %state.stream, error = %e, "/ready: the stream cannot be read");
                failed.insert(
                    "stream".into(),
                    json!(format!(
                        "stream `{}` cannot be read (missing, or JetStream unavailable)",
                        state.stream
                    )),
                );
            }
            Err(_) => {
                failed.insert(
                    "stream".into(),
                    json!("no answer from JetStream within 2 s"),
                );
            }
        }
    }
    let postgres = match tokio::time::timeout(timeout, state.store.probe()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "/ready: PostgreSQL does not answer");
            "unavailable (status lookups fail): no connection".to_string()
        }
        Err(_) => "unavailable (status lookups fail): no answer within 2 s".to_string(),
    };
    let database_schema = database_schema(&state, timeout).await;
    if failed.is_empty() {
        let mut body = json!({"status": "ready", "postgres": postgres});
        if let Some(version) = database_schema {
            body["database_schema_version"] = json!(version);
        }
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "failed": failed, "postgres": postgres})),
        )
            .into_response();
        super::error::retry_after(&mut response, 5);
        response
    }
}

/// The database's current schema version (its ledger), when it can be read; a version other
/// than this api's is counted (`nomnom_api_schema_mismatch`) and logged (every 5 min at most):
/// what this api accepts may fail the workers' parse, and is then held, not stored, until a
/// worker of this api's version takes it.
async fn database_schema(state: &AppState, timeout: Duration) -> Option<String> {
    let head = tokio::time::timeout(timeout, state.store.schema_head())
        .await
        .ok()?
        .ok()?;
    let (version, applied_at) = head.latest?;
    let differs = version != crate::generated::SCHEMA_VERSION;
    state.metrics.schema_mismatch.set(i64::from(differs));
    static MISMATCH: crate::throttle::Throttle =
        crate::throttle::Throttle::new(Duration::from_secs(300));
    if differs && MISMATCH.allow().is_some() {
        tracing::warn!(
            database_schema = %version,
            applied_at = %applied_at,
            this_api = crate::generated::SCHEMA_VERSION,
            "the database's schema is not the one this api checks against: messages it accepts that the workers' rules refuse are held for a worker of this api's version; deploy the api of the database's build"
        );
    }
    Some(version)
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn status_row(state: &AppState, id: Uuid) -> Result<Option<StoredStatus>, ApiError> {
    state
        .store
        .message_status(id)
        .await
        .map_err(|e| Dependency::StatusLookup.unavailable(e))
}

/// Whether the message is still in the stream (accepted, not yet committed by a worker), and
/// where: the last message on the subject of its group (its id with the last byte zero), or,
/// for a message published alone under an id of another form, on its own subject.
pub(super) async fn in_stream(
    state: &AppState,
    id: Uuid,
) -> Result<Option<(RootEntity, u64)>, ApiError> {
    let stream = state
        .jetstream
        .get_stream_no_info(&state.stream)
        .await
        .map_err(|e| Dependency::StatusLookup.unavailable(e))?;
    // A group's member (last byte), a chunk's (last two bytes), or a message alone.
    let mut candidates = vec![crate::envelope::group_id(&id)];
    candidates.push(crate::envelope::chunk_of(&id).0);
    candidates.push(id);
    candidates.dedup();
    for entity in RootEntity::ALL {
        for candidate in &candidates {
            let subject = message_subject(&state.stream, entity.snake_name(), candidate);
            match stream.direct_get_last_for_subject(subject).await {
                Ok(stored) => {
                    let members = MessageEnvelope::decode_all(
                        &stored.subject,
                        Some(&stored.headers),
                        &stored.payload,
                    );
                    if members.is_ok_and(|m| m.iter().any(|e| e.message_id == id)) {
                        return Ok(Some((*entity, stored.sequence)));
                    }
                }
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => {}
                Err(e) => return Err(Dependency::StatusLookup.unavailable(e)),
            }
        }
    }
    Ok(None)
}

/// `GET /ingest/status/{message_id}`: `processed` (time, row count), `dead_lettered` (reason,
/// attempts), `pending` (in the stream), 404 unknown, 400 malformed id. A client sees only the
/// messages of entities its key's scope covers; any other is 404, as an unknown id (ids of a
/// group's members differ only in their last byte, so they must not tell anything).
pub(super) async fn message_status(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    Path(raw_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = Uuid::parse_str(&raw_id)
        .map_err(|_| ApiError::BadRequest(format!("`{raw_id}` is not a message id (UUID)")))?;
    let unknown = || ApiError::NotFound(format!("no message with id {id}"));
    // The worker commits, then acks; the message leaves the stream after that (at once in a
    // work-queue stream, at the worker's next trim otherwise). So: the database, then the
    // stream, then the database again — a message committed meanwhile is processed, not pending,
    // and one that left the stream meanwhile is not missed.
    let mut row = status_row(&state, id).await?;
    if row.is_none() {
        let queued = in_stream(&state, id).await?.map(|(entity, _)| entity);
        row = status_row(&state, id).await?;
        if let (None, Some(entity)) = (&row, queued) {
            if !client.scope.may_post(entity) {
                return Err(unknown());
            }
            return Ok(Json(json!({
                "message_id": id,
                "status": "pending",
                "entity": entity.name(),
            })));
        }
    }
    let Some(row) = row.filter(|r| client.scope.may_read_status_of(&r.entity)) else {
        return Err(unknown());
    };
    let mut body = json!({
        "message_id": id,
        "status": row.status,
        "entity": row.entity,
        "received_at": row.received_at,
        "attempts": row.attempts,
    });
    if row.status == "processed" {
        body["processed_at"] = json!(row.processed_at);
        body["row_count"] = json!(row.row_count);
        if let Some((first, members)) = row.run {
            body["chunk_run"] = json!({"first_message_id": first, "messages": members});
        }
    } else {
        body["dead_lettered_at"] = json!(row.processed_at);
        body["reason"] = json!(row.error);
    }
    Ok(Json(body))
}
