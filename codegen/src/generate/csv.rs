//! Each entity's CSV layout: the columns a CSV row maps to its fields.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::example::json_path;
use crate::model::*;

/// The `CSV` constant of an ingested entity: its `csv:` block (validated) or the defaults, and
/// the fields a column can feed with the JSON path the parser reads each from.
pub(crate) fn csv_spec(e: &EntityDef) -> TokenStream {
    let c = e.csv.clone().unwrap_or_default();
    let byte = |v: &Option<Spanned<String>>, default: u8| {
        v.as_ref()
            .and_then(|s| s.value.bytes().next())
            .unwrap_or(default)
    };
    let delimiter = byte(&c.delimiter, b',');
    let quote_char = byte(&c.quote, b'"');
    let header = c.header.as_ref().is_none_or(|h| h.value);
    let columns = c.columns.iter().map(|s| s.value.as_str());
    let header_map = c.header_map.iter().map(|(h, f)| {
        let (h, f) = (&h.value, &f.value);
        quote!((#h, #f))
    });
    let opt = |v: &Option<Spanned<String>>| match v {
        Some(s) => {
            let s = &s.value;
            quote!(::std::option::Option::Some(#s))
        }
        None => quote!(::std::option::Option::None),
    };
    let null = opt(&c.null);
    let date_format = opt(&c.date_format);
    let fields = crate::validate::csv_fields(e).map(|f| {
        let name = &f.name.value;
        let path = json_path(f);
        let ty = format_ident!("{}", format!("{:?}", f.ty.value));
        let nullable = f.nullable;
        quote! {
            ::nomnom_runtime::CsvField {
                name: #name,
                path: &[#(#path),*],
                ty: ::nomnom_runtime::FieldType::#ty,
                nullable: #nullable,
            }
        }
    });
    quote! {
        /// How CSV files of this entity are read (`csv:` in its YAML, or the defaults).
        pub const CSV: ::nomnom_runtime::CsvSpec = ::nomnom_runtime::CsvSpec {
            delimiter: #delimiter,
            quote: #quote_char,
            header: #header,
            columns: &[#(#columns),*],
            header_map: &[#(#header_map),*],
            null: #null,
            date_format: #date_format,
            fields: &[#(#fields),*],
        };
    }
}
