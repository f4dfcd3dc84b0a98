//! The server's limits on a real socket: header-read timeout, request and body-read timeouts,
//! and load shedding past the in-flight limit (503 + Retry-After, JSON, nothing accepted lost).

use crate::{common, support};
use std::time::{Duration, Instant};

use nomnom::api::{AppState, HttpLimits, router};
use nomnom::nats::NatsConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// An api on a free port with `limits`, on a fresh stream.
struct Server {
    addr: std::net::SocketAddr,
    stream: String,
    jetstream: async_nats::jetstream::Context,
    stop: CancellationToken,
}

impl Server {
    async fn start(limits: HttpLimits) -> Self {
        let nats = NatsConfig {
            url: common::nats_url(),
            stream: format!("H_{}", common::unique()),
            duplicate_window: Duration::from_secs(120),
            replicas: 1,
            auth: Default::default(),
            limits: Default::default(),
        };
        let jetstream = nomnom::nats::connect(&nats).await.expect("NATS");
        nomnom::nats::ensure_stream(&jetstream, &nats)
            .await
            .expect("stream");
        let db = std::sync::Arc::new(
            nomnom::store::pg::PgStore::open(&format!("{}/test", common::pg_admin_url()), 1)
                .expect("store"),
        );
        let app = router(AppState::new(jetstream.clone(), nats.stream.clone(), db));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            nomnom::api::serve(
                listener,
                app,
                &limits,
                async move { until.cancelled().await },
            )
            .await;
        });
        Self {
            addr,
            stream: nats.stream,
            jetstream,
            stop,
        }
    }

    /// Messages the stream holds, each member of a group counted (concurrent requests may
    /// share one JetStream message).
    async fn stream_messages(&self) -> u64 {
        common::stream_members(&self.jetstream, &self.stream).await
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.jetstream.delete_stream(&self.stream).await;
    }
}

/// Sends the head of a POST of `body`, waits `pause`, sends the body, and returns the status,
/// the `Retry-After` header and the JSON answer.
async fn slow_post(
    addr: std::net::SocketAddr,
    body: &str,
    pause: Duration,
) -> (u16, Option<String>, serde_json::Value) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /ingest/message/order HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    tokio::time::sleep(pause).await;
    let _ = conn.write_all(body.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let retry_after = text
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .map(|v| v.trim().to_string());
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, retry_after, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_headers_is_closed_by_the_default_timeout() {
    let limits = HttpLimits::default();
    assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
    let server = Server::start(limits).await;
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut c = TcpStream::connect(server.addr).await.expect("connect");
        c.write_all(b"POST /ingest/message/order HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("partial head");
        conns.push(c);
    }
    let start = Instant::now();
    for mut c in conns {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(15), c.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(_)) | Ok(Err(_))),
            "the connection was still open after 15 s"
        );
    }
    let closed_after = start.elapsed();
    println!("50 slow-header connections closed after {closed_after:?}");
    assert!(closed_after < Duration::from_secs(12), "{closed_after:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_and_stalled_bodies_get_a_json_408() {
    let server = Server::start(HttpLimits {
        request_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(5),
        ..HttpLimits::default()
    })
    .await;
    let order = support::order(1, 1).to_string();
    let (status, _, json) = slow_post(server.addr, &order, Duration::from_secs(2)).await;
    assert_eq!(status, 408, "{json}");
    assert_eq!(json["status"], 408);
    server.stop().await;

    let server = Server::start(HttpLimits {
        request_timeout: Duration::from_secs(30),
        body_read_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    })
    .await;
    let (status, _, json) = slow_post(server.addr, &order, Duration::from_secs(2)).await;
    assert_eq!(status, 408, "{json}");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("too long")),
        "{json}"
    );
    assert_eq!(server.stream_messages().await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_requests_are_shed_with_503_and_nothing_accepted_is_lost() {
    let server = Server::start(HttpLimits {
        max_in_flight: 2,
        ..HttpLimits::default()
    })
    .await;
    let mut tasks = Vec::new();
    for n in 0..20u32 {
        let body = support::order(n, 1).to_string();
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            slow_post(addr, &body, Duration::from_millis(500)).await
        }));
    }
    let (mut accepted, mut shed) = (0u64, 0u64);
    for t in tasks {
        let (status, retry_after, json) = t.await.expect("task");
        match status {
            202 => accepted += 1,
            503 => {
                shed += 1;
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(json["status"], 503, "{json}");
            }
            other => panic!("unexpected {other}: {json}"),
        }
    }
    println!("in-flight limit 2, 20 slow requests: {accepted} accepted, {shed} shed");
    assert!(
        accepted >= 2 && shed >= 1,
        "{accepted} accepted, {shed} shed"
    );
    assert_eq!(server.stream_messages().await, accepted);
    server.stop().await;
}

/// A connection with no request in flight for `idle_timeout` is closed: an HTTP/1 keep-alive
/// connection after its answer, and an HTTP/2 connection (sent GOAWAY, then closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http1_and_http2_connections_are_closed() {
    assert_eq!(HttpLimits::default().idle_timeout, Duration::from_secs(60));
    let server = Server::start(HttpLimits {
        idle_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    })
    .await;
    // HTTP/1.1 keep-alive: answered, then closed once idle.
    let mut conn = TcpStream::connect(server.addr).await.expect("connect");
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let start = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the idle HTTP/1 connection is still open after 5 s"
    );
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );

    // HTTP/2 (prior knowledge): one request, then the connection ends by itself.
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http2::handshake::<_, _, String>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(format!("http://{}/health", server.addr))
        .body(String::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("h2 answer");
    assert_eq!(response.status(), 200);
    drop(response);
    let start = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    assert!(
        ended.is_ok(),
        "the idle HTTP/2 connection is still open after 5 s"
    );
    println!("idle HTTP/2 connection closed after {:?}", start.elapsed());
    server.stop().await;
}
