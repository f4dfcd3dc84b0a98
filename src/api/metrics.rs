//! Prometheus metrics of the api (`GET /metrics`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use crate::generated::RootEntity;

/// The api's metrics, in their own registry (several routers can live in one process).
#[derive(Clone)]
pub struct ApiMetrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub requests: IntCounterVec,
    /// Time from publish to JetStream ack, by entity.
    pub publish_seconds: HistogramVec,
    /// Messages accepted (JetStream-acked), by entity.
    pub accepted: IntCounterVec,
    /// Single messages per JetStream publish (more than one when they arrived together).
    pub publish_group_messages: Histogram,
    /// Messages rejected, by entity and reason.
    pub rejected: IntCounterVec,
    /// Requests refused for want of a valid key (`missing`, `invalid`) or scope (`forbidden`).
    pub auth_failures: IntCounterVec,
    /// 1 when the database's current schema (its ledger, as `/ready` last read it) is not the
    /// one this api checks against: a rolling deploy under way, or an api left behind.
    pub schema_mismatch: prometheus::IntGauge,
    /// The per-entity series of `publish_seconds` and `accepted`, resolved once (a label
    /// lookup hashes and locks on every call), in `RootEntity::ALL` order.
    per_entity: Vec<EntityMetrics>,
}

/// One entity's series, resolved once.
#[derive(Clone)]
pub struct EntityMetrics {
    /// Its `nomnom_publish_duration_seconds` histogram.
    pub publish_seconds: Histogram,
    /// Its `nomnom_messages_accepted_total` counter.
    pub accepted: IntCounter,
}

impl ApiMetrics {
    /// The series of one entity.
    pub fn of(&self, entity: RootEntity) -> &EntityMetrics {
        let i = RootEntity::ALL
            .iter()
            .position(|e| *e == entity)
            .unwrap_or(0);
        &self.per_entity[i]
    }
}

impl ApiMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "nomnom_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let publish_seconds = HistogramVec::new(
            HistogramOpts::new(
                "nomnom_publish_duration_seconds",
                "Time from JetStream publish to its ack",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["entity"],
        )
        .expect("valid metric");
        let accepted = IntCounterVec::new(
            Opts::new(
                "nomnom_messages_accepted_total",
                "Messages stored by JetStream",
            ),
            &["entity"],
        )
        .expect("valid metric");
        let publish_group_messages = Histogram::with_opts(
            HistogramOpts::new(
                "nomnom_publish_group_messages",
                "Single messages per JetStream publish (a group of those that arrived while the previous publish awaited its ack)",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "nomnom_messages_rejected_total",
                "Messages refused, by reason",
            ),
            &["entity", "reason"],
        )
        .expect("valid metric");
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "nomnom_auth_failures_total",
                "Requests refused: no key, an unknown key, or a key without the scope",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in ["missing", "invalid", "forbidden"] {
            // Present from the start, so a rate over it is defined before the first failure.
            auth_failures.with_label_values(&[reason]);
        }
        for m in [&requests, &accepted, &rejected, &auth_failures] {
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(publish_seconds.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(publish_group_messages.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(crate::metrics::schema_info()))
            .expect("unique metric");
        let schema_mismatch = prometheus::IntGauge::new(
            "nomnom_api_schema_mismatch",
            "1 when the database's current schema is not the one this api checks against",
        )
        .expect("valid metric");
        registry
            .register(Box::new(schema_mismatch.clone()))
            .expect("unique metric");
        let per_entity = RootEntity::ALL
            .iter()
            .map(|e| EntityMetrics {
                publish_seconds: publish_seconds.with_label_values(&[e.snake_name()]),
                accepted: accepted.with_label_values(&[e.snake_name()]),
            })
            .collect();
        Self {
            registry,
            requests,
            publish_seconds,
            accepted,
            publish_group_messages,
            rejected,
            auth_failures,
            schema_mismatch,
            per_entity,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        crate::metrics::prometheus_text(&self.registry)
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}
