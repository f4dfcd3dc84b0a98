//! Load generator for the api (a benchmark, not a test).
//!
//! Starts the real router on a loopback port against the real NATS, drives it with N keep-alive
//! HTTP/1.1 connections for a fixed time, then — in the same run, on the same stream and with
//! the same payload bytes — measures raw pipelined JetStream publishing. Prints accepted msg/s,
//! p50/p99/p999 latency, the raw publish rate and the ratio of the two.
//!
//! ```sh
//! cargo bench --bench api_load -- --connections 30 --seconds 10
//! cargo bench --bench api_load -- --body my_message.json --entity my_entity
//! ```

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BenchArgs, Phase, drive, report};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use nomnom::api::{AppState, router};
use nomnom::nats::NatsConfig;

async fn raw_publish(
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: bytes::Bytes,
    args: &BenchArgs,
) -> Phase {
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    let mut errors = 0;
    while Instant::now() < deadline {
        while inflight.len() < args.window {
            let t = Instant::now();
            match js.publish(subject.to_string(), payload.clone()).await {
                Ok(ack) => inflight.push(async move { (t, ack.await) }),
                Err(_) => errors += 1,
            }
        }
        if let Some((t, r)) = inflight.next().await {
            match r {
                Ok(_) => {
                    let _ = latencies.record(t.elapsed().as_micros() as u64);
                }
                Err(_) => errors += 1,
            }
        }
    }
    while let Some((t, r)) = inflight.next().await {
        match r {
            Ok(_) => {
                let _ = latencies.record(t.elapsed().as_micros() as u64);
            }
            Err(_) => errors += 1,
        }
    }
    Phase {
        count: latencies.len(),
        errors,
        elapsed: started.elapsed(),
        latencies,
    }
}

/// The binaries' allocator, so the figures are those of the binaries.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = BenchArgs::parse(10)?;
    let body = args
        .body
        .clone()
        .unwrap_or_else(|| common::sample::tpch_order(1, 4).to_string().into_bytes());
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
    let db = std::sync::Arc::new(nomnom::store::pg::PgStore::open(
        "postgres://postgres@127.0.0.1:5432/postgres",
        1,
    )?);
    let app = router(AppState::new(js.clone(), stream.clone(), db));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let entity = nomnom::generated::RootEntity::from_name(&args.entity)
        .ok_or_else(|| format!("unknown entity {}", args.entity))?;
    println!(
        "body {} bytes (the JetStream payload; the envelope is in headers), {} connections, {} s per phase, raw window {}",
        body.len(),
        args.connections,
        args.seconds,
        args.window
    );
    let body = bytes::Bytes::from(body);
    let body_bytes = body.clone();
    let api = drive(
        addr,
        &format!("/ingest/message/{}", args.entity),
        args.connections,
        Duration::from_secs(args.seconds),
        Arc::new(move |_| body.clone()),
    )
    .await;
    let api_rate = report("api (HTTP → validate → JetStream ack)", &api);
    let subject = format!("{stream}.{}.raw", entity.snake_name());
    let raw = raw_publish(&js, &subject, body_bytes, &args).await;
    let raw_rate = report("raw pipelined JetStream publish", &raw);
    println!(
        "ratio api / raw publish: {:.2}",
        api_rate / raw_rate.max(1.0)
    );
    js.delete_stream(&stream).await?;
    Ok(())
}
