//! The one table of YAML field types. Everything nomnom knows about a type — its YAML names,
//! Rust type, PostgreSQL column, the names `information_schema` reports for it, the array type
//! its `unnest` upsert binds, its JSON Schema, the text of its conversion errors and how a
//! `constant` literal is checked — is one [`TypeInfo`] row here. The code generator, the
//! generated code and schema evolution all read it; a new type is a new row (plus its
//! [`FromJson`] impl, which is the conversion).

use serde_json::json;

use crate::{FromJson, JsonValue, convert_literal};

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
    /// `Time` → `NaiveTime` / TIME (time of day, no zone).
    Time,
    /// `DateTime` → `DateTime<Utc>` / TIMESTAMPTZ.
    DateTime,
    /// `Uuid` → `Uuid` / UUID.
    Uuid,
    /// `Bytes` → `Vec<u8>` / BYTEA, base64 in JSON.
    Bytes,
    /// `Json` → `serde_json::Value` / JSONB.
    Json,
    /// `List[Object]` → `ObjectList` (its length), not stored (feeds derived entities).
    ListObject,
    /// `List[String]` → `Vec<String>` / TEXT[].
    ListString,
}

/// How the generated upsert binds one row's value into the array of its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// The value itself (`Copy` types).
    Value,
    /// A reference to the value.
    Ref,
    /// The value as `&str` (`as_str()`, `as_deref()` when nullable): `String`.
    Str,
    /// A `Numeric`, bound as binary `numeric` ([`crate::pg::NumericArray`]).
    Numeric,
    /// The list as one PostgreSQL array literal (`{"a","b"}`): PostgreSQL has no arrays of
    /// arrays of different lengths, so the column binds text and the statement casts it back.
    ArrayLiteral,
}

/// The PostgreSQL side of a stored type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnType {
    /// The column type in DDL (`CREATE TABLE`, `ADD COLUMN`).
    pub sql: &'static str,
    /// `information_schema.columns.data_type` of such a column.
    pub data_type: &'static str,
    /// `information_schema.columns.udt_name` of such a column.
    pub udt_name: &'static str,
    /// The diesel SQL type of the column (`table!`).
    pub diesel: &'static str,
    /// The diesel SQL type of one element of the array bound for `unnest`.
    pub bind_diesel: &'static str,
    /// The PostgreSQL element type of that array (`unnest($1::<this>[])`).
    pub unnest_element: &'static str,
    /// A cast applied to the unnested value before it is stored, if any.
    pub unnest_cast: Option<&'static str>,
    /// How a row's value is bound.
    pub bind: Bind,
}

/// How a `constant: <literal>` of this type is checked at build time and produced.
#[derive(Debug, Clone, Copy)]
pub enum Constant {
    /// Emitted as a Rust literal; the check is the Rust parse of the type.
    RustLiteral(fn(&str) -> Result<(), String>),
    /// Converted at run time with the type's [`FromJson`] (`nomnom_runtime::constant`); the
    /// build-time check runs the same conversion.
    Converted(fn(&str) -> Result<(), String>),
    /// No constants of this type.
    Unsupported,
}

/// How a CSV cell of this type becomes the JSON value the parser reads (then checked like any
/// JSON value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvCell {
    /// The text as a JSON string.
    Text,
    /// A JSON number: the text must be one (the parser then checks range and kind).
    Number,
    /// `true`/`false` (also `t`/`f`, `1`/`0`, `yes`/`no`, any case).
    Boolean,
    /// A date: ISO text, or text in the entity's `csv.date_format`.
    Date,
    /// The cell holds JSON text (objects, arrays).
    Json,
}

