//! The code generated for each fixture of `nomnom-codegen`, compiled with warnings denied.
#![deny(warnings)]

/// The template's runtime support, shared with the generated code (`crate::runtime`).
#[path = "../../../src/runtime.rs"]
pub mod runtime;

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
