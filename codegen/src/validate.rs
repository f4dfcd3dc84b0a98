//! Stage 2: cross-check the loaded entities against each other and the spec.

use std::collections::{BTreeMap, BTreeSet};

use crate::diag::{Diagnostics, did_you_mean};
use crate::model::*;
use crate::types::FieldType;
use nomnom_runtime::Constant;

/// diesel's `table!` supports this many columns with the `32-column-tables` feature.
pub(crate) const MAX_COLUMNS: usize = 32;

/// A validated schema, ready for generation. Entities keep file order.
#[derive(Debug, Clone)]
pub struct Schema {
    /// All entities (root, derived, reference), in file-name order.
    pub entities: Vec<EntityDef>,
    /// What builds but deserves a look (`cargo::warning`), in file then position order.
    pub warnings: Diagnostics,
    /// The version of the schema ledger (`entities.lock`) the YAML was judged against, if any.
    pub locked_version: Option<String>,
}

impl Schema {
    /// Looks up an entity by name.
    pub fn entity(&self, name: &str) -> Option<&EntityDef> {
        self.entities.iter().find(|e| e.name.value == name)
    }

    /// The derived entities whose parent is `name`, in file order.
    pub fn children(&self, name: &str) -> Vec<&EntityDef> {
        self.entities
            .iter()
            .filter(|e| e.parent_name() == Some(name))
            .collect()
    }

    /// `name` and all its descendants, parents before children (depth first, file order).
    pub fn subtree(&self, name: &str) -> Vec<&EntityDef> {
        let mut out = Vec::new();
        if let Some(e) = self.entity(name) {
            out.push(e);
            for c in self.children(name) {
                out.extend(self.subtree(&c.name.value));
            }
        }
        out
    }
}

impl EntityDef {
    /// Whether messages of this entity are posted and parsed on their own: a root, or a
    /// reference entity with `persistence` (stored reference data, loaded directly).
    pub fn is_ingested(&self) -> bool {
        match self.source_type {
            SourceType::Root => true,
            SourceType::Reference => self.persistence.is_some(),
            SourceType::Derived => false,
        }
    }

    /// Whether this is a reference entity without `persistence`: documentation only, nothing
    /// is generated for it.
    pub fn is_documentation_only(&self) -> bool {
        self.source_type == SourceType::Reference && self.persistence.is_none()
    }

    /// The parent entity's name (derived entities only).
    pub fn parent_name(&self) -> Option<&str> {
        if self.source_type != SourceType::Derived {
            return None;
        }
        self.repeated_for
            .as_ref()
            .map(|r| r.entity.value.as_str())
            .or(self.parent.as_ref().map(|p| p.value.as_str()))
    }

    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name.value == name)
    }

    /// Fields that become columns.
    pub fn stored_fields(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.iter().filter(|f| f.ty.value.is_stored())
    }
}

/// Checks everything that needs more than one file or one field to see. After a load that had
/// problems (`all_files_loaded` false), checks that would only echo them (an unknown parent
/// when some file did not load, a field dropped from an incomplete entity) are skipped.
pub(crate) fn validate_loaded(
    entities: Vec<EntityDef>,
    all_files_loaded: bool,
) -> Result<Schema, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut names: BTreeMap<&str, &EntityDef> = BTreeMap::new();
    let mut tables: BTreeMap<&str, &EntityDef> = BTreeMap::new();
    for e in &entities {
        if let Some(first) = names.insert(&e.name.value, e) {
            d.error(
                &e.file,
                e.name.loc,
                format!(
                    "entity `{}` is already defined in {}:{}:{}",
                    e.name.value, first.file, first.name.loc.line, first.name.loc.col
                ),
            );
        }
        if let Some(p) = &e.persistence
            && let Some(first) = tables.insert(&p.table.value, e)
        {
            d.error(
                &e.file,
                p.table.loc,
                format!(
                    "table `{}` is already used by entity `{}`",
                    p.table.value, first.name.value
                ),
            );
        }
    }
    check_generated_names(&entities, &mut d);
    let known_entities: Vec<&str> = names.keys().copied().collect();
    for e in &entities {
        check_entity(e, &names, &known_entities, all_files_loaded, &mut d);
        if e.complete {
            crate::example::check(&entities, e, &mut d);
        }
    }
    check_cycles(&entities, &names, &mut d);
    if d.is_empty() {
        let mut warnings = Diagnostics::default();
        for e in &entities {
            warn_key_bytes(e, &mut warnings);
            warn_csv_columns(e, &mut warnings);
        }
        Ok(Schema {
            entities,
            warnings: warnings.sorted(),
            locked_version: None,
        })
    } else {
        Err(d.sorted())
    }
}

