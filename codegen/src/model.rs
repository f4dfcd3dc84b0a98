//! The entity definitions as loaded from YAML (positions kept for diagnostics).

use crate::diag::Loc;
use crate::types::FieldType;

/// A value with the position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub loc: Loc,
}

/// root | derived | reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    /// Parsed directly from a message body.
    Root,
    /// Extracted from a parent entity's message, 0..n rows per parent.
    Derived,
    /// Documentation/joins only: not parsed, no table.
    Reference,
}

/// One entity file.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityDef {
    /// The file it came from (as shown in diagnostics).
    pub file: String,
    /// PascalCase name, the Rust type name.
    pub name: Spanned<String>,
    /// root | derived | reference.
    pub source_type: SourceType,
    /// Doc comment for the generated type.
    pub doc: Option<String>,
    /// The fields, in file order.
    pub fields: Vec<FieldDef>,
    /// For derived entities: the parent list this entity is repeated for.
    pub repeated_for: Option<RepeatedFor>,
    /// For derived entities: the explicit parent name, if written.
    pub parent: Option<Spanned<String>>,
    /// How rows are stored; `None` means parsed but not stored.
    pub persistence: Option<Persistence>,
    /// How CSV files of this entity are read (`csv:`); `None`: the defaults.
    pub csv: Option<CsvDef>,
    /// `example:` a body (root, reference) or list element (derived) as written in YAML; the
    /// tests and the OpenAPI document use it, and one is synthesized from the types without.
    pub example: Option<ExampleNode>,
    /// `removed`: fields the schema ledger holds that are gone on purpose (their columns kept).
    pub removed: Vec<Spanned<String>>,
    /// False when the file had problems and parts of it were dropped while loading; checks that
    /// would only repeat those problems (e.g. "no field x") are skipped for it.
    pub complete: bool,
}

/// One field of an entity.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldDef {
    /// snake_case name; becomes the struct field and column name.
    pub name: Spanned<String>,
    /// The field type.
    pub ty: Spanned<FieldType>,
    /// `true` => `Option<T>` and a NULL-able column.
    pub nullable: bool,
    /// Doc comment.
    pub doc: Option<String>,
    /// VARCHAR(n) limit, String only.
    pub max_length: Option<Spanned<u32>>,
    /// Where the value comes from, when not the JSON member of the same name.
    pub computed_from: Option<ComputedFrom>,
    /// `renamed_from`: the name the schema ledger holds it under (a declared rename).
    pub renamed_from: Option<Spanned<String>>,
    /// `default`: the value rows stored before a new required field get.
    pub default: Option<Literal>,
}

/// Where a derived entity's rows come from: `repeated_for` (one row per element of the
/// parent's list), or `parent` with `object` (at most one row: the parent's nested object).
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedFor {
    /// The parent entity.
    pub entity: Spanned<String>,
    /// The parent's list field (or object field).
    pub field: Spanned<String>,
    /// The name each element (the object) is bound to in `computed_from` sources.
    pub each_known_as: String,
    /// Position of the `repeated_for` (or `object`) key.
    pub loc: Loc,
    /// Written as `parent` + `object`: the field holds one object, not a list.
    pub nested_object: bool,
}

/// A built-in transform.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// The parent's field value.
    CopyFromParent,
    /// A member of the element at a dotted path; `legacy` names a `json_get_*` type check.
    ExtractField {
        /// The `json_get_*` spelling's expected type and whether it is the `optional` variant.
        legacy: Option<(FieldType, bool)>,
    },
    /// A literal converted to the field's type.
    Constant,
    /// The first non-null of the sources.
    Coalesce,
    /// The first source when the condition holds, else the second (`copy_field_conditional`).
    Conditional,
    /// A function of the user's crate (`transform: {rust: <path>, args: [...]}`), called with
    /// the source's JSON value and the args (see `nomnom_runtime::UserTransform`).
    Rust {
        /// Its path from the crate root (`crate::transforms::hl7_field`), as written.
        path: Spanned<String>,
        /// The `args` it is called with.
        args: Vec<String>,
    },
}

/// `condition` of `copy_field_conditional`: a value compared with a text.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// What is compared: an element path or a parent field.
    pub source: SourceRef,
    /// The text it must equal (a JSON string equal to it, or a number or boolean spelled so).
    pub equals: Literal,
    /// Position of the `condition` key.
    pub loc: Loc,
}

