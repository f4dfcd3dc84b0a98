//! A fixed-rate (open-loop) load generator for a running api (a benchmark, not a test): posts
//! TPC-H orders (unique `order_key`, as `post_order.lua` does for wrk) at `--rate` per second
//! for `--seconds` over up to `--connections` keep-alive HTTP/1.1 connections, each request
//! timed from when it was *due*, so a slow answer delays nothing after it unnoticed (no
//! coordinated omission). Prints the requests sent, answered 202, the rate achieved and the
//! latency of the 202 at p50/p99/p999. `scripts/bench-shapes.sh` runs it against both pipelines.
//!
//! ```sh
//! cargo bench --bench fixed_rate -- --url http://127.0.0.1:8080/ingest/message/order --rate 5000 --seconds 15
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

struct Args {
    url: String,
    rate: u64,
    seconds: u64,
    connections: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        url: String::new(),
        rate: 1000,
        seconds: 15,
        connections: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(name) = it.next() {
        let mut value = || it.next().ok_or(format!("{name} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match name.as_str() {
            "--url" => a.url = value()?,
            "--rate" => a.rate = number(value()?)?.max(1),
            "--seconds" => a.seconds = number(value()?)?,
            "--connections" => a.connections = number(value()?)?.max(1) as usize,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.url.is_empty() {
        return Err("--url is required (e.g. http://127.0.0.1:8080/ingest/message/order)".into());
    }
    Ok(a)
}

/// A TPC-H order with 4 line items, the fields and values of `post_order.lua`.
fn order(key: &str) -> String {
    let line = |n: u32| {
        format!(
            r#"{{"line_number":{n},"part_key":"P-008641{n}","supplier_key":"S-7706","quantity":4{n}.0,"extended_price":23696.25,"discount":0.06,"tax":0.02,"return_flag":"N","line_status":"O","ship_date":"1994-12-15","commit_date":null,"receipt_date":null,"ship_mode":"TRUCK"}}"#
        )
    };
    format!(
        r#"{{"order_key":"{key}","customer_key":"C-000010485","order_status":"O","total_price":398465.75,"order_date":"1994-12-12","order_priority":"1-URGENT","clerk":"Clerk#000000345","ship_priority":0,"comment":"carefully final deposits detect slyly agai","line_items":[{},{},{},{}]}}"#,
        line(1),
        line(2),
        line(3),
        line(4)
    )
}

type Sender = hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>;

async fn connect(authority: &str) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

#[tokio::main]
async fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fixed_rate: {e}");
            std::process::exit(2);
        }
    };
    let uri: hyper::Uri = a.url.parse().expect("--url is a URL");
    let authority = uri.authority().expect("--url names a host").to_string();
    let path = uri.path().to_string();
    // Idle connections, taken by each request and put back after its answer.
    let idle: Arc<Mutex<Vec<Sender>>> = Arc::new(Mutex::new(Vec::new()));
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new(3).expect("histogram"),
    ));
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = a.rate * a.seconds;
    let interval = Duration::from_secs_f64(1.0 / a.rate as f64);
    let run = format!("F{}", std::process::id());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (idle, open, latencies, accepted, refused) = (
            idle.clone(),
            open.clone(),
            latencies.clone(),
            accepted.clone(),
            refused.clone(),
        );
        let (authority, path, max) = (authority.clone(), path.clone(), a.connections);
        let body = order(&format!("{run}-{i:010}"));
        tasks.spawn(async move {
            // A free connection, a new one while fewer than --connections are open, or wait.
            let mut sender = loop {
                if let Some(s) = idle.lock().await.pop() {
                    break Some(s);
                }
                if open.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < max {
                    break connect(&authority).await.ok();
                }
                open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            let Some(s) = sender.as_mut() else {
                open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            };
            let request = Request::post(&path)
                .header("host", &authority)
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body)))
                .expect("request");
            let answer = match s.send_request(request).await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _ = r.into_body().collect().await;
                    Some(status)
                }
                Err(_) => None,
            };
            let micros = due.elapsed().as_micros() as u64;
            match answer {
                Some(202) => {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = latencies.lock().expect("histogram").record(micros.max(1));
                }
                _ => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            match (answer, sender) {
                (Some(_), Some(s)) => idle.lock().await.push(s),
                _ => {
                    open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let h = latencies.lock().expect("histogram");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "fixed rate {} /s for {} s: sent {total}, 202 {}, other {}, achieved {:.0} /s over {:.1} s, connections {}; latency of the 202 (from when each was due): p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, max {:.2} ms",
        a.rate,
        a.seconds,
        accepted.load(std::sync::atomic::Ordering::Relaxed),
        refused.load(std::sync::atomic::Ordering::Relaxed),
        total as f64 / elapsed,
        elapsed,
        open.load(std::sync::atomic::Ordering::SeqCst),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
    );
}
