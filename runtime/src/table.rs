//! What a stored entity is to the worker: its table and columns, the rows a batch wrote, how
//! a batch meets existing rows, and where a message stands in arrival order.

use serde::Serialize;

use crate::FieldType;

/// One column of a stored entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name.
    pub name: &'static str,
    /// The field's type.
    pub ty: FieldType,
    /// `max_length` of a `String` (a `VARCHAR(n)` column).
    pub max_length: Option<u32>,
    /// PostgreSQL type as declared.
    pub sql_type: &'static str,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// The table of a stored entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    /// Entity name.
    pub entity: &'static str,
    /// Table name.
    pub table: &'static str,
    /// Surrogate key column.
    pub id_column: &'static str,
    /// Columns other than the surrogate key.
    pub columns: &'static [ColumnDef],
    /// Natural key columns.
    pub unicity_fields: &'static [&'static str],
    /// `CREATE TABLE IF NOT EXISTS ...`.
    pub create_sql: &'static str,
    /// The field whose higher value wins a unique-key conflict (`order_by`), if any.
    pub version_field: Option<&'static str>,
    /// The root entity whose messages write this table (the entity itself, or the one it is
    /// derived from).
    pub root_entity: &'static str,
    /// Declared renames, `(column, the column it was)` (`renamed_from`): applied at start-up.
    pub renames: &'static [(&'static str, &'static str)],
    /// Declared defaults of required columns, `(column, SQL literal)` (`default`): what rows
    /// stored before the column get.
    pub defaults: &'static [(&'static str, &'static str)],
    /// Columns of fields listed under `removed`: kept with what they hold, left null by new rows.
    pub removed: &'static [&'static str],
}

/// Columns of tables with `unicity_fields` recording the position of the message that last
/// wrote the row: its stream's epoch and its stream sequence ([`Position`]). Field names cannot
/// start with `_`, so they never clash.
pub const EPOCH_COLUMN: &str = "_nomnom_epoch";
/// See [`EPOCH_COLUMN`].
pub const SEQUENCE_COLUMN: &str = "_nomnom_seq";

/// The column of every entity table naming the message that last wrote the row (a UUID;
/// NULL for rows written before it existed), indexed, so that a row leads to its message and a
/// message to its rows (the console's trace).
pub const MESSAGE_ID_COLUMN: &str = "_nomnom_message_id";

/// Which message a row comes from: where it arrived (which orders unique-key conflicts) and
/// its id (kept in [`MESSAGE_ID_COLUMN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Origin {
    /// Where the message arrived (a replayed copy keeps the original's).
    pub position: Position,
    /// The message id.
    pub message_id: uuid::Uuid,
}

/// Rows written per table by one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RowCounts(pub Vec<(&'static str, usize)>);

impl RowCounts {
    /// Total rows written.
    pub fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

/// One table's rows of a batch in binary `COPY` form, with the statements that store them: a
/// `COPY` straight into the table (every key new), or into a temporary staging table and an
/// upsert from it (the entity's `on_conflict` rule, as [`WriteMode::Upsert`]).
#[derive(Debug, Clone)]
pub struct TableCopy {
    /// The table.
    pub table: &'static str,
    /// `COPY <table> (…) FROM STDIN (FORMAT binary)`.
    pub copy_sql: &'static str,
    /// Creates the staging table, if the table has a unique key (`None`: rows only append).
    pub stage_sql: Option<&'static str>,
    /// `COPY` into the staging table.
    pub stage_copy_sql: Option<&'static str>,
    /// The upsert from the staging table.
    pub merge_sql: Option<&'static str>,
    /// Rows (after rows with the same unique key were merged, the later winning).
    pub rows: usize,
    /// The `COPY` data, or the first value that could not be encoded.
    pub data: Result<Vec<u8>, String>,
}

/// How a batch's rows meet rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Plain `INSERT`: no row with the same unique key may exist yet (the statement fails with
    /// `unique_violation`, SQLSTATE 23505, if one does). It skips the speculative insertion of
    /// `ON CONFLICT` (an index probe and a token per row), which is most of an upsert's extra
    /// cost when the keys are new.
    Insert,
    /// `INSERT ... ON CONFLICT`: the entity's `on_conflict` rule decides by message order.
    Upsert,
}

/// Where a message stands in arrival order: the stream's epoch (when the stream was created, in
/// microseconds since 1970) and the message's sequence in it. Ordered by epoch, then sequence,
/// so a stream deleted and re-created continues after the old one; a replayed copy carries the
/// position of the message it copies, not a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// When the stream was created, in microseconds since 1970 (0 for rows written before
    /// epochs were recorded).
    pub epoch: i64,
    /// The message's stream sequence.
    pub sequence: i64,
}

impl Position {
    /// `epoch:sequence`, the form carried in the `Nomnom-Position` header.
    pub fn parse(text: &str) -> Option<Self> {
        let (epoch, sequence) = text.split_once(':')?;
        Some(Self {
            epoch: epoch.parse().ok()?,
            sequence: sequence.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.sequence)
    }
}
