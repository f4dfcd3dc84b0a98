//! Each entity's parser: reading fields from JSON (paths, transforms, constants) and checking
//! them against the YAML's limits.

use proc_macro2::{Ident, TokenStream};
use quote::{ToTokens as _, quote};

use super::common::*;
use crate::example::{json_path, transform_input_path};
use crate::ident::field_ident;
use crate::model::*;
use crate::types::{FieldType, TypeTokens as _};
use crate::validate::Schema;
use nomnom_runtime::Constant;

pub(crate) fn entity_parser(schema: &Schema, e: &EntityDef) -> TokenStream {
    let lets = e.fields.iter().map(|f| field_value(schema, e, f));
    let names: Vec<Ident> = e
        .fields
        .iter()
        .map(|f| field_ident(&f.name.value))
        .collect();
    let build = quote! {
        ::std::option::Option::Some(Self { #(#names: #names?,)* })
    };
    let checks: Option<Vec<TokenStream>> =
        e.fields.iter().map(|f| field_check(schema, e, f)).collect();
    let checker = match (checks, parent_of(schema, e)) {
        (None, _) => quote!(),
        (Some(checks), None) => quote! {
            /// Checks a message body as [`Self::from_json`] does, keeping nothing: the same
            /// errors in the same order (the api's validate-only path).
            pub fn check_json(
                element: ::nomnom_runtime::JsonRef<'_>,
                path: &str,
                errors: &mut ::std::vec::Vec<::nomnom_runtime::FieldError>,
            ) {
                if !::nomnom_runtime::__private::expect_object(element, path, errors) {
                    return;
                }
                #(#checks)*
            }
        },
        (Some(checks), Some(_)) => quote! {
            /// Checks one element of the parent's list as [`Self::from_element`] does, keeping
            /// nothing: the same errors in the same order.
            pub fn check_element(
                element: ::nomnom_runtime::JsonRef<'_>,
                path: &str,
                errors: &mut ::std::vec::Vec<::nomnom_runtime::FieldError>,
            ) {
                #(#checks)*
            }
        },
    };
    let parser = match parent_of(schema, e) {
        None => quote! {
            /// Reads a row from a message body; problems are added to `errors`.
            pub fn from_json(
                element: ::nomnom_runtime::JsonRef<'_>,
                path: &str,
                errors: &mut ::std::vec::Vec<::nomnom_runtime::FieldError>,
            ) -> ::std::option::Option<Self> {
                if !::nomnom_runtime::__private::expect_object(element, path, errors) {
                    return ::std::option::Option::None;
                }
                #(#lets)*
                #build
            }
        },
        Some(parent) => {
            let pm = module_ident(parent);
            let pt = type_ident(parent);
            quote! {
                /// Reads a row from one element of the parent's list; problems are added to
                /// `errors`. `parent` is `None` when the parent row itself was invalid: the
                /// element is still checked, but no row is returned.
                pub fn from_element(
                    parent: ::std::option::Option<&super::#pm::#pt>,
                    element: ::nomnom_runtime::JsonRef<'_>,
                    path: &str,
                    errors: &mut ::std::vec::Vec<::nomnom_runtime::FieldError>,
                ) -> ::std::option::Option<Self> {
                    #(#lets)*
                    #build
                }
            }
        }
    };
    quote!(#parser #checker)
}

/// What the validate-only `check_json`/`check_element` does for one field: the same errors
/// as [`field_value`], in the same order, keeping nothing. Fields copied from the parent
/// record nothing; `None` when the field needs the parent's values (`coalesce` over parent
/// fields), so the message falls back to the full parse.
pub(crate) fn field_check(schema: &Schema, e: &EntityDef, f: &FieldDef) -> Option<TokenStream> {
    let base = f.ty.value.rust_type();
    let nullable = f.nullable;
    let read = |path: &[String]| {
        let segs = segments(f, path);
        let limit = match &f.max_length {
            Some(m) => {
                let n = m.value as usize;
                let key = json_path(f).join(".");
                quote!(::std::option::Option::Some((#n, #key)))
            }
            None => quote!(::std::option::Option::None),
        };
        let key_bytes = match key_byte_limit(e, f) {
            Some(n) => {
                let segs = segments(f, path);
                // Only when the field itself was fine, as the parse checks it only then.
                quote! {
                    if errors.len() == checked_from {
                        ::nomnom_runtime::__private::check_key_bytes(element, path, #segs, #n, errors);
                    }
                }
            }
            None => quote!(),
        };
        if key_bytes.is_empty() {
            quote!(::nomnom_runtime::__private::check_field::<#base>(element, path, #segs, #nullable, #limit, errors);)
        } else {
            quote! {
                let checked_from = errors.len();
                ::nomnom_runtime::__private::check_field::<#base>(element, path, #segs, #nullable, #limit, errors);
                #key_bytes
            }
        }
    };
    match &f.computed_from {
        None => Some(read(&json_path(f))),
        Some(c) => match &c.transform {
            Transform::ExtractField { .. } => Some(read(&json_path(f))),
            Transform::CopyFromParent => Some(quote!()),
            Transform::Coalesce | Transform::Conditional if uses_parent(c) => None,
            // Constants, element-only coalesces and conditionals, and user transforms (called
            // here too, so that both paths report what they report): the parse's own
            // expression, dropped.
            Transform::Constant
            | Transform::Coalesce
            | Transform::Conditional
            | Transform::Rust { .. } => {
                let value = field_expr(schema, e, f);
                Some(quote!(let _ = #value;))
            }
        },
    }
}

/// `let <field> = <expr producing Option<FieldType>>;` (None means an error was recorded).
pub(crate) fn field_value(schema: &Schema, e: &EntityDef, f: &FieldDef) -> TokenStream {
    let id = field_ident(&f.name.value);
    let limited = field_expr(schema, e, f);
    quote!(let #id = #limited;)
}

/// The expression of [`field_value`]: `Option<FieldType>`, `None` when an error was recorded.
pub(crate) fn field_expr(schema: &Schema, e: &EntityDef, f: &FieldDef) -> TokenStream {
    let base = f.ty.value.rust_type();
    let name = &f.name.value;
    let extract = |path: &[String]| -> TokenStream {
        let segs = segments(f, path);
        if f.nullable {
            quote!(::nomnom_runtime::__private::extract_opt::<#base>(element, path, #segs, errors))
        } else {
            quote!(::nomnom_runtime::__private::extract::<#base>(element, path, #segs, errors))
        }
    };
    let value = match &f.computed_from {
        None => extract(&json_path(f)),
        Some(c) => match &c.transform {
            Transform::ExtractField { .. } => extract(&json_path(f)),
            Transform::CopyFromParent => {
                let src = match c.sources.first() {
                    Some(SourceRef::ParentField(p)) => p.value.as_str(),
                    _ => unreachable_source(),
                };
                let parent_nullable = parent_of(schema, e)
                    .and_then(|p| p.field(src))
                    .is_some_and(|pf| pf.nullable);
                let sid = field_ident(src);
                let value = read_parent_field(&sid, f.ty.value);
                if f.nullable && !parent_nullable {
                    quote!(parent.map(|parent| ::std::option::Option::Some(#value)))
                } else {
                    quote!(parent.map(|parent| #value))
                }
            }
            Transform::Constant => {
                let lit = c
                    .value
                    .as_ref()
                    .map(|l| l.text.as_str())
                    .unwrap_or_default();
                let v = constant_expr(f.ty.value, lit, name);
                if f.nullable {
                    quote!(#v.map(::std::option::Option::Some))
                } else {
                    v
                }
            }
            Transform::Rust { path, args } => {
                let konst = transform_const_ident(e, f);
                let segs = transform_input_path(c);
                let segs = segs.iter().map(|s| s.as_str());
                let name = &f.name.value;
                let shown = &path.value;
                let called = quote!(::nomnom_runtime::__private::user_transform::<#base>(
                    #konst,
                    ::nomnom_runtime::__private::value_at(element, &[#(#segs),*]),
                    &[#(#args),*],
                    path,
                    #name,
                    #shown,
                    errors,
                ));
                if f.nullable {
                    called
                } else {
                    let why = format!(
                        "transform `{shown}` gave no value (null) for a field that is not nullable"
                    );
                    quote!(#called.and_then(|v| ::nomnom_runtime::__private::require(v, path, #name, #why, errors)))
                }
            }
            Transform::Coalesce | Transform::Conditional => {
                let mut exprs = c.sources.iter().map(|s| optional_source(schema, e, f, s));
                let first = exprs
                    .next()
                    .unwrap_or_else(|| quote!(::std::option::Option::None));
                let chain = if c.transform == Transform::Coalesce {
                    quote!(#first #(.or_else(|| #exprs))*)
                } else {
                    let otherwise = exprs
                        .next()
                        .unwrap_or_else(|| quote!(::std::option::Option::None));
                    let holds = condition_holds(schema, e, c);
                    quote!(if #holds { #first } else { #otherwise })
                };
                let uses_parent = uses_parent(c);
                let why = if c.transform == Transform::Coalesce {
                    "every coalesce source is missing or null".to_string()
                } else {
                    let (taken, otherwise) = match c.sources.as_slice() {
                        [a, b] => (source_name(a), source_name(b)),
                        _ => (String::new(), String::new()),
                    };
                    format!(
                        "missing or null: `{taken}` when the condition holds, else `{otherwise}`"
                    )
                };
                if f.nullable {
                    quote!(::std::option::Option::Some(#chain))
                } else if uses_parent {
                    // Without a parent row its error is already recorded; don't add another.
                    quote!({
                        let value = #chain;
                        if parent.is_some() { ::nomnom_runtime::__private::require(value, path, #name, #why, errors) } else { value }
                    })
                } else {
                    quote!(::nomnom_runtime::__private::require(#chain, path, #name, #why, errors))
                }
            }
        },
    };
    let value = match &f.max_length {
        Some(m) => {
            let n = m.value as usize;
            // A value a user transform computed is the field's, not its input member's.
            let key = match f.computed_from.as_ref().map(|c| &c.transform) {
                Some(Transform::Rust { .. }) => f.name.value.clone(),
                _ => json_path(f).join("."),
            };
            quote!(#value.and_then(|v| ::nomnom_runtime::__private::max_len(v, #n, path, #key, errors)))
        }
        None => value,
    };
    match key_byte_limit(e, f) {
        Some(n) => {
            let key = json_path(f).join(".");
            quote!(#value.and_then(|v| ::nomnom_runtime::__private::max_key_bytes(v, #n, path, #key, errors)))
        }
        None => value,
    }
}

/// One source of `coalesce` or `copy_field_conditional` as an `Option` of the field's type
/// (`None`: null, absent or no parent row; a wrong type is recorded as an error).
fn optional_source(schema: &Schema, e: &EntityDef, f: &FieldDef, s: &SourceRef) -> TokenStream {
    let base = f.ty.value.rust_type();
    match s {
        SourceRef::ParentField(p) => {
            let sid = field_ident(&p.value);
            let value = read_parent_field(&sid, f.ty.value);
            let nullable = parent_of(schema, e)
                .and_then(|pe| pe.field(&p.value))
                .is_some_and(|pf| pf.nullable);
            if nullable {
                quote!(parent.and_then(|parent| #value))
            } else {
                quote!(parent.map(|parent| #value))
            }
        }
        SourceRef::Element { path, .. } => {
            let segs = path.iter().map(|s| s.as_str());
            quote!(::nomnom_runtime::__private::extract_opt::<#base>(element, path, &[#(#segs),*], errors).flatten())
        }
    }
}

/// The constant a user transform is bound to, named after the YAML field that calls it
/// (`DIAGNOSIS_YAML_LINE_12_DIAGNOSIS_CODE`, imported as its lower-case form): rustc
/// quotes the import when the function is missing and the constant when its signature is
/// wrong, so the error names the YAML line.
fn transform_const_ident(e: &EntityDef, f: &FieldDef) -> Ident {
    let line = f
        .computed_from
        .as_ref()
        .map_or(f.name.loc.line, |c| c.loc.line);
    // The file's name only: the generated code never holds where the checkout is.
    let file: String = yaml_file_name(e)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    quote::format_ident!(
        "{}_LINE_{}_{}",
        file.trim_matches('_'),
        line,
        f.name.value.to_ascii_uppercase()
    )
}

/// The name of the YAML file `e` was read from.
fn yaml_file_name(e: &EntityDef) -> &str {
    e.file.rsplit(['/', '\\']).next().unwrap_or(&e.file)
}

/// The constants of an entity's user transforms (see [`transform_const_ident`]), each with a
/// doc naming the YAML position and the signature the function must have.
pub(crate) fn transform_consts(e: &EntityDef) -> TokenStream {
    let consts = e.fields.iter().filter_map(|f| {
        let c = f.computed_from.as_ref()?;
        let Transform::Rust { path, .. } = &c.transform else {
            return None;
        };
        let konst = transform_const_ident(e, f);
        let base = f.ty.value.rust_type();
        let function: syn::Path = syn::parse_str(&path.value).ok()?;
        let doc = format!(
            " `{}` line {}, column {}: field `{}` calls `{}` (`transform: {{rust: ...}}`). A compile error here is that function's: it must be a `nomnom_runtime::UserTransform<{}>`, i.e. `fn(nomnom_runtime::JsonRef<'_>, &[&str]) -> Result<Option<{}>, String>`.",
            yaml_file_name(e),
            path.loc.line,
            path.loc.col,
            f.name.value,
            path.value,
            f.ty.value.info().rust,
            f.ty.value.info().rust,
        );
        // The import (one line, even formatted) names the function with the YAML position:
        // a missing function is reported on it, a wrong signature on the constant's type.
        let alias = quote::format_ident!("{}", konst.to_string().to_ascii_lowercase());
        Some(quote! {
            use #function as #alias;
            #[doc = #doc]
            const #konst: ::nomnom_runtime::UserTransform<#base> = #alias;
        })
    });
    quote!(#(#consts)*)
}

/// The member path a field is read at, as an expression of `&[&str]`: `path`, or for a field
/// `renamed_from` another name and read by its own, the old name's when a body of the previous
/// shape has only that (messages accepted before the rename still parse).
fn segments(f: &FieldDef, path: &[String]) -> TokenStream {
    let segs = path.iter().map(|s| s.as_str());
    match (&f.renamed_from, &f.computed_from) {
        (Some(old), None) => {
            let old = &old.value;
            quote!(::nomnom_runtime::__private::renamed(element, &[#(#segs),*], &[#old]))
        }
        _ => quote!(&[#(#segs),*]),
    }
}

/// A source as an error names it: the element's path or `parent.<field>`.
fn source_name(s: &SourceRef) -> String {
    match s {
        SourceRef::ParentField(p) => format!("parent.{}", p.value),
        SourceRef::Element { path, .. } => path.join("."),
    }
}

/// Whether a transform reads a field of the parent row (its sources or its condition).
pub(crate) fn uses_parent(c: &ComputedFrom) -> bool {
    c.sources
        .iter()
        .chain(c.condition.as_ref().map(|k| &k.source))
        .any(|s| matches!(s, SourceRef::ParentField(_)))
}

/// `copy_field_conditional`'s condition as a `bool`: the element's value at the path (a string
/// equal to the text, or a number or boolean spelled so), or the parent's `String` field equal
/// to it; false when null, absent or without a parent row.
fn condition_holds(schema: &Schema, e: &EntityDef, c: &ComputedFrom) -> TokenStream {
    let Some(condition) = &c.condition else {
        return quote!(false);
    };
    let equals = condition.equals.text.as_str();
    match &condition.source {
        SourceRef::Element { path, .. } => {
            let segs = path.iter().map(|s| s.as_str());
            quote!(::nomnom_runtime::__private::value_is(element, &[#(#segs),*], #equals))
        }
        SourceRef::ParentField(p) => {
            let sid = field_ident(&p.value);
            let nullable = parent_of(schema, e)
                .and_then(|pe| pe.field(&p.value))
                .is_some_and(|pf| pf.nullable);
            if nullable {
                quote!(parent.is_some_and(|parent| parent.#sid.as_deref() == ::std::option::Option::Some(#equals)))
            } else {
                quote!(parent.is_some_and(|parent| parent.#sid == #equals))
            }
        }
    }
}

/// The byte limit of a `String` key field read from the body, when its key could outgrow
/// PostgreSQL's index entry (see `validate::key_byte_limits`).
pub(crate) fn key_byte_limit(e: &EntityDef, f: &FieldDef) -> Option<usize> {
    let from_body = match &f.computed_from {
        None => true,
        Some(c) => matches!(c.transform, Transform::ExtractField { .. }),
    };
    if !from_body {
        return None;
    }
    crate::validate::key_byte_limits(e)
        .into_iter()
        .find(|(name, _)| *name == f.name.value)
        .map(|(_, n)| n)
}

/// `parent.<field>`, cloned unless the type is `Copy`.
pub(crate) fn read_parent_field(field: &Ident, ty: FieldType) -> TokenStream {
    if ty.info().copy {
        quote!(parent.#field)
    } else {
        quote!(parent.#field.clone())
    }
}

pub(crate) fn unreachable_source() -> &'static str {
    // validate() guarantees copy_from_parent has exactly one parent-field source.
    "__invalid_source__"
}

/// A `constant` value: a Rust literal for the types the table marks so, else the type's
/// run-time conversion of the literal text (validate() checked the literal with the same check).
pub(crate) fn constant_expr(ty: FieldType, lit: &str, name: &str) -> TokenStream {
    use proc_macro2::Literal;
    let literal = match ty {
        FieldType::String => Some(quote!(::std::string::String::from(#lit))),
        FieldType::Integer => lit
            .parse()
            .ok()
            .map(|v| Literal::i32_suffixed(v).into_token_stream()),
        FieldType::BigInt => lit
            .parse()
            .ok()
            .map(|v| Literal::i64_suffixed(v).into_token_stream()),
        FieldType::Float => lit
            .parse()
            .ok()
            .map(|v| Literal::f64_suffixed(v).into_token_stream()),
        FieldType::Boolean => lit.parse::<bool>().ok().map(|v| quote!(#v)),
        _ => None,
    };
    match (ty.info().constant, literal) {
        (Constant::RustLiteral(_), Some(v)) => quote!(::std::option::Option::Some(#v)),
        _ => {
            let base = ty.rust_type();
            quote!(::nomnom_runtime::__private::constant::<#base>(#lit, path, #name, errors))
        }
    }
}
