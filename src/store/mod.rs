//! The store: one interface for everything nomnom asks of the database it writes to.
//!
//! The worker's guarantees rest on it: a batch's rows are written together with one status row
//! per message in one atomic step (so a redelivered message is recognised and not written
//! twice), a dead letter is recorded with its status, and every error says whether retrying can
//! help ([`StoreError::kind`]). The api asks it for message status and readiness; replay reads
//! dead letters from it; start-up prepares it. [`Store`] is object-safe (boxed futures), so the
//! api and the worker hold it as `Arc<dyn Store>` and tests can hand them an in-memory one.
//! PostgreSQL ([`pg::PgStore`]) is the one shipped implementation; docs/ARCHITECTURE.md says
//! what a second one needs.

pub mod pg;

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

/// A failed store operation, classified: what it means for the messages it carried.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct StoreError {
    kind: FaultKind,
    metric_class: &'static str,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    /// An error of kind `kind`, counted under `metric_class` (a short, closed-set label).
    pub fn new(
        kind: FaultKind,
        metric_class: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            metric_class,
            source: source.into(),
        }
    }

    /// Transient (hold the messages and retry), data (isolate the message, dead-letter it) or
    /// conflict (retry at once).
    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    /// The label of the `db_errors_total{class}` metric.
    pub fn metric_class(&self) -> &'static str {
        self.metric_class
    }

    /// Whether retrying may help (a transient fault or a conflict).
    pub fn is_transient(&self) -> bool {
        self.kind != FaultKind::Data
    }
}

/// What one write stores: a message, or members of a chunk.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// One parsed message, with a status row of its own.
    Message(&'a ParsedMessage),
    /// Parsed members of a chunk (in member order; later members are newer), with one status
    /// row per run of consecutive members written.
    Chunk(&'a [ChunkMember]),
}

/// A parsed member of a chunk.
#[derive(Debug, Clone)]
pub struct ChunkMember {
    /// Its index in the chunk (its id is the chunk's with this index).
    pub index: usize,
    /// Its line in the source the chunk was made from.
    pub line: u64,
    /// The parsed message.
    pub message: ParsedMessage,
}

/// One parsed message, or members of one chunk, to be written.
#[derive(Debug, Clone, Copy)]
pub struct PendingWrite<'a> {
    /// The envelope's id (a chunk's id for a chunk).
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
    /// What it stores.
    pub content: Content<'a>,
}

impl PendingWrite<'_> {
    /// The root entity's name (as written in YAML).
    pub fn entity(&self) -> &'static str {
        match self.content {
            Content::Message(m) => m.entity().name(),
            Content::Chunk(members) => members.first().map_or("", |m| m.message.entity().name()),
        }
    }

    /// Messages it stores (a chunk's members).
    pub fn messages(&self) -> usize {
        match self.content {
            Content::Message(_) => 1,
            Content::Chunk(members) => members.len(),
        }
    }

    /// Where the message stands and its id, as its rows keep them.
    pub fn origin(&self) -> crate::runtime::Origin {
        crate::runtime::Origin {
            position: self.position,
            message_id: self.message_id,
        }
    }
}

/// What a committed batch wrote.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    /// Messages whose rows were written now (for a chunk, its id when any member was).
    pub written: Vec<Uuid>,
    /// Messages already committed earlier (a redelivery): nothing was written for them (for a
    /// chunk, its id when every member was).
    pub already_processed: Vec<Uuid>,
    /// Chunk members written now.
    pub members_written: u64,
    /// Chunk members an earlier delivery had committed (or dead-lettered).
    pub members_already: u64,
    /// Rows written per table.
    pub rows: RowCounts,
}

/// Why a message was dead-lettered, as a closed set: the `reason` label of
/// `nomnom_worker_dead_lettered_total` and how the console groups dead letters (the record
/// carries the full text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonClass {
    /// Not a message envelope the worker can read.
    Undecodable,
    /// The envelope names no entity of this build.
    UnknownEntity,
    /// The body does not match its entity.
    Invalid,
    /// The database refused its rows (a data error, e.g. SQLSTATE class 22 or 23).
    RefusedByDatabase,
    /// Delivered MAX_DELIVER times without an outcome.
    MaxDeliveries,
    /// Recorded before dead letters carried a class.
    Unclassified,
}

