//! JSON → Rust for every type of the type table: `FromJson` over a `JsonRef`, with the text of
//! each conversion error, the patterns the JSON Schemas use, and the serde helpers of types
//! whose serde form is not their JSON form.

use chrono::{NaiveDate, NaiveTime};

use crate::numeric::{Numeric, canonical, check_numeric, truncated};
use crate::{DateTimeUtc, JsonNumber, JsonRef, JsonValue, Uuid};

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

pub(crate) fn wrong<T: FromJson>(v: JsonRef<'_>) -> String {
    format!("expected {}, found {}", T::EXPECTED, v.kind())
}

/// PostgreSQL `text` and `jsonb` cannot hold U+0000, so it is refused here rather than at the
/// database.
pub(crate) const NUL_ERROR: &str =
    "contains a NUL character (\\u0000), which PostgreSQL cannot store";

pub(crate) fn contains_nul(v: JsonRef<'_>) -> bool {
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

pub(crate) fn integer<T: TryFrom<i64>>(v: JsonRef<'_>, what: &str) -> Result<T, String> {
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
pub(crate) fn integral(text: &str) -> Option<Option<i64>> {
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

/// Refuses a date before the earliest PostgreSQL stores: 4713-11-24 BC (astronomical year
/// -4712), for `date` and `timestamptz` alike.
pub(crate) fn check_postgres_date(date: NaiveDate, text: &str) -> Result<(), String> {
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
pub(crate) fn check_json_numbers(v: JsonRef<'_>) -> Result<(), String> {
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
