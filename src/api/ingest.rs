//! Ingestion handlers: single messages and NDJSON batches.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::auth::{self, Client};
use super::group::PublishFailure;
use super::server::ReadDeadline;
use super::{ApiError, AppState, Dependency};
use crate::bulk::{LineSplitter, Row, RowProblem, csv_columns, each_array_element, each_csv_row};
use crate::envelope::MessageEnvelope;
use crate::generated::RootEntity;
use crate::nats::message_subject;
use crate::runtime::{FieldError, JsonRef};

/// Namespace of message ids derived from an `Idempotency-Key` (UUIDv5) without API keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6e6f_6d6e_6f6d_4b65_9f1d_7a1c_0de5_1d01);
/// Namespace of ids derived from an `Idempotency-Key` sent with an API key: the key's name is
/// part of the id, so one client's keys cannot claim another client's ids.
const CLIENT_IDEMPOTENCY_NAMESPACE: Uuid =
    Uuid::from_u128(0x6e6f_6d6e_6f6d_4b65_9f1d_7a1c_0de5_1d02);

/// Body of a `202 Accepted` answer.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// The id the worker records the message under (`GET /ingest/status/{message_id}`).
    pub message_id: Uuid,
    /// Always `accepted`: JetStream has stored the message.
    pub status: &'static str,
    /// When the message was accepted.
    pub timestamp: DateTime<Utc>,
    /// True when an earlier request with the same `Idempotency-Key` was already stored.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

impl IngestResponse {
    /// The JSON of this answer, as `serde_json` writes it (tested), without its serializer:
    /// every accepted message is answered with one, and the timestamp's `Display` was most
    /// of an answer's cost.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"{\"message_id\":\"");
        out.extend_from_slice(
            self.message_id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"status\":\"");
        out.extend_from_slice(self.status.as_bytes());
        out.extend_from_slice(b"\",\"timestamp\":");
        match rfc3339_utc(&self.timestamp) {
            Some(text) => {
                out.push(b'"');
                out.extend_from_slice(&text);
                out.push(b'"');
            }
            // Years chrono writes with a sign (beyond 9999): its own serializer.
            None => out.extend_from_slice(
                serde_json::to_string(&self.timestamp)
                    .unwrap_or_default()
                    .as_bytes(),
            ),
        }
        if self.duplicate {
            out.extend_from_slice(b",\"duplicate\":true");
        }
        out.push(b'}');
        out
    }
}

/// `t` as chrono's `Serialize` writes a UTC time (`2026-12-03T08:15:02.123Z`: the fraction in
/// 3, 6 or 9 digits, as few as keep it exact, or none), for years 0 to 9999; `None` for others.
fn rfc3339_utc(t: &DateTime<Utc>) -> Option<Vec<u8>> {
    use chrono::{Datelike, Timelike};
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 {
        return None; // a leap second: chrono's own format
    }
    let mut out = Vec::with_capacity(30);
    let digits = |out: &mut Vec<u8>, value: u32, width: u32| {
        for place in (0..width).rev() {
            out.push(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    };
    digits(&mut out, year, 4);
    out.push(b'-');
    digits(&mut out, t.month(), 2);
    out.push(b'-');
    digits(&mut out, t.day(), 2);
    out.push(b'T');
    digits(&mut out, t.hour(), 2);
    out.push(b':');
    digits(&mut out, t.minute(), 2);
    out.push(b':');
    digits(&mut out, t.second(), 2);
    if nanos != 0 {
        out.push(b'.');
        if nanos.is_multiple_of(1_000_000) {
            digits(&mut out, nanos / 1_000_000, 3);
        } else if nanos.is_multiple_of(1_000) {
            digits(&mut out, nanos / 1_000, 6);
        } else {
            digits(&mut out, nanos, 9);
        }
    }
    out.push(b'Z');
    Some(out)
}

/// A message that passed validation and is ready to publish.
struct Validated {
    /// Its entity.
    entity: RootEntity,
    /// Its envelope, carrying the body byte for byte.
    envelope: MessageEnvelope,
    /// Whether JetStream deduplicates on the id (`Nats-Msg-Id`): only for ids derived from an
    /// `Idempotency-Key`. A fresh random id cannot be a retry, and the dedup table costs the
    /// server time per message.
    dedup: bool,
}

impl Validated {
    /// A checked body in its envelope, accepted now.
    fn new(entity: RootEntity, message_id: Uuid, body: Bytes, dedup: bool) -> Self {
        Self {
            entity,
            envelope: MessageEnvelope::new(message_id, entity.name(), body),
            dedup,
        }
    }
}

/// Checks a parsed body against `entity`: every field error, or nothing. The generated
/// validate-only path: the parse's errors without building the rows the worker builds.
fn check(entity: RootEntity, value: JsonRef<'_>) -> Result<(), ApiError> {
    entity
        .validate_json(value)
        .map_err(|errors| ApiError::Invalid {
            entity: Some(entity.name()),
            errors,
        })
}

/// Checks the Content-Type. Missing, JSON types, `text/plain`, and curl's default for `-d`
/// (`application/x-www-form-urlencoded`) are accepted, since the body is checked as JSON anyway;
/// anything else (XML, multipart, HTML...) is refused with 415.
fn check_content_type(headers: &HeaderMap, batch: bool) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let expected = if batch {
        "application/x-ndjson (one JSON object per line), application/json (an array of objects) or text/csv"
    } else {
        "application/json"
    };
    if batch && is_csv(headers) {
        return Ok(());
    }
    let raw = value.to_str().map_err(|_| ApiError::UnsupportedMediaType {
        found: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        expected,
    })?;
    let mime = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    let ndjson = matches!(
        mime.as_str(),
        "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines"
    );
    let lenient = matches!(
        mime.as_str(),
        "" | "text/plain" | "application/x-www-form-urlencoded"
    );
    if json || lenient || (batch && ndjson) {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            found: raw.to_string(),
            expected,
        })
    }
}

