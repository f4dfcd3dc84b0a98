//! PostgreSQL: connection pool, start-up schema (migrations + entity tables), and the
//! transactional write of a batch of parsed messages with their status rows.

pub mod evolve;
pub mod schema;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::{self, Array, Integer, Text, Timestamptz};
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::{AsyncConnection, AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use uuid::Uuid;

use crate::generated::{ParsedMessage, RowBatch, TABLES};
use crate::runtime::RowCounts;

/// Infrastructure migrations (`migrations/`), embedded in the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory lock key held while the schema is set up, so concurrent workers do not race.
const SCHEMA_LOCK_KEY: i64 = 0x6e6f_6d6e_6f6d;

/// A pool of async PostgreSQL connections.
pub type DbPool = Pool<AsyncPgConnection>;

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be obtained.
    #[error("database connection: {0}")]
    Connection(String),
    /// A statement failed.
    #[error("database query: {0}")]
    Query(#[from] diesel::result::Error),
    /// Running the embedded migrations failed.
    #[error("database migration: {0}")]
    Migration(String),
    /// The live tables differ from the YAML in ways that need an operator.
    #[error("{0}")]
    Schema(String),
}

impl DbError {
    /// Whether retrying later may succeed (database down, connection lost, serialization
    /// failure), as opposed to a problem with the data itself.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connection(_) => true,
            DbError::Migration(_) | DbError::Schema(_) => false,
            DbError::Query(e) => match e {
                diesel::result::Error::DatabaseError(kind, info) => match kind {
                    DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::SerializationFailure
                    | DatabaseErrorKind::ReadOnlyTransaction => true,
                    DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::NotNullViolation
                    | DatabaseErrorKind::CheckViolation => false,
                    // Unclassified: deadlocks, shutdowns and lost connections are transient;
                    // value errors (too long, out of range, invalid input) are not.
                    _ => {
                        let m = info.message().to_ascii_lowercase();
                        m.contains("deadlock")
                            || m.contains("terminat")
                            || m.contains("shutting down")
                            || m.contains("connection")
                            || m.contains("recovery")
                    }
                },
                diesel::result::Error::BrokenTransactionManager => true,
                _ => false,
            },
        }
    }
}

/// Creates a connection pool of `size` connections.
pub fn pool(database_url: &str, size: usize) -> Result<DbPool, DbError> {
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new(database_url);
    Pool::builder(manager)
        .max_size(size.max(1))
        .build()
        .map_err(|e| DbError::Connection(e.to_string()))
}

/// Takes a connection from the pool.
pub async fn connection(
    pool: &DbPool,
) -> Result<deadpool::managed::Object<AsyncDieselConnectionManager<AsyncPgConnection>>, DbError> {
    pool.get()
        .await
        .map_err(|e| DbError::Connection(e.to_string()))
}

/// Creates the database named in `database_url` if it does not exist yet (connecting to the
/// `postgres` maintenance database of the same server to do so).
pub async fn ensure_database(database_url: &str) -> Result<(), DbError> {
    let missing = match AsyncPgConnection::establish(database_url).await {
        Ok(_) => return Ok(()),
        Err(e) => {
            let text = e.to_string();
            if !text.contains("does not exist") {
                return Err(DbError::Connection(text));
            }
            text
        }
    };
    let (base, name) = database_url
        .split_once('?')
        .map_or(database_url, |(b, _)| b)
        .rsplit_once('/')
        .ok_or_else(|| DbError::Connection(missing.clone()))?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(DbError::Connection(missing));
    }
    let query = database_url
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    let mut admin = AsyncPgConnection::establish(&format!("{base}/postgres{query}"))
        .await
        .map_err(|e| DbError::Connection(format!("{missing}; creating it failed: {e}")))?;
    match diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
    {
        Ok(_) => {
            tracing::info!(database = name, "created database");
            Ok(())
        }
        // Another worker created it first.
        Err(diesel::result::Error::DatabaseError(_, info))
            if info.message().contains("already exists") =>
        {
            Ok(())
        }
        Err(e) => Err(DbError::Connection(format!(
            "{missing}; creating it failed: {e}"
        ))),
    }
}