fn check_entity(
    e: &EntityDef,
    names: &BTreeMap<&str, &EntityDef>,
    known_entities: &[&str],
    all_files_loaded: bool,
    d: &mut Diagnostics,
) {
    let f = &e.file;
    let mut seen = BTreeSet::new();
    for field in &e.fields {
        if !seen.insert(field.name.value.as_str()) {
            d.error(
                f,
                field.name.loc,
                format!("field `{}` is defined twice", field.name.value),
            );
        }
    }
    check_evolution_keys(e, d);
    let parent = match e.source_type {
        SourceType::Root | SourceType::Reference => {
            if let Some(r) = &e.repeated_for {
                d.error(
                    f,
                    r.loc,
                    if r.nested_object {
                        "`object` is only allowed on derived entities"
                    } else {
                        "`repeated_for` is only allowed on derived entities"
                    },
                );
            }
            if let Some(p) = &e.parent {
                d.error(f, p.loc, "`parent` is only allowed on derived entities");
            }
            None
        }
        SourceType::Derived if e.repeated_for.is_none() => {
            d.error(
                f,
                e.name.loc,
                format!(
                    "derived entity `{}` needs `repeated_for: {{entity, field, each_known_as}}` (a row per element of a list) or `parent` with `object: <field>` (a row from a nested object)",
                    e.name.value
                ),
            );
            // Without the element name its sources cannot be checked meaningfully.
            return;
        }
        SourceType::Derived => derived_parent(e, names, known_entities, all_files_loaded, d),
    };
    if !e.is_documentation_only() {
        for field in &e.fields {
            check_field(e, field, parent, d);
        }
    }
    if let Some(p) = &e.persistence {
        check_persistence(e, p, d);
        check_identifiers(e, p, d);
    }
    if let Some(c) = &e.csv {
        check_csv(e, c, d);
    }
}

/// PostgreSQL's identifiers are at most 63 bytes; a longer one is cut silently, so two names
/// could become one and the schema would not read back as declared.
const MAX_IDENTIFIER_BYTES: usize = 63;

fn check_identifiers(e: &EntityDef, p: &Persistence, d: &mut Diagnostics) {
    let names = [(&p.table, "table name"), (&p.id_column, "id column")]
        .into_iter()
        .chain(e.stored_fields().map(|f| (&f.name, "column (field) name")));
    for (name, what) in names {
        if name.value.len() > MAX_IDENTIFIER_BYTES {
            d.error(
                &e.file,
                name.loc,
                format!(
                    "{what} `{}` is {} bytes; PostgreSQL identifiers are at most {MAX_IDENTIFIER_BYTES} (it would cut it silently)",
                    name.value,
                    name.value.len()
                ),
            );
        }
    }
}

/// The byte limit the api applies to `String` key fields, when the table's unique key could
/// exceed PostgreSQL's index entry ([`nomnom_runtime::MAX_INDEX_KEY_BYTES`]) and so 202 would
/// not mean storable: each field without `max_length` shares what the fixed-size fields and the
/// declared lengths (4 bytes per character, UTF-8's widest) leave; if declared lengths alone
/// are too long, every `String` key field shares what the fixed-size fields leave. Empty when
/// the key always fits.
pub(crate) fn key_byte_limits(e: &EntityDef) -> Vec<(&str, usize)> {
    let Some(p) = &e.persistence else {
        return Vec::new();
    };
    let limit = nomnom_runtime::MAX_INDEX_KEY_BYTES;
    let sizes = key_sizes(e, p);
    if !sizes.unbounded.is_empty() {
        let each = limit.saturating_sub(sizes.fixed + sizes.declared) / sizes.unbounded.len();
        return sizes.unbounded.into_iter().map(|f| (f, each)).collect();
    }
    if sizes.fixed + sizes.declared <= limit {
        return Vec::new();
    }
    let each = limit.saturating_sub(sizes.fixed) / sizes.strings.len().max(1);
    sizes.strings.into_iter().map(|f| (f, each)).collect()
}

/// What the fields of a unique key take at most.
struct KeySizes<'a> {
    /// Bytes of the fixed-size fields.
    fixed: usize,
    /// Bytes of the `String` fields with `max_length` (4 per character).
    declared: usize,
    /// Every `String` field.
    strings: Vec<&'a str>,
    /// The `String` fields without `max_length`.
    unbounded: Vec<&'a str>,
}

