//! Ingestion of single messages: `POST /ingest/message/{entity}` and the untyped route, and
//! what batches share with them (checking, publishing, counting rejections).

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::context::PublishErrorKind;
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use uuid::Uuid;

use super::auth::{self, Client};
use super::budget::BodyPermit;
use super::server::ReadDeadline;
use super::{ApiError, AppState, Dependency};
use crate::envelope::MessageEnvelope;
use crate::generated::RootEntity;
use crate::nats::{Outgoing, PublishFailure, message_subject};
use crate::runtime::JsonRef;

use super::answer::IngestResponse;
use super::body::{check_content_type, read_body, reserve, within};
use super::ids::{idempotency_key, message_id};

/// A message that passed validation and is ready to publish.
pub(super) struct Validated {
    /// Its entity.
    pub(super) entity: RootEntity,
    /// Its envelope, carrying the body byte for byte.
    pub(super) envelope: MessageEnvelope,
    /// Whether JetStream deduplicates on the id (`Nats-Msg-Id`): only for ids derived from an
    /// `Idempotency-Key`. A fresh random id cannot be a retry, and the dedup table costs the
    /// server time per message.
    pub(super) dedup: bool,
}

impl Validated {
    /// A checked body in its envelope, accepted now.
    pub(super) fn new(entity: RootEntity, message_id: Uuid, body: Bytes, dedup: bool) -> Self {
        Self {
            entity,
            envelope: MessageEnvelope::new(message_id, entity.name(), body),
            dedup,
        }
    }
}

/// Checks a parsed body against `entity`: every field error (and the members it does not
/// know, with hints), or nothing. The generated validate-only path: the parse's errors without
/// building the rows the worker builds.
pub(super) fn check(entity: RootEntity, value: JsonRef<'_>) -> Result<(), ApiError> {
    entity
        .validate_json(value)
        .map_err(|errors| ApiError::Invalid {
            entity: Some(entity.name()),
            errors,
            unknown: super::detect::unknown_members(entity, value),
            guessed: false,
        })
}

/// Parses `body` and checks it against `entity`: `Err` for a body that is not a JSON object
/// (or a check past the deadline), else the check's outcome. A check that calls the user's
/// code (`transform: {rust: ...}`), whose time nomnom cannot bound, runs on the blocking pool
/// and is given up at the request's deadline (408; the thread finishes on its own).
pub(super) async fn check_body(
    entity: RootEntity,
    body: &Bytes,
    deadline: Option<ReadDeadline>,
) -> Result<Result<(), ApiError>, ApiError> {
    let body = body.clone();
    bounded(entity.runs_user_code(), deadline, move || {
        // The parsed document is dropped before anything is awaited (it is not `Send`).
        let doc = crate::runtime::parse_json_object(&body)?;
        Ok(check(entity, doc.root()))
    })
    .await
}

/// Runs `work` here, or (`off_thread`: it may take any time) on the blocking pool, given up at
/// `deadline` with 408 while the thread finishes on its own.
async fn bounded<T: Send + 'static>(
    off_thread: bool,
    deadline: Option<ReadDeadline>,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if !off_thread {
        return work();
    }
    within(deadline, async move {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|_| Err(ApiError::Timeout))
    })
    .await
}

pub(super) fn entity_by_name(name: &str) -> Result<RootEntity, ApiError> {
    RootEntity::from_name(name).ok_or_else(|| ApiError::UnknownEntity(name.to_string()))
}

/// The entity named in a request, if this client may post it.
pub(super) fn allowed_entity(
    state: &AppState,
    client: &Client,
    name: &str,
) -> Result<RootEntity, ApiError> {
    let entity = entity_by_name(name)?;
    client
        .check_entity(entity)
        .inspect_err(|_| auth::count_forbidden(state))?;
    Ok(entity)
}

pub(super) fn publish_error(failure: &PublishFailure) -> ApiError {
    let detail = failure.detail.clone();
    match failure.kind {
        PublishErrorKind::MaxPayloadExceeded => ApiError::Body {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the message is larger than the broker accepts: {detail}"),
        },
        // JetStream's "maximum messages/bytes exceeded" (a stream with `discard: new` at its
        // limits): the client can only wait, but should know it is not a passing hiccup.
        _ if detail.contains("maximum messages") || detail.contains("maximum bytes") => {
            Dependency::StreamFull.unavailable(detail)
        }
        _ => Dependency::Broker.unavailable(detail),
    }
}

