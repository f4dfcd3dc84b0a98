//! The schema ledger: the shape of every entity as last recorded (`entities.lock`, committed
//! beside `entities/`, updated only by `nomnom-schema lock`), and the changes between it and the
//! YAML, each classified — what a build may take with a note, and what it must refuse.
//!
//! The rules of what keeps stored data as it is live here; which type may become which lives in
//! the type table (`nomnom_runtime::TypeInfo::widens_to`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::diag::{Diagnostics, Loc};
use crate::model::{EntityDef, FieldDef, OnConflict, SourceType};
use crate::types::FieldType;
use crate::validate::Schema;

/// The ledger's file name, beside the entities directory.
pub const LOCK_FILE: &str = "entities.lock";

/// The format of the ledger this version writes and reads.
const FORMAT: u32 = 1;

/// The recorded shape of every entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The ledger's format.
    pub format: u32,
    /// Every entity, by name.
    pub entities: BTreeMap<String, EntityShape>,
}

/// What is recorded of one entity: what its stored rows depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityShape {
    /// `root`, `derived` or `reference`.
    pub source_type: String,
    /// Its table; `None` when it is not stored.
    pub table: Option<String>,
    /// The natural key (`unicity_fields`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unicity: Vec<String>,
    /// `update` or `ignore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<String>,
    /// The field that versions a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
    /// Its fields, in file order.
    pub fields: Vec<FieldShape>,
}

/// What is recorded of one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldShape {
    /// Its name (its column's).
    pub name: String,
    /// Its YAML type (canonical name).
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether it may be null.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nullable: bool,
    /// Its `max_length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
}

impl Ledger {
    /// The shape of `schema`.
    pub fn of(schema: &Schema) -> Self {
        let entities = schema
            .entities
            .iter()
            .filter(|e| !e.is_documentation_only())
            .map(|e| (e.name.value.clone(), EntityShape::of(e)))
            .collect();
        Self {
            format: FORMAT,
            entities,
        }
    }

    /// The ledger as the lock file holds it: pretty JSON, entities by name, a final newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a ledger is JSON");
        text.push('\n');
        text
    }

    /// The schema's version: a digest of [`Ledger::to_text`] (FNV-1a, 64 bits, in hex), the
    /// same for the same shape whatever the YAML's comments, order of files or formatting.
    pub fn version(&self) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.to_text().bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// Reads a lock file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let ledger: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if ledger.format != FORMAT {
            return Err(format!(
                "format {} is not the {FORMAT} this nomnom-codegen reads",
                ledger.format
            ));
        }
        Ok(ledger)
    }
}

impl EntityShape {
    fn of(e: &EntityDef) -> Self {
        let p = e.persistence.as_ref();
        Self {
            source_type: match e.source_type {
                SourceType::Root => "root",
                SourceType::Derived => "derived",
                SourceType::Reference => "reference",
            }
            .into(),
            table: p.map(|p| p.table.value.clone()),
            unicity: p
                .map(|p| p.unicity_fields.iter().map(|u| u.value.clone()).collect())
                .unwrap_or_default(),
            on_conflict: p
                .filter(|p| !p.unicity_fields.is_empty())
                .map(|p| match p.on_conflict {
                    OnConflict::Update => "update".into(),
                    OnConflict::Ignore => "ignore".into(),
                }),
            order_by: p.and_then(|p| p.order_by.as_ref().map(|o| o.value.clone())),
            fields: e.fields.iter().map(FieldShape::of).collect(),
        }
    }

    fn field(&self, name: &str) -> Option<&FieldShape> {
        self.fields.iter().find(|f| f.name == name)
    }
}

impl FieldShape {
    fn of(f: &FieldDef) -> Self {
        Self {
            name: f.name.value.clone(),
            ty: f.ty.value.name().into(),
            nullable: f.nullable,
            max_length: f.max_length.as_ref().map(|m| m.value),
        }
    }

    fn ty(&self) -> Option<FieldType> {
        FieldType::from_yaml(&self.ty)
    }

    fn stored(&self) -> bool {
        self.ty().is_some_and(FieldType::is_stored)
    }
}

/// How a change treats what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeClass {
    /// Keeps every stored value and needs nothing of the operator (a new entity, a new nullable
    /// field, a widening).
    Safe,
    /// Handled as the YAML declares (`renamed_from`, `default`, `removed`).
    Declared,
    /// Existing rows lack what the new shape needs (a new required field without `default`,
    /// a nullable field made required, another unique key): refused until declared.
    NeedsBackfill,
    /// Would lose or silently change stored data (a narrowing, a type change without a
    /// conversion, a dropped field or entity): refused until declared.
    Breaking,
}

impl ChangeClass {
    /// How a note or error names the class.
    pub fn label(self) -> &'static str {
        match self {
            ChangeClass::Safe => "safe",
            ChangeClass::Declared => "declared",
            ChangeClass::NeedsBackfill => "needs a backfill",
            ChangeClass::Breaking => "breaking",
        }
    }

    /// Whether a build takes it (with a note).
    pub fn builds(self) -> bool {
        matches!(self, ChangeClass::Safe | ChangeClass::Declared)
    }
}