impl ReasonClass {
    /// Every class, in the order the console lists them.
    pub const ALL: [ReasonClass; 6] = [
        ReasonClass::Invalid,
        ReasonClass::RefusedByDatabase,
        ReasonClass::UnknownEntity,
        ReasonClass::Undecodable,
        ReasonClass::MaxDeliveries,
        ReasonClass::Unclassified,
    ];

    /// The label (metrics, the `reason_class` column, the console's filters).
    pub fn label(self) -> &'static str {
        match self {
            ReasonClass::Undecodable => "undecodable",
            ReasonClass::UnknownEntity => "unknown_entity",
            ReasonClass::Invalid => "invalid",
            ReasonClass::RefusedByDatabase => "refused_by_database",
            ReasonClass::MaxDeliveries => "max_deliveries",
            ReasonClass::Unclassified => "unclassified",
        }
    }

    /// The class of a label, if it is one.
    pub fn parse(label: &str) -> Option<ReasonClass> {
        Self::ALL.into_iter().find(|c| c.label() == label)
    }

    /// The class of a stored label; an unknown one (a newer version's) is unclassified.
    pub fn from_label(label: &str) -> ReasonClass {
        Self::parse(label).unwrap_or(ReasonClass::Unclassified)
    }
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
    /// Why it was rejected, as a class.
    pub class: ReasonClass,
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
    /// Why it was last rejected, as a class.
    pub class: ReasonClass,
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
    /// When it was last dead-lettered.
    pub last_seen: DateTime<Utc>,
}

/// Which dead letters: every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    /// Only this message.
    pub message_id: Option<Uuid>,
    /// Only this entity (any case: see [`crate::runtime::same_entity_name`]).
    pub entity: Option<String>,
    /// Only those whose reason contains this text (any case).
    pub reason: Option<String>,
    /// Only those of this class.
    pub class: Option<ReasonClass>,
    /// Only those first dead-lettered at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// A page of dead letters: at most `limit` of the filter's in first-seen order, after `after`
/// (the `(first_seen, message_id)` of the last one of the previous page).
#[derive(Debug, Clone, Default)]
pub struct DeadLetterPage {
    /// Which dead letters.
    pub filter: DeadLetterFilter,
    /// Start after this one.
    pub after: Option<(DateTime<Utc>, Uuid)>,
    /// At most this many.
    pub limit: usize,
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
    /// For a chunk's member: the status row of its run (its first member's id) and how many
    /// members that run covers; `row_count` is then the run's.
    pub run: Option<(Uuid, i32)>,
}

/// An operator's action on dead letters, as the audit keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminAction {
    /// An API key's name, or `cli:<user>`.
    pub who: String,
    /// `replay`, `dry_run` or `discard`.
    pub action: &'static str,
    /// Which dead letters: the filter, or the id.
    pub target: serde_json::Value,
    /// How many it concerned.
    pub count: i64,
    /// The operator's note (discards).
    pub note: Option<String>,
}

/// Messages of one entity the store holds, by outcome: in total and recently.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EntityCounts {
    /// The entity name as posted.
    pub entity: String,
    /// Messages whose rows were committed.
    pub processed: i64,
    /// Messages dead-lettered (replayed and stored since, they count as processed).
    pub dead_lettered: i64,
    /// Of `processed`, those committed since the time asked for.
    pub processed_recent: i64,
    /// Of `dead_lettered`, those dead-lettered since the time asked for.
    pub dead_lettered_recent: i64,
}

/// The dead letters kept of one entity and reason class.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterGroup {
    /// The entity name as posted.
    pub entity: String,
    /// The reason class.
    pub class: ReasonClass,
    /// How many.
    pub count: i64,
    /// When the oldest was first dead-lettered.
    pub first_seen: DateTime<Utc>,
    /// When the latest was last dead-lettered.
    pub last_seen: DateTime<Utc>,
}