/// Everything about one YAML type.
#[derive(Debug, Clone, Copy)]
pub struct TypeInfo {
    /// The type.
    pub ty: FieldType,
    /// The canonical YAML name.
    pub name: &'static str,
    /// Other accepted YAML spellings.
    pub aliases: &'static [&'static str],
    /// The Rust type of a field, as generated code names it (its [`FromJson`] impl is the
    /// conversion from JSON).
    pub rust: &'static str,
    /// Whether the Rust type is `Copy` (copied from a parent row without `.clone()`).
    pub copy: bool,
    /// A serde `serialize_with` function for the field, when the type's own `Serialize` is
    /// not its JSON form.
    pub serialize_with: Option<&'static str>,
    /// The column; `None` when the value is not stored.
    pub column: Option<ColumnType>,
    /// What is accepted in JSON, for error messages and documentation.
    pub expected: &'static str,
    /// The JSON Schema of a value.
    pub json_schema: fn() -> JsonValue,
    /// A valid value as JSON text: what examples synthesized for an entity hold (a `String`
    /// is cut to the field's `max_length`).
    pub example: &'static str,
    /// How `constant` literals are checked and produced.
    pub constant: Constant,
    /// How a CSV cell is read.
    pub csv: CsvCell,
    /// Bytes a value takes in a unique index's key when that is fixed (`None`: its size
    /// depends on the value; `String` keys are sized by `max_length`).
    pub key_bytes: Option<usize>,
    /// The types a field of this type may become without losing or changing a stored value
    /// (PostgreSQL converts the column in place): a *safe* schema change. Any other type change
    /// is breaking.
    pub widens_to: &'static [FieldType],
}

fn parses<T: std::str::FromStr>(text: &str) -> Result<(), String> {
    text.parse::<T>().map(drop).map_err(|_| String::new())
}

fn finite_float(text: &str) -> Result<(), String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(()),
        _ => Err(String::new()),
    }
}

fn converts<T: FromJson>(text: &str) -> Result<(), String> {
    convert_literal::<T>(text).map(drop)
}

const fn column(
    sql: &'static str,
    data_type: &'static str,
    udt_name: &'static str,
    diesel: &'static str,
    unnest_element: &'static str,
    bind: Bind,
) -> Option<ColumnType> {
    Some(ColumnType {
        sql,
        data_type,
        udt_name,
        diesel,
        bind_diesel: diesel,
        unnest_element,
        unnest_cast: None,
        bind,
    })
}

