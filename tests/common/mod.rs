//! Test harness: each test gets its own JetStream stream, consumer and PostgreSQL database on the
//! real local services, and runs the real api and worker in-process.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use nomnom::api::{AppState, router};
use nomnom::nats::NatsConfig;
use nomnom::worker::Worker;
use nomnom::worker::WorkerConfig;
use tokio_util::sync::CancellationToken;

pub(crate) mod process;

/// NATS used by tests (`TEST_NATS_URL`, default the local server).
pub(crate) fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Server URL used to create per-test databases (`TEST_PG_URL`, default local trust auth).
pub(crate) fn pg_admin_url() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh, unique name suffix.
pub(crate) fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Opens a tokio-postgres client to `url`.
pub(crate) async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is not reachable: {e}"));
    tokio::spawn(conn);
    client
}

/// A per-test database, dropped by [`TestDb::drop_db`].
pub(crate) struct TestDb {
    /// Database name.
    pub name: String,
    /// Connection URL.
    pub url: String,
}

impl TestDb {
    /// Creates an empty database.
    pub(crate) async fn create() -> Self {
        Self::create_on(&pg_admin_url(), "test").await
    }

    /// Creates an empty database on the server at `admin_url` (connecting to its database
    /// `maintenance_db` to do so).
    pub(crate) async fn create_on(admin_url: &str, maintenance_db: &str) -> Self {
        let name = format!("nomnom_test_{}", unique());
        let admin = pg(&format!("{admin_url}/{maintenance_db}")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        Self {
            url: format!("{admin_url}/{name}"),
            name,
        }
    }

    /// A client to this database.
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        pg(&self.url).await
    }

    /// Drops the database (closing other sessions first).
    pub(crate) async fn drop_db(&self) {
        let admin = pg(&format!("{}/test", pg_admin_url())).await;
        let _ = admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }

