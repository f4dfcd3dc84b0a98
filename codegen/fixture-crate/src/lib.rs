//! The code generated for each fixture of `nomnom-codegen`, compiled with warnings denied.
#![deny(warnings)]

/// The runtime crate the generated code calls, as any user crate depends on it.
pub use nomnom_runtime as runtime;

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
