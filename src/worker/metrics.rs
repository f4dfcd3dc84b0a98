//! Worker metrics and its small HTTP endpoint (`WORKER_METRICS_PORT`): `/health`, `/ready`
//! (503 with the reasons while it pulls nothing: a database outage, or a newer schema in the
//! database), `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{
    Counter, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The worker's metrics, in their own registry.
#[derive(Clone)]
pub struct WorkerMetrics {
    registry: Registry,
    /// Messages whose rows were committed, by entity.
    pub processed: IntCounterVec,
    /// Messages dead-lettered, by entity.
    pub dead_lettered: IntCounterVec,
    /// Messages NAKed for redelivery after a transient fault, by entity.
    pub retried: IntCounterVec,
    /// Messages per processed batch.
    pub batch_size: Histogram,
    /// Time of one batch's database transaction.
    pub db_write_seconds: Histogram,
    /// From the api accepting a message (its `received_at`) to the commit of its rows, per
    /// message (a chunk: once): the whole pipeline's latency.
    pub commit_latency_seconds: Histogram,
    /// Messages waiting for this consumer (JetStream's count).
    pub consumer_pending: IntGauge,
    /// 1 while the database answers, 0 during an outage (pulls paused, messages held).
    pub database_up: IntGauge,
    /// Outages seen since start.
    pub database_outages: IntCounter,
    /// Seconds spent in outages that have ended.
    pub database_outage_seconds: Counter,
    /// Failed database operations by SQLSTATE class (`08`, `23`, …, `connection`, `client`).
    pub db_errors: IntCounterVec,
    /// Batches that panicked (their messages were handed back for redelivery).
    pub panicked_batches: IntCounter,
    /// Progress-ack tasks running (one per batch in flight).
    pub progress_tasks: IntGauge,
    /// Trims of the stream (purges below the consumer's ack floor) that failed.
    pub trim_failures: IntCounter,
    /// Messages accepted under another schema version, by entity, that version and what
    /// became of them (`parsed` by this worker's rules, or `held` for a worker of theirs).
    pub other_schema: IntCounterVec,
    /// 1 while the database's schema ledger is newer than this worker's (it pulls nothing).
    pub schema_behind: IntGauge,
}

impl WorkerMetrics {
    /// Messages committed since the worker started, over every entity.
    pub fn processed_total(&self) -> u64 {
        sum(&self.processed)
    }

