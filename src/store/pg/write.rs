//! Writing a batch with its status rows in one transaction (plain inserts first, upserts after
//! a conflict), committed lookups, message status and the dead-letter records.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{self, Array, Integer, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use nomnom_runtime::WriteMode;
use uuid::Uuid;

use super::connect::PgConnection;
use super::error::DbError;
use super::schema;
use crate::envelope::{MAX_CHUNK_MEMBERS, chunk_member_id, chunk_of};
use crate::generated::RowBatch;
use crate::store::{
    AdminAction, ChunkMember, Content, DeadLetter, DeadLetterFilter, DeadLetterPage, PendingWrite,
    ReasonClass, StoredDeadLetter, StoredStatus, WriteOutcome,
};

/// `INSERT ... SELECT FROM unnest(...)` of a batch's `processed` status rows.
macro_rules! insert_status_sql {
    () => {
        "INSERT INTO message_status \
         (message_id, entity, status, received_at, row_count, attempts, members) \
         SELECT id, entity, 'processed', received_at, row_count, attempts, members \
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::integer[], $5::integer[], \
                     $6::integer[]) \
           AS u(id, entity, received_at, row_count, attempts, members)"
    };
}

/// Status rows of a batch believed new: fails with `unique_violation` if any message has one.
pub(super) const INSERT_STATUS_SQL: &str = insert_status_sql!();

/// Status rows of a batch; the ids it returns are the messages not seen before.
pub(super) const UPSERT_STATUS_SQL: &str = concat!(
    insert_status_sql!(),
    " ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
);

/// Serialises writes of the same chunks (a redelivery racing the first delivery): the key
/// space `CHUNK_LOCK_CLASS` of two-int advisory locks, one key per chunk, taken in order.
pub(super) const LOCK_CHUNKS_SQL: &str =
    "SELECT pg_advisory_xact_lock(1852796014, k) FROM unnest($1::integer[]) AS k";

/// The status rows within each chunk's ids (`lo`..`hi`): what earlier deliveries covered.
pub(super) const CHUNK_STATUS_SQL: &str = "SELECT s.message_id, COALESCE(s.members, 1) AS members \
     FROM unnest($1::uuid[], $2::uuid[]) AS c(lo, hi) \
     JOIN message_status s ON s.message_id BETWEEN c.lo AND c.hi";

/// `unique_violation`: a plain insert met an existing key.
pub(super) const UNIQUE_VIOLATION: &str = "23505";

/// Longest run of batches written with upserts after plain inserts met existing keys.
const MAX_UPSERT_RUN: u32 = 1024;

#[derive(QueryableByName)]
struct InsertedId {
    #[diesel(sql_type = sql_types::Uuid)]
    message_id: Uuid,
}

#[derive(QueryableByName)]
struct CoveredRun {
    #[diesel(sql_type = sql_types::Uuid)]
    message_id: Uuid,
    #[diesel(sql_type = Integer)]
    members: i32,
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
    pub(super) fn conflicted(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let run = (state.1 * 2).clamp(8, MAX_UPSERT_RUN);
        *state = (run, run);
    }

    /// A plain insert went through: the next run, if any, is shorter.
    pub(super) fn inserted(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 /= 2;
    }
}

/// What one status row stands for: a message, or a run of consecutive members of a chunk.
pub(super) struct Unit<'a> {
    /// The message's id, or the run's first member's.
    pub(super) id: Uuid,
    /// Which pending write it comes from.
    pub(super) write: usize,
    pub(super) entity: &'a str,
    pub(super) received_at: DateTime<Utc>,
    pub(super) attempts: i32,
    /// The run's members (`None`: the write's one message).
    pub(super) run: Option<&'a [ChunkMember]>,
}

impl Unit<'_> {
    fn row_count(&self, write: &PendingWrite<'_>) -> usize {
        match (self.run, write.content) {
            (Some(run), _) => run.iter().map(|m| m.message.row_count()).sum(),
            (None, Content::Message(m)) => m.row_count(),
            (None, Content::Chunk(_)) => 0,
        }
    }
}

/// The status-row columns of a batch, one array per column.
pub(super) struct StatusColumns<'a> {
    pub(super) ids: Vec<Uuid>,
    pub(super) entities: Vec<&'a str>,
    pub(super) received: Vec<DateTime<Utc>>,
    pub(super) row_counts: Vec<i32>,
    pub(super) attempts: Vec<i32>,
    pub(super) members: Vec<Option<i32>>,
}

