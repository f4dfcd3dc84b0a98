//! Fault battery (short versions; `scripts/faults.sh` runs the long ones). Every load loop is
//! bounded in count and time and talks only to 127.0.0.1. NATS faults use NATS servers this
//! test starts itself on free ports, so the shared server is never disturbed.
//!
//! Sizes come from the environment: `FAULT_MESSAGES` (default 600) messages per scenario.

use crate::support::PublishDirect;
use crate::{common, support};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Pipeline;
use support::order as tpch_order;
use support::servers::{NatsNode, OwnPostgres, free_port, signal};

fn messages() -> u64 {
    std::env::var("FAULT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/fault-data")
        .join(format!("{name}-{}", common::unique()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Posts one order like a well-behaved client: with an `Idempotency-Key`, retrying the same
/// request until it is answered 202 (or `deadline` passes). Returns whether it was accepted.
async fn post_until_accepted(
    client: &reqwest::Client,
    base: &str,
    k: u64,
    lines: u32,
    deadline: Instant,
) -> bool {
    let body = tpch_order(k as u32, lines).to_string();
    while Instant::now() < deadline {
        let resp = client
            .post(format!("{base}/ingest/message/order"))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("order-{k}"))
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match resp {
            Ok(r) if r.status().as_u16() == 202 => return true,
            Ok(r) => {
                if std::env::var_os("FAULT_DEBUG").is_some() {
                    eprintln!("{} {}", r.status(), r.text().await.unwrap_or_default());
                }
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Posts `n` orders (line items 1–7) with 8 concurrent clients that retry with idempotency
/// keys; returns (accepted, line items of the accepted orders).
async fn load(base: &str, n: u64, accepted_so_far: Arc<AtomicU64>) -> (u64, u64) {
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicU64::new(1));
    let lines_total = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, next, lines_total, accepted, base) = (
            client.clone(),
            next.clone(),
            lines_total.clone(),
            accepted_so_far.clone(),
            base.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::SeqCst);
                if k > n || Instant::now() > deadline {
                    break;
                }
                let lines = 1 + (k % 7) as u32;
                if post_until_accepted(&client, &base, k, lines, deadline).await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    lines_total.fetch_add(u64::from(lines), Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        accepted_so_far.load(Ordering::SeqCst),
        lines_total.load(Ordering::SeqCst),
    )
}

/// Waits (at most 60 s) until a third of the messages are accepted: the moment to inject a fault.
async fn wait_for_a_third(accepted: &AtomicU64) {
    let start = Instant::now();
    while accepted.load(Ordering::SeqCst) < messages() / 3
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every accepted order, and exactly its line items, are in PostgreSQL, each message once —
/// including requests whose first publish was stored but answered 503 (ack lost in the fault):
/// their retries carry the same idempotency key.
async fn assert_all_landed(p: &Pipeline, accepted: u64, lines: u64) {
    let accepted = i64::try_from(accepted).expect("count");
    p.db.wait_at_least(
        "SELECT 1 FROM message_status",
        accepted,
        Duration::from_secs(120),
        "accepted messages landed",
    )
    .await;
    assert_eq!(p.db.count("SELECT 1 FROM message_status").await, accepted);
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, accepted);
    assert_eq!(
        p.db.count("SELECT 1 FROM order_line_items").await,
        i64::try_from(lines).expect("count")
    );
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_with_sigkill_every_second_loses_and_duplicates_nothing() {
    let p = Pipeline::paused_with(|c| c.ack_wait = Duration::from_secs(2)).await;
    let spawn_worker = || {
        crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
            .env("NATS_URL", common::nats_url())
            .env("NATS_STREAM", &p.stream)
            .env("NATS_CONSUMER", &p.worker_config.consumer)
            .env("DATABASE_URL", &p.db.url)
            .env("ACK_WAIT_SECS", "2")
            .env("BATCH_SIZE", "50")
            .env("WORKER_METRICS_PORT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker binary")
    };
    let done = Arc::new(AtomicBool::new(false));
    let loader = {
        let (base, done) = (p.base.clone(), done.clone());
        tokio::spawn(async move {
            let r = load(&base, messages(), Arc::new(AtomicU64::new(0))).await;
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    let mut worker = spawn_worker();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(700)).await;
        signal(&worker, "-KILL");
        let _ = worker.wait();
        kills += 1;
        worker = spawn_worker();
    }
    let (accepted, lines) = loader.await.expect("loader");
    println!("kill -9: {accepted} accepted, {lines} line items, worker killed {kills} times");
    assert!(kills >= 1, "the worker was never killed");
    assert!(accepted > 0);
    assert_all_landed(&p, accepted, lines).await;
    signal(&worker, "-TERM");
    let _ = worker.wait();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_run_loses_no_accepted_message() {
    let port = free_port();
    let store = scratch_dir("nats-restart");
    let mut nats = NatsNode::start(
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
        ],
        port,
    );
    let url = format!("nats://127.0.0.1:{port}");
    let mut p = Pipeline::paused_with(|c| c.nats.url = url.clone()).await;
    p.start_worker().await;
    let accepted = Arc::new(AtomicU64::new(0));
    let loader = {
        let (base, accepted) = (p.base.clone(), accepted.clone());
        tokio::spawn(async move { load(&base, messages(), accepted).await })
    };
    // Restart NATS once a third of the messages are in.
    wait_for_a_third(&accepted).await;
    nats.stop("-TERM");
    // While NATS is down the api answers 503 with Retry-After (never a 202 it cannot keep).
    let probe = tpch_order(999_999, 1).to_string();
    let down = reqwest::Client::new()
        .post(format!("{}/ingest/message/order", p.base))
        .header("content-type", "application/json")
        .header("idempotency-key", "order-999999")
        .body(probe)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .expect("the api answers while NATS is down");
    assert_eq!(down.status().as_u16(), 503);
    assert!(down.headers().contains_key("retry-after"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.spawn();
    // The client retries the probe with its key once NATS is back.
    let deadline = Instant::now() + Duration::from_secs(60);
    assert!(post_until_accepted(&reqwest::Client::new(), &p.base, 999_999, 1, deadline).await);
    let (accepted, lines) = loader.await.expect("loader");
    let (accepted, lines) = (accepted + 1, lines + 1);
    println!("NATS restart: {accepted} accepted, {lines} line items");
    assert!(accepted > 0);
    assert_all_landed(&p, accepted, lines).await;
    p.stop().await;
    drop(nats);
    let _ = std::fs::remove_dir_all(store);
}

/// Stream setup at startup waits while JetStream is not there yet (a server restarted with
/// JetStream on the same port is found), and names JetStream when it never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_setup_waits_for_jetstream_and_names_it_when_it_never_comes() {
    let plain = |port: u16| {
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ]
    };
    let config = |port: u16| nomnom::nats::NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        stream: format!("LATE_{}", common::unique()),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        auth: Default::default(),
        limits: Default::default(),
    };
    let (late_port, never_port) = (free_port(), free_port());
    let mut late = NatsNode::start(plain(late_port), late_port);
    let never = NatsNode::start(plain(never_port), never_port);
    let store = scratch_dir("nats-late-js");
    let (late_config, never_config) = (config(late_port), config(never_port));
    let late_js = nomnom::nats::connect(&late_config).await.expect("connects");
    let never_js = nomnom::nats::connect(&never_config)
        .await
        .expect("connects");
    let start = Instant::now();
    let waiting = tokio::spawn(async move {
        let result = nomnom::nats::ensure_stream(&late_js, &late_config).await;
        (result.map(drop), start.elapsed())
    });
    let never_comes = tokio::spawn(async move {
        let result = nomnom::nats::ensure_stream(&never_js, &never_config).await;
        (result.map(drop), start.elapsed())
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    late.stop("-TERM");
    late.args
        .extend(["-js".into(), "-sd".into(), store.display().to_string()]);
    late.spawn();
    let (result, took) = waiting.await.expect("task");
    assert!(result.is_ok(), "{:?}", result.err().map(|e| e.to_string()));
    assert!(took >= Duration::from_secs(2), "set up after {took:?}");
    let (result, took) = never_comes.await.expect("task");
    let error = result.expect_err("no JetStream, no stream").to_string();
    assert!(
        error.contains("is JetStream enabled on the server"),
        "{error}"
    );
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
    println!("without JetStream, gave up after {took:?}: {error}");
    drop((late, never));
    let _ = std::fs::remove_dir_all(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_survives_losing_a_node() {
    let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let route_list = routes
        .iter()
        .map(|r| format!("nats://127.0.0.1:{r}"))
        .collect::<Vec<_>>()
        .join(",");
    let cluster = format!("c{}", common::unique());
    let mut nodes: Vec<NatsNode> = (0..3)
        .map(|i| {
            let store = scratch_dir(&format!("cluster-n{i}"));
            NatsNode::start(
                vec![
                    "-a".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    clients[i].to_string(),
                    "-n".into(),
                    format!("n{i}"),
                    "-js".into(),
                    "-sd".into(),
                    store.display().to_string(),
                    "--cluster_name".into(),
                    cluster.clone(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".into(),
                    route_list.clone(),
                ],
                clients[i],
            )
        })
        .collect();
    let url = clients
        .iter()
        .map(|c| format!("nats://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    // The cluster elects a JetStream leader first; creating the R3 stream waits for it.
    let nats = nomnom::nats::NatsConfig {
        url: url.clone(),
        stream: format!("R3_{}", common::unique()),
        duplicate_window: Duration::from_secs(120),
        replicas: 3,
        auth: Default::default(),
        limits: Default::default(),
    };
    let js = nomnom::nats::connect(&nats)
        .await
        .expect("cluster reachable");
    let start = Instant::now();
    while nomnom::nats::ensure_stream(&js, &nats).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no JetStream cluster"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut p = Pipeline::paused_with(|c| {
        c.nats = nats.clone();
    })
    .await;
    p.start_worker().await;
    let accepted = Arc::new(AtomicU64::new(0));
    let loader = {
        let (base, accepted) = (p.base.clone(), accepted.clone());
        tokio::spawn(async move { load(&base, messages(), accepted).await })
    };
    wait_for_a_third(&accepted).await;
    nodes[1].stop("-KILL");
    let (accepted, lines) = loader.await.expect("loader");
    println!("3-node cluster, one node killed: {accepted} accepted, {lines} line items");
    assert!(accepted > 0);
    assert_all_landed(&p, accepted, lines).await;
    p.stop().await;
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_malformed_messages_are_dead_lettered_with_reasons() {
    let p = Pipeline::start().await;
    let valid = tpch_order(1, 2);
    let envelope = |body: &str, entity: &str| {
        format!(
            r#"{{"message_id":"{}","entity":"{entity}","received_at":"2026-01-01T00:00:00Z","body":{body}}}"#,
            uuid::Uuid::new_v4()
        )
        .into_bytes()
    };
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for i in 0..1000u32 {
        let payload = match i % 10 {
            0 => b"not json at all".to_vec(),
            1 => vec![0xff, 0xfe, b'{', 0x80],
            2 => envelope(&valid.to_string(), "Invoice"),
            3 => {
                let mut o = valid.clone();
                o["ship_priority"] = serde_json::json!("high");
                envelope(&o.to_string(), "Order")
            }
            4 => {
                let mut o = valid.clone();
                o.as_object_mut().expect("object").remove("order_key");
                envelope(&o.to_string(), "Order")
            }
            5 => {
                let mut o = valid.clone();
                o["line_items"][0]["line_number"] = serde_json::json!(99_999_999_999i64);
                envelope(&o.to_string(), "Order")
            }
            6 => envelope(
                &format!("{}1{}", "[".repeat(1000), "]".repeat(1000)),
                "Order",
            ),
            7 => envelope("\"a string body\"", "Order"),
            8 => {
                let mut o = valid.clone();
                o["order_date"] = serde_json::json!("2024-13-45");
                envelope(&o.to_string(), "Order")
            }
            _ => br#"{"message_id":"not-a-uuid","entity":"Order","body":{}}"#.to_vec(),
        };
        payloads.push(payload);
    }
    for payload in payloads {
        p.publish_raw(payload).await;
    }
    // The worker is still healthy: a valid message after the poison ones is processed.
    let (status, _) = p
        .post("/ingest/message/order", &tpch_order(2, 3).to_string())
        .await;
    assert_eq!(status, 202);
    p.db.wait_count("SELECT 1 FROM dead_letters", 1000).await;
    p.db.wait_count("SELECT 1 FROM message_status WHERE status = 'processed'", 1)
        .await;
    assert_eq!(
        p.db.count("SELECT 1 FROM dead_letters WHERE reason = '' OR reason IS NULL")
            .await,
        0
    );
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 1);
    p.stop().await;
}

/// A Prometheus sample's value from a text exposition.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

async fn scrape(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The worker binary with nothing but its addresses set: every other setting is its default.
fn default_worker(p: &Pipeline, metrics_port: u16, log: &std::path::Path) -> Child {
    crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
        .env("NATS_URL", common::nats_url())
        .env("NATS_STREAM", &p.stream)
        .env("NATS_CONSUMER", &p.worker_config.consumer)
        .env("DATABASE_URL", &p.db.url)
        .env("WORKER_METRICS_PORT", metrics_port.to_string())
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("worker binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_postgres_outage_at_default_settings_costs_no_dead_letter() {
    let pg = OwnPostgres::start();
    let db = common::TestDb::create_on(&pg.url(), "postgres").await;
    let p = Pipeline::paused_on(db, |_| {}).await;
    let metrics_port = free_port();
    let log = pg.dir.join("worker.log");
    let mut worker = default_worker(&p, metrics_port, &log);
    let accepted = Arc::new(AtomicU64::new(0));
    let loader = {
        let (base, accepted) = (p.base.clone(), accepted.clone());
        tokio::spawn(async move { load(&base, messages(), accepted).await })
    };
    wait_for_a_third(&accepted).await;
    pg.pg_ctl_stop("fast");
    let outage = Duration::from_secs(
        std::env::var("FAULT_PG_SERVER_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let stopped = Instant::now();
    // Accepting needs NATS only: the api stays ready and keeps taking messages.
    let (ready, _) = p.get("/ready").await;
    assert_eq!(ready, 200, "/ready follows what accepting needs");
    let (status, _) = p
        .post("/ingest/message/order", &tpch_order(999_999, 2).to_string())
        .await;
    assert_eq!(status, 202, "the api accepts while PostgreSQL is down");
    let mut seen_down = false;
    while stopped.elapsed() < outage {
        let text = scrape(metrics_port).await;
        seen_down |= sample(&text, "nomnom_worker_database_up") == Some(0.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    pg.pg_ctl_start();
    let (accepted, lines) = loader.await.expect("loader");
    println!(
        "PostgreSQL server stopped {} s at default settings: {accepted} (+1) accepted",
        outage.as_secs()
    );
    assert_all_landed(&p, accepted + 1, lines + 2).await;
    let dead = p.db.count("SELECT 1 FROM dead_letters").await;
    println!(
        "PostgreSQL server outage: {} stored, {dead} dead letters",
        accepted + 1
    );
    assert!(seen_down, "/metrics showed the outage");
    let start = Instant::now();
    let mut text = scrape(metrics_port).await;
    while sample(&text, "nomnom_worker_database_up") != Some(1.0)
        && start.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        text = scrape(metrics_port).await;
    }
    signal(&worker, "-TERM");
    let _ = worker.wait();
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        sample(&text, "nomnom_worker_database_up"),
        Some(1.0),
        "{log}"
    );
    assert_eq!(
        sample(&text, "nomnom_worker_database_outages_total"),
        Some(1.0),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "no ANSI escapes in a log file");
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    let (started, summaries, ended) = (
        count("database unavailable"),
        count("database still unavailable"),
        count("database available again"),
    );
    println!("outage log lines: {started} start, {summaries} summaries, {ended} end");
    assert_eq!(started, 1, "{log}");
    assert_eq!(ended, 1, "{log}");
    assert!(
        summaries <= (outage.as_secs() / 30 + 1) as usize,
        "summaries every 30 s: {log}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_every_delivery_dies_with_the_worker_ends_dead_lettered() {
    let p = Pipeline::paused_with(|_| {}).await;
    // This one order's insert hangs on the server, so the worker is still holding it when the
    // test kills it.
    p.db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION hang() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_sleep(3600); RETURN NEW; END $$; \
             CREATE TRIGGER hang BEFORE INSERT ON orders FOR EACH ROW \
               WHEN (NEW.clerk = 'Clerk#hang') EXECUTE FUNCTION hang()",
        )
        .await
        .expect("trigger");
    let mut order = tpch_order(1, 2);
    order["clerk"] = serde_json::json!("Clerk#hang");
    let (status, answer) = p.post("/ingest/message/order", &order.to_string()).await;
    assert_eq!(status, 202);
    let id = answer["message_id"].as_str().expect("id").to_string();
    let spawn = || {
        crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
            .env("NATS_URL", common::nats_url())
            .env("NATS_STREAM", &p.stream)
            .env("NATS_CONSUMER", &p.worker_config.consumer)
            .env("DATABASE_URL", &p.db.url)
            .env("MAX_DELIVER", "2")
            .env("ACK_WAIT_SECS", "2")
            .env("WORKER_METRICS_PORT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("worker binary")
    };
    for _delivery in 1..=2 {
        let mut worker = spawn();
        let pid = p.db.sleeping_backend().await;
        signal(&worker, "-KILL");
        let _ = worker.wait();
        p.db.terminate_backend(pid).await;
    }
    // Delivery 3 is over the budget: the worker dead-letters it without writing.
    let mut worker = spawn();
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    let rows =
        p.db.rows("SELECT message_id::text, attempts::text, reason FROM dead_letters")
            .await;
    assert_eq!(rows[0][0].as_deref(), Some(id.as_str()));
    assert_eq!(rows[0][1].as_deref(), Some("3"));
    let reason = rows[0][2].clone().unwrap_or_default();
    assert!(reason.contains("without an outcome"), "{reason}");
    let (_, status) = p.get(&format!("/ingest/status/{id}")).await;
    assert_eq!(status["status"], "dead_lettered", "{status}");
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 0);
    signal(&worker, "-TERM");
    let _ = worker.wait();
    p.stop().await;
}

/// The request timeout cuts reading a request, never its publishing: with NATS paused (SIGSTOP,
/// a server of the test's own) for 3 s while a batch and a single message publish, and a request
/// timeout of 1 s, both are answered once JetStream has acked — 202 with every line accepted —
/// and the stream holds exactly what the answers say was stored (before, they were answered 408
/// "send it again" after 1 s while their messages were being stored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_never_hides_a_stored_message() {
    let port = free_port();
    let store = scratch_dir("nats-paused");
    let nats = NatsNode::start(
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
        ],
        port,
    );
    let config = nomnom::nats::NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        stream: format!("PAUSE_{}", common::unique()),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        auth: Default::default(),
        limits: Default::default(),
    };
    let js = nomnom::nats::connect(&config).await.expect("NATS");
    nomnom::nats::ensure_stream(&js, &config)
        .await
        .expect("stream");
    let db = std::sync::Arc::new(
        nomnom::store::pg::PgStore::open(&format!("{}/test", common::pg_admin_url()), 1)
            .expect("store"),
    );
    let app = nomnom::api::router(nomnom::api::AppState::new(
        js.clone(),
        config.stream.clone(),
        db,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        let limits = nomnom::api::HttpLimits {
            request_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        nomnom::api::serve(listener, app, &limits, until.cancelled_owned()).await;
    });
    let batch: String = (1..=600)
        .map(|n| format!("{}\n", tpch_order(n, 1)))
        .collect();
    let client = reqwest::Client::new();
    let post = |path: &str, body: String| {
        client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    nats.signal("-STOP");
    let started = Instant::now();
    let answers = tokio::spawn(futures::future::join(
        post("/ingest/batch/order", batch),
        post("/ingest/message/order", tpch_order(601, 1).to_string()),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.signal("-CONT");
    let (batch_answer, single_answer) = answers.await.expect("requests");
    let elapsed = started.elapsed();
    let batch_answer = batch_answer.expect("batch answered");
    assert_eq!(batch_answer.status(), 202);
    let batch_json: serde_json::Value = batch_answer.json().await.expect("json");
    let single_answer = single_answer.expect("single answered");
    assert_eq!(single_answer.status(), 202);
    assert!(
        elapsed >= Duration::from_secs(3),
        "answered after {elapsed:?}, before NATS came back"
    );
    assert_eq!(batch_json["accepted"], 600, "{batch_json}");
    assert_eq!(common::stream_members(&js, &config.stream).await, 601);
    stop.cancel();
    let _ = js.delete_stream(&config.stream).await;
    drop(nats);
    let _ = std::fs::remove_dir_all(&store);
}

/// `worker load` of a customer file while every process it needs is killed with SIGKILL once —
/// the loader, the worker, nats-server and PostgreSQL (the postmaster and every backend) — each
/// at a later point of the load, the loader run again (the same command) whenever it died or
/// failed, the rest restarted: at the end the table holds every row of the file exactly once,
/// with its values, and a last run of the command finds everything loaded. NATS and PostgreSQL
/// are servers of this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_survives_sigkill_of_the_loader_the_worker_nats_and_postgres() {
    let rows: u64 = std::env::var("FAULT_LOAD_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120_000);
    let dir = scratch_dir("load-sigkill");
    let file = dir.join("customers.tbl");
    {
        use std::io::Write as _;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("file"));
        for i in 1..=rows {
            writeln!(
                out,
                "{i}|Customer#{i:09}|addr {i}|{}|25-989-741-2988|{}.56|BUILDING|c {i}|",
                i % 25,
                i % 9999
            )
            .expect("write");
        }
    }
    let nats_port = free_port();
    let mut nats = NatsNode::start(
        vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            nats_port.to_string(),
            "-js".into(),
            "-sd".into(),
            dir.join("nats").display().to_string(),
        ],
        nats_port,
    );
    let pg = OwnPostgres::start();
    let db = common::TestDb::create_on(&pg.url(), "postgres").await;
    let id = common::unique();
    let env = |c: &mut Command| {
        c.env("NATS_URL", format!("nats://127.0.0.1:{nats_port}"))
            .env("NATS_STREAM", format!("LOADKILL_{id}"))
            .env("NATS_CONSUMER", format!("c_{id}"))
            .env("DATABASE_URL", &db.url)
            .env("WORKER_METRICS_PORT", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let worker = || {
        let mut c = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"));
        env(&mut c);
        c.spawn().expect("worker binary")
    };
    let loader = || {
        let mut c = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"));
        env(&mut c);
        c.args(["load", "--entity", "customer"]).arg(&file);
        c.spawn().expect("worker binary")
    };
    let stored = || async {
        db.rows("SELECT count(*) FROM customers")
            .await
            .first()
            .and_then(|r| r[0].as_deref()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Waits until `share` of the file is stored, running the loader again each time it ends
    // without having loaded everything (killed, or failed while a server was down).
    let until = |share: u64, mut load: Child| async move {
        let start = Instant::now();
        loop {
            if stored().await >= rows * share / 100 {
                return load;
            }
            if let Ok(Some(_)) = load.try_wait() {
                load = loader();
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "{share}% of the rows not stored within 300 s ({} stored)",
                stored().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let begun = Instant::now();
    let mut work = worker();
    // The schema is the worker's to make.
    let start = Instant::now();
    while db.rows("SELECT to_regclass('customers') IS NOT NULL").await[0][0].as_deref() != Some("t")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no customers table"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The loader as soon as the worker has stored its first chunk: it is still publishing.
    let mut load = until(1, loader()).await;
    assert!(
        matches!(load.try_wait(), Ok(None)),
        "the loader ended before it could be killed mid-load: raise FAULT_LOAD_ROWS"
    );
    signal(&load, "-KILL");
    let _ = load.wait();
    println!(
        "load under SIGKILL: loader killed after {:?}",
        begun.elapsed()
    );
    let load = until(30, loader()).await;
    signal(&work, "-KILL");
    let _ = work.wait();
    work = worker();
    println!(
        "load under SIGKILL: worker killed after {:?}",
        begun.elapsed()
    );
    let load = until(50, load).await;
    nats.stop("-KILL");
    nats.spawn();
    println!(
        "load under SIGKILL: nats-server killed after {:?}",
        begun.elapsed()
    );
    let load = until(70, load).await;
    // PostgreSQL: the postmaster and every backend at once, then crash recovery.
    let postmaster = std::fs::read_to_string(pg.dir.join("data/postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next().map(str::to_string))
        .expect("postmaster.pid");
    let _ = Command::new("pkill")
        .args(["-KILL", "-P", &postmaster])
        .status();
    let _ = Command::new("kill").args(["-KILL", &postmaster]).status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Their lock files name pids that may linger as zombies here (no init reaps them).
    for stale in [
        "data/postmaster.pid".to_string(),
        format!(".s.PGSQL.{}.lock", pg.port),
        format!(".s.PGSQL.{}", pg.port),
    ] {
        let _ = std::fs::remove_file(pg.dir.join(stale));
    }
    pg.pg_ctl_start();
    println!(
        "load under SIGKILL: PostgreSQL back after {:?}",
        begun.elapsed()
    );
    let mut load = until(100, load).await;
    let _ = load.wait();
    println!(
        "load under SIGKILL: {rows} rows stored after {:?}",
        begun.elapsed()
    );
    // Every row once, as the file has it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(stored().await, rows);
    let exact = db
        .rows(&format!(
            "SELECT count(DISTINCT customer_key) FROM customers \
             WHERE name = 'Customer#' || lpad(customer_key, 9, '0') \
               AND address = 'addr ' || customer_key AND comment = 'c ' || customer_key \
               AND customer_key::bigint BETWEEN 1 AND {rows}"
        ))
        .await;
    assert_eq!(exact[0][0].as_deref(), Some(rows.to_string().as_str()));
    // The same command once more: nothing to send, nothing stored twice.
    let mut again = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"));
    env(&mut again);
    let out = again
        .args(["load", "--entity", "customer"])
        .arg(&file)
        .stdout(Stdio::piped())
        .output()
        .expect("worker load");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.contains(&format!("{rows} accepted ({rows} already loaded before)"))
            && summary.contains("0 chunks published"),
        "{summary}"
    );
    signal(&work, "-TERM");
    let _ = work.wait();
    assert_eq!(stored().await, rows);
    drop(nats);
    drop(pg);
    let _ = std::fs::remove_dir_all(&dir);
}
