//! The worker's settings (`NATS_CONSUMER`, batch size and bytes, concurrency, metrics port, …).

use std::time::Duration;

use crate::config::{ConfigError, parsed};
use crate::nats::NatsConfig;

use super::dead_letter::DlqLimits;

/// Default `NATS_CONSUMER`: `<project name>-worker`.
pub const DEFAULT_CONSUMER: &str = crate::defaults::CONSUMER;

/// Settings of the `worker` binary.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// NATS settings.
    pub nats: NatsConfig,
    /// `NATS_CONSUMER` (default [`DEFAULT_CONSUMER`]): the durable pull consumer shared by workers.
    pub consumer: String,
    /// `DATABASE_URL` (default [`crate::store::pg::config::default_database_url`]).
    pub database_url: String,
    /// `BATCH_SIZE` (default 500): messages fetched and written per transaction.
    pub batch_size: usize,
    /// `MAX_DELIVER` (default 5): deliveries without an outcome (the worker died or the batch
    /// panicked) before a message is dead-lettered; database outages do not count.
    pub max_deliver: i64,
    /// `ACK_WAIT_SECS` (default 30): how long JetStream waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// `WORKER_CONCURRENCY` (default 3): batches in flight at once.
    pub concurrency: usize,
    /// `WORKER_METRICS_PORT` (default 9090; `0` turns it off): `/health`, `/ready` and `/metrics`.
    pub metrics_port: Option<u16>,
    /// `WORKER_METRICS_HOST` (default `127.0.0.1`): the address the metrics port listens on.
    /// It has no authentication, so it is loopback-only unless a deployment opens it (the
    /// Dockerfile, compose and manifests set `0.0.0.0` for the healthcheck and scrapes).
    pub metrics_host: std::net::IpAddr,
    /// `WORKER_MAX_BATCH_BYTES` (default 8 MiB, or the NATS server's `max_payload` + 4 KiB if
    /// that is larger): payload bytes pulled per batch, so memory is bounded by
    /// `WORKER_CONCURRENCY` × this whatever the message size.
    pub max_batch_bytes: usize,
    /// `WORKER_BATCH_WAIT_MS` (default 50; `0`: take only what is waiting): how long a pull
    /// waits for a batch to fill once its first message is there. Fuller batches mean fewer
    /// transactions and pull requests per message; the price is at most this much latency.
    pub batch_wait: Duration,
    /// `NATS_DLQ_MAX_AGE_DAYS` (default 30) and `NATS_DLQ_MAX_BYTES` (default 1 GiB): what the
    /// dead-letter stream keeps (oldest removed first; the `dead_letters` table keeps all).
    pub dlq_limits: DlqLimits,
}

/// Default `WORKER_METRICS_HOST`: loopback, since the metrics port has no authentication.
pub const DEFAULT_WORKER_METRICS_HOST: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// Default `WORKER_MAX_BATCH_BYTES`: with 100 KiB messages it drains as fast as 32 MiB did at a
/// third of the memory (docs/RELIABILITY.md), and keeps the worker under 256 MB at the defaults.
pub const DEFAULT_WORKER_MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Default `WORKER_BATCH_WAIT_MS`.
pub const DEFAULT_WORKER_BATCH_WAIT: Duration = Duration::from_millis(50);

impl WorkerConfig {
    /// Reads the worker's variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        let batch_size: usize = parsed("BATCH_SIZE", 500)?;
        if batch_size == 0 {
            return Err(ConfigError {
                name: "BATCH_SIZE",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let max_deliver: i64 = parsed("MAX_DELIVER", 5)?;
        if max_deliver < 1 {
            return Err(ConfigError {
                name: "MAX_DELIVER",
                value: max_deliver.to_string(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            nats: NatsConfig::from_env()?,
            consumer: crate::nats::consumer_from_env()?,
            database_url: crate::store::pg::config::database_url_from_env(),
            batch_size,
            max_deliver,
            ack_wait: Duration::from_secs(parsed("ACK_WAIT_SECS", 30u64)?.max(1)),
            concurrency: parsed("WORKER_CONCURRENCY", 3usize)?.max(1),
            metrics_port: Some(parsed("WORKER_METRICS_PORT", 9090u16)?).filter(|p| *p != 0),
            metrics_host: parsed("WORKER_METRICS_HOST", DEFAULT_WORKER_METRICS_HOST)?,
            max_batch_bytes: parsed("WORKER_MAX_BATCH_BYTES", DEFAULT_WORKER_MAX_BATCH_BYTES)?,
            batch_wait: Duration::from_millis(parsed(
                "WORKER_BATCH_WAIT_MS",
                DEFAULT_WORKER_BATCH_WAIT.as_millis() as u64,
            )?),
            dlq_limits: {
                let default = DlqLimits::default();
                DlqLimits {
                    max_age: Duration::from_secs(
                        parsed("NATS_DLQ_MAX_AGE_DAYS", default.max_age.as_secs() / 86_400)?.max(1)
                            * 86_400,
                    ),
                    max_bytes: parsed("NATS_DLQ_MAX_BYTES", default.max_bytes)?.max(1 << 20),
                }
            },
        })
    }
}

/// The variables this file reads (the rest of worker's are NATS's, the store's and the log's).
const WORKER_OWN_ENV_VARS: &[&str] = &[
    "BATCH_SIZE",
    "WORKER_CONCURRENCY",
    "MAX_DELIVER",
    "ACK_WAIT_SECS",
    "WORKER_METRICS_PORT",
    "WORKER_METRICS_HOST",
    "WORKER_MAX_BATCH_BYTES",
    "WORKER_BATCH_WAIT_MS",
    "NATS_DLQ_MAX_AGE_DAYS",
    "NATS_DLQ_MAX_BYTES",
];

/// Every environment variable the worker reads (documented in docs/OPERATIONS.md and
/// `.env.example`).
pub fn env_vars() -> Vec<&'static str> {
    [
        crate::nats::NATS_ENV_VARS,
        crate::store::pg::config::DB_ENV_VARS,
        WORKER_OWN_ENV_VARS,
        crate::process::LOG_ENV_VARS,
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    /// The list is what this file reads.
    #[test]
    fn the_variable_list_matches_the_lookups() {
        let mut read = crate::config::lookups(include_str!("config.rs"));
        let mut listed = super::WORKER_OWN_ENV_VARS.to_vec();
        read.sort();
        listed.sort();
        assert_eq!(read, listed);
    }
}