impl<'a> StatusColumns<'a> {
    pub(super) fn of(units: &[Unit<'a>], writes: &[PendingWrite<'_>]) -> Self {
        Self {
            ids: units.iter().map(|u| u.id).collect(),
            entities: units.iter().map(|u| u.entity).collect(),
            received: units.iter().map(|u| u.received_at).collect(),
            row_counts: units
                .iter()
                .map(|u| i32::try_from(u.row_count(&writes[u.write])).unwrap_or(i32::MAX))
                .collect(),
            attempts: units.iter().map(|u| u.attempts).collect(),
            members: units
                .iter()
                .map(|u| u.run.map(|r| i32::try_from(r.len()).unwrap_or(i32::MAX)))
                .collect(),
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
            .bind::<Array<sql_types::Nullable<Integer>>, _>(&$status.members)
    };
}

/// Writes the rows of every message and a `processed` status row for each, in one transaction.
///
/// A message whose status row already exists was committed by an earlier delivery; its rows are
/// not written again, which makes redelivery harmless even for entities without unicity fields.
/// A chunk's members that an earlier delivery covered are skipped the same way; the rest are
/// written with one status row per run of consecutive members. `first` decides whether plain
/// inserts are tried before upserts.
pub async fn write_messages(
    conn: &mut PgConnection,
    messages: &[PendingWrite<'_>],
    first: &InsertFirst,
) -> Result<WriteOutcome, DbError> {
    if messages.is_empty() {
        return Ok(WriteOutcome::default());
    }
    if first.next_mode() == WriteMode::Insert {
        conn.clear_sqlstate();
        let inserted = write_units(conn, messages, WriteMode::Insert).await;
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
    let result = write_units(conn, messages, WriteMode::Upsert).await;
    result.map_err(|e| e.with_sqlstate(conn.take_sqlstate()))
}

/// The lock key of chunk `id` (its 32 leading bits: chunk ids are time-ordered or hashes).
fn chunk_lock_key(id: &Uuid) -> i32 {
    let b = id.as_bytes();
    // Bytes 10..14 vary between the chunks of one load; the leading bytes between loads.
    i32::from_be_bytes([b[0] ^ b[10], b[1] ^ b[11], b[2] ^ b[12], b[3] ^ b[13]])
}

/// The chunks among the writes: their lock keys (sorted, once each) and the first and last
/// id each can have, for [`LOCK_CHUNKS_SQL`] and [`CHUNK_STATUS_SQL`].
pub(super) struct ChunkIds {
    pub(super) keys: Vec<i32>,
    pub(super) lo: Vec<Uuid>,
    pub(super) hi: Vec<Uuid>,
}

impl ChunkIds {
    pub(super) fn of(messages: &[PendingWrite<'_>]) -> Self {
        let lo: Vec<Uuid> = messages
            .iter()
            .filter(|m| matches!(m.content, Content::Chunk(_)))
            .map(|m| m.message_id)
            .collect();
        let hi = lo
            .iter()
            .map(|id| chunk_member_id(id, MAX_CHUNK_MEMBERS - 1))
            .collect();
        let mut keys: Vec<i32> = lo.iter().map(chunk_lock_key).collect();
        keys.sort_unstable();
        keys.dedup();
        Self { keys, lo, hi }
    }
}

/// The units of the writes: each message, and each run of a chunk's members that no status row
/// of `runs` (what [`CHUNK_STATUS_SQL`] found) covers yet. Returns them with the members
/// already covered.
pub(super) fn plan_units<'a>(
    messages: &'a [PendingWrite<'a>],
    runs: impl IntoIterator<Item = (Uuid, i32)>,
) -> (Vec<Unit<'a>>, u64) {
    let mut covered: HashSet<Uuid> = HashSet::new();
    for (id, members) in runs {
        let (chunk, first) = chunk_of(&id);
        let count = usize::try_from(members).unwrap_or(0);
        for index in first..(first + count).min(MAX_CHUNK_MEMBERS) {
            covered.insert(chunk_member_id(&chunk, index));
        }
    }
    let mut units = Vec::with_capacity(messages.len());
    let mut already = 0u64;
    let mut seen_chunks: HashSet<Uuid> = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        let members = match m.content {
            Content::Message(message) => {
                units.push(Unit {
                    id: m.message_id,
                    write: i,
                    entity: message.entity().name(),
                    received_at: m.received_at,
                    attempts: m.attempts,
                    run: None,
                });
                continue;
            }
            Content::Chunk(members) => members,
        };
        // The same chunk twice in one batch (a redelivery racing the first): written once.
        if !seen_chunks.insert(m.message_id) {
            already += members.len() as u64;
            continue;
        }
        let entity = m.entity();
        let mut start = 0;
        while start < members.len() {
            let member_id = chunk_member_id(&m.message_id, members[start].index);
            if covered.contains(&member_id) {
                already += 1;
                start += 1;
                continue;
            }
            let mut end = start + 1;
            while end < members.len()
                && members[end].index == members[end - 1].index + 1
                && !covered.contains(&chunk_member_id(&m.message_id, members[end].index))
            {
                end += 1;
            }
            units.push(Unit {
                id: member_id,
                write: i,
                entity,
                received_at: m.received_at,
                attempts: m.attempts,
                run: Some(&members[start..end]),
            });
            start = end;
        }
    }
    (units, already)
}

/// [`plan_units`] over the status rows read now, under the chunks' locks (in the transaction).
async fn units<'a>(
    conn: &mut AsyncPgConnection,
    messages: &'a [PendingWrite<'a>],
) -> Result<(Vec<Unit<'a>>, u64), DbError> {
    let ids = ChunkIds::of(messages);
    let mut runs = Vec::new();
    if !ids.lo.is_empty() {
        diesel::sql_query(LOCK_CHUNKS_SQL)
            .bind::<Array<Integer>, _>(&ids.keys)
            .execute(conn)
            .await?;
        let found: Vec<CoveredRun> = diesel::sql_query(CHUNK_STATUS_SQL)
            .bind::<Array<sql_types::Uuid>, _>(&ids.lo)
            .bind::<Array<sql_types::Uuid>, _>(&ids.hi)
            .load(conn)
            .await?;
        runs.extend(found.into_iter().map(|r| (r.message_id, r.members)));
    }
    Ok(plan_units(messages, runs))
}

