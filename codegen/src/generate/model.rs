//! Each root entity's message type: its parsed rows, their checks and the rows it writes.

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use super::check::{checkable, children_checks};
use super::common::*;
use crate::ident::field_ident;
use crate::model::*;
use crate::validate::Schema;

/// `<Root>Message`: the root row plus every derived row, and its parser.
pub(crate) fn message_type(schema: &Schema, root: &EntityDef) -> TokenStream {
    let msg = message_ident(root);
    let rt = type_ident(root);
    let r = rows_ident(root);
    let descendants: Vec<&EntityDef> = schema
        .subtree(&root.name.value)
        .into_iter()
        .skip(1)
        .collect();
    let fields = descendants.iter().map(|d| {
        let id = rows_ident(d);
        let t = type_ident(d);
        let m = module_ident(d);
        let doc = format!(" `{}` rows derived from this message.", d.name.value);
        quote!(#[doc = #doc] pub #id: ::std::vec::Vec<super::#m::#t>,)
    });
    let vec_inits = descendants.iter().map(|d| {
        let id = rows_ident(d);
        let paths = format_ident!("{}_paths", rows_ident(d));
        if keyed_derived(d).is_some() {
            quote! {
                let mut #id = ::std::vec::Vec::new();
                let mut #paths: ::std::vec::Vec<::std::string::String> = ::std::vec::Vec::new();
            }
        } else {
            quote!(let mut #id = ::std::vec::Vec::new();)
        }
    });
    let key_checks = descendants.iter().filter_map(|d| {
        let key = keyed_derived(d)?;
        let id = rows_ident(d);
        let paths = format_ident!("{}_paths", rows_ident(d));
        let fields: Vec<Ident> = key.iter().map(|k| field_ident(k)).collect();
        let names = key.join(", ");
        Some(quote! {
            if errors.is_empty() {
                ::nomnom_runtime::__private::refuse_repeated_keys(&#id, &#paths, |r| (#(&r.#fields,)*), #names, &mut errors);
            }
        })
    });
    let children = if descendants.is_empty() {
        quote!()
    } else {
        children_loops(
            schema,
            root,
            quote!(root.as_ref()),
            quote!(value),
            quote!(path),
        )
    };
    let names: Vec<Ident> = descendants.iter().map(|d| rows_ident(d)).collect();
    let validate = if checkable(schema, root) {
        let checks = children_checks(schema, root, quote!(value), quote!(path));
        let keyed: Vec<&EntityDef> = descendants
            .iter()
            .copied()
            .filter(|d| keyed_derived(d).is_some())
            .collect();
        let key_inits = keyed.iter().map(|d| {
            let keys = format_ident!("{}_keys", rows_ident(d));
            let paths = format_ident!("{}_paths", rows_ident(d));
            quote! {
                let mut #keys = ::std::vec::Vec::new();
                let mut #paths: ::std::vec::Vec<::std::string::String> = ::std::vec::Vec::new();
            }
        });
        let key_checks = keyed.iter().map(|d| {
            let keys = format_ident!("{}_keys", rows_ident(d));
            let paths = format_ident!("{}_paths", rows_ident(d));
            let names = keyed_derived(d).unwrap_or_default().join(", ");
            quote! {
                if errors.is_empty() {
                    ::nomnom_runtime::__private::refuse_repeated_keys(&#keys, &#paths, |k| k, #names, &mut errors);
                }
            }
        });
        quote! {
            /// Checks a message body as [`Self::parse`] does, building no rows: the same
            /// errors in the same order (what the api runs; the worker parses).
            pub fn validate(
                value: ::nomnom_runtime::JsonRef<'_>,
            ) -> ::std::result::Result<(), ::std::vec::Vec<::nomnom_runtime::FieldError>> {
                let mut errors = ::std::vec::Vec::new();
                let path = "";
                #(#key_inits)*
                #rt::check_json(value, path, &mut errors);
                #checks
                #(#key_checks)*
                if errors.is_empty() {
                    ::std::result::Result::Ok(())
                } else {
                    ::std::result::Result::Err(errors)
                }
            }
        }
    } else {
        quote! {
            /// Checks a message body by parsing it: an entity of this message computes a field
            /// from its parent's values, or has a unique key whose repeats are found by the
            /// rows' values, which only the parse has.
            pub fn validate(
                value: ::nomnom_runtime::JsonRef<'_>,
            ) -> ::std::result::Result<(), ::std::vec::Vec<::nomnom_runtime::FieldError>> {
                Self::parse(value).map(drop)
            }
        }
    };
    let doc = format!(
        " A `{}` message: the root row and the rows derived from it.",
        root.name.value
    );
    quote! {
        #[doc = #doc]
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize)]
        pub struct #msg {
            /// The root row.
            pub #r: #rt,
            #(#fields)*
        }

        impl #msg {
            /// Parses and validates a message body, collecting every field error.
            pub fn parse(
                value: ::nomnom_runtime::JsonRef<'_>,
            ) -> ::std::result::Result<Self, ::std::vec::Vec<::nomnom_runtime::FieldError>> {
                let mut errors = ::std::vec::Vec::new();
                let path = "";
                #(#vec_inits)*
                let root = #rt::from_json(value, path, &mut errors);
                #children
                #(#key_checks)*
                match root {
                    ::std::option::Option::Some(#r) if errors.is_empty() => {
                        ::std::result::Result::Ok(Self { #r, #(#names,)* })
                    }
                    _ => ::std::result::Result::Err(errors),
                }
            }

            #validate

            /// Number of rows (root and derived).
            pub fn row_count(&self) -> usize {
                1 #(+ self.#names.len())*
            }
        }
    }
}

/// Loops that build the derived rows of `parent` at any depth. They walk the parent's JSON
/// element (not its parsed row), so element errors are reported even when the parent row has
/// errors of its own; `row_var` is the parent's row as an `Option<&Parent>`.
pub(crate) fn children_loops(
    schema: &Schema,
    parent: &EntityDef,
    row_var: TokenStream,
    json_var: TokenStream,
    path_var: TokenStream,
) -> TokenStream {
    let loops = schema.children(&parent.name.value).into_iter().map(|c| {
        let ct = type_ident(c);
        let cm = module_ident(c);
        let rows = rows_ident(c);
        let child_row = format_ident!("{}_row", rows_ident(c));
        let child_json = format_ident!("{}_json", rows_ident(c));
        let child_path = format_ident!("{}_path", rows_ident(c));
        let nested = children_loops(
            schema,
            c,
            quote!(#child_row.as_ref()),
            quote!(#child_json),
            quote!(&#child_path),
        );
        // Each row's path, to name both rows that repeat a unique key.
        let keep_path = if keyed_derived(c).is_some() {
            let paths = format_ident!("{}_paths", rows_ident(c));
            quote!(#paths.push(#child_path);)
        } else {
            quote!()
        };
        let body = quote! {
            let #child_row =
                super::#cm::#ct::from_element(#row_var, #child_json, &#child_path, &mut errors);
            #nested
            if let ::std::option::Option::Some(row) = #child_row {
                #rows.push(row);
            }
            #keep_path
        };
        for_each_source(
            parent,
            c,
            &json_var,
            &path_var,
            &child_json,
            &child_path,
            body,
        )
    });
    quote!(#(#loops)*)
}
