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

/// The subject a root entity's messages are published to: `<stream>.<entity_snake>`.
pub fn subject_for(stream: &str, entity_snake: &str) -> String {
    format!("{stream}.{entity_snake}")
}

/// Connects and returns a JetStream context.
pub async fn connect(config: &NatsConfig) -> Result<jetstream::Context, NatsError> {
    let client = async_nats::ConnectOptions::new()
        .name("nomnom")
        .connection_timeout(Duration::from_secs(5))
        .connect(&config.url)
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
    js.get_or_create_stream(stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.stream)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: config.duplicate_window,
        ..Default::default()
    })
    .await
    .map_err(|e| NatsError::Stream {
        stream: config.stream.clone(),
        reason: e.to_string(),
    })
}