/// Reads a single message's body, of at most `limit` bytes. Read here rather than by axum's
/// `Bytes` extractor under a `DefaultBodyLimit` layer, which would wrap the route in one more
/// boxed service that every request clones.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    use axum::body::HttpBody as _;
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::TooLarge { limit });
    }
    let mut stream = body.into_data_stream();
    let mut whole = bytes::BytesMut::new();
    let mut first: Option<Bytes> = None;
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        let chunk = chunk.map_err(body_read_error)?;
        let read = first.as_ref().map_or(0, Bytes::len) + whole.len() + chunk.len();
        if read > limit {
            return Err(ApiError::TooLarge { limit });
        }
        // A body that comes in one chunk (nearly all) is kept as it came, without a copy.
        match first.take() {
            None if whole.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    whole.extend_from_slice(&earlier);
                }
                whole.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| whole.freeze()))
}

/// `read` (reading a request's body, checking it) within the request's [`ReadDeadline`], if it
/// has one: past it, 408, nothing published. Once publishing starts there is no deadline: the
/// answer must say what was stored.
async fn within<T>(
    deadline: Option<ReadDeadline>,
    read: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match deadline {
        Some(ReadDeadline(at)) => tokio::time::timeout_at(at, read)
            .await
            .unwrap_or(Err(ApiError::Timeout)),
        None => read.await,
    }
}

/// Reserves the body's bytes in the budget of bodies in flight (see [`super::budget`]). When they
/// do not fit, the answer is 503 without the body being held: a client that sent
/// `Expect: 100-continue` is answered before it sends the body; from any other the body is
/// read and dropped as it comes (at most `limit` bytes, within the body timeout), so that the
/// client, still writing, reads the answer instead of a reset connection.
async fn reserve(
    state: &AppState,
    headers: &HeaderMap,
    limit: usize,
    body: axum::body::Body,
) -> Result<(super::budget::BodyPermit, axum::body::Body), ApiError> {
    match state.body_budget.reserve(headers, limit) {
        Ok(permit) => Ok((permit, body)),
        Err(e) => {
            let expects_continue = headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !expects_continue {
                let mut stream = body.into_data_stream();
                let mut drained = 0usize;
                while let Some(Ok(chunk)) = futures::StreamExt::next(&mut stream).await {
                    drained += chunk.len();
                    if drained > limit {
                        break;
                    }
                }
            }
            Err(e)
        }
    }
}

/// The error of a body that could not be read to its end.
fn body_read_error(e: axum::Error) -> ApiError {
    if super::server::is_body_timeout(&e) {
        ApiError::Timeout
    } else {
        ApiError::Body {
            status: StatusCode::BAD_REQUEST,
            message: format!("the request body could not be read: {e}"),
        }
    }
}

