//! `MessageEnvelope`: what the api publishes to JetStream and the worker consumes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// An accepted message: its id, entity, arrival time and the body exactly as received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageEnvelope {
    /// Unique id, returned to the client and used as the JetStream `Nats-Msg-Id`.
    pub message_id: Uuid,
    /// Root entity name as written in YAML (`Order`).
    pub entity: String,
    /// When the api accepted the message.
    pub received_at: DateTime<Utc>,
    /// The JSON body, byte for byte (numbers keep every digit).
    pub body: Box<RawValue>,
}

impl MessageEnvelope {
    /// Serializes to JSON bytes for publishing.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses JSON bytes from JetStream.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
