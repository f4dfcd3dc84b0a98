//! The worker: a durable JetStream pull consumer that parses each message with the generated
//! code, writes its rows to PostgreSQL in one transaction per batch, and acks only after commit.
//!
//! Outcomes per message (mapped once, in [`Disposition`]):
//! - parsed and committed (or already committed by an earlier delivery) → ack;
//! - unreadable envelope, unknown entity, invalid body, a data error isolated to this one
//!   message, or a transient fault on its last allowed delivery → dead letter (published to
//!   the dead-letter stream and acked there first) → term;
//! - transient fault (database down, connection lost, serialization failure) → nak with
//!   exponential backoff, so JetStream redelivers it.

pub mod dead_letter;
pub mod metrics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::WorkerConfig;
use crate::db::{self, DbError, DbPool, DeadLetter, PendingWrite};
use crate::envelope::MessageEnvelope;
use crate::generated::{ParsedMessage, RootEntity};
use crate::nats::{self as nats_setup, NatsError};
pub use metrics::WorkerMetrics;

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
    /// The metrics port could not be opened.
    #[error("metrics port {port}: {reason}")]
    MetricsPort {
        /// Port.
        port: u16,
        /// Why.
        reason: String,
    },
}

/// What to tell JetStream about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Committed (now or by an earlier delivery).
    Ack,
    /// Transient fault: redeliver after this delay.
    Retry(Duration),
    /// Dead-lettered: never redeliver.
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

/// What a batch needs besides its messages.
#[derive(Clone)]
pub struct BatchContext {
    /// Connection pool.
    pub pool: DbPool,
    /// JetStream, for dead letters.
    pub jetstream: jetstream::Context,
    /// Main stream name (the dead-letter stream is `<stream>_DLQ`).
    pub stream: String,
    /// Deliveries allowed per message.
    pub max_deliver: i64,
    /// Ack wait of the consumer (progress acks are sent at a third of it).
    pub ack_wait: Duration,
    /// Metrics.
    pub metrics: Arc<WorkerMetrics>,
}

/// A message read from JetStream, before writing.
struct Incoming {
    message: jetstream::Message,
    delivered: i64,
    sequence: i64,
    outcome: Result<Parsed, DeadLetter>,
}

struct Parsed {
    envelope: MessageEnvelope,
    message: ParsedMessage,
}

fn attempts(delivered: i64) -> i32 {
    i32::try_from(delivered).unwrap_or(i32::MAX)
}

/// Decodes and parses one JetStream message; anything wrong becomes a dead letter.
fn decode(message: &jetstream::Message, delivered: i64) -> Result<Parsed, DeadLetter> {
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
                entity: crate::nats::entity_of_subject(&message.subject).to_string(),
                body: String::from_utf8_lossy(&message.payload).into_owned(),
                reason: format!("unreadable envelope: {e}"),
                attempts: attempts(delivered),
                received_at: chrono::Utc::now(),
            });
        }
    };
    let Some(entity) = RootEntity::from_name(&envelope.entity) else {
        let reason = format!("unknown entity `{}`", envelope.entity);
        return Err(dead_letter(&envelope, delivered, reason));
    };
    let parsed = crate::runtime::parse_json_object(envelope.body.get().as_bytes()).and_then(|v| {
        entity
            .parse_value(&v)
            .map_err(crate::runtime::ParseError::Invalid)
    });
    match parsed {
        Ok(message) => Ok(Parsed { envelope, message }),
        Err(e) => Err(dead_letter(&envelope, delivered, e.to_string())),
    }
}

fn dead_letter(envelope: &MessageEnvelope, delivered: i64, reason: String) -> DeadLetter {
    DeadLetter {
        message_id: envelope.message_id,
        entity: envelope.entity.clone(),
        body: envelope.body.get().to_string(),
        reason,
        attempts: attempts(delivered),
        received_at: envelope.received_at,
    }
}

