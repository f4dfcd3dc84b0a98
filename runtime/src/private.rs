//! Helpers only generated code calls (`::nomnom_runtime::__private::…`), as prost keeps its
//! `encoding`: field extraction with errors by JSON path, `max_length` and index-key checks,
//! constants, the dedup of a batch's rows by key, array literals. Not an API: they change with
//! the generator. What other crates use is re-exported at the root.

use std::collections::HashMap;
use std::hash::Hash;

use crate::{Elements, FieldError, FromJson, JsonDoc, JsonRef, JsonValue, Origin, doc_from_value};

/// `base` + `.key` (no leading dot at the top level).
pub fn join_path(base: &str, segments: &[&str]) -> String {
    let mut out = base.to_string();
    for s in segments {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(s);
    }
    out
}

/// Path of one element of a list (`line_items[3]`).
pub fn element_path(base: &str, list: &str, index: usize) -> String {
    // One allocation and no formatter: every element of every list gets a path, error or not.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut n = index;
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut out = String::with_capacity(base.len() + list.len() + 24);
    out.push_str(base);
    if !base.is_empty() {
        out.push('.');
    }
    out.push_str(list);
    out.push('[');
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
    out.push(']');
    out
}

/// The elements of the array at `segments` under `v` (none when missing or not an array; the
/// list field's own parser reports that).
pub fn list_at<'d>(v: JsonRef<'d>, segments: &[&str]) -> Elements<'d> {
    match lookup(v, "", segments) {
        Ok(Some(list)) => list.elements().unwrap_or_else(Elements::empty),
        _ => Elements::empty(),
    }
}

/// The nested object at `segments` of `v` that an entity derived with `object:` reads its row
/// from: `None` when it is null or absent (no row), and when it is not an object, which is an
/// error at its path (`holds` names the entity it feeds).
pub fn object_at<'d>(
    v: JsonRef<'d>,
    base: &str,
    segments: &[&str],
    holds: &str,
    errors: &mut Vec<FieldError>,
) -> Option<JsonRef<'d>> {
    // A wrong kind above the object is its parent field's error, reported there.
    let found = lookup(v, base, segments).ok().flatten()?;
    if found.is_object() {
        return Some(found);
    }
    errors.push(FieldError {
        field: join_path(base, segments),
        error: format!(
            "expected an object (it holds the `{holds}` row) or null, found {}",
            found.kind()
        ),
    });
    None
}

/// Whether the value at `segments` of `v` reads as `text`: a string equal to it, or a number
/// or boolean written so (`copy_field_conditional`'s condition). Null or absent: false.
pub fn value_is(v: JsonRef<'_>, segments: &[&str], text: &str) -> bool {
    match lookup(v, "", segments) {
        Ok(Some(found)) => match found.as_str() {
            Some(s) => s == text,
            None => match found.as_bool() {
                Some(b) => text == if b { "true" } else { "false" },
                None => found.as_number().is_some_and(|n| n.to_string() == text),
            },
        },
        _ => false,
    }
}

/// Where a field renamed from `old` is read: at `segments`, unless only `old` holds a value
/// (a body of the shape before the rename).
pub fn renamed<'s>(v: JsonRef<'_>, segments: &'s [&'s str], old: &'s [&'s str]) -> &'s [&'s str] {
    let holds = |at: &[&str]| matches!(lookup(v, "", at), Ok(Some(_)));
    if !holds(segments) && holds(old) {
        old
    } else {
        segments
    }
}

/// The value at `segments` of `v` (`v` itself for none); `None` when null or absent.
pub fn value_at<'d>(v: JsonRef<'d>, segments: &[&str]) -> Option<JsonRef<'d>> {
    lookup(v, "", segments).ok().flatten()
}

/// Calls a user transform (see [`crate::UserTransform`]) on `input` with `args`: its value
/// (`Some(None)` for null, also when `input` is null or absent), or `None` with its error, or
/// its panic, recorded at `base.field`. `name` is the function's path, for the messages.
#[allow(clippy::too_many_arguments)]
pub fn user_transform<T>(
    transform: crate::UserTransform<T>,
    input: Option<JsonRef<'_>>,
    args: &[&str],
    base: &str,
    field: &str,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Option<T>> {
    let Some(input) = input else {
        return Some(None);
    };
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| transform(input, args)));
    let error = match called {
        Ok(Ok(value)) => return Some(value),
        Ok(Err(why)) => why,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            format!("transform `{name}` failed: it panicked ({what})")
        }
    };
    errors.push(FieldError {
        field: join_path(base, &[field]),
        error,
    });
    None
}

