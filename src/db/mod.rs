//! PostgreSQL: connection pool, start-up schema (migrations + entity tables), and the
//! transactional write of a batch of parsed messages with their status rows.

pub mod config;
pub mod evolve;
pub mod pg;
pub mod schema;
pub mod tls;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{self, Array, Integer, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use uuid::Uuid;

use crate::generated::{RowBatch, TABLES};
pub use crate::sink::{
    DeadLetter, DeadLetterPage, FaultKind, PendingWrite, StoredDeadLetter, StoredStatus,
    WriteOutcome,
};
use crate::sink::{Sink, SinkError};
use nomnom_runtime::WriteMode;
pub use pg::{PgConnection, PgManager, SqlState};

/// Infrastructure migrations (`migrations/`), embedded in the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory lock key held while the schema is set up, so concurrent workers do not race.
const SCHEMA_LOCK_KEY: i64 = 0x6e6f_6d6e_6f6d;

/// A pool of async PostgreSQL connections (each knows the SQLSTATE of its last error).
pub type DbPool = deadpool::managed::Pool<PgManager>;

/// A connection taken from a [`DbPool`].
pub type PooledConnection = deadpool::managed::Object<PgManager>;

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be obtained.
    #[error("database connection: {message}")]
    Connection {
        /// What happened.
        message: String,
        /// The server's code, when it refused us with one (`53300` too many connections).
        sqlstate: Option<SqlState>,
    },
    /// A statement failed.
    #[error("database query{}: {source}", sqlstate.map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default())]
    Query {
        /// diesel's error.
        source: diesel::result::Error,
        /// The server's code for it, read off the connection.
        sqlstate: Option<SqlState>,
    },
    /// Running the embedded migrations failed.
    #[error("database migration: {0}")]
    Migration(String),
    /// The live tables differ from the YAML in ways that need an operator.
    #[error("{0}")]
    Schema(String),
}

impl From<diesel::result::Error> for DbError {
    fn from(source: diesel::result::Error) -> Self {
        DbError::Query {
            source,
            sqlstate: None,
        }
    }
}

impl From<pg::ConnectError> for DbError {
    fn from(e: pg::ConnectError) -> Self {
        match e {
            pg::ConnectError::Url(_) => DbError::Connection {
                message: e.to_string(),
                sqlstate: None,
            },
            pg::ConnectError::Server { message, sqlstate } => {
                DbError::Connection { message, sqlstate }
            }
        }
    }
}

/// Classifies a SQLSTATE by its class. `21` (cardinality violation: one statement met the same
/// row twice), `22` (data exception), `23` (integrity constraint) and `54` (program limit
/// exceeded, e.g. an index row too large) are data errors: the same rows fail again. `40`
/// (transaction rollback: serialization failure, deadlock) is a conflict with a concurrent
/// transaction, retried at once. `08` connection, `53` insufficient resources, `57` operator
/// intervention (`57014` statement timeout, `57P01` terminated), `58` system error, `XX`
/// internal error and every class not named here are transient.
pub fn classify_sqlstate(code: SqlState) -> FaultKind {
    match code.class() {
        "21" | "22" | "23" | "54" => FaultKind::Data,
        "40" => FaultKind::Conflict,
        _ => FaultKind::Transient,
    }
}

impl DbError {
    /// The server's SQLSTATE, when the error came with one.
    pub fn sqlstate(&self) -> Option<SqlState> {
        match self {
            DbError::Connection { sqlstate, .. } | DbError::Query { sqlstate, .. } => *sqlstate,
            _ => None,
        }
    }

    /// Attaches the code read off the connection (keeps one already known).
    pub fn with_sqlstate(self, code: Option<SqlState>) -> Self {
        match self {
            DbError::Query { source, sqlstate } => DbError::Query {
                source,
                sqlstate: sqlstate.or(code),
            },
            other => other,
        }
    }