/// Processes one batch end to end: decode, write (one transaction), dead-letter, then
/// ack/nak/term each message. Long batches send progress acks so JetStream does not redeliver.
pub async fn process_batch(cx: &BatchContext, batch: Vec<jetstream::Message>) -> BatchReport {
    let incoming: Arc<Vec<Incoming>> = Arc::new(
        batch
            .into_iter()
            .map(|message| {
                let (delivered, sequence) = message
                    .info()
                    .map(|i| {
                        (
                            i.delivered,
                            i64::try_from(i.stream_sequence).unwrap_or(i64::MAX),
                        )
                    })
                    .unwrap_or((1, 0));
                let outcome = decode(&message, delivered);
                Incoming {
                    message,
                    delivered,
                    sequence,
                    outcome,
                }
            })
            .collect(),
    );
    cx.metrics.batch_size.observe(incoming.len() as f64);
    let progress = tokio::spawn({
        let incoming = incoming.clone();
        let every = (cx.ack_wait / 3).max(Duration::from_millis(500));
        async move {
            loop {
                tokio::time::sleep(every).await;
                for m in incoming.iter() {
                    let _ = m.message.ack_with(AckKind::Progress).await;
                }
            }
        }
    });
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
        cx,
        &incoming,
        good,
        &mut dispositions,
        &mut dead,
        &mut report,
    )
    .await;
    let published = futures::future::join_all(dead.iter().map(|(_, dl)| async move {
        tracing::warn!(message_id = %dl.message_id, entity = %dl.entity, reason = %dl.reason, "dead-lettering message");
        dead_letter::publish(&cx.jetstream, &cx.stream, dl).await
    }))
    .await;
    for ((i, dl), result) in dead.iter().zip(published) {
        match result {
            Ok(()) => {
                dispositions[*i] = Disposition::Term;
                report.dead_lettered += 1;
                cx.metrics
                    .dead_lettered
                    .with_label_values(&[dl.entity.as_str()])
                    .inc();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot publish dead letter; will retry");
                dispositions[*i] = Disposition::Retry(retry_delay(incoming[*i].delivered));
            }
        }
    }
    progress.abort();
    for (m, d) in incoming.iter().zip(&dispositions) {
        if let Disposition::Retry(_) = d {
            report.retried += 1;
            let entity = match &m.outcome {
                Ok(p) => p.envelope.entity.as_str(),
                Err(dl) => dl.entity.as_str(),
            };
            cx.metrics.retried.with_label_values(&[entity]).inc();
        }
    }
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

