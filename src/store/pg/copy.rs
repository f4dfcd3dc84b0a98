//! Chunks written with `COPY … FROM STDIN (FORMAT binary)`: PostgreSQL's multi-row insert path,
//! which `INSERT … SELECT FROM unnest` does not take. diesel-async has no `COPY`, and its
//! connection keeps its tokio-postgres client to itself, so chunks go over clients of their
//! own ([`CopyClients`], opened like every connection: TLS and the SQLSTATE tap below
//! tokio-postgres). One transaction per write, as for single messages: the chunks' locks and
//! what earlier deliveries covered, the status rows of the runs written, then each table's
//! rows — `COPY` straight into the table while every key is new, or into a temporary staging
//! table merged with the entity's `ON CONFLICT` rule (the same as [`WriteMode::Upsert`]).

use std::collections::HashSet;
use std::sync::Mutex;

use futures::SinkExt as _;
use nomnom_runtime::{RowCounts, TableCopy, WriteMode};
use uuid::Uuid;

use super::connect::{PgTarget, connect_client};
use super::error::{DbError, SqlState};
use super::write::{
    CHUNK_STATUS_SQL, ChunkIds, INSERT_STATUS_SQL, InsertFirst, LOCK_CHUNKS_SQL, StatusColumns,
    UNIQUE_VIOLATION, UPSERT_STATUS_SQL, plan_units, push_units,
};
use crate::generated::RowBatch;
use crate::store::{PendingWrite, WriteOutcome};

/// Idle tokio-postgres clients for chunk writes, opened when first needed (at most one per
/// concurrent write: the worker's `WORKER_CONCURRENCY`).
pub struct CopyClients {
    target: PgTarget,
    idle: Mutex<Vec<tokio_postgres::Client>>,
}

impl CopyClients {
    /// Clients to `target`.
    pub fn new(target: PgTarget) -> Self {
        Self {
            target,
            idle: Mutex::new(Vec::new()),
        }
    }

    async fn take(&self) -> Result<tokio_postgres::Client, DbError> {
        let idle = self.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
        match idle {
            Some(client) if !client.is_closed() => Ok(client),
            _ => Ok(connect_client(&self.target).await?.0),
        }
    }

    fn put_back(&self, client: tokio_postgres::Client) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(client);
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        let sqlstate = e.code().and_then(|c| SqlState::new(c.code()));
        // tokio-postgres says only "db error"; the server's own message says why.
        let message = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        };
        DbError::Statement { message, sqlstate }
    }
}

/// Writes chunks (every write's content is [`Content::Chunk`]) in one transaction over a copy
/// client; `first` decides whether `COPY` straight into the tables is tried before staging.
pub async fn write_chunks(
    clients: &CopyClients,
    chunks: &[PendingWrite<'_>],
    first: &InsertFirst,
) -> Result<WriteOutcome, DbError> {
    if chunks.is_empty() {
        return Ok(WriteOutcome::default());
    }
    let mut client = clients.take().await?;
    let mut mode = first.next_mode();
    let result = loop {
        match write_once(&mut client, chunks, mode).await {
            Ok(outcome) => {
                if mode == WriteMode::Insert {
                    first.inserted();
                }
                break Ok(outcome);
            }
            Err(e)
                if mode == WriteMode::Insert
                    && e.sqlstate().is_some_and(|c| c.as_str() == UNIQUE_VIOLATION) =>
            {
                first.conflicted();
                mode = WriteMode::Upsert;
            }
            Err(e) => break Err(e),
        }
    };
    // A client whose write failed is not reused (it may be mid-statement or gone).
    if result.is_ok() && !client.is_closed() {
        clients.put_back(client);
    }
    result
}

/// One attempt in `mode`: `Insert` fails with `unique_violation` if a key exists already.
async fn write_once(
    client: &mut tokio_postgres::Client,
    chunks: &[PendingWrite<'_>],
    mode: WriteMode,
) -> Result<WriteOutcome, DbError> {
    let tx = client.transaction().await?;
    let ids = ChunkIds::of(chunks);
    tx.execute(LOCK_CHUNKS_SQL, &[&ids.keys]).await?;
    let runs: Vec<(Uuid, i32)> = tx
        .query(CHUNK_STATUS_SQL, &[&ids.lo, &ids.hi])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let (units, members_already) = plan_units(chunks, runs);
    let status = StatusColumns::of(&units, chunks);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &status.ids,
        &status.entities,
        &status.received,
        &status.row_counts,
        &status.attempts,
        &status.members,
    ];
    // Under the chunks' locks, what the check above did not cover is new: the plain insert
    // cannot meet a run of an earlier delivery. `Upsert` keeps to what was really inserted.
    let fresh: Option<HashSet<Uuid>> = match mode {
        WriteMode::Insert => {
            tx.execute(INSERT_STATUS_SQL, &params).await?;
            None
        }
        WriteMode::Upsert => Some(
            tx.query(UPSERT_STATUS_SQL, &params)
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect(),
        ),
    };
    let mut batch = RowBatch::default();
    let mut outcome = push_units(&mut batch, chunks, &units, fresh, members_already);
    let mut counts = Vec::new();
    for table in batch.copy() {
        let written = copy_table(&tx, table, mode).await?;
        counts.push(written);
    }
    outcome.rows = RowCounts(counts);
    tx.commit().await?;
    Ok(outcome)
}

/// Stores one table's rows: `COPY` into it, or into its staging table and the merge.
async fn copy_table(
    tx: &tokio_postgres::Transaction<'_>,
    table: TableCopy,
    mode: WriteMode,
) -> Result<(&'static str, usize), DbError> {
    if table.rows == 0 {
        return Ok((table.table, 0));
    }
    let data = table.data.map_err(DbError::Encode)?;
    let staged = match (mode, table.stage_sql, table.stage_copy_sql, table.merge_sql) {
        (WriteMode::Upsert, Some(stage), Some(stage_copy), Some(merge)) => {
            Some((stage, stage_copy, merge))
        }
        _ => None,
    };
    let copy_sql = staged.map_or(table.copy_sql, |(_, copy, _)| copy);
    if let Some((stage, _, _)) = staged {
        tx.batch_execute(stage).await?;
    }
    let sink = tx.copy_in::<_, bytes::Bytes>(copy_sql).await?;
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from(data)).await?;
    let copied = sink.finish().await?;
    let written = match staged {
        Some((_, _, merge)) => tx.execute(merge, &[]).await?,
        None => copied,
    };
    Ok((table.table, usize::try_from(written).unwrap_or(usize::MAX)))
}
