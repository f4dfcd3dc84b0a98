//! `MessageEnvelope`: what the api publishes to JetStream and the worker consumes. The envelope
//! (message id, entity, arrival time) travels in NATS headers and the payload is the body
//! exactly as the client sent it, so neither side encodes or scans JSON for the envelope.

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

/// Header carrying the message id.
pub const MESSAGE_ID_HEADER: HeaderName = HeaderName::from_static("Nomnom-Message-Id");
/// Header carrying the root entity name as written in YAML.
pub const ENTITY_HEADER: HeaderName = HeaderName::from_static("Nomnom-Entity");
/// Header carrying when the api accepted the message (RFC 3339, microseconds, UTC).
pub const RECEIVED_AT_HEADER: HeaderName = HeaderName::from_static("Nomnom-Received-At");

/// An accepted message: its id, entity, arrival time and the body exactly as received.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageEnvelope {
    /// Unique id, returned to the client (and the JetStream `Nats-Msg-Id` when it derives from
    /// an `Idempotency-Key`).
    pub message_id: Uuid,
    /// Root entity name as written in YAML (`Order`).
    pub entity: String,
    /// When the api accepted the message.
    pub received_at: DateTime<Utc>,
    /// The JSON body, byte for byte (numbers keep every digit).
    pub body: Bytes,
}

/// A JetStream message that is not an envelope nomnom wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable envelope: {0}")]
pub struct EnvelopeError(String);

/// The JSON envelope written before the envelope moved to headers; messages published by an
/// older api can still be in the stream after an upgrade.
#[derive(Deserialize)]
struct JsonEnvelope<'a> {
    message_id: Uuid,
    entity: String,
    received_at: DateTime<Utc>,
    #[serde(borrow)]
    body: &'a RawValue,
}

impl MessageEnvelope {
    /// An envelope around `body`, accepted now.
    pub fn new(message_id: Uuid, entity: &str, body: impl Into<Bytes>) -> Self {
        Self {
            message_id,
            entity: entity.to_string(),
            received_at: Utc::now(),
            body: body.into(),
        }
    }

    /// The JetStream publish of this message: envelope headers, the body as payload, and a
    /// `Nats-Msg-Id` when `dedup` (ids derived from an `Idempotency-Key`; a fresh random id
    /// cannot be a retry, and the dedup table costs the server time per message).
    pub fn to_publish(&self, dedup: bool) -> PublishMessage {
        PublishMessage::build()
            .headers(self.headers(dedup))
            .payload(self.body.clone())
    }

    /// The envelope headers (and `Nats-Msg-Id` when `dedup`).
    pub fn headers(&self, dedup: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let id = self.message_id.to_string();
        headers.insert(
            RECEIVED_AT_HEADER,
            self.received_at
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .as_str(),
        );
        headers.insert(ENTITY_HEADER, self.entity.as_str());
        if dedup {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        headers.insert(MESSAGE_ID_HEADER, id);
        headers
    }

    /// Reads a message from the stream: the envelope headers, or the JSON envelope of an
    /// older api when the headers are absent.
    pub fn decode(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<Self, EnvelopeError> {
        let Some(headers) = headers.filter(|h| h.get(MESSAGE_ID_HEADER).is_some()) else {
            return Self::decode_json(payload);
        };
        let header = |name: HeaderName| {
            headers
                .get(name.clone())
                .map(|v| v.as_str())
                .ok_or_else(|| EnvelopeError(format!("header {name} is missing")))
        };
        let id = header(MESSAGE_ID_HEADER)?;
        let message_id = Uuid::parse_str(id)
            .map_err(|_| EnvelopeError(format!("`{id}` is not a message id")))?;
        let entity = header(ENTITY_HEADER)?.to_string();
        let at = header(RECEIVED_AT_HEADER)?;
        let received_at = DateTime::parse_from_rfc3339(at)
            .map_err(|e| EnvelopeError(format!("received-at `{at}`: {e}")))?
            .with_timezone(&Utc);
        Ok(Self {
            message_id,
            entity,
            received_at,
            body: payload.clone(),
        })
    }

    fn decode_json(payload: &Bytes) -> Result<Self, EnvelopeError> {
        let e: JsonEnvelope<'_> =
            serde_json::from_slice(payload).map_err(|e| EnvelopeError(e.to_string()))?;
        Ok(Self {
            message_id: e.message_id,
            entity: e.entity,
            received_at: e.received_at,
            body: Bytes::copy_from_slice(e.body.get().as_bytes()),
        })
    }

    /// The body as text for a dead letter (lossy only if the bytes are not UTF-8, which the
    /// api never publishes).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_the_envelope_and_the_body_is_untouched() {
        let envelope = MessageEnvelope {
            message_id: Uuid::now_v7(),
            entity: "Order".into(),
            received_at: DateTime::parse_from_rfc3339("2026-12-02T07:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            body: Bytes::from_static(b"{ \"a\": 1.000000000000000000001 }\n"),
        };
        for dedup in [false, true] {
            let headers = envelope.headers(dedup);
            let decoded = MessageEnvelope::decode(Some(&headers), &envelope.body).unwrap();
            assert_eq!(decoded, envelope);
            let msg_id = headers.get(async_nats::header::NATS_MESSAGE_ID);
            assert_eq!(msg_id.is_some(), dedup);
        }
        let mut headers = envelope.headers(false);
        assert_eq!(
            headers.get(RECEIVED_AT_HEADER).map(|v| v.as_str()),
            Some("2026-12-02T07:00:00.123456Z")
        );
        headers.insert(RECEIVED_AT_HEADER, "yesterday");
        assert!(
            MessageEnvelope::decode(Some(&headers), &envelope.body)
                .unwrap_err()
                .to_string()
                .contains("received-at")
        );
    }

    #[test]
    fn json_envelopes_of_an_older_api_still_decode() {
        let id = Uuid::new_v4();
        let old = format!(
            r#"{{"message_id":"{id}","entity":"Order","received_at":"2024-01-01T00:00:00Z","body":{{ "a": 1.000000000000000000001 }}}}"#
        );
        let e = MessageEnvelope::decode(None, &Bytes::from(old)).unwrap();
        assert_eq!((e.message_id, e.entity.as_str()), (id, "Order"));
        assert_eq!(&e.body[..], b"{ \"a\": 1.000000000000000000001 }");
        assert!(MessageEnvelope::decode(None, &Bytes::from_static(b"{\"a\":1}")).is_err());
    }
}
