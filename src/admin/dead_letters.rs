//! The operator's dead-letter actions (`worker dead-letters …` and the console): pages of dead letters through
//! the store, as a table for a terminal or as JSON, one in detail; a dry run (how many would
//! pass validation now), replay and discard, each recorded in the audit (`admin_actions`).

use std::fmt::Write as _;

use base64::Engine as _;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::admin::replay::{self, ReplayError, ReplayReport};
use crate::generated::RootEntity;
use crate::nats::Publish;
use crate::store::{
    AdminAction, DeadLetterFilter, DeadLetterPage, ReasonClass, Store, StoreError, StoredDeadLetter,
};

/// Why an operator's argument was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ArgumentError(String);

/// `--since`: an RFC 3339 time (`2026-12-07T10:00:00Z`) or an age (`30m`, `2h`, `7d`) before
/// `now`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ArgumentError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    // The unit is the last character, whatever its width (any text may be given).
    let unit = text
        .chars()
        .next_back()
        .ok_or_else(|| refused_since(text))?;
    let number = &text[..text.len() - unit.len_utf8()];
    let amount: i64 = number.parse().map_err(|_| refused_since(text))?;
    let age = match unit {
        's' => Duration::try_seconds(amount),
        'm' => Duration::try_minutes(amount),
        'h' => Duration::try_hours(amount),
        'd' => Duration::try_days(amount),
        _ => None,
    }
    .ok_or_else(|| refused_since(text))?;
    now.checked_sub_signed(age)
        .ok_or_else(|| refused_since(text))
}

fn refused_since(text: &str) -> ArgumentError {
    ArgumentError(format!(
        "--since {text:?}: give a time (2026-12-07T10:00:00Z) or an age (30m, 2h, 7d)"
    ))
}

/// The cursor of the next page: the last dead letter's first-seen time and id.
pub fn cursor(last: &StoredDeadLetter) -> String {
    format!(
        "{}/{}",
        last.first_seen.to_rfc3339_opts(SecondsFormat::Micros, true),
        last.message_id
    )
}

/// Reads a cursor written by [`cursor`].
pub fn parse_cursor(text: &str) -> Result<(DateTime<Utc>, Uuid), ArgumentError> {
    let refused = || ArgumentError(format!("--after {text:?}: not a cursor printed by `list`"));
    let (at, id) = text.split_once('/').ok_or_else(refused)?;
    let at = DateTime::parse_from_rfc3339(at).map_err(|_| refused())?;
    let id = Uuid::parse_str(id).map_err(|_| refused())?;
    Ok((at.with_timezone(&Utc), id))
}

/// One page of the filter's dead letters, and the cursor of the next page when there is one.
pub async fn page(
    store: &dyn Store,
    page: &DeadLetterPage,
) -> Result<(Vec<StoredDeadLetter>, Option<String>), StoreError> {
    let mut one_more = page.clone();
    one_more.limit = page.limit + 1;
    let mut rows = store.dead_letters(&one_more).await?;
    let next = if rows.len() > page.limit {
        rows.truncate(page.limit);
        rows.last().map(cursor)
    } else {
        None
    };
    Ok((rows, next))
}

/// Dead letters as a table for a terminal: one line each, the reason cut to what fits.
pub fn table(rows: &[StoredDeadLetter]) -> String {
    let mut out = format!(
        "{:<36}  {:<16}  {:>5}  {:>8}  {:<20}  {}\n",
        "MESSAGE ID", "ENTITY", "TIMES", "ATTEMPTS", "FIRST SEEN (UTC)", "REASON"
    );
    for d in rows {
        let _ = writeln!(
            out,
            "{:<36}  {:<16}  {:>5}  {:>8}  {:<20}  {}",
            d.message_id,
            clip(&crate::text::printable(&d.entity), 16),
            d.times,
            d.attempts,
            d.first_seen.format("%Y-%m-%d %H:%M:%S"),
            clip(&crate::text::printable(&d.reason), 80)
        );
    }
    out
}

