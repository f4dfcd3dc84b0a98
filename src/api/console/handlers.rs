//! The console's JSON endpoints: each reads its input, calls `crate::admin` or the store, and
//! answers JSON; errors are [`ApiError`]s (JSON bodies, 4xx for the request, 503 when the
//! database or JetStream cannot answer).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::super::auth::Client;
use super::super::{ApiError, AppState, Dependency};
use crate::admin::dead_letters::{self as dl, DryRun};
use crate::admin::stats::{self, Sources};
use crate::generated::{RootEntity, TABLES};
use crate::store::{DeadLetterFilter, DeadLetterPage, ReasonClass, StoreError, StoredDeadLetter};

/// Dead letters per page at most.
pub(super) const MAX_PAGE: usize = 200;
/// Characters of a reason shown in a list (the detail shows it whole).
const REASON_SHOWN: usize = 300;
/// Bytes of a body shown in the detail view (the rest is counted, not sent).
pub(super) const BODY_SHOWN: usize = 64 * 1024;
/// Ids one replay request may name.
pub(super) const MAX_IDS: usize = 500;
/// Rows per table a trace lists.
const TRACE_ROWS: usize = 50;
/// Longest discard note.
const MAX_NOTE: usize = 2000;

/// Who did it, as the audit records it: the key's name, or `local` on a loopback port.
fn operator(client: &Client) -> String {
    if client.is_anonymous() {
        "local".into()
    } else {
        client.name.to_string()
    }
}

fn unavailable(e: StoreError) -> ApiError {
    Dependency::OperatorRecords.unavailable(e)
}

/// `GET /stats`: the overview (see [`stats::overview`]), read at most every few seconds.
pub(super) async fn stats(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let mut cached = state.console.overview.lock().await;
    if let Some((at, overview)) = cached.as_ref()
        && at.elapsed() < super::OVERVIEW_FRESH_FOR
    {
        return Ok(Json(json!(overview)));
    }
    let sources = Sources {
        store: state.store.as_ref(),
        jetstream: &state.jetstream,
        stream: &state.stream,
        consumer: &state.consumer,
        started: state.console.started,
    };
    let overview = stats::overview(&sources).await.map_err(unavailable)?;
    let answer = json!(overview);
    *cached = Some((Instant::now(), overview));
    Ok(Json(answer))
}

/// The filter of a list, a dry run or a replay, as the query or the body gives it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilterParams {
    entity: Option<String>,
    class: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    message_id: Option<String>,
}

/// A parameter given and not blank.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl FilterParams {
    fn filter(&self) -> Result<DeadLetterFilter, ApiError> {
        let class = match given(&self.class) {
            Some(label) => Some(ReasonClass::parse(label).ok_or_else(|| {
                let known: Vec<&str> = ReasonClass::ALL.iter().map(|c| c.label()).collect();
                ApiError::BadRequest(format!(
                    "`class`: not a reason class (known: {})",
                    known.join(", ")
                ))
            })?),
            None => None,
        };
        let since = match given(&self.since) {
            Some(text) => Some(
                dl::parse_since(text, Utc::now())
                    .map_err(|e| ApiError::BadRequest(format!("`since`: {e}")))?,
            ),
            None => None,
        };
        // Not `given`: a blank id is a malformed id, not "any message".
        let message_id = match &self.message_id {
            Some(text) => Some(parse_id(text)?),
            None => None,
        };
        Ok(DeadLetterFilter {
            message_id,
            entity: given(&self.entity).map(str::to_string),
            reason: given(&self.reason).map(str::to_string),
            class,
            since,
        })
    }
}

/// A query string that does not read as the route's parameters: a 400 with JSON, as every
/// other refusal.
fn refused_query(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

/// `limit`: 50 when not given, else 1 to [`MAX_PAGE`].
fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::BadRequest(format!(
            "`limit` {n}: give 1 to {MAX_PAGE}"
        ))),
    }
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text.trim()).map_err(|_| {
        ApiError::BadRequest(format!(
            "`{}` is not a message id (a UUID)",
            crate::text::printable(&text.chars().take(64).collect::<String>())
        ))
    })
}

/// The query of `GET /admin/dead-letters`.
#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    #[serde(flatten)]
    filter: FilterParams,
    after: Option<String>,
    limit: Option<usize>,
}

