//! nomnom: schema-driven message ingestion.
//!
//! `entities/*.yaml` → `build.rs` generates [`generated`] → the [`api`] accepts messages and
//! publishes them to NATS JetStream → the [`worker`] parses them and writes rows to PostgreSQL
//! through [`db`].

pub mod api;
pub mod config;
pub mod db;
pub mod defaults;
pub mod envelope;
pub mod generated;
pub mod labels;
pub mod nats;
pub mod sample;
pub mod throttle;
pub mod worker;

/// The runtime crate the generated code stands on, re-exported for users of the generated types.
pub use nomnom_runtime as runtime;

/// The Prometheus text exposition of a registry (api and worker `/metrics`).
pub fn prometheus_text(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metrics.
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// `api healthcheck` / `worker healthcheck`: GETs `http://127.0.0.1:{port}/health` and returns
/// whether it answered 200 (container HEALTHCHECKs without curl in the image).
pub fn healthcheck(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = std::time::Duration::from_secs(3);
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let request = "GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

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
