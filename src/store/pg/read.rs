//! What the console reads: counts per entity, dead letters grouped, the audit, and a message's
//! trace (its status, its dead letter, the rows it last wrote).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::connect::PgConnection;
use super::error::DbError;
use crate::generated::TABLES;
use crate::runtime::{EPOCH_COLUMN, MESSAGE_ID_COLUMN, SEQUENCE_COLUMN, TableDef};
use crate::store::{
    DeadLetterGroup, DiscardedNote, EntityCounts, MessageTrace, ReasonClass, StoredAction,
    TracedRow,
};

/// Runs `query` on `conn`, its error classified by the SQLSTATE the server sent.
async fn classified<T>(
    conn: &mut PgConnection,
    query: impl AsyncFnOnce(&mut AsyncPgConnection) -> QueryResult<T>,
) -> Result<T, DbError> {
    conn.clear_sqlstate();
    let result = query(&mut **conn).await;
    result.map_err(|e| DbError::from(e).with_sqlstate(conn.take_sqlstate()))
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = Text)]
    entity: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    total: i64,
    #[diesel(sql_type = BigInt)]
    recent: i64,
}

/// Messages stored per entity and outcome, in total and since `since` (by when the outcome was
/// committed; a chunk's run counts its members). One pass over `message_status`.
pub async fn entity_counts(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
) -> Result<Vec<EntityCounts>, DbError> {
    let rows: Vec<CountRow> = classified(conn, async |c| {
        diesel::sql_query(
            "SELECT entity, status, sum(COALESCE(members, 1))::bigint AS total, \
                    COALESCE(sum(COALESCE(members, 1)) FILTER (WHERE processed_at >= $1), 0)::bigint \
                      AS recent \
             FROM message_status GROUP BY entity, status ORDER BY entity",
        )
        .bind::<Timestamptz, _>(since)
        .load(c)
        .await
    })
    .await?;
    let mut out: Vec<EntityCounts> = Vec::new();
    for row in rows {
        if out.last().is_none_or(|c| c.entity != row.entity) {
            out.push(EntityCounts {
                entity: row.entity.clone(),
                ..Default::default()
            });
        }
        let counts = out.last_mut().expect("pushed above");
        match row.status.as_str() {
            "processed" => {
                counts.processed = row.total;
                counts.processed_recent = row.recent;
            }
            _ => {
                counts.dead_lettered = row.total;
                counts.dead_lettered_recent = row.recent;
            }
        }
    }
    Ok(out)
}

#[derive(QueryableByName)]
struct GroupRow {
    #[diesel(sql_type = Text)]
    entity: String,
    #[diesel(sql_type = Text)]
    reason_class: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = Timestamptz)]
    first_seen: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    last_seen: DateTime<Utc>,
}

/// Dead letters kept, per entity and reason class, largest groups first.
pub async fn dead_letter_groups(conn: &mut PgConnection) -> Result<Vec<DeadLetterGroup>, DbError> {
    let rows: Vec<GroupRow> = classified(conn, async |c| {
        diesel::sql_query(
            "SELECT entity, reason_class, count(*) AS count, min(first_seen) AS first_seen, \
                    max(last_seen) AS last_seen \
             FROM dead_letters GROUP BY entity, reason_class \
             ORDER BY count(*) DESC, entity, reason_class",
        )
        .load(c)
        .await
    })
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DeadLetterGroup {
            entity: r.entity,
            class: ReasonClass::from_label(&r.reason_class),
            count: r.count,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
        })
        .collect())
}

#[derive(QueryableByName)]
struct ActionRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Timestamptz)]
    at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    who: String,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Text)]
    target: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = Nullable<Text>)]
    note: Option<String>,
}

/// The latest `limit` actions of the audit, newest first.
pub async fn admin_actions(
    conn: &mut PgConnection,
    limit: usize,
) -> Result<Vec<StoredAction>, DbError> {
    let rows: Vec<ActionRow> = classified(conn, async |c| {
        diesel::sql_query(
            "SELECT id, at, who, action, target::text AS target, count, note \
             FROM admin_actions ORDER BY id DESC LIMIT $1",
        )
        .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
        .load(c)
        .await
    })
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredAction {
            id: r.id,
            at: r.at,
            who: r.who,
            action: r.action,
            target: serde_json::from_str(&r.target).unwrap_or_default(),
            count: r.count,
            note: r.note,
        })
        .collect())
}

