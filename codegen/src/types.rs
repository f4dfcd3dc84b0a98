//! The one type table shared by every generated piece (Rust type, PostgreSQL type, diesel type).

use proc_macro2::TokenStream;
use quote::quote;

/// A field type from the entity spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// `String` → `String` / TEXT or VARCHAR(n).
    String,
    /// `Integer` → `i32` / INTEGER.
    Integer,
    /// `BigInt` → `i64` / BIGINT.
    BigInt,
    /// `Float` → `f64` / DOUBLE PRECISION.
    Float,
    /// `Decimal` → `BigDecimal` / NUMERIC.
    Decimal,
    /// `Boolean` → `bool` / BOOLEAN.
    Boolean,
    /// `Date` → `NaiveDate` / DATE.
    Date,
    /// `DateTime` → `DateTime<Utc>` / TIMESTAMPTZ.
    DateTime,
    /// `Uuid` → `Uuid` / UUID.
    Uuid,
    /// `Json` → `serde_json::Value` / JSONB.
    Json,
    /// `List[Object]` → `Vec<serde_json::Value>`, not stored (feeds derived entities).
    ListObject,
    /// `List[String]` → `Vec<String>` / TEXT[].
    ListString,
}

/// Canonical names, then aliases, as written in YAML.
const NAMES: &[(&str, FieldType)] = &[
    ("String", FieldType::String),
    ("Integer", FieldType::Integer),
    ("BigInt", FieldType::BigInt),
    ("Float", FieldType::Float),
    ("Decimal", FieldType::Decimal),
    ("Boolean", FieldType::Boolean),
    ("Date", FieldType::Date),
    ("DateTime", FieldType::DateTime),
    ("Uuid", FieldType::Uuid),
    ("Json", FieldType::Json),
    ("List[Object]", FieldType::ListObject),
    ("List[String]", FieldType::ListString),
    ("Int", FieldType::Integer),
    ("Long", FieldType::BigInt),
    ("Double", FieldType::Float),
    ("Numeric", FieldType::Decimal),
    ("Bool", FieldType::Boolean),
    ("NaiveDate", FieldType::Date),
    ("NaiveDateTime", FieldType::DateTime),
    ("Object", FieldType::Json),
    ("List[Json]", FieldType::ListObject),
];

impl FieldType {
    /// Looks up a YAML type name or alias.
    pub fn from_yaml(name: &str) -> Option<Self> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// The canonical names, for hints.
    pub fn canonical_names() -> Vec<&'static str> {
        NAMES[..12].iter().map(|(n, _)| *n).collect()
    }

    /// All accepted spellings, for "did you mean".
    pub fn all_names() -> Vec<&'static str> {
        NAMES.iter().map(|(n, _)| *n).collect()
    }

    /// The canonical YAML name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether the value becomes a column.
    pub fn is_stored(self) -> bool {
        self != FieldType::ListObject
    }

    /// Whether the Rust type is `Copy` (copied from a parent row without `.clone()`).
    pub fn is_copy(self) -> bool {
        matches!(
            self,
            FieldType::Integer
                | FieldType::BigInt
                | FieldType::Float
                | FieldType::Boolean
                | FieldType::Date
                | FieldType::DateTime
                | FieldType::Uuid
        )
    }

    /// Whether derived entities can be `repeated_for` this field.
    pub fn is_list(self) -> bool {
        matches!(self, FieldType::ListObject | FieldType::ListString)
    }

    /// The Rust type (not wrapped in `Option`).
    pub fn rust_type(self) -> TokenStream {
        match self {
            FieldType::String => quote!(::std::string::String),
            FieldType::Integer => quote!(i32),
            FieldType::BigInt => quote!(i64),
            FieldType::Float => quote!(f64),
            FieldType::Decimal => quote!(::nomnom_runtime::Decimal),
            FieldType::Boolean => quote!(bool),
            FieldType::Date => quote!(::nomnom_runtime::NaiveDate),
            FieldType::DateTime => quote!(::nomnom_runtime::DateTimeUtc),
            FieldType::Uuid => quote!(::nomnom_runtime::Uuid),
            FieldType::Json => quote!(::nomnom_runtime::JsonValue),
            FieldType::ListObject => quote!(::std::vec::Vec<::nomnom_runtime::JsonValue>),
            FieldType::ListString => quote!(::std::vec::Vec<::std::string::String>),
        }
    }

    /// The diesel SQL type (not wrapped in `Nullable`); `None` for types that are not stored.
    pub fn diesel_type(self) -> Option<TokenStream> {
        Some(match self {
            FieldType::String => quote!(::diesel::sql_types::Text),
            FieldType::Integer => quote!(::diesel::sql_types::Integer),
            FieldType::BigInt => quote!(::diesel::sql_types::BigInt),
            FieldType::Float => quote!(::diesel::sql_types::Double),
            FieldType::Decimal => quote!(::diesel::sql_types::Numeric),
            FieldType::Boolean => quote!(::diesel::sql_types::Bool),
            FieldType::Date => quote!(::diesel::sql_types::Date),
            FieldType::DateTime => quote!(::diesel::sql_types::Timestamptz),
            FieldType::Uuid => quote!(::diesel::sql_types::Uuid),
            FieldType::Json => quote!(::diesel::sql_types::Jsonb),
            FieldType::ListString => quote!(::diesel::sql_types::Array<::diesel::sql_types::Text>),
            FieldType::ListObject => return None,
        })
    }

    /// The PostgreSQL column type.
    pub fn sql_type(self, max_length: Option<u32>) -> Option<String> {
        Some(match self {
            FieldType::String => match max_length {
                Some(n) => format!("VARCHAR({n})"),
                None => "TEXT".into(),
            },
            FieldType::Integer => "INTEGER".into(),
            FieldType::BigInt => "BIGINT".into(),
            FieldType::Float => "DOUBLE PRECISION".into(),
            FieldType::Decimal => "NUMERIC".into(),
            FieldType::Boolean => "BOOLEAN".into(),
            FieldType::Date => "DATE".into(),
            FieldType::DateTime => "TIMESTAMPTZ".into(),
            FieldType::Uuid => "UUID".into(),
            FieldType::Json => "JSONB".into(),
            FieldType::ListString => "TEXT[]".into(),
            FieldType::ListObject => return None,
        })
    }

    /// The type expected in JSON, for API documentation and error messages.
    pub fn json_expectation(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer (32-bit)",
            FieldType::BigInt => "integer (64-bit)",
            FieldType::Float => "number",
            FieldType::Decimal => "number or numeric string",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date string YYYY-MM-DD",
            FieldType::DateTime => "RFC 3339 date-time string",
            FieldType::Uuid => "UUID string",
            FieldType::Json => "any JSON",
            FieldType::ListObject => "array of objects",
            FieldType::ListString => "array of strings",
        }
    }
}
