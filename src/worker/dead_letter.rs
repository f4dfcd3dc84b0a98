//! Dead letters: published to a dead-letter JetStream stream (acked before the original message is
//! terminated), recorded in the `dead_letters` table by a recorder consumer, and replayable.
//!
//! A dead letter travels as the body's bytes, unchanged, with everything else in headers: the
//! body fitted the server's `max_payload` when the api published it, and nothing is escaped, so
//! the dead letter fits too (the reason header is bounded). Its `Nats-Msg-Id` is unique per
//! delivery (message id, stream position, delivery count): a replayed copy rejected again is a
//! new record, never a duplicate the stream drops.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::{ENTITY_HEADER, MESSAGE_ID_HEADER, RECEIVED_AT_HEADER};
use crate::nats::{NatsError, Outgoing, Publish};
use crate::runtime::Position;
use crate::store::{DeadLetter, FaultKind, ReasonClass, Store};
use crate::throttle::Throttle;

/// Header of a dead letter: why it was rejected (control characters as spaces, at most
/// [`REASON_HEADER_BYTES`]).
pub const REASON_HEADER: HeaderName = HeaderName::from_static("Nomnom-Reason");
/// Header of a dead letter: its reason's class (`store::ReasonClass::label`).
pub const REASON_CLASS_HEADER: HeaderName = HeaderName::from_static("Nomnom-Reason-Class");
/// Header of a dead letter: deliveries of this trip through the stream.
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("Nomnom-Attempts");
/// Header of a dead letter: where the message first arrived (`epoch:sequence`).
pub const POSITION_HEADER: HeaderName = HeaderName::from_static("Nomnom-Position");
/// Longest reason carried (and recorded); the body is never cut.
pub const REASON_HEADER_BYTES: usize = 2048;
pub use crate::envelope::DEAD_LETTER_HEADROOM;

/// The dead-letter stream of a stream: `<stream>_DLQ`.
pub fn dlq_stream_name(stream: &str) -> String {
    format!("{stream}_DLQ")
}

/// How much the dead-letter stream keeps: dead letters older than `max_age`, or beyond
/// `max_bytes`, are removed from the stream oldest first (the `dead_letters` table keeps its
/// record of each; replay reads from that table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlqLimits {
    /// `NATS_DLQ_MAX_AGE_DAYS` (default 30).
    pub max_age: Duration,
    /// `NATS_DLQ_MAX_BYTES` (default 1 GiB).
    pub max_bytes: i64,
}

impl Default for DlqLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 1 << 30,
        }
    }
}

/// Creates the dead-letter stream if absent (file storage, as many replicas as the main
/// stream, within `limits`), and brings an existing one to `limits`.
pub async fn ensure_dlq_stream(
    js: &jetstream::Context,
    config: &crate::nats::NatsConfig,
    limits: DlqLimits,
) -> Result<stream::Stream, NatsError> {
    let name = dlq_stream_name(&config.stream);
    let err = |e: &dyn std::fmt::Display| NatsError::Stream {
        stream: name.clone(),
        reason: e.to_string(),
    };
    let mut dlq = crate::nats::get_or_create_stream(
        js,
        stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            num_replicas: config.replicas,
            max_age: limits.max_age,
            max_bytes: limits.max_bytes,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| err(&e))?;
    let current = dlq.cached_info().config.clone();
    if current.max_age != limits.max_age || current.max_bytes != limits.max_bytes {
        js.update_stream(stream::Config {
            max_age: limits.max_age,
            max_bytes: limits.max_bytes,
            discard: stream::DiscardPolicy::Old,
            ..current
        })
        .await
        .map_err(|e| err(&e))?;
        dlq = js.get_stream(&name).await.map_err(|e| err(&e))?;
    }
    Ok(dlq)
}

/// The headers and payload of a dead letter on the dead-letter stream.
pub fn to_publish(dead: &DeadLetter) -> jetstream::message::PublishMessage {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, dead.record_id.as_str());
    headers.insert(MESSAGE_ID_HEADER, dead.message_id.to_string());
    headers.insert(
        ENTITY_HEADER,
        crate::text::header_value(&dead.entity, 256).as_str(),
    );
    headers.insert(
        RECEIVED_AT_HEADER,
        dead.received_at
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .as_str(),
    );
    headers.insert(
        REASON_HEADER,
        crate::text::header_value(&dead.reason, REASON_HEADER_BYTES).as_str(),
    );
    headers.insert(REASON_CLASS_HEADER, dead.class.label());
    headers.insert(ATTEMPTS_HEADER, dead.attempts.to_string());
    headers.insert(POSITION_HEADER, dead.position.to_string());
    jetstream::message::PublishMessage::build()
        .payload(dead.body.clone())
        .headers(headers)
}

