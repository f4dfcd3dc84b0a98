//! Configuration from environment variables, with documented defaults.

use std::time::Duration;

/// A variable is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is invalid: {reason}")]
pub struct ConfigError {
    /// Variable name.
    pub name: &'static str,
    /// The value found.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Default `NATS_URL`.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default `NATS_STREAM`.
pub const DEFAULT_STREAM: &str = crate::defaults::STREAM;
/// Default `NATS_CONSUMER`.
pub const DEFAULT_CONSUMER: &str = crate::defaults::CONSUMER;
/// Default `DATABASE_URL`: local PostgreSQL, database [`crate::defaults::DATABASE`].
pub fn default_database_url() -> String {
    format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        crate::defaults::DATABASE
    )
}

fn var(name: &'static str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|e: T::Err| ConfigError {
            name,
            value: v.clone(),
            reason: e.to_string(),
        }),
        _ => Ok(default),
    }
}

/// A yes/no switch: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
fn flag(name: &'static str, default: bool) -> Result<bool, ConfigError> {
    let v = var(name, if default { "true" } else { "false" });
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError {
            name,
            value: v,
            reason: "use true or false".into(),
        }),
    }
}

/// `API_KEYS` and `API_KEYS_FILE`, merged (see [`crate::api::auth`] for the format).
fn api_keys() -> Result<crate::api::ApiKeys, ConfigError> {
    let mut keys = crate::api::ApiKeys::none();
    let inline = var("API_KEYS", "");
    if !inline.is_empty() {
        keys.add(&inline, "API_KEYS", true)
            .map_err(|e| ConfigError {
                name: "API_KEYS",
                value: "(secret, not shown)".into(),
                reason: e.to_string(),
            })?;
    }
    let path = var("API_KEYS_FILE", "");
    if !path.is_empty() {
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            name: "API_KEYS_FILE",
            value: path.clone(),
            reason: format!("cannot read it: {e}"),
        })?;
        keys.add(&text, &path, false).map_err(|e| ConfigError {
            name: "API_KEYS_FILE",
            value: path.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(keys)
}

/// A whole number of seconds, at least 1.
fn seconds(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(parsed(name, default.as_secs())?.max(1)))
}

fn stream_name(name: &'static str, default: &str) -> Result<String, ConfigError> {
    let v = var(name, default);
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(v)
    } else {
        Err(ConfigError {
            name,
            value: v,
            reason: "use letters, digits, `_` or `-` only (it names a stream and its subjects)"
                .into(),
        })
    }
}

/// How the api and the worker prove who they are to NATS, and how they check the server.
#[derive(Clone, Default)]
pub struct NatsAuth {
    /// `NATS_CREDS`: a `.creds` file (user JWT and nkey seed) or a file holding an nkey seed.
    pub creds: Option<std::path::PathBuf>,
    /// `NATS_USER` and `NATS_PASSWORD`.
    pub user: Option<(String, String)>,
    /// `NATS_TOKEN`.
    pub token: Option<String>,
    /// `NATS_TLS_CA`: PEM file of the CA(s) the server's certificate must chain to; setting it
    /// (or a client certificate) makes TLS required.
    pub tls_ca: Option<std::path::PathBuf>,
    /// `NATS_TLS_CERT` and `NATS_TLS_KEY`: a client certificate and its key (mutual TLS).
    pub tls_client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets are never printed: only whether they are set.
        f.debug_struct("NatsAuth")
            .field("creds", &self.creds)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("password", &self.user.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_client", &self.tls_client)
            .finish()
    }
}

fn optional(name: &'static str) -> Option<String> {
    Some(var(name, "")).filter(|v| !v.is_empty())
}

impl NatsAuth {
    /// Reads `NATS_CREDS`, `NATS_USER`, `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_TLS_CA`,
    /// `NATS_TLS_CERT`, `NATS_TLS_KEY`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let creds = optional("NATS_CREDS").map(Into::into);
        let user = match (optional("NATS_USER"), optional("NATS_PASSWORD")) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            (Some(user), None) => {
                return Err(ConfigError {
                    name: "NATS_PASSWORD",
                    value: String::new(),
                    reason: format!("NATS_USER={user} is set; set its password too"),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    name: "NATS_USER",
                    value: String::new(),
                    reason: "NATS_PASSWORD is set; set the user too".into(),
                });
            }
        };
        let token = optional("NATS_TOKEN");
        let methods = [creds.is_some(), user.is_some(), token.is_some()];
        if methods.iter().filter(|m| **m).count() > 1 {
            return Err(ConfigError {
                name: "NATS_CREDS",
                value: "(with NATS_USER or NATS_TOKEN)".into(),
                reason: "set one of NATS_CREDS, NATS_USER/NATS_PASSWORD or NATS_TOKEN".into(),
            });
        }
        let tls_client = match (optional("NATS_TLS_CERT"), optional("NATS_TLS_KEY")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            (cert, _) => {
                let (name, other) = if cert.is_some() {
                    ("NATS_TLS_KEY", "NATS_TLS_CERT")
                } else {
                    ("NATS_TLS_CERT", "NATS_TLS_KEY")
                };
                return Err(ConfigError {
                    name,
                    value: String::new(),
                    reason: format!("{other} is set; a client certificate needs both"),
                });
            }
        };
        Ok(Self {
            creds,
            user,
            token,
            tls_ca: optional("NATS_TLS_CA").map(Into::into),
            tls_client,
        })
    }
}

