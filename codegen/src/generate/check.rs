//! The validate-only twin of a root's parser: what can be checked without building rows, and
//! the checks of its derived entities.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::common::*;
use super::parser::field_check;
use crate::example::json_path;
use crate::model::*;
use crate::types::TypeTokens as _;
use crate::validate::Schema;

/// Whether every entity of a root's tree has a validate-only check (no `coalesce` over parent
/// fields).
pub(crate) fn checkable(schema: &Schema, root: &EntityDef) -> bool {
    schema.subtree(&root.name.value).into_iter().all(|e| {
        // A derived entity with a unique key: whether two rows repeat it needs their values,
        // which the check reads from the elements only in the simple case (`element_key`).
        (keyed_derived(e).is_none() || element_key(schema, e).is_some())
            && e.fields.iter().all(|f| field_check(schema, e, f).is_some())
    })
}

/// For a keyed entity repeated directly under its root, whose key fields are each copied from
/// the root (the same for every row) or read from the element: those read from the element,
/// with their paths. Two of its rows repeat the key exactly when these repeat, so the
/// validate-only check can tell without building rows.
pub(crate) fn element_key<'a>(
    schema: &Schema,
    e: &'a EntityDef,
) -> Option<Vec<(&'a FieldDef, Vec<String>)>> {
    let key = keyed_derived(e)?;
    let parent = parent_of(schema, e)?;
    if parent.repeated_for.is_some() {
        return None;
    }
    let mut from_element = Vec::new();
    for name in key {
        let f = e.field(name)?;
        match f.computed_from.as_ref().map(|c| &c.transform) {
            Some(Transform::CopyFromParent) => {}
            None | Some(Transform::ExtractField { .. }) => from_element.push((f, json_path(f))),
            _ => return None,
        }
    }
    Some(from_element)
}

/// The validate-only counterpart of [`children_loops`]: each element checked, no rows.
pub(crate) fn children_checks(
    schema: &Schema,
    parent: &EntityDef,
    json_var: TokenStream,
    path_var: TokenStream,
) -> TokenStream {
    let loops = schema.children(&parent.name.value).into_iter().map(|c| {
        let ct = type_ident(c);
        let cm = module_ident(c);
        let child_json = format_ident!("{}_json", rows_ident(c));
        let child_path = format_ident!("{}_path", rows_ident(c));
        let nested = children_checks(schema, c, quote!(#child_json), quote!(&#child_path));
        // The element's part of its key, kept with its path (see `element_key`).
        let keep_key = match element_key(schema, c) {
            Some(fields) => {
                let keys = format_ident!("{}_keys", rows_ident(c));
                let paths = format_ident!("{}_paths", rows_ident(c));
                let parts: Vec<Ident> = (0..fields.len()).map(|i| format_ident!("part_{}", i)).collect();
                let reads = fields.iter().zip(&parts).map(|((f, path), part)| {
                    let base = f.ty.value.rust_type();
                    let segs = path.iter().map(|s| s.as_str());
                    quote!(let #part = ::nomnom_runtime::__private::key_part::<#base>(#child_json, &[#(#segs),*]);)
                });
                if parts.is_empty() {
                    // The whole key comes from the root: every row has the same.
                    quote! {
                        #keys.push(());
                        #paths.push(#child_path);
                    }
                } else {
                    quote! {
                        #(#reads)*
                        if let (#(::std::option::Option::Some(#parts),)*) = (#(#parts,)*) {
                            #keys.push((#(#parts,)*));
                            #paths.push(#child_path);
                        }
                    }
                }
            }
            None => quote!(),
        };
        let body = quote! {
            super::#cm::#ct::check_element(#child_json, &#child_path, &mut errors);
            #nested
            #keep_key
        };
        for_each_source(parent, c, &json_var, &path_var, &child_json, &child_path, body)
    });
    quote!(#(#loops)*)
}