    /// Transient or data fault. By SQLSTATE when the server sent one; otherwise by what diesel
    /// saw: a lost connection is transient, a value diesel could not encode is data.
    pub fn kind(&self) -> FaultKind {
        if let Some(code) = self.sqlstate() {
            return classify_sqlstate(code);
        }
        match self {
            DbError::Connection { .. } => FaultKind::Transient,
            DbError::Migration(_) | DbError::Schema(_) => FaultKind::Transient,
            DbError::Query { source, .. } => match source {
                diesel::result::Error::DatabaseError(
                    DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::NotNullViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::RestrictViolation
                    | DatabaseErrorKind::ExclusionViolation,
                    _,
                ) => FaultKind::Data,
                diesel::result::Error::SerializationError(_)
                | diesel::result::Error::DeserializationError(_)
                | diesel::result::Error::QueryBuilderError(_) => FaultKind::Data,
                _ => FaultKind::Transient,
            },
        }
    }

    /// Whether retrying later may succeed (see [`DbError::kind`]).
    pub fn is_transient(&self) -> bool {
        self.kind() == FaultKind::Transient
    }

    /// A short, closed-set label for metrics: the SQLSTATE class, or `connection`/`client`.
    pub fn metric_class(&self) -> &'static str {
        const CLASSES: &[&str] = &[
            "08", "0A", "21", "22", "23", "25", "28", "3D", "40", "42", "53", "54", "55", "57",
            "58", "XX",
        ];
        match self.sqlstate() {
            Some(code) => CLASSES
                .iter()
                .find(|c| **c == code.class())
                .copied()
                .unwrap_or("other"),
            None if matches!(self, DbError::Connection { .. }) => "connection",
            None => "client",
        }
    }
}

/// Creates a connection pool of `size` connections to `database_url`.
pub fn pool(database_url: &str, size: usize) -> Result<DbPool, DbError> {
    Database::parse(database_url)?.pool(size)
}

/// A database target, parsed once from `DATABASE_URL` (host, user, database, TLS files read):
/// what creating it, preparing its schema and pooling connections to it share.
#[derive(Debug, Clone)]
pub struct Database {
    target: pg::PgTarget,
}

impl Database {
    /// Parses a URL or key=value connection string (see [`pg::parse_config`]).
    pub fn parse(database_url: &str) -> Result<Self, DbError> {
        Ok(Self {
            target: pg::parse_config(database_url)?,
        })
    }

    /// A pool of `size` connections.
    pub fn pool(&self, size: usize) -> Result<DbPool, DbError> {
        deadpool::managed::Pool::builder(PgManager::for_target(self.target.clone()))
            .max_size(size.max(1))
            .build()
            .map_err(|e| DbError::Connection {
                message: e.to_string(),
                sqlstate: None,
            })
    }

    /// One connection outside any pool.
    pub async fn connect(&self) -> Result<PgConnection, DbError> {
        Ok(pg::connect(&self.target).await?)
    }
}

/// Takes a connection from the pool.
pub async fn connection(pool: &DbPool) -> Result<PooledConnection, DbError> {
    pool.get().await.map_err(|e| match e {
        deadpool::managed::PoolError::Backend(e) => DbError::from(e),
        other => DbError::Connection {
            message: other.to_string(),
            sqlstate: None,
        },
    })
}

/// Opens one connection outside any pool.
pub async fn connect(database_url: &str) -> Result<PgConnection, DbError> {
    Database::parse(database_url)?.connect().await
}

/// Creates the database named in `database_url` if it does not exist yet.
pub async fn ensure_database(database_url: &str) -> Result<(), DbError> {
    Database::parse(database_url)?.ensure_exists().await
}

/// Runs the embedded migrations and brings the entity tables to the YAML's shape.
pub async fn prepare_schema(database_url: &str) -> Result<evolve::SchemaChanges, DbError> {
    Database::parse(database_url)?.prepare_schema().await
}

