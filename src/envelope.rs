//! `MessageEnvelope`: what the api publishes to JetStream and the worker consumes. The payload
//! is the body exactly as the client sent it, so neither side encodes or scans JSON for the
//! envelope. The rest travels as cheaply as it can: a message with a fresh time-ordered id
//! (the api's default) needs nothing beyond its subject, `<stream>.<entity>.<message id>`, whose
//! id carries the arrival time to the millisecond; any other message (ids derived from an
//! `Idempotency-Key` or a file line, replays) carries the envelope in NATS headers.
//!
//! Messages with fresh ids that arrive together share one JetStream message, a *group*
//! ([`MessageGroup`]): the bodies one after another, their lengths in one header, the subject
//! named by the first member's id, and member `i`'s id that id with `i` in its last byte. Every
//! cost JetStream has per message (storing, acking, delivering, the subject's index) is then
//! paid once per group.
//!
//! Bulk loads travel as *chunks* ([`MessageChunk`]): many rows of one entity in one JetStream
//! message with the envelope in headers and each row's source line and length in one more. The
//! worker stores a chunk with one status row (per run of its members it wrote), so a loaded
//! row costs neither a JetStream message nor a status row of its own. Member `i`'s id is the
//! chunk's id with `i` in its last two bytes ([`chunk_member_id`]).
//!
//! Every message, group and chunk carries the [`SchemaVersion`] it was checked against (one
//! header, [`SCHEMA_HEADER`]): a worker of another version does not dead-letter a message only
//! because its own rules refuse it (see `worker::batch`).

use async_nats::HeaderMap;
use async_nats::header::HeaderName;
use async_nats::jetstream::message::PublishMessage;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::generated::RootEntity;
use crate::runtime::Position;

/// Header carrying the message id.
pub const MESSAGE_ID_HEADER: HeaderName = HeaderName::from_static("Nomnom-Message-Id");
/// Header carrying the root entity name as written in YAML.
pub const ENTITY_HEADER: HeaderName = HeaderName::from_static("Nomnom-Entity");
/// Header carrying when the api accepted the message (RFC 3339, microseconds, UTC).
pub const RECEIVED_AT_HEADER: HeaderName = HeaderName::from_static("Nomnom-Received-At");
/// Header of a group: the byte length of each member's body, in order, space-separated.
pub const GROUP_LENGTHS_HEADER: HeaderName = HeaderName::from_static("Nomnom-Group-Lengths");
/// Header of a replayed copy of a dead letter: where the original first arrived
/// (`epoch:sequence`, see [`Position`]); the copy is ordered by it, not by its own.
pub const REPLAY_OF_HEADER: HeaderName = HeaderName::from_static("Nomnom-Replay-Of");
/// Header carrying the [`SchemaVersion`] a message was checked against.
pub const SCHEMA_HEADER: HeaderName = HeaderName::from_static("Nomnom-Schema");
/// Room the headers of a dead letter take at most, besides the body (`worker::dead_letter`):
/// the api keeps single bodies this far below the server's `max_payload`, so every accepted
/// message can be dead-lettered whole.
pub const DEAD_LETTER_HEADROOM: usize = 4096;
/// Most members of one group: a member's index is the last byte of its id.
pub const MAX_GROUP_MEMBERS: usize = 256;
/// Header of a chunk: each member's line in its source and its body's byte length,
/// `line:length`, space-separated, in member order.
pub const CHUNK_ROWS_HEADER: HeaderName = HeaderName::from_static("Nomnom-Chunk-Rows");
/// Most members of one chunk: a member's index is the last two bytes of its id.
pub const MAX_CHUNK_MEMBERS: usize = 1 << 16;
/// Most rows the loader and the api put in one chunk.
pub const CHUNK_ROWS: usize = 4096;
/// Most bytes of bodies in one chunk (a row larger than this goes in a chunk alone). Fixed, not
/// a setting: the loader's chunk boundaries must be the same on every run over the same file.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// The version of a schema: the digest of a build's schema ledger, as
/// [`crate::generated::SCHEMA_VERSION`] spells it (16 hexadecimal digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SchemaVersion(u64);