/// One change between the ledger and the YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its class.
    pub class: ChangeClass,
    /// The YAML file it is in (for a dropped entity: the lock file).
    pub file: String,
    /// Where.
    pub loc: Loc,
    /// What changed.
    pub what: String,
    /// What to do about it, when the build refuses it.
    pub remedy: Option<String>,
}

/// Every change from `ledger` to `schema`, classified, in file then position order.
pub fn compare(ledger: &Ledger, schema: &Schema, lock_file: &str) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut matched: Vec<&str> = Vec::new();
    for e in schema
        .entities
        .iter()
        .filter(|e| !e.is_documentation_only())
    {
        let name = &e.name.value;
        let before = ledger.entities.get(name.as_str());
        match before {
            Some(before) => {
                matched.push(name);
                compare_entity(e, before, &mut changes);
            }
            None => changes.push(Change {
                class: ChangeClass::Safe,
                file: e.file.clone(),
                loc: e.name.loc,
                what: format!("new entity `{name}`"),
                remedy: None,
            }),
        }
    }
    for (name, before) in &ledger.entities {
        if !matched.contains(&name.as_str()) {
            changes.push(Change {
                class: ChangeClass::Breaking,
                file: lock_file.into(),
                loc: Loc { line: 1, col: 1 },
                what: format!(
                    "entity `{name}` is gone from the YAML{}",
                    before
                        .table
                        .as_ref()
                        .map(|t| format!(" (its table `{t}` keeps its rows)"))
                        .unwrap_or_default()
                ),
                remedy: Some(format!(
                    "restore its file; to stop ingesting it and keep its table as it is, record the drop with `nomnom-schema lock --accept-breaking`{}",
                    before
                        .table
                        .as_ref()
                        .map(|t| format!(" (`SELECT count(*) FROM {t}` on each database tells whether it holds rows)"))
                        .unwrap_or_default()
                )),
            });
        }
    }
    changes.sort_by(|a, b| (&a.file, a.loc).cmp(&(&b.file, b.loc)));
    changes
}

fn compare_entity(e: &EntityDef, before: &EntityShape, changes: &mut Vec<Change>) {
    let name = &e.name.value;
    let mut push = |class: ChangeClass, loc: Loc, what: String, remedy: Option<&str>| {
        changes.push(Change {
            class,
            file: e.file.clone(),
            loc,
            what,
            remedy: remedy.map(String::from),
        })
    };
    let now = EntityShape::of(e);
    let persistence_loc = e.persistence.as_ref().map_or(e.name.loc, |p| p.loc);
    if now.table != before.table {
        match (&before.table, &now.table) {
            (None, Some(t)) => push(
                ChangeClass::Safe,
                persistence_loc,
                format!("`{name}` is now stored, in new table `{t}`"),
                None,
            ),
            (Some(t), _) => push(
                ChangeClass::Breaking,
                persistence_loc,
                format!(
                    "`{name}`'s table changes from `{t}` to {}: its rows stay in `{t}`",
                    now.table
                        .as_ref()
                        .map_or("none".into(), |n| format!("`{n}`"))
                ),
                Some(
                    "keep `conformant_table` as it was (rename the table by hand, then record it with `nomnom-schema lock --accept-breaking`)",
                ),
            ),
            (None, None) => {}
        }
    }
    if now.unicity != before.unicity && before.table.is_some() && now.table.is_some() {
        push(
            ChangeClass::NeedsBackfill,
            persistence_loc,
            format!(
                "`{name}`'s unique key changes from [{}] to [{}]: stored rows may repeat the new key",
                before.unicity.join(", "),
                now.unicity.join(", ")
            ),
            Some(
                "keep `unicity_fields` as they were; to change them, deduplicate the table by the new key, then record it with `nomnom-schema lock --accept-breaking`",
            ),
        );
    }
    for f in &e.fields {
        let field = &f.name.value;
        let old_name = f.renamed_from.as_ref().map(|r| r.value.as_str());
        let was = old_name
            .and_then(|old| before.field(old))
            .or_else(|| before.field(field));
        let Some(was) = was else {
            if let Some(old) = &f.renamed_from {
                push(
                    ChangeClass::Breaking,
                    old.loc,
                    format!(
                        "`{name}.{field}` is `renamed_from: {}`, which the ledger does not hold",
                        old.value
                    ),
                    Some("name a field the ledger holds, or drop `renamed_from`"),
                );
                continue;
            }
            let shape = FieldShape::of(f);
            if !shape.stored() || f.nullable {
                push(
                    ChangeClass::Safe,
                    f.name.loc,
                    format!("new field `{name}.{field}`"),
                    None,
                );
            } else if let Some(d) = &f.default {
                push(
                    ChangeClass::Declared,
                    d.loc,
                    format!(
                        "new required field `{name}.{field}`, stored rows get its `default: {}`",
                        d.text
                    ),
                    None,
                );
            } else {
                push(
                    ChangeClass::NeedsBackfill,
                    f.name.loc,
                    format!(
                        "new required field `{name}.{field}`: stored rows have no value for it"
                    ),
                    Some(
                        "give it `default: <value>` for the rows stored before, or make it `nullable: true`",
                    ),
                );
            }
            continue;
        };
        if was.name != *field {
            push(
                ChangeClass::Declared,
                f.name.loc,
                format!(
                    "`{name}.{}` is renamed `{field}` (its column too)",
                    was.name
                ),
                None,
            );
        }
        compare_field(name, f, was, &mut push);
    }
    let renamed: Vec<&str> = e
        .fields
        .iter()
        .filter_map(|f| f.renamed_from.as_ref().map(|r| r.value.as_str()))
        .collect();
    for was in &before.fields {
        if e.field(&was.name).is_some() || renamed.contains(&was.name.as_str()) {
            continue;
        }
        match e.removed.iter().find(|r| r.value == was.name) {
            Some(r) => push(
                ChangeClass::Declared,
                r.loc,
                format!(
                    "field `{name}.{}` is removed: {}",
                    was.name,
                    if was.stored() {
                        "its column keeps what it holds and new rows leave it null"
                    } else {
                        "it was not stored"
                    }
                ),
                None,
            ),
            None if !was.stored() => push(
                ChangeClass::Safe,
                e.name.loc,
                format!("field `{name}.{}` (not stored) is gone", was.name),
                None,
            ),
            None => push(
                ChangeClass::Breaking,
                e.name.loc,
                format!(
                    "field `{name}.{}` is gone: new rows would lose it and a worker would drop nothing but stop writing it",
                    was.name
                ),
                Some(
                    "restore it, list it under the entity's `removed: [...]` to keep its column and stop writing it, or name it in the new field's `renamed_from`",
                ),
            ),
        }
    }
}