/// Adds to `batch` the rows of every unit whose status row was inserted (`fresh`: the ids an
/// upsert of the status rows returned; `None`: all, a plain insert) and says what that writes:
/// the messages and chunks written or already stored, and the members of each kind.
pub(super) fn push_units<'a>(
    batch: &mut RowBatch<'a>,
    messages: &'a [PendingWrite<'a>],
    units: &[Unit<'a>],
    mut fresh: Option<HashSet<Uuid>>,
    members_already: u64,
) -> WriteOutcome {
    let mut outcome = WriteOutcome {
        members_already,
        ..Default::default()
    };
    let mut wrote = vec![false; messages.len()];
    for unit in units {
        // `remove`: the same message twice in one batch (a redelivery racing the first
        // delivery) is written once.
        if let Some(fresh) = &mut fresh
            && !fresh.remove(&unit.id)
        {
            outcome.members_already += unit.run.map_or(0, |r| r.len() as u64);
            continue;
        }
        let write = &messages[unit.write];
        match (unit.run, write.content) {
            (Some(run), _) => {
                for member in run {
                    batch.push(
                        &member.message,
                        crate::runtime::Origin {
                            position: write.position,
                            message_id: chunk_member_id(&write.message_id, member.index),
                        },
                    );
                }
                outcome.members_written += run.len() as u64;
            }
            (None, Content::Message(message)) => batch.push(message, write.origin()),
            (None, Content::Chunk(_)) => {}
        }
        wrote[unit.write] = true;
    }
    for (m, wrote) in messages.iter().zip(wrote) {
        if wrote {
            outcome.written.push(m.message_id);
        } else {
            outcome.already_processed.push(m.message_id);
        }
    }
    outcome
}