impl SchemaVersion {
    /// The version this build checks and parses against.
    pub fn own() -> Self {
        static OWN: std::sync::LazyLock<SchemaVersion> = std::sync::LazyLock::new(|| {
            SchemaVersion::parse(crate::generated::SCHEMA_VERSION)
                .expect("the generated SCHEMA_VERSION is 16 hexadecimal digits")
        });
        *OWN
    }

    /// Reads a version written as 16 hexadecimal digits.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(Self)
    }

    /// Whether this is the version this build checks and parses against.
    pub fn is_own(self) -> bool {
        self == Self::own()
    }
}

impl SchemaVersion {
    /// Puts this version in `headers` ([`SCHEMA_HEADER`]): this build's own as the generated
    /// constant, so the publish of every message allocates nothing for it.
    pub fn insert_into(self, headers: &mut HeaderMap) {
        if self.is_own() {
            headers.insert(SCHEMA_HEADER, crate::generated::SCHEMA_VERSION);
        } else {
            headers.insert(SCHEMA_HEADER, self.to_string());
        }
    }
}

impl std::fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The schema version a stream message says it was checked against (none from an older api,
/// or a replayed dead letter, which the current rules judge).
fn schema_of(headers: Option<&HeaderMap>) -> Result<Option<SchemaVersion>, EnvelopeError> {
    match headers.and_then(|h| h.get(SCHEMA_HEADER)) {
        None => Ok(None),
        Some(v) => SchemaVersion::parse(v.as_str()).map(Some).ok_or_else(|| {
            EnvelopeError(format!(
                "{SCHEMA_HEADER} `{}` is not a schema version",
                v.as_str().chars().take(32).collect::<String>()
            ))
        }),
    }
}

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
    /// Set on a replayed copy of a dead letter, or a held message sent again: where the
    /// original first arrived.
    pub replay_of: Option<Position>,
    /// The schema version it was checked against, if it says (see [`SCHEMA_HEADER`]).
    pub schema: Option<SchemaVersion>,
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

/// The time a time-ordered (v7) id was made, to the millisecond (its first 48 bits).
pub fn id_time(id: &Uuid) -> Option<DateTime<Utc>> {
    if id.get_version() != Some(uuid::Version::SortRand) {
        return None;
    }
    let b = id.as_bytes();
    let millis = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
    DateTime::from_timestamp_millis(i64::try_from(millis).ok()?)
}

/// Several accepted messages of one entity published as one JetStream message (see the module
/// documentation): member `i` has the id [`member_id`]`(first_id, i)`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageGroup {
    /// The first member's id: time-ordered, last byte zero; the group's subject names it.
    pub first_id: Uuid,
    /// The bodies, byte for byte, in member order.
    pub bodies: Vec<Bytes>,
}

/// A fresh time-ordered id for the first member of a group (its last byte zero).
pub fn new_group_id() -> Uuid {
    group_id(&Uuid::now_v7())
}

/// The id of the group `id` would belong to: `id` with its last byte zero.
pub fn group_id(id: &Uuid) -> Uuid {
    let mut bytes = *id.as_bytes();
    bytes[15] = 0;
    Uuid::from_bytes(bytes)
}

/// The id of member `index` (below [`MAX_GROUP_MEMBERS`]) of the group whose first id is
/// `first_id`.
pub fn member_id(first_id: &Uuid, index: usize) -> Uuid {
    debug_assert!(index < MAX_GROUP_MEMBERS);
    let mut bytes = *first_id.as_bytes();
    bytes[15] = index as u8;
    Uuid::from_bytes(bytes)
}

/// The id of member `index` (below [`MAX_CHUNK_MEMBERS`]) of the chunk `chunk_id` (whose last
/// two bytes are zero).
pub fn chunk_member_id(chunk_id: &Uuid, index: usize) -> Uuid {
    debug_assert!(index < MAX_CHUNK_MEMBERS);
    let mut bytes = *chunk_id.as_bytes();
    bytes[14..].copy_from_slice(&(index as u16).to_be_bytes());
    Uuid::from_bytes(bytes)
}

