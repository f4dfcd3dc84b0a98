//! Shared by the benchmarks: command-line options and an HTTP/1.1 load generator with N
//! keep-alive connections.
#![allow(dead_code)] // each benchmark uses part of this module

/// Sample TPC-H messages (shared with the tests).
#[path = "../../tests/template/support/sample.rs"]
pub(crate) mod sample;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Command-line options of the benchmarks (each uses the ones it needs).
pub(crate) struct BenchArgs {
    /// `--connections` (30): HTTP connections.
    pub connections: usize,
    /// `--seconds`: length of a timed phase.
    pub seconds: u64,
    /// `--orders` (20000): messages preloaded by the drain benchmark.
    pub orders: u64,
    /// `--batch-size` (500): worker batch size.
    pub batch_size: usize,
    /// `--concurrency` (3): worker batches in flight.
    pub concurrency: usize,
    /// `--entity` (order): entity the load is posted as.
    pub entity: String,
    /// `--body FILE`: message body to post instead of the built-in sample.
    pub body: Option<Vec<u8>>,
    /// `--window` (256): raw JetStream publishes in flight.
    pub window: usize,
    /// `BENCH_PG_URL` (local server): PostgreSQL server for the benchmark's databases.
    pub pg: String,
    /// `NATS_URL` (local server).
    pub nats_url: String,
}

impl BenchArgs {
    /// Parses the arguments after `cargo bench --bench NAME --`.
    pub(crate) fn parse(default_seconds: u64) -> Result<Self, String> {
        let mut args = Self {
            connections: 30,
            seconds: default_seconds,
            orders: 20_000,
            batch_size: 500,
            concurrency: 3,
            entity: "order".into(),
            body: None,
            window: 256,
            pg: std::env::var("BENCH_PG_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into()),
            nats_url: std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()),
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = || it.next().ok_or(format!("{a} needs a value"));
            let number = |v: String| v.parse::<u64>().map_err(|e| format!("{a}: {e}"));
            match a.as_str() {
                "--connections" => args.connections = number(value()?)? as usize,
                "--seconds" => args.seconds = number(value()?)?,
                "--orders" => args.orders = number(value()?)?,
                "--batch-size" => args.batch_size = number(value()?)? as usize,
                "--concurrency" => args.concurrency = number(value()?)? as usize,
                "--window" => args.window = number(value()?)? as usize,
                "--entity" => args.entity = value()?,
                "--body" => {
                    let path = value()?;
                    args.body = Some(std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?);
                }
                // cargo passes this to harness-less benchmarks.
                "--bench" => {}
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(args)
    }
}

/// What one timed phase measured.
pub(crate) struct Phase {
    /// Successful operations.
    pub count: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall time of the phase.
    pub elapsed: Duration,
    /// Latency of each successful operation, in microseconds.
    pub latencies: hdrhistogram::Histogram<u64>,
}

/// Makes the body of request number `n` (unique per request across all connections).
pub(crate) type BodyFn = Arc<dyn Fn(u64) -> bytes::Bytes + Send + Sync>;

/// POSTs `body(n)` to `uri` over `connections` keep-alive connections for `duration`; a request
/// counts when it is answered 202.
pub(crate) async fn drive(
    addr: std::net::SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
    body: BodyFn,
) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let sequence = Arc::new(AtomicU64::new(1));
    let uri = format!("http://{addr}{path}");
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..connections {
        let (stop, errors, sequence, uri, body) = (
            stop.clone(),
            errors.clone(),
            sequence.clone(),
            uri.clone(),
            body.clone(),
        );
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
                let n = sequence.fetch_add(1, Ordering::Relaxed);
                let req = Request::post(uri.as_str())
                    .header("content-type", "application/json")
                    .header("host", "bench")
                    .body(Full::new(body(n)))
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
    tokio::time::sleep(duration).await;
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

/// Prints one phase and returns its rate per second.
pub(crate) fn report(name: &str, p: &Phase) -> f64 {
    let rate = p.count as f64 / p.elapsed.as_secs_f64();
    println!(
        "{name:<40} {rate:>10.0} msg/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p999 {:>6.2} ms  ({} ok, {} errors, {:.1} s)",
        p.latencies.value_at_quantile(0.50) as f64 / 1000.0,
        p.latencies.value_at_quantile(0.99) as f64 / 1000.0,
        p.latencies.value_at_quantile(0.999) as f64 / 1000.0,
        p.count,
        p.errors,
        p.elapsed.as_secs_f64()
    );
    rate
}
