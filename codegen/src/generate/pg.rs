//! PostgreSQL: the diesel `schema` module, `TABLES` (DDL), `RowBatch` and each entity's
//! statements that write its rows.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::common::*;
use crate::ident::{column_ident, field_ident};
use crate::model::*;
use crate::types::{FieldType, TypeTokens as _};
use crate::validate::Schema;
use nomnom_runtime::Bind;

use nomnom_runtime::{EPOCH_COLUMN, SEQUENCE_COLUMN};

/// The diesel `schema` module, as text: prettyplease leaves macro bodies on a few long lines,
/// so `table!` is laid out here the way `diesel print-schema` writes it (types by their
/// `diesel::sql_types` names, which `table!` imports).
pub(crate) fn schema_module(schema: &Schema) -> String {
    let mut out = String::from(
        "/// diesel `table!` definitions of every stored entity, for typed queries in your own\n\
         /// code (the worker itself writes with prepared `unnest` upserts). Behind the default\n\
         /// feature `diesel-schema`: `table!` is the costliest code to compile, so very large\n\
         /// schemas can opt out with `default-features = false`.\n\
         #[cfg(feature = \"diesel-schema\")]\n\
         pub mod schema {\n",
    );
    let short = |path: &str| path.replace("::diesel::sql_types::", "");
    for e in stored(schema) {
        let p = e
            .persistence
            .as_ref()
            .expect("stored entities have persistence");
        let column = |out: &mut String, name: &str, ty: String, doc: &str| {
            let (ident, renamed) = column_ident(name);
            out.push_str(&format!("            /// {}\n", doc.replace('\n', " ")));
            if renamed {
                out.push_str(&format!("            #[sql_name = \"{name}\"]\n"));
            }
            out.push_str(&format!("            {ident} -> {ty},\n"));
        };
        let (id, _) = column_ident(&p.id_column.value);
        out.push_str(&format!(
            "    ::diesel::table! {{\n        /// The rows of entity `{}`.\n        {} ({id}) {{\n",
            e.name.value, p.table.value
        ));
        let id_ty = if p.id_type == FieldType::Integer {
            "Integer"
        } else {
            "BigInt"
        };
        column(
            &mut out,
            &p.id_column.value,
            id_ty.into(),
            "The generated surrogate key.",
        );
        for f in e.stored_fields() {
            let ty = short(f.ty.value.info().column.expect("stored field").diesel);
            let ty = if f.nullable {
                format!("Nullable<{ty}>")
            } else {
                ty
            };
            column(&mut out, &f.name.value, ty, &field_doc(f));
        }
        out.push_str("        }\n    }\n");
    }
    out.push_str("}\n");
    out
}

