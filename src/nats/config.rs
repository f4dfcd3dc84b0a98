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
