//! The code generated for each fixture of `nomnom-codegen`, compiled with warnings denied.
#![deny(warnings)]

/// The runtime crate the generated code calls, as any user crate depends on it.
pub use nomnom_runtime as runtime;

include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));

/// The template's example transforms (`src/transforms.rs`), which the `hl7` fixture's
/// YAML names as `crate::transforms::…`, as a project's YAML does.
#[path = "../../../src/transforms.rs"]
pub mod transforms;
