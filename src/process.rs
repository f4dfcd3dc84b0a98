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

/// Names the file of settings the binaries read at start: `.env` in the current directory by
/// default; `none` reads no file (the tests set it, so a developer's `.env` never reaches them).
/// Read before any file, so it cannot be set in one.
pub const ENV_FILE_VAR: &str = "NOMNOM_ENV_FILE";

/// Reads settings from `.env` in the current directory (or the file [`ENV_FILE_VAR`] names)
/// into the environment, never over a variable already set: the environment wins. `Ok(None)`
/// when there is no such file (or `none`); an unreadable or malformed file is an error naming
/// it and the line. Call before any thread starts (it sets environment variables).
pub fn load_env_file() -> Result<Option<std::path::PathBuf>, String> {
    let named = std::env::var_os(ENV_FILE_VAR);
    let path = match named.as_deref() {
        Some(v) if v == "none" => return Ok(None),
        Some(v) if !v.is_empty() => std::path::PathBuf::from(v),
        _ => std::path::PathBuf::from(".env"),
    };
    if named.is_none() && !path.is_file() {
        return Ok(None);
    }
    match dotenvy::from_path(&path) {
        Ok(()) => Ok(Some(path)),
        Err(dotenvy::Error::LineParse(line, at)) => Err(format!(
            "{}: cannot read the line `{line}` (at character {at}): write NAME=value",
            path.display()
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// What both binaries' `main` does: parses nothing itself, but reads the settings file (before
/// any thread starts: it sets environment variables), sets up logging (so `RUST_LOG` may come
/// from the file), then runs `run` on a multi-threaded runtime. An error is logged once, through
/// the log, and exits 1.
pub fn run_main<F>(run: F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
{
    let env_file = load_env_file();
    init_logging();
    let result = env_file
        .map_err(Into::into)
        .and_then(|file| {
            if let Some(file) = file {
                tracing::debug!(file = %file.display(), "settings read from the file (the environment wins)");
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(Into::into)
        })
        .and_then(|runtime| runtime.block_on(run));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once, through the log (stderr), whatever its format.
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
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
