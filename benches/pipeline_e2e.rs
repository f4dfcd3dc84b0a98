//! End-to-end benchmark (a benchmark, not a test): realistic TPC-H orders (1–7 line items, 4 on
//! average, a unique order key per request) driven through api → JetStream → worker →
//! PostgreSQL, all on this machine. The load generator shares the cores with the api, the
//! worker, NATS and PostgreSQL.
//!
//! Prints accepted msg/s and api p50/p99/p999 during the load, end-to-end committed orders/s and
//! rows/s from the first request until the last commit, and how long the backlog took to drain
//! after the load stopped.
//!
//! ```sh
//! cargo bench --bench pipeline_e2e -- --connections 30 --seconds 15
//! ```

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BenchArgs, drive, report};
use nomnom::api::{AppState, router};
use nomnom::nats::NatsConfig;
use nomnom::worker::Worker;
use nomnom::worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

/// Order `n`'s body: line items 1–7 (4 on average), a unique order key.
fn order_body(templates: &[(String, String)], n: u64) -> bytes::Bytes {
    let (prefix, suffix) = &templates[(n * 2_654_435_761 % 7) as usize];
    bytes::Bytes::from(format!("{prefix}ORD-{n:012}{suffix}"))
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0)
}

/// The binaries' allocator, so the figures are those of the binaries.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = BenchArgs::parse(15)?;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let stream = format!("E2E_{id}");
    let db = format!("nomnom_e2e_{id}");
    let (admin, conn) =
        tokio_postgres::connect(&format!("{}/postgres", args.pg), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await?;
    let db_url = format!("{}/{db}", args.pg);
    let nats = NatsConfig {
        url: args.nats_url.clone(),
        stream: stream.clone(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        auth: Default::default(),
        limits: Default::default(),
    };
    let config = WorkerConfig {
        nats: nats.clone(),
        consumer: format!("e2e_{id}"),
        database_url: db_url.clone(),
        batch_size: args.batch_size,
        max_deliver: 5,
        ack_wait: Duration::from_secs(30),
        concurrency: args.concurrency,
        metrics_port: None,
        metrics_host: nomnom::worker::DEFAULT_WORKER_METRICS_HOST,
        max_batch_bytes: nomnom::worker::DEFAULT_WORKER_MAX_BATCH_BYTES,
        batch_wait: nomnom::worker::DEFAULT_WORKER_BATCH_WAIT,
        dlq_limits: Default::default(),
    };
    let worker = Worker::connect(config).await?;
    let js = nomnom::nats::connect(&nats).await?;
    let app = router(AppState::new(
        js.clone(),
        stream.clone(),
        std::sync::Arc::new(nomnom::store::pg::PgStore::open(&db_url, 2)?),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let worker_task = tokio::spawn(async move { worker.run(stop).await });

    let templates: Vec<(String, String)> = (1..=7)
        .map(|lines| {
            let text = common::sample::tpch_order(0, lines).to_string();
            let key = "ORD-000000";
            let at = text.find(key).expect("order key in the sample");
            (text[..at].to_string(), text[at + key.len()..].to_string())
        })
        .collect();
    let templates = Arc::new(templates);
    let (check, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);

    println!(
        "{} connections for {} s; worker batch {} concurrency {}",
        args.connections, args.seconds, args.batch_size, args.concurrency
    );
    let started = Instant::now();
    let bodies = templates.clone();
    let api = drive(
        addr,
        "/ingest/message/order",
        args.connections,
        Duration::from_secs(args.seconds),
        Arc::new(move |n| order_body(&bodies, n)),
    )
    .await;
    let load_end = started.elapsed();
    let committed_at_end = count(&check, "SELECT count(*) FROM message_status").await;
    report("api accepted (HTTP → JetStream ack)", &api);
    let accepted = i64::try_from(api.count)?;
    loop {
        let done = count(&check, "SELECT count(*) FROM message_status").await;
        if done >= accepted {
            break;
        }
        if started.elapsed() > load_end + Duration::from_secs(600) {
            return Err(format!("backlog not drained in 10 minutes ({done}/{accepted})").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    let rows = count(
        &check,
        "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_line_items)",
    )
    .await;
    let orders = count(&check, "SELECT count(*) FROM orders").await;
    assert_eq!(orders, accepted, "every accepted order is stored once");
    println!(
        "end to end (first request → last commit)   {:>10.0} orders/s {:>8.0} rows/s  ({} orders, {} rows, {:.1} s)",
        accepted as f64 / total.as_secs_f64(),
        rows as f64 / total.as_secs_f64(),
        accepted,
        rows,
        total.as_secs_f64()
    );
    println!(
        "committed during the load: {:.0} orders/s; backlog when the load stopped: {} orders, drained in {:.2} s",
        committed_at_end as f64 / load_end.as_secs_f64(),
        accepted - committed_at_end,
        (total - load_end).as_secs_f64()
    );
    shutdown.cancel();
    let _ = worker_task.await;
    drop(check);
    let _ = js.delete_stream(&stream).await;
    let _ = js
        .delete_stream(nomnom::worker::dead_letter::dlq_stream_name(&stream))
        .await;
    let _ = admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await;
    Ok(())
}
