//! Names: case conversion, the Rust keywords a name may collide with, and the checks YAML names
//! pass. Everything that turns a YAML name into an identifier is here (load checks names,
//! validate refuses collisions, generate spells identifiers).

use proc_macro2::{Ident, Span};
use quote::format_ident;

/// `OrderLineItem` → `order_line_item`.
pub(crate) fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Rust keywords that can be written as raw identifiers (`r#type`).
pub(crate) const RAW_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where",
    "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "try",
    "typeof", "unsized", "virtual", "yield",
];
/// Keywords that cannot be raw identifiers.
pub(crate) const PLAIN_KEYWORDS: &[&str] = &["crate", "self", "super"];

/// A field name as a Rust identifier (`type` → `r#type`, `self` → `self_`).
pub(crate) fn field_ident(name: &str) -> Ident {
    if RAW_KEYWORDS.contains(&name) {
        Ident::new_raw(name, Span::call_site())
    } else if PLAIN_KEYWORDS.contains(&name) {
        format_ident!("{}_", name)
    } else {
        format_ident!("{}", name)
    }
}

/// A column name as a diesel `table!` identifier (keywords get a `_` suffix and `sql_name`).
pub(crate) fn column_ident(name: &str) -> (Ident, bool) {
    if RAW_KEYWORDS.contains(&name) || PLAIN_KEYWORDS.contains(&name) {
        (format_ident!("{}_", name), true)
    } else {
        (format_ident!("{}", name), false)
    }
}

/// `order_line_item`: lower-case ASCII letters, digits and `_`, starting with a letter.
pub(crate) fn is_snake(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `OrderLineItem`: ASCII letters and digits, starting with an upper-case letter.
pub(crate) fn is_pascal(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('A'..='Z')) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// Whether `name` is a Rust keyword (raw-able or not).
pub(crate) fn is_keyword(name: &str) -> bool {
    RAW_KEYWORDS.contains(&name) || PLAIN_KEYWORDS.contains(&name)
}