pub(crate) fn table_defs(schema: &Schema) -> TokenStream {
    let root_of: std::collections::HashMap<&str, &str> = roots(schema)
        .into_iter()
        .flat_map(|root| {
            schema
                .subtree(&root.name.value)
                .into_iter()
                .map(move |e| (e.name.value.as_str(), root.name.value.as_str()))
        })
        .collect();
    let defs = stored(schema).into_iter().map(|e| {
        let p = e.persistence.as_ref().expect("stored");
        let entity = &e.name.value;
        let root_entity = root_of.get(entity.as_str()).copied().unwrap_or(entity);
        let version_field = match &p.order_by {
            Some(o) => {
                let v = &o.value;
                quote!(::std::option::Option::Some(#v))
            }
            None => quote!(::std::option::Option::None),
        };
        let table = &p.table.value;
        let id = &p.id_column.value;
        let id_sql = if p.id_type == FieldType::Integer {
            "SERIAL"
        } else {
            "BIGSERIAL"
        };
        let mut lines = vec![format!("    {} {id_sql} PRIMARY KEY", quote_ident(id))];
        let mut columns = Vec::new();
        for f in e.stored_fields() {
            let sql_type =
                f.ty.value
                    .sql_type(f.max_length.as_ref().map(|m| m.value))
                    .expect("stored");
            let null = if f.nullable { "" } else { " NOT NULL" };
            lines.push(format!(
                "    {} {sql_type}{null}",
                quote_ident(&f.name.value)
            ));
            let name = &f.name.value;
            let nullable = f.nullable;
            let ty = format_ident!("{}", format!("{:?}", f.ty.value));
            let max_length = match &f.max_length {
                Some(m) => {
                    let n = m.value;
                    quote!(::std::option::Option::Some(#n))
                }
                None => quote!(::std::option::Option::None),
            };
            columns.push(quote! {
                ::nomnom_runtime::ColumnDef {
                    name: #name,
                    ty: ::nomnom_runtime::FieldType::#ty,
                    max_length: #max_length,
                    sql_type: #sql_type,
                    nullable: #nullable,
                }
            });
        }
        // Which message last wrote the row, so that the console can trace either way.
        let message_id = nomnom_runtime::MESSAGE_ID_COLUMN;
        lines.push(format!("    {} UUID", quote_ident(message_id)));
        columns.push(quote! {
            ::nomnom_runtime::ColumnDef {
                name: #message_id,
                ty: ::nomnom_runtime::FieldType::Uuid,
                max_length: ::std::option::Option::None,
                sql_type: "UUID",
                nullable: true,
            }
        });
        let unicity: Vec<&str> = p.unicity_fields.iter().map(|u| u.value.as_str()).collect();
        if !unicity.is_empty() {
            // Which message last wrote the row (its stream's epoch and sequence), so
            // concurrent batches and replays resolve unique-key conflicts in arrival order.
            for name in [SEQUENCE_COLUMN, EPOCH_COLUMN] {
                lines.push(format!("    {} BIGINT", quote_ident(name)));
                columns.push(quote! {
                    ::nomnom_runtime::ColumnDef {
                        name: #name,
                        ty: ::nomnom_runtime::FieldType::BigInt,
                        max_length: ::std::option::Option::None,
                        sql_type: "BIGINT",
                        nullable: true,
                    }
                });
            }
            let cols: Vec<String> = unicity.iter().map(|u| quote_ident(u)).collect();
            lines.push(format!(
                "    CONSTRAINT {} UNIQUE ({})",
                quote_ident(&nomnom_runtime::unicity_constraint_name(table)),
                cols.join(", ")
            ));
        }
        let last = lines.len().saturating_sub(1);
        let mut create = vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (",
            quote_ident(table)
        )];
        create.extend(
            lines
                .into_iter()
                .enumerate()
                .map(|(i, l)| if i == last { l } else { l + "," }),
        );
        create.push(")".into());
        let create = sql_lines(&create);
        let renames = e.stored_fields().filter_map(|f| {
            let (new, old) = (&f.name.value, &f.renamed_from.as_ref()?.value);
            Some(quote!((#new, #old)))
        });
        let defaults = e.stored_fields().filter_map(|f| {
            let literal = f.default.as_ref()?;
            let sql_type =
                f.ty.value
                    .sql_type(f.max_length.as_ref().map(|m| m.value))?;
            let sql = format!("'{}'::{sql_type}", literal.text.replace('\'', "''"));
            let name = &f.name.value;
            Some(quote!((#name, #sql)))
        });
        let removed = e.removed.iter().map(|r| r.value.as_str());
        quote! {
            ::nomnom_runtime::TableDef {
                entity: #entity,
                table: #table,
                id_column: #id,
                columns: &[#(#columns),*],
                unicity_fields: &[#(#unicity),*],
                create_sql: #create,
                version_field: #version_field,
                root_entity: #root_entity,
                renames: &[#(#renames),*],
                defaults: &[#(#defaults),*],
                removed: &[#(#removed),*],
            }
        }
    });
    quote! {
        /// Every stored entity's table, parents before children.
        pub const TABLES: &[::nomnom_runtime::TableDef] = &[#(#defs),*];
    }
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub(crate) fn row_batch(schema: &Schema) -> TokenStream {
    let stored = stored(schema);
    let fields = stored.iter().map(|e| {
        let r = rows_ident(e);
        let t = type_ident(e);
        let d = format!(" `{}` rows.", e.name.value);
        quote!(#[doc = #d] pub #r: ::std::vec::Vec<(&'a #t, ::nomnom_runtime::Origin)>,)
    });
    let pushes = roots(schema).into_iter().map(|root| {
        let v = type_ident(root);
        let adds = schema
            .subtree(&root.name.value)
            .into_iter()
            .filter(|e| e.persistence.is_some())
            .map(|e| {
                let r = rows_ident(e);
                if e.is_ingested() {
                    quote!(self.#r.push((&m.#r, origin));)
                } else {
                    quote!(self.#r.extend(m.#r.iter().map(|row| (row, origin)));)
                }
            })
            .collect::<Vec<_>>();
        if adds.is_empty() {
            quote!(ParsedMessage::#v(_) => {})
        } else {
            quote!(ParsedMessage::#v(m) => { #(#adds)* })
        }
    });
    let writes = stored.iter().map(|e| {
        let r = rows_ident(e);
        let m = module_ident(e);
        let table = &e.persistence.as_ref().expect("stored").table.value;
        quote!((#table, self::#m::write_rows(conn, self.#r, mode).await?))
    });
    let copies = stored.iter().map(|e| {
        let r = rows_ident(e);
        let m = module_ident(e);
        quote!(self::#m::copy_rows(self.#r))
    });
    let counts = stored.iter().map(|e| {
        let r = rows_ident(e);
        let table = &e.persistence.as_ref().expect("stored").table.value;
        quote!((#table, self.#r.len()))
    });
    // Without stored entities nothing reads these; say so rather than allow the lints.
    let (lifetime_use, unused) = if stored.is_empty() {
        (quote!(_marker: ::std::marker::PhantomData<&'a ()>,), true)
    } else {
        (quote!(), false)
    };
    let unused_origin = if unused {
        quote!(let _ = origin;)
    } else {
        quote!()
    };
    let unused_conn = if unused {
        quote!(let _ = (conn, mode);)
    } else {
        quote!()
    };
    quote! {
        /// The rows of many messages grouped by table, written with multi-row upserts.
        #[derive(Debug, Default)]
        pub struct RowBatch<'a> {
            #(#fields)*
            #lifetime_use
        }

        impl<'a> RowBatch<'a> {
            /// Adds every stored row of a message. `origin.position` orders messages (stream
            /// epoch and sequence, kept by replayed copies): on a unique-key conflict the later
            /// message (or the higher `order_by` version) wins (`on_conflict: update`) or the
            /// earlier one stays (`ignore`), whatever order the batches commit in. Every row
            /// keeps `origin.message_id`.
            pub fn push(&mut self, message: &'a ParsedMessage, origin: ::nomnom_runtime::Origin) {
                #unused_origin
                match message {
                    #(#pushes)*
                }
            }

            /// Rows added per table (before rows with the same unique key are merged).
            pub fn counts(&self) -> ::nomnom_runtime::RowCounts {
                ::nomnom_runtime::RowCounts(::std::vec![#(#counts),*])
            }

            /// Every table's rows (parents first) in binary `COPY` form with the statements
            /// that store them. Rows with the same unique key are merged first (last wins).
            pub fn copy(self) -> ::std::vec::Vec<::nomnom_runtime::TableCopy> {
                ::std::vec![#(#copies),*]
            }

            /// Writes all rows (parents first), plain inserts or upserts by `mode`, and
            /// returns rows written per table. Rows with the same unique key are merged first
            /// (last wins).
            pub async fn write(
                self,
                conn: &mut ::diesel_async::AsyncPgConnection,
                mode: ::nomnom_runtime::WriteMode,
            ) -> ::diesel::QueryResult<::nomnom_runtime::RowCounts> {
                #unused_conn
                ::std::result::Result::Ok(::nomnom_runtime::RowCounts(::std::vec![#(#writes),*]))
            }
        }
    }
}

/// `write_rows(conn, rows, mode)`: merges rows with the same unique key (last wins), then writes
/// them with one `INSERT ... SELECT FROM unnest($1, $2, ...)` per chunk, with `ON CONFLICT ...`
/// in `WriteMode::Upsert`: one bind per column (not per value), one prepared statement per table
/// and mode, and far less type-level code for rustc than diesel's insert DSL (which matters at 50
/// entities).
pub(crate) fn write_rows_fn(e: &EntityDef) -> TokenStream {
    let p = e.persistence.as_ref().expect("stored");
    let t = type_ident(e);
    let table_name = &p.table.value;
    let unicity: Vec<&str> = p.unicity_fields.iter().map(|u| u.value.as_str()).collect();
    let key_fields: Vec<Ident> = unicity.iter().map(|u| field_ident(u)).collect();
    let keep_latest = p.on_conflict == OnConflict::Update;
    let version = match &p.order_by {
        Some(o) => {
            let v = field_ident(&o.value);
            quote!(|r: &'a #t| &r.#v)
        }
        None => quote!(|_: &'a #t| ()),
    };
    // The dedup's closures name the rows' lifetime; without them it is elided.
    let (lifetime, row_lifetime) = if unicity.is_empty() {
        (quote!(), quote!())
    } else {
        (quote!(<'a>), quote!('a))
    };
    let dedup = if unicity.is_empty() {
        quote!()
    } else {
        quote!(let rows = ::nomnom_runtime::__private::dedup_latest(rows, #keep_latest, |r| (#(&r.#key_fields,)*), #version);)
    };
    let fields: Vec<&FieldDef> = e.stored_fields().collect();
    let ordered = !unicity.is_empty();
    let mut columns: Vec<String> = fields.iter().map(|f| quote_ident(&f.name.value)).collect();
    let column_type = |f: &FieldDef| f.ty.value.info().column.expect("stored field");
    let mut params: Vec<String> = fields
        .iter()
        .enumerate()
        .map(|(i, f)| format!("${}::{}[]", i + 1, column_type(f).unnest_element))
        .collect();
    let mut selected: Vec<String> = fields
        .iter()
        .map(|f| {
            let c = quote_ident(&f.name.value);
            match column_type(f).unnest_cast {
                Some(cast) => format!("{c}::{cast}"),
                None => c,
            }
        })
        .collect();
    let seq = quote_ident(SEQUENCE_COLUMN);
    let epoch = quote_ident(EPOCH_COLUMN);
    let message_id = quote_ident(nomnom_runtime::MESSAGE_ID_COLUMN);
    columns.push(message_id.clone());
    params.push(format!("${}::uuid[]", fields.len() + 1));
    selected.push(message_id.clone());
    if ordered {
        for (i, c) in [&seq, &epoch].into_iter().enumerate() {
            columns.push(c.clone());
            params.push(format!("${}::bigint[]", fields.len() + 2 + i));
            selected.push(c.clone());
        }
    }
    // One clause per line (long lists wrapped), so the constant reads like the SQL it is.
    let mut sql = wrapped(
        &format!("INSERT INTO {} AS t (", quote_ident(&p.table.value)),
        &columns,
        ")",
    );
    sql.extend(wrapped("SELECT ", &selected, ""));
    sql.extend(wrapped("FROM unnest(", &params, ")"));
    sql.extend(wrapped("  AS u(", &columns, ")"));
    let insert_sql = sql_lines(&sql);
    if !unicity.is_empty() {
        let keys: Vec<String> = unicity.iter().map(|u| quote_ident(u)).collect();
        let updates: Vec<String> = fields
            .iter()
            .filter(|f| !unicity.contains(&f.name.value.as_str()))
            .map(|f| {
                let c = quote_ident(&f.name.value);
                format!("  {c} = EXCLUDED.{c},")
            })
            .collect();
        if updates.is_empty() {
            sql.push(format!("ON CONFLICT ({}) DO NOTHING", keys.join(", ")));
        } else {
            // The row keeps the values of the later message (update; with `order_by`, of the
            // higher version first) or of the earlier one (ignore), by position, whatever
            // order concurrent batches commit in. Rows written before positions had epochs
            // (NULL) are older than any position.
            let existing = format!("COALESCE(t.{epoch}, 0), COALESCE(t.{seq}, 0)");
            let incoming = format!("EXCLUDED.{epoch}, EXCLUDED.{seq}");
            let winner = match (&p.on_conflict, &p.order_by) {
                (OnConflict::Update, Some(o)) => {
                    let v = quote_ident(&o.value);
                    // Text byte by byte, as Rust compares it in the batch's own dedup.
                    let collate = match e.field(&o.value).map(|f| f.ty.value) {
                        Some(FieldType::String) => " COLLATE \"C\"",
                        _ => "",
                    };
                    format!("(t.{v}{collate}, {existing}) <= (EXCLUDED.{v}{collate}, {incoming})")
                }
                (OnConflict::Update, None) => format!("({existing}) <= ({incoming})"),
                (OnConflict::Ignore, _) => format!("({existing}) > ({incoming})"),
            };
            sql.push(format!("ON CONFLICT ({}) DO UPDATE SET", keys.join(", ")));
            sql.extend(updates);
            sql.push(format!("  {message_id} = EXCLUDED.{message_id},"));
            sql.push(format!("  {seq} = EXCLUDED.{seq},"));
            sql.push(format!("  {epoch} = EXCLUDED.{epoch}"));
            sql.push(format!("WHERE {winner}"));
        }
    }
    // Binary COPY: straight into the table, or (with a unique key) into a staging table that
    // the same ON CONFLICT clause merges from.
    let table_q = quote_ident(&p.table.value);
    let stage_q = quote_ident(&format!("_nomnom_stage_{}", p.table.value));
    let copy_sql = sql_lines(&wrapped(
        &format!("COPY {table_q} ("),
        &columns,
        ") FROM STDIN (FORMAT binary)",
    ));
    let copy_consts = if unicity.is_empty() {
        quote!()
    } else {
        let stage_sql = sql_lines(
            &[
                vec![format!(
                    "CREATE TEMP TABLE IF NOT EXISTS {stage_q} ON COMMIT DELETE ROWS AS"
                )],
                wrapped(
                    "SELECT ",
                    &columns,
                    &format!(" FROM {table_q} WITH NO DATA"),
                ),
            ]
            .concat(),
        );
        let stage_copy_sql = sql_lines(&wrapped(
            &format!("COPY {stage_q} ("),
            &columns,
            ") FROM STDIN (FORMAT binary)",
        ));
        let mut merge = wrapped(&format!("INSERT INTO {table_q} AS t ("), &columns, ")");
        merge.extend(wrapped("SELECT ", &columns, &format!(" FROM {stage_q}")));
        merge.extend(
            sql[sql
                .iter()
                .position(|l| l.starts_with("ON CONFLICT"))
                .unwrap_or(sql.len())..]
                .iter()
                .cloned(),
        );
        let merge_sql = sql_lines(&merge);
        quote! {
            /// Creates the temporary staging table of upserts by `COPY` (emptied at commit).
            pub const STAGE_SQL: &str = #stage_sql;
            /// `COPY` into the staging table.
            pub const STAGE_COPY_SQL: &str = #stage_copy_sql;
            /// The upsert from the staging table (the same `ON CONFLICT` rule as `UPSERT_SQL`).
            pub const MERGE_SQL: &str = #merge_sql;
        }
    };
    let (stage, stage_copy, merge) = if unicity.is_empty() {
        (
            quote!(::std::option::Option::None),
            quote!(::std::option::Option::None),
            quote!(::std::option::Option::None),
        )
    } else {
        (
            quote!(::std::option::Option::Some(STAGE_SQL)),
            quote!(::std::option::Option::Some(STAGE_COPY_SQL)),
            quote!(::std::option::Option::Some(MERGE_SQL)),
        )
    };
    let field_count = (columns.len()) as i16;
    let copy_fields = fields.iter().map(|f| {
        let id = field_ident(&f.name.value);
        quote!(out.field(&r.#id);)
    });
    let copy_order = if ordered {
        quote! {
            out.field(&o.position.sequence);
            out.field(&o.position.epoch);
        }
    } else {
        quote!()
    };
    // Without a unique key there is nothing to conflict on: both modes are the plain insert.
    let (upsert_const, statement) = if unicity.is_empty() {
        (
            quote!(),
            quote!({
                let _ = mode;
                INSERT_SQL
            }),
        )
    } else {
        let sql = sql_lines(&sql);
        (
            quote! {
                /// The multi-row upsert statement of this table.
                pub const UPSERT_SQL: &str = #sql;
            },
            quote! {
                match mode {
                    ::nomnom_runtime::WriteMode::Insert => INSERT_SQL,
                    ::nomnom_runtime::WriteMode::Upsert => UPSERT_SQL,
                }
            },
        )
    };
    let binds = fields.iter().map(|f| {
        let id = field_ident(&f.name.value);
        let base = f.ty.value.bind_diesel_type().expect("stored field");
        let st = if f.nullable {
            quote!(::diesel::sql_types::Nullable<#base>)
        } else {
            base
        };
        let bind = column_type(f).bind;
        let value = match (bind, f.nullable) {
            (Bind::Str, false) => quote!(r.#id.as_str()),
            (Bind::Str, true) => quote!(r.#id.as_deref()),
            (Bind::ArrayLiteral, false) => {
                quote!(::nomnom_runtime::__private::pg_text_array(&r.#id))
            }
            (Bind::ArrayLiteral, true) => {
                quote!(r.#id.as_deref().map(::nomnom_runtime::__private::pg_text_array))
            }
            (Bind::Value, _) => quote!(r.#id),
            (Bind::Ref | Bind::Numeric, false) => quote!(&r.#id),
            (Bind::Ref | Bind::Numeric, true) => quote!(r.#id.as_ref()),
        };
        let values = quote!(chunk.iter().map(|(r, _)| #value));
        // Text and decimals go through the runtime's array binds: text with one copy per value
        // instead of diesel's two, decimals converted to binary NUMERIC.
        let array = match bind {
            Bind::Str => quote!(::nomnom_runtime::pg::TextArray::new(#values)),
            Bind::Numeric => quote!(::nomnom_runtime::pg::NumericArray::new(#values)),
            _ => quote!(#values.collect::<::std::vec::Vec<_>>()),
        };
        quote! {
            .bind::<::diesel::sql_types::Array<#st>, _>(#array)
        }
    });
    let seq_bind = if ordered {
        quote! {
            .bind::<::diesel::sql_types::Array<::diesel::sql_types::BigInt>, _>(
                chunk.iter().map(|(_, o)| o.position.sequence).collect::<::std::vec::Vec<i64>>()
            )
            .bind::<::diesel::sql_types::Array<::diesel::sql_types::BigInt>, _>(
                chunk.iter().map(|(_, o)| o.position.epoch).collect::<::std::vec::Vec<i64>>()
            )
        }
    } else {
        quote!()
    };
    quote! {
        /// The multi-row insert statement of this table (no `ON CONFLICT`).
        pub const INSERT_SQL: &str = #insert_sql;

        #upsert_const

        /// `COPY` of this table's rows (binary format).
        pub const COPY_SQL: &str = #copy_sql;

        #copy_consts

        /// `(row, message position)` pairs in binary `COPY` form, rows with the same unique key
        /// merged first (last wins), with the statements that store them.
        pub fn copy_rows #lifetime(
            rows: ::std::vec::Vec<(& #row_lifetime #t, ::nomnom_runtime::Origin)>,
        ) -> ::nomnom_runtime::TableCopy {
            #dedup
            let mut out = ::nomnom_runtime::pg::CopyRows::with_capacity(rows.len() * 128);
            for (r, o) in &rows {
                out.row(#field_count);
                #(#copy_fields)*
                out.field(&o.message_id);
                #copy_order
            }
            ::nomnom_runtime::TableCopy {
                table: #table_name,
                copy_sql: COPY_SQL,
                stage_sql: #stage,
                stage_copy_sql: #stage_copy,
                merge_sql: #merge,
                rows: out.rows(),
                data: out.finish(),
            }
        }

        /// Writes `(row, message position)` pairs with multi-row statements, plain inserts or
        /// upserts by `mode`; on a unique-key conflict of an upsert the message order decides
        /// (see `on_conflict` and `order_by`). Returns rows affected.
        pub async fn write_rows #lifetime(
            conn: &mut ::diesel_async::AsyncPgConnection,
            rows: ::std::vec::Vec<(& #row_lifetime #t, ::nomnom_runtime::Origin)>,
            mode: ::nomnom_runtime::WriteMode,
        ) -> ::diesel::QueryResult<usize> {
            use ::diesel_async::RunQueryDsl as _;
            #dedup
            let sql = #statement;
            let mut written = 0;
            for chunk in rows.chunks(::nomnom_runtime::__private::UPSERT_CHUNK_ROWS) {
                written += ::diesel::sql_query(sql)
                    #(#binds)*
                    .bind::<::diesel::sql_types::Array<::diesel::sql_types::Uuid>, _>(
                        chunk.iter().map(|(_, o)| o.message_id).collect::<::std::vec::Vec<_>>()
                    )
                    #seq_bind
                    .execute(conn)
                    .await?;
            }
            Ok(written)
        }
    }
}

/// `head item, item, … tail` as lines of at most about 100 characters; continuation lines
/// are indented by four spaces.
pub(crate) fn wrapped(head: &str, items: &[String], tail: &str) -> Vec<String> {
    const WIDTH: usize = 100;
    let mut lines = Vec::new();
    let mut line = head.to_string();
    for (i, item) in items.iter().enumerate() {
        let piece = if i + 1 == items.len() {
            format!("{item}{tail}")
        } else {
            format!("{item},")
        };
        let fresh = line.trim().is_empty() || line == head;
        if !fresh && line.len() + 1 + piece.len() > WIDTH {
            lines.push(line);
            line = format!("    {piece}");
        } else {
            if !fresh {
                line.push(' ');
            }
            line.push_str(&piece);
        }
    }
    if items.is_empty() {
        line.push_str(tail);
    }
    lines.push(line);
    lines
}

/// SQL text, one clause per line, as a raw string literal (prettyplease keeps it verbatim, so
/// the generated constant reads like the SQL it is).
pub(crate) fn sql_lines(lines: &[String]) -> TokenStream {
    raw_str(&lines.join("\n"))
}
