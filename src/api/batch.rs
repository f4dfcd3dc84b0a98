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
use super::server::ReadDeadline;
use super::{ApiError, AppState};
use crate::bulk::{
    CheckedRow, Format, LineSplitter, Refusal, Row, RowProblem, check_row, each_array_element,
    each_csv_row,
};
use crate::generated::RootEntity;
use crate::nats::{Outgoing, Pipeline, message_subject};
use crate::runtime::{FieldError, ParseError};

use super::body::{body_read_error, check_content_type, is_csv, reserve, within};
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
                let e = match why {
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
                };
                rejections.add(state, entity, number, e);
            }
        }
        Ok(())
    };
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let mut refused: Option<ApiError> = None;
    // The first byte that is not white space decides: `[` is a JSON array (buffered whole,
    // within MAX_BATCH_BYTES, then walked element by element), anything else NDJSON (split as
    // it streams). Leading white space waits in `undecided` (it counts for NDJSON lines).
    let mut format: Option<Format> = is_csv(headers).then_some(Format::Csv);
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
                format = Some(Format::Json);
                array.resize(leading_newlines, b'\n');
                array.extend_from_slice(&chunk[first..]);
                continue;
            }
            format = Some(Format::Ndjson);
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
            Some(Format::Json | Format::Csv) => array.extend_from_slice(&chunk),
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
    if format == Some(Format::Json) {
        if let Err(e) = each_array_element(&array[..], state.body_limit(), &mut on_line) {
            refused = Some(e);
        }
    } else if format == Some(Format::Csv) {
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
    // Pipelined (see `nats::Pipeline`), with at most MAX_BATCH_PENDING_ACKS acks in flight.
    let mut pipeline = Pipeline::new(&*state.publisher, MAX_BATCH_PENDING_ACKS);
    for unit in units {
        pipeline.send(unit.lines, unit.outgoing).await;
    }
    let acks = pipeline.finish().await;
    let histogram = &state.metrics.of(entity).publish_seconds;
    for _ in &acks {
        histogram.observe(started.elapsed().as_secs_f64());
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
            Err(e) => {
                for (line, _) in lines {
                    rejections.add(state, entity, line, publish_error(&e));
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