#[derive(QueryableByName)]
struct DiscardRow {
    #[diesel(sql_type = Text)]
    discarded_by: String,
    #[diesel(sql_type = Text)]
    note: String,
    #[diesel(sql_type = Timestamptz)]
    discarded_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = Text)]
    key: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    epoch: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    sequence: Option<i64>,
}

/// Message `id` as the store knows it: its status, its dead letter or discard, and up to
/// `row_limit` rows per table that it last wrote (their keys).
pub async fn message_trace(
    conn: &mut PgConnection,
    id: Uuid,
    row_limit: usize,
) -> Result<MessageTrace, DbError> {
    let mut trace = MessageTrace {
        status: super::write::message_status(conn, id).await?,
        ..Default::default()
    };
    let page = crate::store::DeadLetterPage {
        filter: crate::store::DeadLetterFilter {
            message_id: Some(id),
            ..Default::default()
        },
        after: None,
        limit: 1,
    };
    trace.dead_letter = super::write::dead_letters(conn, &page).await?.pop();
    trace.position = trace.dead_letter.as_ref().map(|d| d.position);
    let discards: Vec<DiscardRow> = classified(conn, async |c| {
        diesel::sql_query(
            "SELECT discarded_by, note, discarded_at FROM discarded_dead_letters \
             WHERE message_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind::<diesel::sql_types::Uuid, _>(id)
        .load(c)
        .await
    })
    .await?;
    trace.discarded = discards.into_iter().next().map(|d| DiscardedNote {
        by: d.discarded_by,
        note: d.note,
        at: d.discarded_at,
    });
    let Some(entity) = trace
        .status
        .as_ref()
        .and_then(|s| crate::generated::RootEntity::from_name(&s.entity))
    else {
        return Ok(trace);
    };
    for table in TABLES.iter().filter(|t| t.root_entity == entity.name()) {
        let limit = i64::try_from(row_limit).unwrap_or(i64::MAX - 1) + 1;
        let found: Vec<KeyRow> = classified(conn, async |c| {
            diesel::sql_query(key_query(table))
                .bind::<diesel::sql_types::Uuid, _>(id)
                .bind::<BigInt, _>(limit)
                .load(c)
                .await
        })
        .await?;
        if found.len() > row_limit {
            trace.rows_truncated = true;
        }
        if trace.position.is_none()
            && let Some(KeyRow {
                epoch: Some(epoch),
                sequence: Some(sequence),
                ..
            }) = <[KeyRow]>::first(&found)
        {
            trace.position = Some(crate::runtime::Position {
                epoch: *epoch,
                sequence: *sequence,
            });
        }
        trace
            .rows
            .extend(found.into_iter().take(row_limit).map(|r| TracedRow {
                table: table.table.to_string(),
                key: serde_json::from_str(&r.key).unwrap_or_default(),
            }));
    }
    Ok(trace)
}

/// The key of each row of `table` that message `$1` last wrote, as a JSON object (the surrogate
/// key and the unique key, or the first columns where there is none; long values cut).
fn key_query(table: &TableDef) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let literal = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut columns = vec![table.id_column];
    if table.unicity_fields.is_empty() {
        columns.extend(
            table
                .columns
                .iter()
                .map(|c| c.name)
                .filter(|n| !n.starts_with('_'))
                .take(2),
        );
    } else {
        columns.extend(table.unicity_fields.iter().copied());
    }
    let pairs: Vec<String> = columns
        .iter()
        .map(|c| format!("{}, left({}::text, 200)", literal(c), quote(c)))
        .collect();
    // Where the message arrived, kept by tables with a unique key (see `runtime::Origin`).
    let position = if table.unicity_fields.is_empty() {
        "NULL::bigint AS epoch, NULL::bigint AS sequence".to_string()
    } else {
        format!(
            "{} AS epoch, {} AS sequence",
            quote(EPOCH_COLUMN),
            quote(SEQUENCE_COLUMN)
        )
    };
    format!(
        "SELECT jsonb_build_object({})::text AS key, {position} FROM {} WHERE {} = $1 \
         ORDER BY {} LIMIT $2",
        pairs.join(", "),
        quote(table.table),
        quote(MESSAGE_ID_COLUMN),
        quote(table.id_column)
    )
}