/// NATS JetStream settings shared by the api and the worker.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `NATS_URL` (default `nats://127.0.0.1:4222`).
    pub url: String,
    /// `NATS_STREAM` (default `NOMNOM`); messages go to subjects `<stream>.<entity>`.
    pub stream: String,
    /// `NATS_DUPLICATE_WINDOW_SECS` (default 120): JetStream de-duplication window.
    pub duplicate_window: Duration,
    /// `NATS_STREAM_REPLICAS` (default 1): replicas of a newly created stream (3 in a cluster).
    pub replicas: usize,
    /// Credentials and TLS.
    pub auth: NatsAuth,
}

impl NatsConfig {
    /// Reads `NATS_URL`, `NATS_STREAM`, `NATS_DUPLICATE_WINDOW_SECS`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            url: var("NATS_URL", DEFAULT_NATS_URL),
            stream: stream_name("NATS_STREAM", DEFAULT_STREAM)?,
            duplicate_window: Duration::from_secs(parsed("NATS_DUPLICATE_WINDOW_SECS", 120u64)?),
            replicas: parsed("NATS_STREAM_REPLICAS", 1usize)?.clamp(1, 5),
            auth: NatsAuth::from_env()?,
        })
    }
}

/// Settings of the `api` binary.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// NATS settings.
    pub nats: NatsConfig,
    /// `PORT` (default 8080).
    pub port: u16,
    /// `DATABASE_URL`: read by `/ingest/status` and checked by `/ready`.
    pub database_url: String,
    /// `MAX_BODY_BYTES` (default 1048576): largest single message body; larger → 413.
    pub max_body_bytes: usize,
    /// `MAX_BATCH_BYTES` (default 16777216): largest NDJSON batch body; larger → 413.
    pub max_batch_bytes: usize,
    /// `MAX_BATCH_LINES` (default 10000): most lines in one batch; more → 413.
    pub max_batch_lines: usize,
    /// `MAX_INFLIGHT_BODY_BYTES` (default 83886080, 80 MiB): request body bytes held at once;
    /// a request that would pass it → 503 + `Retry-After` before its body is read.
    pub max_inflight_body_bytes: usize,
    /// `HEADER_READ_TIMEOUT_SECS` (10), `REQUEST_TIMEOUT_SECS` (30), `BODY_READ_TIMEOUT_SECS`
    /// (10), `IDLE_TIMEOUT_SECS` (60), `MAX_IN_FLIGHT_REQUESTS` (512).
    pub limits: crate::api::HttpLimits,
    /// `API_KEYS` and `API_KEYS_FILE`: the clients allowed in; none: authentication off.
    pub keys: crate::api::ApiKeys,
    /// `REQUIRE_AUTH` (default false): refuse to start without API keys.
    pub require_auth: bool,
    /// `METRICS_PORT` (default unset): serve `/metrics` there, without a key, and not on `PORT`.
    pub metrics_port: Option<u16>,
}

impl ApiConfig {
    /// Reads the api's variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        let keys = api_keys()?;
        let require_auth = flag("REQUIRE_AUTH", false)?;
        if require_auth && !keys.enabled() {
            return Err(ConfigError {
                name: "REQUIRE_AUTH",
                value: "true".into(),
                reason: "no API keys are configured: set API_KEYS or API_KEYS_FILE".into(),
            });
        }
        let port = parsed("PORT", 8080u16)?;
        let metrics_port = Some(parsed("METRICS_PORT", 0u16)?).filter(|p| *p != 0);
        if metrics_port == Some(port) {
            return Err(ConfigError {
                name: "METRICS_PORT",
                value: port.to_string(),
                reason: "must differ from PORT".into(),
            });
        }
        Ok(Self {
            keys,
            require_auth,
            metrics_port,
            nats: NatsConfig::from_env()?,
            port,
            database_url: var("DATABASE_URL", &default_database_url()),
            max_body_bytes: parsed("MAX_BODY_BYTES", crate::api::DEFAULT_MAX_BODY_BYTES)?,
            max_batch_bytes: parsed("MAX_BATCH_BYTES", crate::api::DEFAULT_MAX_BATCH_BYTES)?,
            max_batch_lines: parsed("MAX_BATCH_LINES", crate::api::DEFAULT_MAX_BATCH_LINES)?.max(1),
            max_inflight_body_bytes: parsed(
                "MAX_INFLIGHT_BODY_BYTES",
                crate::api::DEFAULT_MAX_INFLIGHT_BODY_BYTES,
            )?,
            limits: crate::api::HttpLimits {
                header_read_timeout: seconds(
                    "HEADER_READ_TIMEOUT_SECS",
                    crate::api::server::DEFAULT_HEADER_READ_TIMEOUT,
                )?,
                request_timeout: seconds(
                    "REQUEST_TIMEOUT_SECS",
                    crate::api::server::DEFAULT_REQUEST_TIMEOUT,
                )?,
                body_read_timeout: seconds(
                    "BODY_READ_TIMEOUT_SECS",
                    crate::api::server::DEFAULT_BODY_READ_TIMEOUT,
                )?,
                idle_timeout: seconds(
                    "IDLE_TIMEOUT_SECS",
                    crate::api::server::DEFAULT_IDLE_TIMEOUT,
                )?,
                max_in_flight: parsed(
                    "MAX_IN_FLIGHT_REQUESTS",
                    crate::api::server::DEFAULT_MAX_IN_FLIGHT,
                )?
                .max(1),
            },
        })
    }
}

