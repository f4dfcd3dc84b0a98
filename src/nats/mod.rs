//! JetStream setup shared by the api and the worker: one stream, one subject per entity.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

mod config;
pub mod publish;

pub use config::{
    DEFAULT_NATS_URL, DEFAULT_STREAM, MIN_STREAM_MAX_AGE, NATS_ENV_VARS, NatsAuth, NatsConfig,
    StreamLimits, consumer_from_env,
};
pub use publish::{Acked, JetStreamPublisher, Outgoing, Pipeline, Publish, PublishFailure};

/// Connecting to NATS or setting up the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried, with any password or token in it replaced by `***`.
        url: String,
        /// Why.
        reason: String,
    },
    /// A credentials or certificate file named in the configuration cannot be used.
    #[error("{variable}={path}: {reason}")]
    Credentials {
        /// The variable naming the file.
        variable: &'static str,
        /// The file.
        path: String,
        /// Why (never its contents).
        reason: String,
    },
    /// The stream could not be created or read.
    #[error("JetStream stream `{stream}`: {reason}")]
    Stream {
        /// Stream name.
        stream: String,
        /// Why.
        reason: String,
    },
}

/// The subject of one message: `<stream>.<entity_snake>.<message_id>`. One subject per message
/// lets the api find a message that is still waiting in the stream (`GET /ingest/status`)
/// with a direct last-message-for-subject lookup.
pub fn message_subject(stream: &str, entity_snake: &str, message_id: &uuid::Uuid) -> String {
    format!("{stream}.{entity_snake}.{message_id}")
}

/// The entity token of a message subject (`NOMNOM.order.<id>` → `order`).
pub fn entity_of_subject(subject: &str) -> &str {
    subject.split('.').nth(1).unwrap_or("")
}

/// `NATS_URL` may list several servers of a cluster, comma-separated.
fn servers(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A NATS URL list with the secret part of any `user:password@` or `token@` replaced by `***`,
/// for errors and logs.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|server| {
            let server = server.trim();
            let (scheme, rest) = match server.split_once("://") {
                Some((scheme, rest)) => (format!("{scheme}://"), rest),
                None => (String::new(), server),
            };
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => {
                    let info = &rest[..at];
                    let shown = match info.split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        None => "***".to_string(),
                    };
                    format!("{scheme}{shown}{}", &rest[at..])
                }
                None => server.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The credentials in a `NATS_CREDS` file: a `.creds` file (user JWT and seed), or a bare
/// nkey user seed (`SU…`, e.g. from `nk -gen user`).
fn with_creds_file(
    options: async_nats::ConnectOptions,
    path: &std::path::Path,
) -> Result<async_nats::ConnectOptions, NatsError> {
    let fail = |reason: String| NatsError::Credentials {
        variable: "NATS_CREDS",
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    if text.contains("BEGIN NATS USER JWT") {
        return options
            .credentials(&text)
            .map_err(|e| fail(format!("not a valid .creds file: {e}")));
    }
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("SU") && l.len() > 50 && !l.contains(' '));
    match seed {
        Some(seed) => Ok(options.nkey(seed.to_string())),
        None => Err(fail(
            "neither a .creds file (user JWT and seed) nor an nkey user seed (SU…)".into(),
        )),
    }
}

fn check_file(variable: &'static str, path: &std::path::Path) -> Result<(), NatsError> {
    std::fs::metadata(path)
        .map(drop)
        .map_err(|e| NatsError::Credentials {
            variable,
            path: path.display().to_string(),
            reason: format!("cannot read it: {e}"),
        })
}