fn entity_by_name(name: &str) -> Result<RootEntity, ApiError> {
    RootEntity::from_name(name).ok_or_else(|| ApiError::UnknownEntity(name.to_string()))
}

/// The `Idempotency-Key` header, validated.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // Exactly IDEMPOTENCY_KEY_PATTERN (HTTP has already dropped surrounding white space).
    let key = v
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?;
    Ok(Some(key.to_string()))
}

/// The message id: derived from the client, the entity and the idempotency key (same key from
/// the same client → same id), else random.
fn message_id(client: &Client, entity: RootEntity, key: Option<&str>, line: Option<usize>) -> Uuid {
    let Some(key) = key else {
        // Time-ordered: consecutive messages land next to each other in the status table's
        // primary-key index instead of at random pages.
        return Uuid::now_v7();
    };
    let entity = entity.name();
    let name = match line {
        None => format!("{entity}\n{key}"),
        Some(l) => format!("{entity}\n{key}\n{l}"),
    };
    if client.is_anonymous() {
        Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes())
    } else {
        // Key names cannot contain `\n`, so (client, rest) pairs cannot collide.
        let scoped = format!("{}\n{name}", client.name);
        Uuid::new_v5(&CLIENT_IDEMPOTENCY_NAMESPACE, scoped.as_bytes())
    }
}

/// The entity named in a request, if this client may post it.
fn allowed_entity(state: &AppState, client: &Client, name: &str) -> Result<RootEntity, ApiError> {
    let entity = entity_by_name(name)?;
    client
        .check_entity(entity)
        .inspect_err(|_| auth::count_forbidden(state))?;
    Ok(entity)
}

fn publish_error(kind: PublishErrorKind, detail: String) -> ApiError {
    match kind {
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

/// Sends a message to JetStream; the returned future resolves with its ack.
async fn send(state: &AppState, v: &Validated) -> Result<PublishAckFuture, ApiError> {
    let id = &v.envelope.message_id;
    let subject = message_subject(&state.stream, v.entity.snake_name(), id);
    state
        .jetstream
        .send_publish(subject, v.envelope.to_publish(v.dedup))
        .await
        .map_err(|e| publish_error(e.kind(), e.to_string()))
}

/// Awaits the ack of one message; returns whether JetStream saw it as a duplicate, or why it
/// was not stored (the same for every line a group carries).
async fn await_ack(
    state: &AppState,
    entity: RootEntity,
    started: Instant,
    ack: PublishAckFuture,
) -> Result<bool, PublishFailure> {
    let result = ack.await;
    state
        .metrics
        .of(entity)
        .publish_seconds
        .observe(started.elapsed().as_secs_f64());
    result
        .map(|a| a.duplicate)
        .map_err(|e| (e.kind(), e.to_string()))
}

/// The reason label of a rejection (a closed set).
fn rejection_reason(e: &ApiError) -> &'static str {
    match e {
        ApiError::InvalidJson { .. } => "invalid_json",
        ApiError::Invalid { .. } | ApiError::NotAnObject(_) => "invalid",
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

fn count_rejected(state: &AppState, entity: &str, e: &ApiError) {
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
async fn accept_one(
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
            let id = stored.map_err(|(kind, detail)| publish_error(kind, detail))?;
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
            let ack = send(state, &v).await?;
            let duplicate = await_ack(state, entity, started, ack)
                .await
                .map_err(|(kind, detail)| publish_error(kind, detail))?;
            (id, v.envelope.received_at, duplicate)
        }
    };
    state.metrics.of(entity).accepted.inc();
    tracing::debug!(%message_id, entity = entity.name(), duplicate, "accepted");
    let answer = IngestResponse {
        message_id,
        status: "accepted",
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
        let entity = allowed_entity(&state, &client, &entity_name)?;
        check_content_type(&headers, false)?;
        let deadline = deadline.map(|Extension(d)| d);
        let (_held, body) = within(
            deadline,
            reserve(&state, &headers, state.body_limit(), body),
        )
        .await?;
        let body = within(deadline, read_body(body, state.body_limit())).await?;
        // The parsed document is dropped before the publish is awaited (it is not `Send`).
        let checked = check(entity, crate::runtime::parse_json_object(&body)?.root());
        accept_one(&state, &client, entity, checked, &body, &headers).await
    }
    .await;
    answer(&state, &entity_name, result)
}

/// The answer of an ingest route: the response, or the error counted under the entity name
/// the request gave and mapped to its response.
fn answer(state: &AppState, entity_name: &str, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| {
        count_rejected(state, entity_name, &e);
        e.into_response()
    })
}

/// `POST /ingest/message`: the entity comes from `?entity_type=`, the `X-Entity-Type` header,
/// or a top-level `entity_type` member of the body (compatibility with the earlier generator).
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
        check_content_type(&headers, false)?;
        let Query(query) =
            query.map_err(|e| ApiError::BadRequest(format!("invalid query string: {}", e.body_text())))?;
        let from_query = query.entity_type;
        let from_header = headers
            .get("x-entity-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (_held, body) =
            within(deadline, reserve(&state, &headers, state.body_limit(), body)).await?;
        let body = within(deadline, read_body(body, state.body_limit())).await?;
        let preset = from_query.or(from_header);
        let (entity, checked) = {
            let doc = crate::runtime::parse_json_object(&body)?;
            let name = preset
                .or_else(|| doc.root().get("entity_type").and_then(JsonRef::as_str).map(str::to_string))
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "no entity type: post to /ingest/message/{entity}, or give ?entity_type=, an X-Entity-Type header or a top-level \"entity_type\" member".into(),
                    )
                })?;
            named = name.clone();
            let entity = allowed_entity(&state, &client, &name)?;
            (entity, check(entity, doc.root()))
        };
        accept_one(&state, &client, entity, checked, &body, &headers).await
    }
    .await;
    answer(&state, &named, result)
}