impl Database {
    /// Creates the database if it does not exist yet (connecting to the `postgres` maintenance
    /// database of the same server to do so).
    pub async fn ensure_exists(&self) -> Result<(), DbError> {
        let config = &self.target;
        let missing = match pg::connect_client(config).await {
            Ok(_) => return Ok(()),
            Err(
                e @ pg::ConnectError::Server {
                    sqlstate: Some(code),
                    ..
                },
            ) if code.as_str() == "3D000" => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        let name = config.config.get_dbname().unwrap_or_default().to_string();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(DbError::Connection {
                message: missing,
                sqlstate: None,
            });
        }
        let mut admin_config = config.clone();
        admin_config.config.dbname("postgres");
        let failed = |e: &dyn std::fmt::Display| DbError::Connection {
            message: format!("{missing}; creating it failed: {e}"),
            sqlstate: None,
        };
        let (admin, _) = pg::connect_client(&admin_config)
            .await
            .map_err(|e| failed(&e))?;
        match admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
        {
            Ok(()) => {
                tracing::info!(database = name, "created database");
                Ok(())
            }
            // 42P04 duplicate_database: another worker created it first.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                Ok(())
            }
            Err(e) => Err(failed(&e)),
        }
    }

    /// Runs the embedded migrations and brings the entity tables to the YAML's shape (create missing
    /// tables, add new nullable columns; refuse anything else), under an advisory lock.
    pub async fn prepare_schema(&self) -> Result<evolve::SchemaChanges, DbError> {
        let mut lock = self.connect().await?;
        diesel::sql_query(format!("SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})"))
            .execute(&mut lock)
            .await?;
        let result = async {
            let mut harness = AsyncMigrationHarness::new(self.connect().await?.into_inner());
            harness
                .run_pending_migrations(MIGRATIONS)
                .map_err(|e| DbError::Migration(e.to_string()))?;
            match evolve::reconcile(&mut lock, TABLES).await {
                Ok(changes) => Ok(changes),
                Err(evolve::ReconcileError::Query(e)) => Err(DbError::from(e)),
                Err(e @ evolve::ReconcileError::Mismatch(_)) => Err(DbError::Schema(e.to_string())),
            }
        }
        .await;
        diesel::sql_query(format!("SELECT pg_advisory_unlock({SCHEMA_LOCK_KEY})"))
            .execute(&mut lock)
            .await?;
        result
    }
}

/// `INSERT ... SELECT FROM unnest(...)` of a batch's `processed` status rows.
macro_rules! insert_status_sql {
    () => {
        "INSERT INTO message_status \
         (message_id, entity, status, received_at, row_count, attempts) \
         SELECT id, entity, 'processed', received_at, row_count, attempts \
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::integer[], $5::integer[]) \
           AS u(id, entity, received_at, row_count, attempts)"
    };
}

/// Status rows of a batch believed new: fails with `unique_violation` if any message has one.
const INSERT_STATUS_SQL: &str = insert_status_sql!();

/// Status rows of a batch; the ids it returns are the messages not seen before.
const UPSERT_STATUS_SQL: &str = concat!(
    insert_status_sql!(),
    " ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
);

/// `unique_violation`: a plain insert met an existing key.
const UNIQUE_VIOLATION: &str = "23505";

/// Longest run of batches written with upserts after plain inserts met existing keys.
const MAX_UPSERT_RUN: u32 = 1024;

#[derive(QueryableByName)]
struct InsertedId {
    #[diesel(sql_type = sql_types::Uuid)]
    message_id: Uuid,
}

/// Chooses how the next batch is written. Plain inserts (see [`WriteMode::Insert`]) are tried
/// first, because in an ingestion pipeline nearly every message and key is new; a batch that
/// meets an existing key is rolled back and written again with upserts, and so are the batches
/// after it for a run that doubles with each further conflict (8, 16, … up to 1024 batches) and
/// halves with each batch that inserts cleanly. A workload of updates thus pays the failed
/// attempt once per run, not once per batch.
///
/// [`WriteMode::Insert`]: nomnom_runtime::WriteMode::Insert
#[derive(Debug, Default)]
pub struct InsertFirst {
    /// (upsert batches left in the current run, length of the last run)
    state: std::sync::Mutex<(u32, u32)>,
}