impl Validated {
    /// Its subject and JetStream message.
    pub(super) fn outgoing(&self, stream: &str) -> Outgoing {
        let id = &self.envelope.message_id;
        Outgoing {
            subject: message_subject(stream, self.entity.snake_name(), id),
            message: self.envelope.to_publish(self.dedup),
        }
    }
}

/// The reason label of a rejection (a closed set).
pub(super) fn rejection_reason(e: &ApiError) -> &'static str {
    match e {
        ApiError::InvalidJson { .. } => "invalid_json",
        ApiError::Invalid { .. } | ApiError::NotAnObject(_) | ApiError::Ambiguous(_) => "invalid",
        ApiError::UnknownEntity(_) => "unknown_entity",
        ApiError::TooLarge { .. } | ApiError::TooManyLines { .. } => "too_large",
        ApiError::UnsupportedMediaType { .. } => "content_type",
        ApiError::Unavailable { .. } => "unavailable",
        ApiError::BodiesInFlight => "bodies_in_flight",
        ApiError::KeyReused { .. } => "key_reused",
        ApiError::Forbidden(_) => "forbidden",
        _ => "other",
    }
}

pub(super) fn count_rejected(state: &AppState, entity: &str, e: &ApiError) {
    let reason = rejection_reason(e);
    // The label is a known entity or `unknown`, never the name a client made up.
    state
        .metrics
        .rejected
        .with_label_values(&[crate::labels::entity_label(entity), reason])
        .inc();
}

/// Publishes a message and awaits its ack; `checked` is the outcome of its validation (a bad
/// `Idempotency-Key` is reported before field errors).
pub(super) async fn accept_one(
    state: &AppState,
    client: &Client,
    entity: RootEntity,
    checked: Result<(), ApiError>,
    body: &Bytes,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let key = idempotency_key(headers)?;
    checked?;
    let started = Instant::now();
    let (message_id, received_at, duplicate) = match key {
        // A fresh id: published in a group with the entity's other waiting messages.
        None => {
            let stored = state.groups.publish(entity, body.clone()).await;
            let histogram = &state.metrics.of(entity).publish_seconds;
            histogram.observe(started.elapsed().as_secs_f64());
            let id = stored.map_err(|e| publish_error(&e))?;
            // A fresh id is time-ordered: it carries the arrival.
            let received_at = crate::envelope::id_time(&id).unwrap_or_else(Utc::now);
            (id, received_at, false)
        }
        Some(key) => {
            let id = message_id(client, entity, Some(&key), None);
            let digest = super::idempotency::digest([&body[..]]);
            state
                .fingerprints
                .claim(&state.jetstream, &state.stream, id, digest)
                .await?;
            let v = Validated::new(entity, id, body.clone(), true);
            let acked = state.publisher.publish(v.outgoing(&state.stream)).await;
            let histogram = &state.metrics.of(entity).publish_seconds;
            histogram.observe(started.elapsed().as_secs_f64());
            let duplicate = acked.map_err(|e| publish_error(&e))?;
            (id, v.envelope.received_at, duplicate)
        }
    };
    state.metrics.of(entity).accepted.inc();
    tracing::debug!(%message_id, entity = entity.name(), duplicate, "accepted");
    let answer = IngestResponse {
        message_id,
        status: "accepted",
        entity: entity.snake_name(),
        timestamp: received_at,
        duplicate,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answer.to_json(),
    )
        .into_response())
}

/// `POST /ingest/message/{entity}`.
pub(super) async fn ingest_entity(
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
        let checked = check_body(entity, &body, deadline).await?;
        accept_one(&state, &client, entity, checked, &body, &headers).await
    }
    .await;
    answer(&state, &entity_name, result)
}

/// A single message's request read: the entity its path names (one the key may post), the
/// hold on the budget of body bytes (kept while the body is), and the body, read within the
/// deadline and the message limit.
pub(super) async fn read_message(
    state: &AppState,
    client: &Client,
    entity_name: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
    deadline: Option<ReadDeadline>,
) -> Result<(RootEntity, BodyPermit, Bytes), ApiError> {
    let entity = allowed_entity(state, client, entity_name)?;
    check_content_type(headers)?;
    let (held, body) = within(deadline, reserve(state, headers, state.body_limit(), body)).await?;
    let body = within(deadline, read_body(body, state.body_limit())).await?;
    Ok((entity, held, body))
}

