//! The two binaries as processes: configuration from the environment, health and metrics ports,
//! graceful shutdown on SIGTERM (exit 0), clear errors for bad configuration.

use crate::{common, support};
use std::time::{Duration, Instant};

use common::process::{Service, api_command, worker_command};
use support::servers::free_port;

/// How long a freshly started binary may take to answer (debug build, a busy machine).
const START: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_run_from_env_and_stop_cleanly_on_sigterm() {
    let id = common::unique();
    let stream = format!("B_{id}");
    // The worker creates this database itself.
    let db = common::TestDb {
        name: format!("nomnom_test_{id}"),
        url: format!("{}/nomnom_test_{id}", common::pg_admin_url()),
    };
    let (api_port, metrics_port, admin_port) = (free_port(), free_port(), free_port());
    let mut worker = Service::spawn(
        "worker",
        worker_command(&stream, &format!("c_{id}"), &db.url, metrics_port).env("BATCH_SIZE", "50"),
    );
    let mut api = Service::spawn(
        "api",
        api_command(&stream, &db.url, api_port)
            .env("ADMIN_PORT", admin_port.to_string())
            .env("NATS_CONSUMER", format!("c_{id}")),
    );
    api.wait_ok(&format!("http://127.0.0.1:{api_port}/health"), START)
        .await;
    worker
        .wait_ok(&format!("http://127.0.0.1:{metrics_port}/health"), START)
        .await;
    api.wait_ok(&format!("http://127.0.0.1:{api_port}/ready"), START)
        .await;
    let ready: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{metrics_port}/ready"))
        .await
        .expect("worker /ready")
        .json()
        .await
        .expect("json");
    assert_eq!(
        ready,
        serde_json::json!({"status": "ready", "schema_version": nomnom::generated::SCHEMA_VERSION, "reasons": []})
    );

    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{api_port}/ingest/message/order"))
        .header("content-type", "application/json")
        .body(support::order(1, 3).to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    db.wait_count("SELECT 1 FROM order_line_items", 3).await;

    let start = Instant::now();
    loop {
        let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if text.contains(r#"nomnom_worker_processed_total{entity="order"} 1"#) {
            assert!(text.contains("nomnom_worker_db_write_seconds_bucket"));
            assert!(text.contains("nomnom_worker_batch_size_bucket"));
            assert!(text.contains("nomnom_worker_consumer_pending"));
            // The order's way from the api's 202 to its commit, observed once.
            assert!(text.contains("nomnom_worker_commit_latency_seconds_count 1"));
            assert!(text.contains(&format!(
                "nomnom_schema_info{{schema_version=\"{}\"}} 1",
                nomnom::generated::SCHEMA_VERSION
            )));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The replay command runs against the same configuration (nothing is dead-lettered here).
    let replay = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
        .args(["replay-dead-letters", "--entity", "order"])
        .env("NATS_URL", common::nats_url())
        .env("NATS_STREAM", &stream)
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("replay runs");
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(String::from_utf8_lossy(&replay.stdout).contains("0 replayed, 0 skipped"));
    let healthy = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
        .arg("healthcheck")
        .env("WORKER_METRICS_PORT", metrics_port.to_string())
        .status()
        .expect("healthcheck runs");
    assert!(
        healthy.success(),
        "worker healthcheck sees the running worker"
    );
    let api_healthy = crate::common::process::binary(env!("CARGO_BIN_EXE_api"))
        .arg("healthcheck")
        .env("PORT", api_port.to_string())
        .status()
        .expect("healthcheck runs");
    assert!(
        api_healthy.success(),
        "api healthcheck sees the running api"
    );
    // The worker's metrics port has no authentication: by default it listens on loopback only,
    // while the api listens on every interface (the control).
    if let Some(ip) = non_loopback_ipv4() {
        assert!(
            std::net::TcpStream::connect((ip, api_port)).is_ok(),
            "the api answers on {ip}"
        );
        assert!(
            std::net::TcpStream::connect((ip, metrics_port)).is_err(),
            "the worker's metrics port answers on {ip}: WORKER_METRICS_HOST must default to 127.0.0.1"
        );
        assert!(
            std::net::TcpStream::connect((ip, admin_port)).is_err(),
            "the console answers on {ip} without API keys: ADMIN_HOST must default to 127.0.0.1"
        );
    }
    // Without keys the console is open on loopback, and the worker reports itself there.
    let start = Instant::now();
    loop {
        let stats: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{admin_port}/stats"))
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        let order = stats["entities"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["entity"] == "Order"))
            .cloned()
            .unwrap_or_default();
        if order["committed"] == 1 && stats["workers"].as_array().is_some_and(|w| w.len() == 1) {
            assert_eq!(stats["workers"][0]["database_up"], true, "{stats}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert!(api.terminate().success(), "api exits 0 on SIGTERM");
    assert!(worker.terminate().success(), "worker exits 0 on SIGTERM");
    common::delete_streams(&stream).await;
    db.drop_db().await;
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let out = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
        .env("BATCH_SIZE", "lots")
        .output()
        .expect("run worker");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"environment variable BATCH_SIZE="lots" is invalid"#),
        "{stderr}"
    );

    let out = crate::common::process::binary(env!("CARGO_BIN_EXE_api"))
        .env("NATS_STREAM", "has.dots")
        .output()
        .expect("run api");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NATS_STREAM"));

    // Command lines are parsed by clap: a usage error exits 2 and names the problem.
    let out = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
        .arg("frobnicate")
        .output()
        .expect("run worker");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unrecognized subcommand 'frobnicate'"));
    let out = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
        .args(["replay-dead-letters", "--id", "not-a-uuid"])
        .output()
        .expect("run worker");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-a-uuid"));
}

/// Authentication settings: missing keys under `REQUIRE_AUTH`, bad keys and unreadable key
/// files stop the api with a message that names the variable and never the secret.
#[test]
fn auth_configuration_errors_are_clear_and_keep_secrets() {
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = crate::common::process::binary(env!("CARGO_BIN_EXE_api"));
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run api");
        assert_eq!(out.status.code(), Some(1), "{vars:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(&[("REQUIRE_AUTH", "true")]);
    assert!(
        stderr.contains("REQUIRE_AUTH") && stderr.contains("no API keys are configured"),
        "{stderr}"
    );
    let stderr = run(&[("API_KEYS", "good:a-long-enough-secret-1,bad:tooshort")]);
    assert!(
        stderr.contains("API_KEYS") && stderr.contains("key `bad` is shorter than 16"),
        "{stderr}"
    );
    assert!(!stderr.contains("a-long-enough-secret-1") && !stderr.contains("tooshort"));
    // The console never listens beyond loopback without keys.
    let stderr = run(&[("ADMIN_HOST", "0.0.0.0")]);
    assert!(
        stderr.contains("ADMIN_HOST") && stderr.contains("API_KEYS"),
        "{stderr}"
    );
    let stderr = run(&[("API_KEYS_FILE", "/nonexistent/keys")]);
    assert!(
        stderr.contains("API_KEYS_FILE") && stderr.contains("cannot read it"),
        "{stderr}"
    );
}

/// `REQUIRE_AUTH=true` with keys from a file: the main port wants a key, `/metrics` lives on
/// `METRICS_PORT` without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_with_keys_from_a_file_and_metrics_on_their_own_port() {
    let stream = format!("B_{}", common::unique());
    let dir = std::env::temp_dir().join(format!("nomnom-keys-{}", common::unique()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("api-keys");
    std::fs::write(&file, "# clients\ningest:file-key-0123456789abcdef:order\n").expect("write");
    let (api_port, metrics_port, admin_port) = (free_port(), free_port(), free_port());
    let mut api = Service::spawn(
        "api",
        crate::common::process::binary(env!("CARGO_BIN_EXE_api"))
            .env("NATS_URL", common::nats_url())
            .env("NATS_STREAM", &stream)
            .env("PORT", api_port.to_string())
            .env("METRICS_PORT", metrics_port.to_string())
            .env("ADMIN_PORT", admin_port.to_string())
            .env("REQUIRE_AUTH", "true")
            .env("API_KEYS_FILE", &file),
    );
    api.wait_ok(&format!("http://127.0.0.1:{api_port}/health"), START)
        .await;
    let client = reqwest::Client::new();
    let post = |key: Option<&'static str>| {
        let mut req = client
            .post(format!("http://127.0.0.1:{api_port}/ingest/message/order"))
            .header("content-type", "application/json")
            .body(support::order(1, 1).to_string());
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    assert_eq!(post(None).await.expect("post").status().as_u16(), 401);
    assert_eq!(
        post(Some("file-key-0123456789abcdef"))
            .await
            .expect("post")
            .status()
            .as_u16(),
        202
    );
    let main_metrics = reqwest::get(format!("http://127.0.0.1:{api_port}/metrics"))
        .await
        .expect("get");
    assert_eq!(main_metrics.status().as_u16(), 404);
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("metrics port")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains(r#"nomnom_auth_failures_total{reason="missing"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"nomnom_messages_accepted_total{entity="order"} 1"#));
    // The console: on its own port only; with keys, a key without the `admin` scope is refused.
    let console = |path: &str, key: Option<&'static str>| {
        let mut req = client.get(format!("http://127.0.0.1:{admin_port}{path}"));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send()
    };
    assert_eq!(
        console("/console/", None)
            .await
            .expect("page")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        console("/stats", None)
            .await
            .expect("stats")
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        console("/stats", Some("file-key-0123456789abcdef"))
            .await
            .expect("stats")
            .status()
            .as_u16(),
        403
    );
    let on_ingest_port = reqwest::get(format!("http://127.0.0.1:{api_port}/console/"))
        .await
        .expect("get");
    assert_eq!(on_ingest_port.status().as_u16(), 404);
    assert!(api.terminate().success(), "api exits 0 on SIGTERM");
    common::delete_streams(&stream).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--help` works without any configuration and lists the subcommands.
#[test]
fn help_lists_the_subcommands() {
    for (bin, commands) in [
        (
            env!("CARGO_BIN_EXE_worker"),
            &["dead-letters", "replay-dead-letters", "healthcheck", "load"][..],
        ),
        (env!("CARGO_BIN_EXE_api"), &["healthcheck"][..]),
    ] {
        let out = crate::common::process::binary(bin)
            .arg("--help")
            .env("NATS_STREAM", "has.dots")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{bin}");
        let text = String::from_utf8_lossy(&out.stdout);
        for c in commands {
            assert!(text.contains(c), "{bin} --help does not list {c}:\n{text}");
        }
    }
    let out = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
        .args(["replay-dead-letters", "--help"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--entity") && text.contains("--id"), "{text}");
}

/// Peak resident memory of a process (`VmHWM` in `/proc/<pid>/status`), and its current one
/// (`/proc/<pid>/statm`), in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (peak_kb * 1024, pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_keep_api_memory_growth_under_64_mb() {
    let stream = format!("M_{}", common::unique());
    let port = free_port();
    let mut api = Service::spawn(
        "api",
        crate::common::process::binary(env!("CARGO_BIN_EXE_api"))
            .env("NATS_URL", common::nats_url())
            .env("NATS_STREAM", &stream)
            .env("DATABASE_URL", format!("{}/test", common::pg_admin_url()))
            .env("PORT", port.to_string())
            .env("ADMIN_PORT", "0"),
    );
    let base = format!("http://127.0.0.1:{port}");
    api.wait_ok(&format!("{base}/ready"), START).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Vec<u8>| {
        let request = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = request.send().await.expect("answered");
            let status = r.status().as_u16();
            let text = r.bytes().await.expect("body");
            (
                status,
                text.len(),
                serde_json::from_slice::<serde_json::Value>(&text),
            )
        }
    };
    let order = support::order(1, 4).to_string();
    // Warm up allocator and connections with ordinary traffic first.
    let (status, _, _) = post("/ingest/message/order", order.clone().into_bytes()).await;
    assert_eq!(status, 202);
    let (status, _, _) = post(
        "/ingest/batch/order",
        format!("{order}\n").repeat(100).into_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let (baseline, _) = memory(api.id());
    let valid_batch = format!("{order}\n").repeat(5_000).into_bytes();
    let mut nested = b"{\"order_key\":[".to_vec();
    while nested.len() < 1_000_000 {
        nested.extend_from_slice(b"0,");
    }
    nested.extend_from_slice(b"0]}");
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "1M lines of {}",
            "/ingest/batch/order",
            "{}\n".repeat(1_000_000).into_bytes(),
            413,
        ),
        (
            "10k lines of {}",
            "/ingest/batch/order",
            "{}\n".repeat(10_000).into_bytes(),
            422,
        ),
        (
            "one 15 MiB line",
            "/ingest/batch/order",
            vec![b' '; 15 << 20],
            422,
        ),
        ("5k valid orders", "/ingest/batch/order", valid_batch, 202),
        ("1 MB of numbers", "/ingest/message/order", nested, 422),
    ];
    for (name, path, body, expected) in cases {
        let size = body.len();
        let (status, answer_len, answer) = post(path, body).await;
        let (peak, now) = memory(api.id());
        let growth = peak.saturating_sub(baseline);
        println!(
            "{name} ({size} bytes): {status}, answer {answer_len} bytes, peak RSS +{:.1} MB (now {:.1} MB)",
            growth as f64 / 1e6,
            now as f64 / 1e6
        );
        assert_eq!(status, expected, "{name}: {answer:?}");
        assert!(answer.is_ok(), "{name}: the answer is JSON");
        assert!(answer_len < 1 << 20, "{name}: answer of {answer_len} bytes");
        assert!(growth < 64 << 20, "{name}: peak RSS grew {growth} bytes");
    }
    api.terminate();
    common::delete_streams(&stream).await;
}

use support::memory;

/// The worker's memory follows its byte budget, not the message size: 100 KiB messages with a
/// 4 MiB budget per pull stay far below what the same messages at BATCH_SIZE alone would take
/// (500 × 100 KiB per batch). The bound checked is looser than the one in docs/RELIABILITY.md
/// (debug build): 64 MB + 5 × WORKER_CONCURRENCY × WORKER_MAX_BATCH_BYTES.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_memory_follows_its_byte_budget_with_100_kib_messages() {
    let budget: u64 = 4 << 20;
    let drained = memory::drain(
        env!("CARGO_BIN_EXE_worker"),
        &common::nats_url(),
        &common::pg_admin_url(),
        400,
        100,
        &[("WORKER_MAX_BATCH_BYTES", &budget.to_string())],
    )
    .await
    .expect("drained");
    let bound = (64 << 20) + 5 * 3 * budget;
    println!(
        "400 x 100 KiB, budget 4 MiB: worker peak RSS {:.0} MB (bound {:.0} MB) in {:.1} s",
        drained.peak_rss as f64 / 1e6,
        bound as f64 / 1e6,
        drained.elapsed.as_secs_f64()
    );
    assert!(drained.peak_rss > 0, "RSS was sampled");
    assert!(
        drained.peak_rss < bound,
        "peak RSS {} bytes",
        drained.peak_rss
    );
}

/// Open file descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sockets that send nothing, or only the first byte of the HTTP/2 preface (hyper-util's
/// protocol sniffing waits for more with no timer of its own), are closed by the api binary at
/// its default header timeout (10 s): its open descriptors return to what they were within the
/// timeout plus 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_partial_preface_sockets_are_closed_within_the_header_timeout() {
    let id = common::unique();
    let stream = format!("S_{id}");
    let db_url = format!("{}/test", common::pg_admin_url());
    let port = free_port();
    let mut api = Service::spawn("api", &mut api_command(&stream, &db_url, port));
    api.wait_ok(&format!("http://127.0.0.1:{port}/health"), START)
        .await;
    // The health checks' connections close with their clients.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = open_fds(api.id());
    let mut sockets = Vec::new();
    for i in 0..400 {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        if i % 2 == 1 {
            tokio::io::AsyncWriteExt::write_all(&mut socket, b"P")
                .await
                .expect("one byte");
        }
        sockets.push(socket);
    }
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = open_fds(api.id());
    assert!(
        held >= baseline + 390,
        "{held} descriptors, {baseline} before"
    );
    let mut now = held;
    while now > baseline && opened.elapsed() < Duration::from_secs(12) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = open_fds(api.id());
    }
    println!(
        "400 silent sockets: api descriptors {baseline} → {held} → {now} after {:?}",
        opened.elapsed()
    );
    assert!(
        now <= baseline,
        "{now} descriptors after {:?} (baseline {baseline})",
        opened.elapsed()
    );
    drop(sockets);
    api.terminate();
    common::delete_streams(&stream).await;
}

/// A JSON array of `lines` orders of about `line_bytes` each (a comment pads them), with
/// order keys from `first`.
fn padded_orders(first: u32, lines: u32, line_bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines as usize * (line_bytes + 2) + 2);
    out.push(b'[');
    for n in first..first + lines {
        let mut order = support::order(n, 1);
        let bare = order.to_string().len();
        order["comment"] =
            serde_json::Value::String("x".repeat(line_bytes.saturating_sub(bare + 4)));
        if n > first {
            out.push(b',');
        }
        out.extend_from_slice(order.to_string().as_bytes());
    }
    out.push(b']');
    out
}

/// The byte budget of request bodies, at its default: 16 concurrent maximum-size batches
/// (16 MiB JSON arrays of 10 000 orders) keep the api binary's peak RSS under the bound, every
/// answer is 202 or 503 (+ `Retry-After`), and every accepted line is stored; normal traffic —
/// 30 clients of single orders and 4 concurrent batches of 10 000 lines — is never refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_in_flight_stay_within_the_byte_budget() {
    const BOUND: u64 = 240 * 1024 * 1024;
    let id = common::unique();
    let stream = format!("BB_{id}");
    let db = common::TestDb::create().await;
    let port = free_port();
    let mut api = Service::spawn("api", &mut api_command(&stream, &db.url, port));
    let base = format!("http://127.0.0.1:{port}");
    api.wait_ok(&format!("{base}/ready"), START).await;
    let client = reqwest::Client::new();
    let post = |path: &'static str, body: Vec<u8>| {
        let request = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = request.send().await.expect("answered");
            let status = r.status().as_u16();
            let retry_after = r.headers().get("retry-after").is_some();
            let json: serde_json::Value = r.json().await.unwrap_or_default();
            (status, retry_after, json)
        }
    };
    // Normal traffic first: never refused.
    let batches: Vec<Vec<u8>> = (0..4)
        .map(|b| padded_orders(1 + b * 10_000, 10_000, 900))
        .collect();
    let singles = (0..30u32).map(|c| {
        let post = &post;
        async move {
            let mut refused = 0;
            for n in 0..20u32 {
                let body = support::order(100_000 + c * 100 + n, 2).to_string();
                let (status, _, _) = post("/ingest/message/order", body.into_bytes()).await;
                refused += u32::from(status != 202);
            }
            refused
        }
    });
    let (batch_answers, single_refusals) = tokio::join!(
        futures::future::join_all(batches.into_iter().map(|b| post("/ingest/batch/order", b))),
        futures::future::join_all(singles)
    );
    for (status, _, json) in &batch_answers {
        assert_eq!(*status, 202, "{json}");
    }
    assert_eq!(
        single_refusals.iter().sum::<u32>(),
        0,
        "single orders refused"
    );
    let normal_peak = memory(api.id()).0;
    // Then 16 maximum-size batches at once.
    let max = padded_orders(200_000, 10_000, 1_670);
    assert!(
        max.len() <= 16 * 1024 * 1024 && max.len() > 16_000_000,
        "{}",
        max.len()
    );
    let answers = futures::future::join_all((0..16u32).map(|b| {
        let body = padded_orders(200_000 + b * 10_000, 10_000, 1_670);
        post("/ingest/batch/order", body)
    }))
    .await;
    let peak = memory(api.id()).0;
    let mut accepted = 0u64;
    let mut refused = 0;
    for (status, retry_after, json) in &answers {
        match status {
            202 => accepted += json["accepted"].as_u64().expect("accepted"),
            503 => {
                refused += 1;
                assert!(retry_after, "{json}");
                assert!(
                    json["error"]
                        .as_str()
                        .unwrap_or("")
                        .contains("request bytes"),
                    "{json}"
                );
            }
            other => panic!("{other}: {json}"),
        }
    }
    println!(
        "api peak RSS {} MiB after normal traffic, {} MiB after 16 max-size batches ({} refused, {accepted} lines accepted)",
        normal_peak >> 20,
        peak >> 20,
        refused
    );
    assert!(
        refused > 0 && accepted > 0,
        "{refused} refused, {accepted} accepted"
    );
    assert!(peak < BOUND, "peak RSS {} MiB", peak >> 20);
    // Every accepted line is stored.
    let metrics_port = free_port();
    let mut worker = Service::spawn(
        "worker",
        &mut worker_command(&stream, &format!("c_{id}"), &db.url, metrics_port),
    );
    worker
        .wait_ok(&format!("http://127.0.0.1:{metrics_port}/health"), START)
        .await;
    let expected = 40_000 + 600 + accepted as i64;
    db.wait_at_least(
        "SELECT 1 FROM message_status s, generate_series(1, COALESCE(s.members, 1))",
        expected,
        Duration::from_secs(300),
        "accepted messages stored",
    )
    .await;
    assert_eq!(db.count("SELECT 1 FROM orders").await, expected);
    drop(worker);
    drop(api);
    common::delete_streams(&stream).await;
    db.drop_db().await;
}

/// `worker replay-dead-letters` pages through the dead letters: 120 of 700 KB each (84 MB)
/// are all published again while the process's peak RSS stays under 64 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_pages_through_dead_letters_in_bounded_memory() {
    const BOUND: u64 = 64 * 1024 * 1024;
    let id = common::unique();
    let stream = format!("RP_{id}");
    let db = common::TestDb::create().await;
    nomnom::store::pg::prepare_schema(&db.url)
        .await
        .expect("schema");
    db.client()
        .await
        .batch_execute(
            "INSERT INTO dead_letters (message_id, entity, body, reason, attempts) \
             SELECT gen_random_uuid(), 'Order', \
                    convert_to('{\"order_key\":\"R' || i || '\",\"comment\":\"' || repeat('x', 700000) || '\"}', 'UTF8'), \
                    'refused', 1 \
             FROM generate_series(1, 120) i",
        )
        .await
        .expect("dead letters");
    let mut child = worker_command(&stream, &format!("c_{id}"), &db.url, free_port())
        .arg("replay-dead-letters")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("replay runs");
    let mut peak = 0;
    while child.try_wait().expect("wait").is_none() {
        peak = peak.max(memory(child.id()).0);
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("120 replayed, 0 skipped"), "{stdout}");
    println!(
        "replay of 120 dead letters of 700 KB: peak RSS {} MiB",
        peak >> 20
    );
    assert!(peak > 0 && peak < BOUND, "peak RSS {} MiB", peak >> 20);
    // The records stay until their copies are stored.
    assert_eq!(db.count("SELECT 1 FROM dead_letters").await, 120);
    common::delete_streams(&stream).await;
    db.drop_db().await;
}

/// An IPv4 address of this machine other than loopback, if it has one (the address a UDP socket
/// would send from; nothing is sent).
fn non_loopback_ipv4() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("10.255.255.255:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// `worker dead-letters`: a page as a table and as JSON, filters, one in detail, and a discard
/// that takes it out of the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_commands_list_show_filter_and_discard() {
    use nomnom::store::{DeadLetter, Store as _};
    let db = common::TestDb::create().await;
    let store = nomnom::store::pg::PgStore::open(&db.url, 1).expect("store");
    store.prepare().await.expect("prepared");
    let mut ids = Vec::new();
    for (n, reason) in ["total_price: expected a decimal", "order_key: missing"]
        .iter()
        .enumerate()
    {
        let id = uuid::Uuid::now_v7();
        ids.push(id);
        store
            .record_dead_letter(&DeadLetter {
                message_id: id,
                entity: "Order".into(),
                body: format!("{{\"order_key\": {n}, \"note\": \"<script>\"}}").into(),
                class: nomnom::store::ReasonClass::RefusedByDatabase,
                reason: (*reason).into(),
                attempts: 1,
                received_at: chrono::Utc::now(),
                position: Default::default(),
                record_id: format!("{id}:1"),
            })
            .await
            .expect("recorded");
    }
    let worker = |args: &[&str]| {
        let out = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
            .arg("dead-letters")
            .args(args)
            .env("DATABASE_URL", &db.url)
            .output()
            .expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, table, err) = worker(&["list", "--entity", "order"]);
    assert!(ok, "{err}");
    assert!(
        table.contains(&ids[0].to_string()) && table.contains(&ids[1].to_string()),
        "{table}"
    );
    assert!(table.contains("2 shown"), "{table}");
    let (ok, table, err) = worker(&["list", "--limit", "1"]);
    assert!(ok, "{err}");
    let cursor = table
        .split("--after ")
        .nth(1)
        .map(str::trim)
        .expect("a cursor for the next page");
    let (ok, next, err) = worker(&["list", "--limit", "1", "--after", cursor]);
    assert!(ok, "{err}");
    assert!(
        next.contains(&ids[1].to_string()) && next.contains("1 shown"),
        "{next}"
    );
    let (ok, json, err) = worker(&["list", "--reason", "DECIMAL", "--since", "1h", "--json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["message_id"], ids[0].to_string());
    assert_eq!(rows[0]["body"]["note"], "<script>");
    let (ok, shown, err) = worker(&["show", &ids[0].to_string()]);
    assert!(ok, "{err}");
    assert!(
        shown.contains("\"order_key\": 0") && shown.contains("expected a decimal"),
        "{shown}"
    );
    let (ok, _, err) = worker(&["list", "--since", "yesterday"]);
    assert!(!ok && err.contains("--since"), "{err}");
    // A dead letter whose body is a valid order (the database refused it): the dry run counts
    // it as passing now, the other two as refused, and publishes nothing.
    let valid = uuid::Uuid::now_v7();
    store
        .record_dead_letter(&DeadLetter {
            message_id: valid,
            entity: "order".into(),
            body: support::order(9, 1).to_string().into(),
            class: nomnom::store::ReasonClass::RefusedByDatabase,
            reason: "check constraint".into(),
            attempts: 1,
            received_at: chrono::Utc::now(),
            position: Default::default(),
            record_id: format!("{valid}:1"),
        })
        .await
        .expect("recorded");
    let (ok, dry, err) = worker(&["dry-run"]);
    assert!(ok, "{err}");
    assert!(dry.contains("1 of 3 would pass validation now"), "{dry}");
    assert!(dry.contains("would be refused"), "{dry}");
    let (ok, said, err) = worker(&["discard", "--id", &ids[0].to_string(), "--note", "a test"]);
    assert!(ok, "{err}");
    assert!(said.contains("discarded"), "{said}");
    let (ok, table, _) = worker(&["list"]);
    assert!(
        ok && !table.contains(&ids[0].to_string()) && table.contains("2 shown"),
        "{table}"
    );
    let (ok, _, err) = worker(&["discard", "--id", &ids[0].to_string(), "--note", "again"]);
    assert!(!ok && err.contains("no dead letter"), "{err}");
    // The audit: the dry run and the discard, by the command line's operator.
    let audit = db
        .rows(
            "SELECT action || ':' || count || ':' || (who LIKE 'cli:%') \
             FROM admin_actions ORDER BY id",
        )
        .await;
    let audit: Vec<String> = audit.into_iter().filter_map(|mut r| r.remove(0)).collect();
    assert_eq!(audit, ["dry_run:1:true", "discard:1:true"]);
    db.drop_db().await;
}

/// The api reads `.env` from its current directory: a setting the environment does not set
/// comes from the file (`METRICS_PORT`, `HOST`), one it sets wins over the file (`PORT`); `HOST`
/// binds the api to that address only; a line that is not `NAME=value` stops it with the file
/// and the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_dotenv_where_the_environment_is_silent() {
    let dir = std::env::temp_dir().join(format!("nomnom-dotenv-{}", common::unique()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (file_port, port, metrics_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.join(".env"),
        format!(
            "# settings of a local run\nPORT={file_port}\nHOST=127.0.0.1\nMETRICS_PORT={metrics_port}\n"
        ),
    )
    .expect(".env");
    let stream = format!("T_{}", common::unique());
    let mut command =
        common::process::api_command(&stream, "postgres://postgres@127.0.0.1:1/none", port);
    command
        .current_dir(&dir)
        .env_remove(nomnom::process::ENV_FILE_VAR);
    let mut api = Service::spawn("api", &mut command);
    api.wait_ok(&format!("http://127.0.0.1:{port}/health"), START)
        .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .expect("METRICS_PORT from .env");
    assert_eq!(metrics.status(), 200);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", file_port)).is_err(),
        "the environment's PORT wins over the file's"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.2", port)).is_err(),
        "HOST=127.0.0.1 binds that address only"
    );
    api.terminate();

    // The shipped .env.example copied to .env with compose's passwords filled in, as the
    // README says: a local run still starts (the binaries never read compose's names).
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
        .expect(".env.example");
    let filled = example
        .replace(
            "\nPOSTGRES_PASSWORD=\n",
            "\nPOSTGRES_PASSWORD=pg-secret-1\n",
        )
        .replace(
            "\nNATS_SERVER_PASSWORD=\n",
            "\nNATS_SERVER_PASSWORD=nats-secret-1\n",
        );
    assert_ne!(filled, example, "compose's passwords are in .env.example");
    std::fs::write(dir.join(".env"), filled).expect(".env");
    let mut command =
        common::process::api_command(&stream, "postgres://postgres@127.0.0.1:1/none", port);
    command
        .current_dir(&dir)
        .env_remove(nomnom::process::ENV_FILE_VAR);
    let mut api = Service::spawn("api", &mut command);
    api.wait_ok(&format!("http://127.0.0.1:{port}/health"), START)
        .await;
    api.terminate();

    std::fs::write(dir.join(".env"), "PORT=8080\nthis is not a setting\n").expect(".env");
    let out = common::process::api_command(&stream, "postgres://postgres@127.0.0.1:1/none", port)
        .current_dir(&dir)
        .env_remove(nomnom::process::ENV_FILE_VAR)
        .output()
        .expect("api");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(".env") && stderr.contains("this is not a setting"),
        "{stderr}"
    );
    common::delete_streams(&stream).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `NATS_STREAM_MAX_AGE_SECS` shorter than an hour is refused at start (the stream would remove
/// messages no worker has stored); the limits given are the stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limits_are_applied_and_a_short_max_age_is_refused() {
    let stream = format!("T_{}", common::unique());
    let out = api_command(&stream, "postgres://postgres@127.0.0.1:1/none", free_port())
        .env("NATS_STREAM_MAX_AGE_SECS", "60")
        .output()
        .expect("api");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("NATS_STREAM_MAX_AGE_SECS") && stderr.contains("3600"),
        "{stderr}"
    );

    let port = free_port();
    let mut command = api_command(&stream, "postgres://postgres@127.0.0.1:1/none", port);
    command
        .env("NATS_STREAM_MAX_AGE_SECS", "7200")
        .env("NATS_STREAM_MAX_BYTES", "1000000");
    let mut api = Service::spawn("api", &mut command);
    api.wait_ok(&format!("http://127.0.0.1:{port}/health"), START)
        .await;
    let js =
        async_nats::jetstream::new(async_nats::connect(common::nats_url()).await.expect("NATS"));
    let config = js
        .get_stream(&stream)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    assert_eq!(config.max_age, Duration::from_secs(7200));
    assert_eq!(config.max_bytes, 1_000_000);
    api.terminate();
    common::delete_streams(&stream).await;
}
