//! Load generator for the api (a benchmark, not a test).
//!
//! Starts the real router on a loopback port against the real NATS, drives it with N keep-alive
//! HTTP/1.1 connections for a fixed time, then — in the same run, on the same stream and with
//! the same envelope bytes — measures raw pipelined JetStream publishing. Prints accepted msg/s,
//! p50/p99/p999 latency, the raw publish rate and the ratio of the two.
//!
//! ```sh
//! cargo bench --bench api_load -- --connections 30 --seconds 10
//! cargo bench --bench api_load -- --body my_message.json --entity my_entity
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use nomnom::api::{AppState, router};
use nomnom::config::NatsConfig;

struct Args {
    connections: usize,
    seconds: u64,
    entity: String,
    body: Vec<u8>,
    nats_url: String,
    window: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        connections: 30,
        seconds: 10,
        entity: "order".into(),
        body: nomnom::sample::tpch_order(1, 4).to_string().into_bytes(),
        nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        window: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--connections" => args.connections = value()?.parse().map_err(|e| format!("{e}"))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("{e}"))?,
            "--entity" => args.entity = value()?,
            "--window" => args.window = value()?.parse().map_err(|e| format!("{e}"))?,
            "--body" => {
                let path = value()?;
                args.body = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

struct Phase {
    count: u64,
    errors: u64,
    elapsed: Duration,
    latencies: hdrhistogram::Histogram<u64>,
}

async fn drive_api(addr: std::net::SocketAddr, args: &Args) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let uri = format!("http://{addr}/ingest/message/{}", args.entity);
    let body = bytes::Bytes::from(args.body.clone());
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..args.connections {
        let (stop, errors, uri, body) = (stop.clone(), errors.clone(), uri.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
            let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return hist;
            };
            let _ = stream.set_nodelay(true);
            let Ok((mut sender, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
            else {
                errors.fetch_add(1, Ordering::Relaxed);
                return hist;
            };
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = Request::post(uri.as_str())
                    .header("content-type", "application/json")
                    .header("host", "bench")
                    .body(Full::new(body.clone()))
                    .expect("request");
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().as_u16() == 202;
                        let _ = resp.into_body().collect().await;
                        if ok {
                            let _ = hist.record(t.elapsed().as_micros() as u64);
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = latencies.add(h);
        }
    }
    Phase {
        count: latencies.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        latencies,
    }
}

async fn raw_publish(
    js: &async_nats::jetstream::Context,
    subject: &str,
    payload: bytes::Bytes,
    args: &Args,
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

fn report(name: &str, p: &Phase) -> f64 {
    let rate = p.count as f64 / p.elapsed.as_secs_f64();
    println!(
        "{name:<34} {rate:>10.0} msg/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p999 {:>6.2} ms  ({} ok, {} errors, {:.1} s)",
        p.latencies.value_at_quantile(0.50) as f64 / 1000.0,
        p.latencies.value_at_quantile(0.99) as f64 / 1000.0,
        p.latencies.value_at_quantile(0.999) as f64 / 1000.0,
        p.count,
        p.errors,
        p.elapsed.as_secs_f64()
    );
    rate
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let stream = format!("BENCH_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let nats = NatsConfig {
        url: args.nats_url.clone(),
        stream: stream.clone(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
    };
    let js = nomnom::nats::connect(&nats).await?;
    nomnom::nats::ensure_stream(&js, &nats).await?;
    let db = nomnom::db::pool("postgres://postgres@127.0.0.1:5432/postgres", 1)?;
    let app = router(AppState::new(js.clone(), stream.clone(), db));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let entity = nomnom::generated::RootEntity::from_name(&args.entity)
        .ok_or_else(|| format!("unknown entity {}", args.entity))?;
    let envelope = nomnom::envelope::MessageEnvelope::encode_with_body(
        uuid::Uuid::new_v4(),
        entity.name(),
        chrono::Utc::now(),
        &args.body,
    );
    println!(
        "body {} bytes, envelope {} bytes, {} connections, {} s per phase, raw window {}",
        args.body.len(),
        envelope.len(),
        args.connections,
        args.seconds,
        args.window
    );
    let api = drive_api(addr, &args).await;
    let api_rate = report("api (HTTP → validate → JetStream ack)", &api);
    let subject = format!("{stream}.{}.raw", entity.snake_name());
    let raw = raw_publish(&js, &subject, envelope.into(), &args).await;
    let raw_rate = report("raw pipelined JetStream publish", &raw);
    println!(
        "ratio api / raw publish: {:.2}",
        api_rate / raw_rate.max(1.0)
    );
    js.delete_stream(&stream).await?;
    Ok(())
}