impl InsertFirst {
    /// The mode for the next batch (and counts it against the current upsert run).
    pub fn next_mode(&self) -> WriteMode {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 > 0 {
            state.0 -= 1;
            WriteMode::Upsert
        } else {
            WriteMode::Insert
        }
    }

    /// A plain insert met an existing key: upserts for a longer run.
    fn conflicted(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let run = (state.1 * 2).clamp(8, MAX_UPSERT_RUN);
        *state = (run, run);
    }

    /// A plain insert went through: the next run, if any, is shorter.
    fn inserted(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 /= 2;
    }
}

/// The status-row columns of a batch, one array per column.
struct StatusColumns<'a> {
    ids: Vec<Uuid>,
    entities: Vec<&'a str>,
    received: Vec<DateTime<Utc>>,
    row_counts: Vec<i32>,
    attempts: Vec<i32>,
}

impl<'a> StatusColumns<'a> {
    fn of(messages: &'a [PendingWrite<'a>]) -> Self {
        Self {
            ids: messages.iter().map(|m| m.message_id).collect(),
            entities: messages.iter().map(|m| m.message.entity().name()).collect(),
            received: messages.iter().map(|m| m.received_at).collect(),
            row_counts: messages
                .iter()
                .map(|m| i32::try_from(m.message.row_count()).unwrap_or(i32::MAX))
                .collect(),
            attempts: messages.iter().map(|m| m.attempts).collect(),
        }
    }
}

/// The status insert `$sql` with the batch's [`StatusColumns`] bound to it (a macro: the bound
/// query's type is diesel's long nested generic).
macro_rules! bind_status {
    ($sql:expr, $status:expr) => {
        diesel::sql_query($sql)
            .bind::<Array<sql_types::Uuid>, _>(&$status.ids)
            .bind::<Array<Text>, _>(&$status.entities)
            .bind::<Array<Timestamptz>, _>(&$status.received)
            .bind::<Array<Integer>, _>(&$status.row_counts)
            .bind::<Array<Integer>, _>(&$status.attempts)
    };
}

