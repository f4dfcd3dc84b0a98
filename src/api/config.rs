//! The api's settings (`PORT`, body and batch limits, timeouts, API keys, …).

use crate::config::{ConfigError, flag, parsed, seconds, var};
use crate::nats::NatsConfig;

use super::server::{
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT,
};
use super::{
    ApiKeys, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_LINES, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_INFLIGHT_BODY_BYTES, HttpLimits,
};

/// `API_KEYS` and `API_KEYS_FILE`, merged (see [`super::auth`] for the format).
fn api_keys() -> Result<ApiKeys, ConfigError> {
    let mut keys = ApiKeys::none();
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

/// Settings of the `api` binary.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// NATS settings.
    pub nats: NatsConfig,
    /// `HOST` (default `0.0.0.0`, every interface): the address `PORT` and `METRICS_PORT`
    /// listen on.
    pub host: std::net::IpAddr,
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
    pub limits: HttpLimits,
    /// `API_KEYS` and `API_KEYS_FILE`: the clients allowed in; none: authentication off.
    pub keys: ApiKeys,
    /// `REQUIRE_AUTH` (default false): refuse to start without API keys.
    pub require_auth: bool,
    /// `METRICS_PORT` (default unset): serve `/metrics` there, without a key, and not on `PORT`.
    pub metrics_port: Option<u16>,
    /// `ADMIN_PORT` (default 8081; `0` turns it off): the console and its JSON endpoints.
    /// Never on `PORT`: the ingest port is the one a load balancer exposes.
    pub admin_port: Option<u16>,
    /// `ADMIN_HOST` (default `127.0.0.1`): the address the console listens on. Without API
    /// keys it must be a loopback address (anyone reaching the port could replay and discard);
    /// with keys, the console takes only keys scoped `admin`.
    pub admin_host: std::net::IpAddr,
    /// `NATS_CONSUMER`: the workers' durable consumer, whose backlog the console shows.
    pub consumer: String,
}

/// Default `HOST`: every interface (a container's port is reached from outside it).
pub(super) const DEFAULT_HOST: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// Default `ADMIN_PORT`.
pub const DEFAULT_ADMIN_PORT: u16 = 8081;

/// Default `ADMIN_HOST`: loopback, reachable from the pod or host itself (`kubectl
/// port-forward`, an SSH tunnel) and nowhere else.
pub const DEFAULT_ADMIN_HOST: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

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
        let host = parsed("HOST", DEFAULT_HOST)?;
        let port = parsed("PORT", 8080u16)?;
        let metrics_port = Some(parsed("METRICS_PORT", 0u16)?).filter(|p| *p != 0);
        if metrics_port == Some(port) {
            return Err(ConfigError {
                name: "METRICS_PORT",
                value: port.to_string(),
                reason: "must differ from PORT".into(),
            });
        }
        let admin_port = Some(parsed("ADMIN_PORT", DEFAULT_ADMIN_PORT)?).filter(|p| *p != 0);
        let admin_host = parsed("ADMIN_HOST", DEFAULT_ADMIN_HOST)?;
        if let Some(admin) = admin_port
            && (admin == port || Some(admin) == metrics_port)
        {
            return Err(ConfigError {
                name: "ADMIN_PORT",
                value: admin.to_string(),
                reason: "must differ from PORT and METRICS_PORT".into(),
            });
        }
        if admin_port.is_some() && !keys.enabled() && !admin_host.is_loopback() {
            return Err(ConfigError {
                name: "ADMIN_HOST",
                value: admin_host.to_string(),
                reason: "with no API keys configured the console would let anyone who reaches it replay and discard dead letters: keep ADMIN_HOST=127.0.0.1, or set API_KEYS with a key scoped `admin`, or turn the console off with ADMIN_PORT=0".into(),
            });
        }
        Ok(Self {
            keys,
            require_auth,
            metrics_port,
            admin_port,
            admin_host,
            consumer: crate::nats::consumer_from_env()?,
            nats: NatsConfig::from_env()?,
            host,
            port,
            database_url: crate::store::pg::config::database_url_from_env(),
            max_body_bytes: parsed("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            max_batch_bytes: parsed("MAX_BATCH_BYTES", DEFAULT_MAX_BATCH_BYTES)?,
            max_batch_lines: parsed("MAX_BATCH_LINES", DEFAULT_MAX_BATCH_LINES)?.max(1),
            max_inflight_body_bytes: parsed(
                "MAX_INFLIGHT_BODY_BYTES",
                DEFAULT_MAX_INFLIGHT_BODY_BYTES,
            )?,
            limits: HttpLimits {
                header_read_timeout: seconds(
                    "HEADER_READ_TIMEOUT_SECS",
                    DEFAULT_HEADER_READ_TIMEOUT,
                )?,
                request_timeout: seconds("REQUEST_TIMEOUT_SECS", DEFAULT_REQUEST_TIMEOUT)?,
                body_read_timeout: seconds("BODY_READ_TIMEOUT_SECS", DEFAULT_BODY_READ_TIMEOUT)?,
                idle_timeout: seconds("IDLE_TIMEOUT_SECS", DEFAULT_IDLE_TIMEOUT)?,
                max_in_flight: parsed("MAX_IN_FLIGHT_REQUESTS", DEFAULT_MAX_IN_FLIGHT)?.max(1),
            },
        })
    }
}

/// The variables this file reads (the rest of api's are NATS's, the store's and the log's).
const API_OWN_ENV_VARS: &[&str] = &[
    "HOST",
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
    "ADMIN_PORT",
    "ADMIN_HOST",
];

/// Every environment variable the api reads (documented in docs/OPERATIONS.md and
/// `.env.example`).
pub fn env_vars() -> Vec<&'static str> {
    [
        crate::nats::NATS_ENV_VARS,
        crate::store::pg::config::DB_ENV_VARS,
        API_OWN_ENV_VARS,
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
        let mut listed = super::API_OWN_ENV_VARS.to_vec();
        read.sort();
        listed.sort();
        assert_eq!(read, listed);
    }
}