/// Settings of the `worker` binary.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// NATS settings.
    pub nats: NatsConfig,
    /// `NATS_CONSUMER` (default `nomnom-worker`): the durable pull consumer shared by workers.
    pub consumer: String,
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/nomnom`).
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
    /// `WORKER_METRICS_PORT` (default 9090; `0` turns it off): `/health` and `/metrics`.
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
    pub dlq_limits: crate::worker::dead_letter::DlqLimits,
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
            consumer: stream_name("NATS_CONSUMER", DEFAULT_CONSUMER)?,
            database_url: var("DATABASE_URL", &default_database_url()),
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
                let default = crate::worker::dead_letter::DlqLimits::default();
                crate::worker::dead_letter::DlqLimits {
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

/// Every environment variable the api reads (documented in README.md and `.env.example`).
pub const API_ENV_VARS: &[&str] = &[
    "NATS_URL",
    "NATS_STREAM",
    "NATS_DUPLICATE_WINDOW_SECS",
    "NATS_STREAM_REPLICAS",
    "NATS_CREDS",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_TLS_CA",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
    "DATABASE_URL",
    "PORT",
    "MAX_BODY_BYTES",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_LINES",
    "MAX_INFLIGHT_BODY_BYTES",
    "HEADER_READ_TIMEOUT_SECS",
    "REQUEST_TIMEOUT_SECS",
    "BODY_READ_TIMEOUT_SECS",
    "IDLE_TIMEOUT_SECS",
    "MAX_IN_FLIGHT_REQUESTS",
    "API_KEYS",
    "API_KEYS_FILE",
    "REQUIRE_AUTH",
    "METRICS_PORT",
    "RUST_LOG",
    "LOG_FORMAT",
];

/// Every environment variable the worker reads (documented in README.md and `.env.example`).
pub const WORKER_ENV_VARS: &[&str] = &[
    "NATS_URL",
    "NATS_STREAM",
    "NATS_DUPLICATE_WINDOW_SECS",
    "NATS_STREAM_REPLICAS",
    "NATS_CREDS",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_TLS_CA",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
    "DATABASE_URL",
    "NATS_CONSUMER",
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
    "RUST_LOG",
    "LOG_FORMAT",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The lists above are what the code reads: every `"NAME"` looked up in this file is listed.
    #[test]
    fn env_var_lists_match_the_lookups() {
        let source = include_str!("config.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let lists_start = code.find("pub const API_ENV_VARS").unwrap_or(code.len());
        let mut read: Vec<&str> = Vec::new();
        for call in [
            "var(\"",
            "parsed(\"",
            "stream_name(\"",
            "seconds(\"",
            "flag(\"",
            "optional(\"",
        ] {
            let call = call.trim_end_matches('"');
            for (i, _) in code[..lists_start].match_indices(call) {
                // rustfmt may put the name on the next line.
                let rest = code[i + call.len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let name = &rest[..rest.find('"').unwrap_or(0)];
                if !name.is_empty() && !read.contains(&name) {
                    read.push(name);
                }
            }
        }
        read.push("RUST_LOG"); // read by tracing's EnvFilter
        // read by init_logging (process.rs)
        if include_str!("process.rs").contains("\"LOG_FORMAT\"") {
            read.push("LOG_FORMAT");
        }
        let mut listed: Vec<&str> = API_ENV_VARS
            .iter()
            .chain(WORKER_ENV_VARS)
            .copied()
            .collect();
        listed.sort();
        listed.dedup();
        read.sort();
        read.dedup();
        assert_eq!(read, listed);
    }
}
