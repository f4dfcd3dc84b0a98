//! `nomnom-runtime`: the support code the generated parsers and writers call: JSON conversions for every spec type,
//! field-level errors, table descriptions and batch helpers.

use std::hash::Hash;
use std::str::FromStr;

use serde::Serialize;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod csv;
mod json;
#[cfg(feature = "diesel")]
pub mod pg;
mod types;

pub use bigdecimal::BigDecimal as Decimal;
pub use chrono::{NaiveDate, NaiveTime};
pub use csv::{CsvField, CsvSpec};
pub use json::{Elements, JsonDoc, JsonNumber, JsonRef, Members, doc_from_value};
pub use serde_json::Value as JsonValue;
pub use types::{Bind, ColumnType, Constant, CsvCell, FieldType, ReportedColumn, TYPES, TypeInfo};
pub use uuid::Uuid;

pub use __private::{
    MAX_INDEX_KEY_BYTES, convert_literal, same_entity_name, unicity_constraint_name,
};

/// `DateTime` fields: a UTC timestamp.
pub type DateTimeUtc = chrono::DateTime<chrono::Utc>;

/// One problem with one field of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field (`line_items[2].quantity`).
    pub field: String,
    /// What is wrong.
    pub error: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

/// Why a message body could not be parsed as an entity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// No root entity has this name.
    #[error("unknown entity `{0}`")]
    UnknownEntity(String),
    /// The body is not valid JSON.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// serde_json's description.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The body is JSON but not an object.
    #[error("the message body must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// Fields are missing or invalid; every problem is listed.
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses bytes as a JSON object (a message body).
pub fn parse_json_object(body: &[u8]) -> Result<JsonDoc<'_>, ParseError> {
    let doc = JsonDoc::parse(body)?;
    if doc.root().is_object() {
        Ok(doc)
    } else {
        Err(ParseError::NotAnObject(doc.root().kind()))
    }
}

/// Conversion of a JSON value into a field's Rust type.
pub trait FromJson: Sized {
    /// What is accepted, for error messages.
    const EXPECTED: &'static str;
    /// Converts, or says why not (the caller adds the field name).
    fn from_json(v: JsonRef<'_>) -> Result<Self, String>;
    /// Whether `from_json` would succeed, with its error, keeping nothing (the api's
    /// validate-only path); types whose conversion allocates say so without allocating.
    fn check(v: JsonRef<'_>) -> Result<(), String> {
        Self::from_json(v).map(drop)
    }
}

fn wrong<T: FromJson>(v: JsonRef<'_>) -> String {
    format!("expected {}, found {}", T::EXPECTED, v.kind())
}

/// PostgreSQL `text` and `jsonb` cannot hold U+0000, so it is refused here rather than at the
/// database.
const NUL_ERROR: &str = "contains a NUL character (\\u0000), which PostgreSQL cannot store";

fn contains_nul(v: JsonRef<'_>) -> bool {
    if let Some(s) = v.as_str() {
        return s.contains('\0');
    }
    if let Some(mut items) = v.elements() {
        return items.any(contains_nul);
    }
    v.members()
        .is_some_and(|mut m| m.any(|(k, v)| k.contains('\0') || contains_nul(v)))
}

impl FromJson for String {
    const EXPECTED: &'static str = "a string";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        let s = v.as_str().ok_or_else(|| wrong::<Self>(v))?;
        if s.contains('\0') {
            return Err(NUL_ERROR.into());
        }
        Ok(s.to_string())
    }
    fn check(v: JsonRef<'_>) -> Result<(), String> {
        match v.as_str() {
            Some(s) if s.contains('\0') => Err(NUL_ERROR.into()),
            Some(_) => Ok(()),
            None => Err(wrong::<Self>(v)),
        }
    }
}

fn integer<T: TryFrom<i64>>(v: JsonRef<'_>, what: &str) -> Result<T, String> {
    let Some(n) = v.as_number() else {
        return Err(format!("expected {what}, found {}", v.kind()));
    };
    let out_of_range = || format!("{n} is out of range for {what}");
    match (n.as_i64(), n) {
        (Some(i), _) => T::try_from(i).map_err(|_| out_of_range()),
        (None, JsonNumber::Text(text)) => match integral(text) {
            Some(Some(i)) => T::try_from(i).map_err(|_| out_of_range()),
            Some(None) => Err(out_of_range()),
            None => Err(format!("expected {what}, found {n}")),
        },
        (None, _) => Err(out_of_range()),
    }
}