/// The chunk id and member index `id` would have as a chunk's member (its last two bytes).
pub fn chunk_of(id: &Uuid) -> (Uuid, usize) {
    let mut bytes = *id.as_bytes();
    let index = u16::from_be_bytes([bytes[14], bytes[15]]);
    bytes[14] = 0;
    bytes[15] = 0;
    (Uuid::from_bytes(bytes), usize::from(index))
}

/// A fresh time-ordered chunk id (its last two bytes zero).
pub fn new_chunk_id() -> Uuid {
    chunk_of(&Uuid::now_v7()).0
}

/// Many rows of one entity published as one JetStream message (see the module documentation):
/// member `i` has the id [`chunk_member_id`]`(id, i)`; later members are newer.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageChunk {
    /// The chunk's id (last two bytes zero); also its `Nats-Msg-Id`.
    pub id: Uuid,
    /// Root entity name as written in YAML.
    pub entity: String,
    /// When it was accepted.
    pub received_at: DateTime<Utc>,
    /// Each member's line in its source (file or request body), for reports.
    pub lines: Vec<u64>,
    /// The bodies, byte for byte, in member order.
    pub bodies: Vec<Bytes>,
    /// The schema version its rows were checked against, if it says.
    pub schema: Option<SchemaVersion>,
}

impl MessageChunk {
    /// The JetStream publish of this chunk, to be sent to the [`message_subject`] of its id:
    /// the bodies one after another, the envelope and the rows' lines and lengths in headers,
    /// `Nats-Msg-Id` its id (a chunk re-sent after a failure is stored once).
    ///
    /// [`message_subject`]: crate::nats::message_subject
    pub fn to_publish(&self) -> PublishMessage {
        let (payload, headers) = self.parts();
        PublishMessage::build().payload(payload).headers(headers)
    }

    /// The payload and headers of [`MessageChunk::to_publish`].
    pub fn parts(&self) -> (Bytes, HeaderMap) {
        let total = self.bodies.iter().map(Bytes::len).sum();
        let mut payload = bytes::BytesMut::with_capacity(total);
        let mut rows = String::with_capacity(self.bodies.len() * 12);
        for (body, line) in self.bodies.iter().zip(&self.lines) {
            payload.extend_from_slice(body);
            if !rows.is_empty() {
                rows.push(' ');
            }
            rows.push_str(&format!("{line}:{}", body.len()));
        }
        let mut envelope = MessageEnvelope::new(self.id, &self.entity, Bytes::new());
        envelope.schema = self.schema;
        let mut headers = envelope.headers(true);
        headers.insert(
            RECEIVED_AT_HEADER,
            self.received_at
                .to_rfc3339_opts(SecondsFormat::Micros, true)
                .as_str(),
        );
        headers.insert(CHUNK_ROWS_HEADER, rows);
        (payload.freeze(), headers)
    }

    /// Bytes the publish of `bodies` with these `lines` takes beyond the bodies (headers).
    pub fn overhead(members: usize) -> usize {
        // The envelope headers, then up to 20 digits of line and 8 of length per member.
        512 + members * 30
    }

    /// Reads a chunk from the stream: `None` if the message is not one (no rows header).
    pub fn decode(
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &Bytes,
    ) -> Option<Result<Self, EnvelopeError>> {
        let headers = headers?;
        let rows = headers.get(CHUNK_ROWS_HEADER)?.as_str();
        Some(Self::decode_rows(subject, headers, rows, payload))
    }

