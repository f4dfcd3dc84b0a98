//! Names, doc attributes and schema lookups that every kind of generated output uses.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::example::json_path;
use crate::ident::snake;
use crate::model::*;
use crate::types::TypeTokens as _;
use crate::validate::Schema;

pub(crate) fn entity_file_name(e: &EntityDef) -> String {
    format!("nomnom_entity_{}.rs", snake(&e.name.value))
}

pub(crate) fn doc_attr(doc: Option<&str>) -> TokenStream {
    match doc {
        Some(d) => {
            let d = format!(" {}", d.trim());
            quote!(#[doc = #d])
        }
        None => quote!(),
    }
}

/// A field's doc line: its `doc`, else its name and type.
pub(crate) fn field_doc(f: &FieldDef) -> String {
    match &f.doc {
        Some(d) => d.trim().to_string(),
        None => format!(
            "`{}`: `{}`{}.",
            f.name.value,
            f.ty.value.name(),
            if f.nullable { ", nullable" } else { "" }
        ),
    }
}

pub(crate) fn field_type(f: &FieldDef) -> TokenStream {
    let t = f.ty.value.rust_type();
    if f.nullable {
        quote!(::std::option::Option<#t>)
    } else {
        t
    }
}

pub(crate) fn table_mod(e: &EntityDef) -> Option<Ident> {
    e.persistence
        .as_ref()
        .map(|p| format_ident!("{}", p.table.value))
}

pub(crate) fn type_ident(e: &EntityDef) -> Ident {
    format_ident!("{}", e.name.value)
}

pub(crate) fn message_ident(e: &EntityDef) -> Ident {
    format_ident!("{}Message", e.name.value)
}

pub(crate) fn module_ident(e: &EntityDef) -> Ident {
    format_ident!("{}", snake(&e.name.value))
}

pub(crate) fn rows_ident(e: &EntityDef) -> Ident {
    format_ident!("{}", snake(&e.name.value))
}

pub(crate) fn roots(schema: &Schema) -> Vec<&EntityDef> {
    schema.entities.iter().filter(|e| e.is_ingested()).collect()
}

pub(crate) fn stored(schema: &Schema) -> Vec<&EntityDef> {
    // Roots then descendants, so parents are written before their children.
    roots(schema)
        .into_iter()
        .flat_map(|r| schema.subtree(&r.name.value))
        .filter(|e| e.persistence.is_some())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Top-level file
// ---------------------------------------------------------------------------------------------

pub(crate) fn parent_of<'a>(schema: &'a Schema, e: &EntityDef) -> Option<&'a EntityDef> {
    e.parent_name().and_then(|p| schema.entity(p))
}

/// The unique key of a stored derived entity, if it has one: a message whose rows of it repeat
/// a key is refused (the rows written would be fewer than the rows counted).
pub(crate) fn keyed_derived(e: &EntityDef) -> Option<Vec<&str>> {
    e.repeated_for.as_ref()?;
    let p = e.persistence.as_ref()?;
    (!p.unicity_fields.is_empty())
        .then(|| p.unicity_fields.iter().map(|u| u.value.as_str()).collect())
}

/// The JSON path of the parent's list a derived entity is repeated for: its segments and the
/// dotted text error paths use.
pub(crate) fn list_of(parent: &EntityDef, child: &EntityDef) -> (Vec<String>, String) {
    let rf = child
        .repeated_for
        .as_ref()
        .expect("derived entities have repeated_for");
    let list_field = parent.field(&rf.field.value).expect("validated");
    let segments = json_path(list_field);
    let path = segments.join(".");
    (segments, path)
}

/// Runs `body` for each source of `child`'s rows in `parent`'s JSON (`json_var`, at
/// `path_var`): every element of the parent's list (`repeated_for`), or the parent's nested
/// object when it is one (`object`: null or absent gives no row). `body` sees the element as
/// `child_json` and its path as `child_path`.
pub(crate) fn for_each_source(
    parent: &EntityDef,
    child: &EntityDef,
    json_var: &TokenStream,
    path_var: &TokenStream,
    child_json: &Ident,
    child_path: &Ident,
    body: TokenStream,
) -> TokenStream {
    let (segments, field_path) = list_of(parent, child);
    let segs = segments.iter().map(|s| s.as_str());
    let nested_object = child.repeated_for.as_ref().is_some_and(|r| r.nested_object);
    if nested_object {
        let name = &child.name.value;
        quote! {
            if let ::std::option::Option::Some(#child_json) =
                ::nomnom_runtime::__private::object_at(#json_var, #path_var, &[#(#segs),*], #name, &mut errors)
            {
                let #child_path = ::nomnom_runtime::__private::join_path(#path_var, &[#(#segments),*]);
                #body
            }
        }
    } else {
        quote! {
            for (index, #child_json) in ::nomnom_runtime::__private::list_at(#json_var, &[#(#segs),*]).enumerate() {
                let #child_path = ::nomnom_runtime::__private::element_path(#path_var, #field_path, index);
                #body
            }
        }
    }
}

/// `text` as a raw string literal with enough `#`s that nothing in it ends the literal.
pub(crate) fn raw_str(text: &str) -> TokenStream {
    let mut longest = 0;
    let mut run: Option<usize> = None;
    for c in text.chars() {
        run = match (c, run) {
            ('"', _) => Some(0),
            ('#', Some(n)) => Some(n + 1),
            _ => None,
        };
        longest = longest.max(run.unwrap_or(0));
    }
    let hashes = "#".repeat(longest + 1);
    format!("r{hashes}\"{text}\"{hashes}")
        .parse()
        .expect("a raw string literal")
}
