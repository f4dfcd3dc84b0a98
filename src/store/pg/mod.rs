//! PostgreSQL, the shipped [`Store`]: rows and `message_status` rows in one transaction per
//! batch, dead letters in `dead_letters`, errors classified by SQLSTATE.
//!
//! `connect` (connections with an SQLSTATE tap, the pool, the target parsed once), `copy`
//! (chunks written with binary `COPY`), `tls`
//! (`sslmode`), `schema` (migrations and preparation), `evolve` (entity tables against the
//! YAML), `write` (the statements), `read` (what the console reads), `error` (classification), `config` (`DATABASE_URL`).

pub mod config;
pub mod connect;
pub mod copy;
pub mod error;
pub mod evolve;
pub mod read;
pub mod schema;
pub mod tls;
pub mod write;

use std::collections::HashSet;
use std::sync::Arc;

use diesel_async::RunQueryDsl;
use uuid::Uuid;

pub use connect::{Database, DbPool, PgConnection, PgManager, PooledConnection, connection};
pub use error::{ConnectError, DbError, SqlState, classify_sqlstate};
pub use write::{InsertFirst, write_messages};

use chrono::{DateTime, Utc};

use crate::store::{
    AdminAction, DeadLetter, DeadLetterFilter, DeadLetterGroup, DeadLetterPage, EntityCounts,
    MessageTrace, PendingWrite, SchemaChanges, SchemaHead, Store, StoreFuture, StoredAction,
    StoredDeadLetter, StoredStatus, WriteOutcome,
};

/// Creates a connection pool of `size` connections to `database_url`.
pub fn pool(database_url: &str, size: usize) -> Result<DbPool, DbError> {
    Database::parse(database_url)?.pool(size)
}

/// Opens one connection to `database_url` outside any pool.
pub async fn connect(database_url: &str) -> Result<PgConnection, DbError> {
    Database::parse(database_url)?.connect().await
}

/// Creates the database named in `database_url` if it does not exist yet.
pub async fn ensure_database(database_url: &str) -> Result<(), DbError> {
    Database::parse(database_url)?.ensure_exists().await
}

/// Prepares the database at `database_url` (see [`Store::prepare`]).
pub async fn prepare_schema(database_url: &str) -> Result<SchemaChanges, DbError> {
    schema::prepare(&Database::parse(database_url)?, schema::WhenNewer::Refrain).await
}

/// [`prepare_schema`] even when the database's schema is newer than this build's, making this
/// build's the current one (`worker schema apply --make-current`: a rollback).
pub async fn make_schema_current(database_url: &str) -> Result<SchemaChanges, DbError> {
    schema::prepare(
        &Database::parse(database_url)?,
        schema::WhenNewer::MakeCurrent,
    )
    .await
}

/// What [`prepare_schema`] would change in the database at `database_url`, changing nothing
/// (`worker schema plan`).
pub async fn plan_schema(database_url: &str) -> Result<evolve::SchemaPlan, DbError> {
    schema::plan(&Database::parse(database_url)?).await
}

/// The schema ledger of the database at `database_url` (see [`Store::schema_head`]).
pub async fn schema_head_at(database_url: &str) -> Result<SchemaHead, DbError> {
    let mut conn = Database::parse(database_url)?.connect().await?;
    schema::head(&mut conn).await
}