/// An operator's action as the audit holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAction {
    /// Its number in the audit.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: an API key's name, `local` (the console on a loopback port) or `cli:<user>`.
    pub who: String,
    /// `replay`, `dry_run` or `discard`.
    pub action: String,
    /// Which dead letters: the filter, or the id.
    pub target: serde_json::Value,
    /// How many it concerned.
    pub count: i64,
    /// The operator's note.
    pub note: Option<String>,
}

/// Who discarded a dead letter, when and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscardedNote {
    /// An API key's name, `local` or `cli:<user>`.
    pub by: String,
    /// The operator's note.
    pub note: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One row a message last wrote: its table and key.
#[derive(Debug, Clone, PartialEq)]
pub struct TracedRow {
    /// The table.
    pub table: String,
    /// Column → value (as text) of the surrogate key and the unique key.
    pub key: serde_json::Value,
}

/// Everything the store knows of one message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageTrace {
    /// Its status, once committed or dead-lettered.
    pub status: Option<StoredStatus>,
    /// Its dead letter, while one is kept.
    pub dead_letter: Option<StoredDeadLetter>,
    /// Who discarded its dead letter, if someone did.
    pub discarded: Option<DiscardedNote>,
    /// Where it arrived in the stream, when a row or its dead letter keeps it.
    pub position: Option<Position>,
    /// The rows it last wrote (a row a later message overwrote is that message's).
    pub rows: Vec<TracedRow>,
    /// More rows than were asked for.
    pub rows_truncated: bool,
}

/// A boxed future of the [`Store`] (object-safe, so the api and the worker hold any store).
pub type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What the entity tables' preparation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaChanges {
    /// Tables created.
    pub created: Vec<String>,
    /// `table.column` added (nullable, or with their declared default).
    pub added_columns: Vec<String>,
    /// Other changes applied (renames, widenings, `NOT NULL` dropped), described.
    pub altered: Vec<String>,
    /// Set when nothing was applied because the database's schema is newer than this build's
    /// (see [`SchemaHead::newer_than_own`]).
    pub behind: Option<AppliedSchema>,
}

/// A schema a database applied (its ledger's row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedSchema {
    /// Its version.
    pub version: String,
    /// When it was applied.
    pub applied_at: DateTime<Utc>,
}

/// The database's schema ledger as a build needs it: the schema applied last, and when this
/// build's was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaHead {
    /// The version applied last, and when.
    pub latest: Option<(String, DateTime<Utc>)>,
    /// When this build's version was applied last, if ever.
    pub own_applied_at: Option<DateTime<Utc>>,
}

impl SchemaHead {
    /// The schema applied after this build's, if any: this build ran against the database
    /// before and another has been applied since (a newer deploy) — its workers must not write
    /// under rules the tables no longer follow. A database that never saw this build's schema
    /// is not "newer": its tables are planned against this build (and refused if they differ in
    /// a way no safe change mends).
    pub fn newer_than_own(&self) -> Option<AppliedSchema> {
        let (version, applied_at) = self.latest.as_ref()?;
        let own_at = self.own_applied_at?;
        (version != crate::generated::SCHEMA_VERSION && *applied_at > own_at).then(|| {
            AppliedSchema {
                version: version.clone(),
                applied_at: *applied_at,
            }
        })
    }

    /// The schema applied last when it is neither this build's nor the one its `entities.lock`
    /// records (`LOCK_SCHEMA_VERSION`): the database has the shape of a build this one does not
    /// know, and `worker schema plan`/`apply` refuse it (dev and prod may differ). A database
    /// without a ledger (new, or older than the ledger) is not refused.
    pub fn unknown_to_this_build(&self) -> Option<AppliedSchema> {
        let (version, applied_at) = self.latest.as_ref()?;
        let known = version == crate::generated::SCHEMA_VERSION
            || crate::generated::LOCK_SCHEMA_VERSION == Some(version.as_str());
        (!known).then(|| AppliedSchema {
            version: version.clone(),
            applied_at: *applied_at,
        })
    }
}

