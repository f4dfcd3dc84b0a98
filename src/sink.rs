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
use crate::runtime::RowCounts;

/// What a failed store operation means for the messages it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The store or the connection is at fault; the same write later may succeed.
    Transient,
    /// The data is at fault (a value out of range, a constraint); retrying cannot help.
    Data,
}

/// An error of a [`Sink`], classified.
pub trait SinkError: std::error::Error + Send + Sync + 'static {
    /// Transient (hold the messages and retry) or data (isolate the message, dead-letter it).
    fn kind(&self) -> FaultKind;

    /// A short, closed-set label for the `db_errors_total{class}` metric.
    fn metric_class(&self) -> &'static str;

    /// Whether retrying may help.
    fn is_transient(&self) -> bool {
        self.kind() == FaultKind::Transient
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
    /// JetStream stream sequence: orders messages for unique-key conflicts.
    pub sequence: i64,
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

/// A message that will not be processed, and why (also the JSON carried by the dead-letter
/// stream).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The envelope's id (or a fresh id when the envelope itself was unreadable).
    pub message_id: Uuid,
    /// Entity name as given.
    pub entity: String,
    /// The body as received (the whole payload if the envelope was unreadable).
    pub body: String,
    /// Why it was rejected.
    pub reason: String,
    /// Deliveries so far.
    pub attempts: i32,
    /// When the api accepted it.
    pub received_at: DateTime<Utc>,
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

    /// Records a dead letter and its "dead-lettered" status atomically (idempotent).
    fn record_dead_letter(
        &self,
        dead: &DeadLetter,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A cheap round trip, to tell when an outage is over.
    fn probe(&self) -> impl Future<Output = Result<(), Self::Error>> + Send;
}
