//! What routing an unnamed body costs (`POST /ingest/message` without an entity: every entity
//! the key may post is tried), against the named route, in the same run, for each TPC-H root
//! and reference entity: first in process (the document and the check, which is all that
//! differs), then over HTTP through the real router and NATS (`--seconds`, 0 to skip), the two
//! routes alternating phase by phase. Every rep is printed with its ratio.
//!
//! ```sh
//! cargo bench --bench untyped -- --orders 200000 --seconds 5 --connections 30
//! ```

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BenchArgs, drive, report};
use nomnom::api::{AppState, Client, router};
use nomnom::generated::RootEntity;
use nomnom::nats::NatsConfig;

/// Nanoseconds per call of `f`, after a tenth as many warm-up calls.
fn ns_per(n: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

/// The binaries' allocator, so the figures are those of the binaries.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = BenchArgs::parse(5)?;
    let client = Client::anonymous();
    let bodies: Vec<(RootEntity, Vec<u8>)> = RootEntity::ALL
        .iter()
        .map(|e| {
            let body = match e {
                RootEntity::Order => common::sample::tpch_order(1, 4),
                other => other.example(),
            };
            (*e, body.to_string().into_bytes())
        })
        .collect();
    println!(
        "{} entities tried per unnamed body; {} iterations per timing",
        RootEntity::ALL.len(),
        args.orders
    );
    for (entity, body) in &bodies {
        let doc = nomnom::runtime::parse_json_object(body)?;
        let found = nomnom::api::detect::detect(&client, doc.root())
            .map_err(|e| format!("{entity}: the example is not routed: {e}"))?;
        assert_eq!(found, *entity, "the example is routed to its entity");
    }
    println!("in process: the document and the check (named) or the detection (unnamed)");
    for rep in 1..=3 {
        for (entity, body) in &bodies {
            let named = ns_per(args.orders, || {
                let doc = nomnom::runtime::parse_json_object(black_box(body)).expect("JSON");
                black_box(entity.validate_json(doc.root()).is_ok());
            });
            let unnamed = ns_per(args.orders, || {
                let doc = nomnom::runtime::parse_json_object(black_box(body)).expect("JSON");
                black_box(nomnom::api::detect::detect(&client, doc.root()).is_ok());
            });
            println!(
                "  rep {rep} {:<12} named {named:>7.0} ns  unnamed {unnamed:>7.0} ns  ratio {:.2}",
                entity.snake_name(),
                unnamed / named
            );
        }
    }
    if args.seconds == 0 {
        return Ok(());
    }
    let stream = format!("BENCH_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
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
    let db = Arc::new(nomnom::store::pg::PgStore::open(
        "postgres://postgres@127.0.0.1:5432/postgres",
        1,
    )?);
    let app = router(AppState::new(js.clone(), stream.clone(), db));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!(
        "over HTTP: the order, {} connections, {} s per phase",
        args.connections, args.seconds
    );
    let order = bodies
        .iter()
        .find(|(e, _)| *e == RootEntity::Order)
        .map(|(_, b)| bytes::Bytes::from(b.clone()))
        .ok_or("no Order entity")?;
    for rep in 1..=3 {
        let mut rates = Vec::new();
        for path in ["/ingest/message/order", "/ingest/message"] {
            let body = order.clone();
            let phase = drive(
                addr,
                path,
                args.connections,
                Duration::from_secs(args.seconds),
                Arc::new(move |_| body.clone()),
            )
            .await;
            rates.push(report(&format!("rep {rep} POST {path}"), &phase));
        }
        println!(
            "rep {rep}: unnamed / named throughput {:.2}",
            rates[1] / rates[0].max(1.0)
        );
    }
    js.delete_stream(&stream).await?;
    Ok(())
}