/// The value of number text with no fractional part (`12.0`, `1.2e1`, `-0`): JSON Schema's
/// `integer` admits these as well as `12`. `None` if the text has a fractional part (or is not
/// a number); `Some(None)` if it is integral but beyond `i64`.
fn integral(text: &str) -> Option<Option<i64>> {
    check_numeric(text).ok()?;
    let (negative, digits, exponent) = canonical(text);
    if digits.is_empty() {
        return Some(Some(0));
    }
    if exponent < 0 {
        return None;
    }
    if digits.len() as i128 + exponent > 19 {
        return Some(None);
    }
    let zeros = "0".repeat(exponent as usize);
    let sign = if negative { "-" } else { "" };
    Some(format!("{sign}{digits}{zeros}").parse::<i64>().ok())
}

impl FromJson for i32 {
    const EXPECTED: &'static str = "an integer (32-bit)";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        integer(v, Self::EXPECTED)
    }
}

impl FromJson for i64 {
    const EXPECTED: &'static str = "an integer (64-bit)";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        integer(v, Self::EXPECTED)
    }
}

impl FromJson for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        match v.as_number() {
            Some(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| format!("{n} is out of range for a 64-bit float")),
            None => Err(wrong::<Self>(v)),
        }
    }
}

/// PostgreSQL `NUMERIC` holds at most this many digits after the decimal point
/// (`NUMERIC_DSCALE_MAX`)…
pub const NUMERIC_MAX_SCALE: i128 = 16_383;
/// …and at most this many before it (`NUMERIC_WEIGHT_MAX` base-10000 groups).
pub const NUMERIC_MAX_INTEGER_DIGITS: i128 = 131_072;
/// The binary wire format counts base-10000 digit groups in an `i16`.
const NUMERIC_MAX_GROUPS: i128 = 32_767;

/// Checks a decimal literal (`-12.50`, `1e-3`) against what PostgreSQL `NUMERIC` can store and
/// what its binary wire format can carry, from the text alone and with checked arithmetic, so
/// that no value the api accepts is refused when the worker writes it.
pub fn check_numeric(text: &str) -> Result<(), String> {
    if is_short_plain_decimal(text) {
        return Ok(());
    }
    check_numeric_limits(text)
}

/// [`check_numeric`] for any text: the grammar, then the digits, scale and groups counted.
fn check_numeric_limits(text: &str) -> Result<(), String> {
    let bad = || format!("`{}` is not a decimal number", truncated(text));
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int_part.len() + frac_part.len() == 0 || !digits_only(int_part) || !digits_only(frac_part) {
        return Err(bad());
    }
    let exponent: i128 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
            if digits.is_empty() || !digits_only(digits) {
                return Err(bad());
            }
            // More than 18 digits cannot be in range (and would not fit an i64 anyway).
            if digits.len() > 18 {
                return Err(out_of_numeric_range(text, "its exponent"));
            }
            e.parse::<i128>().map_err(|_| bad())?
        }
    };
    let leading_zeros = int_part
        .bytes()
        .chain(frac_part.bytes())
        .take_while(|b| *b == b'0')
        .count();
    let total = int_part.len() + frac_part.len();
    let scale = frac_part.len() as i128 - exponent;
    if leading_zeros == total {
        // Zero, whatever the exponent; but its display scale (`0.0e-16383` has 16 384 digits
        // after the point) is stored too, and is bounded like any other.
        if scale > NUMERIC_MAX_SCALE {
            return Err(out_of_numeric_range(
                text,
                &format!("more than {NUMERIC_MAX_SCALE} digits after the decimal point"),
            ));
        }
        return Ok(());
    }
    // As a decimal: an integer of `significant` digits scaled by 10^-scale.
    let significant = (total - leading_zeros) as i128;
    let (integer_digits, scale) = if scale < 0 {
        (significant - scale, 0)
    } else {
        (significant, scale)
    };
    if scale > NUMERIC_MAX_SCALE {
        return Err(out_of_numeric_range(
            text,
            &format!("more than {NUMERIC_MAX_SCALE} digits after the decimal point"),
        ));
    }
    if integer_digits - scale > NUMERIC_MAX_INTEGER_DIGITS {
        return Err(out_of_numeric_range(
            text,
            &format!("more than {NUMERIC_MAX_INTEGER_DIGITS} digits before the decimal point"),
        ));
    }
    // The wire format pads the scale to a whole group and counts groups in an i16.
    let groups = (integer_digits + 4 - scale % 4 + 3) / 4;
    if groups > NUMERIC_MAX_GROUPS {
        return Err(out_of_numeric_range(text, "too many digits in all"));
    }
    Ok(())
}

/// Whether `text` is digits with at most one `.` (and a sign), at least one digit and at most
/// 1 000 bytes: always within NUMERIC's limits, which is what nearly every decimal is.
fn is_short_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let mut points = 0;
    let mut digits = 0;
    for b in unsigned.bytes() {
        match b {
            b'0'..=b'9' => digits += 1,
            b'.' => points += 1,
            _ => return false,
        }
    }
    text.len() <= 1_000 && digits > 0 && points <= 1
}