/// The query string of `POST /ingest/message` (other parameters are ignored).
#[derive(Debug, serde::Deserialize)]
pub(super) struct UntypedQuery {
    /// The entity, when the path does not name it.
    entity_type: Option<String>,
}

/// One line's outcome in a batch answer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum LineResult {
    /// Stored by JetStream.
    Accepted {
        /// 1-based line number.
        line: usize,
        /// The message id.
        message_id: Uuid,
    },
    /// Refused; the line was not published (or its publish failed).
    Rejected {
        /// 1-based line number.
        line: usize,
        /// What went wrong.
        error: String,
        /// Field errors, when the line did not match the entity.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        details: Vec<FieldError>,
        /// Whether resending this line later may succeed.
        retryable: bool,
    },
}

/// Publishes of one batch request awaiting their JetStream acks at once (the context allows
/// 5 000 for all requests together).
const MAX_BATCH_PENDING_ACKS: usize = 512;

/// How many rejected lines a batch answer lists in full; the rest are only counted.
pub const MAX_ERRORS_SHOWN: usize = 100;

/// The rejected lines of a batch: the first [`MAX_ERRORS_SHOWN`] in full, all counted by reason.
#[derive(Default)]
struct Rejections {
    shown: Vec<LineResult>,
    total: usize,
    retryable: usize,
    by_reason: std::collections::BTreeMap<&'static str, usize>,
}

impl Rejections {
    fn add(&mut self, state: &AppState, entity: RootEntity, line: usize, e: ApiError) {
        count_rejected(state, entity.snake_name(), &e);
        self.total += 1;
        *self.by_reason.entry(rejection_reason(&e)).or_default() += 1;
        let result = rejected(line, e);
        if let LineResult::Rejected {
            retryable: true, ..
        } = result
        {
            self.retryable += 1;
        }
        if self.shown.len() < MAX_ERRORS_SHOWN {
            self.shown.push(result);
        }
    }
}

/// How a batch body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchFormat {
    /// One JSON object per line.
    Ndjson,
    /// One JSON array of objects.
    JsonArray,
    /// CSV (`text/csv`), read as the entity's `csv:` block says.
    Csv,
}

/// Whether the body is CSV (`text/csv`, `application/csv`).
fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|m| m == "text/csv" || m == "application/csv")
}