/// A dead letter in a list: the reason cut, the body only counted.
fn summary(d: &StoredDeadLetter) -> Value {
    let reason: String = d.reason.chars().take(REASON_SHOWN).collect();
    json!({
        "message_id": d.message_id,
        "entity": d.entity,
        "reason_class": d.class.label(),
        "reason": reason,
        "reason_truncated": reason.len() < d.reason.len(),
        "attempts": d.attempts,
        "times": d.times,
        "first_seen": d.first_seen,
        "last_seen": d.last_seen,
        "body_bytes": d.body.len(),
    })
}

/// `GET /admin/dead-letters`: a page of the filter's dead letters, oldest first, and the cursor
/// of the next page.
pub(super) async fn dead_letters(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(refused_query)?;
    let after = match params.after.as_deref().filter(|a| !a.is_empty()) {
        Some(cursor) => Some(
            dl::parse_cursor(cursor).map_err(|e| ApiError::BadRequest(format!("`after`: {e}")))?,
        ),
        None => None,
    };
    let page = DeadLetterPage {
        filter: params.filter.filter()?,
        after,
        limit: page_size(params.limit)?,
    };
    let (rows, next) = dl::page(state.store.as_ref(), &page)
        .await
        .map_err(unavailable)?;
    let total = state
        .store
        .count_dead_letters(&page.filter)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "items": rows.iter().map(summary).collect::<Vec<_>>(),
        "next": next,
        "total": total,
    })))
}

/// `GET /admin/dead-letters/groups`: dead letters counted per entity and reason class.
pub(super) async fn groups(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let groups = state
        .store
        .dead_letter_groups()
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "groups": groups.iter().map(|g| json!({
            "entity": g.entity,
            "reason_class": g.class.label(),
            "count": g.count,
            "first_seen": g.first_seen,
            "last_seen": g.last_seen,
        })).collect::<Vec<_>>(),
    })))
}

/// `GET /admin/dead-letters/{id}`: one dead letter whole — the reason, deliveries, times, the
/// body pretty-printed (up to [`BODY_SHOWN`] bytes) and what the validator says of it now.
pub(super) async fn dead_letter(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let found = find(&state, id).await?;
    Ok(Json(detail(&found)))
}

async fn find(state: &AppState, id: Uuid) -> Result<StoredDeadLetter, ApiError> {
    let page = DeadLetterPage {
        filter: DeadLetterFilter {
            message_id: Some(id),
            ..Default::default()
        },
        after: None,
        limit: 1,
    };
    state
        .store
        .dead_letters(&page)
        .await
        .map_err(unavailable)?
        .pop()
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter of message {id} is kept")))
}

fn detail(d: &StoredDeadLetter) -> Value {
    let parsed = serde_json::from_slice::<Value>(&d.body);
    let text = match &parsed {
        Ok(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&d.body).into_owned(),
    };
    let mut cut = text.len().min(BODY_SHOWN);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let field_errors: Vec<Value> = match (RootEntity::from_name(&d.entity), &parsed) {
        (Some(entity), Ok(_)) => match crate::runtime::parse_json_object(&d.body) {
            Ok(doc) => match entity.validate_json(doc.root()) {
                Ok(()) => Vec::new(),
                Err(errors) => errors
                    .iter()
                    .take(100)
                    .map(|e| json!({"field": e.field, "error": e.error}))
                    .collect(),
            },
            Err(e) => vec![json!({"field": "", "error": e.to_string()})],
        },
        (None, _) => {
            vec![json!({"field": "", "error": format!("no entity `{}` in this build", d.entity)})]
        }
        (_, Err(e)) => vec![json!({"field": "", "error": format!("not JSON: {e}")})],
    };
    json!({
        "message_id": d.message_id,
        "entity": d.entity,
        "reason_class": d.class.label(),
        "reason": d.reason,
        "attempts": d.attempts,
        "times": d.times,
        "first_seen": d.first_seen,
        "last_seen": d.last_seen,
        "position": {"epoch": d.position.epoch, "sequence": d.position.sequence},
        "body_bytes": d.body.len(),
        "body_is_json": parsed.is_ok(),
        "body_pretty": &text[..cut],
        "body_truncated": cut < text.len(),
        "field_errors_now": field_errors,
    })
}

/// The body of a dry run or a replay: dead letters by id, or every one a filter matches.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Selection {
    ids: Option<Vec<String>>,
    filter: Option<FilterParams>,
}

