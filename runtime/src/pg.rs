//! Bind values the generated writes hand to diesel.

use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::{Array, HasSqlType, Nullable, Numeric as SqlNumeric, Text};
use std::io::Write as _;

use crate::Numeric;

/// The elements of a one-dimensional binary array as PostgreSQL's `array_recv` reads them:
/// each its length (big-endian `i32`, -1 for NULL) and its encoded bytes.
#[derive(Debug, Clone, Default)]
struct BinaryElements {
    len: i32,
    bytes: Vec<u8>,
}

impl BinaryElements {
    fn with_capacity(elements: usize) -> Self {
        Self {
            len: 0,
            bytes: Vec::with_capacity(elements * 16),
        }
    }

    /// Adds NULL.
    fn push_null(&mut self) {
        self.bytes.extend_from_slice(&(-1i32).to_be_bytes());
        self.count();
    }

    /// Adds the element `encode` writes; NULL if it fails (its error is returned).
    fn push_with<E>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        match encode(&mut self.bytes) {
            Ok(()) => {
                let len = i32::try_from(self.bytes.len() - start - 4)
                    .expect("an array element longer than 2 GiB");
                self.bytes[start..start + 4].copy_from_slice(&len.to_be_bytes());
                self.count();
                Ok(())
            }
            Err(e) => {
                self.bytes.truncate(start);
                self.push_null();
                Err(e)
            }
        }
    }

    fn count(&mut self) {
        self.len = self
            .len
            .checked_add(1)
            .expect("more than i32::MAX elements");
    }

    /// The array: the header diesel writes (one dimension, no flags, the element type, its
    /// length and lower bound 1), then the elements.
    fn write(&self, out: &mut Output<'_, '_, Pg>, oid: u32) -> serialize::Result {
        out.write_all(&1i32.to_be_bytes())?;
        out.write_all(&0i32.to_be_bytes())?;
        out.write_all(&oid.to_be_bytes())?;
        out.write_all(&self.len.to_be_bytes())?;
        out.write_all(&1i32.to_be_bytes())?;
        out.write_all(&self.bytes)?;
        Ok(IsNull::No)
    }
}

/// A `text[]` bind in PostgreSQL's binary array format, its elements encoded as the array is
/// built. diesel's own array bind encodes each element into a scratch buffer and copies it
/// again, two small copies per value; a batch of line items binds thousands of values.
#[derive(Debug, Clone, Default)]
pub struct TextArray {
    elements: BinaryElements,
}

impl TextArray {
    /// The array of `items` (`&str`, or `Option<&str>` where `None` is NULL).
    ///
    /// # Panics
    /// If an element or the array is longer than PostgreSQL allows (`i32::MAX`); the batch
    /// byte budget keeps both far below.
    pub fn new<'a, I>(items: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Option<&'a str>>,
    {
        let items = items.into_iter();
        let mut elements = BinaryElements::with_capacity(items.size_hint().0);
        for item in items {
            match item.into() {
                Some(text) => {
                    let _ = elements.push_with(|out| {
                        out.extend_from_slice(text.as_bytes());
                        Ok::<(), ()>(())
                    });
                }
                None => elements.push_null(),
            }
        }
        Self { elements }
    }

    /// How many elements the array has.
    pub fn len(&self) -> usize {
        self.elements.len as usize
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.elements.len == 0
    }
}

impl ToSql<Array<Text>, Pg> for TextArray {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        let oid = <Pg as HasSqlType<Text>>::metadata(out.metadata_lookup()).oid()?;
        self.elements.write(out, oid)
    }
}

impl ToSql<Array<Nullable<Text>>, Pg> for TextArray {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <Self as ToSql<Array<Text>, Pg>>::to_sql(self, out)
    }
}

/// A `numeric[]` bind in PostgreSQL's binary format, each element converted from its decimal
/// text as the array is built. Bound as text, every value was parsed again by PostgreSQL's
/// `numeric_in` (about 0.3 µs each; an order has 17); the binary form is read as it is.
#[derive(Debug, Clone, Default)]
pub struct NumericArray {
    elements: BinaryElements,
    /// The first value that could not be encoded (none can: [`crate::check_numeric`] admits
    /// only what the format holds); reported when the array is bound.
    error: Option<String>,
}

