//! [`JsonDoc`]: a message body parsed once into a flat list of nodes that borrows its strings
//! and keys from the body. The generated parsers read fields through [`JsonRef`]; compared with
//! a `serde_json::Value` tree there is one allocation per document instead of one per key,
//! string, number and object, which is most of what parsing a message used to cost.
//!
//! serde_json does the parsing (its grammar, UTF-8 checks, escapes, recursion limit and error
//! positions); this module only records what its deserializer visits. Numbers keep their text
//! (the crate builds serde_json with `arbitrary_precision`), so no digit is lost.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{JsonValue, ParseError};

/// serde_json's `arbitrary_precision` hands a number that does not fit `u64`/`i64` to a
/// visitor as a one-member map with this key and the number's text as an owned string.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// One node of a document, in document order. A container is followed by its members
/// (objects: key, value, key, value…) and records the index just past its last descendant.
#[derive(Debug, Clone, PartialEq)]
enum Node<'a> {
    Null,
    Bool(bool),
    PosInt(u64),
    NegInt(i64),
    /// Any other number, as serde_json scanned it (`1.5`, `1e+5`, `123456789012345678901`).
    Number(Cow<'a, str>),
    Str(Cow<'a, str>),
    Key(Cow<'a, str>),
    Array {
        len: u32,
        end: u32,
    },
    Object {
        len: u32,
        end: u32,
    },
}

/// A parsed JSON document borrowing from the bytes it was parsed from. Member names are
/// unique within each object (a repeated name is refused at parse time: which value was meant
/// is ambiguous, and RFC 8259 leaves it to each reader).
#[derive(Debug, Clone, PartialEq)]
pub struct JsonDoc<'a> {
    nodes: Vec<Node<'a>>,
    /// Where the last member lookup ended: (object index, next member index). Generated
    /// parsers read fields in schema order and bodies usually list them in that order, so a
    /// lookup that starts here finds its member at the first comparison.
    hint: Cell<(usize, usize)>,
}

impl<'a> JsonDoc<'a> {
    /// Parses JSON bytes (one value, optional surrounding whitespace).
    ///
    /// A [`Scanner`] of its own reads well-formed documents in one pass; whatever it does not
    /// accept (a syntax error, a repeated name, deep nesting, invalid UTF-8) is read again by
    /// serde_json, whose verdict and error position are the answer. The two build the same
    /// nodes wherever the scanner succeeds (tested on every kind of value and on mutated
    /// documents).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        match Scanner::document(bytes) {
            Some(doc) => Ok(doc),
            None => Self::parse_with_serde_json(bytes),
        }
    }

    /// The reference parse: serde_json's deserializer, recorded by a visitor.
    fn parse_with_serde_json(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let mut nodes = Vec::with_capacity(node_capacity(bytes));
        let mut de = serde_json::Deserializer::from_slice(bytes);
        Tape(&mut nodes)
            .deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| ParseError::InvalidJson {
                message: e.to_string(),
                line: e.line(),
                column: e.column(),
            })?;
        Ok(Self::new(nodes))
    }

    fn new(nodes: Vec<Node<'a>>) -> Self {
        Self {
            nodes,
            hint: Cell::new((usize::MAX, 0)),
        }
    }

    /// The top-level value.
    pub fn root(&self) -> JsonRef<'_> {
        JsonRef {
            nodes: &self.nodes,
            hint: &self.hint,
            at: 0,
        }
    }
}

/// Room for as many nodes as the document can hold (one per two bytes, as in `[0,0,0]`, plus a
/// few), so the node list is never regrown: a regrowth copies it and briefly needs one and a
/// half times its size, the peak a hostile body full of tiny values would reach. The room is
/// reserved, not touched: pages never written cost no memory.
fn node_capacity(bytes: &[u8]) -> usize {
    bytes.len() / 2 + 4
}

/// Index of the first byte at or after `from` that ends a run of plain string characters: `"`,
/// `\\` or a control character (or `bytes.len()`). Eight bytes at a time: strings are most of a
/// message's bytes.
fn plain_run_end(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        // `below(w, n)` sets the high bit of each byte of `w` below `n` (a borrow may also flag
        // bytes after the first such byte, never one before it): a zero byte after the xor is
        // a `"` or `\\`.
        let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGH;
        let found = below(word ^ (ONES * u64::from(b'"')), 1)
            | below(word ^ (ONES * u64::from(b'\\')), 1)
            | below(word, 0x20);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// Nesting the scanner reads itself; deeper documents go to serde_json, which refuses the
/// 128th level.
const SCANNER_MAX_DEPTH: u32 = 100;

/// One pass over a well-formed JSON document, building the nodes serde_json's visit would.
/// It never reports an error: it gives up (`None`) and [`JsonDoc::parse`] asks serde_json.
struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    depth: u32,
    nodes: Vec<Node<'a>>,
}

