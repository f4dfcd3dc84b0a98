//! The infrastructure tables (`migrations/`, embedded; their diesel definitions) and preparing
//! a database for this build: migrations, then the entity tables brought to the YAML's shape.

use diesel_async::{AsyncMigrationHarness, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::connect::Database;
use super::error::DbError;
use super::evolve;
use crate::generated::TABLES;
use crate::store::{SchemaChanges, SchemaHead};

/// Infrastructure migrations (`migrations/`), embedded in the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory lock key held while the schema is set up, so concurrent workers do not race.
const SCHEMA_LOCK_KEY: i64 = 0x6e6f_6d6e_6f6d;

/// Whether [`prepare`] may apply this build's schema to a database whose ledger is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenNewer {
    /// Apply nothing and say so (`SchemaChanges::behind`): a worker start during a rolling
    /// deploy, or an operator's `apply` without more.
    Refrain,
    /// Apply it and make it the database's current schema: a rollback an operator asked for.
    MakeCurrent,
}

/// Creates the database if missing, runs the embedded migrations and brings the entity tables
/// to the YAML's shape (create missing
/// tables, add new nullable columns; refuse anything else), under an advisory lock — unless
/// the database's schema is newer than this build's and `when_newer` says to refrain.
pub async fn prepare(database: &Database, when_newer: WhenNewer) -> Result<SchemaChanges, DbError> {
    database.ensure_exists().await?;
    let mut lock = database.connect().await?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({SCHEMA_LOCK_KEY})"))
        .execute(&mut lock)
        .await?;
    let result = async {
        let mut harness = AsyncMigrationHarness::new(database.connect().await?.into_inner());
        harness
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| DbError::Migration(e.to_string()))?;
        if when_newer == WhenNewer::Refrain
            && let Some(newer) = head(&mut lock).await?.newer_than_own()
        {
            return Ok(SchemaChanges {
                behind: Some(newer),
                ..SchemaChanges::default()
            });
        }
        match evolve::reconcile(&mut lock, TABLES).await {
            Ok(changes) => {
                record_ledger(&mut lock).await?;
                Ok(changes)
            }
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

/// Records this build's schema in the database's ledger after its tables were brought to it:
/// once per version, and again (its time now) when another was applied since — a rollback
/// makes the older schema current.
async fn record_ledger(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), DbError> {
    diesel::sql_query(
        "INSERT INTO nomnom_schema_ledger (version, ledger) VALUES ($1, $2::jsonb) \
         ON CONFLICT (version) DO UPDATE SET applied_at = now() \
         WHERE nomnom_schema_ledger.applied_at < (SELECT max(applied_at) FROM nomnom_schema_ledger)",
    )
    .bind::<diesel::sql_types::Text, _>(crate::generated::SCHEMA_VERSION)
    .bind::<diesel::sql_types::Text, _>(crate::generated::SCHEMA_LEDGER)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    latest: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    latest_at: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Timestamptz>)]
    own_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The database's schema ledger as this build needs it (empty before the first migrations).
pub async fn head(conn: &mut diesel_async::AsyncPgConnection) -> Result<SchemaHead, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Present {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        present: bool,
    }
    let present: Present =
        diesel::sql_query("SELECT to_regclass('nomnom_schema_ledger') IS NOT NULL AS present")
            .get_result(conn)
            .await?;
    if !present.present {
        return Ok(SchemaHead::default());
    }
    let row: HeadRow = diesel::sql_query(
        "SELECT l.version AS latest, l.applied_at AS latest_at, \
         (SELECT applied_at FROM nomnom_schema_ledger WHERE version = $1) AS own_at \
         FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT version, applied_at \
         FROM nomnom_schema_ledger ORDER BY applied_at DESC, version LIMIT 1) AS l ON true",
    )
    .bind::<diesel::sql_types::Text, _>(crate::generated::SCHEMA_VERSION)
    .get_result(conn)
    .await?;
    Ok(SchemaHead {
        latest: row.latest.zip(row.latest_at),
        own_applied_at: row.own_at,
    })
}

/// What [`prepare`] would change in the database's entity tables, changing nothing (the
/// database must exist; infrastructure migrations are not listed): the plan, or every
/// mismatch that needs an operator.
pub async fn plan(database: &Database) -> Result<evolve::SchemaPlan, DbError> {
    let mut conn = database.connect().await?;
    match evolve::plan(&mut conn, TABLES).await {
        Ok(plan) => Ok(plan),
        Err(evolve::ReconcileError::Query(e)) => Err(DbError::from(e)),
        Err(e @ evolve::ReconcileError::Mismatch(_)) => Err(DbError::Schema(e.to_string())),
    }
}

diesel::table! {
    /// One row per message whose rows were committed or that was dead-lettered.
    message_status (message_id) {
        /// The message id (`Nats-Msg-Id`).
        message_id -> Uuid,
        /// The root entity it was posted as.
        entity -> Text,
        /// `processed` or `dead_lettered`.
        status -> Text,
        /// When the api accepted it.
        received_at -> Timestamptz,
        /// When the worker committed its outcome.
        processed_at -> Timestamptz,
        /// Rows written for it (root and derived).
        row_count -> Integer,
        /// Deliveries it took.
        attempts -> Integer,
        /// Why it was dead-lettered, if it was.
        error -> Nullable<Text>,
        /// Of a chunk's run: how many of its members the row covers (NULL: one message).
        members -> Nullable<Integer>,
    }
}

diesel::table! {
    /// Messages that could not be processed, with the reason.
    dead_letters (message_id) {
        /// The message id.
        message_id -> Uuid,
        /// The root entity it was posted as.
        entity -> Text,
        /// The message body's bytes as received.
        body -> Binary,
        /// Why it could not be stored.
        reason -> Text,
        /// Deliveries it took.
        attempts -> Integer,
        /// When it was first dead-lettered.
        first_seen -> Timestamptz,
        /// When it was last dead-lettered (a replay can fail again).
        last_seen -> Timestamptz,
        /// Epoch of the stream where the message first arrived.
        position_epoch -> BigInt,
        /// Its sequence there.
        position_seq -> BigInt,
        /// The id of the last dead-lettering recorded (recording it again changes nothing).
        record_id -> Text,
        /// How many times the message was dead-lettered (replays that failed again).
        times -> Integer,
        /// The reason's class (`store::ReasonClass::label`).
        reason_class -> Text,
    }
}