/// Where a transform reads from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceRef {
    /// A field of the parent entity's row.
    ParentField(Spanned<String>),
    /// The current element (derived) or message body (root), optionally at a dotted path.
    Element {
        /// Path segments into the element; empty means the element itself.
        path: Vec<String>,
        /// Where the source was written.
        loc: Loc,
    },
}

/// A literal from YAML (`constant` transform).
#[derive(Debug, Clone, PartialEq)]
pub struct Literal {
    /// The scalar text.
    pub text: String,
    /// Whether YAML would read it as a string only (quoted), not a number/bool/null.
    pub quoted: bool,
    /// Where it was written.
    pub loc: Loc,
}

/// `computed_from` of a field.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedFrom {
    /// The transform.
    pub transform: Transform,
    /// The transform as spelled in YAML (for messages).
    pub name: String,
    /// Position of the transform name.
    pub loc: Loc,
    /// Sources, resolved against `each_known_as`.
    pub sources: Vec<SourceRef>,
    /// `field_path` (or `field`) argument of extract transforms, split on dots.
    pub field_path: Option<Spanned<Vec<String>>>,
    /// `value` argument of `constant`.
    pub value: Option<Literal>,
    /// `condition` of `copy_field_conditional`.
    pub condition: Option<Condition>,
}

/// A value of an `example:` as written, with positions for diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub enum ExampleNode {
    /// A scalar (as [`Literal`]: unquoted ones may be numbers, booleans or null).
    Scalar(Literal),
    /// A list.
    List(Vec<ExampleNode>, Loc),
    /// A mapping: member names with their values.
    Map(Vec<(Spanned<String>, ExampleNode)>, Loc),
}

impl ExampleNode {
    /// Where the value was written.
    pub fn loc(&self) -> Loc {
        match self {
            ExampleNode::Scalar(l) => l.loc,
            ExampleNode::List(_, loc) | ExampleNode::Map(_, loc) => *loc,
        }
    }

    /// Whether this is YAML's null (`null`, `~` or nothing, unquoted).
    pub fn is_null(&self) -> bool {
        matches!(self, ExampleNode::Scalar(l) if !l.quoted && matches!(l.text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// The value as JSON: unquoted scalars that spell JSON numbers or booleans are those,
    /// everything else is a string.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            _ if self.is_null() => Value::Null,
            ExampleNode::Scalar(l) => {
                let spelled = (!l.quoted)
                    .then(|| serde_json::from_str::<Value>(&l.text).ok())
                    .flatten()
                    .filter(|v| v.is_number() || v.is_boolean());
                spelled.unwrap_or_else(|| Value::String(l.text.clone()))
            }
            ExampleNode::List(items, _) => Value::Array(items.iter().map(Self::to_json).collect()),
            ExampleNode::Map(members, _) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.value.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// `on_conflict` policy for the upsert on `unicity_fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Last write wins.
    Update,
    /// First write wins.
    Ignore,
}

/// `persistence` of an entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Persistence {
    /// Table name.
    pub table: Spanned<String>,
    /// Surrogate key column.
    pub id_column: Spanned<String>,
    /// Surrogate key type: `Integer` (SERIAL) or `BigInt` (BIGSERIAL).
    pub id_type: FieldType,
    /// Natural key: UNIQUE constraint and upsert target.
    pub unicity_fields: Vec<Spanned<String>>,
    /// Upsert policy.
    pub on_conflict: OnConflict,
    /// `order_by`: a field whose value versions the row; with `on_conflict: update` the highest
    /// version wins, whatever order the messages arrive in (ties: the later message).
    pub order_by: Option<Spanned<String>>,
    /// Legacy second list of columns; must agree with `fields`.
    pub field_overrides: Vec<FieldDef>,
    /// Position of the `persistence` key.
    pub loc: Loc,
}

/// The `csv:` block of an entity.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CsvDef {
    /// Position of the `csv` key.
    pub loc: Loc,
    /// `delimiter`: one character.
    pub delimiter: Option<Spanned<String>>,
    /// `quote`: one character.
    pub quote: Option<Spanned<String>>,
    /// `header`: whether the first row names the columns.
    pub header: Option<Spanned<bool>>,
    /// `columns`: field names in column order (`_` skips a column).
    pub columns: Vec<Spanned<String>>,
    /// `header_map`: header text → field name.
    pub header_map: Vec<(Spanned<String>, Spanned<String>)>,
    /// `null`: the text that means null besides an empty cell.
    pub null: Option<Spanned<String>>,
    /// `date_format`: chrono format of `Date` cells.
    pub date_format: Option<Spanned<String>>,
}