/// Checks that a message body or list element is an object.
pub fn expect_object(v: JsonRef<'_>, path: &str, errors: &mut Vec<FieldError>) -> bool {
    if v.is_object() {
        return true;
    }
    errors.push(FieldError {
        field: if path.is_empty() {
            "$".into()
        } else {
            path.into()
        },
        error: format!("expected an object, found {}", v.kind()),
    });
    false
}

/// Walks a dotted path: `Ok(None)` when a member is missing or null.
fn lookup<'d>(
    v: JsonRef<'d>,
    base: &str,
    segments: &[&str],
) -> Result<Option<JsonRef<'d>>, FieldError> {
    let mut cur = v;
    for (i, s) in segments.iter().enumerate() {
        if cur.is_object() {
            match cur.get(s) {
                Some(next) => cur = next,
                None => return Ok(None),
            }
        } else if cur.is_null() {
            return Ok(None);
        } else {
            return Err(FieldError {
                field: join_path(base, &segments[..i]),
                error: format!("expected an object, found {}", cur.kind()),
            });
        }
    }
    Ok(if cur.is_null() { None } else { Some(cur) })
}

/// The error of a required field that is missing or null.
fn missing<T: FromJson>(base: &str, segments: &[&str]) -> FieldError {
    FieldError {
        field: join_path(base, segments),
        error: format!(
            "required field is missing or null (expected {})",
            T::EXPECTED
        ),
    }
}

/// The error of text longer than `max_length`.
fn too_long(len: usize, limit: usize, base: &str, key: &str) -> FieldError {
    FieldError {
        field: join_path(base, &[key]),
        error: format!("is {len} characters long; at most {limit} are allowed"),
    }
}

/// A non-nullable value at `segments` under `v`; missing, null or invalid → error, `None`.
pub fn extract<T: FromJson>(
    v: JsonRef<'_>,
    base: &str,
    segments: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    extract_opt(v, base, segments, errors)?.or_else(|| {
        errors.push(missing::<T>(base, segments));
        None
    })
}

