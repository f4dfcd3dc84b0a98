//! The worker: a durable JetStream pull consumer that parses each message with the generated
//! code, writes its rows to PostgreSQL in one transaction per batch, and acks only after commit.
//!
//! Outcomes per message (mapped once, in [`Disposition`]):
//! - parsed and committed (or already committed by an earlier delivery) → ack;
//! - unreadable envelope, unknown entity, invalid body, or a data error isolated to this one
//!   message → dead letter (table row + status) then term;
//! - transient database fault → nak with exponential backoff, so JetStream redelivers it.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::WorkerConfig;
use crate::db::{self, DbError, DbPool, DeadLetter, PendingWrite};
use crate::envelope::MessageEnvelope;
use crate::generated::{ParsedMessage, RootEntity};
use crate::nats::{self as nats_setup, NatsError};

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// NATS could not be reached or set up.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The consumer could not be created or read.
    #[error("JetStream consumer `{consumer}`: {reason}")]
    Consumer {
        /// Consumer name.
        consumer: String,
        /// Why.
        reason: String,
    },
    /// The database could not be prepared.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What to tell JetStream about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Committed (now or by an earlier delivery).
    Ack,
    /// Transient fault: redeliver after this delay.
    Retry(Duration),
    /// Recorded as a dead letter: never redeliver.
    Term,
}

/// Totals of one processed batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Messages whose rows were committed by this batch.
    pub processed: usize,
    /// Messages already committed earlier (redeliveries).
    pub duplicates: usize,
    /// Messages dead-lettered.
    pub dead_lettered: usize,
    /// Messages left for redelivery.
    pub retried: usize,
    /// Entity rows written.
    pub rows: usize,
}

/// Backoff before redelivery after a transient fault: 1 s, 2 s, 4 s … at most 60 s.
pub fn retry_delay(delivered: i64) -> Duration {
    let exp = u32::try_from(delivered.saturating_sub(1).clamp(0, 6)).unwrap_or(6);
    Duration::from_secs(2u64.pow(exp)).min(Duration::from_secs(60))
}

/// A message read from JetStream, before writing.
struct Incoming {
    message: jetstream::Message,
    delivered: i64,
    outcome: Result<Parsed, DeadLetter>,
}

struct Parsed {
    envelope: MessageEnvelope,
    message: ParsedMessage,
}

/// Decodes and parses one JetStream message; anything wrong becomes a dead letter.
fn decode(message: &jetstream::Message, delivered: i64) -> Result<Parsed, DeadLetter> {
    let attempts = i32::try_from(delivered).unwrap_or(i32::MAX);
    let envelope = match MessageEnvelope::from_bytes(&message.payload) {
        Ok(e) => e,
        Err(e) => {
            // Keep a stable id across redeliveries of the same stream message.
            let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
            let id = Uuid::new_v5(
                &Uuid::NAMESPACE_OID,
                format!("{}:{seq}", message.subject).as_bytes(),
            );
            return Err(DeadLetter {
                message_id: id,
                entity: message
                    .subject
                    .split('.')
                    .next_back()
                    .unwrap_or("")
                    .to_string(),
                body: String::from_utf8_lossy(&message.payload).into_owned(),
                reason: format!("unreadable envelope: {e}"),
                attempts,
                received_at: chrono::Utc::now(),
            });
        }
    };
    let dead = |reason: String| DeadLetter {
        message_id: envelope.message_id,
        entity: envelope.entity.clone(),
        body: envelope.body.get().to_string(),
        reason,
        attempts,
        received_at: envelope.received_at,
    };
    let Some(entity) = RootEntity::from_name(&envelope.entity) else {
        return Err(dead(format!("unknown entity `{}`", envelope.entity)));
    };
    let parsed = crate::runtime::parse_json_object(envelope.body.get().as_bytes()).and_then(|v| {
        entity
            .parse_value(&v)
            .map_err(crate::runtime::ParseError::Invalid)
    });
    match parsed {
        Ok(message) => Ok(Parsed { envelope, message }),
        Err(e) => Err(dead(e.to_string())),
    }
}

/// Processes one batch end to end: decode, write, dead-letter, then ack/nak/term each message.
pub async fn process_batch(pool: &DbPool, batch: Vec<jetstream::Message>) -> BatchReport {
    let incoming: Vec<Incoming> = batch
        .into_iter()
        .map(|message| {
            let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
            let outcome = decode(&message, delivered);
            Incoming {
                message,
                delivered,
                outcome,
            }
        })
        .collect();
    let mut report = BatchReport::default();
    let mut dispositions = vec![Disposition::Ack; incoming.len()];
    let mut dead: Vec<(usize, DeadLetter)> = Vec::new();
    let mut good: Vec<usize> = Vec::new();
    for (i, m) in incoming.iter().enumerate() {
        match &m.outcome {
            Ok(_) => good.push(i),
            Err(dl) => dead.push((i, dl.clone())),
        }
    }
    write_isolating(
        pool,
        &incoming,
        good,
        &mut dispositions,
        &mut dead,
        &mut report,
    )
    .await;
    for (i, dl) in dead {
        tracing::warn!(message_id = %dl.message_id, entity = %dl.entity, reason = %dl.reason, "dead-lettering message");
        match record_dead_letter(pool, &dl).await {
            Ok(()) => {
                dispositions[i] = Disposition::Term;
                report.dead_lettered += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot record dead letter; will retry");
                dispositions[i] = Disposition::Retry(retry_delay(incoming[i].delivered));
            }
        }
    }
    report.retried = dispositions
        .iter()
        .filter(|d| matches!(d, Disposition::Retry(_)))
        .count();
    let acks = incoming.iter().zip(&dispositions).map(|(m, d)| {
        let kind = match d {
            Disposition::Ack => AckKind::Ack,
            Disposition::Retry(delay) => AckKind::Nak(Some(*delay)),
            Disposition::Term => AckKind::Term,
        };
        async move {
            if let Err(e) = m.message.ack_with(kind).await {
                // The message will be redelivered; the status row makes that harmless.
                tracing::warn!(error = %e, "ack failed");
            }
        }
    });
    futures::future::join_all(acks).await;
    report
}

