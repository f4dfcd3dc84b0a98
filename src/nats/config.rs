//! NATS settings (`NATS_*`), shared by the api and the worker.

use std::time::Duration;

use crate::config::{ConfigError, optional, parsed, stream_name, var};

/// Default `NATS_URL`.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default `NATS_STREAM`: the stream named when the project was generated.
pub const DEFAULT_STREAM: &str = crate::defaults::STREAM;

/// `NATS_CONSUMER` (default `<project name>-worker`): the durable pull consumer the workers
/// share (the worker pulls from it; the api's console reads its backlog).
pub fn consumer_from_env() -> Result<String, ConfigError> {
    stream_name("NATS_CONSUMER", crate::defaults::CONSUMER)
}

/// The variables [`NatsConfig::from_env`] and [`consumer_from_env`] read.
pub const NATS_ENV_VARS: &[&str] = &[
    "NATS_URL",
    "NATS_CONSUMER",
    "NATS_STREAM",
    "NATS_DUPLICATE_WINDOW_SECS",
    "NATS_STREAM_REPLICAS",
    "NATS_STREAM_MAX_BYTES",
    "NATS_STREAM_MAX_AGE_SECS",
    "NATS_CREDS",
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TOKEN",
    "NATS_TLS_CA",
    "NATS_TLS_CERT",
    "NATS_TLS_KEY",
];

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
    /// `NATS_STREAM` (default [`DEFAULT_STREAM`]); messages go to subjects `<stream>.<entity>`.
    pub stream: String,
    /// `NATS_DUPLICATE_WINDOW_SECS` (default 120): JetStream de-duplication window.
    pub duplicate_window: Duration,
    /// `NATS_STREAM_REPLICAS` (default 1): replicas of a newly created stream (3 in a cluster).
    pub replicas: usize,
    /// Credentials and TLS.
    pub auth: NatsAuth,
    /// How much the stream may hold.
    pub limits: StreamLimits,
}

/// The shortest `NATS_STREAM_MAX_AGE_SECS` taken: a limit on age removes messages whether a
/// worker has stored them or not, so it must outlast any outage the workers are meant to wait
/// out.
pub const MIN_STREAM_MAX_AGE: Duration = Duration::from_secs(3600);

/// What the stream may hold. At a limit it refuses new messages (the api answers 503) and
/// keeps every message it accepted, except past `max_age`, which removes messages however
/// they stand (see [`MIN_STREAM_MAX_AGE`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLimits {
    /// `NATS_STREAM_MAX_BYTES` (default: none): bytes of messages kept at once.
    pub max_bytes: Option<i64>,
    /// `NATS_STREAM_MAX_AGE_SECS` (default: none): the age at which a message is removed.
    pub max_age: Option<Duration>,
}

impl StreamLimits {
    /// Reads `NATS_STREAM_MAX_BYTES` and `NATS_STREAM_MAX_AGE_SECS` (0 or unset: no limit).
    pub fn from_env() -> Result<Self, ConfigError> {
        let max_bytes = parsed("NATS_STREAM_MAX_BYTES", 0i64)?;
        if max_bytes < 0 {
            return Err(ConfigError {
                name: "NATS_STREAM_MAX_BYTES",
                value: max_bytes.to_string(),
                reason: "give a number of bytes, or 0 for no limit".into(),
            });
        }
        let max_age = parsed("NATS_STREAM_MAX_AGE_SECS", 0u64)?;
        if max_age > 0 && max_age < MIN_STREAM_MAX_AGE.as_secs() {
            return Err(ConfigError {
                name: "NATS_STREAM_MAX_AGE_SECS",
                value: max_age.to_string(),
                reason: format!(
                    "the stream would remove messages no worker has stored yet after {max_age} s; give at least {} (an hour), or 0 for no limit",
                    MIN_STREAM_MAX_AGE.as_secs()
                ),
            });
        }
        Ok(Self {
            max_bytes: (max_bytes > 0).then_some(max_bytes),
            max_age: (max_age > 0).then(|| Duration::from_secs(max_age)),
        })
    }
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
            limits: StreamLimits::from_env()?,
        })
    }
}

#[cfg(test)]
mod tests {
    /// The list is what the code reads.
    #[test]
    fn the_variable_list_matches_the_lookups() {
        let mut read = crate::config::lookups(include_str!("config.rs"));
        let mut listed = super::NATS_ENV_VARS.to_vec();
        read.sort();
        listed.sort();
        assert_eq!(read, listed);
    }
}