    /// Rows of a query as text (NULL as `None`), for exact comparisons.
    pub(crate) async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let client = self.client().await;
        let messages = client.simple_query(sql).await.expect("query");
        messages
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    }

    /// The pid of a backend of this database that is inside `pg_sleep` (e.g. a slow trigger the
    /// test installed), waiting up to 30 s for one.
    pub(crate) async fn sleeping_backend(&self) -> i32 {
        let admin = pg(&format!("{}/test", pg_admin_url())).await;
        let start = Instant::now();
        loop {
            let rows = admin
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'PgSleep'",
                    &[&self.name],
                )
                .await
                .expect("pg_stat_activity");
            if let Some(row) = rows.first() {
                return row.get(0);
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no backend of {} reached pg_sleep",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Terminates a backend (as an operator's `pg_terminate_backend` would).
    pub(crate) async fn terminate_backend(&self, pid: i32) {
        let admin = pg(&format!("{}/test", pg_admin_url())).await;
        let _ = admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await;
    }

    /// `SELECT count(*)` of a query.
    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let rows = self.rows(&format!("SELECT count(*) FROM ({sql}) q")).await;
        rows[0][0].as_deref().unwrap_or("0").parse().unwrap_or(0)
    }

    /// Waits until `sql` counts at least `n` rows; fails after `timeout` with `what` and the
    /// count reached.
    pub(crate) async fn wait_at_least(&self, sql: &str, n: i64, timeout: Duration, what: &str) {
        let start = Instant::now();
        loop {
            let c = self.count(sql).await;
            if c >= n {
                return;
            }
            assert!(start.elapsed() < timeout, "{what}: {c} of {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `sql` counts `n` rows (or fails after 20 s).
    pub(crate) async fn wait_count(&self, sql: &str, n: i64) {
        let start = Instant::now();
        loop {
            let c = self.count(sql).await;
            if c == n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {n} rows of `{sql}` (have {c})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// api + worker + stream + database of one test.
pub(crate) struct Pipeline {
    /// Base URL of the api (`http://127.0.0.1:<port>`).
    pub base: String,
    /// The test database.
    pub db: TestDb,
    /// Stream name.
    pub stream: String,
    /// JetStream context.
    pub jetstream: async_nats::jetstream::Context,
    /// Worker configuration used.
    pub worker_config: WorkerConfig,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    /// Starts an api and a worker on fresh names.
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with a tweak to the worker configuration.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut WorkerConfig)) -> Self {
        let mut p = Self::paused_with(tweak).await;
        p.start_worker().await;
        p
    }

    /// Starts the api only (the worker's tables exist); call [`Pipeline::start_worker`] later.
    pub(crate) async fn paused_with(tweak: impl FnOnce(&mut WorkerConfig)) -> Self {
        Self::paused_on(TestDb::create().await, tweak).await
    }

    /// Like [`Pipeline::paused_with`], on a given (e.g. a test's own server's) database.
    pub(crate) async fn paused_on(db: TestDb, tweak: impl FnOnce(&mut WorkerConfig)) -> Self {
        Self::paused_full(db, tweak, |_| {}).await
    }

    /// Starts api and worker with a tweak to the api's state (e.g. API keys).
    pub(crate) async fn start_with_api(api_tweak: impl FnOnce(&mut AppState)) -> Self {
        let mut p = Self::paused_full(TestDb::create().await, |_| {}, api_tweak).await;
        p.start_worker().await;
        p
    }

    /// Like [`Pipeline::paused_on`], with a tweak to the api's state.
    pub(crate) async fn paused_full(
        db: TestDb,
        tweak: impl FnOnce(&mut WorkerConfig),
        api_tweak: impl FnOnce(&mut AppState),
    ) -> Self {
        let id = unique();
        let stream = format!("T_{id}");
        nomnom::store::pg::prepare_schema(&db.url)
            .await
            .expect("schema");
        let mut worker_config = WorkerConfig {
            nats: NatsConfig {
                url: nats_url(),
                stream: stream.clone(),
                duplicate_window: Duration::from_secs(120),
                replicas: 1,
                auth: Default::default(),
                limits: Default::default(),
            },
            consumer: format!("c_{id}"),
            database_url: db.url.clone(),
            batch_size: 100,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            concurrency: 2,
            metrics_port: None,
            metrics_host: nomnom::worker::DEFAULT_WORKER_METRICS_HOST,
            max_batch_bytes: nomnom::worker::DEFAULT_WORKER_MAX_BATCH_BYTES,
            batch_wait: nomnom::worker::DEFAULT_WORKER_BATCH_WAIT,
            dlq_limits: Default::default(),
        };
        // The tweak may point at another NATS (a cluster, a server the test restarts).
        tweak(&mut worker_config);
        let nats = worker_config.nats.clone();
        let stream = nats.stream.clone();
        let jetstream = nomnom::nats::connect(&nats).await.expect("NATS reachable");
        nomnom::nats::ensure_stream(&jetstream, &nats)
            .await
            .expect("stream");
        let shutdown = CancellationToken::new();
        let mut state = AppState::new(
            jetstream.clone(),
            stream.clone(),
            std::sync::Arc::new(nomnom::store::pg::PgStore::open(&db.url, 2).expect("store")),
        );
        api_tweak(&mut state);
        let app = router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let api_stop = shutdown.clone();
        let api = tokio::spawn(async move {
            let limits = nomnom::api::HttpLimits::default();
            nomnom::api::serve(
                listener,
                app,
                &limits,
                async move { api_stop.cancelled().await },
            )
            .await;
        });
        Self {
            base,
            db,
            stream,
            jetstream,
            worker_config,
            shutdown,
            tasks: vec![api],
        }
    }

    /// Starts a worker (call again to run several worker instances on the same consumer).
    pub(crate) async fn start_worker(&mut self) -> std::sync::Arc<nomnom::worker::WorkerMetrics> {
        self.start_worker_with(|_| {}).await
    }

    /// Starts a worker after `prepare` (e.g. a fault hook); returns its metrics.
    pub(crate) async fn start_worker_with(
        &mut self,
        prepare: impl FnOnce(&mut Worker),
    ) -> std::sync::Arc<nomnom::worker::WorkerMetrics> {
        let mut worker = Worker::connect(self.worker_config.clone())
            .await
            .expect("worker connects");
        prepare(&mut worker);
        let metrics = worker.metrics();
        let worker_stop = self.shutdown.clone();
        self.tasks.push(tokio::spawn(async move {
            worker.run(worker_stop).await.expect("worker run");
        }));
        metrics
    }

    /// GETs a path; returns status and JSON answer.
    pub(crate) async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// POSTs a JSON body; returns status and parsed JSON answer.
    pub(crate) async fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        self.post_with(path, body, &[]).await
    }

    /// POSTs a JSON body with extra headers; returns status and parsed JSON answer.
    pub(crate) async fn post_with(
        &self,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let resp = request
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}"));
        (status, json)
    }

    /// Stops api and worker, deletes the stream and drops the database.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        let _ = self.jetstream.delete_stream(&self.stream).await;
        let _ = self
            .jetstream
            .delete_stream(nomnom::worker::dead_letter::dlq_stream_name(&self.stream))
            .await;
        let _ = self
            .jetstream
            .delete_key_value(nomnom::api::idempotency::bucket_name(&self.stream))
            .await;
        self.db.drop_db().await;
    }
}

/// Messages `stream` holds, each member of a group counted (a member is a request or a batch
/// line, like a message alone): what the api accepted and has not yet been trimmed.
pub(crate) async fn stream_members(js: &async_nats::jetstream::Context, stream: &str) -> u64 {
    let mut stream = js.get_stream(stream).await.expect("stream");
    let state = stream.info().await.expect("info").state.clone();
    if state.messages == 0 {
        return 0;
    }
    let mut members = 0;
    for sequence in state.first_sequence..=state.last_sequence {
        let stored = stream.get_raw_message(sequence).await.expect("the message");
        members += nomnom::envelope::MessageEnvelope::decode_all(
            &stored.subject,
            Some(&stored.headers),
            &stored.payload,
        )
        .expect("envelopes")
        .len() as u64;
    }
    members
}

/// Deletes a stream and its dead-letter stream from the test NATS.
pub(crate) async fn delete_streams(stream: &str) {
    let js = nomnom::nats::connect(&NatsConfig {
        url: nats_url(),
        stream: stream.to_string(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        auth: Default::default(),
        limits: Default::default(),
    })
    .await
    .expect("NATS reachable");
    let _ = js.delete_stream(stream).await;
    let _ = js
        .delete_stream(nomnom::worker::dead_letter::dlq_stream_name(stream))
        .await;
    let _ = js
        .delete_key_value(nomnom::api::idempotency::bucket_name(stream))
        .await;
}
