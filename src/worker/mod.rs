//! The worker: a durable JetStream pull consumer that parses each message with the generated
//! code, writes its rows to PostgreSQL in one transaction per batch, and acks only after commit.
//!
//! Outcomes per message (mapped once, in `batch::Outcome::disposition`):
//! - parsed and committed (or already committed by an earlier delivery) → ack;
//! - unreadable envelope, unknown entity, invalid body, or a data error (SQLSTATE class 22, 23,
//!   54) isolated to this one message → dead letter (published to the dead-letter stream and
//!   acked there first) → term;
//! - transient fault (database down, connection lost, serialization failure, any other
//!   SQLSTATE) → the batch keeps its messages (progress acks stop JetStream from redelivering
//!   them) and retries the write until the database is back; meanwhile no slot pulls anything
//!   new. An outage therefore costs latency, never a delivery or a dead letter;
//! - delivered more than `MAX_DELIVER` times without an outcome (the worker died or the batch
//!   panicked while holding it each time) → dead letter, unless an earlier delivery committed it.

mod batch;
mod config;
pub mod dead_letter;
pub mod metrics;
pub mod outage;
pub mod schema_gate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::nats::{self as nats_setup, JetStreamPublisher, NatsError, Publish};
use crate::store::pg::PgStore;
use crate::store::{Store, StoreError};
pub use config::{
    DEFAULT_CONSUMER, DEFAULT_WORKER_BATCH_WAIT, DEFAULT_WORKER_MAX_BATCH_BYTES,
    DEFAULT_WORKER_METRICS_HOST, WorkerConfig, env_vars,
};
pub use metrics::WorkerMetrics;
pub use outage::DbOutage;
pub use schema_gate::SchemaGate;

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
    /// The store could not be opened or prepared.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metrics port could not be opened.
    #[error("metrics port {port}: {reason}")]
    MetricsPort {
        /// Port.
        port: u16,
        /// Why.
        reason: String,
    },
    /// A setting cannot work with this NATS server.
    #[error("{0}")]
    Config(String),
}

/// What to tell JetStream about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Committed (now or by an earlier delivery).
    Ack,
    /// Not finished here (shutdown, or the dead letter could not be published): redeliver after
    /// this delay.
    Retry(Duration),
    /// Dead-lettered: never redeliver.
    Term,
}