/// One transaction: status rows of every unit, then the rows of the units — all of them with
/// plain inserts (`Insert`: fails with `unique_violation` if anything exists), or with upserts
/// of the units whose status row is new (`Upsert`).
async fn write_units(
    conn: &mut AsyncPgConnection,
    messages: &[PendingWrite<'_>],
    mode: WriteMode,
) -> Result<WriteOutcome, DbError> {
    conn.transaction(async |conn| {
        let replayed = reopen_replayed(conn, messages).await?;
        let (units, members_already) = units(conn, messages).await?;
        let status = StatusColumns::of(&units, messages);
        let fresh: Option<HashSet<Uuid>> = match mode {
            WriteMode::Insert => {
                bind_status!(INSERT_STATUS_SQL, status)
                    .execute(conn)
                    .await?;
                None
            }
            // One static statement (prepared once per connection) whatever the batch size.
            WriteMode::Upsert => Some(
                bind_status!(UPSERT_STATUS_SQL, status)
                    .load::<InsertedId>(conn)
                    .await?
                    .into_iter()
                    .map(|r| r.message_id)
                    .collect(),
            ),
        };
        let mut batch = RowBatch::default();
        let mut outcome = push_units(&mut batch, messages, &units, fresh, members_already);
        outcome.rows = batch.write(conn, mode).await?;
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
                .bind::<Text, _>(dl.class.label())
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

/// `query` narrowed to the dead letters of `filter` (every condition given must hold).
fn filtered<'a, ST>(
    mut query: schema::dead_letters::BoxedQuery<'a, diesel::pg::Pg, ST>,
    filter: &DeadLetterFilter,
) -> schema::dead_letters::BoxedQuery<'a, diesel::pg::Pg, ST> {
    use schema::dead_letters as d;
    if let Some(id) = filter.message_id {
        query = query.filter(d::message_id.eq(id));
    }
    if let Some(text) = &filter.reason {
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        query = query.filter(d::reason.ilike(format!("%{escaped}%")));
    }
    if let Some(since) = filter.since {
        query = query.filter(d::first_seen.ge(since));
    }
    if let Some(class) = filter.class {
        query = query.filter(d::reason_class.eq(class.label()));
    }
    if let Some(entity) = &filter.entity {
        // As `same_entity_name` compares: any case, `_` and `-` ignored.
        let wanted: String = entity
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        query = query.filter(
            diesel::dsl::sql::<sql_types::Bool>("lower(translate(entity, '_-', '')) = ")
                .bind::<Text, _>(wanted),
        );
    }
    query
}

/// How many dead letters `filter` matches.
pub async fn count_dead_letters(
    conn: &mut PgConnection,
    filter: &DeadLetterFilter,
) -> Result<i64, DbError> {
    conn.clear_sqlstate();
    let query = filtered(schema::dead_letters::table.count().into_boxed(), filter);
    let counted: Result<i64, _> = query.get_result(&mut **conn).await;
    counted.map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))
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
            d::reason_class,
            d::attempts,
            d::times,
            d::position_epoch,
            d::position_seq,
            d::first_seen,
            d::last_seen,
        ))
        .order((d::first_seen.asc(), d::message_id.asc()))
        .limit(i64::try_from(page.limit).unwrap_or(i64::MAX))
        .into_boxed();
    query = filtered(query, &page.filter);
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
        String,
        i32,
        i32,
        i64,
        i64,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let rows: Result<Vec<Row>, _> = query.load(&mut **conn).await;
    let rows = rows.map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))?;
    Ok(rows
        .into_iter()
        .map(
            |(
                message_id,
                entity,
                body,
                reason,
                class,
                attempts,
                times,
                epoch,
                sequence,
                first_seen,
                last_seen,
            )| {
                StoredDeadLetter {
                    message_id,
                    entity,
                    body: body.into(),
                    class: ReasonClass::from_label(&class),
                    reason,
                    attempts,
                    times,
                    position: crate::runtime::Position { epoch, sequence },
                    first_seen,
                    last_seen,
                }
            },
        )
        .collect())
}

/// Moves a dead letter's record to `discarded_dead_letters` with who and why, in one statement;
/// `false` when there was none.
pub async fn discard_dead_letter(
    conn: &mut PgConnection,
    message_id: Uuid,
    by: &str,
    note: &str,
) -> Result<bool, DbError> {
    conn.clear_sqlstate();
    let by = crate::text::printable(by);
    let note = crate::text::printable(note);
    let moved: Result<usize, _> = diesel::sql_query(DISCARD_DEAD_LETTER_SQL)
        .bind::<sql_types::Uuid, _>(message_id)
        .bind::<Text, _>(&*by)
        .bind::<Text, _>(&*note)
        .execute(&mut **conn)
        .await;
    moved
        .map(|n| n > 0)
        .map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))
}