impl NumericArray {
    /// The array of `items` (`&Numeric`, or `Option<&Numeric>` where `None` is NULL).
    pub fn new<'a, I>(items: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<Option<&'a Numeric>>,
    {
        let items = items.into_iter();
        let mut array = Self {
            elements: BinaryElements::with_capacity(items.size_hint().0),
            error: None,
        };
        for item in items {
            match item.into() {
                Some(value) => {
                    let encoded = array
                        .elements
                        .push_with(|out| encode_numeric(value.as_str(), out));
                    if let Err(e) = encoded {
                        array.error.get_or_insert(e);
                    }
                }
                None => array.elements.push_null(),
            }
        }
        array
    }

    /// How many elements the array has.
    pub fn len(&self) -> usize {
        self.elements.len as usize
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.elements.len == 0
    }
}

impl ToSql<Array<SqlNumeric>, Pg> for NumericArray {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        if let Some(e) = &self.error {
            return Err(e.clone().into());
        }
        let oid = <Pg as HasSqlType<SqlNumeric>>::metadata(out.metadata_lookup()).oid()?;
        self.elements.write(out, oid)
    }
}

impl ToSql<Array<Nullable<SqlNumeric>>, Pg> for NumericArray {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <Self as ToSql<Array<SqlNumeric>, Pg>>::to_sql(self, out)
    }
}

/// Rows in PostgreSQL's binary `COPY` format (`COPY … FROM STDIN (FORMAT binary)`): the header,
/// then per row its field count and each field as its length (-1 for NULL) and its binary
/// (`*_recv`) form, then the trailer. The worker writes bulk chunks this way: PostgreSQL stores
/// them with its multi-row insert, and reads each value without parsing text.
#[derive(Debug, Clone)]
pub struct CopyRows {
    bytes: Vec<u8>,
    rows: usize,
    /// The first value that could not be encoded (none can: the parsers admit only what the
    /// format holds).
    error: Option<String>,
}

/// `PGCOPY\n\377\r\n\0`, flags and header extension length: the binary `COPY` header.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl Default for CopyRows {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl CopyRows {
    /// An empty set of rows with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut out = Vec::with_capacity(bytes + COPY_HEADER.len() + 2);
        out.extend_from_slice(COPY_HEADER);
        Self {
            bytes: out,
            rows: 0,
            error: None,
        }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) {
        self.bytes.extend_from_slice(&fields.to_be_bytes());
        self.rows += 1;
    }

    /// Adds a field to the current row (`None` is NULL).
    pub fn field<T: CopyField + ?Sized>(&mut self, value: &T) {
        value.copy_to(self);
    }

    /// Adds NULL.
    fn null(&mut self) {
        self.bytes.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// Adds the value `encode` writes, length-prefixed.
    fn encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> Result<(), String>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        match encode(&mut self.bytes) {
            Ok(()) => {
                let len = i32::try_from(self.bytes.len() - start - 4).unwrap_or(i32::MAX);
                self.bytes[start..start + 4].copy_from_slice(&len.to_be_bytes());
            }
            Err(e) => {
                self.bytes.truncate(start);
                self.null();
                self.error.get_or_insert(e);
            }
        }
    }

    /// Rows added.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The `COPY` data (with its trailer), or the first value that could not be encoded.
    pub fn finish(mut self) -> Result<Vec<u8>, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.bytes.extend_from_slice(&(-1i16).to_be_bytes());
        Ok(self.bytes)
    }
}

/// A value with a binary `COPY` form.
pub trait CopyField {
    /// Writes the value (length-prefixed, or NULL) as a field of the current row.
    fn copy_to(&self, rows: &mut CopyRows);
}