impl<'a> Scanner<'a> {
    /// The document, if it is well-formed JSON this scanner reads.
    fn document(bytes: &'a [u8]) -> Option<JsonDoc<'a>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut scanner = Scanner {
            bytes,
            text,
            pos: 0,
            depth: 0,
            nodes: Vec::with_capacity(node_capacity(bytes)),
        };
        scanner.skip_whitespace();
        scanner.value()?;
        scanner.skip_whitespace();
        (scanner.pos == bytes.len()).then(|| JsonDoc::new(scanner.nodes))
    }

    /// Adds a node. When the first guess of the count is exceeded, the list grows once to what
    /// the bytes read so far predict for the whole document (at least half again), rather than
    /// doubling: a body of many small values would otherwise hold the old and the doubled
    /// list at once, about 30 bytes of memory per byte of JSON.
    fn push(&mut self, node: Node<'a>) {
        if self.nodes.len() == self.nodes.capacity() {
            let len = self.nodes.len();
            let predicted = len * self.bytes.len() / self.pos.max(1) + 16;
            self.nodes
                .reserve_exact((predicted - len.min(predicted)).max(len / 2));
        }
        self.nodes.push(node);
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => {
                let s = self.string()?;
                self.push(Node::Str(s));
                Some(())
            }
            b'n' => self.literal(b"null", Node::Null),
            b't' => self.literal(b"true", Node::Bool(true)),
            b'f' => self.literal(b"false", Node::Bool(false)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], node: Node<'a>) -> Option<()> {
        self.bytes[self.pos..].starts_with(word).then(|| {
            self.pos += word.len();
            self.push(node);
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number as serde_json's `arbitrary_precision` reads it: `u64`, then (negative, not
    /// `-0`) `i64`, else its text with the exponent written `e`, signed (`1E5` → `1e+5`).
    fn number(&mut self) -> Option<()> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        self.pos += usize::from(negative);
        match self.peek()? {
            b'0' => self.pos += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        let mantissa_end = self.pos;
        let mut exponent = None;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            let sign = match self.peek() {
                Some(c @ (b'+' | b'-')) => {
                    self.pos += 1;
                    c
                }
                _ => b'+',
            };
            let digits_start = self.pos;
            if self.digits() == 0 {
                return None;
            }
            exponent = Some((sign, &self.text[digits_start..self.pos]));
        }
        let text = &self.text[start..mantissa_end];
        let node = match exponent {
            Some((sign, digits)) => {
                let mut t = String::with_capacity(text.len() + 2 + digits.len());
                t.push_str(text);
                t.push('e');
                t.push(char::from(sign));
                t.push_str(digits);
                Node::Number(Cow::Owned(t))
            }
            None if !negative => match text.parse::<u64>() {
                Ok(u) => Node::PosInt(u),
                Err(_) => Node::Number(Cow::Borrowed(text)),
            },
            None => match text.parse::<i64>() {
                Ok(i) if text != "-0" => Node::NegInt(i),
                _ => Node::Number(Cow::Borrowed(text)),
            },
        };
        self.push(node);
        Some(())
    }

    /// A string at `"`: borrowed when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        let start = self.pos + 1;
        let mut i = start;
        loop {
            i = plain_run_end(self.bytes, i);
            match *self.bytes.get(i)? {
                b'"' => {
                    self.pos = i + 1;
                    return Some(Cow::Borrowed(&self.text[start..i]));
                }
                b'\\' => break,
                0..=0x1f => return None,
                _ => i += 1,
            }
        }
        let mut out = String::with_capacity(i - start + 8);
        out.push_str(&self.text[start..i]);
        loop {
            match *self.bytes.get(i)? {
                b'"' => {
                    self.pos = i + 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    let escape = *self.bytes.get(i + 1)?;
                    i += 2;
                    out.push(match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let (c, used) = self.unicode_escape(i)?;
                            i += used;
                            c
                        }
                        _ => return None,
                    });
                }
                0..=0x1f => return None,
                _ => {
                    let run = i;
                    i = plain_run_end(self.bytes, i);
                    out.push_str(&self.text[run..i]);
                }
            }
        }
    }

    /// The character of `\uXXXX` (its hex digits start at `at`), joining a surrogate pair;
    /// with the number of bytes read. A lone surrogate is left to serde_json (an error).
    fn unicode_escape(&self, at: usize) -> Option<(char, usize)> {
        let hex = |at: usize| -> Option<u32> {
            let digits = self.bytes.get(at..at + 4)?;
            digits
                .iter()
                .try_fold(0u32, |n, &d| Some(n * 16 + char::from(d).to_digit(16)?))
        };
        let first = hex(at)?;
        match first {
            0xD800..=0xDBFF => {
                if self.bytes.get(at + 4..at + 6)? != b"\\u" {
                    return None;
                }
                let second = hex(at + 6)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                let c = 0x1_0000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                Some((char::from_u32(c)?, 10))
            }
            0xDC00..=0xDFFF => None,
            _ => Some((char::from_u32(first)?, 4)),
        }
    }

    /// Opens a container at its `[` or `{`: whether it is empty (closed by `close` at once).
    fn open(&mut self, close: u8) -> Option<bool> {
        self.depth += 1;
        if self.depth > SCANNER_MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.skip_whitespace();
        let empty = self.peek()? == close;
        self.pos += usize::from(empty);
        Some(empty)
    }

    /// After a member: `,` (`Some(false)`, more follow) or `close` (`Some(true)`).
    fn separator(&mut self, close: u8) -> Option<bool> {
        self.skip_whitespace();
        match self.peek()? {
            b',' => {
                self.pos += 1;
                self.skip_whitespace();
                Some(false)
            }
            c if c == close => {
                self.pos += 1;
                Some(true)
            }
            _ => None,
        }
    }

    fn array(&mut self) -> Option<()> {
        let at = self.nodes.len();
        self.push(Node::Null);
        let mut len = 0usize;
        if !self.open(b']')? {
            loop {
                self.value()?;
                len += 1;
                if self.separator(b']')? {
                    break;
                }
            }
        }
        self.nodes[at] = Node::Array {
            len: count(len),
            end: count(self.nodes.len()),
        };
        self.depth -= 1;
        Some(())
    }

    fn object(&mut self) -> Option<()> {
        let at = self.nodes.len();
        self.push(Node::Null);
        let mut len = 0usize;
        let mut names = MemberNames::default();
        if !self.open(b'}')? {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                // serde_json reads this name as a number in disguise; leave it to serde_json.
                if key == NUMBER_TOKEN {
                    return None;
                }
                if len == 0 {
                    names.first(&key);
                } else if names.repeated(&self.nodes, at, &key) {
                    return None;
                }
                self.push(Node::Key(key));
                self.skip_whitespace();
                if self.peek()? != b':' {
                    return None;
                }
                self.pos += 1;
                self.skip_whitespace();
                self.value()?;
                len += 1;
                if self.separator(b'}')? {
                    break;
                }
            }
        }
        self.nodes[at] = Node::Object {
            len: count(len),
            end: count(self.nodes.len()),
        };
        self.depth -= 1;
        Some(())
    }
}

