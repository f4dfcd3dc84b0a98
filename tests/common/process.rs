//! The crate's binaries run as processes by a test: stderr kept in a log file so a failure says
//! why the process stopped or never answered, and killed when dropped so a failing test leaves
//! nothing running.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `api` or `worker` of one test.
pub(crate) struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `command` with stdout discarded and stderr in `<CARGO_TARGET_TMPDIR>/<name>-<id>.log`.
    pub(crate) fn spawn(name: &str, command: &mut Command) -> Self {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}.log", super::unique()));
        let file = std::fs::File::create(&log).expect("log file");
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    /// The process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `url` answers 2xx; panics with the process's exit status and log if it stops
    /// first or `timeout` passes.
    pub(crate) async fn wait_ok(&mut self, url: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(url).await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!(
                    "{} stopped ({status}) before {url} answered; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "{url} never answered in {timeout:?}; {} still runs; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits up to 15 s for the process to stop.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, "-TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{} did not stop on SIGTERM; its log:\n{}",
                self.name,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 60 lines of stderr.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test keeps the log to read; a passing one leaves nothing behind.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The worker binary on a test's stream, consumer, database and metrics port.
pub(crate) fn worker_command(
    stream: &str,
    consumer: &str,
    database_url: &str,
    metrics_port: u16,
) -> Command {
    let mut command = binary(env!("CARGO_BIN_EXE_worker"));
    command
        .env("NATS_URL", super::nats_url())
        .env("NATS_STREAM", stream)
        .env("NATS_CONSUMER", consumer)
        .env("DATABASE_URL", database_url)
        .env("WORKER_METRICS_PORT", metrics_port.to_string());
    command
}

/// A command running one of this package's binaries (`env!("CARGO_BIN_EXE_…")`), which reads
/// no `.env`: a developer's settings must never reach the tests.
pub(crate) fn binary(path: &str) -> Command {
    let mut command = Command::new(path);
    command.env(nomnom::process::ENV_FILE_VAR, "none");
    command
}

/// The api binary on a test's stream and database, listening on `port`.
pub(crate) fn api_command(stream: &str, database_url: &str, port: u16) -> Command {
    let mut command = binary(env!("CARGO_BIN_EXE_api"));
    command
        .env("NATS_URL", super::nats_url())
        .env("NATS_STREAM", stream)
        .env("DATABASE_URL", database_url)
        .env("PORT", port.to_string())
        // Tests run many apis at once: the console's port only where a test asks for it.
        .env("ADMIN_PORT", "0");
    command
}

/// Sends `sig` (e.g. `-TERM`, `-KILL`) to a child process.
pub(crate) fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}
