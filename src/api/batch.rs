//! `POST /ingest/batch/{entity}`: NDJSON, JSON-array and CSV bodies read and checked line by
//! line, published pipelined (in groups without an `Idempotency-Key`), answered line by line.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
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
    Validated, allowed_entity, answer, count_rejected, publish_error, rejection_reason,
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
    fn add(&mut self, state: &AppState, entity: RootEntity, line: usize, e: ApiError) {
        count_rejected(state, entity.snake_name(), &e);
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

pub(super) async fn batch(
    state: &AppState,
    client: &Client,
    entity_name: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
    deadline: Option<ReadDeadline>,
) -> Result<Response, ApiError> {
    let entity = allowed_entity(state, client, entity_name)?;
    let format = batch_format(headers)?;
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
    let read = read_rows(state, entity, format, body, deadline, key.is_some()).await?;
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
    if let (Some(key), Some(digest)) = (key.as_deref(), digest) {
        let id = message_id(client, entity, Some(key), None);
        state
            .fingerprints
            .claim(&state.jetstream, &state.stream, id, digest)
            .await?;
    }
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
        // Large batches travel as chunks (one status row per chunk, as `worker load`'s).
        None if valid.len() >= CHUNK_MIN_LINES => chunk_lines(state, entity, valid),
        None => group_lines(state, entity, valid),
    };
    let accepted = publish_units(state, entity, units, &mut rejections).await;
    Ok(batch_answer(entity, accepted, rejections))
}

/// A batch body read and checked: its valid rows, the refused ones, how many rows it had
/// (blank lines aside) and, when asked for, its digest.
struct ReadRows {
    valid: Vec<(usize, Bytes)>,
    rejections: Rejections,
    lines: usize,
    digest: Option<[u8; 32]>,
}

/// Reads the body as it streams in (within the deadline and `MAX_BATCH_BYTES`) through the
/// format's row reader (`bulk::ChunkWalker`), checking every row; fails on a body that cannot
/// be read as a whole or has more than `MAX_BATCH_LINES` rows.
async fn read_rows(
    state: &AppState,
    entity: RootEntity,
    format: Option<Format>,
    body: axum::body::Body,
    deadline: Option<ReadDeadline>,
    digest: bool,
) -> Result<ReadRows, ApiError> {
    let mut valid: Vec<(usize, Bytes)> = Vec::new();
    let mut rejections = Rejections::default();
    let mut lines = 0usize;
    // Set once a CSV body's header is read: field errors then name the CSV column.
    let csv_layout: std::sync::OnceLock<crate::runtime::csv::CsvLayout> =
        std::sync::OnceLock::new();
    let mut on_line = |row: Row<'_>| -> Result<(), ApiError> {
        let checked = check_row(entity, row, csv_layout.get());
        if matches!(checked, CheckedRow::Blank) {
            return Ok(());
        }
        lines += 1;
        if lines > state.max_batch_lines {
            return Err(ApiError::TooManyLines {
                limit: state.max_batch_lines,
            });
        }
        match checked {
            CheckedRow::Blank => {}
            // Only accepted lines are copied out of the streamed chunk.
            CheckedRow::Valid(number, text) => valid.push((number, Bytes::copy_from_slice(text))),
            CheckedRow::Refused(number, why) => {
                rejections.add(state, entity, number, refusal_error(state, entity, why));
            }
        }
        Ok(())
    };
    let mut walker = ChunkWalker::new(format, entity, state.body_limit());
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
            }
        }
        Refusal::Message(other) => ApiError::from(other),
    }
}

/// Publishes the units pipelined (see `nats::Pipeline`, at most [`MAX_BATCH_PENDING_ACKS`]
/// acks in flight); returns the accepted lines, and adds the lines whose publish failed to
/// `rejections`.
async fn publish_units(
    state: &AppState,
    entity: RootEntity,
    units: Vec<PublishUnit>,
    rejections: &mut Rejections,
) -> Vec<LineResult> {
    let started = Instant::now();
    let mut pipeline = Pipeline::new(&*state.publisher, MAX_BATCH_PENDING_ACKS);
    for unit in units {
        pipeline.send(unit.lines, unit.outgoing).await;
    }
    let acks = pipeline.finish().await;
    let histogram = &state.metrics.of(entity).publish_seconds;
    let mut accepted = Vec::new();
    for (lines, ack) in acks {
        histogram.observe(started.elapsed().as_secs_f64());
        match ack {
            Ok(_) => accepted.extend(
                lines
                    .into_iter()
                    .map(|(line, message_id)| LineResult::Accepted { line, message_id }),
            ),
            Err(e) => {
                for (line, _) in lines {
                    rejections.add(state, entity, line, publish_error(&e));
                }
            }
        }
    }
    state
        .metrics
        .of(entity)
        .accepted
        .inc_by(accepted.len() as u64);
    accepted
}

/// The answer: every accepted line and the first rejected ones, in line order; 202 if any
/// line was accepted, else 503 when every refusal may pass later, else 422.
fn batch_answer(entity: RootEntity, accepted: Vec<LineResult>, rejections: Rejections) -> Response {
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
        "entity": entity.name(),
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
    /// `(line number, message id)` of every line in it, in order.
    lines: Vec<(usize, Uuid)>,
    outgoing: Outgoing,
}

impl PublishUnit {
    /// A line as its own message, deduplicated on its id.
    fn single(state: &AppState, number: usize, v: Validated) -> Self {
        Self {
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
    use crate::envelope::{CHUNK_BYTES, CHUNK_ROWS, MessageChunk, chunk_member_id, new_chunk_id};
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
        };
        units.push(PublishUnit {
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
