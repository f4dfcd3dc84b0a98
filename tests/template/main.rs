//! The template repository's own tests, about the TPC-H example entities, in one binary (one
//! link instead of eighteen). Not generated into a project (`cargo-generate.toml` leaves
//! `tests/template/` out): a project's tests are `tests/entities.rs`, which name no entity.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod api;
mod auth;
mod binaries;
mod browser;
mod console;
mod contract;
mod db;
mod deploy;
mod edge_equals_storage;
mod edges;
mod faults;
mod http_limits;
mod loader;
mod nats_security;
mod parse;
mod pg_tls;
mod pipeline;
mod schema_evolution;
mod template_generate;
mod worker;