/// Where messages are stored, and everything nomnom asks of it. Every method is safe to call
/// again after a failure or a crash: that is what makes redelivery harmless.
pub trait Store: Send + Sync + 'static {
    /// Makes the store ready for this build's entities: creates the database if missing, runs
    /// the infrastructure migrations, creates entity tables and applies the safe changes;
    /// refuses anything else with an error naming what differs. Concurrent callers are
    /// serialised by the store.
    fn prepare(&self) -> StoreFuture<'_, SchemaChanges>;

    /// Writes the rows of every message and a "processed" status for each, atomically. A
    /// message whose status already exists was committed by an earlier delivery: its rows are
    /// not written again and it is reported in `already_processed`. A chunk gets one status
    /// per run of consecutive members written; members an earlier delivery covered (committed
    /// or dead-lettered) are not written again.
    fn write_batch<'a>(&'a self, messages: &'a [PendingWrite<'a>])
    -> StoreFuture<'a, WriteOutcome>;

    /// Which of `ids` an earlier delivery already committed.
    fn committed_among<'a>(&'a self, ids: &'a [Uuid]) -> StoreFuture<'a, HashSet<Uuid>>;

    /// The status rows with ids from `first` to `last`, each with how many messages it covers
    /// (a chunk's run: its members; else 1): what a bulk load already has in the store.
    fn status_runs(&self, first: Uuid, last: Uuid) -> StoreFuture<'_, Vec<(Uuid, i32)>>;

    /// The status of message `id`, if the store holds one.
    fn message_status(&self, id: Uuid) -> StoreFuture<'_, Option<StoredStatus>>;

    /// Records a dead letter and its "dead-lettered" status atomically. Recording the same
    /// `record_id` again changes nothing; another dead-lettering of the same message updates its
    /// record (reason, attempts added, times dead-lettered); a message already stored is not
    /// recorded.
    fn record_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> StoreFuture<'a, ()>;

    /// A page of dead letters (see [`DeadLetterPage`]); memory is bounded by the page. Replay
    /// takes them from here; a record goes when its replayed copy is written.
    fn dead_letters<'a>(
        &'a self,
        page: &'a DeadLetterPage,
    ) -> StoreFuture<'a, Vec<StoredDeadLetter>>;

    /// How many dead letters `filter` matches (a replay's progress bar, the console's counts).
    fn count_dead_letters<'a>(&'a self, filter: &'a DeadLetterFilter) -> StoreFuture<'a, i64>;

    /// Forgets a dead letter on an operator's word: its record leaves the dead letters (replay
    /// no longer sees it) and is kept whole among the discarded ones with `by` and `note`, in
    /// one step; its status stays dead-lettered. `false` when the message has no dead letter.
    fn discard_dead_letter<'a>(
        &'a self,
        message_id: Uuid,
        by: &'a str,
        note: &'a str,
    ) -> StoreFuture<'a, bool>;

    /// Records an operator's action in the audit.
    fn record_action<'a>(&'a self, action: &'a AdminAction) -> StoreFuture<'a, ()>;

    /// The latest `limit` actions of the audit, newest first.
    fn admin_actions(&self, limit: usize) -> StoreFuture<'_, Vec<StoredAction>>;

    /// Messages held per entity by outcome, in total and since `since`.
    fn entity_counts(&self, since: DateTime<Utc>) -> StoreFuture<'_, Vec<EntityCounts>>;

    /// The dead letters kept, counted per entity and reason class.
    fn dead_letter_groups(&self) -> StoreFuture<'_, Vec<DeadLetterGroup>>;

    /// Message `id` as the store knows it, with at most `row_limit` rows per table that it
    /// last wrote.
    fn message_trace(&self, id: Uuid, row_limit: usize) -> StoreFuture<'_, MessageTrace>;

    /// A cheap round trip: whether the store answers (the api's `/ready`, and how the worker
    /// tells that an outage is over).
    fn probe(&self) -> StoreFuture<'_, ()>;

    /// The store's schema ledger: which schema was applied last, and when this build's was (a
    /// worker of an older build stops consuming; the api counts a mismatch).
    fn schema_head(&self) -> StoreFuture<'_, SchemaHead>;
}