/// Runs the embedded migrations and brings the entity tables to the YAML's shape (create missing
/// tables, add new nullable columns; refuse anything else), under an advisory lock.
pub async fn prepare_schema(database_url: &str) -> Result<evolve::SchemaChanges, DbError> {
    let connect = || async {
        AsyncPgConnection::establish(database_url)
            .await
            .map_err(|e| DbError::Connection(e.to_string()))
    };
    let mut lock = connect().await?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})"))
        .execute(&mut lock)
        .await?;
    let result = async {
        let mut harness = AsyncMigrationHarness::new(connect().await?);
        harness
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| DbError::Migration(e.to_string()))?;
        match evolve::reconcile(&mut lock, TABLES).await {
            Ok(changes) => Ok(changes),
            Err(evolve::ReconcileError::Query(e)) => Err(DbError::Query(e)),
            Err(e @ evolve::ReconcileError::Mismatch(_)) => Err(DbError::Schema(e.to_string())),
        }
    }
    .await;
    diesel::sql_query(format!("SELECT pg_advisory_unlock({SCHEMA_LOCK_KEY})"))
        .execute(&mut lock)
        .await?;
    result
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

/// `processed` status rows of a batch; the ids it returns are the messages not seen before.
const INSERT_STATUS_SQL: &str = "INSERT INTO message_status \
     (message_id, entity, status, received_at, row_count, attempts) \
     SELECT id, entity, 'processed', received_at, row_count, attempts \
     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::integer[], $5::integer[]) \
       AS u(id, entity, received_at, row_count, attempts) \
     ON CONFLICT (message_id) DO NOTHING RETURNING message_id";

#[derive(QueryableByName)]
struct InsertedId {
    #[diesel(sql_type = sql_types::Uuid)]
    message_id: Uuid,
}

/// Writes the rows of every message and a `processed` status row for each, in one transaction.
///
/// A message whose status row already exists was committed by an earlier delivery; its rows are
/// not written again, which makes redelivery harmless even for entities without unicity fields.
pub async fn write_messages(
    conn: &mut AsyncPgConnection,
    messages: &[PendingWrite<'_>],
) -> Result<WriteOutcome, DbError> {
    if messages.is_empty() {
        return Ok(WriteOutcome::default());
    }
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    let entities: Vec<&str> = messages.iter().map(|m| m.message.entity().name()).collect();
    let received: Vec<DateTime<Utc>> = messages.iter().map(|m| m.received_at).collect();
    let row_counts: Vec<i32> = messages
        .iter()
        .map(|m| i32::try_from(m.message.row_count()).unwrap_or(i32::MAX))
        .collect();
    let attempts: Vec<i32> = messages.iter().map(|m| m.attempts).collect();
    conn.transaction(async |conn| {
        // One static statement (prepared once per connection) whatever the batch size.
        let fresh: Vec<Uuid> = diesel::sql_query(INSERT_STATUS_SQL)
            .bind::<Array<sql_types::Uuid>, _>(&ids)
            .bind::<Array<Text>, _>(&entities)
            .bind::<Array<Timestamptz>, _>(&received)
            .bind::<Array<Integer>, _>(&row_counts)
            .bind::<Array<Integer>, _>(&attempts)
            .load::<InsertedId>(conn)
            .await?
            .into_iter()
            .map(|r| r.message_id)
            .collect();
        let mut fresh_set: std::collections::HashSet<Uuid> = fresh.iter().copied().collect();
        let mut batch = RowBatch::default();
        let mut outcome = WriteOutcome::default();
        for m in messages {
            // `remove`: the same message twice in one batch (a redelivery racing the first
            // delivery) is written once.
            if fresh_set.remove(&m.message_id) {
                batch.push(m.message, m.sequence);
                outcome.written.push(m.message_id);
            } else {
                outcome.already_processed.push(m.message_id);
            }
        }
        outcome.rows = batch.write(conn).await?;
        Ok::<_, DbError>(outcome)
    })
    .await
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

/// Records a dead letter and its `dead_lettered` status in one transaction (idempotent).
pub async fn record_dead_letter(
    conn: &mut AsyncPgConnection,
    dl: &DeadLetter,
) -> Result<(), DbError> {
    use schema::dead_letters as d;
    use schema::message_status as s;
    conn.transaction(async |conn| {
        diesel::insert_into(d::table)
            .values((
                d::message_id.eq(dl.message_id),
                d::entity.eq(&dl.entity),
                d::body.eq(&dl.body),
                d::reason.eq(&dl.reason),
                d::attempts.eq(dl.attempts),
            ))
            .on_conflict(d::message_id)
            .do_update()
            .set((
                d::reason.eq(&dl.reason),
                d::attempts.eq(dl.attempts),
                d::last_seen.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        diesel::insert_into(s::table)
            .values((
                s::message_id.eq(dl.message_id),
                s::entity.eq(&dl.entity),
                s::status.eq("dead_lettered"),
                s::received_at.eq(dl.received_at),
                s::attempts.eq(dl.attempts),
                s::error.eq(&dl.reason),
            ))
            .on_conflict(s::message_id)
            .do_nothing()
            .execute(conn)
            .await?;
        Ok::<_, DbError>(())
    })
    .await
}
