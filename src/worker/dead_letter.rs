//! Dead letters: published to a dead-letter JetStream stream (acked before the original message is
//! terminated), recorded in the `dead_letters` table by a recorder consumer, and replayable.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::{self, DbError, DbPool, DeadLetter, schema};
use crate::envelope::MessageEnvelope;
use crate::generated::RootEntity;
use crate::nats::{NatsError, message_subject};
use crate::sink::Sink;

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
    config: &crate::config::NatsConfig,
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

/// Publishes a dead letter and waits for JetStream to store it.
pub async fn publish(
    js: &jetstream::Context,
    stream: &str,
    dead: &DeadLetter,
) -> Result<(), String> {
    let dlq = dlq_stream_name(stream);
    let payload = serde_json::to_vec(dead).map_err(|e| e.to_string())?;
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
    let publish = jetstream::message::PublishMessage::build()
        .payload(payload.into())
        // Same message dead-lettered twice within the window is stored once.
        .message_id(format!("{}:{}", dead.message_id, dead.attempts));
    js.send_publish(subject, publish)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Copies dead letters from the dead-letter stream into the `dead_letters` table (and a
/// `dead_lettered` status row) until `shutdown`. Acks each one after it is committed.
pub async fn run_recorder<S: Sink>(
    js: jetstream::Context,
    stream: String,
    consumer_name: String,
    sink: S,
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
                static PULL_FAILED: crate::throttle::Throttle =
                    crate::throttle::Throttle::new(Duration::from_secs(30));
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
            let record: Result<DeadLetter, _> = serde_json::from_slice(&message.payload);
            let outcome = match record {
                Ok(dead) => sink.record_dead_letter(&dead).await,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable dead-letter record; dropping it");
                    Ok(())
                }
            };
            let kind = match outcome {
                Ok(()) => {
                    outage.recovered(started);
                    jetstream::AckKind::Ack
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

/// Which dead letters to replay.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only this entity (any case).
    pub entity: Option<String>,
    /// Only this message.
    pub message_id: Option<Uuid>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Messages published again.
    pub replayed: Vec<Uuid>,
    /// Dead letters whose body is not a JSON message (e.g. an unreadable envelope).
    pub skipped: Vec<(Uuid, String)>,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Database error.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Publishing failed.
    #[error("publishing the replayed message failed: {0}")]
    Publish(String),
}

#[derive(Queryable)]
struct DeadRow {
    message_id: Uuid,
    entity: String,
    body: String,
}

/// Publishes dead letters again for processing and removes them (and their `dead_lettered`
/// status) once JetStream has stored the new copy. Another failure dead-letters them again.
pub async fn replay(
    js: &jetstream::Context,
    stream: &str,
    pool: &DbPool,
    filter: &ReplayFilter,
) -> Result<ReplayReport, ReplayError> {
    use schema::dead_letters as d;
    use schema::message_status as s;
    let mut conn = db::connection(pool).await?;
    let mut query = d::table
        .select((d::message_id, d::entity, d::body))
        .order(d::first_seen.asc())
        .into_boxed();
    if let Some(id) = filter.message_id {
        query = query.filter(d::message_id.eq(id));
    }
    let rows: Vec<DeadRow> = query.load(&mut conn).await.map_err(DbError::from)?;
    let mut report = ReplayReport::default();
    for row in rows {
        if let Some(want) = &filter.entity
            && !crate::runtime::same_entity_name(&row.entity, want)
        {
            continue;
        }
        let Some(entity) = RootEntity::from_name(&row.entity) else {
            report
                .skipped
                .push((row.message_id, format!("unknown entity `{}`", row.entity)));
            continue;
        };
        if serde_json::from_str::<serde::de::IgnoredAny>(&row.body).is_err() {
            report
                .skipped
                .push((row.message_id, "the body is not JSON".into()));
            continue;
        }
        let id = row.message_id;
        // The status row goes first: if it were still there when the worker sees the new copy,
        // the redelivery guard would skip it.
        diesel::delete(
            s::table
                .filter(s::message_id.eq(id))
                .filter(s::status.eq("dead_lettered")),
        )
        .execute(&mut conn)
        .await
        .map_err(DbError::from)?;
        let publish = MessageEnvelope::new(id, entity.name(), row.body)
            .to_publish(false)
            .message_id(format!("{id}:replay:{}", Utc::now().timestamp_millis()));
        js.send_publish(message_subject(stream, entity.snake_name(), &id), publish)
            .await
            .map_err(|e| ReplayError::Publish(e.to_string()))?
            .await
            .map_err(|e| ReplayError::Publish(e.to_string()))?;
        diesel::delete(d::table.filter(d::message_id.eq(id)))
            .execute(&mut conn)
            .await
            .map_err(DbError::from)?;
        report.replayed.push(id);
    }
    Ok(report)
}