/// Connect options with the configured credentials and TLS settings.
pub fn connect_options(config: &NatsConfig) -> Result<async_nats::ConnectOptions, NatsError> {
    let auth = &config.auth;
    let mut options = async_nats::ConnectOptions::new()
        .name("nomnom")
        .connection_timeout(Duration::from_secs(5));
    if let Some(path) = &auth.creds {
        options = with_creds_file(options, path)?;
    }
    if let Some((user, password)) = &auth.user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &auth.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &auth.tls_ca {
        check_file("NATS_TLS_CA", ca)?;
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &auth.tls_client {
        check_file("NATS_TLS_CERT", cert)?;
        check_file("NATS_TLS_KEY", key)?;
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// Connects and returns a JetStream context.
pub async fn connect(config: &NatsConfig) -> Result<jetstream::Context, NatsError> {
    let client = connect_options(config)?
        .connect(servers(&config.url))
        .await
        .map_err(|e| NatsError::Connect {
            url: redact_url(&config.url),
            reason: connect_reason(&e),
        })?;
    Ok(jetstream::new(client))
}

/// Whether a TLS error (certificate or handshake) is somewhere in the error's chain.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// What a failed connect means, with a hint for the settings that fix it.
fn connect_reason(e: &async_nats::ConnectError) -> String {
    use async_nats::ConnectErrorKind as Kind;
    const TLS_HINT: &str = " (check NATS_TLS_CA, NATS_TLS_CERT and NATS_TLS_KEY)";
    let hint = match e.kind() {
        Kind::AuthorizationViolation | Kind::Authentication => {
            " (check NATS_CREDS, NATS_USER/NATS_PASSWORD or NATS_TOKEN)"
        }
        Kind::Tls => TLS_HINT,
        // A failed handshake arrives as an I/O error wrapping the TLS library's error.
        _ if is_tls_failure(e) => TLS_HINT,
        _ => "",
    };
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = s.source();
    }
    format!("{reason}{hint}")
}

/// How long stream setup at startup keeps trying through faults that pass: a JetStream API
/// request that timed out (a busy or restarting server), JetStream not answering yet, or a
/// cluster without a meta leader yet (10008).
const STREAM_SETUP_PATIENCE: Duration = Duration::from_secs(15);

/// `get_or_create_stream`, tried again while the fault is one that passes (see
/// [`STREAM_SETUP_PATIENCE`]); also when the server fails to create the store (10049):
/// nats-server 2.9 removes an account's empty stream directory when its last stream is deleted,
/// and a stream created at that moment fails to make its own directory. The last error is
/// returned as it came, with a hint when JetStream never answered.
pub async fn get_or_create_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, StreamSetupError> {
    use jetstream::context::CreateStreamErrorKind as Kind;
    let start = std::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let e = match js.get_or_create_stream(config.clone()).await {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        let passes = match e.kind() {
            Kind::TimedOut | Kind::JetStreamUnavailable => true,
            Kind::JetStream(ref j) => [
                jetstream::ErrorCode::STREAM_CREATE,
                jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE,
            ]
            .contains(&j.error_code()),
            _ => false,
        };
        if !passes || start.elapsed() + pause > STREAM_SETUP_PATIENCE {
            let waited = start.elapsed().as_secs();
            let hint = match e.kind() {
                Kind::JetStreamUnavailable => format!(
                    " (no JetStream answered in {waited} s of trying: is JetStream enabled on the server, e.g. `nats-server -js`, and does this user's account have it?)"
                ),
                Kind::TimedOut => format!(
                    " (JetStream did not answer in {waited} s of trying: a server under strain, or a user not allowed to publish to `$JS.API.>`)"
                ),
                _ => String::new(),
            };
            return Err(StreamSetupError { source: e, hint });
        }
        tracing::warn!(stream = %config.name, error = %e, "JetStream stream setup failed; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The epoch of a stream (see `runtime::Position`): when it was created, in microseconds since
/// 1970. A stream deleted and re-created has a later one, so positions keep increasing.
pub fn stream_epoch(stream: &jetstream::stream::Stream) -> i64 {
    let created = stream.cached_info().created;
    i64::try_from(created.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// Why a stream could not be created or read, worded for an operator.
#[derive(Debug, thiserror::Error)]
#[error("{source}{hint}")]
pub struct StreamSetupError {
    /// The last failure.
    source: jetstream::context::CreateStreamError,
    /// What to check, when the failure was one that passes and it did not pass.
    hint: String,
}

/// Creates the stream if absent: file storage, limits retention with nothing ever discarded by
/// a limit. What the worker has acknowledged leaves the stream when the worker trims it (a
/// purge below its consumer's ack floor, once a second), not one removal per ack: that is what
/// a work-queue stream does, and it cost nats-server a third of its time per message. A stream
/// created as a work queue by an earlier version is kept as it is (retention cannot change).
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<stream::Stream, NatsError> {
    let err = |e: &dyn std::fmt::Display| NatsError::Stream {
        stream: config.stream.clone(),
        reason: e.to_string(),
    };
    let limits = config.limits;
    let mut stream = get_or_create_stream(
        js,
        stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.stream)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            duplicate_window: config.duplicate_window,
            allow_direct: true,
            num_replicas: config.replicas,
            max_bytes: limits.max_bytes.unwrap_or(-1),
            max_age: limits.max_age.unwrap_or_default(),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| err(&e))?;
    // A stream created by an older version, by hand or under other limits: turn on what the
    // api relies on and apply the limits configured now.
    let current = stream.cached_info().config.clone();
    let wanted = stream::Config {
        allow_direct: true,
        duplicate_window: config.duplicate_window,
        max_bytes: limits.max_bytes.unwrap_or(-1),
        max_age: limits.max_age.unwrap_or_default(),
        ..current.clone()
    };
    if wanted.allow_direct != current.allow_direct
        || wanted.duplicate_window != current.duplicate_window
        || wanted.max_bytes != current.max_bytes
        || wanted.max_age != current.max_age
    {
        if let Some(max_age) = limits.max_age
            && (current.max_age.is_zero() || max_age < current.max_age)
        {
            refuse_removing_waiting(&mut stream, max_age)
                .await
                .map_err(|reason| NatsError::Stream {
                    stream: config.stream.clone(),
                    reason,
                })?;
        }
        js.update_stream(wanted).await.map_err(|e| err(&e))?;
        stream = js.get_stream(&config.stream).await.map_err(|e| err(&e))?;
    }
    Ok(stream)
}

/// Refuses a shorter `max_age` that would at once remove messages the stream holds: what the
/// workers finished is trimmed within a second, so the stream's oldest message is one no
/// worker has stored yet (or one a worker may not trim, which its log reports).
async fn refuse_removing_waiting(
    stream: &mut stream::Stream,
    max_age: Duration,
) -> Result<(), String> {
    match oldest_message(stream).await? {
        Some((oldest, messages)) if oldest >= max_age => Err(format!(
            "NATS_STREAM_MAX_AGE_SECS={} would remove messages waiting in the stream now (the oldest is {} s old, {messages} messages in all) before any worker stores them; let the workers drain the stream first, or give a longer age",
            max_age.as_secs(),
            oldest.as_secs(),
        )),
        _ => Ok(()),
    }
}

/// The age of the stream's oldest message and how many it holds; `None` when it is empty.
pub async fn oldest_message(
    stream: &mut stream::Stream,
) -> Result<Option<(Duration, u64)>, String> {
    let state = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .clone();
    if state.messages == 0 {
        return Ok(None);
    }
    let age = chrono::Utc::now().timestamp() - state.first_timestamp.unix_timestamp();
    Ok(Some((
        Duration::from_secs(u64::try_from(age).unwrap_or(0)),
        state.messages,
    )))
}

/// Whether messages waiting `oldest` are close enough to the stream's `max_age` (half of it)
/// that an operator must hear of it before the stream removes them.
pub fn nearing_max_age(oldest: Duration, max_age: Duration) -> bool {
    !max_age.is_zero() && oldest >= max_age / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_max_age_is_when_an_operator_hears_of_it() {
        let hour = Duration::from_secs(3600);
        assert!(!nearing_max_age(Duration::from_secs(1799), hour));
        assert!(nearing_max_age(Duration::from_secs(1800), hour));
        assert!(!nearing_max_age(
            Duration::from_secs(1_000_000),
            Duration::ZERO
        ));
    }

    #[test]
    fn urls_lose_their_passwords_and_tokens() {
        assert_eq!(
            redact_url("nats://api:s3cret@nats-0:4222, tls://tok3n@nats-1:4222,nats://nats-2"),
            "nats://api:***@nats-0:4222,tls://***@nats-1:4222,nats://nats-2"
        );
        assert_eq!(redact_url("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(redact_url("u:p@host"), "u:***@host");
    }
}