/// Writes the rows of every message and a `processed` status row for each, in one transaction.
///
/// A message whose status row already exists was committed by an earlier delivery; its rows are
/// not written again, which makes redelivery harmless even for entities without unicity fields.
/// `first` decides whether plain inserts are tried before upserts.
pub async fn write_messages(
    conn: &mut PgConnection,
    messages: &[PendingWrite<'_>],
    first: &InsertFirst,
) -> Result<WriteOutcome, DbError> {
    if messages.is_empty() {
        return Ok(WriteOutcome::default());
    }
    let status = StatusColumns::of(messages);
    if first.next_mode() == WriteMode::Insert {
        conn.clear_sqlstate();
        let inserted = insert_new(conn, messages, &status).await;
        match inserted.map_err(|e| e.with_sqlstate(conn.take_sqlstate())) {
            Ok(outcome) => {
                first.inserted();
                return Ok(outcome);
            }
            Err(e) if e.sqlstate().is_some_and(|c| c.as_str() == UNIQUE_VIOLATION) => {
                first.conflicted();
            }
            Err(e) => return Err(e),
        }
    }
    conn.clear_sqlstate();
    let result = upsert(conn, messages, &status).await;
    result.map_err(|e| e.with_sqlstate(conn.take_sqlstate()))
}

/// Every message new: plain inserts of the status rows and the entity rows.
async fn insert_new(
    conn: &mut AsyncPgConnection,
    messages: &[PendingWrite<'_>],
    status: &StatusColumns<'_>,
) -> Result<WriteOutcome, DbError> {
    conn.transaction(async |conn| {
        let replayed = reopen_replayed(conn, messages).await?;
        bind_status!(INSERT_STATUS_SQL, status)
            .execute(conn)
            .await?;
        let mut batch = RowBatch::default();
        for m in messages {
            batch.push(m.message, m.position);
        }
        let rows = batch.write(conn, WriteMode::Insert).await?;
        resolve_replayed(conn, &replayed).await?;
        Ok::<_, DbError>(WriteOutcome {
            written: status.ids.clone(),
            already_processed: Vec::new(),
            rows,
        })
    })
    .await
}

/// Status rows where missing, then the rows of the messages not seen before, with upserts.
async fn upsert(
    conn: &mut AsyncPgConnection,
    messages: &[PendingWrite<'_>],
    status: &StatusColumns<'_>,
) -> Result<WriteOutcome, DbError> {
    conn.transaction(async |conn| {
        let replayed = reopen_replayed(conn, messages).await?;
        // One static statement (prepared once per connection) whatever the batch size.
        let fresh: Vec<Uuid> = bind_status!(UPSERT_STATUS_SQL, status)
            .load::<InsertedId>(conn)
            .await?
            .into_iter()
            .map(|r| r.message_id)
            .collect();
        let mut fresh_set: HashSet<Uuid> = fresh.iter().copied().collect();
        let mut batch = RowBatch::default();
        let mut outcome = WriteOutcome::default();
        for m in messages {
            // `remove`: the same message twice in one batch (a redelivery racing the first
            // delivery) is written once.
            if fresh_set.remove(&m.message_id) {
                batch.push(m.message, m.position);
                outcome.written.push(m.message_id);
            } else {
                outcome.already_processed.push(m.message_id);
            }
        }
        outcome.rows = batch.write(conn, WriteMode::Upsert).await?;
        resolve_replayed(conn, &replayed).await?;
        Ok::<_, DbError>(outcome)
    })
    .await
}

/// The replayed copies among `messages` (ids), with their `dead_lettered` status removed so
/// that the write below treats them as new. In the write's transaction: if it fails, the
/// status (and the dead letter) are still there.
async fn reopen_replayed(
    conn: &mut AsyncPgConnection,
    messages: &[PendingWrite<'_>],
) -> Result<Vec<Uuid>, DbError> {
    let replayed: Vec<Uuid> = messages
        .iter()
        .filter(|m| m.replayed)
        .map(|m| m.message_id)
        .collect();
    if !replayed.is_empty() {
        diesel::sql_query(
            "DELETE FROM message_status WHERE message_id = ANY($1) AND status = 'dead_lettered'",
        )
        .bind::<Array<sql_types::Uuid>, _>(&replayed)
        .execute(conn)
        .await?;
    }
    Ok(replayed)
}

/// The dead letters of replayed copies just written are resolved: their records go, in the same
/// transaction as the rows.
async fn resolve_replayed(conn: &mut AsyncPgConnection, replayed: &[Uuid]) -> Result<(), DbError> {
    if !replayed.is_empty() {
        diesel::sql_query(
            "DELETE FROM dead_letters d WHERE d.message_id = ANY($1) \
             AND EXISTS (SELECT 1 FROM message_status s \
                         WHERE s.message_id = d.message_id AND s.status = 'processed')",
        )
        .bind::<Array<sql_types::Uuid>, _>(replayed)
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Which of `ids` an earlier delivery already committed (`processed` status rows).
pub async fn committed_among(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<std::collections::HashSet<Uuid>, DbError> {
    use schema::message_status as s;
    conn.clear_sqlstate();
    let found: Result<Vec<Uuid>, _> = s::table
        .filter(s::message_id.eq_any(ids))
        .filter(s::status.eq("processed"))
        .select(s::message_id)
        .load(&mut **conn)
        .await;
    found
        .map(|ids| ids.into_iter().collect())
        .map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))
}

/// Records a dead letter and its `dead_lettered` status in one transaction: a new record, or
/// the message's record updated when it was dead-lettered again (by a replayed copy); nothing
/// when this `record_id` was recorded last or the message has been stored meanwhile.
pub async fn record_dead_letter(conn: &mut PgConnection, dl: &DeadLetter) -> Result<(), DbError> {
    use schema::message_status as s;
    conn.clear_sqlstate();
    let reason = crate::text::printable(&dl.reason);
    let entity = crate::text::printable(&dl.entity);
    let result = conn
        .transaction(async |conn| {
            let stored: i64 = s::table
                .filter(s::message_id.eq(dl.message_id))
                .filter(s::status.eq("processed"))
                .count()
                .get_result(conn)
                .await?;
            if stored > 0 {
                tracing::info!(message_id = %dl.message_id, "dead letter of a message stored meanwhile (a replayed copy); not recorded");
                return Ok(());
            }
            diesel::sql_query(RECORD_DEAD_LETTER_SQL)
                .bind::<sql_types::Uuid, _>(dl.message_id)
                .bind::<Text, _>(&*entity)
                .bind::<sql_types::Binary, _>(&dl.body[..])
                .bind::<Text, _>(&*reason)
                .bind::<Integer, _>(dl.attempts)
                .bind::<sql_types::BigInt, _>(dl.position.epoch)
                .bind::<sql_types::BigInt, _>(dl.position.sequence)
                .bind::<Text, _>(crate::text::printable(&dl.record_id).as_ref())
                .execute(conn)
                .await?;
            diesel::insert_into(s::table)
                .values((
                    s::message_id.eq(dl.message_id),
                    s::entity.eq(&*entity),
                    s::status.eq("dead_lettered"),
                    s::received_at.eq(dl.received_at),
                    s::attempts.eq(dl.attempts),
                    s::error.eq(&*reason),
                ))
                .on_conflict(s::message_id)
                .do_nothing()
                .execute(conn)
                .await?;
            Ok::<_, DbError>(())
        })
        .await;
    result.map_err(|e| e.with_sqlstate(conn.take_sqlstate()))
}

/// A page of dead letters in first-seen order (keyset: `(first_seen, message_id)`).
pub async fn dead_letters(
    conn: &mut PgConnection,
    page: &DeadLetterPage,
) -> Result<Vec<StoredDeadLetter>, DbError> {
    use schema::dead_letters as d;
    conn.clear_sqlstate();
    let mut query = d::table
        .select((
            d::message_id,
            d::entity,
            d::body,
            d::reason,
            d::attempts,
            d::times,
            d::position_epoch,
            d::position_seq,
            d::first_seen,
        ))
        .order((d::first_seen.asc(), d::message_id.asc()))
        .limit(i64::try_from(page.limit).unwrap_or(i64::MAX))
        .into_boxed();
    if let Some(id) = page.message_id {
        query = query.filter(d::message_id.eq(id));
    }
    if let Some((at, id)) = page.after {
        query = query.filter(
            d::first_seen
                .gt(at)
                .or(d::first_seen.eq(at).and(d::message_id.gt(id))),
        );
    }
    type Row = (
        Uuid,
        String,
        Vec<u8>,
        String,
        i32,
        i32,
        i64,
        i64,
        DateTime<Utc>,
    );
    let rows: Result<Vec<Row>, _> = query.load(&mut **conn).await;
    let rows = rows.map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))?;
    Ok(rows
        .into_iter()
        .map(
            |(message_id, entity, body, reason, attempts, times, epoch, sequence, first_seen)| {
                StoredDeadLetter {
                    message_id,
                    entity,
                    body: body.into(),
                    reason,
                    attempts,
                    times,
                    position: crate::runtime::Position { epoch, sequence },
                    first_seen,
                }
            },
        )
        .collect())
}

/// A dead letter's record: new, or the message's record brought up to this dead-lettering
/// (attempts added, one more time) unless this one was the last recorded.
const RECORD_DEAD_LETTER_SQL: &str = "\
INSERT INTO dead_letters AS d
    (message_id, entity, body, reason, attempts, position_epoch, position_seq, record_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (message_id) DO UPDATE SET
    reason = EXCLUDED.reason,
    body = EXCLUDED.body,
    attempts = d.attempts + EXCLUDED.attempts,
    times = d.times + 1,
    record_id = EXCLUDED.record_id,
    last_seen = now()
WHERE d.record_id <> EXCLUDED.record_id";

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(code: &str) -> FaultKind {
        let sqlstate = SqlState::new(code);
        assert!(sqlstate.is_some(), "{code}");
        DbError::Query {
            source: diesel::result::Error::NotFound,
            sqlstate,
        }
        .kind()
    }

    fn modes(first: &InsertFirst, n: usize) -> Vec<WriteMode> {
        (0..n).map(|_| first.next_mode()).collect()
    }

    #[test]
    fn plain_inserts_until_a_conflict_then_upsert_runs_that_grow_and_shrink() {
        use WriteMode::{Insert, Upsert};
        let first = InsertFirst::default();
        assert_eq!(modes(&first, 3), vec![Insert; 3]);
        first.conflicted();
        assert_eq!(modes(&first, 9), [vec![Upsert; 8], vec![Insert]].concat());
        // Conflicts again right after the run: a run twice as long.
        first.conflicted();
        assert_eq!(modes(&first, 17), [vec![Upsert; 16], vec![Insert]].concat());
        // Clean inserts shorten the next run (16 → 8 → 4, at least 8).
        first.inserted();
        first.inserted();
        first.conflicted();
        assert_eq!(modes(&first, 9), [vec![Upsert; 8], vec![Insert]].concat());
        for _ in 0..20 {
            first.conflicted();
        }
        assert_eq!(first.state.lock().unwrap().0, MAX_UPSERT_RUN);
    }

    #[test]
    fn connection_rollback_resource_operator_system_and_internal_classes_are_transient() {
        for code in [
            "08006", // connection_failure
            "08P01", // protocol_violation
            "53100", // disk_full
            "53200", // out_of_memory
            "53300", // too_many_connections
            "57014", // query_canceled (statement timeout)
            "57P01", // admin_shutdown (terminated backend)
            "57P03", // cannot_connect_now (starting up)
            "58030", // io_error
            "XX000", // internal_error
            "XX001", // data_corrupted
        ] {
            assert_eq!(kind_of(code), FaultKind::Transient, "{code}");
        }
    }

    #[test]
    fn rollbacks_by_a_concurrent_transaction_are_conflicts() {
        for code in [
            "40001", // serialization_failure
            "40P01", // deadlock_detected
        ] {
            assert_eq!(kind_of(code), FaultKind::Conflict, "{code}");
        }
    }

    #[test]
    fn data_exception_integrity_and_limit_classes_are_data_errors() {
        for code in [
            "21000", // cardinality_violation (ON CONFLICT met a row twice)
            "22003", // numeric_value_out_of_range
            "22001", // string_data_right_truncation
            "22P02", // invalid_text_representation
            "23505", // unique_violation
            "23514", // check_violation
            "23502", // not_null_violation
            "54000", // program_limit_exceeded (index row too large)
        ] {
            assert_eq!(kind_of(code), FaultKind::Data, "{code}");
        }
    }

    #[test]
    fn unknown_classes_are_transient() {
        for code in ["42P01", "25006", "0A000", "ZZ999"] {
            assert_eq!(kind_of(code), FaultKind::Transient, "{code}");
        }
    }

    #[test]
    fn without_a_sqlstate_lost_connections_are_transient_and_encoding_failures_data() {
        let closed = DbError::from(diesel::result::Error::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_string()),
        ));
        assert_eq!(closed.kind(), FaultKind::Transient);
        let encode = DbError::from(diesel::result::Error::SerializationError(
            "digits do not fit".into(),
        ));
        assert_eq!(encode.kind(), FaultKind::Data);
        let refused = DbError::Connection {
            message: "refused".into(),
            sqlstate: None,
        };
        assert_eq!(refused.kind(), FaultKind::Transient);
        assert_eq!(refused.metric_class(), "connection");
    }

    #[test]
    fn the_sqlstate_read_off_the_connection_is_kept_in_the_error() {
        let e =
            DbError::from(diesel::result::Error::NotFound).with_sqlstate(SqlState::new("23505"));
        assert_eq!(
            e.sqlstate().map(|s| s.to_string()).as_deref(),
            Some("23505")
        );
        assert!(e.to_string().contains("SQLSTATE 23505"), "{e}");
        assert_eq!(e.metric_class(), "23");
    }
}

/// The PostgreSQL [`Sink`]: rows and `message_status` rows in one transaction per batch,
/// dead letters in `dead_letters`, errors classified by SQLSTATE.
#[derive(Clone)]
pub struct PgSink {
    pool: DbPool,
    first: std::sync::Arc<InsertFirst>,
}

impl PgSink {
    /// A sink writing through `pool`.
    pub fn new(pool: DbPool) -> Self {
        Self {
            pool,
            first: Default::default(),
        }
    }

    /// The connection pool.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }
}

impl SinkError for DbError {
    fn kind(&self) -> FaultKind {
        DbError::kind(self)
    }

    fn metric_class(&self) -> &'static str {
        DbError::metric_class(self)
    }
}

