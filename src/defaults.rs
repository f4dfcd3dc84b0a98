//! Project defaults chosen when the template was generated (see `cargo-generate.toml`).

/// Default `NATS_STREAM`.
pub const STREAM: &str = "NOMNOM";
/// Default database name in `DATABASE_URL`.
pub const DATABASE: &str = "nomnom";
/// Default `NATS_CONSUMER`.
pub const CONSUMER: &str = "nomnom-worker";
