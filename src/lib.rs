//! nomnom: schema-driven message ingestion.
//!
//! `entities/*.yaml` → `build.rs` generates [`generated`] → the [`api`] accepts messages and
//! publishes them to NATS JetStream → the [`worker`] parses them and writes rows to PostgreSQL
//! through [`db`].

pub mod api;
pub mod bulk;
pub mod config;
pub mod db;
pub mod defaults;
pub mod describe;
pub mod envelope;
pub mod generated;
pub mod labels;
pub mod load;
pub mod metrics;
pub mod nats;
pub mod process;
pub mod sink;
pub mod text;
pub mod throttle;
pub mod worker;

/// The runtime crate the generated code stands on, re-exported for users of the generated types.
pub use nomnom_runtime as runtime;