    /// Messages dead-lettered since the worker started, over every entity and reason.
    pub fn dead_lettered_total(&self) -> u64 {
        sum(&self.dead_lettered)
    }

    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["entity"]).expect("valid metric")
        };
        let processed = counter("nomnom_worker_processed_total", "Messages committed");
        let dead_lettered = IntCounterVec::new(
            Opts::new(
                "nomnom_worker_dead_lettered_total",
                "Messages dead-lettered, by entity and reason (undecodable, unknown_entity, invalid, refused_by_database, max_deliveries)",
            ),
            &["entity", "reason"],
        )
        .expect("valid metric");
        let retried = counter(
            "nomnom_worker_retried_total",
            "Messages NAKed for redelivery",
        );
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("nomnom_worker_batch_size", "Messages per batch").buckets(vec![
                1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
            ]),
        )
        .expect("valid metric");
        let db_write_seconds = Histogram::with_opts(
            HistogramOpts::new("nomnom_worker_db_write_seconds", "Database write per batch")
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
        )
        .expect("valid metric");
        let commit_latency_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "nomnom_worker_commit_latency_seconds",
                "From the api accepting a message to the commit of its rows",
            )
            .buckets(vec![
                0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
                0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        let consumer_pending = IntGauge::new(
            "nomnom_worker_consumer_pending",
            "Messages waiting for the durable consumer",
        )
        .expect("valid metric");
        let database_up = IntGauge::new(
            "nomnom_worker_database_up",
            "1 while PostgreSQL answers, 0 during an outage",
        )
        .expect("valid metric");
        let database_outages = IntCounter::new(
            "nomnom_worker_database_outages_total",
            "Database outages seen",
        )
        .expect("valid metric");
        let database_outage_seconds = Counter::new(
            "nomnom_worker_database_outage_seconds_total",
            "Seconds spent in database outages that have ended",
        )
        .expect("valid metric");
        let db_errors = IntCounterVec::new(
            Opts::new(
                "nomnom_worker_db_errors_total",
                "Failed database operations by SQLSTATE class",
            ),
            &["class"],
        )
        .expect("valid metric");
        let panicked_batches = IntCounter::new(
            "nomnom_worker_panicked_batches_total",
            "Batches that panicked; their messages were handed back",
        )
        .expect("valid metric");
        let progress_tasks = IntGauge::new(
            "nomnom_worker_progress_tasks",
            "Progress-ack tasks running (one per batch in flight)",
        )
        .expect("valid metric");
        for c in [&processed, &dead_lettered, &retried, &db_errors] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(batch_size.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(db_write_seconds.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(commit_latency_seconds.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(consumer_pending.clone()))
            .expect("unique metric");
        for g in [&database_up, &progress_tasks] {
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
        }
        let trim_failures = IntCounter::new(
            "nomnom_worker_trim_failures_total",
            "Failed trims of the stream (the stream keeps finished messages until one succeeds)",
        )
        .expect("valid metric");
        for c in [&database_outages, &panicked_batches, &trim_failures] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(database_outage_seconds.clone()))
            .expect("unique metric");
        let other_schema = IntCounterVec::new(
            Opts::new(
                "nomnom_worker_other_schema_total",
                "Messages accepted under another schema version, by entity, version and outcome (parsed, held)",
            ),
            &["entity", "schema_version", "outcome"],
        )
        .expect("valid metric");
        let schema_behind = IntGauge::new(
            "nomnom_worker_schema_behind",
            "1 while the database's schema is newer than this worker's (it pulls nothing)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(other_schema.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(schema_behind.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(crate::metrics::schema_info()))
            .expect("unique metric");
        Self {
            registry,
            processed,
            dead_lettered,
            retried,
            batch_size,
            db_write_seconds,
            commit_latency_seconds,
            consumer_pending,
            database_up,
            database_outages,
            database_outage_seconds,
            db_errors,
            panicked_batches,
            progress_tasks,
            trim_failures,
            other_schema,
            schema_behind,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        crate::metrics::prometheus_text(&self.registry)
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What the worker's `/ready` answers from.
#[derive(Clone)]
pub struct Readiness {
    /// Database availability (pulls paused during an outage).
    pub outage: Arc<super::DbOutage>,
    /// Closed while the database's schema is newer than the worker's.
    pub schema_gate: Arc<super::SchemaGate>,
}

impl Readiness {
    /// Why the worker is not consuming now (empty: it is).
    fn reasons(&self) -> Vec<String> {
        let mut reasons = Vec::new();
        if let Some(newer) = self.schema_gate.behind() {
            reasons.push(format!(
                "the database's schema {} (applied {}) is newer than this worker's {}: replace this worker with one of the new build",
                newer.version,
                newer.applied_at.to_rfc3339(),
                crate::generated::SCHEMA_VERSION
            ));
        }
        if let Some(down) = self.outage.down_for() {
            reasons.push(format!(
                "the database has been unavailable for {} s: holding messages until it is back",
                down.as_secs()
            ));
        }
        reasons
    }
}

/// `/health`, `/ready` and `/metrics` of the worker.
pub fn router(metrics: Arc<WorkerMetrics>, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/ready",
            get(move || {
                let reasons = readiness.reasons();
                async move {
                    let status = if reasons.is_empty() {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    let body = serde_json::json!({
                        "status": if reasons.is_empty() { "ready" } else { "not_ready" },
                        "schema_version": crate::generated::SCHEMA_VERSION,
                        "reasons": reasons,
                    });
                    (status, axum::Json(body))
                }
            }),
        )
        .route(
            "/health",
            get(|| async {
                axum::Json(serde_json::json!({
                    "status": "ok",
                    "schema_version": crate::generated::SCHEMA_VERSION,
                }))
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<WorkerMetrics>>| async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    m.render(),
                )
                    .into_response()
            }),
        )
        .with_state(metrics)
}

/// The sum of a counter over all its labels.
fn sum(counter: &IntCounterVec) -> u64 {
    use prometheus::core::Collector as _;
    counter
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}