/// A dead letter read back from the dead-letter stream: headers and raw body, or the JSON
/// record that versions before raw bodies wrote.
pub fn decode(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<DeadLetter, String> {
    let Some(headers) = headers.filter(|h| h.get(MESSAGE_ID_HEADER).is_some()) else {
        return decode_json(payload);
    };
    let header = |name: HeaderName| {
        headers
            .get(name.clone())
            .map(|v| v.as_str().to_string())
            .ok_or_else(|| format!("header {name} is missing"))
    };
    let id = header(MESSAGE_ID_HEADER)?;
    let at = header(RECEIVED_AT_HEADER)?;
    let position = header(POSITION_HEADER)?;
    Ok(DeadLetter {
        message_id: Uuid::parse_str(&id).map_err(|_| format!("`{id}` is not a message id"))?,
        entity: header(ENTITY_HEADER)?,
        body: payload.clone(),
        reason: header(REASON_HEADER)?,
        class: headers
            .get(REASON_CLASS_HEADER)
            .map_or(ReasonClass::Unclassified, |v| {
                ReasonClass::from_label(v.as_str())
            }),
        attempts: header(ATTEMPTS_HEADER)?.parse().unwrap_or(1),
        received_at: DateTime::parse_from_rfc3339(&at)
            .map_err(|e| format!("received-at `{at}`: {e}"))?
            .with_timezone(&Utc),
        position: Position::parse(&position)
            .ok_or_else(|| format!("`{position}` is not a position"))?,
        record_id: headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| format!("{id}:{position}")),
    })
}

/// The JSON record of versions before raw bodies (still in a dead-letter stream after an
/// upgrade).
fn decode_json(payload: &Bytes) -> Result<DeadLetter, String> {
    #[derive(serde::Deserialize)]
    struct JsonDeadLetter {
        message_id: Uuid,
        entity: String,
        body: String,
        reason: String,
        attempts: i32,
        received_at: DateTime<Utc>,
    }
    let old: JsonDeadLetter = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    Ok(DeadLetter {
        record_id: format!("{}:{}", old.message_id, old.attempts),
        message_id: old.message_id,
        entity: old.entity,
        body: old.body.into(),
        class: ReasonClass::Unclassified,
        reason: old.reason,
        attempts: old.attempts,
        received_at: old.received_at,
        position: Position::default(),
    })
}

/// Publishes a dead letter and waits for JetStream to store it.
pub async fn publish(
    publisher: &dyn Publish,
    stream: &str,
    dead: &DeadLetter,
) -> Result<(), String> {
    let dlq = dlq_stream_name(stream);
    let entity_token: String = dead
        .entity
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let subject = format!(
        "{dlq}.{}.{}",
        if entity_token.is_empty() {
            "unknown"
        } else {
            &entity_token
        },
        dead.message_id
    );
    publisher
        .publish(Outgoing {
            subject,
            message: to_publish(dead),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Copies dead letters from the dead-letter stream into the `dead_letters` table (and a
/// `dead_lettered` status row) until `shutdown`. Acks each one after it is committed. A
/// database outage pauses the worker's pulls like any other; a record the database refuses
/// (a data error: the text is made storable first, so this should not happen) is logged and
/// tried again a minute later without pausing anything.
pub async fn run_recorder(
    js: jetstream::Context,
    stream: String,
    consumer_name: String,
    store: std::sync::Arc<dyn Store>,
    outage: std::sync::Arc<crate::worker::DbOutage>,
    shutdown: CancellationToken,
) -> Result<(), NatsError> {
    let dlq = js
        .get_stream(dlq_stream_name(&stream))
        .await
        .map_err(|e| NatsError::Stream {
            stream: dlq_stream_name(&stream),
            reason: e.to_string(),
        })?;
    let consumer = dlq
        .get_or_create_consumer(
            &consumer_name,
            pull::Config {
                durable_name: Some(consumer_name.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| NatsError::Stream {
            stream: dlq_stream_name(&stream),
            reason: e.to_string(),
        })?;
    while !shutdown.is_cancelled() {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(e) => {
                static PULL_FAILED: Throttle = Throttle::new(Duration::from_secs(30));
                if let Some(held_back) = PULL_FAILED.allow() {
                    tracing::warn!(error = %e, similar_since_last = held_back, "dead-letter recorder cannot pull; retrying every second");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = messages.next() => next,
            };
            let Some(Ok(message)) = next else {
                break;
            };
            let started = std::time::Instant::now();
            let outcome = match decode(message.headers.as_ref(), &message.payload) {
                Ok(dead) => store.record_dead_letter(&dead).await,
                Err(e) => {
                    tracing::error!(error = %e, subject = %message.subject, "unreadable dead-letter record; dropping it");
                    Ok(())
                }
            };
            let kind = match outcome {
                Ok(()) => {
                    outage.recovered(started);
                    jetstream::AckKind::Ack
                }
                Err(e) if e.kind() == FaultKind::Data => {
                    outage.recovered(started);
                    static REFUSED: Throttle = Throttle::new(Duration::from_secs(30));
                    if let Some(held_back) = REFUSED.allow() {
                        tracing::error!(error = %e, similar_since_last = held_back, "the database refuses a dead-letter record; trying it again in a minute");
                    }
                    jetstream::AckKind::Nak(Some(Duration::from_secs(60)))
                }
                Err(e) => {
                    // Logged (once, then every 30 s) by the outage tracker.
                    outage.fault(&e, 1);
                    jetstream::AckKind::Nak(Some(Duration::from_secs(2)))
                }
            };
            if let Err(e) = message.ack_with(kind).await {
                tracing::warn!(error = %e, "dead-letter ack failed");
            }
        }
    }
    Ok(())
}
