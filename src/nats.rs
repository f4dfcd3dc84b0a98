//! JetStream setup shared by the api and the worker: one stream, one subject per entity.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::config::NatsConfig;

/// Connecting to NATS or setting up the stream failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL tried.
        url: String,
        /// Why.
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

/// Connects and returns a JetStream context.
pub async fn connect(config: &NatsConfig) -> Result<jetstream::Context, NatsError> {
    let client = async_nats::ConnectOptions::new()
        .name("nomnom")
        .connection_timeout(Duration::from_secs(5))
        .connect(servers(&config.url))
        .await
        .map_err(|e| NatsError::Connect {
            url: config.url.clone(),
            reason: e.to_string(),
        })?;
    Ok(jetstream::new(client))
}

/// Creates the stream if absent (file storage, work-queue retention: acked messages are removed).
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<stream::Stream, NatsError> {
    let err = |e: &dyn std::fmt::Display| NatsError::Stream {
        stream: config.stream.clone(),
        reason: e.to_string(),
    };
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.stream)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: config.duplicate_window,
            allow_direct: true,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    // A stream created by an older version or by hand: turn on what the api relies on.
    let current = stream.cached_info().config.clone();
    if !current.allow_direct || current.duplicate_window != config.duplicate_window {
        js.update_stream(stream::Config {
            allow_direct: true,
            duplicate_window: config.duplicate_window,
            ..current
        })
        .await
        .map_err(|e| err(&e))?;
        stream = js.get_stream(&config.stream).await.map_err(|e| err(&e))?;
    }
    Ok(stream)
}