fn truncated(text: &str) -> String {
    if text.len() <= 40 {
        text.to_string()
    } else {
        let cut = (0..=40)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        format!("{}…", &text[..cut])
    }
}

fn out_of_numeric_range(text: &str, why: &str) -> String {
    format!("`{}` is out of range for NUMERIC ({why})", truncated(text))
}

/// A `Decimal` field: the decimal text as received (`12.50`, `1e-3`), checked against what
/// PostgreSQL `NUMERIC` stores. It stays text so that neither the api nor the worker does
/// big-integer arithmetic on the hot path: the worker regroups its digits into PostgreSQL's
/// binary form when it is stored (`pg::NumericArray`, feature `diesel`). Every
/// digit is kept; [`Numeric::to_decimal`] gives a `BigDecimal` for arithmetic. Equality and
/// hashing are numeric (`1.50` = `1.5` = `15e-1`), as PostgreSQL compares them.
#[derive(Debug, Clone)]
pub struct Numeric(Box<str>);

impl Numeric {
    /// Checks decimal text (see [`check_numeric`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        check_numeric(text)?;
        Ok(Self(text.into()))
    }

    /// The text as received.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value as a `BigDecimal` (every form `check_numeric` accepts parses: `5.`, `.5`, `+5`,
    /// `1E+5`; the tests hold it to that).
    pub fn to_decimal(&self) -> Result<Decimal, bigdecimal::ParseBigDecimalError> {
        Decimal::from_str(&self.0)
    }
}

/// (negative, significant digits, exponent) of decimal text: equal for numerically equal
/// values.
fn canonical(text: &str) -> (bool, String, i128) {
    let text = text.trim();
    let negative = text.starts_with('-');
    let unsigned = text.trim_start_matches(['-', '+']);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (
            &unsigned[..i],
            unsigned[i + 1..].parse::<i128>().unwrap_or(0),
        ),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let significant = digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    if trimmed.is_empty() {
        return (false, String::new(), 0);
    }
    let zeros = (significant.len() - trimmed.len()) as i128;
    (
        negative,
        trimmed.to_string(),
        exponent - frac_part.len() as i128 + zeros,
    )
}

impl std::ops::Deref for Numeric {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Numeric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Numeric {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl PartialEq for Numeric {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || canonical(&self.0) == canonical(&other.0)
    }
}

impl Eq for Numeric {}

/// Numeric order, as PostgreSQL orders `numeric` (what an `order_by` version compares by).
impl Ord for Numeric {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self == other {
            return std::cmp::Ordering::Equal;
        }
        match (self.to_decimal(), other.to_decimal()) {
            (Ok(a), Ok(b)) => a.cmp(&b),
            // Not reached for values the parser accepted; a total order all the same.
            _ => self.0.cmp(&other.0),
        }
    }
}

impl PartialOrd for Numeric {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Numeric {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        canonical(&self.0).hash(state);
    }
}

impl Serialize for Numeric {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl FromJson for Numeric {
    const EXPECTED: &'static str = "a number or numeric string";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        // Numbers keep their text (serde_json's `arbitrary_precision`), so no digit is lost;
        // integers that fit 64 bits are formatted back, which is exact.
        match (v.as_number(), v.as_str()) {
            (Some(JsonNumber::Text(t)), _) => Numeric::parse(t),
            (Some(n), _) => Numeric::parse(&n.to_string()),
            (None, Some(s)) => Numeric::parse(s),
            (None, None) => Err(wrong::<Self>(v)),
        }
    }
    fn check(v: JsonRef<'_>) -> Result<(), String> {
        match (v.as_number(), v.as_str()) {
            (Some(JsonNumber::Text(t)), _) => check_numeric(t),
            // 64-bit integers are always in range.
            (Some(_), _) => Ok(()),
            (None, Some(s)) => check_numeric(s),
            (None, None) => Err(wrong::<Self>(v)),
        }
    }
}

/// Refuses a date before the earliest PostgreSQL stores: 4713-11-24 BC (astronomical year
/// -4712), for `date` and `timestamptz` alike.
fn check_postgres_date(date: NaiveDate, text: &str) -> Result<(), String> {
    let earliest = NaiveDate::from_ymd_opt(-4712, 11, 24).unwrap_or(NaiveDate::MIN);
    if date < earliest {
        return Err(format!(
            "`{text}` is before 4713-11-24 BC, the earliest date PostgreSQL stores"
        ));
    }
    Ok(())
}

impl FromJson for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        v.as_bool().ok_or_else(|| wrong::<Self>(v))
    }
}

