//! `Decimal` values: PostgreSQL `NUMERIC`'s limits checked on the text, and `Numeric`, the
//! text kept as written (compared numerically).

use std::hash::Hash;
use std::str::FromStr;

use serde::Serialize;

use crate::Decimal;

/// PostgreSQL `NUMERIC` holds at most this many digits after the decimal point
/// (`NUMERIC_DSCALE_MAX`)…
pub const NUMERIC_MAX_SCALE: i128 = 16_383;
/// …and at most this many before it (`NUMERIC_WEIGHT_MAX` base-10000 groups).
pub const NUMERIC_MAX_INTEGER_DIGITS: i128 = 131_072;
/// The binary wire format counts base-10000 digit groups in an `i16`.
pub(crate) const NUMERIC_MAX_GROUPS: i128 = 32_767;

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
pub(crate) fn check_numeric_limits(text: &str) -> Result<(), String> {
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
pub(crate) fn is_short_plain_decimal(text: &str) -> bool {
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

pub(crate) fn truncated(text: &str) -> String {
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

pub(crate) fn out_of_numeric_range(text: &str, why: &str) -> String {
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
pub(crate) fn canonical(text: &str) -> (bool, String, i128) {
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