/// A document of one JSON value converted from a `serde_json::Value` (for callers that hold
/// one; the message path parses bytes).
pub fn doc_from_value(value: &JsonValue) -> JsonDoc<'static> {
    fn push(nodes: &mut Vec<Node<'static>>, v: &JsonValue) {
        match v {
            JsonValue::Null => nodes.push(Node::Null),
            JsonValue::Bool(b) => nodes.push(Node::Bool(*b)),
            JsonValue::Number(n) => nodes.push(number_node(n.to_string())),
            JsonValue::String(s) => nodes.push(Node::Str(Cow::Owned(s.clone()))),
            JsonValue::Array(items) => {
                let at = nodes.len();
                nodes.push(Node::Null);
                for item in items {
                    push(nodes, item);
                }
                nodes[at] = Node::Array {
                    len: count(items.len()),
                    end: count(nodes.len()),
                };
            }
            JsonValue::Object(map) => {
                let at = nodes.len();
                nodes.push(Node::Null);
                for (k, item) in map {
                    nodes.push(Node::Key(Cow::Owned(k.clone())));
                    push(nodes, item);
                }
                nodes[at] = Node::Object {
                    len: count(map.len()),
                    end: count(nodes.len()),
                };
            }
        }
    }
    let mut nodes = Vec::new();
    push(&mut nodes, value);
    JsonDoc::new(nodes)
}

/// Node counts fit `u32`: a body would need more than 4 GiB to overflow it, far beyond any
/// request limit; saturate rather than wrap if it ever did.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn number_node(text: String) -> Node<'static> {
    if let Ok(u) = text.parse::<u64>() {
        Node::PosInt(u)
    } else if let Ok(i) = text.parse::<i64>().map_err(drop).and_then(|i| {
        // serde_json keeps `-0` as text (it is not the integer 0 in every reader).
        if text == "-0" { Err(()) } else { Ok(i) }
    }) {
        Node::NegInt(i)
    } else {
        Node::Number(Cow::Owned(text))
    }
}

/// Whether `text` is a JSON number (RFC 8259 grammar).
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Appends the value serde_json visits to the node list.
struct Tape<'t, 'a>(&'t mut Vec<Node<'a>>);