impl FromJson for NaiveDate {
    const EXPECTED: &'static str = "a date string YYYY-MM-DD";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        let s = v.as_str().ok_or_else(|| wrong::<Self>(v))?;
        // Read by hand rather than by chrono's format interpreter (a hot path: every order has
        // several dates), which would also take one-digit months and five-digit years.
        let b = s.as_bytes();
        let digits = |r: &[u8]| -> Option<u32> {
            r.iter().try_fold(0u32, |n, c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        if let ([y @ .., b'-', m1, m2, b'-', d1, d2], 10) = (b, b.len())
            && let (Some(y), Some(m), Some(d)) =
                (digits(y), digits(&[*m1, *m2]), digits(&[*d1, *d2]))
        {
            let y = i32::try_from(y).unwrap_or(i32::MAX);
            return NaiveDate::from_ymd_opt(y, m, d)
                .ok_or_else(|| format!("`{s}` is not a valid date YYYY-MM-DD (no such date)"));
        }
        // Nothing else: RFC 3339's `full-date` (the OpenAPI `date` format) has a four-digit
        // year and two-digit month and day, and that is what the schema promises.
        Err(format!(
            "`{}` is not a date YYYY-MM-DD (four-digit year, two-digit month and day)",
            truncated(s)
        ))
    }
}

/// What a `String` accepts: any text without U+0000 (PostgreSQL's `text` cannot hold it).
pub const NO_NUL_PATTERN: &str = r"^[^\x00]*$";

/// What a `Date` accepts (and then only real dates): `YYYY-MM-DD`.
pub const DATE_PATTERN: &str = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$";

/// What a `Uuid` accepts: the hyphenated form, either case.
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Decimal text a `Decimal` accepts as a string: what [`check_numeric`] reads, with the
/// exponent held to four digits so that every match fits `NUMERIC` (longer exponents are read
/// when in range, but no schema promises them).
pub const DECIMAL_TEXT_PATTERN: &str = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?$";

/// What a `Time` accepts: `HH:MM:SS` with up to 6 fractional digits (PostgreSQL `time` keeps
/// microseconds; more digits would be rounded, so they are refused rather than changed).
pub const TIME_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?$";

impl FromJson for NaiveTime {
    const EXPECTED: &'static str = "a time string HH:MM:SS[.ffffff]";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        let s = v.as_str().ok_or_else(|| wrong::<Self>(v))?;
        // The shape first (on bytes: no slicing inside a multi-byte character), then chrono.
        let b = s.as_bytes();
        let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
        let shape = b.len() >= 8
            && digits(&b[0..2])
            && b[2] == b':'
            && digits(&b[3..5])
            && b[5] == b':'
            && digits(&b[6..8])
            && match &b[8..] {
                [] => true,
                [b'.', fraction @ ..] => (1..=6).contains(&fraction.len()) && digits(fraction),
                _ => false,
            };
        let bad = || format!("`{}` is not a time HH:MM:SS[.ffffff]", truncated(s));
        if !shape {
            return Err(bad());
        }
        // chrono reads second 60 as a leap second; PostgreSQL has none.
        NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
            .ok()
            .filter(|t| chrono::Timelike::nanosecond(t) < 1_000_000_000)
            .ok_or_else(bad)
    }
}

/// What a `Bytes` accepts: standard base64 with padding (RFC 4648 section 4).
pub const BASE64_PATTERN: &str = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

impl FromJson for Vec<u8> {
    const EXPECTED: &'static str = "a base64 string";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        use base64::Engine as _;
        let s = v.as_str().ok_or_else(|| wrong::<Self>(v))?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| {
                format!(
                    "`{}` is not standard base64 with padding ({e})",
                    truncated(s)
                )
            })
    }
}

/// A `Bytes` field (or an optional one) as it is written in JSON.
pub trait Base64Field {
    /// The bytes, if any.
    fn bytes(&self) -> Option<&[u8]>;
}

impl Base64Field for Vec<u8> {
    fn bytes(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl Base64Field for Option<Vec<u8>> {
    fn bytes(&self) -> Option<&[u8]> {
        self.as_deref()
    }
}

/// serde `serialize_with` of `Bytes` fields: base64, the form they are read in.
pub fn serialize_base64<T: Base64Field, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    match value.bytes() {
        Some(b) => serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        None => serializer.serialize_none(),
    }
}

impl FromJson for DateTimeUtc {
    const EXPECTED: &'static str = "an RFC 3339 date-time string";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        let s = v.as_str().ok_or_else(|| wrong::<Self>(v))?;
        let at = chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&chrono::Utc))
            .map_err(|e| format!("`{s}` is not an RFC 3339 date-time ({e})"))?;
        check_postgres_date(at.date_naive(), s)?;
        // PostgreSQL keeps microseconds (diesel's bind truncates): two values equal there are
        // equal here, so deduplicating and ordering by them agree with the table.
        Ok(chrono::SubsecRound::trunc_subsecs(at, 6))
    }
}