impl Selection {
    /// The filters to run: one per id, or the one filter (an empty filter: every dead letter).
    fn filters(body: &[u8]) -> Result<Vec<DeadLetterFilter>, ApiError> {
        let selection: Selection = if body.iter().all(u8::is_ascii_whitespace) {
            Selection::default()
        } else {
            json_object(body, "{\"ids\": [...]} or {\"filter\": {...}}")?
        };
        match (selection.ids, selection.filter) {
            (Some(_), Some(_)) => Err(ApiError::BadRequest(
                "give `ids` or `filter`, not both".into(),
            )),
            (Some(ids), None) => {
                if ids.is_empty() || ids.len() > MAX_IDS {
                    return Err(ApiError::BadRequest(format!(
                        "`ids`: between 1 and {MAX_IDS} message ids"
                    )));
                }
                ids.iter()
                    .map(|id| {
                        Ok(DeadLetterFilter {
                            message_id: Some(parse_id(id)?),
                            ..Default::default()
                        })
                    })
                    .collect()
            }
            (None, Some(filter)) => Ok(vec![filter.filter()?]),
            (None, None) => Ok(vec![DeadLetterFilter::default()]),
        }
    }
}

/// A request body read as `T`: a JSON object only (serde would also read a struct from an
/// array), without `null` members, in it or in its `filter` (absent and null are not the same
/// request: a null is refused rather than read as "any"); else a 400 saying what `shape` is.
fn json_object<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    let refused = |why: String| ApiError::BadRequest(format!("the body must be {shape}: {why}"));
    let value: Value = serde_json::from_slice(body).map_err(|e| refused(e.to_string()))?;
    let Some(members) = value.as_object() else {
        return Err(refused("not a JSON object".into()));
    };
    let filter = members.get("filter").and_then(Value::as_object);
    let null = members
        .iter()
        .map(|(name, v)| (name.clone(), v))
        .chain(
            filter
                .into_iter()
                .flatten()
                .map(|(name, v)| (format!("filter.{name}"), v)),
        )
        .find(|(_, v)| v.is_null());
    if let Some((name, _)) = null {
        return Err(refused(format!("`{name}` is null; leave it out instead")));
    }
    serde_json::from_value(value).map_err(|e| refused(e.to_string()))
}

/// `POST /admin/dead-letters/dry-run`: how many of the selected dead letters the validator
/// would accept now, and why the others not; publishes nothing; recorded in the audit.
pub(super) async fn dry_run(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let who = operator(&client);
    let mut total = DryRun::default();
    for filter in Selection::filters(&body)? {
        let found = dl::dry_run(state.store.as_ref(), &filter, &who)
            .await
            .map_err(unavailable)?;
        total.total += found.total;
        total.would_pass += found.would_pass;
        for (why, n) in found.refusals {
            *total.refusals.entry(why).or_default() += n;
        }
    }
    Ok(Json(json!({
        "total": total.total,
        "would_pass": total.would_pass,
        "refusals": total.refusals.iter().map(|(why, n)| json!({"reason": why, "count": n})).collect::<Vec<_>>(),
    })))
}

/// `POST /admin/dead-letters/replay`: publishes a copy of each selected dead letter (see
/// `admin::replay`); the records stay until their copies are stored. Recorded in the audit.
pub(super) async fn replay(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let who = operator(&client);
    let mut replayed = Vec::new();
    let mut skipped = Vec::new();
    for filter in Selection::filters(&body)? {
        let report = dl::replay(
            state.store.as_ref(),
            state.publisher.as_ref(),
            &state.stream,
            &filter,
            &who,
            &mut |_| {},
        )
        .await
        .map_err(|e| match e {
            crate::admin::ReplayError::Store(e) => Dependency::OperatorRecords.unavailable(e),
            crate::admin::ReplayError::Publish(e) => Dependency::Broker.unavailable(e),
        })?;
        replayed.extend(report.replayed);
        skipped.extend(report.skipped);
    }
    Ok(Json(json!({
        "replayed": replayed.len(),
        "replayed_ids": replayed.iter().take(MAX_IDS).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|(id, why)| json!({"message_id": id, "reason": why})).collect::<Vec<_>>(),
    })))
}

/// The body of a discard.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DiscardBody {
    note: String,
}

/// `POST /admin/dead-letters/{id}/discard` with `{"note": "…"}`: the record moves, whole, among
/// the discarded ones with who and why (nothing is deleted); 404 when there is none.
pub(super) async fn discard(
    State(state): State<Arc<AppState>>,
    Extension(client): Extension<Client>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let request: DiscardBody = json_object(&body, "{\"note\": \"why it is discarded\"}")?;
    let note = request.note.trim();
    if note.is_empty() || note.chars().count() > MAX_NOTE {
        return Err(ApiError::BadRequest(format!(
            "`note`: say why it is discarded, in 1 to {MAX_NOTE} characters"
        )));
    }
    let who = operator(&client);
    if dl::discard(state.store.as_ref(), id, &who, note)
        .await
        .map_err(unavailable)?
    {
        Ok((
            StatusCode::OK,
            Json(json!({"discarded": true, "message_id": id, "by": who})),
        )
            .into_response())
    } else {
        Err(ApiError::NotFound(format!(
            "no dead letter of message {id} is kept (replayed and stored, or discarded already)"
        )))
    }
}

