//! nomnom: schema-driven message ingestion.
//!
//! `entities/*.yaml` → `build.rs` generates [`generated`] → the [`api`] accepts messages and
//! publishes them to NATS JetStream → the [`worker`] parses them and writes rows to PostgreSQL
//! through [`db`].

pub mod api;
pub mod config;
pub mod db;
pub mod envelope;
pub mod generated;
pub mod nats;
pub mod runtime;
pub mod sample;
pub mod worker;

/// Resolves on SIGTERM or Ctrl-C, for graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