/// Every type, in the order of [`FieldType`].
pub const TYPES: &[TypeInfo] = &[
    TypeInfo {
        ty: FieldType::String,
        name: "String",
        aliases: &[],
        rust: "::std::string::String",
        copy: false,
        serialize_with: None,
        column: column(
            "TEXT",
            "text",
            "text",
            "::diesel::sql_types::Text",
            "text",
            Bind::Str,
        ),
        expected: <String as FromJson>::EXPECTED,
        json_schema: || json!({"type": "string", "pattern": crate::NO_NUL_PATTERN}),
        example: r#""example""#,
        constant: Constant::RustLiteral(|_| Ok(())),
        csv: CsvCell::Text,
        key_bytes: None,
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::Integer,
        name: "Integer",
        aliases: &["Int"],
        rust: "i32",
        copy: true,
        serialize_with: None,
        column: column(
            "INTEGER",
            "integer",
            "int4",
            "::diesel::sql_types::Integer",
            "integer",
            Bind::Value,
        ),
        expected: <i32 as FromJson>::EXPECTED,
        json_schema: || json!({"type": "integer", "format": "int32", "minimum": i32::MIN, "maximum": i32::MAX}),
        example: r#"42"#,
        constant: Constant::RustLiteral(parses::<i32>),
        csv: CsvCell::Number,
        key_bytes: Some(4),
        widens_to: &[FieldType::BigInt, FieldType::Decimal],
    },
    TypeInfo {
        ty: FieldType::BigInt,
        name: "BigInt",
        aliases: &["Long"],
        rust: "i64",
        copy: true,
        serialize_with: None,
        column: column(
            "BIGINT",
            "bigint",
            "int8",
            "::diesel::sql_types::BigInt",
            "bigint",
            Bind::Value,
        ),
        expected: <i64 as FromJson>::EXPECTED,
        json_schema: || json!({"type": "integer", "format": "int64", "minimum": i64::MIN, "maximum": i64::MAX}),
        example: r#"4200000000"#,
        constant: Constant::RustLiteral(parses::<i64>),
        csv: CsvCell::Number,
        key_bytes: Some(8),
        widens_to: &[FieldType::Decimal],
    },
    TypeInfo {
        ty: FieldType::Float,
        name: "Float",
        aliases: &["Double"],
        rust: "f64",
        copy: true,
        serialize_with: None,
        column: column(
            "DOUBLE PRECISION",
            "double precision",
            "float8",
            "::diesel::sql_types::Double",
            "double precision",
            Bind::Value,
        ),
        expected: <f64 as FromJson>::EXPECTED,
        json_schema: || json!({"type": "number", "format": "double"}),
        example: r#"1.5"#,
        constant: Constant::RustLiteral(finite_float),
        csv: CsvCell::Number,
        key_bytes: None,
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::Decimal,
        name: "Decimal",
        aliases: &["Numeric"],
        rust: "::nomnom_runtime::Numeric",
        copy: false,
        serialize_with: None,
        // Bound as binary NUMERIC made from the text (base-10000 digits, no big integers).
        column: column(
            "NUMERIC",
            "numeric",
            "numeric",
            "::diesel::sql_types::Numeric",
            "numeric",
            Bind::Numeric,
        ),
        expected: <crate::Numeric as FromJson>::EXPECTED,
        // A JSON number, or decimal text (see `check_numeric`; the pattern bounds the exponent
        // to what `NUMERIC` can hold whatever the digits).
        json_schema: || {
            json!({"anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": crate::DECIMAL_TEXT_PATTERN}
            ], "format": "decimal"})
        },
        example: r#""12.50""#,
        constant: Constant::Converted(converts::<crate::Numeric>),
        csv: CsvCell::Number,
        key_bytes: None,
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::Boolean,
        name: "Boolean",
        aliases: &["Bool"],
        rust: "bool",
        copy: true,
        serialize_with: None,
        column: column(
            "BOOLEAN",
            "boolean",
            "bool",
            "::diesel::sql_types::Bool",
            "boolean",
            Bind::Value,
        ),
        expected: <bool as FromJson>::EXPECTED,
        json_schema: || json!({"type": "boolean"}),
        example: r#"true"#,
        constant: Constant::RustLiteral(parses::<bool>),
        csv: CsvCell::Boolean,
        key_bytes: Some(1),
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::Date,
        name: "Date",
        aliases: &["NaiveDate"],
        rust: "::nomnom_runtime::NaiveDate",
        copy: true,
        serialize_with: None,
        column: column(
            "DATE",
            "date",
            "date",
            "::diesel::sql_types::Date",
            "date",
            Bind::Value,
        ),
        expected: <crate::NaiveDate as FromJson>::EXPECTED,
        json_schema: || json!({"type": "string", "format": "date", "pattern": crate::DATE_PATTERN}),
        example: r#""2024-01-31""#,
        constant: Constant::Converted(converts::<crate::NaiveDate>),
        csv: CsvCell::Date,
        key_bytes: Some(4),
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::Time,
        name: "Time",
        aliases: &["NaiveTime"],
        rust: "::nomnom_runtime::NaiveTime",
        copy: true,
        serialize_with: None,
        column: column(
            "TIME",
            "time without time zone",
            "time",
            "::diesel::sql_types::Time",
            "time",
            Bind::Value,
        ),
        expected: <crate::NaiveTime as FromJson>::EXPECTED,
        // JSON Schema's `time` format demands a zone offset; this type has none.
        json_schema: || {
            json!({
                "type": "string",
                "pattern": crate::TIME_PATTERN,
                "description": "time of day HH:MM:SS with up to 6 fractional digits"
            })
        },
        example: r#""12:30:00""#,
        constant: Constant::Converted(converts::<crate::NaiveTime>),
        csv: CsvCell::Text,
        key_bytes: Some(8),
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::DateTime,
        name: "DateTime",
        aliases: &["NaiveDateTime"],
        rust: "::nomnom_runtime::DateTimeUtc",
        copy: true,
        serialize_with: None,
        column: column(
            "TIMESTAMPTZ",
            "timestamp with time zone",
            "timestamptz",
            "::diesel::sql_types::Timestamptz",
            "timestamptz",
            Bind::Value,
        ),
        expected: <crate::DateTimeUtc as FromJson>::EXPECTED,
        json_schema: || json!({"type": "string", "format": "date-time"}),
        example: r#""2024-01-31T12:30:00Z""#,
        constant: Constant::Converted(converts::<crate::DateTimeUtc>),
        csv: CsvCell::Text,
        key_bytes: Some(8),
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::Uuid,
        name: "Uuid",
        aliases: &[],
        rust: "::nomnom_runtime::Uuid",
        copy: true,
        serialize_with: None,
        column: column(
            "UUID",
            "uuid",
            "uuid",
            "::diesel::sql_types::Uuid",
            "uuid",
            Bind::Value,
        ),
        expected: <crate::Uuid as FromJson>::EXPECTED,
        json_schema: || json!({"type": "string", "format": "uuid", "pattern": crate::UUID_PATTERN}),
        example: r#""0191f3a6-7c1e-7d2a-9b3c-4d5e6f708192""#,
        constant: Constant::Converted(converts::<crate::Uuid>),
        csv: CsvCell::Text,
        key_bytes: Some(16),
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::Bytes,
        name: "Bytes",
        aliases: &[],
        rust: "::std::vec::Vec<u8>",
        copy: false,
        serialize_with: Some("::nomnom_runtime::serialize_base64"),
        column: column(
            "BYTEA",
            "bytea",
            "bytea",
            "::diesel::sql_types::Bytea",
            "bytea",
            Bind::Ref,
        ),
        expected: <Vec<u8> as FromJson>::EXPECTED,
        json_schema: || {
            json!({
                "type": "string",
                "contentEncoding": "base64",
                "pattern": crate::BASE64_PATTERN
            })
        },
        example: r#""bm9tbm9t""#,
        constant: Constant::Converted(converts::<Vec<u8>>),
        csv: CsvCell::Text,
        key_bytes: None,
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::Json,
        name: "Json",
        aliases: &["Object"],
        rust: "::nomnom_runtime::JsonValue",
        copy: false,
        serialize_with: None,
        column: column(
            "JSONB",
            "jsonb",
            "jsonb",
            "::diesel::sql_types::Jsonb",
            "jsonb",
            Bind::Ref,
        ),
        expected: <JsonValue as FromJson>::EXPECTED,
        json_schema: || json!({}),
        example: r#"{"example": true}"#,
        constant: Constant::Converted(converts::<JsonValue>),
        csv: CsvCell::Json,
        key_bytes: None,
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::ListObject,
        name: "List[Object]",
        aliases: &["List[Json]"],
        rust: "::nomnom_runtime::ObjectList",
        copy: false,
        serialize_with: None,
        column: None,
        expected: <crate::ObjectList as FromJson>::EXPECTED,
        json_schema: || json!({"type": "array", "items": {"type": "object"}}),
        example: r#"[]"#,
        constant: Constant::Unsupported,
        csv: CsvCell::Json,
        key_bytes: None,
        widens_to: &[],
    },
    TypeInfo {
        ty: FieldType::ListString,
        name: "List[String]",
        aliases: &[],
        rust: "::std::vec::Vec<::std::string::String>",
        copy: false,
        serialize_with: None,
        column: Some(ColumnType {
            sql: "TEXT[]",
            data_type: "ARRAY",
            udt_name: "_text",
            diesel: "::diesel::sql_types::Array<::diesel::sql_types::Text>",
            bind_diesel: "::diesel::sql_types::Text",
            unnest_element: "text",
            unnest_cast: Some("text[]"),
            bind: Bind::ArrayLiteral,
        }),
        expected: <Vec<String> as FromJson>::EXPECTED,
        json_schema: || json!({"type": "array", "items": {"type": "string"}}),
        example: r#"["example"]"#,
        constant: Constant::Unsupported,
        csv: CsvCell::Json,
        key_bytes: None,
        widens_to: &[],
    },
];