impl<'de> DeserializeSeed<'de> for Tape<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tape<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push(Node::Null);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(Node::Bool(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(Node::PosInt(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(if v >= 0 {
            Node::PosInt(v.unsigned_abs())
        } else {
            Node::NegInt(v)
        });
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // Not reached with `arbitrary_precision` (numbers arrive as text); kept exact anyway.
        let n = serde_json::Number::from_f64(v)
            .ok_or_else(|| E::custom("a number that is not finite"))?;
        self.0.push(Node::Number(Cow::Owned(n.to_string())));
        Ok(())
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.0.push(Node::Str(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push(Node::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.0.push(Node::Str(Cow::Owned(v)));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.len();
        self.0.push(Node::Null);
        let mut len = 0usize;
        while seq.next_element_seed(Tape(self.0))?.is_some() {
            len += 1;
        }
        self.0[at] = Node::Array {
            len: count(len),
            end: count(self.0.len()),
        };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.len();
        let Some(first) = map.next_key_seed(KeySeed)? else {
            self.0.push(Node::Object {
                len: 0,
                end: count(at + 1),
            });
            return Ok(());
        };
        self.0.push(Node::Null);
        let mut len = 1usize;
        let mut names = MemberNames::default();
        names.first(&first);
        if first == NUMBER_TOKEN {
            // A number serde_json could not give as u64/i64 arrives as an owned string; an
            // object that merely has this key gives its value as a borrowed or copied one.
            self.0.push(Node::Key(first));
            if let Some(text) = map.next_value_seed(FirstValue(self.0))? {
                if !is_json_number(&text) || map.next_key_seed(KeySeed)?.is_some() {
                    return Err(de::Error::custom("invalid number"));
                }
                self.0.truncate(at);
                self.0.push(Node::Number(Cow::Owned(text)));
                return Ok(());
            }
        } else {
            self.0.push(Node::Key(first));
            map.next_value_seed(Tape(self.0))?;
        }
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if names.repeated(self.0, at, &key) {
                return Err(de::Error::custom(format_args!(
                    "the member name `{}` appears twice in one object",
                    key.chars().take(64).collect::<String>()
                )));
            }
            self.0.push(Node::Key(key));
            map.next_value_seed(Tape(self.0))?;
            len += 1;
        }
        self.0[at] = Node::Object {
            len: count(len),
            end: count(self.0.len()),
        };
        Ok(())
    }
}

/// Finds a repeated member name while an object is being read: small objects compare with
/// the names already on the tape, larger ones keep a set, so the check stays linear.
#[derive(Default)]
struct MemberNames {
    seen: Option<HashSet<String>>,
    count: usize,
    /// One bit per (length, first byte, last byte) class of the names so far: a new name whose
    /// bit is clear cannot be a repeat, so most names skip the comparison scan.
    classes: u64,
}

/// The bit of a name's class in [`MemberNames::classes`].
fn name_class(key: &str) -> u64 {
    let b = key.as_bytes();
    let mix = b
        .len()
        .wrapping_mul(31)
        .wrapping_add(usize::from(b.first().copied().unwrap_or(0)))
        .wrapping_mul(31)
        .wrapping_add(usize::from(b.last().copied().unwrap_or(0)));
    1u64 << (mix % 64)
}

/// Up to this many members, a new name is compared with each earlier one.
const SCAN_MEMBERS: usize = 16;

impl MemberNames {
    /// Notes the object's first member name (it has nothing to be compared with).
    fn first(&mut self, key: &str) {
        self.count = 1;
        self.classes = name_class(key);
    }

    /// Whether `key` was already a member of the object whose node is at `at`.
    fn repeated(&mut self, nodes: &[Node<'_>], at: usize, key: &str) -> bool {
        self.count += 1;
        if self.count <= SCAN_MEMBERS {
            let class = name_class(key);
            let maybe = self.classes & class != 0;
            self.classes |= class;
            if !maybe {
                return false;
            }
            let mut pos = at + 1;
            while pos < nodes.len() {
                let Node::Key(k) = &nodes[pos] else {
                    break;
                };
                if k == key {
                    return true;
                }
                pos = end_of(nodes, pos + 1);
            }
            return false;
        }
        let seen = self.seen.get_or_insert_with(|| {
            let mut set = HashSet::new();
            let mut pos = at + 1;
            while pos < nodes.len() {
                let Node::Key(k) = &nodes[pos] else {
                    break;
                };
                set.insert(k.to_string());
                pos = end_of(nodes, pos + 1);
            }
            set
        });
        !seen.insert(key.to_string())
    }
}

/// Index just past the value at `at` and everything inside it.
fn end_of(nodes: &[Node<'_>], at: usize) -> usize {
    match nodes.get(at) {
        Some(Node::Array { end, .. } | Node::Object { end, .. }) => *end as usize,
        _ => at + 1,
    }
}

/// An object key, borrowed when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The value after a [`NUMBER_TOKEN`] key: an owned string is serde_json's number text
/// (returned, nothing pushed); anything else is an ordinary member value (pushed).
struct FirstValue<'t, 'a>(&'t mut Vec<Node<'a>>);

impl<'de> DeserializeSeed<'de> for FirstValue<'_, 'de> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstValue<'_, 'de> {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Tape(self.0).visit_unit().map(|()| None)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Tape(self.0).visit_bool(v).map(|()| None)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Tape(self.0).visit_u64(v).map(|()| None)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Tape(self.0).visit_i64(v).map(|()| None)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Tape(self.0).visit_f64(v).map(|()| None)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Tape(self.0).visit_borrowed_str(v).map(|()| None)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Tape(self.0).visit_str(v).map(|()| None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Tape(self.0).visit_seq(seq).map(|()| None)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Tape(self.0).visit_map(map).map(|()| None)
    }
}

/// A JSON number with its digits as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JsonNumber<'d> {
    /// A non-negative integer that fits `u64`.
    PosInt(u64),
    /// A negative integer that fits `i64`.
    NegInt(i64),
    /// Anything else, as text (`1.5`, `1e+5`, `-0`, integers beyond 64 bits).
    Text(&'d str),
}

impl JsonNumber<'_> {
    /// The value as `i64`, when it is an integer in range.
    pub fn as_i64(self) -> Option<i64> {
        match self {
            JsonNumber::PosInt(u) => i64::try_from(u).ok(),
            JsonNumber::NegInt(i) => Some(i),
            JsonNumber::Text(_) => None,
        }
    }

    /// The value as `u64`, when it is a non-negative integer in range.
    pub fn as_u64(self) -> Option<u64> {
        match self {
            JsonNumber::PosInt(u) => Some(u),
            _ => None,
        }
    }

    /// The value as the nearest `f64` (infinite when out of range).
    pub fn as_f64(self) -> Option<f64> {
        match self {
            JsonNumber::PosInt(u) => Some(u as f64),
            JsonNumber::NegInt(i) => Some(i as f64),
            JsonNumber::Text(t) => t.parse().ok(),
        }
    }
}

impl fmt::Display for JsonNumber<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonNumber::PosInt(u) => write!(f, "{u}"),
            JsonNumber::NegInt(i) => write!(f, "{i}"),
            JsonNumber::Text(t) => f.write_str(t),
        }
    }
}

/// A value inside a [`JsonDoc`]; cheap to copy.
#[derive(Clone, Copy)]
pub struct JsonRef<'d> {
    nodes: &'d [Node<'d>],
    hint: &'d Cell<(usize, usize)>,
    at: usize,
}

