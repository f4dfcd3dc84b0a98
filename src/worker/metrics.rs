//! Worker metrics and its small HTTP endpoint (`WORKER_METRICS_PORT`): `/health`, `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

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
    /// Messages waiting for this consumer (JetStream's count).
    pub consumer_pending: IntGauge,
}

impl WorkerMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["entity"]).expect("valid metric")
        };
        let processed = counter("nomnom_worker_processed_total", "Messages committed");
        let dead_lettered = counter(
            "nomnom_worker_dead_lettered_total",
            "Messages dead-lettered",
        );
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
        let consumer_pending = IntGauge::new(
            "nomnom_worker_consumer_pending",
            "Messages waiting for the durable consumer",
        )
        .expect("valid metric");
        for c in [&processed, &dead_lettered, &retried] {
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
            .register(Box::new(consumer_pending.clone()))
            .expect("unique metric");
        Self {
            registry,
            processed,
            dead_lettered,
            retried,
            batch_size,
            db_write_seconds,
            consumer_pending,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        crate::prometheus_text(&self.registry)
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `/health` and `/metrics` of the worker.
pub fn router(metrics: Arc<WorkerMetrics>) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
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