/// `POST /ingest/batch/{entity}`: NDJSON, one message per line, read and validated line by line
/// as the body streams in (at most `MAX_BATCH_LINES` lines, each at most `MAX_BODY_BYTES`, the
/// whole at most `MAX_BATCH_BYTES`); or a JSON array of messages (same limits; `line` in the
/// answer is the element's 1-based position). Nothing is published unless the whole body is within the
/// limits; then valid lines are all published before any ack is awaited (pipelined), and every
/// accepted line is acked before the answer.
pub(super) async fn ingest_batch(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    deadline: Option<Extension<ReadDeadline>>,
    Path(entity_name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let deadline = deadline.map(|Extension(d)| d);
    let result = batch(&state, &client, &entity_name, &headers, body, deadline).await;
    answer(&state, &entity_name, result)
}

async fn batch(
    state: &AppState,
    client: &Client,
    entity_name: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
    deadline: Option<ReadDeadline>,
) -> Result<Response, ApiError> {
    let entity = allowed_entity(state, client, entity_name)?;
    check_content_type(headers, true)?;
    let key = idempotency_key(headers)?;
    if super::budget::declared_length(headers).is_some_and(|n| n > state.max_batch_bytes) {
        return Err(ApiError::TooLarge {
            limit: state.max_batch_bytes,
        });
    }
    let (_held, body) = within(
        deadline,
        reserve(state, headers, state.max_batch_bytes, body),
    )
    .await?;
    let mut valid: Vec<(usize, Bytes)> = Vec::new();
    let mut rejections = Rejections::default();
    let mut lines = 0usize;
    let mut splitter = LineSplitter::new(state.body_limit());
    // Set once a CSV body's header is read: field errors then name the CSV column.
    let csv_layout: std::sync::OnceLock<crate::runtime::csv::CsvLayout> =
        std::sync::OnceLock::new();
    let mut on_line = |line: Row<'_>| -> Result<(), ApiError> {
        let (number, text) = match line {
            Row::Invalid(number, problem) => {
                lines += 1;
                if lines > state.max_batch_lines {
                    return Err(ApiError::TooManyLines {
                        limit: state.max_batch_lines,
                    });
                }
                let e = match problem {
                    RowProblem::NotUtf8 => ApiError::BadRequest(problem.to_string()),
                    RowProblem::Cells(errors) => ApiError::Invalid {
                        entity: Some(entity.name()),
                        errors,
                    },
                };
                rejections.add(state, entity, number, e);
                return Ok(());
            }
            Row::TooLong(number) => {
                lines += 1;
                if lines > state.max_batch_lines {
                    return Err(ApiError::TooManyLines {
                        limit: state.max_batch_lines,
                    });
                }
                rejections.add(
                    state,
                    entity,
                    number,
                    ApiError::TooLarge {
                        limit: state.body_limit(),
                    },
                );
                return Ok(());
            }
            Row::Text(number, text) => (number, text),
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        lines += 1;
        if lines > state.max_batch_lines {
            return Err(ApiError::TooManyLines {
                limit: state.max_batch_lines,
            });
        }
        let checked = crate::runtime::parse_json_object(text)
            .map_err(ApiError::from)
            .and_then(|doc| check(entity, doc.root()));
        let checked = match (checked, csv_layout.get()) {
            (Err(ApiError::Invalid { entity: e, errors }), Some(layout)) => {
                Err(ApiError::Invalid {
                    entity: e,
                    errors: csv_columns(entity, layout, errors),
                })
            }
            (checked, _) => checked,
        };
        match checked {
            // Only accepted lines are copied out of the streamed chunk.
            Ok(()) => valid.push((number, Bytes::copy_from_slice(text))),
            Err(e) => rejections.add(state, entity, number, e),
        }
        Ok(())
    };
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let mut refused: Option<ApiError> = None;
    // The first byte that is not white space decides: `[` is a JSON array (buffered whole,
    // within MAX_BATCH_BYTES, then walked element by element), anything else NDJSON (split as
    // it streams). Leading white space waits in `undecided` (it counts for NDJSON lines).
    let mut format: Option<BatchFormat> = is_csv(headers).then_some(BatchFormat::Csv);
    // Leading white space, before the format is known, is not kept: it goes through the line
    // splitter (which holds at most one line), too-long lines are noted, and line breaks are
    // counted so that an array's JSON errors keep their line numbers.
    let mut leading_newlines = 0usize;
    let mut leading_too_long: Vec<usize> = Vec::new();
    let mut array: Vec<u8> = Vec::new();
    // With a key, the whole body's digest (see `idempotency`).
    let mut body_digest = key.is_some().then(<sha2::Sha256 as sha2::Digest>::new);
    while let Some(chunk) = within(deadline, async {
        Ok(futures::StreamExt::next(&mut stream).await)
    })
    .await?
    {
        let chunk = chunk.map_err(body_read_error)?;
        if let Some(hasher) = &mut body_digest {
            sha2::Digest::update(hasher, &chunk);
        }
        read += chunk.len();
        if read > state.max_batch_bytes {
            return Err(ApiError::TooLarge {
                limit: state.max_batch_bytes,
            });
        }
        if format.is_none() {
            let first = chunk.iter().position(|b| !b.is_ascii_whitespace());
            let blank = &chunk[..first.unwrap_or(chunk.len())];
            leading_newlines += blank.iter().filter(|b| **b == b'\n').count();
            let mut note = |row: Row<'_>| {
                if let Row::TooLong(n) = row {
                    leading_too_long.push(n);
                }
                Ok::<(), ApiError>(())
            };
            splitter.feed(blank, &mut note)?;
            let Some(first) = first else { continue };
            if chunk[first] == b'[' {
                format = Some(BatchFormat::JsonArray);
                array.resize(leading_newlines, b'\n');
                array.extend_from_slice(&chunk[first..]);
                continue;
            }
            format = Some(BatchFormat::Ndjson);
            for n in std::mem::take(&mut leading_too_long) {
                if let Err(e) = on_line(Row::TooLong(n)) {
                    refused = Some(e);
                    break;
                }
            }
            if refused.is_none()
                && let Err(e) = splitter.feed(&chunk[first..], &mut on_line)
            {
                refused = Some(e);
            }
            continue;
        }
        match format {
            Some(BatchFormat::JsonArray | BatchFormat::Csv) => array.extend_from_slice(&chunk),
            // Once refused, the rest is read and dropped (bounded by MAX_BATCH_BYTES) so that
            // the client, still sending, reads the answer instead of a reset connection.
            _ if refused.is_some() => {}
            _ => {
                if let Err(e) = splitter.feed(&chunk, &mut on_line) {
                    refused = Some(e);
                }
            }
        }
    }
    if format == Some(BatchFormat::JsonArray) {
        if let Err(e) = each_array_element(&array[..], state.body_limit(), &mut on_line) {
            refused = Some(e);
        }
    } else if format == Some(BatchFormat::Csv) {
        let ready = |layout| {
            let _ = csv_layout.set(layout);
        };
        if let Err(e) = each_csv_row(&array[..], entity, state.body_limit(), ready, &mut on_line) {
            refused = Some(e);
        }
    } else if refused.is_none() {
        // NDJSON, or nothing but white space.
        let replayed = std::mem::take(&mut leading_too_long)
            .into_iter()
            .try_for_each(|n| on_line(Row::TooLong(n)));
        if let Err(e) = replayed.and_then(|()| splitter.finish(&mut on_line)) {
            refused = Some(e);
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    if lines == 0 {
        return Err(ApiError::BadRequest(
            "the batch is empty: send one JSON object per line, or a JSON array of objects".into(),
        ));
    }
    if let (Some(key), Some(hasher)) = (key.as_deref(), body_digest) {
        let id = message_id(client, entity, Some(key), None);
        let digest: [u8; 32] = sha2::Digest::finalize(hasher).into();
        state
            .fingerprints
            .claim(&state.jetstream, &state.stream, id, digest)
            .await?;
    }
    let started = Instant::now();
    let units = match key.as_deref() {
        // Keyed lines keep a message each, deduplicated on its own id (derived from the key
        // and the line number), so a retry names every line as before whatever else changed.
        Some(key) => valid
            .into_iter()
            .map(|(number, body)| {
                let id = message_id(client, entity, Some(key), Some(number));
                PublishUnit::single(state, number, Validated::new(entity, id, body, true))
            })
            .collect(),
        None => group_lines(state, entity, valid),
    };
    // Published pipelined, with acks taken as they arrive: the JetStream context allows a
    // bounded number of unacknowledged publishes (shared by all requests), and a permit comes
    // back only when its ack future completes, so a request must not hold more than its share
    // unpolled while it waits for room to send.
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut acks = Vec::with_capacity(units.len());
    for unit in units {
        while pending.len() >= MAX_BATCH_PENDING_ACKS {
            if let Some(done) = futures::StreamExt::next(&mut pending).await {
                acks.push(done);
            }
        }
        let PublishUnit {
            lines,
            subject,
            message,
        } = unit;
        let sending = state.jetstream.send_publish(subject, message);
        tokio::pin!(sending);
        let sent = loop {
            tokio::select! {
                biased;
                sent = &mut sending => break sent,
                Some(done) = futures::StreamExt::next(&mut pending), if !pending.is_empty() => {
                    acks.push(done);
                }
            }
        };
        match sent {
            Ok(ack) => {
                pending.push(async move { (lines, await_ack(state, entity, started, ack).await) })
            }
            Err(e) => {
                for (number, _) in lines {
                    rejections.add(
                        state,
                        entity,
                        number,
                        publish_error(e.kind(), e.to_string()),
                    );
                }
            }
        }
    }
    while let Some(done) = futures::StreamExt::next(&mut pending).await {
        acks.push(done);
    }
    let mut results = Vec::with_capacity(acks.len() + rejections.shown.len());
    let mut accepted = 0usize;
    for (lines, ack) in acks {
        match ack {
            Ok(_) => {
                accepted += lines.len();
                results.extend(
                    lines
                        .into_iter()
                        .map(|(line, message_id)| LineResult::Accepted { line, message_id }),
                );
            }
            Err((kind, detail)) => {
                for (line, _) in lines {
                    rejections.add(state, entity, line, publish_error(kind, detail.clone()));
                }
            }
        }
    }
    state.metrics.of(entity).accepted.inc_by(accepted as u64);
    results.extend(std::mem::take(&mut rejections.shown));
    results.sort_by_key(LineResult::line);
    let status = if accepted > 0 {
        StatusCode::ACCEPTED
    } else if rejections.retryable == rejections.total {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let omitted = rejections.total - results.len().saturating_sub(accepted);
    let body = json!({
        "entity": entity.name(),
        "accepted": accepted,
        "rejected": rejections.total,
        "results": results,
        "errors_omitted": omitted,
        "rejected_by_reason": rejections.by_reason,
    });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        super::error::retry_after(&mut response, 1);
    }
    Ok(response)
}

/// One JetStream message of a batch: the lines it carries, each with its message id.
struct PublishUnit {
    /// `(line number, message id)` of every line in it, in order.
    lines: Vec<(usize, Uuid)>,
    subject: String,
    message: async_nats::jetstream::message::PublishMessage,
}

impl PublishUnit {
    /// A line as its own message, deduplicated on its id.
    fn single(state: &AppState, number: usize, v: Validated) -> Self {
        let id = v.envelope.message_id;
        Self {
            lines: vec![(number, id)],
            subject: message_subject(&state.stream, v.entity.snake_name(), &id),
            message: v.envelope.to_publish(v.dedup),
        }
    }
}

/// Lines with fresh ids in [`MessageGroup`](crate::envelope::MessageGroup)s, in order: up to
/// 256 lines and the group byte limit each (a line larger than that goes alone), so
/// JetStream's costs per message are paid once per group, as for concurrent single requests.
fn group_lines(
    state: &AppState,
    entity: RootEntity,
    valid: Vec<(usize, Bytes)>,
) -> Vec<PublishUnit> {
    use crate::envelope::{MAX_GROUP_MEMBERS, MessageGroup, member_id, new_group_id};
    let max_bytes = super::group::max_group_bytes(&state.jetstream);
    let mut units = Vec::new();
    let mut valid = valid.into_iter().peekable();
    while let Some((number, first)) = valid.next() {
        let mut bytes = first.len();
        let mut numbers = vec![number];
        let mut bodies = vec![first];
        while bodies.len() < MAX_GROUP_MEMBERS
            && let Some((_, next)) = valid.peek()
            && bytes + next.len() <= max_bytes
        {
            let (number, next) = valid.next().expect("peeked");
            bytes += next.len();
            numbers.push(number);
            bodies.push(next);
        }
        let group = MessageGroup {
            first_id: new_group_id(),
            bodies,
        };
        state.groups.observe(group.bodies.len());
        units.push(PublishUnit {
            lines: numbers
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n, member_id(&group.first_id, i)))
                .collect(),
            subject: message_subject(&state.stream, entity.snake_name(), &group.first_id),
            message: group.to_publish(),
        });
    }
    units
}

impl LineResult {
    /// The 1-based line number.
    pub(super) fn line(&self) -> usize {
        match self {
            LineResult::Accepted { line, .. } | LineResult::Rejected { line, .. } => *line,
        }
    }
}

fn rejected(line: usize, e: ApiError) -> LineResult {
    let retryable = e.status() == StatusCode::SERVICE_UNAVAILABLE;
    let error = e.to_string();
    let details = e.field_errors();
    LineResult::Rejected {
        line,
        error,
        details,
        retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