impl FromJson for Uuid {
    const EXPECTED: &'static str = "a UUID string";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        let s = v.as_str().ok_or_else(|| wrong::<Self>(v))?;
        // Only the hyphenated form (what `format: uuid` means); `parse_str` would also take
        // the braced, `urn:uuid:` and 32-digit forms.
        if s.len() != 36 {
            return Err(format!("`{}` is not a UUID", truncated(s)));
        }
        Uuid::parse_str(s).map_err(|_| format!("`{s}` is not a UUID"))
    }
}

/// jsonb stores numbers as `NUMERIC`: every number inside must fit it (64-bit integers do).
fn check_json_numbers(v: JsonRef<'_>) -> Result<(), String> {
    if let Some(n) = v.as_number() {
        return match n {
            JsonNumber::Text(t) => check_numeric(t),
            _ => Ok(()),
        };
    }
    if let Some(mut items) = v.elements() {
        return items.try_for_each(check_json_numbers);
    }
    match v.members() {
        Some(mut m) => m.try_for_each(|(_, v)| check_json_numbers(v)),
        None => Ok(()),
    }
}

impl FromJson for JsonValue {
    const EXPECTED: &'static str = "any JSON value";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        if contains_nul(v) {
            return Err(NUL_ERROR.into());
        }
        check_json_numbers(v)?;
        Ok(v.to_value())
    }
}

/// A `List[Object]` field: checked to be an array of objects. Its elements become the rows of
/// the entities `repeated_for` it, which read them from the message; nothing is copied here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ObjectList {
    len: usize,
}

impl ObjectList {
    /// How many objects the list has.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl FromJson for ObjectList {
    const EXPECTED: &'static str = "an array of objects";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        let items = v.elements().ok_or_else(|| wrong::<Self>(v))?;
        let len = items.len();
        if let Some((i, x)) = items.enumerate().find(|(_, x)| !x.is_object()) {
            return Err(format!("element {i} must be an object, found {}", x.kind()));
        }
        Ok(Self { len })
    }
}

impl FromJson for Vec<String> {
    const EXPECTED: &'static str = "an array of strings";
    fn from_json(v: JsonRef<'_>) -> Result<Self, String> {
        let items = v.elements().ok_or_else(|| wrong::<Self>(v))?;
        items
            .enumerate()
            .map(|(i, x)| match x.as_str() {
                Some(s) if s.contains('\0') => Err(format!("element {i} {NUL_ERROR}")),
                Some(s) => Ok(s.to_string()),
                None => Err(format!("element {i} must be a string, found {}", x.kind())),
            })
            .collect()
    }
}

/// One column of a stored entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnDef {
    /// Column name.
    pub name: &'static str,
    /// The field's type.
    pub ty: FieldType,
    /// `max_length` of a `String` (a `VARCHAR(n)` column).
    pub max_length: Option<u32>,
    /// PostgreSQL type as declared.
    pub sql_type: &'static str,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// The table of a stored entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableDef {
    /// Entity name.
    pub entity: &'static str,
    /// Table name.
    pub table: &'static str,
    /// Surrogate key column.
    pub id_column: &'static str,
    /// Columns other than the surrogate key.
    pub columns: &'static [ColumnDef],
    /// Natural key columns.
    pub unicity_fields: &'static [&'static str],
    /// `CREATE TABLE IF NOT EXISTS ...`.
    pub create_sql: &'static str,
}

/// Rows written per table by one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RowCounts(pub Vec<(&'static str, usize)>);

impl RowCounts {
    /// Total rows written.
    pub fn total(&self) -> usize {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

/// How a batch's rows meet rows already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Plain `INSERT`: no row with the same unique key may exist yet (the statement fails with
    /// `unique_violation`, SQLSTATE 23505, if one does). It skips the speculative insertion of
    /// `ON CONFLICT` (an index probe and a token per row), which is most of an upsert's extra
    /// cost when the keys are new.
    Insert,
    /// `INSERT ... ON CONFLICT`: the entity's `on_conflict` rule decides by message order.
    Upsert,
}

/// Where a message stands in arrival order: the stream's epoch (when the stream was created, in
/// microseconds since 1970) and the message's sequence in it. Ordered by epoch, then sequence,
/// so a stream deleted and re-created continues after the old one; a replayed copy carries the
/// position of the message it copies, not a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// When the stream was created, in microseconds since 1970 (0 for rows written before
    /// epochs were recorded).
    pub epoch: i64,
    /// The message's stream sequence.
    pub sequence: i64,
}

