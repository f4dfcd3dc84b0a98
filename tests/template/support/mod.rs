//! Support of the template repository's own tests and benchmarks, which are about the TPC-H
//! example schema: its sample messages, servers of a test's own (NATS, PostgreSQL, TLS
//! certificates) and worker memory sampling. Not generated into a project (cargo-generate.toml
//! leaves it out): a project's tests (`tests/entities.rs`) follow its own entities.
//! (When you change `entities/`, give the benchmarks your own bodies with `--body`.)
#![allow(dead_code)]

pub(crate) mod memory;
pub(crate) mod sample;
pub(crate) mod servers;

#[allow(unused_imports)]
pub(crate) use sample::order;
