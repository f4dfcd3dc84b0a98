//! Worker drain benchmark (a benchmark, not a test).
//!
//! Preloads N TPC-H orders (1–7 line items, 4 on average) into a fresh stream, starts the real
//! worker and measures how fast it drains them into a fresh database (orders/s, rows/s). In the
//! same run it measures a hand-written baseline: the same rows written with plain multi-row
//! `INSERT ... SELECT FROM unnest(...)` statements (no upsert, no status rows, no parsing), in
//! transactions of the same batch size, through tokio-postgres.
//!
//! ```sh
//! cargo bench --bench worker_drain -- --orders 20000 --batch-size 500 --concurrency 2
//! ```

mod common;

use std::time::{Duration, Instant};

use common::BenchArgs;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use nomnom::nats::NatsConfig;
use nomnom::worker::Worker;
use nomnom::worker::WorkerConfig;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Line items of order `n`: 1–7, deterministic, 4 on average.
fn lines_of(n: u64) -> u32 {
    (1 + (n * 2_654_435_761 % 7)) as u32
}

async fn pg(url: &str) -> Result<tokio_postgres::Client, Box<dyn std::error::Error>> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The hand-written baseline: plain unnest inserts of the same rows.
async fn raw_insert(
    client: &mut tokio_postgres::Client,
    orders: &[Value],
    batch: usize,
) -> Result<Duration, Box<dyn std::error::Error>> {
    const ORDER_COLS: [&str; 9] = [
        "order_key",
        "customer_key",
        "order_status",
        "total_price",
        "order_date",
        "order_priority",
        "clerk",
        "ship_priority",
        "comment",
    ];
    const LINE_COLS: [&str; 14] = [
        "order_key",
        "line_number",
        "part_key",
        "supplier_key",
        "quantity",
        "extended_price",
        "discount",
        "tax",
        "return_flag",
        "line_status",
        "ship_date",
        "commit_date",
        "receipt_date",
        "ship_mode",
    ];
    let order_sql = "INSERT INTO orders (order_key, customer_key, order_status, total_price, order_date, order_priority, clerk, ship_priority, comment) \
        SELECT a, b, c, d::numeric, e::date, f, g, h::integer, i FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) AS u(a, b, c, d, e, f, g, h, i)";
    let line_sql = "INSERT INTO order_line_items (order_key, line_number, part_key, supplier_key, quantity, extended_price, discount, tax, return_flag, line_status, ship_date, commit_date, receipt_date, ship_mode) \
        SELECT a, b::integer, c, d, e::numeric, f::numeric, g::numeric, h::numeric, i, j, k::date, l::date, m::date, n FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[]) AS u(a, b, c, d, e, f, g, h, i, j, k, l, m, n)";
    let order_stmt = client.prepare(order_sql).await?;
    let line_stmt = client.prepare(line_sql).await?;
    let started = Instant::now();
    for chunk in orders.chunks(batch) {
        let mut ocols: Vec<Vec<Option<String>>> = vec![Vec::new(); ORDER_COLS.len()];
        let mut lcols: Vec<Vec<Option<String>>> = vec![Vec::new(); LINE_COLS.len()];
        for o in chunk {
            for (i, c) in ORDER_COLS.iter().enumerate() {
                ocols[i].push(text(&o[c]));
            }
            for item in o["line_items"].as_array().into_iter().flatten() {
                for (i, c) in LINE_COLS.iter().enumerate() {
                    lcols[i].push(if *c == "order_key" {
                        text(&o[c])
                    } else {
                        text(&item[c])
                    });
                }
            }
        }
        let tx = client.transaction().await?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = ocols
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        tx.execute(&order_stmt, &params).await?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = lcols
            .iter()
            .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        tx.execute(&line_stmt, &params).await?;
        tx.commit().await?;
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = BenchArgs::parse(10)?;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let stream = format!("DRAIN_{id}");
    let (db_worker, db_raw) = (
        format!("nomnom_bench_{id}_w"),
        format!("nomnom_bench_{id}_r"),
    );
    let admin = pg(&format!("{}/postgres", args.pg)).await?;
    for db in [&db_worker, &db_raw] {
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await?;
    }
    let nats = NatsConfig {
        url: args.nats_url.clone(),
        stream: stream.clone(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        auth: Default::default(),
        limits: Default::default(),
    };
    let js = nomnom::nats::connect(&nats).await?;
    nomnom::nats::ensure_stream(&js, &nats).await?;

    let orders: Vec<Value> = (1..=args.orders)
        .map(|n| common::sample::tpch_order(n, lines_of(n)))
        .collect();
    let rows: u64 = orders
        .iter()
        .map(|o| 1 + o["line_items"].as_array().map_or(0, Vec::len) as u64)
        .sum();
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for o in &orders {
        let message_id = uuid::Uuid::new_v4();
        let envelope = nomnom::envelope::MessageEnvelope::new(message_id, "Order", o.to_string());
        let subject = nomnom::nats::message_subject(&stream, "order", &message_id);
        inflight.push(
            js.send_publish(subject, envelope.to_publish(false))
                .await?
                .into_future(),
        );
        if inflight.len() >= 512
            && let Some(r) = inflight.next().await
        {
            r?;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    println!(
        "preloaded {} orders ({} rows, {:.1} line items per order) in {:.1} s",
        args.orders,
        rows,
        (rows - args.orders) as f64 / args.orders as f64,
        started.elapsed().as_secs_f64()
    );

    let worker_url = format!("{}/{db_worker}", args.pg);
    let config = WorkerConfig {
        nats: nats.clone(),
        consumer: format!("drain_{id}"),
        database_url: worker_url.clone(),
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
    let metrics = worker.metrics();
    let check = pg(&worker_url).await?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let started = Instant::now();
    let task = tokio::spawn(async move { worker.run(stop).await });
    // Progress from the worker's own counter (incremented after each commit): counting the
    // status table every few milliseconds would scan it, and load PostgreSQL more the further
    // the drain got, while the baseline below is not watched at all.
    let processed = metrics.processed.with_label_values(&["order"]);
    loop {
        let done = processed.get();
        if done >= args.orders {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err(format!(
                "drain did not finish in 10 minutes ({done}/{})",
                args.orders
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = started.elapsed();
    shutdown.cancel();
    let _ = task.await;
    let committed = count(&check, "SELECT count(*) FROM message_status").await;
    assert_eq!(committed, i64::try_from(args.orders)?, "every status row");
    let stored = count(
        &check,
        "SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM order_line_items)",
    )
    .await;
    assert_eq!(stored, i64::try_from(rows)?, "every row stored");

    let raw_url = format!("{}/{db_raw}", args.pg);
    nomnom::store::pg::prepare_schema(&raw_url).await?;
    let mut raw_client = pg(&raw_url).await?;
    let raw = raw_insert(&mut raw_client, &orders, args.batch_size).await?;

    let rate = |d: Duration, n: u64| n as f64 / d.as_secs_f64();
    println!(
        "worker drain (parse + upsert + status, batch {}, concurrency {}): {:>8.0} orders/s {:>8.0} rows/s ({:.2} s)",
        args.batch_size,
        args.concurrency,
        rate(drain, args.orders),
        rate(drain, rows),
        drain.as_secs_f64()
    );
    println!(
        "hand-written unnest INSERT (same rows, same batch size):           {:>8.0} orders/s {:>8.0} rows/s ({:.2} s)",
        rate(raw, args.orders),
        rate(raw, rows),
        raw.as_secs_f64()
    );
    println!(
        "ratio worker / hand-written insert: {:.2}",
        raw.as_secs_f64() / drain.as_secs_f64()
    );

    drop(check);
    drop(raw_client);
    let _ = js.delete_stream(&stream).await;
    let _ = js
        .delete_stream(nomnom::worker::dead_letter::dlq_stream_name(&stream))
        .await;
    for db in [&db_worker, &db_raw] {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .await;
    }
    Ok(())
}
