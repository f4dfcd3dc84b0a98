//! `POST /ingest/batch/{entity}`: NDJSON, JSON-array and CSV bodies read and checked line by
//! line, published pipelined (in groups without an `Idempotency-Key`), answered line by line.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::auth::Client;
use super::error::UpstreamFailure;
use super::server::ReadDeadline;
use super::{ApiError, AppState};
use crate::bulk::{CheckedRow, ChunkWalker, Format, Refusal, Row, RowProblem, check_row};
use crate::generated::RootEntity;
use crate::nats::{Outgoing, Pipeline, message_subject};
use crate::runtime::{FieldError, ParseError};

use super::body::{batch_format, body_read_error, reserve, within};
use super::ids::{idempotency_key, message_id};
use super::ingest::{
    UntypedQuery, Validated, allowed_entity, answer, check, count_rejected, entity_hint,
    member_hint, publish_error, rejection_reason,
};

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
        /// The entity the line was accepted as, in a batch that did not name one.
        #[serde(skip_serializing_if = "Option::is_none")]
        entity: Option<&'static str>,
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
pub(super) const MAX_BATCH_PENDING_ACKS: usize = 512;

/// How many rejected lines a batch answer lists in full; the rest are only counted.
pub const MAX_ERRORS_SHOWN: usize = 100;

/// The rejected lines of a batch: the first [`MAX_ERRORS_SHOWN`] in full, all counted by reason.
#[derive(Default)]
pub(super) struct Rejections {
    shown: Vec<LineResult>,
    total: usize,
    retryable: usize,
    by_reason: std::collections::BTreeMap<&'static str, usize>,
    /// The first dependency failure among them, for the log.
    upstream: Option<UpstreamFailure>,
}