impl Position {
    /// `epoch:sequence`, the form carried in the `Nomnom-Position` header.
    pub fn parse(text: &str) -> Option<Self> {
        let (epoch, sequence) = text.split_once(':')?;
        Some(Self {
            epoch: epoch.parse().ok()?,
            sequence: sequence.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::__private::*;
    use super::*;
    use serde_json::json;

    fn conv<T: FromJson>(v: &JsonValue) -> Result<T, String> {
        T::from_json(doc_from_value(v).root())
    }

    #[test]
    fn integers_reject_overflow_and_fractions() {
        assert_eq!(conv::<i32>(&json!(2147483647)), Ok(i32::MAX));
        assert!(
            conv::<i32>(&json!(2147483648i64))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(conv::<i64>(&json!(18446744073709551615u64)).is_err());
        assert!(conv::<i32>(&json!(1.5)).is_err());
        assert!(conv::<i32>(&json!("1")).is_err());
        // JSON Schema's `integer` is any number without a fractional part.
        let number = |text: &str| serde_json::from_str::<JsonValue>(text).unwrap();
        for (text, value) in [
            ("96667.0", 96667),
            ("-4465.0", -4465),
            ("1e3", 1000),
            ("1.5e1", 15),
            ("-0.0", 0),
            ("2.147483647e9", i32::MAX),
        ] {
            assert_eq!(conv::<i32>(&number(text)), Ok(value), "{text}");
        }
        for text in ["1.25e1", "1e-1", "0.5"] {
            assert!(conv::<i32>(&number(text)).is_err(), "{text}");
        }
        for text in ["2.147483648e9", "1e19", "1e400"] {
            let e = conv::<i32>(&number(text)).unwrap_err();
            assert!(e.contains("out of range"), "{text}: {e}");
        }
        assert_eq!(
            conv::<i64>(&number("9.223372036854775807e18")),
            Ok(i64::MAX)
        );
    }

    #[test]
    fn decimal_keeps_every_digit() {
        type Decimal = Numeric;
        let v: JsonValue =
            serde_json::from_str("123456789012345678901234567890.123456789").unwrap();
        let d = conv::<Decimal>(&v).unwrap();
        assert_eq!(d.to_string(), "123456789012345678901234567890.123456789");
        assert_eq!(conv::<Decimal>(&json!("0.10")).unwrap().to_string(), "0.10");
        assert!(conv::<Decimal>(&json!("NaN")).is_err());
        assert!(
            conv::<Decimal>(&json!("1e200000"))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(conv::<Decimal>(&json!("1e-20000")).is_err());
        assert!(conv::<Decimal>(&json!("1e100")).is_ok());
        assert!(conv::<Decimal>(&json!(true)).is_err());
    }

    #[test]
    fn short_plain_decimals_pass_the_full_check_too() {
        let long = format!("{}.{}", "9".repeat(500), "1".repeat(499));
        for text in [
            "0",
            "-0",
            "+7",
            "12.50",
            ".5",
            "5.",
            "-.5",
            "0000.0000",
            "123456789012345678901234567890",
            long.as_str(),
        ] {
            assert!(is_short_plain_decimal(text), "{text}");
            assert_eq!(check_numeric_limits(text), Ok(()), "{text}");
        }
        for text in ["", "-", ".", "1.2.3", "1e5", "--1", "1-", " 1", "1,5", "١"] {
            assert!(!is_short_plain_decimal(text), "{text}");
        }
        assert!(!is_short_plain_decimal(&format!("{long}1")));
    }

    #[test]
    fn numerics_compare_and_hash_by_value_and_keep_their_text() {
        use std::collections::HashSet;
        let n = |s: &str| Numeric::parse(s).unwrap();
        assert_eq!(n("1.50"), n("1.5"));
        assert_eq!(n("15e-1"), n("+1.5"));
        assert_eq!(n("0.000"), n("-0"));
        assert_eq!(n("100"), n("1e2"));
        assert_ne!(n("1.5"), n("-1.5"));
        assert_ne!(n("1.5"), n("1.05"));
        let set: HashSet<Numeric> = ["1.50", "1.5", "15e-1", "2"].iter().map(|s| n(s)).collect();
        assert_eq!(set.len(), 2);
        assert_eq!(n("1.50").to_string(), "1.50");
        for (text, value) in [
            ("1.50", "1.5"),
            (".5", "0.5"),
            ("5.", "5"),
            ("+5", "5"),
            ("1E+5", "100000"),
            ("-1.5e-3", "-0.0015"),
        ] {
            assert_eq!(
                n(text).to_decimal().ok(),
                value.parse::<Decimal>().ok(),
                "{text}"
            );
        }
        assert_eq!(serde_json::to_value(n("1.50")).unwrap(), json!("1.50"));
        for bad in [
            "", "-", "1.2.3", "1e", "0x10", "1_000", "NaN", "Infinity", " 1",
        ] {
            assert!(Numeric::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn nul_characters_are_refused_before_the_database() {
        assert!(
            conv::<String>(&json!("a\u{0}b"))
                .unwrap_err()
                .contains("NUL")
        );
        assert!(conv::<JsonValue>(&json!({"k": ["x\u{0}"]})).is_err());
        assert!(conv::<Vec<String>>(&json!(["ok", "\u{0}"])).is_err());
        assert_eq!(conv::<String>(&json!("fine")), Ok("fine".to_string()));
    }

    #[test]
    fn dates_and_times_are_strict() {
        assert!(conv::<NaiveDate>(&json!("2024-02-29")).is_ok());
        assert!(conv::<NaiveDate>(&json!("2023-02-29")).is_err());
        assert!(conv::<NaiveDate>(&json!("29/02/2024")).is_err());
        // Exactly DATE_PATTERN (four, two and two ASCII digits), and then only real dates.
        for (text, accepted) in [
            ("0001-01-01", true),
            ("9999-12-31", true),
            ("0000-01-01", true),
            ("2023-13-01", false),
            ("2023-00-10", false),
            ("2023-04-31", false),
            ("12345-01-01", false),
            ("-0044-03-15", false),
            ("+2024-02-29", false),
            ("2024-2-29", false),
            ("2024-02-29 ", false),
            ("２０２４-02-29", false),
        ] {
            assert_eq!(conv::<NaiveDate>(&json!(text)).is_ok(), accepted, "{text}");
        }
        assert!(conv::<Uuid>(&json!("67e55044-10b1-426f-9247-bb680e5fe0c8")).is_ok());
        for not_hyphenated in [
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
        ] {
            assert!(
                conv::<Uuid>(&json!(not_hyphenated)).is_err(),
                "{not_hyphenated}"
            );
        }
        let t = conv::<DateTimeUtc>(&json!("2024-01-01T10:00:00+02:00")).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-01T08:00:00+00:00");
    }

    #[test]
    fn times_are_hh_mm_ss_with_at_most_microseconds() {
        let time = |s: &str| conv::<NaiveTime>(&json!(s));
        assert_eq!(time("00:00:00").unwrap().to_string(), "00:00:00");
        assert_eq!(
            time("23:59:59.999999").unwrap().to_string(),
            "23:59:59.999999"
        );
        for bad in [
            "24:00:00",
            "23:59:60",
            "7:05:00",
            "07:05",
            "07:05:00.",
            "07:05:00.1234567",
            "07:05:00Z",
            "07:05:00+01:00",
            "\u{0661}7:05:00",
            "07:05:0\u{0661}",
            "07:05:00.\u{0661}",
        ] {
            assert!(time(bad).is_err(), "{bad} accepted");
        }
        assert!(conv::<NaiveTime>(&json!(3600)).is_err());
    }

    #[test]
    fn bytes_are_padded_standard_base64_both_ways() {
        let bytes = |s: &str| conv::<Vec<u8>>(&json!(s));
        assert_eq!(bytes("").unwrap(), b"");
        assert_eq!(bytes("AAEC/w==").unwrap(), vec![0, 1, 2, 255]);
        for bad in ["AAEC/w", "AAEC_w==", "AA EC", "A===", "AAEC/w==="] {
            assert!(bytes(bad).is_err(), "{bad} accepted");
        }
        assert!(conv::<Vec<u8>>(&json!([0, 1])).is_err());
        #[derive(Serialize)]
        struct Row {
            #[serde(serialize_with = "serialize_base64")]
            a: Vec<u8>,
            #[serde(serialize_with = "serialize_base64")]
            b: Option<Vec<u8>>,
            #[serde(serialize_with = "serialize_base64")]
            c: Option<Vec<u8>>,
        }
        let row = Row {
            a: vec![0, 1, 2, 255],
            b: Some(vec![104, 105]),
            c: None,
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            json!({"a": "AAEC/w==", "b": "aGk=", "c": null})
        );
    }

    #[test]
    fn extract_reports_paths() {
        let doc = doc_from_value(&json!({"a": {"b": "x"}, "n": null}));
        let v = doc.root();
        let mut errors = Vec::new();
        assert_eq!(
            extract::<String>(v, "", &["a", "b"], &mut errors),
            Some("x".into())
        );
        assert_eq!(
            extract_opt::<String>(v, "", &["n"], &mut errors),
            Some(None)
        );
        assert_eq!(
            extract::<i32>(v, "items[1]", &["a", "b"], &mut errors),
            None
        );
        assert_eq!(extract::<String>(v, "", &["missing"], &mut errors), None);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, "items[1].a.b");
        assert_eq!(errors[1].field, "missing");
        assert_eq!(element_path("", "line_items", 3), "line_items[3]");
        assert_eq!(element_path("a[1]", "b", 0), "a[1].b[0]");
        assert_eq!(element_path("", "l", 1_234_567), "l[1234567]");
        assert_eq!(
            element_path("", "l", usize::MAX),
            format!("l[{}]", usize::MAX)
        );
    }

    #[test]
    fn dedup_keeps_the_latest_or_earliest_message_of_each_key() {
        let at = |epoch, sequence| Position { epoch, sequence };
        let rows = [(1, "a"), (2, "b"), (1, "c"), (1, "d")];
        let with_pos = || {
            vec![
                (&rows[0], at(1, 5)),
                (&rows[1], at(1, 6)),
                (&rows[2], at(1, 9)),
                (&rows[3], at(1, 7)),
            ]
        };
        fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
            v.sort();
            v
        }
        let latest = dedup_latest(with_pos(), true, |r| r.0, |_| ());
        assert_eq!(
            sorted(latest),
            vec![(&(1, "c"), at(1, 9)), (&(2, "b"), at(1, 6))]
        );
        let earliest = dedup_latest(with_pos(), false, |r| r.0, |_| ());
        assert_eq!(
            sorted(earliest),
            vec![(&(1, "a"), at(1, 5)), (&(2, "b"), at(1, 6))]
        );
        // A later epoch is later whatever its sequence (a stream deleted and re-created).
        let renewed = vec![(&rows[0], at(1, 900)), (&rows[2], at(2, 1))];
        assert_eq!(
            dedup_latest(renewed, true, |r| r.0, |_| ()),
            vec![(&(1, "c"), at(2, 1))]
        );
    }

    #[test]
    fn a_declared_version_decides_before_the_position() {
        let at = |sequence| Position { epoch: 1, sequence };
        // (key, version): version 3 arrived first, version 2 later.
        let rows = [(1, 3), (1, 2), (2, 1), (2, 1)];
        let pos = vec![
            (&rows[0], at(1)),
            (&rows[1], at(2)),
            (&rows[2], at(3)),
            (&rows[3], at(4)),
        ];
        let mut kept = dedup_latest(pos, true, |r| r.0, |r| r.1);
        kept.sort();
        // Equal versions: the later position.
        assert_eq!(kept, vec![(&(1, 3), at(1)), (&(2, 1), at(4))]);
    }

    #[test]
    fn rows_come_out_in_one_key_order_whatever_order_they_came_in() {
        let at = |sequence| Position { epoch: 1, sequence };
        let keys: Vec<u32> = (0..200).collect();
        let forward: Vec<_> = keys.iter().map(|k| (k, at(1))).collect();
        let backward: Vec<_> = keys.iter().rev().map(|k| (k, at(1))).collect();
        let a: Vec<u32> = dedup_latest(forward, true, |k| *k, |_| ())
            .into_iter()
            .map(|(k, _)| *k)
            .collect();
        let b: Vec<u32> = dedup_latest(backward, true, |k| *k, |_| ())
            .into_iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, keys, "a hash order, not the arrival order");
    }

    #[test]
    fn unicity_constraint_names_fit_postgresql_identifiers() {
        assert_eq!(unicity_constraint_name("orders"), "orders_unicity");
        let long = "a".repeat(60);
        let name = unicity_constraint_name(&long);
        assert!(name.len() <= 63, "{name}");
        assert!(name.ends_with("_unicity"), "{name}");
        assert_eq!(name, unicity_constraint_name(&long), "deterministic");
        let other = format!("{}b", "a".repeat(59));
        assert_ne!(name, unicity_constraint_name(&other));
    }

    #[test]
    fn repeated_keys_name_both_rows_for_few_rows_and_many() {
        for n in [5usize, 40] {
            let rows: Vec<u32> = (0..n as u32).map(|i| if i == 3 { 1 } else { i }).collect();
            let paths: Vec<String> = (0..n).map(|i| format!("items[{i}]")).collect();
            let mut errors = Vec::new();
            refuse_repeated_keys(&rows, &paths, |r| *r, "id", &mut errors);
            assert_eq!(errors.len(), 1, "{n}");
            assert_eq!(errors[0].field, "items[3]");
            assert!(
                errors[0].error.contains("(id) of items[1]"),
                "{}",
                errors[0].error
            );
        }
    }

    #[test]
    fn positions_read_back_what_they_print() {
        let p = Position {
            epoch: 1_765_000_000_000_000,
            sequence: 42,
        };
        assert_eq!(Position::parse(&p.to_string()), Some(p));
        assert_eq!(Position::parse("12"), None);
        assert_eq!(Position::parse("a:1"), None);
    }
}