fn key_sizes<'a>(e: &'a EntityDef, p: &'a Persistence) -> KeySizes<'a> {
    let mut sizes = KeySizes {
        fixed: 0,
        declared: 0,
        strings: Vec::new(),
        unbounded: Vec::new(),
    };
    for u in &p.unicity_fields {
        let Some(f) = e.field(&u.value) else { continue };
        match (f.ty.value, &f.max_length) {
            (FieldType::String, Some(m)) => {
                sizes.declared += 4 * m.value as usize;
                sizes.strings.push(u.value.as_str());
            }
            (FieldType::String, None) => {
                sizes.strings.push(u.value.as_str());
                sizes.unbounded.push(u.value.as_str());
            }
            // The type table's size; decimals, bytes and lists have their own limits, far
            // below an index key's in practice.
            (ty, _) => sizes.fixed += ty.info().key_bytes.unwrap_or(0),
        }
    }
    sizes
}

/// A unique key whose values could exceed what a PostgreSQL index entry holds: the build goes
/// on (the api refuses a value that would not fit, 422), with a warning and the hint.
fn warn_key_bytes(e: &EntityDef, w: &mut Diagnostics) {
    let Some(p) = &e.persistence else { return };
    let Some(first) = p.unicity_fields.first() else {
        return;
    };
    let limits = key_byte_limits(e);
    let Some((_, each)) = limits.first() else {
        return;
    };
    let fields = limits
        .iter()
        .map(|(f, _)| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let limit = nomnom_runtime::MAX_INDEX_KEY_BYTES;
    let (why, hint) = if key_sizes(e, p).unbounded.is_empty() {
        (
            "the `max_length`s of its String fields add up to more",
            "lower the `max_length` of its String fields",
        )
    } else {
        (
            "it has String fields without `max_length`",
            "give each a `max_length` (e.g. `max_length: 255`)",
        )
    };
    w.push(
        &e.file,
        first.loc,
        format!(
            "the unique key of `{}` may not fit PostgreSQL's index (about {limit} bytes a key): {why}; the api refuses values of {fields} over {each} bytes (422)",
            p.table.value
        ),
        Some(hint.into()),
    );
}

/// The fields a CSV column can feed: read from the body (not constants), in field order.
pub(crate) fn csv_fields(e: &EntityDef) -> impl Iterator<Item = &FieldDef> {
    // Constants and what a user transform computes have no column of their own (a transform's
    // input is a field's column, or a member the row does not store).
    e.fields.iter().filter(|f| {
        !matches!(
            f.computed_from.as_ref().map(|c| &c.transform),
            Some(Transform::Constant | Transform::Rust { .. })
        )
    })
}

fn one_char(value: &Spanned<String>, what: &str, d: &mut Diagnostics, file: &str) -> Option<u8> {
    let v = value.value.as_bytes();
    match v {
        [b] if b.is_ascii() && !matches!(b, b'\n' | b'\r') => Some(*b),
        _ => {
            d.error(
                file,
                value.loc,
                format!(
                    "`csv.{what}` must be one ASCII character other than a line break, not `{}`",
                    value.value
                ),
            );
            None
        }
    }
}

/// A field that `csv.columns` leaves out is null in every row read from CSV (a required one is
/// an error in [`check_csv`]): likely a field added to the entity and not to its columns.
fn warn_csv_columns(e: &EntityDef, w: &mut Diagnostics) {
    let Some(c) = e.csv.as_ref().filter(|c| !c.columns.is_empty()) else {
        return;
    };
    let at = c.columns.first().map_or(c.loc, |col| col.loc);
    for field in csv_fields(e).filter(|f| f.nullable) {
        let name = &field.name.value;
        let listed = c.columns.iter().any(|col| &col.value == name)
            || c.header_map.iter().any(|(_, f)| &f.value == name);
        if !listed {
            w.push(
                &e.file,
                at,
                format!(
                    "`csv.columns` does not list field `{name}`: rows read from CSV leave it null"
                ),
                Some(format!(
                    "add `{name}` where its column is, or `_` to skip a column"
                )),
            );
        }
    }
}

/// Checks a `csv:` block against the entity.
fn check_csv(e: &EntityDef, c: &CsvDef, d: &mut Diagnostics) {
    let f = &e.file;
    if !e.is_ingested() {
        d.error(
            f,
            c.loc,
            "`csv` applies to entities posted directly (root, or reference with `persistence`)",
        );
        return;
    }
    let delimiter = c
        .delimiter
        .as_ref()
        .and_then(|v| one_char(v, "delimiter", d, f));
    let quote = c.quote.as_ref().and_then(|v| one_char(v, "quote", d, f));
    if let (Some(a), Some(b), Some(q)) = (delimiter, quote, &c.quote)
        && a == b
    {
        d.error(f, q.loc, "`csv.quote` and `csv.delimiter` must differ");
    }
    let names: Vec<&str> = csv_fields(e).map(|x| x.name.value.as_str()).collect();
    let mut fed = BTreeSet::new();
    let mut check_name = |name: &Spanned<String>, d: &mut Diagnostics| {
        if !e.complete || names.contains(&name.value.as_str()) {
            if !fed.insert(name.value.clone()) {
                d.error(
                    f,
                    name.loc,
                    format!("field `{}` is given two columns", name.value),
                );
            }
        } else {
            d.push(
                f,
                name.loc,
                format!(
                    "`{}` is not a field of `{}` that CSV can feed",
                    name.value, e.name.value
                ),
                Some(did_you_mean(&name.value, &names)),
            );
        }
    };
    for col in &c.columns {
        if col.value != "_" {
            check_name(col, d);
        }
    }
    for (_, field) in &c.header_map {
        check_name(field, d);
    }
    if let Some(h) = &c.header
        && !h.value
        && c.columns.is_empty()
    {
        d.error(
            f,
            h.loc,
            "`csv.header: false` needs `csv.columns` (the field of each column, in order)",
        );
    }
    if !c.columns.is_empty() {
        for field in csv_fields(e) {
            if !field.nullable && !fed.contains(&field.name.value) && e.complete {
                d.error(
                    f,
                    c.loc,
                    format!(
                        "`csv.columns` does not list the required field `{}`",
                        field.name.value
                    ),
                );
            }
        }
    }
    if let Some(fmt) = &c.date_format
        && let Err(why) = nomnom_runtime::csv::check_date_format(&fmt.value)
    {
        d.error(f, fmt.loc, format!("`csv.date_format`: {why}"));
    }
}

/// The keys that declare schema changes (`renamed_from`, `default`, `removed`): each names
/// something the ledger may hold and nothing the entity has now.
fn check_evolution_keys(e: &EntityDef, d: &mut Diagnostics) {
    let f = &e.file;
    for field in &e.fields {
        if let Some(old) = &field.renamed_from {
            if !crate::ident::is_snake(&old.value) {
                d.error(
                    f,
                    old.loc,
                    format!(
                        "`renamed_from: {}` is not a snake_case field name",
                        old.value
                    ),
                );
            } else if e.field(&old.value).is_some() {
                d.error(
                    f,
                    old.loc,
                    format!(
                        "`renamed_from: {}` names a field the entity still has",
                        old.value
                    ),
                );
            }
        }
        if let Some(default) = &field.default {
            if let Err(why) = check_literal(default, field.ty.value) {
                d.error(f, default.loc, format!("`default`: {why}"));
            } else if field.nullable {
                d.error(
                    f,
                    default.loc,
                    "`default` is for a new required field (the value rows stored before it get); a nullable one needs none",
                );
            }
        }
    }
    for r in &e.removed {
        if e.field(&r.value).is_some() {
            d.error(
                f,
                r.loc,
                format!("`removed: {}` names a field the entity still has", r.value),
            );
        }
    }
}

/// Resolves and checks the parent of a derived entity.
fn derived_parent<'a>(
    e: &EntityDef,
    names: &BTreeMap<&str, &'a EntityDef>,
    known_entities: &[&str],
    all_files_loaded: bool,
    d: &mut Diagnostics,
) -> Option<&'a EntityDef> {
    let f = &e.file;
    let r = e.repeated_for.as_ref()?;
    if let Some(p) = &e.parent
        && p.value != r.entity.value
    {
        d.error(
            f,
            p.loc,
            format!(
                "`parent: {}` disagrees with `repeated_for.entity: {}`",
                p.value, r.entity.value
            ),
        );
    }
    let Some(parent) = names.get(r.entity.value.as_str()).copied() else {
        if !all_files_loaded {
            return None;
        }
        d.push(
            f,
            r.entity.loc,
            format!("unknown parent entity `{}`", r.entity.value),
            Some(did_you_mean(&r.entity.value, known_entities)),
        );
        return None;
    };
    if parent.is_documentation_only() {
        d.error(
            f,
            r.entity.loc,
            format!(
                "parent `{}` is a reference entity without `persistence`, which is never parsed",
                parent.name.value
            ),
        );
        return None;
    }
    match parent.field(&r.field.value) {
        None if !parent.complete => {}
        None => {
            let known: Vec<&str> = parent
                .fields
                .iter()
                .map(|x| x.name.value.as_str())
                .collect();
            d.push(
                f,
                r.field.loc,
                format!(
                    "`{}` has no field `{}` to {}",
                    parent.name.value,
                    r.field.value,
                    if r.nested_object {
                        "read the object from"
                    } else {
                        "repeat for"
                    }
                ),
                Some(did_you_mean(&r.field.value, &known)),
            );
        }
        Some(pf) if r.nested_object && pf.ty.value != FieldType::Json => d.error(
            f,
            r.field.loc,
            format!(
                "`object` must name a `Json` (`Object`) field, but `{}.{}` is `{}`",
                parent.name.value,
                r.field.value,
                pf.ty.value.name()
            ),
        ),
        Some(pf) if !r.nested_object && !pf.ty.value.is_list() => d.error(
            f,
            r.field.loc,
            format!(
                "`repeated_for.field` must be a List field, but `{}.{}` is `{}`",
                parent.name.value,
                r.field.value,
                pf.ty.value.name()
            ),
        ),
        Some(_) => {}
    }
    Some(parent)
}