    fn decode_rows(
        subject: &str,
        headers: &HeaderMap,
        rows: &str,
        payload: &Bytes,
    ) -> Result<Self, EnvelopeError> {
        let envelope = MessageEnvelope::decode(subject, Some(headers), &Bytes::new())?;
        let (id, first) = chunk_of(&envelope.message_id);
        if first != 0 {
            return Err(EnvelopeError(format!(
                "`{}` is not the id of a chunk",
                envelope.message_id
            )));
        }
        let bad = || {
            EnvelopeError(format!(
                "chunk rows `{}` do not fit a payload of {} bytes",
                rows.chars().take(64).collect::<String>(),
                payload.len()
            ))
        };
        let mut lines = Vec::new();
        let mut bodies = Vec::new();
        let mut at = 0usize;
        for row in rows.split(' ') {
            let (line, length) = row.split_once(':').ok_or_else(bad)?;
            let line: u64 = line.parse().map_err(|_| bad())?;
            let length: usize = length
                .parse()
                .ok()
                .filter(|l| *l <= payload.len() - at && bodies.len() < MAX_CHUNK_MEMBERS)
                .ok_or_else(bad)?;
            lines.push(line);
            bodies.push(payload.slice(at..at + length));
            at += length;
        }
        if at != payload.len() {
            return Err(bad());
        }
        Ok(Self {
            id,
            entity: envelope.entity,
            received_at: envelope.received_at,
            lines,
            bodies,
            schema: envelope.schema,
        })
    }

    /// The members as accepted messages (for reading one member's body again, or its status
    /// while it waits in the stream).
    pub fn members(&self) -> Vec<MessageEnvelope> {
        self.bodies
            .iter()
            .enumerate()
            .map(|(i, body)| MessageEnvelope {
                message_id: chunk_member_id(&self.id, i),
                entity: self.entity.clone(),
                received_at: self.received_at,
                body: body.clone(),
                replay_of: None,
                schema: self.schema,
            })
            .collect()
    }
}

impl MessageGroup {
    /// The JetStream publish of this group, to be sent to the [`message_subject`] of its
    /// first id. A group of one is an ordinary message whose subject carries its envelope.
    /// Groups are made by the api, so they carry this build's [`SchemaVersion`].
    ///
    /// [`message_subject`]: crate::nats::message_subject
    pub fn to_publish(&self) -> PublishMessage {
        let (payload, headers) = self.parts();
        PublishMessage::build().payload(payload).headers(headers)
    }

    /// The payload and headers of [`MessageGroup::to_publish`].
    pub fn parts(&self) -> (Bytes, HeaderMap) {
        let mut headers = HeaderMap::new();
        SchemaVersion::own().insert_into(&mut headers);
        if let [body] = &self.bodies[..] {
            return (body.clone(), headers);
        }
        let total = self.bodies.iter().map(Bytes::len).sum();
        let mut payload = bytes::BytesMut::with_capacity(total);
        let mut lengths = String::with_capacity(self.bodies.len() * 5);
        for body in &self.bodies {
            payload.extend_from_slice(body);
            if !lengths.is_empty() {
                lengths.push(' ');
            }
            lengths.push_str(&body.len().to_string());
        }
        headers.insert(GROUP_LENGTHS_HEADER, lengths);
        (payload.freeze(), headers)
    }

    /// The members of a group read from the stream (`subject` names the first id, `lengths`
    /// is the [`GROUP_LENGTHS_HEADER`]), as envelopes whose bodies share `payload`.
    fn decode(
        subject: &str,
        lengths: &str,
        schema: Option<SchemaVersion>,
        payload: &Bytes,
    ) -> Result<Vec<MessageEnvelope>, EnvelopeError> {
        let mut tokens = subject.rsplitn(3, '.');
        let (id, snake) = (tokens.next().unwrap_or(""), tokens.next().unwrap_or(""));
        let first_id = Uuid::parse_str(id)
            .ok()
            .filter(|id| group_id(id) == *id)
            .ok_or_else(|| EnvelopeError(format!("`{id}` is not the id of a group")))?;
        let received_at = id_time(&first_id)
            .ok_or_else(|| EnvelopeError(format!("`{id}` is not a time-ordered id")))?;
        let entity = RootEntity::from_name(snake).map_or(snake, |e| e.name());
        let mut members = Vec::new();
        let mut at = 0usize;
        for length in lengths.split(' ') {
            let length: usize = length
                .parse()
                .ok()
                .filter(|l| *l <= payload.len() - at && members.len() < MAX_GROUP_MEMBERS)
                .ok_or_else(|| {
                    EnvelopeError(format!(
                        "group lengths `{lengths}` do not fit a payload of {} bytes",
                        payload.len()
                    ))
                })?;
            members.push(MessageEnvelope {
                message_id: member_id(&first_id, members.len()),
                entity: entity.to_string(),
                received_at,
                body: payload.slice(at..at + length),
                replay_of: None,
                schema,
            });
            at += length;
        }
        if at != payload.len() {
            return Err(EnvelopeError(format!(
                "group lengths `{lengths}` leave {} of {} payload bytes unread",
                payload.len() - at,
                payload.len()
            )));
        }
        Ok(members)
    }
}