/// The query of `GET /admin/actions`.
#[derive(Debug, Deserialize)]
pub(super) struct ActionParams {
    limit: Option<usize>,
}

/// `GET /admin/actions`: the latest actions of the audit, newest first.
pub(super) async fn actions(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ActionParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(refused_query)?;
    let limit = page_size(params.limit)?;
    let actions = state
        .store
        .admin_actions(limit)
        .await
        .map_err(unavailable)?;
    Ok(Json(json!({
        "actions": actions.iter().map(|a| json!({
            "id": a.id,
            "at": a.at,
            "who": a.who,
            "action": a.action,
            "target": a.target,
            "count": a.count,
            "note": a.note,
        })).collect::<Vec<_>>(),
    })))
}

/// `GET /messages/{id}/trace`: the message's status, its dead letter or discard, and the rows it
/// last wrote.
pub(super) async fn trace(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let trace = state
        .store
        .message_trace(id, TRACE_ROWS)
        .await
        .map_err(unavailable)?;
    let status = trace.status.as_ref().map(|s| {
        json!({
            "entity": s.entity,
            "status": s.status,
            "received_at": s.received_at,
            "processed_at": s.processed_at,
            "row_count": s.row_count,
            "attempts": s.attempts,
            "error": s.error,
        })
    });
    let mut outcome = match (&trace.status, &trace.dead_letter, &trace.discarded) {
        (Some(s), _, _) if s.status == "processed" => "stored",
        (_, Some(_), _) => "dead_lettered",
        (_, None, Some(_)) => "discarded",
        (Some(_), None, None) => "dead_lettered",
        (None, None, None) => "unknown",
    };
    // Not in the store: still waiting in the stream, perhaps (as `/ingest/status` finds it).
    let mut waiting = None;
    if outcome == "unknown"
        && let Some((entity, sequence)) = super::super::status::in_stream(&state, id).await?
    {
        outcome = "waiting";
        waiting = Some(json!({"entity": entity.name(), "stream_sequence": sequence}));
    }
    Ok(Json(json!({
        "message_id": id,
        "outcome": outcome,
        "waiting": waiting,
        "position": trace.position.map(|p| json!({"epoch": p.epoch, "sequence": p.sequence})),
        "status": status,
        "dead_letter": trace.dead_letter.as_ref().map(|d| json!({
            "reason_class": d.class.label(),
            "reason": d.reason,
            "attempts": d.attempts,
            "times": d.times,
            "first_seen": d.first_seen,
            "last_seen": d.last_seen,
            "position": {"epoch": d.position.epoch, "sequence": d.position.sequence},
        })),
        "discarded": trace.discarded.as_ref().map(|d| json!({"by": d.by, "note": d.note, "at": d.at})),
        "rows": trace.rows.iter().map(|r| json!({"table": r.table, "key": r.key})).collect::<Vec<_>>(),
        "rows_truncated": trace.rows_truncated,
        "rows_per_table_shown": TRACE_ROWS,
    })))
}

/// `GET /admin/schema`: every entity posted directly with its tables (columns, types,
/// nullability, unique key, version field), JSON Schema and example.
pub(super) async fn schema() -> Json<Value> {
    let entities: Vec<Value> = RootEntity::ALL
        .iter()
        .map(|e| {
            let tables: Vec<Value> = TABLES
                .iter()
                .filter(|t| t.root_entity == e.name())
                .map(|t| {
                    json!({
                        "table": t.table,
                        "entity": t.entity,
                        "id_column": t.id_column,
                        "unicity_fields": t.unicity_fields,
                        "version_field": t.version_field,
                        "columns": t.columns.iter().filter(|c| !c.name.starts_with('_')).map(|c| json!({
                            "name": c.name,
                            "type": c.ty.info().name,
                            "sql_type": c.sql_type,
                            "nullable": c.nullable,
                            "max_length": c.max_length,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            json!({
                "name": e.name(),
                "route": format!("/ingest/message/{}", e.snake_name()),
                "tables": tables,
                "json_schema": e.json_schema(),
                "example": e.example(),
            })
        })
        .collect();
    Json(json!({ "entities": entities }))
}
