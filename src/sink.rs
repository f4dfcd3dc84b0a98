//! The seam between the worker and the store it writes to.
//!
//! The worker's guarantees rest on three operations of a [`Sink`]: a batch's rows are written
//! together with one status row per message in one atomic step (so a redelivered message is
//! recognised and not written twice), a dead letter is recorded with its status, and every
//! error says whether retrying can help ([`SinkError::kind`]). PostgreSQL
//! ([`crate::db::PgSink`]) is the one implementation; docs/ARCHITECTURE.md says what a second
//! one needs.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::generated::ParsedMessage;
use crate::runtime::{Position, RowCounts};

/// What a failed store operation means for the messages it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The store or the connection is at fault; the same write later may succeed.
    Transient,
    /// The data is at fault (a value out of range, a constraint); retrying cannot help.
    Data,
    /// The transaction lost to a concurrent one (a deadlock, a serialization failure) and was
    /// rolled back: the store is fine, and trying again at once is expected to succeed.
    Conflict,
}

/// An error of a [`Sink`], classified.
pub trait SinkError: std::error::Error + Send + Sync + 'static {
    /// Transient (hold the messages and retry), data (isolate the message, dead-letter it) or
    /// conflict (retry at once).
    fn kind(&self) -> FaultKind;

    /// A short, closed-set label for the `db_errors_total{class}` metric.
    fn metric_class(&self) -> &'static str;

    /// Whether retrying may help (a transient fault or a conflict).
    fn is_transient(&self) -> bool {
        self.kind() != FaultKind::Data
    }
}

/// One parsed message to be written.
#[derive(Debug, Clone, Copy)]
pub struct PendingWrite<'a> {
    /// The envelope's id.
    pub message_id: Uuid,
    /// When the api accepted it.
    pub received_at: DateTime<Utc>,
    /// JetStream delivery count.
    pub attempts: i32,
    /// Where the message arrived (its stream's epoch and sequence; a replayed copy keeps the
    /// original's): orders messages for unique-key conflicts.
    pub position: Position,
    /// A copy of a dead letter published by replay: written, it resolves that dead letter (the
    /// record and its `dead_lettered` status go in the same transaction).
    pub replayed: bool,
    /// The parsed message.
    pub message: &'a ParsedMessage,
}

/// What a committed batch wrote.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    /// Messages whose rows were written now.
    pub written: Vec<Uuid>,
    /// Messages already committed earlier (a redelivery): nothing was written for them.
    pub already_processed: Vec<Uuid>,
    /// Rows written per table.
    pub rows: RowCounts,
}

/// A message that will not be processed, and why (carried by the dead-letter stream as the
/// body with the rest in headers, see `worker::dead_letter`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The envelope's id (or an id derived from the stream message when the envelope itself
    /// was unreadable).
    pub message_id: Uuid,
    /// Entity name as given.
    pub entity: String,
    /// The body's bytes as received (the whole payload if the envelope was unreadable).
    pub body: bytes::Bytes,
    /// Why it was rejected.
    pub reason: String,
    /// Deliveries so far (of this trip through the stream).
    pub attempts: i32,
    /// When the api accepted it.
    pub received_at: DateTime<Utc>,
    /// Where the message first arrived, kept by its replayed copies.
    pub position: Position,
    /// This dead-lettering's own id (the stream message's position and delivery, and the
    /// message id): unique per delivery, so a message dead-lettered again is recorded again.
    pub record_id: String,
}

/// A dead letter as the store keeps it, for replay and inspection.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDeadLetter {
    /// The message id.
    pub message_id: Uuid,
    /// Entity name as given.
    pub entity: String,
    /// The body's bytes as received.
    pub body: bytes::Bytes,
    /// Why it was last rejected.
    pub reason: String,
    /// Deliveries over every trip through the stream.
    pub attempts: i32,
    /// How many times it was dead-lettered (a replayed copy rejected again adds one).
    pub times: i32,
    /// Where it first arrived.
    pub position: Position,
    /// When it was first dead-lettered: with the id, the order of pages.
    pub first_seen: DateTime<Utc>,
}

/// Which dead letters to read: a page of at most `limit` in first-seen order, after `after`
/// (the `(first_seen, message_id)` of the last one of the previous page).
#[derive(Debug, Clone, Default)]
pub struct DeadLetterPage {
    /// Only this message.
    pub message_id: Option<Uuid>,
    /// Start after this one.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many.
    pub limit: usize,
}

/// Where the worker stores messages. Every method is safe to call again after a failure or a
/// crash: that is what makes redelivery harmless.
pub trait Sink: Clone + Send + Sync + 'static {
    /// The store's error type.
    type Error: SinkError;

    /// Writes the rows of every message and a "processed" status for each, atomically. A
    /// message whose status already exists was committed by an earlier delivery: its rows are
    /// not written again and it is reported in `already_processed`.
    fn write_batch(
        &self,
        messages: &[PendingWrite<'_>],
    ) -> impl Future<Output = Result<WriteOutcome, Self::Error>> + Send;

    /// Which of `ids` an earlier delivery already committed.
    fn committed_among(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<HashSet<Uuid>, Self::Error>> + Send;

    /// Records a dead letter and its "dead-lettered" status atomically. Recording the same
    /// `record_id` again changes nothing; another dead-lettering of the same message updates its
    /// record (reason, attempts added, times dead-lettered); a message already stored is not
    /// recorded.
    fn record_dead_letter(
        &self,
        dead: &DeadLetter,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A page of dead letters (see [`DeadLetterPage`]); memory is bounded by the page.
    fn dead_letters(
        &self,
        page: &DeadLetterPage,
    ) -> impl Future<Output = Result<Vec<StoredDeadLetter>, Self::Error>> + Send;

    /// A cheap round trip, to tell when an outage is over.
    fn probe(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A message's status as the store holds it (what `GET /ingest/status/{id}` answers from).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStatus {
    /// The entity name.
    pub entity: String,
    /// `processed` or `dead_lettered`.
    pub status: String,
    /// When the api accepted it.
    pub received_at: DateTime<Utc>,
    /// When it was committed or dead-lettered.
    pub processed_at: DateTime<Utc>,
    /// Rows written.
    pub row_count: i32,
    /// Deliveries it took.
    pub attempts: i32,
    /// Why it was dead-lettered.
    pub error: Option<String>,
}

/// A boxed future of the [`StatusStore`] seam (object-safe, so the api can hold any store).
pub type StoreFuture<'a, T> = std::pin::Pin<
    Box<dyn Future<Output = Result<T, Box<dyn std::error::Error + Send + Sync>>> + Send + 'a>,
>;

/// What the api asks of the store: a message's status and whether the store answers. The api
/// holds it as `Arc<dyn StatusStore>`, so its handlers run against an in-memory store in tests
/// as well as against PostgreSQL ([`crate::db::PgSink`]).
pub trait StatusStore: Send + Sync + 'static {
    /// The status of message `id`, if the store holds one.
    fn message_status(&self, id: Uuid) -> StoreFuture<'_, Option<StoredStatus>>;

    /// Whether the store answers (`/ready` reports it).
    fn ready(&self) -> StoreFuture<'_, ()>;
}