impl Disposition {
    /// The answer for a JetStream message carrying two accepted messages answered `self` and
    /// `other`: redelivered if either must be (after the longer delay; a member committed
    /// meanwhile is recognized by its status row, one dead-lettered again keeps its one row in
    /// `dead_letters`), terminated only if both were dead-lettered, else acked.
    pub fn and(self, other: Disposition) -> Disposition {
        use Disposition::{Ack, Retry, Term};
        match (self, other) {
            (Retry(a), Retry(b)) => Retry(a.max(b)),
            (Retry(a), _) | (_, Retry(a)) => Retry(a),
            (Term, Term) => Term,
            _ => Ack,
        }
    }
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

/// A test-only fault hook: called with a batch's message ids and delivery counts before it is
/// written (a panic in it is a panicking batch).
pub type FaultHook = Arc<dyn Fn(&[(Uuid, i64)]) + Send + Sync>;

/// What a batch needs besides its messages.
#[derive(Clone)]
pub struct BatchContext {
    /// Where rows, status rows and dead letters are stored.
    pub store: Arc<dyn Store>,
    /// JetStream, for reading message bodies and draining at shutdown.
    pub jetstream: jetstream::Context,
    /// Where dead letters are published.
    pub publisher: Arc<dyn Publish>,
    /// Main stream name (the dead-letter stream is `<stream>_DLQ`).
    pub stream: String,
    /// The stream's epoch: when it was created, in microseconds (see `runtime::Position`).
    pub epoch: i64,
    /// Deliveries without an outcome allowed per message (`MAX_DELIVER`).
    pub max_deliver: i64,
    /// Ack wait of the consumer (progress acks are sent at a third of it).
    pub ack_wait: Duration,
    /// Metrics.
    pub metrics: Arc<WorkerMetrics>,
    /// Database availability, shared by every batch.
    pub outage: Arc<DbOutage>,
    /// Cancelled when the worker stops: a batch holding messages hands them back.
    pub shutdown: CancellationToken,
    /// Test-only fault injection.
    pub fault_hook: Option<FaultHook>,
}

/// Reports this worker in the workers' bucket every `REPORT_EVERY` until it stops (the console
/// lists the workers alive from there). A NATS failure costs a log line, never the worker.
async fn report_alive(cx: BatchContext, consumer: String, shutdown: CancellationToken) {
    use crate::admin::workers;
    let host = workers::host_name();
    let started_at = chrono::Utc::now();
    let id = workers::worker_id(&host);
    let mut bucket = None;
    let mut failures = 0u32;
    loop {
        if bucket.is_none() {
            bucket = workers::open(&cx.jetstream, &cx.stream).await.ok();
        }
        if let Some(b) = &bucket {
            let report = workers::WorkerReport {
                id: id.clone(),
                host: host.clone(),
                version: env!("CARGO_PKG_VERSION").into(),
                consumer: consumer.clone(),
                started_at,
                at: chrono::Utc::now(),
                database_up: !cx.outage.is_down(),
                database_down_seconds: cx.outage.down_for().map(|d| d.as_secs()),
                committed: cx.metrics.processed_total(),
                dead_lettered: cx.metrics.dead_lettered_total(),
            };
            match workers::report(b, &report).await {
                Ok(()) => failures = 0,
                Err(e) => {
                    if failures.is_multiple_of(60) {
                        tracing::warn!(error = %e, "cannot report this worker to the console's roster");
                    }
                    failures += 1;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(workers::REPORT_EVERY) => {}
        }
    }
    if let Some(b) = &bucket {
        // Leaving: off the roster at once rather than when the report expires.
        let _ = b.delete(&id).await;
    }
}

/// Why a held batch stopped waiting for the database.
struct ShuttingDown;

impl BatchContext {
    /// Records a transient fault and waits before the next attempt; `Err` when the worker is
    /// stopping (the caller hands its messages back).
    async fn hold(
        &self,
        error: &StoreError,
        held: usize,
        attempt: u32,
    ) -> Result<(), ShuttingDown> {
        self.outage.fault(error, held);
        self.pause(outage::hold_delay(attempt)).await
    }

    /// Waits `delay`; `Err` when the worker is stopping meanwhile.
    async fn pause(&self, delay: Duration) -> Result<(), ShuttingDown> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(ShuttingDown),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// Processes one batch end to end: decode, write (one transaction), dead-letter, then
/// ack/nak/term each message (see [`batch::Batch`]).
pub async fn process_batch(cx: &BatchContext, messages: Vec<jetstream::Message>) -> BatchReport {
    // A chunk's thousands of rows are parsed on a blocking thread, not on the runtime's.
    let chunked = messages.iter().any(|m| {
        m.headers
            .as_ref()
            .is_some_and(|h| h.get(crate::envelope::CHUNK_ROWS_HEADER).is_some())
    });
    let epoch = cx.epoch;
    let batch = if chunked {
        match tokio::task::spawn_blocking(move || batch::Batch::decode(messages, epoch)).await {
            Ok(batch) => batch,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    } else {
        batch::Batch::decode(messages, epoch)
    };
    batch.process(cx).await
}

/// How long an idle slot's pull request waits for the first message.
const LONG_POLL: Duration = Duration::from_secs(5);
/// How long past its own expiry a pull request may go unanswered before the slot gives up on
/// it (a NATS restart loses pending requests).
const PULL_GRACE: Duration = Duration::from_secs(5);

/// A connected worker, writing to its store.
pub struct Worker {
    config: WorkerConfig,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    /// The stream, when acknowledged messages leave it only by the worker's trim (limits
    /// retention; a work-queue stream removes each message as it is acked).
    trim: Option<jetstream::stream::Stream>,
    context: BatchContext,
    /// Closed while the database's schema is newer than this worker's: nothing is pulled.
    schema_gate: Arc<SchemaGate>,
    /// Held by the one slot that is pulling. Slots write concurrently but pull in turn, so a
    /// batch collects everything that arrived while the others were writing instead of the
    /// arriving messages being split between several waiting pull requests.
    pull_turn: tokio::sync::Mutex<()>,
}

/// What the worker holds of NATS: the JetStream context, its stream and its consumer.
struct NatsSide {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    consumer: jetstream::consumer::Consumer<pull::Config>,
}

impl NatsSide {
    /// Connects; creates the streams and the consumer; fits `WORKER_MAX_BATCH_BYTES` to the
    /// server's largest message.
    async fn setup(config: &mut WorkerConfig) -> Result<Self, WorkerError> {
        let js = nats_setup::connect(&config.nats).await?;
        let max_payload = js.client().server_info().max_payload;
        if config.max_batch_bytes < max_payload + 4096
            && config.max_batch_bytes == DEFAULT_WORKER_MAX_BATCH_BYTES
        {
            // The default follows a server that allows messages larger than it; a value the
            // operator chose is checked below instead.
            tracing::info!(
                max_payload,
                "WORKER_MAX_BATCH_BYTES raised from its default to one message's size"
            );
            config.max_batch_bytes = max_payload + 4096;
        }
        if config.max_batch_bytes < max_payload + 4096 {
            return Err(WorkerError::Config(format!(
                "WORKER_MAX_BATCH_BYTES={} is smaller than one message can be (the NATS server's max_payload is {max_payload} bytes); use at least {}",
                config.max_batch_bytes,
                max_payload + 4096
            )));
        }
        let stream = nats_setup::ensure_stream(&js, &config.nats).await?;
        dead_letter::ensure_dlq_stream(&js, &config.nats, config.dlq_limits).await?;
        // Created or updated: the delivery budget is kept by the worker (`MAX_DELIVER` counts
        // deliveries without an outcome), so JetStream itself never gives a message up.
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(config.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: -1,
                filter_subject: format!("{}.>", config.nats.stream),
                max_ack_pending: i64::try_from(config.batch_size * (config.concurrency + 1) * 2)
                    .unwrap_or(i64::MAX),
                ..Default::default()
            })
            .await
            .map_err(|e| WorkerError::Consumer {
                consumer: config.consumer.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            js,
            stream,
            consumer,
        })
    }
}

impl Worker {
    /// Connects to NATS and PostgreSQL (see [`Worker::connect_with`]).
    pub async fn connect(config: WorkerConfig) -> Result<Self, WorkerError> {
        // DATABASE_URL is parsed (and its TLS files read) once.
        let store = PgStore::open(&config.database_url, config.concurrency + 2)
            .map_err(StoreError::from)?;
        Self::connect_with(config, Arc::new(store)).await
    }

    /// Connects to NATS (creating the streams and the consumer), prepares `store` (the
    /// database if missing, the tables brought to the YAML's shape) and writes through it.
    pub async fn connect_with(
        mut config: WorkerConfig,
        store: Arc<dyn Store>,
    ) -> Result<Self, WorkerError> {
        let nats = NatsSide::setup(&mut config).await?;
        let changes = store.prepare().await?;
        for table in &changes.created {
            tracing::info!(table = %table, "created table");
        }
        for column in &changes.added_columns {
            tracing::info!(column = %column, "added column");
        }
        for change in &changes.altered {
            tracing::info!(change = %change, "altered column");
        }
        Ok(Self::assemble(config, nats, store, changes.behind))
    }

    fn assemble(
        config: WorkerConfig,
        nats: NatsSide,
        store: Arc<dyn Store>,
        behind: Option<crate::store::AppliedSchema>,
    ) -> Self {
        let NatsSide {
            js,
            stream,
            consumer,
        } = nats;
        let metrics = Arc::new(WorkerMetrics::new());
        let schema_gate = Arc::new(SchemaGate::new(behind, metrics.clone()));
        let context = BatchContext {
            store,
            publisher: Arc::new(JetStreamPublisher::new(js.clone())),
            jetstream: js,
            stream: config.nats.stream.clone(),
            epoch: nats_setup::stream_epoch(&stream),
            max_deliver: config.max_deliver,
            ack_wait: config.ack_wait,
            outage: Arc::new(DbOutage::new(metrics.clone())),
            metrics,
            shutdown: CancellationToken::new(),
            fault_hook: None,
        };
        let trim = (stream.cached_info().config.retention
            == jetstream::stream::RetentionPolicy::Limits)
            .then_some(stream);
        Self {
            config,
            consumer,
            trim,
            context,
            schema_gate,
            pull_turn: tokio::sync::Mutex::new(()),
        }
    }
}

impl Worker {
    /// Where this worker writes.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.context.store
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.context.metrics.clone()
    }

    /// Test-only: a hook called with each batch's message ids before it is written.
    #[doc(hidden)]
    pub fn set_fault_hook(&mut self, hook: FaultHook) {
        self.context.fault_hook = Some(hook);
    }

    /// Consumes until `shutdown` is cancelled: stops fetching, finishes and acks the batches in
    /// flight (a batch waiting for the database hands its messages back), then drains the NATS
    /// connection.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        self.context.shutdown = shutdown.child_token();
        let mut background = JoinSet::new();
        if let Some(port) = self.config.metrics_port {
            let listener = tokio::net::TcpListener::bind((self.config.metrics_host, port))
                .await
                .map_err(|e| WorkerError::MetricsPort {
                    port,
                    reason: e.to_string(),
                })?;
            let app = metrics::router(
                self.context.metrics.clone(),
                metrics::Readiness {
                    outage: self.context.outage.clone(),
                    schema_gate: self.schema_gate.clone(),
                },
            );
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
        background.spawn(schema_gate::watch(
            self.schema_gate.clone(),
            self.context.store.clone(),
            shutdown.clone(),
        ));
        background.spawn(report_alive(
            self.context.clone(),
            self.config.consumer.clone(),
            shutdown.clone(),
        ));
        background.spawn(watch_consumer(
            self.context.jetstream.client(),
            self.consumer.clone(),
            self.trim.clone(),
            self.context.metrics.clone(),
            shutdown.clone(),
        ));
        let this = Arc::new(self);
        let mut slots = JoinSet::new();
        for _ in 0..this.config.concurrency {
            let worker = this.clone();
            slots.spawn(async move { worker.run_slot().await });
        }
        while slots.join_next().await.is_some() {}
        shutdown.cancel();
        while background.join_next().await.is_some() {}
        if let Err(e) = this.context.jetstream.client().drain().await {
            tracing::warn!(error = %e, "NATS drain failed");
        }
        tracing::info!("worker stopped");
        Ok(())
    }

    /// One batch slot: pull a batch, process it, repeat; pull nothing while the database is
    /// down (probing it once a second instead) or its schema is newer than this worker's.
    async fn run_slot(&self) {
        let shutdown = &self.context.shutdown;
        let mut pull_failures = 0u32;
        while !shutdown.is_cancelled() {
            if self.schema_gate.behind().is_some() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            if self.context.outage.is_down() {
                self.probe_database().await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
            let pulled = {
                let _turn = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    turn = self.pull_turn.lock() => turn,
                };
                self.pull().await
            };
            let batch = match pulled {
                Ok(batch) => {
                    pull_failures = 0;
                    batch
                }
                Err(e) => {
                    // One line per failure streak, then every 30th.
                    if pull_failures.is_multiple_of(30) {
                        tracing::warn!(error = %e, failures = pull_failures + 1, "cannot pull from JetStream; retrying every second");
                    }
                    pull_failures += 1;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            if !batch.is_empty() && self.schema_gate.behind().is_some() {
                // The gate closed while the pull waited: a worker of the newer build takes it.
                for message in &batch {
                    let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
                }
                continue;
            }
            if !batch.is_empty() {
                self.run_batch(batch).await;
            }
        }
    }

    /// During an outage: a cheap round trip, ending the outage when it answers.
    async fn probe_database(&self) {
        let started = Instant::now();
        if self.context.store.probe().await.is_ok() {
            self.context.outage.recovered(started);
        }
    }

    /// Up to a batch (at most `BATCH_SIZE` messages and `WORKER_MAX_BATCH_BYTES`): what is
    /// waiting now, or else the first message to arrive; then, if the batch is not full, what
    /// arrived in the next `WORKER_BATCH_WAIT_MS`. The wait is a pause followed by one more
    /// fetch rather than a pull request left open: JetStream then sends what accumulated in
    /// one burst instead of one delivery per message as each arrives. Nothing is pulled ahead,
    /// so nothing waits unprocessed in a buffer.
    async fn pull(&self) -> Result<Vec<jetstream::Message>, String> {
        let (count, bytes) = (self.config.batch_size, self.config.max_batch_bytes);
        let mut batch = self.fetch(count, bytes).await?;
        if batch.is_empty() {
            let first = self
                .consumer
                .batch()
                .max_messages(1)
                .max_bytes(bytes)
                .expires(LONG_POLL)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            // The server ends the request at LONG_POLL; a request lost with a NATS restart
            // never ends, so the client gives up a little later.
            batch = tokio::select! {
                _ = self.context.shutdown.cancelled() => Vec::new(),
                got = tokio::time::timeout(LONG_POLL + PULL_GRACE, collect(first)) => {
                    got.map_err(|_| "no answer to a pull request".to_string())?
                }
            };
        }
        if !batch.is_empty() && batch.len() < count {
            let wait = self.config.batch_wait;
            if !wait.is_zero() {
                tokio::select! {
                    _ = self.context.shutdown.cancelled() => return Ok(batch),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let used: usize = batch.iter().map(|m| m.payload.len()).sum();
            // The batch in hand is processed even if topping it up failed.
            if let Ok(more) = self
                .fetch(count - batch.len(), bytes.saturating_sub(used).max(1))
                .await
            {
                batch.extend(more);
            }
        }
        Ok(batch)
    }

    /// What is waiting now, up to `count` messages and `bytes` payload bytes.
    async fn fetch(&self, count: usize, bytes: usize) -> Result<Vec<jetstream::Message>, String> {
        let request = async {
            let messages = self
                .consumer
                .fetch()
                .max_messages(count)
                .max_bytes(bytes)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            Ok(collect(messages).await)
        };
        tokio::time::timeout(PULL_GRACE, request)
            .await
            .map_err(|_| "no answer to a fetch request".to_string())?
    }

    /// Runs one batch in its own task so that a panic is contained: it is logged with the
    /// batch's message ids and the messages are handed back for redelivery.
    async fn run_batch(&self, batch: Vec<jetstream::Message>) {
        // Subjects share their bytes: keeping them costs no allocation per message.
        let subjects: Vec<async_nats::Subject> = batch.iter().map(|m| m.subject.clone()).collect();
        let replies: Vec<_> = batch.iter().filter_map(|m| m.reply.clone()).collect();
        let cx = self.context.clone();
        match tokio::spawn(async move { process_batch(&cx, batch).await }).await {
            Ok(report) => tracing::debug!(?report, "batch done"),
            Err(e) => {
                let why = if e.is_panic() {
                    let panic = e.into_panic();
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-text panic".into())
                } else {
                    "cancelled".into()
                };
                self.context.metrics.panicked_batches.inc();
                let ids: Vec<&str> = subjects
                    .iter()
                    .map(|s| s.rsplit('.').next().unwrap_or(""))
                    .collect();
                tracing::error!(message_ids = ?ids, panic = %why, "batch panicked; handing its messages back for redelivery");
                let client = self.context.jetstream.client();
                for reply in replies {
                    let _ = client.publish(reply, "-NAK".into()).await;
                }
            }
        }
    }
}

/// The messages of one pull request (errors, such as a request that timed out, end it).
async fn collect(
    mut messages: impl futures::Stream<Item = Result<jetstream::Message, impl std::fmt::Display>>
    + Unpin,
) -> Vec<jetstream::Message> {
    let mut out = Vec::new();
    while let Some(item) = messages.next().await {
        match item {
            Ok(m) => out.push(m),
            Err(e) => {
                tracing::debug!(error = %e, "pull request ended");
                break;
            }
        }
    }
    out
}

async fn dead_letter_recorder(cx: BatchContext, consumer: String, shutdown: CancellationToken) {
    if let Err(e) = dead_letter::run_recorder(
        cx.jetstream,
        cx.stream,
        consumer,
        cx.store,
        cx.outage,
        shutdown,
    )
    .await
    {
        tracing::error!(error = %e, "dead-letter recorder stopped");
    }
}

/// How often the worker reads its consumer's state (the `consumer_pending` gauge, the trim).
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Removes from a limits-retention `stream` what `consumer` (as of `info`) has finished: every
/// message below its ack floor has been acked or terminated, by whichever worker held it, so
/// one purge below the floor removes them all. Messages above the floor stay, acked or not,
/// until the floor passes them. `kept_from` is what the previous trim returned (1 at first);
/// returns the first sequence kept, sending nothing when the floor has not moved past it.
pub async fn trim_acknowledged(
    stream: &jetstream::stream::Stream,
    info: &jetstream::consumer::Info,
    kept_from: u64,
) -> Result<u64, jetstream::stream::PurgeError> {
    let below = info.ack_floor.stream_sequence.saturating_add(1);
    if below <= kept_from {
        return Ok(kept_from);
    }
    stream.purge().sequence(below).await?;
    Ok(below)
}

/// Whether this connection may trim `stream`: a purge request the server refuses as malformed
/// (so nothing is purged: a real purge, even of nothing, resets the consumers' waiting pull
/// requests) is answered when the user may purge, and never when a permission forbids it.
async fn may_trim(
    client: async_nats::Client,
    stream: &jetstream::stream::Stream,
) -> Result<(), String> {
    let name = &stream.cached_info().config.name;
    let request = client.request(
        format!("$JS.API.STREAM.PURGE.{name}"),
        "a permission check, not a purge request".into(),
    );
    match tokio::time::timeout(Duration::from_secs(5), request).await {
        Ok(Ok(_answer)) => Ok(()),
        Ok(Err(e)) => Err(format!("the purge request failed: {e}")),
        Err(_) => Err("the purge request was never answered".into()),
    }
}

/// How many [`WATCH_EVERY`] ticks pass between checks of the backlog's age against the
/// stream's `max_age`.
const MAX_AGE_CHECK_TICKS: u64 = 10;

/// Logs an error (at most once a minute) while the stream's oldest message has waited half of
/// the stream's `max_age` (`NATS_STREAM_MAX_AGE_SECS`): past it, the stream removes messages no
/// worker has stored.
async fn warn_near_max_age(stream: &mut jetstream::stream::Stream) {
    static NEARING: crate::throttle::Throttle =
        crate::throttle::Throttle::new(Duration::from_secs(60));
    let max_age = stream.cached_info().config.max_age;
    if max_age.is_zero() {
        return;
    }
    if let Ok(Some((oldest, messages))) = nats_setup::oldest_message(stream).await
        && nats_setup::nearing_max_age(oldest, max_age)
        && let Some(held_back) = NEARING.allow()
    {
        tracing::error!(
            oldest_seconds = oldest.as_secs(),
            messages,
            max_age_seconds = max_age.as_secs(),
            similar_since_last = held_back,
            "messages have waited over half of the stream's max age (NATS_STREAM_MAX_AGE_SECS): at that age the stream removes them whether stored or not; add workers, mend what holds them back, or raise the limit"
        );
    }
}

/// Keeps the `consumer_pending` gauge current and, on a limits-retention stream (`trim`),
/// trims what the consumer has finished ([`trim_acknowledged`]). The api's status lookup reads
/// the database around the stream, so a committed message not yet trimmed reads as processed.
/// A purge that removes nothing is tried first: a worker that may not trim (the NATS user lacks
/// `$JS.API.STREAM.PURGE.<stream>`) says so at start. Failures are counted in
/// `nomnom_worker_trim_failures_total` and logged at most once a minute.
async fn watch_consumer(
    client: async_nats::Client,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    trim: Option<jetstream::stream::Stream>,
    metrics: Arc<WorkerMetrics>,
    shutdown: CancellationToken,
) {
    static TRIM_FAILED: crate::throttle::Throttle =
        crate::throttle::Throttle::new(Duration::from_secs(60));
    let trim_failed = |e: &dyn std::fmt::Display, stream: &jetstream::stream::Stream| {
        metrics.trim_failures.inc();
        if let Some(held_back) = TRIM_FAILED.allow() {
            let name = &stream.cached_info().config.name;
            tracing::error!(error = %e, similar_since_last = held_back, "cannot trim finished messages from the stream: it keeps them until its limits are reached, then refuses new ones; check that the worker's NATS user may publish to $JS.API.STREAM.PURGE.{name}");
        }
    };
    if let Some(stream) = &trim
        && let Err(e) = may_trim(client, stream).await
    {
        trim_failed(&e, stream);
    }
    let mut kept_from = 1u64;
    let mut trim = trim;
    for tick in 0u64.. {
        if let Ok(info) = consumer.get_info().await {
            metrics
                .consumer_pending
                .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
            if let Some(stream) = &trim {
                match trim_acknowledged(stream, &info, kept_from).await {
                    Ok(kept) => kept_from = kept,
                    Err(e) => trim_failed(&e, stream),
                }
            }
        }
        if tick % MAX_AGE_CHECK_TICKS == 0
            && let Some(stream) = &mut trim
        {
            warn_near_max_age(stream).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}