impl<T: CopyField> CopyField for Option<T> {
    fn copy_to(&self, rows: &mut CopyRows) {
        match self {
            Some(v) => v.copy_to(rows),
            None => rows.null(),
        }
    }
}

impl<T: CopyField + ?Sized> CopyField for &T {
    fn copy_to(&self, rows: &mut CopyRows) {
        (**self).copy_to(rows)
    }
}

macro_rules! copy_bytes {
    ($($t:ty => |$v:ident| $bytes:expr),* $(,)?) => {$(
        impl CopyField for $t {
            fn copy_to(&self, rows: &mut CopyRows) {
                let $v = self;
                rows.encoded(|out| {
                    out.extend_from_slice($bytes);
                    Ok(())
                });
            }
        }
    )*};
}

copy_bytes! {
    str => |v| v.as_bytes(),
    String => |v| v.as_bytes(),
    [u8] => |v| v,
    Vec<u8> => |v| v,
    i32 => |v| &v.to_be_bytes(),
    i64 => |v| &v.to_be_bytes(),
    f64 => |v| &v.to_bits().to_be_bytes(),
    bool => |v| &[u8::from(*v)],
    uuid::Uuid => |v| v.as_bytes(),
    chrono::NaiveDate => |v| &(chrono::Datelike::num_days_from_ce(v) - 719_163 - PG_EPOCH_DAYS).to_be_bytes(),
}

impl CopyField for chrono::NaiveTime {
    fn copy_to(&self, rows: &mut CopyRows) {
        use chrono::Timelike as _;
        let micros = i64::from(self.num_seconds_from_midnight()) * 1_000_000
            + i64::from(self.nanosecond() / 1_000);
        micros.copy_to(rows)
    }
}

impl CopyField for chrono::DateTime<chrono::Utc> {
    fn copy_to(&self, rows: &mut CopyRows) {
        // Whole microseconds, as PostgreSQL keeps them (and as diesel sends them).
        (self.timestamp_micros() - PG_EPOCH_MICROS).copy_to(rows)
    }
}

impl CopyField for Numeric {
    fn copy_to(&self, rows: &mut CopyRows) {
        rows.encoded(|out| encode_numeric(self.as_str(), out))
    }
}

impl CopyField for serde_json::Value {
    /// `jsonb`: its version (1) and the JSON text.
    fn copy_to(&self, rows: &mut CopyRows) {
        rows.encoded(|out| {
            out.push(1);
            serde_json::to_writer(&mut *out, self).map_err(|e| e.to_string())
        })
    }
}

impl CopyField for [String] {
    /// `text[]`: one dimension (none when empty), no NULLs, element type `text` (OID 25).
    fn copy_to(&self, rows: &mut CopyRows) {
        rows.encoded(|out| {
            let dims = i32::from(!self.is_empty());
            out.extend_from_slice(&dims.to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes());
            out.extend_from_slice(&25u32.to_be_bytes());
            if !self.is_empty() {
                let len = i32::try_from(self.len()).map_err(|e| e.to_string())?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                for item in self {
                    let n = i32::try_from(item.len()).map_err(|e| e.to_string())?;
                    out.extend_from_slice(&n.to_be_bytes());
                    out.extend_from_slice(item.as_bytes());
                }
            }
            Ok(())
        })
    }
}

impl CopyField for Vec<String> {
    fn copy_to(&self, rows: &mut CopyRows) {
        self.as_slice().copy_to(rows)
    }
}

/// `numeric_recv`'s sign of a positive value (and of zero).
const NUMERIC_POS: u16 = 0x0000;
/// `numeric_recv`'s sign of a negative value.
const NUMERIC_NEG: u16 = 0x4000;

