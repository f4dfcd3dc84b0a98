//! What both binaries do as processes: logging set-up, shutdown signals, the container
//! healthcheck.

/// Sets up `tracing` from `RUST_LOG` (default `info`, with PostgreSQL's NOTICEs — e.g. "relation
/// already exists, skipping" at every start — only at `debug`); JSON lines when
/// `LOG_FORMAT=json`; on stderr (stdout is for what a command prints: `worker example`, a
/// load's summary); ANSI colours only when stderr is a terminal.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour codes only for a person at a terminal, never in a log file or a container log.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = if std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json")) {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

/// The variables logging reads (`RUST_LOG` through tracing's `EnvFilter`).
pub const LOG_ENV_VARS: &[&str] = &["RUST_LOG", "LOG_FORMAT"];

/// The filter without `RUST_LOG`: tokio-postgres logs the server's NOTICEs at `info`.
const DEFAULT_LOG_FILTER: &str = "info,tokio_postgres::connection=warn";

/// `api healthcheck` / `worker healthcheck`: GETs `http://{host}:{port}/health` (loopback for a
/// server on every interface) and returns
/// whether it answered 200 (container HEALTHCHECKs without curl in the image).
pub fn healthcheck(host: std::net::IpAddr, port: u16) -> bool {
    use std::io::{Read, Write};
    // A server on every interface answers on loopback too.
    let host = if host.is_unspecified() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    } else {
        host
    };
    let addr = std::net::SocketAddr::from((host, port));
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