impl MessageEnvelope {
    /// An envelope around `body`: accepted when a time-ordered `message_id` was made (its
    /// time), else now (to the microsecond: what the header and PostgreSQL keep).
    pub fn new(message_id: Uuid, entity: &str, body: impl Into<Bytes>) -> Self {
        Self {
            message_id,
            entity: entity.to_string(),
            received_at: id_time(&message_id).unwrap_or_else(|| Utc::now().trunc_subsecs(6)),
            body: body.into(),
            replay_of: None,
            schema: Some(SchemaVersion::own()),
        }
    }

    /// Whether the publish needs envelope headers: with `dedup` (for `Nats-Msg-Id`), or when
    /// the subject alone does not carry the envelope (an id that is not time-ordered, or not
    /// made when the message arrived).
    pub fn needs_headers(&self, dedup: bool) -> bool {
        dedup || self.replay_of.is_some() || id_time(&self.message_id) != Some(self.received_at)
    }

    /// The JetStream publish of this message, to be sent to its [`message_subject`]: the body
    /// as payload, with the envelope in headers unless the subject carries it, and a
    /// `Nats-Msg-Id` when `dedup` (ids derived from an `Idempotency-Key`; a fresh id cannot be
    /// a retry, and the dedup table costs the server time per message); its schema version in
    /// any case.
    ///
    /// [`message_subject`]: crate::nats::message_subject
    pub fn to_publish(&self, dedup: bool) -> PublishMessage {
        let publish = PublishMessage::build().payload(self.body.clone());
        if self.needs_headers(dedup) {
            publish.headers(self.headers(dedup))
        } else {
            let mut headers = HeaderMap::new();
            if let Some(schema) = self.schema {
                schema.insert_into(&mut headers);
            }
            publish.headers(headers)
        }
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
        if let Some(position) = self.replay_of {
            headers.insert(REPLAY_OF_HEADER, position.to_string());
        }
        if let Some(schema) = self.schema {
            schema.insert_into(&mut headers);
        }
        headers.insert(MESSAGE_ID_HEADER, id);
        headers
    }

    /// Reads every accepted message a stream message carries: the members of a group or of a
    /// chunk, or the one message [`MessageEnvelope::decode`] reads.
    pub fn decode_all(
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &Bytes,
    ) -> Result<Vec<Self>, EnvelopeError> {
        if let Some(chunk) = MessageChunk::decode(subject, headers, payload) {
            return chunk.map(|c| c.members());
        }
        match headers.and_then(|h| h.get(GROUP_LENGTHS_HEADER)) {
            Some(lengths) => {
                MessageGroup::decode(subject, lengths.as_str(), schema_of(headers)?, payload)
            }
            None => Self::decode(subject, headers, payload).map(|e| vec![e]),
        }
    }