/// The shape of a column as `information_schema.columns` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedColumn<'a> {
    /// `data_type`.
    pub data_type: &'a str,
    /// `udt_name`.
    pub udt_name: &'a str,
    /// `character_maximum_length`.
    pub max_length: Option<i32>,
}

impl FieldType {
    /// Everything about this type.
    pub fn info(self) -> &'static TypeInfo {
        // TYPES is in declaration order; the test below keeps it so.
        &TYPES[self as usize]
    }

    /// Looks up a YAML type name or alias.
    pub fn from_yaml(name: &str) -> Option<Self> {
        TYPES
            .iter()
            .find(|t| t.name == name || t.aliases.contains(&name))
            .map(|t| t.ty)
    }

    /// The canonical YAML names, for hints.
    pub fn canonical_names() -> impl Iterator<Item = &'static str> {
        TYPES.iter().map(|t| t.name)
    }

    /// All accepted spellings, for "did you mean".
    pub fn all_names() -> impl Iterator<Item = &'static str> {
        TYPES
            .iter()
            .flat_map(|t| std::iter::once(t.name).chain(t.aliases.iter().copied()))
    }

    /// The canonical YAML name.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// Whether the value becomes a column.
    pub fn is_stored(self) -> bool {
        self.info().column.is_some()
    }

    /// Whether a field of this type may become `to` keeping every stored value (the type
    /// table's `widens_to`).
    pub fn widens_to(self, to: FieldType) -> bool {
        self.info().widens_to.contains(&to)
    }

    /// Whether derived entities can be `repeated_for` this field.
    pub fn is_list(self) -> bool {
        matches!(self, FieldType::ListObject | FieldType::ListString)
    }

    /// The DDL column type; `max_length` makes a `String` a `VARCHAR(n)`.
    pub fn sql_type(self, max_length: Option<u32>) -> Option<String> {
        let column = self.info().column?;
        Some(match (self, max_length) {
            (FieldType::String, Some(n)) => format!("VARCHAR({n})"),
            _ => column.sql.to_string(),
        })
    }

    /// What `information_schema` reports for a column of this type.
    pub fn reported(self, max_length: Option<u32>) -> Option<ReportedColumn<'static>> {
        let column = self.info().column?;
        Some(match (self, max_length) {
            (FieldType::String, Some(n)) => ReportedColumn {
                data_type: "character varying",
                udt_name: "varchar",
                max_length: i32::try_from(n).ok(),
            },
            _ => ReportedColumn {
                data_type: column.data_type,
                udt_name: column.udt_name,
                max_length: None,
            },
        })
    }

    /// The DDL spelling of a live column (`VARCHAR(10)`, `TIME`), or what PostgreSQL reports
    /// when no type of ours has that shape.
    pub fn ddl_of_reported(live: &ReportedColumn<'_>) -> String {
        if live.data_type == "character varying" {
            return match live.max_length {
                Some(n) => format!("VARCHAR({n})"),
                None => "VARCHAR".into(),
            };
        }
        TYPES
            .iter()
            .filter_map(|t| t.column)
            .find(|c| c.data_type == live.data_type && c.udt_name == live.udt_name)
            .map(|c| c.sql.to_string())
            .unwrap_or_else(|| format!("{} ({})", live.data_type, live.udt_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_declaration_order_and_names_are_unique() {
        for (i, t) in TYPES.iter().enumerate() {
            assert_eq!(t.ty as usize, i, "{} is out of place", t.name);
        }
        let names: Vec<&str> = FieldType::all_names().collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(names.len(), unique.len());
        assert_eq!(FieldType::from_yaml("NaiveTime"), Some(FieldType::Time));
        assert_eq!(FieldType::from_yaml("Bytes"), Some(FieldType::Bytes));
    }

    #[test]
    fn every_stored_type_maps_back_from_what_postgres_reports() {
        for t in TYPES {
            if let Some(reported) = t.ty.reported(None) {
                assert_eq!(
                    FieldType::ddl_of_reported(&reported),
                    t.column.map(|c| c.sql).unwrap_or_default()
                );
            }
        }
        let varchar = FieldType::String.reported(Some(12)).expect("stored");
        assert_eq!(FieldType::ddl_of_reported(&varchar), "VARCHAR(12)");
        let unknown = ReportedColumn {
            data_type: "smallint",
            udt_name: "int2",
            max_length: None,
        };
        assert_eq!(FieldType::ddl_of_reported(&unknown), "smallint (int2)");
    }

    #[test]
    fn constants_are_checked_by_the_conversion_used_at_run_time() {
        let check = |ty: FieldType, text: &str| match ty.info().constant {
            Constant::RustLiteral(f) | Constant::Converted(f) => f(text).is_ok(),
            Constant::Unsupported => false,
        };
        assert!(check(FieldType::Time, "12:30:00"));
        assert!(check(FieldType::Time, "12:30:00.123456"));
        assert!(!check(FieldType::Time, "25:00:00"));
        assert!(check(FieldType::Bytes, "AAEC"));
        assert!(!check(FieldType::Bytes, "not base64!"));
        assert!(check(FieldType::Integer, "7"));
        assert!(!check(FieldType::Integer, "7.5"));
        assert!(!check(FieldType::Float, "inf"));
        assert!(check(FieldType::Decimal, "1.25"));
        assert!(!check(FieldType::Date, "2024-02-30"));
        assert!(!check(FieldType::ListString, "a"));
    }
}