/// Writes the parsed messages `idx` in one transaction. A data error splits the set in halves
/// until the offending message is alone; it is then dead-lettered and the rest commit. A
/// transient fault retries the set later, or dead-letters messages on their last delivery.
async fn write_isolating(
    cx: &BatchContext,
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
                    attempts: attempts(incoming[i].delivered),
                    sequence: incoming[i].sequence,
                    message: &p.message,
                })
            })
            .collect();
        let started = Instant::now();
        let result = match db::connection(&cx.pool).await {
            Ok(mut conn) => db::write_messages(&mut conn, &writes).await,
            Err(e) => Err(e),
        };
        cx.metrics
            .db_write_seconds
            .observe(started.elapsed().as_secs_f64());
        let parsed = |i: usize| incoming[i].outcome.as_ref().ok();
        match result {
            Ok(outcome) => {
                report.processed += outcome.written.len();
                report.duplicates += outcome.already_processed.len();
                report.rows += outcome.rows.total();
                for w in &writes {
                    if outcome.written.contains(&w.message_id) {
                        cx.metrics
                            .processed
                            .with_label_values(&[w.message.entity().name()])
                            .inc();
                    }
                }
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, messages = set.len(), "transient database fault; will retry");
                for &i in &set {
                    if incoming[i].delivered >= cx.max_deliver {
                        if let Some(p) = parsed(i) {
                            let reason = format!(
                                "gave up after {} deliveries; last error: {e}",
                                incoming[i].delivered
                            );
                            dead.push((i, dead_letter(&p.envelope, incoming[i].delivered, reason)));
                        }
                    } else {
                        dispositions[i] = Disposition::Retry(retry_delay(incoming[i].delivered));
                    }
                }
            }
            Err(e) if set.len() == 1 => {
                let i = set[0];
                if let Some(p) = parsed(i) {
                    dead.push((
                        i,
                        dead_letter(&p.envelope, incoming[i].delivered, e.to_string()),
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

/// A connected worker.
pub struct Worker {
    config: WorkerConfig,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    context: BatchContext,
}

impl Worker {
    /// Connects to NATS and PostgreSQL; creates the streams, the consumer, the database if
    /// missing, and brings the tables to the YAML's shape.
    pub async fn connect(config: WorkerConfig) -> Result<Self, WorkerError> {
        let js = nats_setup::connect(&config.nats).await?;
        let stream = nats_setup::ensure_stream(&js, &config.nats).await?;
        dead_letter::ensure_dlq_stream(&js, &config.nats).await?;
        let consumer = stream
            .get_or_create_consumer(
                &config.consumer,
                pull::Config {
                    durable_name: Some(config.consumer.clone()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: config.max_deliver,
                    filter_subject: format!("{}.>", config.nats.stream),
                    max_ack_pending: i64::try_from(
                        config.batch_size * (config.concurrency + 1) * 2,
                    )
                    .unwrap_or(i64::MAX),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| WorkerError::Consumer {
                consumer: config.consumer.clone(),
                reason: e.to_string(),
            })?;
        db::ensure_database(&config.database_url).await?;
        let changes = db::prepare_schema(&config.database_url).await?;
        for table in &changes.created {
            tracing::info!(table = %table, "created table");
        }
        for column in &changes.added_columns {
            tracing::info!(column = %column, "added nullable column");
        }
        let pool = db::pool(&config.database_url, config.concurrency + 2)?;
        let context = BatchContext {
            pool,
            jetstream: js,
            stream: config.nats.stream.clone(),
            max_deliver: config.max_deliver,
            ack_wait: config.ack_wait,
            metrics: Arc::new(WorkerMetrics::new()),
        };
        Ok(Self {
            config,
            consumer,
            context,
        })
    }

    /// The connection pool.
    pub fn pool(&self) -> &DbPool {
        &self.context.pool
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.context.metrics.clone()
    }

    /// Consumes until `shutdown` is cancelled: stops fetching, finishes and acks the batches in
    /// flight, then drains the NATS connection.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let mut background = JoinSet::new();
        if let Some(port) = self.config.metrics_port {
            let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
                .await
                .map_err(|e| WorkerError::MetricsPort {
                    port,
                    reason: e.to_string(),
                })?;
            let app = metrics::router(self.context.metrics.clone());
            let stop = shutdown.clone();
            background.spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            });
        }
        background.spawn(dead_letter_recorder(
            self.context.clone(),
            format!("{}_dlq_recorder", self.config.consumer),
            shutdown.clone(),
        ));
        background.spawn(watch_pending(
            self.consumer.clone(),
            self.context.metrics.clone(),
            shutdown.clone(),
        ));
        self.consume(&shutdown).await;
        shutdown.cancel();
        while background.join_next().await.is_some() {}
        if let Err(e) = self.context.jetstream.client().drain().await {
            tracing::warn!(error = %e, "NATS drain failed");
        }
        tracing::info!("worker stopped");
        Ok(())
    }

    async fn consume(&self, shutdown: &CancellationToken) {
        let batch_size = self.config.batch_size;
        let mut in_flight: JoinSet<BatchReport> = JoinSet::new();
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
                // At most `concurrency` batches in flight.
                while in_flight.len() >= self.config.concurrency {
                    if let Some(Ok(report)) = in_flight.join_next().await {
                        tracing::debug!(?report, "batch done");
                    }
                }
                let chunk = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                        if let Ok(report) = done {
                            tracing::debug!(?report, "batch done");
                        }
                        continue;
                    }
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
                let cx = self.context.clone();
                in_flight.spawn(async move { process_batch(&cx, batch).await });
            }
            if shutdown.is_cancelled() {
                // Hand back what the pull delivered but no batch took, so other workers get it
                // now instead of after the ack wait.
                let mut handed_back = 0usize;
                while let Some(Some(chunk)) = futures::FutureExt::now_or_never(chunks.next()) {
                    for message in chunk.into_iter().flatten() {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        handed_back += 1;
                    }
                }
                if handed_back > 0 {
                    tracing::info!(handed_back, "returned messages no batch had started");
                }
            }
        }
        // Finish (and ack) what is in flight before stopping.
        while let Some(done) = in_flight.join_next().await {
            if let Ok(report) = done {
                tracing::debug!(?report, "batch done");
            }
        }
    }
}

async fn dead_letter_recorder(cx: BatchContext, consumer: String, shutdown: CancellationToken) {
    if let Err(e) =
        dead_letter::run_recorder(cx.jetstream, cx.stream, consumer, cx.pool, shutdown).await
    {
        tracing::error!(error = %e, "dead-letter recorder stopped");
    }
}

/// Keeps the `consumer_pending` gauge current.
async fn watch_pending(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    metrics: Arc<WorkerMetrics>,
    shutdown: CancellationToken,
) {
    loop {
        if let Ok(info) = consumer.get_info().await {
            metrics
                .consumer_pending
                .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
