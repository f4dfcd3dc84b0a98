//! The body of a `202 Accepted`, serialized by hand (the hot path: no serde_json `Value`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Body of a `202 Accepted` answer.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// The id the worker records the message under (`GET /ingest/status/{message_id}`).
    pub message_id: Uuid,
    /// Always `accepted`: JetStream has stored the message.
    pub status: &'static str,
    /// The entity it was accepted as (snake_case), as named or as detected.
    pub entity: &'static str,
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
        out.extend_from_slice(b"\",\"entity\":\"");
        // Snake_case names of the schema: nothing to escape.
        out.extend_from_slice(self.entity.as_bytes());
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
pub(super) fn rfc3339_utc(t: &DateTime<Utc>) -> Option<Vec<u8>> {
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