/// Refuses the database at `database_url` when its schema is neither this build's nor its
/// `entities.lock`'s (see [`SchemaHead::unknown_to_this_build`]), naming both versions and what
/// this build would change there (or why it cannot).
pub async fn refuse_unknown_shape(database_url: &str) -> Result<(), DbError> {
    let head = match schema_head_at(database_url).await {
        Ok(head) => head,
        // No database yet (`apply` creates it): nothing to refuse.
        Err(e) if e.sqlstate().is_some_and(|c| c.as_str() == "3D000") => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(other) = head.unknown_to_this_build() else {
        return Ok(());
    };
    let differences = match plan_schema(database_url).await {
        Ok(plan) if plan.is_empty() => "its tables have this build's shape".to_string(),
        Ok(plan) => format!(
            "this build would run:\n  {}",
            plan.statements().join("\n  ")
        ),
        Err(e) => e.to_string(),
    };
    let lock = match crate::generated::LOCK_SCHEMA_VERSION {
        Some(v) => format!("entities.lock's {v}"),
        None => "no entities.lock".to_string(),
    };
    Err(DbError::Schema(format!(
        "the database's schema is {} (applied {}): neither this build's YAML ({}) nor {lock}; it was brought to another build's shape. {differences}\nRun plan/apply from the build of that schema, or pass --any-shape once the plan above is what you want",
        other.version,
        other.applied_at.to_rfc3339(),
        crate::generated::SCHEMA_VERSION
    )))
}

/// The PostgreSQL [`Store`].
#[derive(Clone)]
pub struct PgStore {
    database: Database,
    pool: DbPool,
    first: Arc<InsertFirst>,
    /// Clients of chunk writes (`COPY`), and their own insert-first state.
    copy: Arc<copy::CopyClients>,
    copy_first: Arc<InsertFirst>,
}

impl PgStore {
    /// A store over `database` with a pool of `pool_size` connections (opened when first used).
    pub fn new(database: Database, pool_size: usize) -> Result<Self, DbError> {
        Ok(Self {
            pool: database.pool(pool_size)?,
            copy: Arc::new(copy::CopyClients::new(database.target().clone())),
            database,
            first: Default::default(),
            copy_first: Default::default(),
        })
    }

    /// A store over the database at `database_url` (see [`PgStore::new`]).
    pub fn open(database_url: &str, pool_size: usize) -> Result<Self, DbError> {
        Self::new(Database::parse(database_url)?, pool_size)
    }

    /// The connection pool.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }
}

impl Store for PgStore {
    fn prepare(&self) -> StoreFuture<'_, SchemaChanges> {
        Box::pin(
            async move { Ok(schema::prepare(&self.database, schema::WhenNewer::Refrain).await?) },
        )
    }

    fn write_batch<'a>(
        &'a self,
        messages: &'a [PendingWrite<'a>],
    ) -> StoreFuture<'a, WriteOutcome> {
        Box::pin(async move {
            // Chunks go by `COPY` over a client of their own; messages by diesel. Each in its
            // own transaction: every message and chunk is atomic with its status rows either
            // way, and a write retried after either failed skips what the other committed.
            let (chunks, singles): (Vec<PendingWrite<'_>>, Vec<PendingWrite<'_>>) = messages
                .iter()
                .partition(|m| matches!(m.content, crate::store::Content::Chunk(_)));
            let mut outcome = WriteOutcome::default();
            if !singles.is_empty() {
                let mut conn = connection(&self.pool).await?;
                outcome = write_messages(&mut conn, &singles, &self.first).await?;
            }
            if !chunks.is_empty() {
                let copied = copy::write_chunks(&self.copy, &chunks, &self.copy_first).await?;
                outcome.written.extend(copied.written);
                outcome.already_processed.extend(copied.already_processed);
                outcome.members_written += copied.members_written;
                outcome.members_already += copied.members_already;
                outcome.rows.0.extend(copied.rows.0);
            }
            Ok(outcome)
        })
    }

    fn committed_among<'a>(&'a self, ids: &'a [Uuid]) -> StoreFuture<'a, HashSet<Uuid>> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(write::committed_among(&mut conn, ids).await?)
        })
    }

    fn status_runs(&self, first: Uuid, last: Uuid) -> StoreFuture<'_, Vec<(Uuid, i32)>> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(write::status_runs(&mut conn, first, last).await?)
        })
    }

    fn message_status(&self, id: Uuid) -> StoreFuture<'_, Option<StoredStatus>> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(write::message_status(&mut conn, id).await?)
        })
    }

    fn record_dead_letter<'a>(&'a self, dead: &'a DeadLetter) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(write::record_dead_letter(&mut conn, dead).await?)
        })
    }

    fn dead_letters<'a>(
        &'a self,
        page: &'a DeadLetterPage,
    ) -> StoreFuture<'a, Vec<StoredDeadLetter>> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(write::dead_letters(&mut conn, page).await?)
        })
    }

    fn count_dead_letters<'a>(&'a self, filter: &'a DeadLetterFilter) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(write::count_dead_letters(&mut conn, filter).await?)
        })
    }

    fn discard_dead_letter<'a>(
        &'a self,
        message_id: Uuid,
        by: &'a str,
        note: &'a str,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(write::discard_dead_letter(&mut conn, message_id, by, note).await?)
        })
    }

    fn record_action<'a>(&'a self, action: &'a AdminAction) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(write::record_action(&mut conn, action).await?)
        })
    }

    fn admin_actions(&self, limit: usize) -> StoreFuture<'_, Vec<StoredAction>> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(read::admin_actions(&mut conn, limit).await?)
        })
    }

    fn entity_counts(&self, since: DateTime<Utc>) -> StoreFuture<'_, Vec<EntityCounts>> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(read::entity_counts(&mut conn, since).await?)
        })
    }

    fn dead_letter_groups(&self) -> StoreFuture<'_, Vec<DeadLetterGroup>> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(read::dead_letter_groups(&mut conn).await?)
        })
    }

    fn message_trace(&self, id: Uuid, row_limit: usize) -> StoreFuture<'_, MessageTrace> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            Ok(read::message_trace(&mut conn, id, row_limit).await?)
        })
    }

    fn probe(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            conn.clear_sqlstate();
            let result = diesel::sql_query("SELECT 1").execute(&mut **conn).await;
            result
                .map(drop)
                .map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()).into())
        })
    }

    fn schema_head(&self) -> StoreFuture<'_, SchemaHead> {
        Box::pin(async move {
            let mut conn = connection(&self.pool).await?;
            conn.clear_sqlstate();
            let result = schema::head(&mut conn).await;
            result.map_err(|e| e.with_sqlstate(conn.take_sqlstate()).into())
        })
    }
}
