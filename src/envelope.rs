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
    /// Encodes an envelope around a body that is already known to be valid JSON, without
    /// parsing or re-serializing the body (the api's hot path).
    pub fn encode_with_body(
        message_id: Uuid,
        entity: &str,
        received_at: DateTime<Utc>,
        body_json: &[u8],
    ) -> Vec<u8> {
        let head = serde_json::json!({
            "message_id": message_id,
            "entity": entity,
            "received_at": received_at,
        })
        .to_string();
        let mut out = Vec::with_capacity(head.len() + body_json.len() + 10);
        // `head` is `{...}`: reopen it and append `"body":<body>}`.
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(b",\"body\":");
        out.extend_from_slice(body_json);
        out.push(b'}');
        out
    }

    /// Parses JSON bytes from JetStream.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_envelope_round_trips_with_the_body_verbatim() {
        let id = Uuid::new_v4();
        let at = Utc::now();
        let body = b"{ \"a\": 1.000000000000000000001 }\n";
        let bytes = MessageEnvelope::encode_with_body(id, "Order", at, body);
        let e = MessageEnvelope::from_bytes(&bytes).expect("valid envelope");
        assert_eq!(
            (e.message_id, e.entity.as_str(), e.received_at),
            (id, "Order", at)
        );
        assert_eq!(e.body.get(), "{ \"a\": 1.000000000000000000001 }");
    }
}