impl fmt::Debug for JsonRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

impl<'d> JsonRef<'d> {
    fn node(self) -> &'d Node<'d> {
        &self.nodes[self.at]
    }

    /// Index just past this value and everything inside it.
    fn end(self) -> usize {
        end_of(self.nodes, self.at)
    }

    fn at(self, at: usize) -> Self {
        JsonRef { at, ..self }
    }

    /// The value's kind for messages: `null`, `a boolean`, `a number`, `a string`, `an
    /// array`, `an object`.
    pub fn kind(self) -> &'static str {
        match self.node() {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::PosInt(_) | Node::NegInt(_) | Node::Number(_) => "a number",
            Node::Str(_) | Node::Key(_) => "a string",
            Node::Array { .. } => "an array",
            Node::Object { .. } => "an object",
        }
    }

    /// Whether it is `null`.
    pub fn is_null(self) -> bool {
        matches!(self.node(), Node::Null)
    }

    /// Whether it is an object.
    pub fn is_object(self) -> bool {
        matches!(self.node(), Node::Object { .. })
    }

    /// The string, if it is one.
    pub fn as_str(self) -> Option<&'d str> {
        match self.node() {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean, if it is one.
    pub fn as_bool(self) -> Option<bool> {
        match self.node() {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The number, if it is one.
    pub fn as_number(self) -> Option<JsonNumber<'d>> {
        match self.node() {
            Node::PosInt(u) => Some(JsonNumber::PosInt(*u)),
            Node::NegInt(i) => Some(JsonNumber::NegInt(*i)),
            Node::Number(t) => Some(JsonNumber::Text(t)),
            _ => None,
        }
    }

    /// The members of an object, in document order.
    pub fn members(self) -> Option<Members<'d>> {
        match self.node() {
            Node::Object { end, .. } => Some(Members {
                doc: self,
                next: self.at + 1,
                end: *end as usize,
            }),
            _ => None,
        }
    }

    /// The elements of an array, in order.
    pub fn elements(self) -> Option<Elements<'d>> {
        match self.node() {
            Node::Array { len, end } => Some(Elements {
                doc: Some(self),
                next: self.at + 1,
                end: *end as usize,
                left: *len as usize,
            }),
            _ => None,
        }
    }

    /// The member `key` of an object; `None` for a missing member or a non-object. Names are
    /// unique (see [`JsonDoc`]), so the search may start where the last lookup in this object
    /// ended and wrap around.
    pub fn get(self, key: &str) -> Option<JsonRef<'d>> {
        let Node::Object { end, .. } = self.node() else {
            return None;
        };
        let (first, end) = (self.at + 1, *end as usize);
        let (object, next) = self.hint.get();
        let start = if object == self.at && (first..end).contains(&next) {
            next
        } else {
            first
        };
        let find = |from: usize, to: usize| {
            let mut pos = from;
            while pos < to {
                let value = pos + 1;
                let after = end_of(self.nodes, value);
                if matches!(&self.nodes[pos], Node::Key(k) if k == key) {
                    self.hint.set((self.at, after));
                    return Some(self.at(value));
                }
                pos = after;
            }
            None
        };
        find(start, end).or_else(|| find(first, start))
    }

    /// A `serde_json::Value` copy (for `Json` fields and debugging).
    pub fn to_value(self) -> JsonValue {
        match self.node() {
            Node::Null => JsonValue::Null,
            Node::Bool(b) => JsonValue::Bool(*b),
            Node::PosInt(u) => JsonValue::from(*u),
            Node::NegInt(i) => JsonValue::from(*i),
            Node::Number(t) => t
                .parse::<serde_json::Number>()
                .map(JsonValue::Number)
                .unwrap_or(JsonValue::Null),
            Node::Str(s) | Node::Key(s) => JsonValue::String(s.to_string()),
            Node::Array { .. } => JsonValue::Array(
                self.elements()
                    .into_iter()
                    .flatten()
                    .map(Self::to_value)
                    .collect(),
            ),
            Node::Object { .. } => JsonValue::Object(
                self.members()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// The members of an object: `(key, value)`.
#[derive(Clone)]
pub struct Members<'d> {
    doc: JsonRef<'d>,
    next: usize,
    end: usize,
}

impl<'d> Iterator for Members<'d> {
    type Item = (&'d str, JsonRef<'d>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let Node::Key(key) = &self.doc.nodes[self.next] else {
            self.next = self.end;
            return None;
        };
        let value = self.doc.at(self.next + 1);
        self.next = value.end();
        Some((key, value))
    }
}

/// The elements of an array.
#[derive(Clone)]
pub struct Elements<'d> {
    doc: Option<JsonRef<'d>>,
    next: usize,
    end: usize,
    left: usize,
}

impl<'d> Elements<'d> {
    /// No elements (a missing list).
    pub fn empty() -> Self {
        Elements {
            doc: None,
            next: 0,
            end: 0,
            left: 0,
        }
    }
}

impl<'d> Iterator for Elements<'d> {
    type Item = JsonRef<'d>;
    fn next(&mut self) -> Option<Self::Item> {
        let doc = self.doc?;
        if self.next >= self.end {
            return None;
        }
        let value = doc.at(self.next);
        self.next = value.end();
        self.left = self.left.saturating_sub(1);
        Some(value)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Elements<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_runs_end_where_a_byte_at_a_time_scan_ends_them() {
        let naive = |bytes: &[u8], from: usize| {
            (from..bytes.len())
                .find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(bytes.len())
        };
        // Every byte that matters next to the ones that borrow or look alike, at every offset
        // of an 8-byte word and after runs of every length.
        let specials = [
            b'"', b'\\', 0x00, 0x1f, 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xa2, 0xdc, 0xff,
        ];
        for &special in &specials {
            for &other in &specials {
                for len in 0..24 {
                    for at in 0..len {
                        let mut bytes = vec![b'a'; len];
                        bytes[at] = special;
                        if at + 1 < len {
                            bytes[at + 1] = other;
                        }
                        for from in 0..=len {
                            assert_eq!(
                                plain_run_end(&bytes, from),
                                naive(&bytes, from),
                                "{bytes:?} from {from}"
                            );
                        }
                    }
                }
            }
        }
    }

    fn roundtrip(text: &str) -> JsonValue {
        JsonDoc::parse(text.as_bytes())
            .expect("valid")
            .root()
            .to_value()
    }

    #[test]
    fn documents_read_back_as_serde_json_reads_them() {
        for text in [
            "null",
            "true",
            "[]",
            "{}",
            r#"{"a":1,"b":[1,-2,3.50,{"c":"d\n\u00e9"}],"e":{},"f":[],"g":null}"#,
            "123456789012345678901234567890.123456789",
            "-0",
            "1e5",
            "-9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            r#"[[[[]]],{"x":[{"y":{}}]},"z"]"#,
            r#"{"$serde_json::private::Number":"12"}"#,
            r#"{"$serde_json::private::Number":12,"other":true}"#,
            r#"{"$serde_json::private::Number":"1.5x"}"#,
        ] {
            let expected: JsonValue = serde_json::from_str(text).unwrap_or(JsonValue::Null);
            match JsonDoc::parse(text.as_bytes()) {
                Ok(doc) => {
                    let got = doc.root().to_value();
                    if text.contains("private::Number") {
                        // serde_json's Value reads these as a number or refuses them (its own
                        // quirk); the document reads them as the objects they are.
                        assert!(got.is_object(), "{text}: {got}");
                    } else {
                        assert_eq!(got, expected, "{text}");
                    }
                }
                Err(e) => panic!("{text}: {e}"),
            }
        }
        assert_eq!(roundtrip(r#"{"k":[{"k":1}]}"#)["k"][0]["k"], json!(1));
    }

    /// The scanner either gives up or builds exactly serde_json's document; `fast` says it
    /// must not give up.
    fn scanner_agrees(bytes: &[u8], fast: bool) -> bool {
        let reference = JsonDoc::parse_with_serde_json(bytes);
        match Scanner::document(bytes) {
            Some(doc) => {
                assert_eq!(
                    Ok(&doc),
                    reference.as_ref(),
                    "{}",
                    String::from_utf8_lossy(bytes)
                );
                true
            }
            None => {
                assert!(
                    !fast,
                    "scanner gave up on {}",
                    String::from_utf8_lossy(bytes)
                );
                false
            }
        }
    }

    #[test]
    fn the_scanner_builds_serde_json_documents() {
        for text in [
            "null",
            "true",
            "false",
            " \t\r\n[ ] ",
            "{}",
            "0",
            "-0",
            "-0.0",
            "1.5",
            "1E5",
            "1e-5",
            "-2.5E+10",
            "0e0",
            "-9223372036854775808",
            "-9223372036854775809",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "123456789012345678901234567890.123456789",
            r#""plain""#,
            r#""esc \" \\ \/ \b \f \n \r \t end""#,
            r#""\u00e9\u0000\uFFFF\ud83d\ude00 mixed \u20AC""#,
            "\"caf\u{e9} \u{1f600}\"",
            r#"{"a":1,"b":[1,-2,3.50,{"c":"d\n\u00e9"}],"e":{},"f":[],"g":null}"#,
            r#"{ "k" : [ 1 , { "x" : "y" } ] , "\u006b2" : true }"#,
            r#"{"order_key":"W1-0000000001","line_items":[{"line_number":1,"quantity":41.0}]}"#,
        ] {
            scanner_agrees(text.as_bytes(), true);
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        scanner_agrees(deep.as_bytes(), true);
        // Given up on, so serde_json decides: errors, repeats, its number token, deep nesting.
        for text in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "01",
            "-01",
            "1.",
            "1.e5",
            "1e",
            "-",
            "+1",
            ".5",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\ud800\\u0041\"",
            "\"\\udc00\"",
            "\"tab\there\"",
            "[1] x",
            "nul",
            "nulls",
            "[true false]",
            "{1:2}",
            "\u{feff}{}",
            r#"{"a":1,"a":2}"#,
            r#"{"$serde_json::private::Number":"12"}"#,
        ] {
            assert!(!scanner_agrees(text.as_bytes(), false), "{text}");
        }
        assert!(!scanner_agrees(b"\"\xff\"", false));
        let deeper = "[".repeat(101) + &"]".repeat(101);
        assert!(!scanner_agrees(deeper.as_bytes(), false));
    }

    #[test]
    fn the_scanner_agrees_with_serde_json_on_mutated_documents() {
        let base = br#"{"order_key":"W1-0000000001","customer_key":"C-000010485","total_price":398465.75,"order_date":"1994-12-12","ship_priority":0,"comment":"caf\u00e9 \"q\" \ud83d\ude00","line_items":[{"line_number":1,"quantity":41.0,"discount":-0.06,"tax":2E-2,"big":18446744073709551616,"neg":-9223372036854775808,"commit_date":null,"ok":true},{"line_number":2,"nested":[[],{},[{"a":[1,2,{"b":false}]}]]}]}"#;
        let interesting = b"\"\\{}[],:0123456789-+.eE ntfu\x01\x7f\xc3\xa9";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let (mut accepted, mut refused, mut scanned) = (0, 0, 0);
        for _ in 0..20_000 {
            let mut doc = base.to_vec();
            for _ in 0..1 + next(3) {
                let at = next(doc.len());
                match next(4) {
                    0 => doc[at] = interesting[next(interesting.len())],
                    1 => {
                        doc.remove(at);
                    }
                    2 => doc.insert(at, interesting[next(interesting.len())]),
                    _ => {
                        let end = (at + next(12)).min(doc.len());
                        let piece = doc[at..end].to_vec();
                        doc.splice(at..at, piece);
                    }
                }
            }
            if JsonDoc::parse_with_serde_json(&doc).is_ok() {
                accepted += 1;
                // Valid mutants are read by the scanner unless they hit a case it leaves.
                scanned += usize::from(scanner_agrees(&doc, false));
            } else {
                refused += 1;
                assert!(!scanner_agrees(&doc, false));
            }
        }
        assert!(accepted > 1_000 && refused > 1_000, "{accepted} {refused}");
        // It leaves only repeated names and deep nesting: nearly every valid mutant is its own.
        assert!(scanned * 100 >= accepted * 95, "{scanned} of {accepted}");
    }

    #[test]
    fn repeated_member_names_are_refused_in_small_and_large_objects() {
        let err = JsonDoc::parse(br#"{"a":1,"b":{"a":2},"a":3}"#).expect_err("repeated");
        assert!(err.to_string().contains("`a` appears twice"), "{err}");
        assert!(
            JsonDoc::parse(br#"{"b":1,"a":2,"b":3}"#).is_err(),
            "first name repeated"
        );
        // Every position of the repeat, in objects below and above the scan limit.
        for members in [3usize, 16, 17, 40] {
            for repeat in 0..members {
                let mut names: Vec<String> =
                    (0..members).map(|i| format!("\"n{i}\":{i}")).collect();
                names.push(format!("\"n{repeat}\":0"));
                let text = format!("{{{}}}", names.join(","));
                assert!(JsonDoc::parse(text.as_bytes()).is_err(), "{text}");
            }
        }
        let large: Vec<String> = (0..100).map(|i| format!("\"k{i}\":{i}")).collect();
        let ok = format!("{{{}}}", large.join(","));
        assert!(JsonDoc::parse(ok.as_bytes()).is_ok());
        let repeated = format!("{{{},\"k7\":0}}", large.join(","));
        assert!(JsonDoc::parse(repeated.as_bytes()).is_err());
        // The same name in sibling objects is fine.
        assert!(JsonDoc::parse(br#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn lookups_find_members_in_any_order() {
        let doc =
            JsonDoc::parse(br#"{"a":1,"b":{"x":1,"y":2},"c":3,"d":[{"e":1,"f":2}]}"#).unwrap();
        let root = doc.root();
        for key in ["a", "b", "c", "d", "c", "a", "d", "b", "zz", "a"] {
            let found = root.get(key).map(|v| v.to_value());
            let expected = root.to_value().get(key).cloned();
            assert_eq!(found, expected, "{key}");
            // A lookup in a nested object between them does not mislead the next one.
            assert_eq!(
                root.get("b").and_then(|b| b.get("y")).map(|v| v.to_value()),
                Some(json!(2))
            );
        }
        let item = root
            .get("d")
            .and_then(|d| d.elements())
            .and_then(|mut e| e.next())
            .unwrap();
        assert_eq!(item.get("f").map(|v| v.to_value()), Some(json!(2)));
        assert_eq!(item.get("e").map(|v| v.to_value()), Some(json!(1)));
    }

    #[test]
    fn invalid_json_is_reported_where_serde_json_reports_it() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            "\"\\x\"",
            "[1] x",
            "nul",
        ] {
            let mine = JsonDoc::parse(text.as_bytes()).expect_err(text);
            let theirs = serde_json::from_str::<JsonValue>(text).expect_err(text);
            assert_eq!(
                mine,
                ParseError::InvalidJson {
                    message: theirs.to_string(),
                    line: theirs.line(),
                    column: theirs.column(),
                },
                "{text}"
            );
        }
        let deep = "[".repeat(1000) + &"]".repeat(1000);
        assert!(
            JsonDoc::parse(deep.as_bytes()).is_err(),
            "recursion is limited"
        );
    }

    #[test]
    fn members_elements_and_lookups() {
        let doc = JsonDoc::parse(br#"{"a":{"b":[1,{"c":2},3]},"s":"x","n":null}"#).unwrap();
        let root = doc.root();
        assert!(root.is_object());
        let list = root.get("a").and_then(|a| a.get("b")).unwrap();
        let items: Vec<String> = list
            .elements()
            .unwrap()
            .map(|v| v.to_value().to_string())
            .collect();
        assert_eq!(items, ["1", r#"{"c":2}"#, "3"]);
        assert_eq!(list.elements().unwrap().len(), 3);
        assert_eq!(root.get("s").and_then(JsonRef::as_str), Some("x"));
        assert!(root.get("n").unwrap().is_null());
        assert!(root.get("missing").is_none());
        let keys: Vec<&str> = root.members().unwrap().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "s", "n"]);
        assert_eq!(root.kind(), "an object");
        let doc = JsonDoc::parse(b"[12, -3, 1.50, 1e2]").unwrap();
        let numbers: Vec<String> = doc
            .root()
            .elements()
            .unwrap()
            .map(|v| v.as_number().unwrap().to_string())
            .collect();
        assert_eq!(numbers, ["12", "-3", "1.50", "1e+2"]);
    }

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let body = br#"{"plain":"abc","escaped":"a\"b"}"#;
        let doc = JsonDoc::parse(body).unwrap();
        assert!(matches!(doc.nodes[2], Node::Str(Cow::Borrowed("abc"))));
        assert!(matches!(&doc.nodes[4], Node::Str(Cow::Owned(s)) if s == "a\"b"));
    }

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "12", "1.5", "1e5", "1E-5", "-1.25e+10"] {
            assert!(is_json_number(ok), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "+1", "1x", "NaN"] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn values_convert_both_ways() {
        let v = json!({"a": [1, "two", null, {"b": 1.5}], "c": true});
        assert_eq!(doc_from_value(&v).root().to_value(), v);
    }
}
