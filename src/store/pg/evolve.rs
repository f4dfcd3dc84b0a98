//! Schema evolution at start-up: compares each entity table declared in YAML with the live
//! table and applies what keeps every stored value, expand only, in one transaction with a lock
//! timeout: a missing table is created; a new nullable field, or a required one with a declared
//! `default`, becomes `ADD COLUMN`; a declared rename `RENAME COLUMN`; a widening (the type
//! table's `widens_to`, a longer or dropped `max_length`) `ALTER COLUMN … TYPE`; a field made
//! nullable or declared `removed` loses `NOT NULL`. Any other difference stops the worker with a
//! message naming table, column, live and declared shapes, and what to do — we never guess at a
//! destructive migration.

use diesel::sql_types::{Integer, Nullable, Text};
use diesel::{QueryableByName, sql_query};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::runtime::{ColumnDef, FieldType, ReportedColumn, TableDef};
use crate::store::SchemaChanges;

/// One way the live table differs from the YAML that cannot be applied automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    /// Table name.
    pub table: String,
    /// Column (or constraint) concerned.
    pub column: String,
    /// What the database has.
    pub live: String,
    /// What the YAML declares.
    pub declared: String,
    /// What the operator can do.
    pub action: String,
}

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "table `{}`, column `{}`: live {}, declared {}; {}",
            self.table, self.column, self.live, self.declared, self.action
        )
    }
}

#[derive(QueryableByName)]
struct LiveColumn {
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    data_type: String,
    #[diesel(sql_type = Text)]
    udt_name: String,
    #[diesel(sql_type = Nullable<Integer>)]
    max_length: Option<i32>,
    #[diesel(sql_type = Text)]
    is_nullable: String,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

impl LiveColumn {
    /// The column's shape as `information_schema` reports it.
    fn reported(&self) -> ReportedColumn<'_> {
        ReportedColumn {
            data_type: &self.data_type,
            udt_name: &self.udt_name,
            max_length: self.max_length,
        }
    }

    /// The live type in the spelling our DDL uses (`VARCHAR(32)`, `TIMESTAMPTZ`, `TEXT[]`), from
    /// the type table.
    fn ddl(&self) -> String {
        FieldType::ddl_of_reported(&self.reported())
    }

    /// Whether the live column has the declared type.
    fn has_type_of(&self, declared: &ColumnDef) -> bool {
        declared.ty.reported(declared.max_length) == Some(self.reported())
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// What [`plan`] found to do to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    /// The table.
    pub table: &'static str,
    /// `CREATE TABLE …` when it is missing.
    create: Option<&'static str>,
    /// The changes of a table that exists.
    steps: Vec<Step>,
}

/// Everything that would bring the database to the YAML's shape, nothing applied yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaPlan {
    /// The tables that change, in the YAML's order.
    pub tables: Vec<TablePlan>,
}

impl SchemaPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The SQL it runs, in order (each table's changes in one transaction), with what rewrites
    /// a table marked.
    pub fn statements(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.tables {
            if let Some(create) = t.create {
                out.push(format!("{};", create.trim_end()));
            }
            for step in &t.steps {
                let rewrites = matches!(step, Step::Widen { rewrites: true, .. });
                out.push(format!(
                    "{};{}",
                    step.sql(t.table),
                    if rewrites {
                        " -- rewrites the table: its writes wait meanwhile"
                    } else {
                        ""
                    }
                ));
            }
        }
        out
    }
}