/// A dead letter as JSON: the body as its JSON when it is JSON, else as text when it is UTF-8,
/// else base64.
pub fn to_json(d: &StoredDeadLetter) -> Value {
    let mut v = json!({
        "message_id": d.message_id,
        "entity": d.entity,
        "reason": d.reason,
        "attempts": d.attempts,
        "times": d.times,
        "first_seen": d.first_seen,
        "last_seen": d.last_seen,
        "position": {"epoch": d.position.epoch, "sequence": d.position.sequence},
    });
    match serde_json::from_slice::<Value>(&d.body) {
        Ok(body) => v["body"] = body,
        Err(_) => match std::str::from_utf8(&d.body) {
            Ok(text) => v["body_text"] = json!(text),
            Err(_) => {
                v["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&d.body))
            }
        },
    }
    v
}

/// One dead letter in detail: every field, then the body pretty-printed (control characters
/// shown as escapes, so a body cannot drive the terminal).
pub fn detail(d: &StoredDeadLetter) -> String {
    let body = match serde_json::from_slice::<Value>(&d.body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&d.body).escape_debug().to_string(),
    };
    format!(
        "message id   {}\nentity       {}\nreason       {}\ndeliveries   {} over {} time(s) dead-lettered\nfirst seen   {}\nlast seen    {}\nposition     epoch {} sequence {}\nbody ({} bytes):\n{}\n",
        d.message_id,
        crate::text::printable(&d.entity),
        crate::text::printable(&d.reason),
        d.attempts,
        d.times,
        d.first_seen.to_rfc3339_opts(SecondsFormat::Secs, true),
        d.last_seen.to_rfc3339_opts(SecondsFormat::Secs, true),
        d.position.epoch,
        d.position.sequence,
        d.body.len(),
        body
    )
}

/// A filter as the audit records it.
pub fn filter_json(filter: &DeadLetterFilter) -> Value {
    json!({
        "message_id": filter.message_id,
        "entity": filter.entity,
        "reason": filter.reason,
        "class": filter.class.map(ReasonClass::label),
        "since": filter.since,
    })
}

/// What a dry run found: how many of the filter's dead letters the generated validator would
/// accept now, and why the others would be refused (the first error of each, counted).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DryRun {
    /// Dead letters looked at.
    pub total: u64,
    /// Those whose body would be accepted now.
    pub would_pass: u64,
    /// Why the others would not, with how many.
    pub refusals: std::collections::BTreeMap<String, u64>,
}

/// Dead letters read per page by the dry run (bodies up to the largest message each).
const DRY_RUN_PAGE: usize = 64;

/// Checks every dead letter of `filter` with the generated validator, as the api would check
/// it now (after a fix to the YAML, say), publishing nothing; recorded in the audit as `who`'s.
pub async fn dry_run(
    store: &dyn Store,
    filter: &DeadLetterFilter,
    who: &str,
) -> Result<DryRun, StoreError> {
    let mut found = DryRun::default();
    let mut page = DeadLetterPage {
        filter: filter.clone(),
        after: None,
        limit: DRY_RUN_PAGE,
    };
    loop {
        let rows = store.dead_letters(&page).await?;
        for row in &rows {
            found.total += 1;
            match would_pass(row) {
                Ok(()) => found.would_pass += 1,
                Err(why) => *found.refusals.entry(why).or_default() += 1,
            }
        }
        match rows.last() {
            Some(last) if rows.len() == page.limit => {
                page.after = Some((last.first_seen, last.message_id))
            }
            _ => break,
        }
    }
    store
        .record_action(&AdminAction {
            who: who.to_string(),
            action: "dry_run",
            target: filter_json(filter),
            count: i64::try_from(found.would_pass).unwrap_or(i64::MAX),
            note: None,
        })
        .await?;
    Ok(found)
}