/// Appends an operator's action to `admin_actions`.
pub async fn record_action(conn: &mut PgConnection, action: &AdminAction) -> Result<(), DbError> {
    conn.clear_sqlstate();
    let done: Result<usize, _> = diesel::sql_query(
        "INSERT INTO admin_actions (who, action, target, count, note) \
         VALUES ($1, $2, $3::jsonb, $4, $5)",
    )
    .bind::<Text, _>(crate::text::printable(&action.who).as_ref())
    .bind::<Text, _>(action.action)
    .bind::<Text, _>(action.target.to_string())
    .bind::<sql_types::BigInt, _>(action.count)
    .bind::<sql_types::Nullable<Text>, _>(
        action
            .note
            .as_deref()
            .map(crate::text::printable)
            .as_deref(),
    )
    .execute(&mut **conn)
    .await;
    done.map(drop)
        .map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))
}

/// The record leaves `dead_letters` and arrives whole in `discarded_dead_letters`.
const DISCARD_DEAD_LETTER_SQL: &str = "\
WITH moved AS (DELETE FROM dead_letters WHERE message_id = $1 RETURNING *)
INSERT INTO discarded_dead_letters
    (message_id, entity, body, reason, reason_class, attempts, times, position_epoch,
     position_seq, first_seen, last_seen, discarded_by, note)
SELECT message_id, entity, body, reason, reason_class, attempts, times, position_epoch,
     position_seq, first_seen, last_seen, $2, $3
FROM moved";

/// A dead letter's record: new, or the message's record brought up to this dead-lettering
/// (attempts added, one more time) unless this one was the last recorded.
const RECORD_DEAD_LETTER_SQL: &str = "\
INSERT INTO dead_letters AS d
    (message_id, entity, body, reason, attempts, position_epoch, position_seq, record_id,
     reason_class)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (message_id) DO UPDATE SET
    reason = EXCLUDED.reason,
    reason_class = EXCLUDED.reason_class,
    body = EXCLUDED.body,
    attempts = d.attempts + EXCLUDED.attempts,
    times = d.times + 1,
    record_id = EXCLUDED.record_id,
    last_seen = now()
WHERE d.record_id <> EXCLUDED.record_id";

/// The status rows with ids from `first` to `last` and how many messages each covers.
pub async fn status_runs(
    conn: &mut PgConnection,
    first: Uuid,
    last: Uuid,
) -> Result<Vec<(Uuid, i32)>, DbError> {
    use schema::message_status as s;
    conn.clear_sqlstate();
    let rows: Result<Vec<(Uuid, Option<i32>)>, _> = s::table
        .filter(s::message_id.between(first, last))
        .select((s::message_id, s::members))
        .load(&mut **conn)
        .await;
    rows.map(|rows| {
        rows.into_iter()
            .map(|(id, members)| (id, members.unwrap_or(1)))
            .collect()
    })
    .map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))
}

/// The status row of message `id`, if there is one: its own, or (a chunk's member) that of the
/// run covering it — the row with the greatest id at or below `id` within its chunk.
pub async fn message_status(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<StoredStatus>, DbError> {
    use schema::message_status as s;
    let (chunk, index) = chunk_of(&id);
    let row = s::table
        .filter(s::message_id.between(chunk, id))
        .order(s::message_id.desc())
        .select((
            s::message_id,
            s::entity,
            s::status,
            s::received_at,
            s::processed_at,
            s::row_count,
            s::attempts,
            s::error,
            s::members,
        ))
        .first::<(
            Uuid,
            String,
            String,
            DateTime<Utc>,
            DateTime<Utc>,
            i32,
            i32,
            Option<String>,
            Option<i32>,
        )>(&mut **conn)
        .await
        .optional()?;
    let Some((found, entity, status, received_at, processed_at, row_count, attempts, error, run)) =
        row
    else {
        return Ok(None);
    };
    let run = match run {
        Some(members) => {
            let first = chunk_of(&found).1;
            if index >= first + usize::try_from(members).unwrap_or(0) {
                return Ok(None);
            }
            Some((found, members))
        }
        None if found == id => None,
        None => return Ok(None),
    };
    Ok(Some(StoredStatus {
        entity,
        status,
        received_at,
        processed_at,
        row_count,
        attempts,
        error,
        run,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