/// Compares every table with its declaration: what would bring it to the declared shape
/// keeping every stored value, or every mismatch that needs an operator. Changes nothing.
pub async fn plan(
    conn: &mut AsyncPgConnection,
    tables: &[TableDef],
) -> Result<SchemaPlan, ReconcileError> {
    let mut plan = SchemaPlan::default();
    let mut mismatches = Vec::new();
    for table in tables {
        let live: Vec<LiveColumn> = sql_query(
            "SELECT column_name::text AS column_name, data_type::text AS data_type, \
                    udt_name::text AS udt_name, character_maximum_length::int AS max_length, \
                    is_nullable::text AS is_nullable \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1 \
             ORDER BY ordinal_position",
        )
        .bind::<Text, _>(table.table)
        .load(conn)
        .await?;
        if live.is_empty() {
            plan.tables.push(TablePlan {
                table: table.table,
                create: Some(table.create_sql),
                steps: Vec::new(),
            });
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        compare_columns(table, &live, &mut steps, &mut mismatches);
        compare_unicity(conn, table, &mut mismatches).await?;
        if !steps.is_empty() {
            plan.tables.push(TablePlan {
                table: table.table,
                create: None,
                steps,
            });
        }
    }
    if mismatches.is_empty() {
        Ok(plan)
    } else {
        Err(ReconcileError::Mismatch(mismatches))
    }
}

/// Brings every table to the declared shape where that keeps every stored value ([`plan`],
/// then each table's changes in one transaction); returns what changed, or — changing nothing —
/// every mismatch that needs an operator.
pub async fn reconcile(
    conn: &mut AsyncPgConnection,
    tables: &[TableDef],
) -> Result<SchemaChanges, ReconcileError> {
    let plan = plan(conn, tables).await?;
    let mut changes = SchemaChanges::default();
    for t in &plan.tables {
        if let Some(create) = t.create {
            sql_query(create).execute(conn).await?;
            changes.created.push(t.table.to_string());
        }
        apply(conn, t.table, &t.steps, &mut changes).await?;
    }
    for table in tables {
        index_message_ids(conn, table).await?;
    }
    Ok(changes)
}

/// The index that finds a message's rows (the console's trace). Built once; on a large table
/// that predates it, this takes a while and holds writes to the table meanwhile (the worker
/// applies it before consuming).
async fn index_message_ids(
    conn: &mut AsyncPgConnection,
    table: &TableDef,
) -> Result<(), diesel::result::Error> {
    let column = nomnom_runtime::MESSAGE_ID_COLUMN;
    if !table.columns.iter().any(|c| c.name == column) {
        return Ok(());
    }
    sql_query(format!(
        "CREATE INDEX IF NOT EXISTS {} ON {} ({})",
        quote(&nomnom_runtime::message_index_name(table.table)),
        quote(table.table),
        quote(column)
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// How long a schema change waits for a table's lock before it gives up (and the worker
/// retries at its next start) rather than queueing every writer behind it.
const LOCK_TIMEOUT: &str = "5s";

/// One change that keeps every stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `ADD COLUMN` (nullable, or required with its declared default).
    Add { column: String, ddl: String },
    /// `RENAME COLUMN` (declared `renamed_from`).
    Rename { from: String, to: String },
    /// `ALTER COLUMN … TYPE` to a wider type; `rewrites`: PostgreSQL rewrites the table
    /// (holding writes to it meanwhile), which a longer `VARCHAR` or `TEXT` does not.
    Widen {
        column: String,
        to: String,
        rewrites: bool,
    },
    /// `ALTER COLUMN … DROP NOT NULL` (made nullable, or declared `removed`).
    DropNotNull { column: String },
}

impl Step {
    fn sql(&self, table: &str) -> String {
        let t = quote(table);
        match self {
            Step::Add { column, ddl } => {
                format!(
                    "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {} {ddl}",
                    quote(column)
                )
            }
            Step::Rename { from, to } => {
                format!(
                    "ALTER TABLE {t} RENAME COLUMN {} TO {}",
                    quote(from),
                    quote(to)
                )
            }
            Step::Widen { column, to, .. } => format!(
                "ALTER TABLE {t} ALTER COLUMN {c} TYPE {to} USING {c}::{to}",
                c = quote(column)
            ),
            Step::DropNotNull { column } => {
                format!(
                    "ALTER TABLE {t} ALTER COLUMN {} DROP NOT NULL",
                    quote(column)
                )
            }
        }
    }

    /// What the worker reports it did.
    fn describe(&self, table: &str) -> String {
        match self {
            Step::Add { column, ddl } => format!("{table}.{column}: added ({ddl})"),
            Step::Rename { from, to } => format!("{table}.{to}: renamed from {from}"),
            Step::Widen {
                column,
                to,
                rewrites,
            } => format!(
                "{table}.{column}: widened to {to}{}",
                if *rewrites {
                    " (the table was rewritten)"
                } else {
                    ""
                }
            ),
            Step::DropNotNull { column } => format!("{table}.{column}: may be null"),
        }
    }
}

/// Applies `steps` to `table` in one transaction that waits at most [`LOCK_TIMEOUT`] for its
/// lock.
async fn apply(
    conn: &mut AsyncPgConnection,
    table: &str,
    steps: &[Step],
    changes: &mut SchemaChanges,
) -> Result<(), diesel::result::Error> {
    if steps.is_empty() {
        return Ok(());
    }
    sql_query("BEGIN").execute(conn).await?;
    let result = async {
        sql_query(format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .execute(conn)
            .await?;
        for step in steps {
            sql_query(step.sql(table)).execute(conn).await?;
        }
        sql_query("COMMIT").execute(conn).await
    }
    .await;
    if let Err(e) = result {
        let _ = sql_query("ROLLBACK").execute(conn).await;
        return Err(e);
    }
    for step in steps {
        match step {
            Step::Add { column, .. } => changes.added_columns.push(format!("{table}.{column}")),
            other => changes.altered.push(other.describe(table)),
        }
    }
    Ok(())
}

/// The type table's type of a live column, if it is one of ours.
fn live_type(c: &LiveColumn) -> Option<FieldType> {
    nomnom_runtime::TYPES.iter().map(|t| t.ty).find(|ty| {
        ty.reported(c.max_length.and_then(|n| u32::try_from(n).ok())) == Some(c.reported())
    })
}

/// The step that turns live column `c` into `declared` keeping every value, if there is one:
/// `Ok(None)` when they agree.
fn widening(c: &LiveColumn, declared: &ColumnDef) -> Result<Option<Step>, ()> {
    if c.has_type_of(declared) {
        return Ok(None);
    }
    let Some(live) = live_type(c) else {
        return Err(());
    };
    let longer = match (live, declared.ty, c.max_length, declared.max_length) {
        (FieldType::String, FieldType::String, Some(a), None) => a >= 0,
        (FieldType::String, FieldType::String, Some(a), Some(b)) => i64::from(b) > i64::from(a),
        _ => false,
    };
    if longer || live.widens_to(declared.ty) {
        return Ok(Some(Step::Widen {
            column: declared.name.to_string(),
            to: declared.sql_type.to_string(),
            rewrites: !longer,
        }));
    }
    Err(())
}

fn compare_columns(
    table: &TableDef,
    live: &[LiveColumn],
    steps: &mut Vec<Step>,
    mismatches: &mut Vec<SchemaMismatch>,
) {
    let mismatch = |column: &str, live: String, declared: String, action: &str| SchemaMismatch {
        table: table.table.to_string(),
        column: column.to_string(),
        live,
        declared,
        action: action.to_string(),
    };
    match live.iter().find(|c| c.column_name == table.id_column) {
        None => mismatches.push(mismatch(
            table.id_column,
            "no such column".into(),
            "the surrogate key".into(),
            "point `conformant_id_column` at the table's key column, or recreate the table",
        )),
        Some(c) if !matches!(c.data_type.as_str(), "integer" | "bigint") => {
            mismatches.push(mismatch(
                table.id_column,
                c.ddl(),
                "INTEGER or BIGINT (generated key)".into(),
                "the surrogate key must be an INTEGER or BIGINT column with a default",
            ))
        }
        Some(_) => {}
    }
    let shape =
        |nullable: bool, ty: &str| format!("{ty}{}", if nullable { " NULL" } else { " NOT NULL" });
    for declared in table.columns {
        let renamed_from = table
            .renames
            .iter()
            .find(|(column, _)| *column == declared.name)
            .map(|(_, old)| *old);
        let found = live.iter().find(|c| c.column_name == declared.name);
        let (c, renamed) = match (found, renamed_from) {
            (Some(c), _) => (c, false),
            (None, Some(old)) => match live.iter().find(|c| c.column_name == old) {
                Some(c) => (c, true),
                None => {
                    mismatches.push(mismatch(
                        declared.name,
                        format!("no such column (nor `{old}`, which it is `renamed_from`)"),
                        shape(declared.nullable, declared.sql_type),
                        "the column it was renamed from is not in the table; correct `renamed_from`, or drop it to add a new column",
                    ));
                    continue;
                }
            },
            (None, None) => {
                let default = table
                    .defaults
                    .iter()
                    .find(|(column, _)| *column == declared.name)
                    .map(|(_, sql)| *sql);
                match default {
                    _ if declared.nullable => steps.push(Step::Add {
                        column: declared.name.into(),
                        ddl: declared.sql_type.into(),
                    }),
                    Some(sql) => steps.push(Step::Add {
                        column: declared.name.into(),
                        ddl: format!("{} NOT NULL DEFAULT {sql}", declared.sql_type),
                    }),
                    None => mismatches.push(mismatch(
                        declared.name,
                        "no such column".into(),
                        shape(false, declared.sql_type),
                        "a new column must be `nullable: true` or have a `default:` to be added automatically (existing rows have no value); \
                         make it nullable, give it a default, or add it by hand and restart",
                    )),
                }
                continue;
            }
        };
        if renamed {
            steps.push(Step::Rename {
                from: c.column_name.clone(),
                to: declared.name.into(),
            });
        }
        let live_nullable = c.is_nullable == "YES";
        let refused = |mismatches: &mut Vec<SchemaMismatch>| {
            mismatches.push(mismatch(
                declared.name,
                shape(live_nullable, &c.ddl()),
                shape(declared.nullable, declared.sql_type),
                "change the YAML back, or migrate the column by hand (ALTER TABLE ... ALTER COLUMN ...) and restart",
            ))
        };
        match widening(c, declared) {
            Ok(Some(step)) => steps.push(step),
            Ok(None) => {}
            Err(()) => {
                refused(mismatches);
                continue;
            }
        }
        match (live_nullable, declared.nullable) {
            (false, true) => steps.push(Step::DropNotNull {
                column: declared.name.into(),
            }),
            (true, false) => refused(mismatches),
            _ => {}
        }
    }
    for c in live {
        let known = c.column_name == table.id_column
            || table.columns.iter().any(|d| d.name == c.column_name)
            || table.renames.iter().any(|(_, old)| *old == c.column_name);
        if known {
            continue;
        }
        if table.removed.contains(&c.column_name.as_str()) {
            // Kept with what it holds; new rows leave it null.
            if c.is_nullable != "YES" {
                steps.push(Step::DropNotNull {
                    column: c.column_name.clone(),
                });
            }
            continue;
        }
        mismatches.push(mismatch(
            &c.column_name,
            c.ddl(),
            "no such field".into(),
            "the field was removed from the YAML; add it back, list it under the entity's `removed:` to keep the column, or drop the column by hand \
             (ALTER TABLE ... DROP COLUMN ...) once its data is no longer needed, and restart",
        ));
    }
}

async fn compare_unicity(
    conn: &mut AsyncPgConnection,
    table: &TableDef,
    mismatches: &mut Vec<SchemaMismatch>,
) -> Result<(), diesel::result::Error> {
    let constraint = nomnom_runtime::unicity_constraint_name(table.table);
    let live: Vec<Name> = sql_query(
        "SELECT a.attname::text AS name \
         FROM pg_constraint c \
         JOIN pg_class t ON t.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) ON true \
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
         WHERE n.nspname = current_schema() AND t.relname = $1 AND c.conname = $2 \
         ORDER BY k.ord",
    )
    .bind::<Text, _>(table.table)
    .bind::<Text, _>(&constraint)
    .load(conn)
    .await?;
    let live: Vec<&str> = live.iter().map(|n| n.name.as_str()).collect();
    if live != table.unicity_fields {
        let show = |cols: &[&str]| {
            if cols.is_empty() {
                "none".to_string()
            } else {
                format!("UNIQUE ({})", cols.join(", "))
            }
        };
        mismatches.push(SchemaMismatch {
            table: table.table.to_string(),
            column: format!("constraint {constraint}"),
            live: show(&live),
            declared: show(table.unicity_fields),
            action: "unicity_fields changed; existing rows may violate the new key. Change the YAML back, \
                     or replace the constraint by hand (ALTER TABLE ... DROP CONSTRAINT / ADD CONSTRAINT ... UNIQUE) and restart"
                .into(),
        });
    }
    Ok(())
}

/// Why the schema could not be reconciled.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A query failed.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// The live tables differ from the YAML in ways that need an operator.
    #[error("the database schema differs from entities/*.yaml:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Mismatch(Vec<SchemaMismatch>),
}