/// [`encode_numeric`] of a decimal without exponent of at most 64 digits (nearly every one), in
/// one pass over the text; `false` (nothing written) for any other text.
fn encode_short_plain_numeric(text: &str, out: &mut Vec<u8>) -> bool {
    let negative = text.starts_with('-');
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text).as_bytes();
    let (int_part, frac_part) = match unsigned.iter().position(|b| *b == b'.') {
        Some(i) => (&unsigned[..i], &unsigned[i + 1..]),
        None => (unsigned, &[][..]),
    };
    if int_part.len() + frac_part.len() > 64
        || int_part.len() + frac_part.len() == 0
        || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit)
    {
        return false;
    }
    // Base-10000 groups with the point on a group boundary: the integer digits padded on the
    // left, the fraction on the right, to whole groups.
    let pad = (4 - int_part.len() % 4) % 4;
    let int_groups = (pad + int_part.len()) / 4;
    let mut groups = [0u16; 18];
    let mut count = 0;
    let mut group = 0u16;
    let mut filled = pad;
    for part in [int_part, frac_part] {
        for &b in part {
            group = group * 10 + u16::from(b - b'0');
            filled += 1;
            if filled == 4 {
                groups[count] = group;
                count += 1;
                group = 0;
                filled = 0;
            }
        }
    }
    if filled > 0 {
        groups[count] = group * 10u16.pow(4 - filled as u32);
        count += 1;
    }
    let first = groups[..count].iter().take_while(|g| **g == 0).count();
    let last = groups[..count]
        .iter()
        .rposition(|g| *g != 0)
        .map_or(first, |i| i + 1);
    let kept = &groups[first..last.max(first)];
    let (weight, sign) = if kept.is_empty() {
        (0, NUMERIC_POS)
    } else if negative {
        (int_groups as i16 - 1 - first as i16, NUMERIC_NEG)
    } else {
        (int_groups as i16 - 1 - first as i16, NUMERIC_POS)
    };
    // Written into a buffer of its own first: one append instead of one per field.
    let mut encoded = [0u8; 8 + 2 * 18];
    encoded[0..2].copy_from_slice(&(kept.len() as u16).to_be_bytes());
    encoded[2..4].copy_from_slice(&weight.to_be_bytes());
    encoded[4..6].copy_from_slice(&sign.to_be_bytes());
    encoded[6..8].copy_from_slice(&(frac_part.len() as u16).to_be_bytes());
    for (i, g) in kept.iter().enumerate() {
        encoded[8 + 2 * i..10 + 2 * i].copy_from_slice(&g.to_be_bytes());
    }
    out.extend_from_slice(&encoded[..8 + 2 * kept.len()]);
    true
}

