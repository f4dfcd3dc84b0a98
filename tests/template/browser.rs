//! The operator console in a real browser: Debian's chromium driven by playwright-core
//! (`tests/browser/console.mjs`, its packages pinned by `tests/browser/package-lock.json` and
//! installed with `npm ci` on first use) against the api and worker binaries on the real NATS
//! and PostgreSQL. Screenshots of every page land in `target/console-screenshots/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::{common, support};
use common::process::{Service, api_command, worker_command};

/// The browser: `NOMNOM_CHROMIUM`, or Debian's `chromium` (`.ci/run` installs it).
fn chromium() -> PathBuf {
    let path = std::env::var_os("NOMNOM_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "no browser at {}: install Debian's chromium (apt-get install -y chromium; .ci/run does) or set NOMNOM_CHROMIUM",
        path.display()
    );
    path
}

/// `tests/browser/node_modules`, installed from the lock file when missing or stale (under a
/// file lock: test binaries may run at once).
fn node_packages() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let lock =
        std::fs::File::create(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-npm.lock"))
            .expect("lock file");
    lock.lock().expect("lock");
    let wanted = std::fs::read_to_string(dir.join("package-lock.json")).expect("package-lock");
    let marker = dir.join("node_modules/.installed-lock.json");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
            .expect("npm runs (Node.js 18+ is needed for the browser test)");
        assert!(
            out.status.success(),
            "npm ci in tests/browser failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, &wanted).expect("marker");
    }
    dir
}

/// Posts valid, invalid and database-refused orders (one hostile), then in chromium: finds the
/// dead letter and its reason, checks the hostile body is inert and bounded, fixes the cause,
/// replays from the page and sees the order stored with its rows on the trace page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_fixes_and_replays_a_dead_letter_in_the_browser() {
    let browser = chromium();
    let scripts = node_packages();
    let db = common::TestDb::create().await;
    let id = common::unique();
    let stream = format!("BROWSER_{id}");
    let consumer = format!("c_{id}");
    let (api_port, admin_port, metrics_port) = (
        support::servers::free_port(),
        support::servers::free_port(),
        support::servers::free_port(),
    );
    let mut worker = Service::spawn(
        "browser-worker",
        worker_command(&stream, &consumer, &db.url, metrics_port).env("RUST_LOG", "warn"),
    );
    let mut api = Service::spawn(
        "browser-api",
        api_command(&stream, &db.url, api_port)
            .env("ADMIN_PORT", admin_port.to_string())
            .env("NATS_CONSUMER", &consumer)
            .env("RUST_LOG", "warn"),
    );
    let start = Duration::from_secs(60);
    api.wait_ok(&format!("http://127.0.0.1:{api_port}/ready"), start)
        .await;
    worker
        .wait_ok(&format!("http://127.0.0.1:{metrics_port}/health"), start)
        .await;
    db.wait_at_least(
        "SELECT 1 FROM information_schema.tables WHERE table_name = 'orders'",
        1,
        start,
        "the worker creates the tables",
    )
    .await;
    // The cause the operator fixes: the database refuses orders of a million or more.
    db.client()
        .await
        .batch_execute(
            "ALTER TABLE orders ADD CONSTRAINT browser_test_total CHECK (total_price < 1000000)",
        )
        .await
        .expect("constraint");

    let screenshots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("console-screenshots");
    let config = serde_json::json!({
        "api": format!("http://127.0.0.1:{api_port}"),
        "console": format!("http://127.0.0.1:{admin_port}"),
        "chromium": browser,
        "screenshots": screenshots,
        "fix": ["psql", db.url, "-q", "-c", "ALTER TABLE orders DROP CONSTRAINT browser_test_total"],
    });
    let config_file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("browser-{id}.json"));
    std::fs::write(&config_file, config.to_string()).expect("config");
    let run = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args(["900", "node", "console.mjs"])
            .arg(&config_file)
            .current_dir(&scripts)
            .output()
            .expect("node runs")
    })
    .await
    .expect("join");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "the browser run failed:\n{output}");
    for page in [
        "1-overview",
        "2-dead-letters",
        "3-dead-letter-hostile",
        "4-dead-letter",
        "5-trace",
        "6-schema",
        "7-audit",
        "8-overview-after",
    ] {
        let shot = screenshots.join(format!("{page}.png"));
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is missing or empty", shot.display());
    }
    // What the page did is what the database holds: the order stored, one dead letter left.
    assert_eq!(
        db.count("SELECT 1 FROM orders WHERE order_key = 'ORD-B000003'")
            .await,
        1
    );
    assert_eq!(db.count("SELECT 1 FROM dead_letters").await, 1);
    assert!(api.terminate().success());
    assert!(worker.terminate().success());
    common::delete_streams(&stream).await;
    db.drop_db().await;
}