async fn record_dead_letter(pool: &DbPool, dl: &DeadLetter) -> Result<(), DbError> {
    let mut conn = db::connection(pool).await?;
    db::record_dead_letter(&mut conn, dl).await
}

/// Writes the parsed messages `idx` in one transaction. A data error splits the set in halves
/// until the offending message is alone; it is then dead-lettered and the rest commit.
async fn write_isolating(
    pool: &DbPool,
    incoming: &[Incoming],
    idx: Vec<usize>,
    dispositions: &mut [Disposition],
    dead: &mut Vec<(usize, DeadLetter)>,
    report: &mut BatchReport,
) {
    let mut stack = vec![idx];
    while let Some(set) = stack.pop() {
        if set.is_empty() {
            continue;
        }
        let writes: Vec<PendingWrite<'_>> = set
            .iter()
            .filter_map(|&i| {
                let p = incoming[i].outcome.as_ref().ok()?;
                Some(PendingWrite {
                    message_id: p.envelope.message_id,
                    received_at: p.envelope.received_at,
                    attempts: i32::try_from(incoming[i].delivered).unwrap_or(i32::MAX),
                    message: &p.message,
                })
            })
            .collect();
        let result = match db::connection(pool).await {
            Ok(mut conn) => db::write_messages(&mut conn, &writes).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(outcome) => {
                report.processed += outcome.written.len();
                report.duplicates += outcome.already_processed.len();
                report.rows += outcome.rows.total();
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, messages = set.len(), "transient database fault; will retry");
                for &i in &set {
                    dispositions[i] = Disposition::Retry(retry_delay(incoming[i].delivered));
                }
            }
            Err(e) if set.len() == 1 => {
                let i = set[0];
                if let Ok(p) = &incoming[i].outcome {
                    dead.push((
                        i,
                        DeadLetter {
                            message_id: p.envelope.message_id,
                            entity: p.envelope.entity.clone(),
                            body: p.envelope.body.get().to_string(),
                            reason: e.to_string(),
                            attempts: i32::try_from(incoming[i].delivered).unwrap_or(i32::MAX),
                            received_at: p.envelope.received_at,
                        },
                    ));
                }
            }
            Err(e) => {
                tracing::info!(error = %e, messages = set.len(), "data error in batch; splitting to isolate it");
                let mut left = set;
                let right = left.split_off(left.len() / 2);
                stack.push(right);
                stack.push(left);
            }
        }
    }
}

/// A running worker's connections.
pub struct Worker {
    config: WorkerConfig,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    pool: DbPool,
}

impl Worker {
    /// Connects to NATS and PostgreSQL, creates the stream, consumer and missing tables.
    pub async fn connect(config: WorkerConfig) -> Result<Self, WorkerError> {
        let js = nats_setup::connect(&config.nats).await?;
        let stream = nats_setup::ensure_stream(&js, &config.nats).await?;
        let consumer_err = |e: &dyn std::fmt::Display| WorkerError::Consumer {
            consumer: config.consumer.clone(),
            reason: e.to_string(),
        };
        let consumer = stream
            .get_or_create_consumer(
                &config.consumer,
                pull::Config {
                    durable_name: Some(config.consumer.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: config.max_deliver,
                    filter_subject: format!("{}.>", config.nats.stream),
                    max_ack_pending: i64::try_from(config.batch_size * 4).unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| consumer_err(&e))?;
        db::ensure_database(&config.database_url).await?;
        let changes = db::prepare_schema(&config.database_url).await?;
        for table in &changes.created {
            tracing::info!(table = %table, "created table");
        }
        for column in &changes.added_columns {
            tracing::info!(column = %column, "added nullable column");
        }
        let pool = db::pool(&config.database_url, 4)?;
        Ok(Self {
            config,
            consumer,
            pool,
        })
    }

    /// The connection pool (for inspection in tests).
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Consumes until `shutdown` is cancelled; the batch in flight is finished and acked first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let batch_size = self.config.batch_size;
        while !shutdown.is_cancelled() {
            let messages = self
                .consumer
                .stream()
                .max_messages_per_batch(batch_size)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await;
            let messages = match messages {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start pulling; retrying in 1 s");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let mut chunks = messages.ready_chunks(batch_size);
            loop {
                let chunk = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    chunk = chunks.next() => chunk,
                };
                let Some(chunk) = chunk else {
                    break;
                };
                let mut batch = Vec::with_capacity(chunk.len());
                for item in chunk {
                    match item {
                        Ok(m) => batch.push(m),
                        Err(e) => tracing::warn!(error = %e, "pull error"),
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let report = process_batch(&self.pool, batch).await;
                tracing::debug!(?report, "batch done");
            }
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}