/// Appends PostgreSQL's binary NUMERIC of decimal text that [`crate::check_numeric`] accepted:
/// digit count, weight (of the first base-10000 digit), sign and display scale, then the
/// base-10000 digits, each 16 bits big-endian. The value and display scale are what
/// `numeric_in` makes of the same text (`1.50` keeps scale 2, `15e-1` has scale 1).
fn encode_numeric(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    if encode_short_plain_numeric(text, out) {
        return Ok(());
    }
    let bad = || format!("`{text}` is not a NUMERIC this worker can encode");
    let negative = text.starts_with('-');
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (
            &unsigned[..i],
            unsigned[i + 1..].parse::<i64>().map_err(|_| bad())?,
        ),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let scale = (frac_part.len() as i64).saturating_sub(exponent).max(0);
    let dscale = u16::try_from(scale)
        .ok()
        .filter(|s| *s <= 0x3FFF)
        .ok_or_else(bad)?;
    // The digits without the point, read from the text each time rather than collected.
    let digits = || int_part.bytes().chain(frac_part.bytes());
    if !digits().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    // Powers of ten: the first digit's is `point - 1`, the last kept one's `point - len`.
    let total = int_part.len() + frac_part.len();
    let leading = digits().take_while(|b| *b == b'0').count();
    let trailing = (digits().rev().take_while(|b| *b == b'0').count()).min(total - leading);
    let kept_len = total - leading - trailing;
    let point = (int_part.len() as i64 - leading as i64).saturating_add(exponent);
    let head = |ndigits: u16, weight: i16, sign: u16, out: &mut Vec<u8>| {
        out.extend_from_slice(&ndigits.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
    };
    if kept_len == 0 {
        head(0, 0, NUMERIC_POS, out);
        return Ok(());
    }
    let first_power = point - 1;
    let last_power = point - kept_len as i64;
    let weight = first_power.div_euclid(4);
    let groups = weight - last_power.div_euclid(4) + 1;
    let weight = i16::try_from(weight).map_err(|_| bad())?;
    let ndigits = u16::try_from(groups)
        .ok()
        .filter(|n| *n <= 0x7FFF)
        .ok_or_else(bad)?;
    head(
        ndigits,
        weight,
        if negative { NUMERIC_NEG } else { NUMERIC_POS },
        out,
    );
    // Groups from the most significant; a digit of power p adds d·10^(p mod 4) to group
    // weight - p div 4.
    let mut group = 0u16;
    let mut current = first_power.div_euclid(4);
    for (i, b) in digits().skip(leading).take(kept_len).enumerate() {
        let d = b - b'0';
        let power = first_power - i as i64;
        if power.div_euclid(4) != current {
            out.extend_from_slice(&group.to_be_bytes());
            group = 0;
            current = power.div_euclid(4);
        }
        group += u16::from(d) * 10u16.pow(power.rem_euclid(4) as u32);
    }
    out.extend_from_slice(&group.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `numeric_recv`'s fields of `text`: (digit count, weight, sign, display scale, digits).
    fn fields(text: &str) -> (u16, i16, u16, u16, Vec<u16>) {
        let mut out = Vec::new();
        encode_numeric(text, &mut out).expect("encodes");
        let word = |i: usize| u16::from_be_bytes([out[2 * i], out[2 * i + 1]]);
        let digits = (4..out.len() / 2).map(word).collect();
        (word(0), word(1) as i16, word(2), word(3), digits)
    }

    #[test]
    fn decimals_are_regrouped_in_base_10000_around_the_point() {
        assert_eq!(fields("23696.25"), (3, 1, 0, 2, vec![2, 3696, 2500]));
        assert_eq!(fields("-0.06"), (1, -1, 0x4000, 2, vec![600]));
        assert_eq!(fields("1.500e1"), (1, 0, 0, 2, vec![15]));
        assert_eq!(fields("12e4"), (1, 1, 0, 0, vec![12]));
        assert_eq!(fields("-0.000"), (0, 0, 0, 3, vec![]));
        assert_eq!(fields("0e99999"), (0, 0, 0, 0, vec![]));
        assert_eq!(fields("00010000"), (1, 1, 0, 0, vec![1]));
        let mut out = Vec::new();
        assert!(encode_numeric("0e-16384", &mut out).is_err());
        assert!(encode_numeric("1x", &mut out).is_err());
    }

    #[test]
    fn the_short_path_encodes_as_the_general_one() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..20_000 {
            let mut text = String::new();
            text.push_str(["", "-", "+"][next(3) as usize]);
            for _ in 0..next(12) {
                text.push(char::from(b'0' + [0, 0, 1, 5, 9][next(5) as usize] as u8));
            }
            if next(2) == 0 {
                text.push('.');
                for _ in 0..next(12) {
                    text.push(char::from(b'0' + next(10) as u8));
                }
            }
            if crate::check_numeric(&text).is_err() {
                continue;
            }
            let (mut short, mut general) = (Vec::new(), Vec::new());
            assert!(encode_short_plain_numeric(&text, &mut short), "{text}");
            // The general path: the same value written with an exponent of zero.
            encode_numeric(&format!("{text}e0"), &mut general).expect("encodes");
            assert_eq!(short, general, "{text}");
        }
    }

    #[test]
    fn elements_are_length_prefixed_and_null_is_minus_one() {
        let array = TextArray::new([Some("ab"), None, Some("")]);
        assert_eq!(array.len(), 3);
        assert_eq!(
            array.elements.bytes,
            [&[0, 0, 0, 2, b'a', b'b'][..], &[255; 4], &[0; 4]].concat()
        );
        assert!(TextArray::new(Vec::<&str>::new()).is_empty());
    }
}