/// A nullable value: `Some(None)` when missing or null, `None` when invalid (error recorded).
pub fn extract_opt<T: FromJson>(
    v: JsonRef<'_>,
    base: &str,
    segments: &[&str],
    errors: &mut Vec<FieldError>,
) -> Option<Option<T>> {
    let found = match lookup(v, base, segments) {
        Ok(found) => found,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    match found.map(T::from_json) {
        None => Some(None),
        Some(Ok(x)) => Some(Some(x)),
        Some(Err(error)) => {
            errors.push(FieldError {
                field: join_path(base, segments),
                error,
            });
            None
        }
    }
}

/// Checks the value at `segments` under `v` as [`extract`] (or, `nullable`, [`extract_opt`])
/// followed by [`max_len`] would, keeping nothing: the same errors in the same order. What the
/// generated `check_json` of an entity calls for each field read from the body.
pub fn check_field<T: FromJson>(
    v: JsonRef<'_>,
    base: &str,
    segments: &[&str],
    nullable: bool,
    max_length: Option<(usize, &str)>,
    errors: &mut Vec<FieldError>,
) {
    let found = match lookup(v, base, segments) {
        Ok(found) => found,
        Err(e) => return errors.push(e),
    };
    let Some(found) = found else {
        if !nullable {
            errors.push(missing::<T>(base, segments));
        }
        return;
    };
    if let Err(error) = T::check(found) {
        return errors.push(FieldError {
            field: join_path(base, segments),
            error,
        });
    }
    if let Some((limit, key)) = max_length {
        // A text of at most `limit` bytes has at most `limit` characters: nothing to count.
        let len = found
            .as_str()
            .filter(|s| s.len() > limit)
            .map_or(0, |s| s.chars().count());
        if len > limit {
            errors.push(too_long(len, limit, base, key));
        }
    }
}

/// A non-nullable computed value that turned out null (`why`: e.g. every `coalesce` source
/// was null).
pub fn require<T>(
    value: Option<T>,
    base: &str,
    field: &str,
    why: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    if value.is_none() {
        errors.push(FieldError {
            field: join_path(base, &[field]),
            error: why.into(),
        });
    }
    value
}

/// Converts a `constant` literal as written in YAML: as the JSON it spells (numbers,
/// booleans), else as a JSON string. The build-time check of constants runs this too.
pub fn convert_literal<T: FromJson>(literal: &str) -> Result<T, String> {
    let as_string = || doc_from_value(&JsonValue::String(literal.to_string()));
    let doc = JsonDoc::parse(literal.as_bytes())
        .ok()
        .filter(|d| d.root().as_str().is_none())
        .unwrap_or_else(as_string);
    T::from_json(doc.root()).or_else(|_| T::from_json(as_string().root()))
}

/// A `constant` literal converted to the field's type.
pub fn constant<T: FromJson>(
    literal: &str,
    base: &str,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<T> {
    match convert_literal(literal) {
        Ok(x) => Some(x),
        Err(error) => {
            errors.push(FieldError {
                field: join_path(base, &[field]),
                error,
            });
            None
        }
    }
}

/// Text whose length `max_length` limits.
pub trait TextLen {
    /// The text (`None` has none).
    fn text(&self) -> &str;
    /// Length in characters.
    fn text_len(&self) -> usize {
        self.text().chars().count()
    }
}

impl TextLen for String {
    fn text(&self) -> &str {
        self
    }
}

impl TextLen for Option<String> {
    fn text(&self) -> &str {
        self.as_deref().unwrap_or("")
    }
}

/// Enforces `max_length` (VARCHAR(n)) at parse time, so the database never sees a too-long value.
pub fn max_len<V: TextLen>(
    value: V,
    limit: usize,
    base: &str,
    key: &str,
    errors: &mut Vec<FieldError>,
) -> Option<V> {
    // At most `limit` bytes is at most `limit` characters: only longer texts are counted.
    let len = if value.text().len() > limit {
        value.text_len()
    } else {
        0
    };
    if len > limit {
        errors.push(too_long(len, limit, base, key));
        None
    } else {
        Some(value)
    }
}

/// Bytes the values of one unique key may take together: a PostgreSQL B-tree entry holds at
/// most about 2 700 bytes (a third of an 8 KiB page); this leaves room for the entry's header.
pub const MAX_INDEX_KEY_BYTES: usize = 2600;

/// `Some(value)` if its text is at most `limit` bytes (what a unique key's index can hold,
/// see [`MAX_INDEX_KEY_BYTES`]); else an error is recorded.
#[doc(hidden)]
pub fn max_key_bytes<V: TextLen>(
    value: V,
    limit: usize,
    base: &str,
    key: &str,
    errors: &mut Vec<FieldError>,
) -> Option<V> {
    let len = value.text().len();
    if len > limit {
        errors.push(key_too_long(len, limit, base, key));
        None
    } else {
        Some(value)
    }
}

/// The validate-only twin of [`max_key_bytes`]: the member at `segments`, if it is text.
#[doc(hidden)]
pub fn check_key_bytes(
    v: JsonRef<'_>,
    base: &str,
    segments: &[&str],
    limit: usize,
    errors: &mut Vec<FieldError>,
) {
    if let Ok(Some(found)) = lookup(v, base, segments)
        && let Some(text) = found.as_str()
        && text.len() > limit
    {
        errors.push(key_too_long(text.len(), limit, base, &segments.join(".")));
    }
}

fn key_too_long(len: usize, limit: usize, base: &str, key: &str) -> FieldError {
    FieldError {
        field: join_path(base, &[key]),
        error: format!(
            "is {len} bytes; a unique key's values may take at most {limit} (PostgreSQL's index entry limit)"
        ),
    }
}

/// The name of a table's unique constraint: `<table>_unicity`, or, where that would pass
/// PostgreSQL's 63-byte identifiers (which it would cut silently), the table name cut and a hash
/// of the whole of it, the same at create and at schema evolution.
pub fn unicity_constraint_name(table: &str) -> String {
    derived_identifier(table, "_unicity")
}

/// The name of the index on a table's [`crate::MESSAGE_ID_COLUMN`] (within PostgreSQL's 63
/// bytes, like [`unicity_constraint_name`]).
pub fn message_index_name(table: &str) -> String {
    derived_identifier(table, "_message_idx")
}

/// `table` + `suffix`, cut and told apart by a hash when it would pass 63 bytes.
fn derived_identifier(table: &str, suffix: &str) -> String {
    const MAX_IDENTIFIER: usize = 63;
    if table.len() + suffix.len() <= MAX_IDENTIFIER {
        return format!("{table}{suffix}");
    }
    // FNV-1a: fixed, so every build and every worker names it the same.
    let hash = table.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut cut = MAX_IDENTIFIER - suffix.len() - 9;
    while !table.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{:08x}{suffix}", &table[..cut], hash as u32)
}

/// Entity names match ignoring case, `_` and `-` (`order_line_item` = `OrderLineItem`).
pub fn same_entity_name(canonical: &str, given: &str) -> bool {
    // Compared as it is read: every request names its entity, so nothing is allocated.
    fn norm(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes()
            .filter(|b| *b != b'_' && *b != b'-')
            .map(|b| b.to_ascii_lowercase())
    }
    norm(canonical).eq(norm(given))
}

/// Parses JSON that nomnom-codegen wrote with `serde_json` — a JSON Schema or an example body —
/// (so it is valid JSON; the fixture crate's tests parse every generated one).
pub fn json_schema_value(text: &str) -> JsonValue {
    serde_json::from_str(text).expect("nomnom-codegen writes its JSON with serde_json")
}

/// Keeps one row per key — with `keep_latest`, the one with the highest `(version, position)`
/// (ties: the later row); otherwise the one of the earliest position — so one upsert statement
/// never touches the same row twice ("ON CONFLICT DO UPDATE command cannot affect row a second
/// time"). `version` is the entity's `order_by` field, or `()`. The rows come out in one order
/// of their keys that every worker shares (a hash with a fixed seed), so concurrent batches
/// take the keys' locks in the same order and do not deadlock.
pub fn dedup_latest<'a, T, K: Hash + Eq, V: Ord>(
    rows: Vec<(&'a T, Origin)>,
    keep_latest: bool,
    key: impl Fn(&'a T) -> K,
    version: impl Fn(&'a T) -> V,
) -> Vec<(&'a T, Origin)> {
    // foldhash: randomly seeded like std's SipHash, several times faster on short keys.
    let mut index: HashMap<K, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    let mut out: Vec<(&'a T, Origin)> = Vec::with_capacity(rows.len());
    for (row, origin) in rows {
        match index.entry(key(row)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let kept = &mut out[*e.get()];
                let replace = if keep_latest {
                    (version(row), origin.position) >= (version(kept.0), kept.1.position)
                } else {
                    origin.position < kept.1.position
                };
                if replace {
                    *kept = (row, origin);
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push((row, origin));
            }
        }
    }
    const KEY_ORDER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x6e6f6d);
    out.sort_by_cached_key(|(row, _)| std::hash::BuildHasher::hash_one(&KEY_ORDER, key(row)));
    out
}

/// Adds an error for every row of `rows` whose unique key (`key`, the fields `names`) repeats an
/// earlier row's, naming both by their paths (`paths[i]` is the path of `rows[i]`): the table
/// holds one row per key, so the message would count rows it cannot write.
#[doc(hidden)]
pub fn refuse_repeated_keys<'a, T, K: Hash + Eq>(
    rows: &'a [T],
    paths: &[String],
    key: impl Fn(&'a T) -> K,
    names: &str,
    errors: &mut Vec<FieldError>,
) {
    let repeated = |i: usize, earlier: usize, errors: &mut Vec<FieldError>| {
        let path = |i: usize| paths.get(i).map_or("", String::as_str);
        errors.push(FieldError {
            field: path(i).to_string(),
            error: format!(
                "repeats the unique key ({names}) of {}; each row needs its own",
                path(earlier)
            ),
        });
    };
    // A message's few rows are compared pairwise: no table to build for each message.
    if rows.len() <= 16 {
        for (i, row) in rows.iter().enumerate() {
            let k = key(row);
            if let Some(earlier) = rows[..i].iter().position(|r| key(r) == k) {
                repeated(i, earlier, errors);
            }
        }
        return;
    }
    let mut first: HashMap<K, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(rows.len(), Default::default());
    for (i, row) in rows.iter().enumerate() {
        if let Some(&earlier) = first.get(&key(row)) {
            repeated(i, earlier, errors);
        } else {
            first.insert(key(row), i);
        }
    }
}

/// The typed value at `segments` of an element, for comparing keys without building rows
/// (`None` when it is missing or does not convert: its error is reported by the field's check).
#[doc(hidden)]
pub fn key_part<T: FromJson>(v: JsonRef<'_>, segments: &[&str]) -> Option<T> {
    match lookup(v, "", segments) {
        Ok(Some(found)) => T::from_json(found).ok(),
        _ => None,
    }
}

/// Rows per upsert statement (each column is one array parameter, so this only bounds the
/// statement's memory, not the number of bind parameters).
pub const UPSERT_CHUNK_ROWS: usize = 10_000;

/// A `text[]` literal (`{"a","b \"c\""}`) for binding a `List[String]` value inside `unnest`,
/// which cannot take a two-dimensional array.
pub fn pg_text_array(items: &[String]) -> String {
    let mut out = String::with_capacity(2 + items.iter().map(|s| s.len() + 3).sum::<usize>());
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}