    /// Reads a message from the stream that is not a group: the envelope headers; without
    /// them, the subject (a time-ordered id), or the JSON envelope of an older api.
    pub fn decode(
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &Bytes,
    ) -> Result<Self, EnvelopeError> {
        let schema = schema_of(headers)?;
        let Some(headers) = headers.filter(|h| h.get(MESSAGE_ID_HEADER).is_some()) else {
            return Self::decode_headerless(subject, payload).map(|e| Self { schema, ..e });
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
        let replay_of = match headers.get(REPLAY_OF_HEADER) {
            None => None,
            Some(v) => Some(Position::parse(v.as_str()).ok_or_else(|| {
                EnvelopeError(format!(
                    "{REPLAY_OF_HEADER} `{}` is not a position",
                    v.as_str()
                ))
            })?),
        };
        Ok(Self {
            message_id,
            entity,
            received_at,
            body: payload.clone(),
            replay_of,
            schema,
        })
    }

    /// A message without envelope headers: its subject names the entity and a time-ordered
    /// id; an older api's JSON envelope names the same id first thing.
    fn decode_headerless(subject: &str, payload: &Bytes) -> Result<Self, EnvelopeError> {
        let mut tokens = subject.rsplitn(3, '.');
        let (id, snake) = (tokens.next(), tokens.next());
        let from_subject = id
            .and_then(|id| Uuid::parse_str(id).ok())
            .and_then(|id| Some((id, id_time(&id)?)));
        let Some((message_id, received_at)) = from_subject else {
            return Self::decode_json(payload);
        };
        // An older api's envelope starts `{"message_id":"<this id>"`; the id is formatted into a
        // stack buffer, so finding out costs no allocation per message.
        const KEY: &[u8] = b"{\"message_id\":\"";
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id_text = message_id.hyphenated().encode_lower(&mut text).as_bytes();
        if payload
            .strip_prefix(KEY)
            .is_some_and(|rest| rest.starts_with(id_text))
        {
            return Self::decode_json(payload);
        }
        let snake = snake.unwrap_or("");
        let entity = RootEntity::from_name(snake).map_or(snake, |e| e.name());
        Ok(Self {
            message_id,
            entity: entity.to_string(),
            received_at,
            body: payload.clone(),
            replay_of: None,
            schema: None,
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
            replay_of: None,
            schema: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entity of whatever schema this is built from (the envelope is entity-agnostic).
    const ENTITY: crate::generated::RootEntity = crate::generated::RootEntity::ALL[0];

    const SUBJECT_STREAM: &str = "NOMNOM";

    fn subject(id: &Uuid) -> String {
        crate::nats::message_subject(SUBJECT_STREAM, ENTITY.snake_name(), id)
    }

    #[test]
    fn headers_carry_the_envelope_and_the_body_is_untouched() {
        let envelope = MessageEnvelope {
            message_id: Uuid::now_v7(),
            entity: ENTITY.name().into(),
            received_at: DateTime::parse_from_rfc3339("2026-12-02T07:00:00.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            body: Bytes::from_static(b"{ \"a\": 1.000000000000000000001 }\n"),
            replay_of: None,
            schema: Some(SchemaVersion::own()),
        };
        let subject = subject(&envelope.message_id);
        for dedup in [false, true] {
            assert!(
                envelope.needs_headers(dedup),
                "the id's time is not the arrival"
            );
            let headers = envelope.headers(dedup);
            let decoded = MessageEnvelope::decode(&subject, Some(&headers), &envelope.body);
            assert_eq!(decoded.unwrap(), envelope);
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
            MessageEnvelope::decode(&subject, Some(&headers), &envelope.body)
                .unwrap_err()
                .to_string()
                .contains("received-at")
        );
    }

    #[test]
    fn a_fresh_time_ordered_id_travels_in_the_subject_alone() {
        let before = Utc::now().timestamp_millis();
        let body = Bytes::from_static(br#"{"message_id":"not the envelope","a":1}"#);
        let envelope = MessageEnvelope::new(Uuid::now_v7(), ENTITY.name(), body.clone());
        let at = envelope.received_at.timestamp_millis();
        assert!(at >= before && at <= Utc::now().timestamp_millis(), "{at}");
        assert!(!envelope.needs_headers(false));
        assert!(envelope.needs_headers(true), "Nats-Msg-Id is a header");
        let mut headers = HeaderMap::new();
        SchemaVersion::own().insert_into(&mut headers);
        let decoded =
            MessageEnvelope::decode(&subject(&envelope.message_id), Some(&headers), &body);
        assert_eq!(decoded.unwrap(), envelope);
        // An older api's message says no version.
        let older = MessageEnvelope::decode(&subject(&envelope.message_id), None, &body).unwrap();
        assert_eq!(older.schema, None);
        assert_eq!(older.message_id, envelope.message_id);
        // A version that is not one makes the message unreadable, not silently unversioned.
        headers.insert(SCHEMA_HEADER, "v2");
        let bad = MessageEnvelope::decode(&subject(&envelope.message_id), Some(&headers), &body);
        assert!(bad.unwrap_err().to_string().contains("Nomnom-Schema `v2`"));
        // Ids that carry no time are stamped now and need their headers.
        let derived = MessageEnvelope::new(
            Uuid::new_v5(&Uuid::NAMESPACE_OID, b"k"),
            ENTITY.name(),
            body,
        );
        assert!(derived.needs_headers(false));
    }

    #[test]
    fn a_schema_version_reads_back_as_written() {
        let own = SchemaVersion::own();
        assert_eq!(own.to_string(), crate::generated::SCHEMA_VERSION);
        assert_eq!(SchemaVersion::parse(&own.to_string()), Some(own));
        assert!(own.is_own());
        let other = SchemaVersion::parse("00000000000000ff").unwrap();
        assert_eq!(other.to_string(), "00000000000000ff");
        assert!(!other.is_own() || crate::generated::SCHEMA_VERSION == "00000000000000ff");
        for bad in [
            "",
            "ff",
            "0000000000000000f",
            "zzzzzzzzzzzzzzzz",
            "+00000000000000f",
        ] {
            assert_eq!(SchemaVersion::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_group_carries_its_members_bodies_byte_for_byte() {
        let bodies: Vec<Bytes> = vec![
            Bytes::from_static(b"{\"a\": 1.000000000000000000001}"),
            Bytes::from_static(b"{\n  \"b\": \"two words\"\n}\n"),
            Bytes::from_static(b"{}"),
        ];
        let group = MessageGroup {
            first_id: new_group_id(),
            bodies: bodies.clone(),
        };
        assert_eq!(group.first_id.as_bytes()[15], 0);
        let (payload, headers) = group.parts();
        assert_eq!(
            headers.get(GROUP_LENGTHS_HEADER).map(|v| v.as_str()),
            Some("30 23 2")
        );
        let members =
            MessageEnvelope::decode_all(&subject(&group.first_id), Some(&headers), &payload)
                .unwrap();
        assert_eq!(members.len(), 3);
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.message_id, member_id(&group.first_id, i));
            assert_eq!(group_id(&m.message_id), group.first_id);
            assert_eq!(m.entity, ENTITY.name());
            assert_eq!(Some(m.received_at), id_time(&group.first_id));
            assert_eq!(m.body, bodies[i]);
        }
        // A group of one is an ordinary message under its own id.
        let single = MessageGroup {
            first_id: group.first_id,
            bodies: vec![bodies[0].clone()],
        };
        let (payload, headers) = single.parts();
        assert!(headers.get(GROUP_LENGTHS_HEADER).is_none());
        let decoded =
            MessageEnvelope::decode_all(&subject(&group.first_id), Some(&headers), &payload)
                .unwrap();
        assert_eq!(decoded, vec![members[0].clone()]);
        assert_eq!(decoded[0].schema, Some(SchemaVersion::own()));
    }

    #[test]
    fn group_lengths_that_do_not_fit_the_payload_are_refused() {
        let id = new_group_id();
        let payload = Bytes::from_static(b"{}{\"a\":1}");
        let read = |lengths: &str, subject: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(GROUP_LENGTHS_HEADER, lengths);
            MessageEnvelope::decode_all(subject, Some(&headers), &payload)
        };
        assert_eq!(read("2 7", &subject(&id)).unwrap().len(), 2);
        for lengths in [
            "2 8",
            "2 6",
            "",
            "2  7",
            "-2 11",
            "2 x",
            "99999999999999999999999",
        ] {
            let e = read(lengths, &subject(&id)).unwrap_err().to_string();
            assert!(e.contains("group lengths"), "{lengths}: {e}");
        }
        let too_many = vec!["0"; MAX_GROUP_MEMBERS + 1].join(" ") + " 9";
        assert!(read(&too_many, &subject(&id)).is_err());
        // The subject must name a group id: time-ordered, last byte zero.
        assert!(read("2 7", &subject(&member_id(&id, 1))).is_err());
        assert!(read("2 7", &subject(&group_id(&Uuid::new_v4()))).is_err());
        assert!(read("2 7", "NOMNOM.order.x").is_err());
    }

    #[test]
    fn a_chunk_carries_its_rows_lines_and_bodies_and_its_members_ids_resolve_to_it() {
        let id = new_chunk_id();
        assert_eq!(&id.as_bytes()[14..], &[0, 0]);
        let chunk = MessageChunk {
            id,
            entity: ENTITY.name().into(),
            received_at: Utc::now().trunc_subsecs(6),
            lines: vec![3, 4, 9],
            bodies: vec![
                Bytes::from_static(b"{\"a\": 1.000000000000000000001}"),
                Bytes::from_static(b"{\n  \"b\": 2\n}"),
                Bytes::from_static(b"{}"),
            ],
            schema: Some(SchemaVersion::own()),
        };
        let (payload, headers) = chunk.parts();
        assert_eq!(
            headers.get(CHUNK_ROWS_HEADER).map(|v| v.as_str()),
            Some("3:30 4:12 9:2")
        );
        assert_eq!(
            headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_string()),
            Some(id.to_string())
        );
        let subject = subject(&id);
        let decoded = MessageChunk::decode(&subject, Some(&headers), &payload)
            .expect("a chunk")
            .expect("readable");
        assert_eq!(decoded, chunk);
        let members = MessageEnvelope::decode_all(&subject, Some(&headers), &payload).unwrap();
        assert_eq!(members.len(), 3);
        for (i, m) in members.iter().enumerate() {
            assert_eq!(m.message_id, chunk_member_id(&id, i));
            assert_eq!(chunk_of(&m.message_id), (id, i));
            assert_eq!(m.body, chunk.bodies[i]);
        }
        assert_eq!(chunk_of(&chunk_member_id(&id, 65_535)), (id, 65_535));
        // Rows that do not fit the payload, or a member's id as the chunk's, are refused.
        for rows in [
            "3:30 4:12 9:3",
            "3:30 4:12",
            "3:30 4:12 x:2",
            "3:30 4:12 9",
            "",
        ] {
            let mut h = headers.clone();
            h.insert(CHUNK_ROWS_HEADER, rows);
            let e = MessageChunk::decode(&subject, Some(&h), &payload).unwrap();
            assert!(e.is_err(), "{rows}");
        }
        let mut h = headers.clone();
        h.insert(
            MESSAGE_ID_HEADER,
            chunk_member_id(&id, 1).to_string().as_str(),
        );
        assert!(
            MessageChunk::decode(&subject, Some(&h), &payload)
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn json_envelopes_of_an_older_api_still_decode() {
        for id in [Uuid::new_v4(), Uuid::now_v7()] {
            let old = format!(
                r#"{{"message_id":"{id}","entity":"{entity}","received_at":"2024-01-01T00:00:00Z","body":{{ "a": 1.000000000000000000001 }}}}"#,
                entity = ENTITY.name()
            );
            let e = MessageEnvelope::decode(&subject(&id), None, &Bytes::from(old)).unwrap();
            assert_eq!((e.message_id, e.entity.as_str()), (id, ENTITY.name()));
            assert_eq!(e.received_at.to_rfc3339(), "2024-01-01T00:00:00+00:00");
            assert_eq!(&e.body[..], b"{ \"a\": 1.000000000000000000001 }");
        }
        let plain = Bytes::from_static(b"{\"a\":1}");
        assert!(MessageEnvelope::decode("NOMNOM.order.x", None, &plain).is_err());
        assert!(MessageEnvelope::decode(&subject(&Uuid::new_v4()), None, &plain).is_err());
    }
}
