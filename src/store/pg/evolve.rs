//! Schema evolution at start-up: compares each entity table declared in YAML with the live
//! table. A missing table is created and a new nullable field becomes `ADD COLUMN`; any other
//! difference stops the worker with a message naming table, column, live and declared shapes,
//! and what to do — we never guess at a destructive migration.

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

/// Brings every table to the declared shape where that is safe; returns what changed, or every
/// mismatch that needs an operator.
pub async fn reconcile(
    conn: &mut AsyncPgConnection,
    tables: &[TableDef],
) -> Result<SchemaChanges, ReconcileError> {
    let mut changes = SchemaChanges::default();
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
            sql_query(table.create_sql).execute(conn).await?;
            index_message_ids(conn, table).await?;
            changes.created.push(table.table.to_string());
            continue;
        }
        let mut to_add: Vec<&ColumnDef> = Vec::new();
        compare_columns(table, &live, &mut to_add, &mut mismatches);
        compare_unicity(conn, table, &mut mismatches).await?;
        if mismatches.is_empty() {
            for c in to_add {
                sql_query(format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                    quote(table.table),
                    quote(c.name),
                    c.sql_type
                ))
                .execute(conn)
                .await?;
                changes
                    .added_columns
                    .push(format!("{}.{}", table.table, c.name));
            }
            index_message_ids(conn, table).await?;
        }
    }
    if mismatches.is_empty() {
        Ok(changes)
    } else {
        Err(ReconcileError::Mismatch(mismatches))
    }
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

fn compare_columns<'t>(
    table: &'t TableDef,
    live: &[LiveColumn],
    to_add: &mut Vec<&'t ColumnDef>,
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
    for declared in table.columns {
        let shape = |nullable: bool, ty: &str| {
            format!("{ty}{}", if nullable { " NULL" } else { " NOT NULL" })
        };
        match live.iter().find(|c| c.column_name == declared.name) {
            None if declared.nullable => to_add.push(declared),
            None => mismatches.push(mismatch(
                declared.name,
                "no such column".into(),
                shape(false, declared.sql_type),
                "a new column must be `nullable: true` to be added automatically (existing rows have no value); \
                 make it nullable, or add it by hand with a DEFAULT and restart",
            )),
            Some(c) => {
                let live_nullable = c.is_nullable == "YES";
                if !c.has_type_of(declared) || live_nullable != declared.nullable {
                    mismatches.push(mismatch(
                        declared.name,
                        shape(live_nullable, &c.ddl()),
                        shape(declared.nullable, declared.sql_type),
                        "change the YAML back, or migrate the column by hand (ALTER TABLE ... ALTER COLUMN ...) and restart",
                    ));
                }
            }
        }
    }
    for c in live {
        let known = c.column_name == table.id_column
            || table.columns.iter().any(|d| d.name == c.column_name);
        if !known {
            mismatches.push(mismatch(
                &c.column_name,
                c.ddl(),
                "no such field".into(),
                "the field was removed from the YAML; add it back, or drop the column by hand \
                 (ALTER TABLE ... DROP COLUMN ...) once its data is no longer needed, and restart",
            ));
        }
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
