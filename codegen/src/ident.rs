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

/// Checks that `path` names a function by its path from a crate root, as a user transform
/// must (`crate::transforms::hl7_field`, `::other_crate::f`, `other_crate::module::f`): two or
/// more `::`-separated identifiers (raw ones allowed), `crate` only first, no other keyword.
pub(crate) fn check_rust_path(path: &str) -> Result<(), String> {
    let body = path.strip_prefix("::").unwrap_or(path);
    let segments: Vec<&str> = body.split("::").collect();
    if segments.len() < 2 {
        return Err(
            "name the function by its path from the crate root, e.g. `crate::transforms::hl7_field` (the generated code lives in a module of its own)".into(),
        );
    }
    for (i, segment) in segments.iter().enumerate() {
        let name = segment.strip_prefix("r#").unwrap_or(segment);
        let mut chars = name.chars();
        let identifier = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name != "_";
        if !identifier {
            return Err(format!(
                "`{segment}` is not a Rust identifier (a path is identifiers separated by `::`)"
            ));
        }
        let raw = segment.starts_with("r#");
        let allowed_keyword = i == 0 && name == "crate" && !path.starts_with("::");
        if !raw && is_keyword(name) && !allowed_keyword {
            return Err(format!(
                "`{name}` is a Rust keyword here (only a leading `crate` is; write `r#{name}` for an identifier)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod rust_path_tests {
    use super::check_rust_path;

    #[test]
    fn function_paths_from_a_crate_root_are_taken() {
        for ok in [
            "crate::transforms::hl7_field",
            "::lib::f",
            "my_lib::m::r#type",
            "crate::_private::f2",
        ] {
            assert_eq!(check_rust_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "hl7_field",
            "crate::",
            "crate::transforms::hl7-field",
            "crate::transforms::fn",
            "transforms::crate::f",
            "::crate::f",
            "crate::transforms.hl7_field",
            "crate::1f",
            "crate::_",
        ] {
            assert!(check_rust_path(bad).is_err(), "{bad}");
        }
    }
}