impl Rejections {
    fn add(&mut self, state: &AppState, entity: &str, line: usize, e: ApiError) {
        count_rejected(state, entity, &e);
        self.total += 1;
        *self.by_reason.entry(rejection_reason(&e)).or_default() += 1;
        if let ApiError::Unavailable { what, detail } = &e
            && self.upstream.is_none()
        {
            self.upstream = Some(UpstreamFailure {
                what: *what,
                detail: detail.clone(),
            });
        }
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

/// `POST /ingest/batch` without an entity in the path: `?entity_type=` or `X-Entity-Type`
/// names one for every line; without either, each line is routed on its own (its
/// `entity_type` member, or the one entity it matches, see `detect`) and the answer names each
/// accepted line's entity. CSV rows carry no member names to route by: they need an entity.
pub(super) async fn ingest_batch_untyped(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    deadline: Option<Extension<ReadDeadline>>,
    query: Result<Query<UntypedQuery>, QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let deadline = deadline.map(|Extension(d)| d);
    let named = match entity_hint(query, &headers) {
        Ok(named) => named,
        Err(e) => return answer(&state, "unknown", Err(e)),
    };
    let result = match &named {
        Some(name) => batch(&state, &client, name, &headers, body, deadline).await,
        None => {
            batch_of(
                &state,
                &client,
                LineEntity::Detected,
                &headers,
                body,
                deadline,
            )
            .await
        }
    };
    answer(&state, named.as_deref().unwrap_or("unknown"), result)
}

/// How a batch's lines get their entity.
#[derive(Debug, Clone, Copy)]
enum LineEntity {
    /// The request names it for every line.
    Named(RootEntity),
    /// Each line's own (see [`detect_line`]).
    Detected,
}

pub(super) async fn batch(
    state: &AppState,
    client: &Client,
    entity_name: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
    deadline: Option<ReadDeadline>,
) -> Result<Response, ApiError> {
    let entity = allowed_entity(state, client, entity_name)?;
    batch_of(
        state,
        client,
        LineEntity::Named(entity),
        headers,
        body,
        deadline,
    )
    .await
}

async fn batch_of(
    state: &AppState,
    client: &Client,
    lines_of: LineEntity,
    headers: &HeaderMap,
    body: axum::body::Body,
    deadline: Option<ReadDeadline>,
) -> Result<Response, ApiError> {
    let format = batch_format(headers)?;
    if matches!(lines_of, LineEntity::Detected) && format == Some(Format::Csv) {
        return Err(ApiError::BadRequest(
            "CSV rows have no member names to find their entity by: name it (POST /ingest/batch/{entity}, ?entity_type= or an X-Entity-Type header)".into(),
        ));
    }
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
    let read = read_rows(
        state,
        client,
        lines_of,
        format,
        body,
        deadline,
        key.is_some(),
    )
    .await?;
    let ReadRows {
        valid,
        mut rejections,
        lines,
        digest,
    } = read;
    if lines == 0 {
        return Err(ApiError::BadRequest(
            "the batch is empty: send one JSON object per line, or a JSON array of objects".into(),
        ));
    }
    // The key's record is claimed under the request's entity (a routed batch: its first
    // accepted line's).
    let key_entity = match lines_of {
        LineEntity::Named(entity) => Some(entity),
        LineEntity::Detected => valid.first().map(|(_, entity, _)| *entity),
    };
    if let (Some(key), Some(digest), Some(entity)) = (key.as_deref(), digest, key_entity) {
        let id = message_id(client, entity, Some(key), None);
        state
            .fingerprints
            .claim(&state.jetstream, &state.stream, id, digest)
            .await?;
    }
    let mut by_entity: std::collections::BTreeMap<RootEntity, Vec<(usize, Bytes)>> =
        Default::default();
    for (number, entity, body) in valid {
        by_entity.entry(entity).or_default().push((number, body));
    }
    let mut units = Vec::new();
    for (entity, valid) in by_entity {
        units.extend(match key.as_deref() {
            // Keyed lines keep a message each, deduplicated on its own id (derived from the
            // key and the line number), so a retry names every line as before whatever else
            // changed.
            Some(key) => valid
                .into_iter()
                .map(|(number, body)| {
                    let id = message_id(client, entity, Some(key), Some(number));
                    PublishUnit::single(state, number, Validated::new(entity, id, body, true))
                })
                .collect(),
            // Large batches travel as chunks (one status row per chunk, as `worker load`'s).
            None if valid.len() >= CHUNK_MIN_LINES => chunk_lines(state, entity, valid),
            None => group_lines(state, entity, valid),
        });
    }
    let named = match lines_of {
        LineEntity::Named(entity) => Some(entity),
        LineEntity::Detected => None,
    };
    let accepted = publish_units(state, named.is_none(), units, &mut rejections).await;
    Ok(batch_answer(named, accepted, rejections))
}

/// A batch body read and checked: its valid rows, the refused ones, how many rows it had
/// (blank lines aside) and, when asked for, its digest.
struct ReadRows {
    valid: Vec<(usize, RootEntity, Bytes)>,
    rejections: Rejections,
    lines: usize,
    digest: Option<[u8; 32]>,
}

/// Reads the body as it streams in (within the deadline and `MAX_BATCH_BYTES`) through the
/// format's row reader (`bulk::ChunkWalker`), checking every row; fails on a body that cannot
/// be read as a whole or has more than `MAX_BATCH_LINES` rows.
async fn read_rows(
    state: &AppState,
    client: &Client,
    lines_of: LineEntity,
    format: Option<Format>,
    body: axum::body::Body,
    deadline: Option<ReadDeadline>,
    digest: bool,
) -> Result<ReadRows, ApiError> {
    let mut valid: Vec<(usize, RootEntity, Bytes)> = Vec::new();
    let mut rejections = Rejections::default();
    let mut lines = 0usize;
    // Set once a CSV body's header is read: field errors then name the CSV column.
    let csv_layout: std::sync::OnceLock<crate::runtime::csv::CsvLayout> =
        std::sync::OnceLock::new();
    let mut on_line = |row: Row<'_>| -> Result<(), ApiError> {
        let (number, checked) = match lines_of {
            LineEntity::Named(entity) => match check_row(entity, row, csv_layout.get()) {
                CheckedRow::Blank => return Ok(()),
                CheckedRow::Valid(number, text) => (number, Ok((entity, text))),
                CheckedRow::Refused(number, why) => (
                    number,
                    Err((entity.snake_name(), refusal_error(state, entity, why))),
                ),
            },
            LineEntity::Detected => match detect_line(state, client, row) {
                None => return Ok(()),
                Some((number, checked)) => (number, checked),
            },
        };
        lines += 1;
        if lines > state.max_batch_lines {
            return Err(ApiError::TooManyLines {
                limit: state.max_batch_lines,
            });
        }
        match checked {
            // Only accepted lines are copied out of the streamed chunk.
            Ok((entity, text)) => valid.push((number, entity, Bytes::copy_from_slice(text))),
            Err((label, e)) => rejections.add(state, label, number, e),
        }
        Ok(())
    };
    // The entity only matters to CSV, which a routed batch refuses.
    let walker_entity = match lines_of {
        LineEntity::Named(entity) => entity,
        LineEntity::Detected => RootEntity::ALL[0],
    };
    let mut walker = ChunkWalker::new(format, walker_entity, state.body_limit());
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let mut refused: Option<ApiError> = None;
    // With a key, the whole body's digest (see `idempotency`).
    let mut hasher = digest.then(<sha2::Sha256 as sha2::Digest>::new);
    while let Some(chunk) = within(deadline, async {
        Ok(futures::StreamExt::next(&mut stream).await)
    })
    .await?
    {
        let chunk = chunk.map_err(body_read_error)?;
        if let Some(hasher) = &mut hasher {
            sha2::Digest::update(hasher, &chunk);
        }
        read += chunk.len();
        if read > state.max_batch_bytes {
            return Err(ApiError::TooLarge {
                limit: state.max_batch_bytes,
            });
        }
        // Once refused, the rest is read and dropped (bounded by MAX_BATCH_BYTES) so that the
        // client, still sending, reads the answer instead of a reset connection.
        if refused.is_none()
            && let Err(e) = walker.feed(&chunk, &mut on_line)
        {
            refused = Some(e);
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    let ready = |layout| {
        let _ = csv_layout.set(layout);
    };
    walker.finish(ready, &mut on_line)?;
    Ok(ReadRows {
        valid,
        rejections,
        lines,
        digest: hasher.map(|h| sha2::Digest::finalize(h).into()),
    })
}

/// The answer's error for a refused row.
fn refusal_error(state: &AppState, entity: RootEntity, why: Refusal) -> ApiError {
    match why {
        Refusal::TooLong => ApiError::TooLarge {
            limit: state.body_limit(),
        },
        Refusal::NotUtf8 => ApiError::BadRequest(RowProblem::NotUtf8.to_string()),
        Refusal::Cells(errors) | Refusal::Message(ParseError::Invalid(errors)) => {
            ApiError::Invalid {
                entity: Some(entity.name()),
                errors,
                unknown: Vec::new(),
                guessed: false,
            }
        }
        Refusal::Message(other) => ApiError::from(other),
    }
}

/// A line of a batch that names no entity: blank (`None`), or its number with the entity it
/// was accepted as and its text, or the refusal (with the entity label it is counted under).
#[allow(clippy::type_complexity)]
fn detect_line<'a>(
    state: &AppState,
    client: &Client,
    row: Row<'a>,
) -> Option<(
    usize,
    Result<(RootEntity, &'a [u8]), (&'static str, ApiError)>,
)> {
    // Refusals of lines no entity was found for are counted under `unknown`.
    let unknown = "unknown";
    match row {
        Row::Text(_, text) if text.iter().all(u8::is_ascii_whitespace) => None,
        Row::Text(number, text) => {
            let checked = crate::runtime::parse_json_object(text)
                .map_err(|e| (unknown, ApiError::from(e)))
                .and_then(|doc| {
                    let entity = match member_hint(doc.root()) {
                        Some(name) => {
                            let entity =
                                allowed_entity(state, client, &name).map_err(|e| (unknown, e))?;
                            check(entity, doc.root()).map_err(|e| (entity.snake_name(), e))?;
                            entity
                        }
                        // A detected entity has accepted the line already.
                        None => {
                            super::detect::detect(client, doc.root()).map_err(|e| (unknown, e))?
                        }
                    };
                    Ok((entity, text))
                });
            Some((number, checked))
        }
        Row::TooLong(number) => Some((
            number,
            Err((
                unknown,
                ApiError::TooLarge {
                    limit: state.body_limit(),
                },
            )),
        )),
        Row::Invalid(number, problem) => Some((
            number,
            Err((unknown, ApiError::BadRequest(problem.to_string()))),
        )),
    }
}

/// Publishes the units pipelined (see `nats::Pipeline`, at most [`MAX_BATCH_PENDING_ACKS`]
/// acks in flight); returns the accepted lines, and adds the lines whose publish failed to
/// `rejections`.
async fn publish_units(
    state: &AppState,
    name_entities: bool,
    units: Vec<PublishUnit>,
    rejections: &mut Rejections,
) -> Vec<LineResult> {
    let started = Instant::now();
    let mut pipeline = Pipeline::new(&*state.publisher, MAX_BATCH_PENDING_ACKS);
    for unit in units {
        pipeline
            .send((unit.entity, unit.lines), unit.outgoing)
            .await;
    }
    let acks = pipeline.finish().await;
    let mut accepted = Vec::new();
    for ((entity, lines), ack) in acks {
        let metrics = state.metrics.of(entity);
        metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        match ack {
            Ok(_) => {
                metrics.accepted.inc_by(lines.len() as u64);
                let named = name_entities.then(|| entity.snake_name());
                accepted.extend(
                    lines
                        .into_iter()
                        .map(|(line, message_id)| LineResult::Accepted {
                            line,
                            message_id,
                            entity: named,
                        }),
                );
            }
            Err(e) => {
                for (line, _) in lines {
                    rejections.add(state, entity.snake_name(), line, publish_error(&e));
                }
            }
        }
    }
    accepted
}

/// The answer: every accepted line and the first rejected ones, in line order; 202 if any
/// line was accepted, else 503 when every refusal may pass later, else 422.
fn batch_answer(
    entity: Option<RootEntity>,
    accepted: Vec<LineResult>,
    rejections: Rejections,
) -> Response {
    let accepted_count = accepted.len();
    let mut results = accepted;
    results.extend(rejections.shown);
    results.sort_by_key(LineResult::line);
    let status = if accepted_count > 0 {
        StatusCode::ACCEPTED
    } else if rejections.retryable == rejections.total {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let omitted = rejections.total - results.len().saturating_sub(accepted_count);
    let body = json!({
        "entity": entity.map(RootEntity::name),
        "accepted": accepted_count,
        "rejected": rejections.total,
        "results": results,
        "errors_omitted": omitted,
        "rejected_by_reason": rejections.by_reason,
    });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        super::error::retry_after(&mut response, 1);
    }
    if let Some(failure) = rejections.upstream {
        response.extensions_mut().insert(failure);
    }
    response
}

/// One JetStream message of a batch: the lines it carries, each with its message id.
pub(super) struct PublishUnit {
    /// The entity of its lines.
    entity: RootEntity,
    /// `(line number, message id)` of every line in it, in order.
    lines: Vec<(usize, Uuid)>,
    outgoing: Outgoing,
}

impl PublishUnit {
    /// A line as its own message, deduplicated on its id.
    fn single(state: &AppState, number: usize, v: Validated) -> Self {
        Self {
            entity: v.entity,
            lines: vec![(number, v.envelope.message_id)],
            outgoing: v.outgoing(&state.stream),
        }
    }
}

/// Batches of at least this many valid lines (without an `Idempotency-Key`) are published as
/// chunks: the worker stores each with one status row instead of one per line.
pub(super) const CHUNK_MIN_LINES: usize = 1000;

/// Lines with fresh ids in [`MessageChunk`](crate::envelope::MessageChunk)s, in order: up to
/// [`CHUNK_ROWS`](crate::envelope::CHUNK_ROWS) lines and [`CHUNK_BYTES`](crate::envelope::CHUNK_BYTES)
/// each, within the server's `max_payload` (a line larger than that goes alone). Line `i` of a
/// chunk has the chunk's id with `i` in its last two bytes.
pub(super) fn chunk_lines(
    state: &AppState,
    entity: RootEntity,
    valid: Vec<(usize, Bytes)>,
) -> Vec<PublishUnit> {
    use crate::envelope::{
        CHUNK_BYTES, CHUNK_ROWS, MessageChunk, SchemaVersion, chunk_member_id, new_chunk_id,
    };
    let room = state.publisher.max_payload();
    let mut units = Vec::new();
    let mut valid = valid.into_iter().peekable();
    let received_at = chrono::Utc::now();
    while let Some((number, first)) = valid.next() {
        let mut bytes = first.len();
        let mut lines = vec![number as u64];
        let mut bodies = vec![first];
        while bodies.len() < CHUNK_ROWS
            && let Some((_, next)) = valid.peek()
            && bytes + next.len() <= CHUNK_BYTES
            && bytes + next.len() + MessageChunk::overhead(bodies.len() + 1) <= room
        {
            let (number, next) = valid.next().expect("peeked");
            bytes += next.len();
            lines.push(number as u64);
            bodies.push(next);
        }
        let chunk = MessageChunk {
            id: new_chunk_id(),
            entity: entity.name().to_string(),
            received_at,
            lines,
            bodies,
            schema: Some(SchemaVersion::own()),
        };
        units.push(PublishUnit {
            entity,
            lines: chunk
                .lines
                .iter()
                .enumerate()
                .map(|(i, n)| (*n as usize, chunk_member_id(&chunk.id, i)))
                .collect(),
            outgoing: Outgoing {
                subject: message_subject(&state.stream, entity.snake_name(), &chunk.id),
                message: chunk.to_publish(),
            },
        });
    }
    units
}

/// Lines with fresh ids in [`MessageGroup`](crate::envelope::MessageGroup)s, in order: up to
/// 256 lines and the group byte limit each (a line larger than that goes alone), so
/// JetStream's costs per message are paid once per group, as for concurrent single requests.
pub(super) fn group_lines(
    state: &AppState,
    entity: RootEntity,
    valid: Vec<(usize, Bytes)>,
) -> Vec<PublishUnit> {
    use crate::envelope::{MAX_GROUP_MEMBERS, MessageGroup, member_id, new_group_id};
    let max_bytes = super::group::max_group_bytes(state.publisher.max_payload());
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
            entity,
            lines: numbers
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n, member_id(&group.first_id, i)))
                .collect(),
            outgoing: Outgoing {
                subject: message_subject(&state.stream, entity.snake_name(), &group.first_id),
                message: group.to_publish(),
            },
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

pub(super) fn rejected(line: usize, e: ApiError) -> LineResult {
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