impl Sink for PgSink {
    type Error = DbError;

    async fn write_batch(&self, messages: &[PendingWrite<'_>]) -> Result<WriteOutcome, DbError> {
        write_messages(&mut *connection(&self.pool).await?, messages, &self.first).await
    }

    async fn committed_among(&self, ids: &[Uuid]) -> Result<HashSet<Uuid>, DbError> {
        committed_among(&mut *connection(&self.pool).await?, ids).await
    }

    async fn record_dead_letter(&self, dead: &DeadLetter) -> Result<(), DbError> {
        record_dead_letter(&mut *connection(&self.pool).await?, dead).await
    }

    async fn dead_letters(&self, page: &DeadLetterPage) -> Result<Vec<StoredDeadLetter>, DbError> {
        dead_letters(&mut *connection(&self.pool).await?, page).await
    }

    async fn probe(&self) -> Result<(), DbError> {
        let mut conn = connection(&self.pool).await?;
        conn.clear_sqlstate();
        diesel::sql_query("SELECT 1")
            .execute(&mut **conn)
            .await
            .map(drop)
            .map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))
    }
}

impl crate::sink::StatusStore for PgSink {
    fn message_status(&self, id: Uuid) -> crate::sink::StoreFuture<'_, Option<StoredStatus>> {
        Box::pin(async move {
            use schema::message_status as s;
            let mut conn = connection(&self.pool).await?;
            let row = s::table
                .filter(s::message_id.eq(id))
                .select((
                    s::entity,
                    s::status,
                    s::received_at,
                    s::processed_at,
                    s::row_count,
                    s::attempts,
                    s::error,
                ))
                .first::<(
                    String,
                    String,
                    DateTime<Utc>,
                    DateTime<Utc>,
                    i32,
                    i32,
                    Option<String>,
                )>(&mut **conn)
                .await
                .optional()?;
            Ok(row.map(
                |(entity, status, received_at, processed_at, row_count, attempts, error)| {
                    StoredStatus {
                        entity,
                        status,
                        received_at,
                        processed_at,
                        row_count,
                        attempts,
                        error,
                    }
                },
            ))
        })
    }

    fn ready(&self) -> crate::sink::StoreFuture<'_, ()> {
        Box::pin(async move { Ok(Sink::probe(self).await?) })
    }
}
