//! The code generator's view of the one type table, [`nomnom_runtime::TYPES`]: the Rust and
//! diesel types it names, as tokens.

use proc_macro2::TokenStream;

pub use nomnom_runtime::FieldType;

/// Tokens of a type path written in the table (always valid Rust; the tests compile them).
fn tokens(path: &str) -> TokenStream {
    path.parse()
        .unwrap_or_else(|e| panic!("type table entry `{path}` is not Rust: {e}"))
}

/// What generated code needs of a [`FieldType`].
pub(crate) trait TypeTokens {
    /// The Rust type (not wrapped in `Option`).
    fn rust_type(self) -> TokenStream;
    /// The diesel SQL type of one element of the array the upsert binds.
    fn bind_diesel_type(self) -> Option<TokenStream>;
}

impl TypeTokens for FieldType {
    fn rust_type(self) -> TokenStream {
        tokens(self.info().rust)
    }

    fn bind_diesel_type(self) -> Option<TokenStream> {
        self.info().column.map(|c| tokens(c.bind_diesel))
    }
}