/// Whether the api would accept the dead letter's body now; why not, in a few words.
fn would_pass(d: &StoredDeadLetter) -> Result<(), String> {
    let entity = RootEntity::from_name(&d.entity)
        .ok_or_else(|| format!("unknown entity `{}`", crate::text::printable(&d.entity)))?;
    let doc = crate::runtime::parse_json_object(&d.body).map_err(|e| e.to_string())?;
    entity.validate_json(doc.root()).map_err(|errors| {
        errors
            .first()
            .map(|e| format!("{}: {}", e.field, e.error))
            .unwrap_or_else(|| "invalid".into())
    })
}

/// Replays the filter's dead letters (see [`replay::replay`]; `on_page` sees the report
/// after each page) and records it in the audit.
pub async fn replay(
    store: &dyn Store,
    publisher: &dyn Publish,
    stream: &str,
    filter: &DeadLetterFilter,
    who: &str,
    on_page: &mut (dyn FnMut(&ReplayReport) + Send),
) -> Result<ReplayReport, ReplayError> {
    let report = replay::replay_with_progress(publisher, stream, store, filter, on_page).await?;
    store
        .record_action(&AdminAction {
            who: who.to_string(),
            action: "replay",
            target: filter_json(filter),
            count: i64::try_from(report.replayed.len()).unwrap_or(i64::MAX),
            note: None,
        })
        .await
        .map_err(|e| ReplayError::Store(e.to_string()))?;
    Ok(report)
}

/// Discards one dead letter (see [`Store::discard_dead_letter`]) and records it in the audit;
/// `false` when there was none.
pub async fn discard(
    store: &dyn Store,
    id: Uuid,
    who: &str,
    note: &str,
) -> Result<bool, StoreError> {
    let discarded = store.discard_dead_letter(id, who, note).await?;
    if discarded {
        store
            .record_action(&AdminAction {
                who: who.to_string(),
                action: "discard",
                target: json!({"message_id": id}),
                count: 1,
                note: Some(note.to_string()),
            })
            .await?;
    }
    Ok(discarded)
}

/// Who an action from the command line is: `cli:$USER`.
pub fn cli_operator() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// `text` cut to `width` characters, `…` marking the cut.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age_and_refuses_anything_else() {
        let now = DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let at = |s: &str| parse_since(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("2h").expect("age"), "2026-12-07T10:00:00+00:00");
        assert_eq!(at("7d").expect("age"), "2026-11-30T12:00:00+00:00");
        assert_eq!(
            at("2026-12-01T08:30:00+01:00").expect("time"),
            "2026-12-01T07:30:00+00:00"
        );
        for bad in [
            "",
            "h",
            "2w",
            "-",
            "99999999999999999d",
            "yesterday",
            "\u{80}",
            "2é",
            "é",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cursor_reads_back_and_a_made_up_one_is_refused() {
        let d = StoredDeadLetter {
            message_id: Uuid::now_v7(),
            entity: "Order".into(),
            body: bytes::Bytes::from_static(b"\x1b[31m{"),
            class: crate::store::ReasonClass::Invalid,
            reason: "bad\nreason".into(),
            attempts: 1,
            times: 1,
            position: Default::default(),
            first_seen: Utc::now(),
            last_seen: Utc::now(),
        };
        assert_eq!(
            parse_cursor(&cursor(&d)).expect("cursor"),
            (
                d.first_seen
                    .to_rfc3339_opts(SecondsFormat::Micros, true)
                    .parse::<DateTime<Utc>>()
                    .expect("time"),
                d.message_id
            )
        );
        assert!(parse_cursor("yesterday").is_err());
        // Neither the table nor the detail passes a control character through.
        assert!(!table(std::slice::from_ref(&d)).contains('\x1b'));
        assert!(!detail(&d).contains('\x1b'));
        assert_eq!(to_json(&d)["body_text"], "\u{1b}[31m{");
    }
}