fn compare_field(
    entity: &str,
    f: &FieldDef,
    was: &FieldShape,
    push: &mut impl FnMut(ChangeClass, Loc, String, Option<&str>),
) {
    let field = &f.name.value;
    let now = f.ty.value;
    match was.ty() {
        Some(before) if before == now => {}
        Some(before) if before.widens_to(now) => push(
            ChangeClass::Safe,
            f.ty.loc,
            format!(
                "`{entity}.{field}` widens from `{}` to `{}` (the column is converted in place)",
                before.name(),
                now.name()
            ),
            None,
        ),
        before => push(
            ChangeClass::Breaking,
            f.ty.loc,
            format!(
                "`{entity}.{field}` changes type from `{}` to `{}`, which does not keep every stored value",
                before.map_or_else(|| was.ty.clone(), |t| t.name().to_string()),
                now.name()
            ),
            Some(
                "keep the type (the types each may widen to are in docs/ENTITY_SPEC.md), or add a field of the new type beside it, backfill it, and list the old one under `removed:`",
            ),
        ),
    }
    let now_max = f.max_length.as_ref().map(|m| m.value);
    let at = f.max_length.as_ref().map_or(f.name.loc, |m| m.loc);
    match (was.max_length, now_max) {
        (a, b) if a == b => {}
        (Some(a), None) => push(
            ChangeClass::Safe,
            f.name.loc,
            format!("`{entity}.{field}` loses its `max_length` {a}"),
            None,
        ),
        (Some(a), Some(b)) if b > a => push(
            ChangeClass::Safe,
            at,
            format!("`{entity}.{field}`'s `max_length` grows from {a} to {b}"),
            None,
        ),
        (a, b) => push(
            ChangeClass::Breaking,
            at,
            format!(
                "`{entity}.{field}`'s `max_length` narrows from {} to {}: stored values may be longer",
                a.map_or("none".into(), |n| n.to_string()),
                b.map_or("none".into(), |n| n.to_string())
            ),
            Some("keep the limit, or widen it"),
        ),
    }
    match (was.nullable, f.nullable) {
        (false, true) => push(
            ChangeClass::Safe,
            f.name.loc,
            format!("`{entity}.{field}` becomes nullable"),
            None,
        ),
        (true, false) if FieldShape::of(f).stored() => push(
            ChangeClass::NeedsBackfill,
            f.name.loc,
            format!("`{entity}.{field}` becomes required: stored rows may hold null"),
            Some(
                "keep it nullable; or fill the nulls, then record it with `nomnom-schema lock --accept-breaking`",
            ),
        ),
        _ => {}
    }
}

/// The changes as a build reports them: the refused ones as errors, the others as notes.
pub fn diagnostics(changes: &[Change]) -> (Diagnostics, Diagnostics) {
    let (mut errors, mut notes) = (Diagnostics::default(), Diagnostics::default());
    for c in changes {
        let message = format!("{} schema change: {}", c.class.label(), c.what);
        if c.class.builds() {
            notes.push(&c.file, c.loc, message, None);
        } else {
            let hint = c.remedy.clone().map(|r| {
                format!("{r}; the ledger is `{LOCK_FILE}`, updated by `nomnom-schema lock`")
            });
            errors.push(&c.file, c.loc, message, hint);
        }
    }
    (errors, notes)
}