/// The answer of an ingest route: the response, or the error counted under the entity name
/// the request gave and mapped to its response.
pub(super) fn answer(
    state: &AppState,
    entity_name: &str,
    result: Result<Response, ApiError>,
) -> Response {
    result.unwrap_or_else(|e| {
        count_rejected(state, entity_name, &e);
        e.into_response()
    })
}

/// `POST /ingest/message`: the entity comes from `?entity_type=`, the `X-Entity-Type` header,
/// or a top-level `entity_type` member of the body (the earlier generator's convention);
/// without any, from the body itself (see [`detect`](super::detect::detect)). The answer names
/// the entity.
pub(super) async fn ingest_untyped(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    deadline: Option<Extension<ReadDeadline>>,
    query: Result<Query<UntypedQuery>, QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let deadline = deadline.map(|Extension(d)| d);
    let mut named = String::from("unknown");
    let result = async {
        check_content_type(&headers)?;
        let preset = entity_hint(query, &headers)?;
        let (_held, body) = within(
            deadline,
            reserve(&state, &headers, state.body_limit(), body),
        )
        .await?;
        let body = within(deadline, read_body(body, state.body_limit())).await?;
        let (entity, checked) = {
            let doc = crate::runtime::parse_json_object(&body)?;
            let (entity, checked) = match preset.or_else(|| member_hint(doc.root())) {
                Some(name) => {
                    named = name.clone();
                    let entity = allowed_entity(&state, &client, &name)?;
                    (entity, check(entity, doc.root()))
                }
                // A detected entity has accepted the body already.
                None => (super::detect::detect(&client, doc.root())?, Ok(())),
            };
            named = entity.snake_name().to_string();
            (entity, checked)
        };
        accept_one(&state, &client, entity, checked, &body, &headers).await
    }
    .await;
    answer(&state, &named, result)
}

/// The header naming the entity of an untyped request.
pub(super) const ENTITY_HEADER: &str = "x-entity-type";

/// The entity a request names outside its body: `?entity_type=` or `X-Entity-Type`.
pub(super) fn entity_hint(
    query: Result<Query<UntypedQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let Query(query) = query
        .map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))?;
    Ok(query.entity_type.or_else(|| {
        headers
            .get(ENTITY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }))
}

/// The entity a body names in its top-level `entity_type` member.
pub(super) fn member_hint(body: JsonRef<'_>) -> Option<String> {
    body.get(super::detect::ENTITY_TYPE_MEMBER)
        .and_then(JsonRef::as_str)
        .map(str::to_string)
}

/// The query string of `POST /ingest/message` (other parameters are ignored).
#[derive(Debug, serde::Deserialize)]
pub(super) struct UntypedQuery {
    /// The entity, when the path does not name it.
    entity_type: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check calling user code is given up at the request's deadline, not when it ends.
    #[tokio::test]
    async fn a_slow_check_is_given_up_at_the_deadline() {
        let deadline =
            ReadDeadline(tokio::time::Instant::now() + std::time::Duration::from_millis(100));
        let started = std::time::Instant::now();
        let slow = || {
            std::thread::sleep(std::time::Duration::from_secs(3));
            Ok(())
        };
        let outcome = bounded(true, Some(deadline), slow).await;
        assert!(matches!(outcome, Err(ApiError::Timeout)), "{outcome:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Quick work comes back as it is, on or off the async threads.
        let later = ReadDeadline(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
        assert_eq!(bounded(true, Some(later), || Ok(7)).await.ok(), Some(7));
        assert_eq!(bounded(false, None, || Ok(8)).await.ok(), Some(8));
    }
    use chrono::{TimeZone, Timelike};

    #[test]
    fn the_answer_is_what_serde_json_writes() {
        let times = [
            Utc.with_ymd_and_hms(2026, 12, 3, 8, 15, 2).unwrap(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap(),
        ];
        let fractions = [
            0,
            1,
            7_000,
            123_000_000,
            120_000,
            999_999_999,
            1_500_000_000,
        ];
        for t in times {
            for nanos in fractions {
                let Some(timestamp) = t.with_nanosecond(nanos) else {
                    continue;
                };
                for duplicate in [false, true] {
                    let answer = IngestResponse {
                        message_id: Uuid::now_v7(),
                        status: "accepted",
                        entity: "order_line_item",
                        timestamp,
                        duplicate,
                    };
                    assert_eq!(
                        String::from_utf8(answer.to_json()).unwrap(),
                        serde_json::to_string(&answer).unwrap()
                    );
                }
            }
        }
    }
}