fn check_field(e: &EntityDef, field: &FieldDef, parent: Option<&EntityDef>, d: &mut Diagnostics) {
    let f = &e.file;
    let Some(c) = &field.computed_from else {
        return;
    };
    let ty = field.ty.value;
    let fname = &field.name.value;
    if let Some(condition) = &c.condition
        && c.transform != Transform::Conditional
    {
        d.error(
            f,
            condition.loc,
            format!(
                "`condition` belongs to `copy_field_conditional`, not `{}`",
                c.name
            ),
        );
    }
    match &c.transform {
        Transform::Conditional => check_conditional(e, field, c, parent, d),
        Transform::Rust { path, .. } => {
            match c.sources.as_slice() {
                [] | [SourceRef::Element { .. }] => {}
                [SourceRef::ParentField(pf)] => d.error(
                    f,
                    pf.loc,
                    format!(
                        "a rust transform reads JSON: its source is {}, not `{}` (copy a parent field with `copy_from_parent`)",
                        match &e.repeated_for {
                            Some(r) => format!("the element `{}` or a path in it", r.each_known_as),
                            None => "the message body (no `sources`; `args: {field_path: ...}` for a member of it)".into(),
                        },
                        pf.value
                    ),
                ),
                _ => d.error(f, c.loc, "a rust transform takes at most one source"),
            }
            if ty == FieldType::ListObject {
                d.error(
                    f,
                    path.loc,
                    format!("field `{fname}` is `List[Object]`, which feeds derived entities and is never computed"),
                );
            }
        }
        Transform::CopyFromParent => {
            let Some(parent) = parent else {
                if e.is_ingested() {
                    d.error(
                        f,
                        c.loc,
                        "`copy_from_parent` needs a parent; root and stored reference entities have none",
                    );
                }
                return;
            };
            match c.sources.as_slice() {
                [SourceRef::ParentField(pf)] => {
                    if let Some(src) = parent_field(parent, pf, e, d) {
                        if src.ty.value != ty {
                            d.error(
                                f,
                                pf.loc,
                                format!(
                                    "field `{fname}` is `{}` but `{}.{}` is `{}`",
                                    ty.name(),
                                    parent.name.value,
                                    pf.value,
                                    src.ty.value.name()
                                ),
                            );
                        } else if src.nullable && !field.nullable {
                            d.error(
                                f,
                                pf.loc,
                                format!(
                                    "`{}.{}` is nullable, so field `{fname}` must be `nullable: true`",
                                    parent.name.value, pf.value
                                ),
                            );
                        }
                    }
                }
                _ => d.error(
                    f,
                    c.loc,
                    "`copy_from_parent` takes exactly one source: `{source: parent, field: <name>}`",
                ),
            }
        }
        Transform::ExtractField { legacy } => {
            match c.sources.as_slice() {
                [] | [SourceRef::Element { .. }] => {}
                [SourceRef::ParentField(pf)] => d.error(
                    f,
                    pf.loc,
                    format!(
                        "`extract_field` reads from the element; `{}` is not the element name{}",
                        pf.value,
                        e.repeated_for
                            .as_ref()
                            .map(|r| format!(" (`{}`)", r.each_known_as))
                            .unwrap_or_default()
                    ),
                ),
                _ => d.error(f, c.loc, "`extract_field` takes at most one source"),
            }
            let has_path = c.field_path.is_some()
                || matches!(c.sources.as_slice(), [SourceRef::Element { path, .. }] if !path.is_empty());
            if let (Some(p), [SourceRef::Element { path, .. }]) =
                (&c.field_path, c.sources.as_slice())
                && !path.is_empty()
            {
                d.error(
                    f,
                    p.loc,
                    "the path is given twice (in the source and in `field_path`)",
                );
            }
            if e.is_ingested() && !has_path {
                d.error(
                    f,
                    c.loc,
                    "`extract_field` on a root entity needs `args: {field_path: ...}`",
                );
            }
            if let Some(p) = &c.field_path
                && p.value.iter().any(|s| s.is_empty())
            {
                d.error(f, p.loc, "`field_path` has an empty segment");
            }
            if let Some((want, optional)) = legacy {
                let (ok, expected) = match want {
                    FieldType::Integer => (
                        matches!(ty, FieldType::Integer | FieldType::BigInt),
                        "`Integer` or `BigInt`".to_string(),
                    ),
                    FieldType::Float => (
                        matches!(ty, FieldType::Float | FieldType::Decimal),
                        "`Float` or `Decimal`".to_string(),
                    ),
                    other => (*other == ty, format!("`{}`", other.name())),
                };
                if !ok {
                    d.error(
                        f,
                        c.loc,
                        format!(
                            "`{}` needs a {expected} field, but `{fname}` is `{}`",
                            c.name,
                            ty.name()
                        ),
                    );
                }
                if *optional && !field.nullable {
                    d.error(
                        f,
                        c.loc,
                        format!(
                            "optional getter on non-nullable field `{fname}`: add `nullable: true`"
                        ),
                    );
                }
            }
        }
        Transform::Constant => {
            if !c.sources.is_empty() {
                d.error(f, c.loc, "`constant` takes no sources");
            }
            match &c.value {
                None => d.error(f, c.loc, "`constant` needs `args: {value: ...}`"),
                Some(lit) => {
                    if let Err(msg) = check_literal(lit, ty) {
                        d.error(f, lit.loc, msg);
                    }
                }
            }
        }
        Transform::Coalesce => {
            if c.sources.len() < 2 {
                d.error(f, c.loc, "`coalesce` needs two or more sources");
            }
            for s in &c.sources {
                if let SourceRef::ParentField(pf) = s {
                    let Some(parent) = parent else {
                        d.error(
                            f,
                            pf.loc,
                            format!(
                                "`{}` is not an element path, and root entities have no parent",
                                pf.value
                            ),
                        );
                        continue;
                    };
                    if let Some(src) = parent_field(parent, pf, e, d)
                        && src.ty.value != ty
                    {
                        d.error(
                            f,
                            pf.loc,
                            format!(
                                "field `{fname}` is `{}` but coalesce source `{}` is `{}`",
                                ty.name(),
                                pf.value,
                                src.ty.value.name()
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// `copy_field_conditional`: exactly two sources (taken when the condition holds, else), a
/// condition, and parent fields of the field's type (the condition's: a `String`).
fn check_conditional(
    e: &EntityDef,
    field: &FieldDef,
    c: &ComputedFrom,
    parent: Option<&EntityDef>,
    d: &mut Diagnostics,
) {
    let f = &e.file;
    let fname = &field.name.value;
    if c.sources.len() != 2 {
        d.error(
            f,
            c.loc,
            "`copy_field_conditional` takes exactly two sources: the one taken when the condition holds, then the one taken otherwise",
        );
    }
    let Some(condition) = &c.condition else {
        d.error(
            f,
            c.loc,
            "`copy_field_conditional` needs `condition: {field: <source>, equals: <text>}`",
        );
        return;
    };
    let no_parent = |pf: &Spanned<String>, d: &mut Diagnostics| {
        d.error(
            f,
            pf.loc,
            format!(
                "`{}` is not an element path, and root entities have no parent",
                pf.value
            ),
        );
    };
    for s in &c.sources {
        if let SourceRef::ParentField(pf) = s {
            let Some(parent) = parent else {
                no_parent(pf, d);
                continue;
            };
            if let Some(src) = parent_field(parent, pf, e, d)
                && src.ty.value != field.ty.value
            {
                d.error(
                    f,
                    pf.loc,
                    format!(
                        "field `{fname}` is `{}` but source `{}` is `{}`",
                        field.ty.value.name(),
                        pf.value,
                        src.ty.value.name()
                    ),
                );
            }
        }
    }
    if let SourceRef::ParentField(pf) = &condition.source {
        let Some(parent) = parent else {
            no_parent(pf, d);
            return;
        };
        if let Some(src) = parent_field(parent, pf, e, d)
            && src.ty.value != FieldType::String
        {
            d.error(
                f,
                pf.loc,
                format!(
                    "a condition compares text: `{}.{}` is `{}`, not `String` (compare an element path, whose numbers and booleans are compared as written)",
                    parent.name.value,
                    pf.value,
                    src.ty.value.name()
                ),
            );
        }
    }
}

fn parent_field<'a>(
    parent: &'a EntityDef,
    pf: &Spanned<String>,
    e: &EntityDef,
    d: &mut Diagnostics,
) -> Option<&'a FieldDef> {
    let found = parent.field(&pf.value);
    if found.is_none() && parent.complete {
        let known: Vec<&str> = parent
            .fields
            .iter()
            .map(|x| x.name.value.as_str())
            .collect();
        d.push(
            &e.file,
            pf.loc,
            format!("parent `{}` has no field `{}`", parent.name.value, pf.value),
            Some(did_you_mean(&pf.value, &known)),
        );
    }
    found
}

/// Checks that a `constant` literal converts to the field type, with the check the type table
/// names (for most types, the conversion the generated code runs).
fn check_literal(lit: &Literal, ty: FieldType) -> Result<(), String> {
    let t = lit.text.as_str();
    let ok = match ty.info().constant {
        Constant::RustLiteral(check) | Constant::Converted(check) => check(t).is_ok(),
        Constant::Unsupported => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "constant `{t}` is not a valid `{}` (expected {})",
            ty.name(),
            ty.info().expected
        ))
    }
}

/// `order_by` names a stored, non-nullable field of a type that Rust and PostgreSQL order
/// alike, on an entity whose upsert it can decide (`unicity_fields`, `on_conflict: update`).
fn check_order_by(e: &EntityDef, p: &Persistence, o: &Spanned<String>, d: &mut Diagnostics) {
    let f = &e.file;
    if p.unicity_fields.is_empty() {
        d.error(
            f,
            o.loc,
            "`order_by` needs `unicity_fields`: without a unique key no row is ever replaced",
        );
    }
    if p.on_conflict != OnConflict::Update {
        d.error(
            f,
            o.loc,
            "`order_by` needs `on_conflict: update` (`ignore` keeps the first row stored)",
        );
    }
    let orderable: Vec<&str> = ORDERABLE.iter().map(|t| t.name()).collect();
    match e.field(&o.value) {
        None if !e.complete => {}
        None => {
            let known: Vec<&str> = e.stored_fields().map(|x| x.name.value.as_str()).collect();
            d.push(
                f,
                o.loc,
                format!("order_by field `{}` is not a field of `{}`", o.value, e.name.value),
                Some(did_you_mean(&o.value, &known)),
            );
        }
        Some(field) if !ORDERABLE.contains(&field.ty.value) => d.push(
            f,
            o.loc,
            format!(
                "order_by field `{}` is a `{}`, which cannot version a row",
                o.value,
                field.ty.value.name()
            ),
            Some(format!("use a field of type {}", orderable.join(", "))),
        ),
        Some(field) if field.nullable => d.error(
            f,
            o.loc,
            format!(
                "order_by field `{}` is nullable; a row without a version could not be ordered. Make it `nullable: false`",
                o.value
            ),
        ),
        Some(_) => {}
    }
}

/// Types whose order is the same in Rust and in PostgreSQL, so a version compares alike
/// within a batch and against the table (text compares byte by byte on both sides: the upsert
/// compares it `COLLATE "C"`; decimals numerically; times to the microsecond).
const ORDERABLE: &[FieldType] = &[
    FieldType::Integer,
    FieldType::BigInt,
    FieldType::Decimal,
    FieldType::String,
    FieldType::Date,
    FieldType::Time,
    FieldType::DateTime,
];

fn check_persistence(e: &EntityDef, p: &Persistence, d: &mut Diagnostics) {
    let f = &e.file;
    if let Some(clash) = e.field(&p.id_column.value) {
        d.error(
            f,
            clash.name.loc,
            format!(
                "field `{}` has the name of the id column; rename the field or `conformant_id_column`",
                clash.name.value
            ),
        );
    }
    let mut seen = BTreeSet::new();
    for u in &p.unicity_fields {
        if !seen.insert(u.value.as_str()) {
            d.error(
                f,
                u.loc,
                format!("`{}` is listed twice in `unicity_fields`", u.value),
            );
        }
        match e.field(&u.value) {
            None if !e.complete => {}
            None => {
                let known: Vec<&str> = e.stored_fields().map(|x| x.name.value.as_str()).collect();
                d.push(
                    f,
                    u.loc,
                    format!("unicity field `{}` is not a field of `{}`", u.value, e.name.value),
                    Some(did_you_mean(&u.value, &known)),
                );
            }
            Some(field) if !field.ty.value.is_stored() => d.error(
                f,
                u.loc,
                format!("unicity field `{}` is a `{}`, which is not stored", u.value, field.ty.value.name()),
            ),
            Some(field) if matches!(field.ty.value, FieldType::Float | FieldType::Json) => d.error(
                f,
                u.loc,
                format!(
                    "unicity field `{}` is a `{}`, which cannot be a key: its values do not compare in Rust as PostgreSQL compares them (`0.0` and `-0.0`, JSON `1.0` and `1.00`); use a String, integer, Decimal or date field",
                    u.value,
                    field.ty.value.name()
                ),
            ),
            Some(field) if field.nullable => d.error(
                f,
                u.loc,
                format!(
                    "unicity field `{}` is nullable; NULLs never conflict, so the upsert could not match. Make it `nullable: false`",
                    u.value
                ),
            ),
            Some(_) => {}
        }
    }
    if let Some(o) = &p.order_by {
        check_order_by(e, p, o, d);
    }
    let columns = e.stored_fields().count() + 1;
    if columns > MAX_COLUMNS {
        d.error(
            f,
            p.loc,
            format!(
                "table `{}` would have {columns} columns; at most {MAX_COLUMNS} are supported (split the entity into a derived one)",
                p.table.value
            ),
        );
    }
    if !p.field_overrides.is_empty() {
        for o in &p.field_overrides {
            match e.field(&o.name.value) {
                None if !e.complete => {}
                None => d.error(
                    f,
                    o.name.loc,
                    format!(
                        "field_overrides names `{}`, which is not in `fields`",
                        o.name.value
                    ),
                ),
                Some(field) if field.ty.value != o.ty.value || field.nullable != o.nullable => d
                    .error(
                        f,
                        o.name.loc,
                        format!(
                            "field_overrides `{}` is `{}{}` but `fields` says `{}{}`",
                            o.name.value,
                            o.ty.value.name(),
                            if o.nullable { ", nullable" } else { "" },
                            field.ty.value.name(),
                            if field.nullable { ", nullable" } else { "" },
                        ),
                    ),
                Some(_) => {}
            }
        }
        for field in e.stored_fields() {
            if !p
                .field_overrides
                .iter()
                .any(|o| o.name.value == field.name.value)
            {
                d.error(
                    f,
                    field.name.loc,
                    format!(
                        "field `{}` is missing from `field_overrides`",
                        field.name.value
                    ),
                );
            }
        }
    }
}

/// Names the generator derives from entity and table names must not collide with its own items
/// or with Rust keywords.
fn check_generated_names(entities: &[EntityDef], d: &mut Diagnostics) {
    const RESERVED: &[&str] = &["RootEntity", "ParsedMessage", "RowBatch", "Schema", "Self"];
    let roots: BTreeSet<&str> = entities
        .iter()
        .filter(|e| e.is_ingested())
        .map(|e| e.name.value.as_str())
        .collect();
    for e in entities {
        let name = e.name.value.as_str();
        if RESERVED.contains(&name) {
            d.error(
                &e.file,
                e.name.loc,
                format!("entity name `{name}` is reserved for generated code; choose another"),
            );
        }
        if let Some(root) = name.strip_suffix("Message").filter(|r| roots.contains(r)) {
            d.error(
                &e.file,
                e.name.loc,
                format!("entity name `{name}` clashes with the generated message type of `{root}`; choose another"),
            );
        }
        if let Some(p) = &e.persistence {
            let t = p.table.value.as_str();
            let keyword = crate::ident::is_keyword(t);
            if keyword || t == "schema" {
                d.error(
                    &e.file,
                    p.table.loc,
                    format!("table name `{t}` is a Rust keyword or reserved; choose another"),
                );
            }
        }
    }
}

/// Derived entities must reach a root entity without revisiting one.
fn check_cycles(entities: &[EntityDef], names: &BTreeMap<&str, &EntityDef>, d: &mut Diagnostics) {
    for e in entities {
        let mut path = vec![e.name.value.as_str()];
        let mut cur = e;
        while let Some(p) = cur.parent_name() {
            if path.contains(&p) {
                if p == e.name.value {
                    path.push(p);
                    d.error(
                        &e.file,
                        e.name.loc,
                        format!("derived entities form a cycle: {}", path.join(" -> ")),
                    );
                }
                break;
            }
            path.push(p);
            match names.get(p) {
                Some(next) => cur = next,
                None => break,
            }
        }
    }
}
