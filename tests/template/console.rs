//! The operator console's port (`admin_router`) on the real NATS and PostgreSQL: who may use
//! it, what it shows and does with dead letters (every action in the audit), a message's trace,
//! the overview from the store and JetStream, and that nothing from a message can reach the page
//! as markup or unbounded.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use nomnom::api::{ApiKeys, AppState, admin_router};
use nomnom::nats::NatsConfig;
use nomnom::store::{DeadLetter, ReasonClass, Store as _};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::{common, support};

const ADMIN_KEY: &str = "console-admin-key-0123456789";
const INGEST_KEY: &str = "console-ingest-key-0123456789";

/// The console's router over a fresh stream and a fresh, prepared database.
struct Console {
    state: AppState,
    db: common::TestDb,
    store: Arc<nomnom::store::pg::PgStore>,
    nats: NatsConfig,
}

struct Answer {
    status: StatusCode,
    body: Value,
    text: String,
    headers: axum::http::HeaderMap,
}

impl Console {
    async fn start() -> Self {
        let nats = NatsConfig {
            url: common::nats_url(),
            stream: format!("C_{}", common::unique()),
            duplicate_window: std::time::Duration::from_secs(120),
            replicas: 1,
            auth: Default::default(),
            limits: Default::default(),
        };
        let jetstream = nomnom::nats::connect(&nats).await.expect("NATS reachable");
        nomnom::nats::ensure_stream(&jetstream, &nats)
            .await
            .expect("stream");
        let db = common::TestDb::create().await;
        let store = Arc::new(nomnom::store::pg::PgStore::open(&db.url, 2).expect("store"));
        store.prepare().await.expect("prepared");
        let mut state = AppState::new(jetstream, nats.stream.clone(), store.clone());
        state.consumer = format!("c_{}", common::unique());
        Self {
            state,
            db,
            store,
            nats,
        }
    }

    fn with_keys(mut self) -> Self {
        self.state.keys =
            ApiKeys::parse(&format!("ops:{ADMIN_KEY}:admin\ningest:{INGEST_KEY}:*")).expect("keys");
        self
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = admin_router(self.state.clone())
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            headers,
        }
    }

    fn request(method: &str, uri: &str, key: Option<&str>) -> axum::http::request::Builder {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "127.0.0.1:8081");
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        builder
    }

    async fn get(&self, uri: &str) -> Answer {
        self.get_as(uri, None).await
    }

    async fn get_as(&self, uri: &str, key: Option<&str>) -> Answer {
        self.send(
            Self::request("GET", uri, key)
                .body(Body::empty())
                .expect("request"),
        )
        .await
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.send(
            Self::request("POST", uri, None)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
    }

    async fn dead_letter(&self, class: ReasonClass, reason: &str, body: Vec<u8>) -> uuid::Uuid {
        let id = uuid::Uuid::now_v7();
        self.store
            .record_dead_letter(&DeadLetter {
                message_id: id,
                entity: "Order".into(),
                body: body.into(),
                class,
                reason: reason.into(),
                attempts: 1,
                received_at: chrono::Utc::now(),
                position: Default::default(),
                record_id: format!("{id}:1"),
            })
            .await
            .expect("recorded");
        id
    }

    async fn stream_messages(&self) -> u64 {
        let mut stream = self
            .state
            .jetstream
            .get_stream(&self.nats.stream)
            .await
            .expect("stream");
        stream.info().await.expect("info").state.messages
    }

    async fn stop(self) {
        let _ = self.state.jetstream.delete_stream(&self.nats.stream).await;
        let _ = self
            .state
            .jetstream
            .delete_stream(format!(
                "KV_{}",
                nomnom::admin::workers::bucket_name(&self.nats.stream)
            ))
            .await;
        self.db.drop_db().await;
    }
}

/// With API keys, the console's endpoints take only a key scoped `admin`: none → 401, an ingest
/// key → 403; the page itself (static, no data) loads without a key and carries the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_needs_the_admin_scope_when_keys_are_configured() {
    let console = Console::start().await.with_keys();
    for uri in [
        "/stats",
        "/admin/dead-letters",
        "/admin/actions",
        "/admin/schema",
    ] {
        assert_eq!(
            console.get(uri).await.status,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        let refused = console.get_as(uri, Some(INGEST_KEY)).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{uri}");
        assert!(
            refused.body["error"]
                .as_str()
                .unwrap_or("")
                .contains("admin"),
            "{}",
            refused.text
        );
        let allowed = console.get_as(uri, Some(ADMIN_KEY)).await;
        assert_eq!(allowed.status, StatusCode::OK, "{uri}: {}", allowed.text);
    }
    let page = console.get("/console/").await;
    assert_eq!(page.status, StatusCode::OK);
    let csp = page.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers["x-frame-options"], "DENY");
    // A key makes the loopback-only rule moot: another host name is fine with a key.
    let remote = console
        .send(
            Request::get("/admin/actions")
                .header("host", "console.internal:8081")
                .header("authorization", format!("Bearer {ADMIN_KEY}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(remote.status, StatusCode::OK, "{}", remote.text);
    console.stop().await;
}

/// Dead letters from the console: grouped by entity × reason class, filtered, shown whole;
/// dry run, replay by id and by filter, discard with a note — each in the audit as `local`.
/// Bodies and reasons with markup and a 1 MB string come back as JSON text, cut to bounds; the
/// page itself holds none of it. Another site cannot make the changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_triaged_replayed_and_discarded_with_an_audit() {
    let console = Console::start().await;
    let hostile = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;
    let huge = "x".repeat(1_000_000);
    let mut order = support::order(1, 1);
    order["comment"] = json!(format!("{hostile}{huge}"));
    let refused = console
        .dead_letter(
            ReasonClass::RefusedByDatabase,
            &format!("check constraint refused {hostile} {}", "y".repeat(5000)),
            order.to_string().into_bytes(),
        )
        .await;
    let invalid = console
        .dead_letter(
            ReasonClass::Invalid,
            "order_key: required",
            br#"{"note": "no key"}"#.to_vec(),
        )
        .await;

    let groups = console.get("/admin/dead-letters/groups").await;
    assert_eq!(groups.status, StatusCode::OK, "{}", groups.text);
    let mut seen: Vec<(String, String, i64)> = groups.body["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["entity"].as_str().expect("entity").to_string(),
                g["reason_class"].as_str().expect("class").to_string(),
                g["count"].as_i64().expect("count"),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("Order".into(), "invalid".into(), 1),
            ("Order".into(), "refused_by_database".into(), 1)
        ]
    );

    let list = console
        .get("/admin/dead-letters?class=refused_by_database&limit=10")
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let items = list.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(list.body["total"], json!(1));
    let everything = console.get("/admin/dead-letters?limit=1").await;
    assert_eq!(
        (
            everything.body["items"].as_array().map(Vec::len),
            everything.body["total"].clone()
        ),
        (Some(1), json!(2)),
        "{}",
        everything.text
    );
    assert!(everything.body["next"].is_string());
    let reason = items[0]["reason"].as_str().expect("reason");
    assert!(reason.chars().count() <= 300 && items[0]["reason_truncated"] == json!(true));
    assert!(
        list.text.len() < 4096,
        "a list carries no bodies: {} bytes",
        list.text.len()
    );
    assert_eq!(
        console
            .get("/admin/dead-letters?class=nonsense")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        console
            .get("/admin/dead-letters?since=yesterday")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let detail = console.get(&format!("/admin/dead-letters/{refused}")).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text);
    let body = detail.body["body_pretty"].as_str().expect("body");
    assert!(body.len() <= 64 * 1024 && detail.body["body_truncated"] == json!(true));
    // As JSON text (its `"` escaped), whole where it fits.
    assert!(
        body.contains("<script>alert(1)</script>") && body.contains("<img src=x onerror=alert(2)>"),
        "{}",
        &body[..200]
    );
    assert!(detail.text.len() < 80 * 1024, "{} bytes", detail.text.len());
    let invalid_detail = console.get(&format!("/admin/dead-letters/{invalid}")).await;
    let fields: Vec<&str> = invalid_detail.body["field_errors_now"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"order_key"), "{}", invalid_detail.text);
    // The page and its script are the same bytes whatever is stored: no data is rendered into
    // them on the server, so markup in a message cannot become markup in the page.
    let page = console.get("/console/").await;
    assert!(!page.text.contains("onerror") && !page.text.contains("alert("));
    let script = console.get("/console/console.js").await;
    assert!(!script.text.contains("innerHTML") && !script.text.contains("insertAdjacentHTML"));

    // Another site's page in the operator's browser cannot act.
    let form_post = console
        .send(
            Console::request("POST", "/admin/dead-letters/replay", None)
                .header("content-type", "text/plain")
                .body(Body::from("{}"))
                .expect("request"),
        )
        .await;
    assert_eq!(form_post.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let foreign = console
        .send(
            Console::request("POST", "/admin/dead-letters/replay", None)
                .header("content-type", "application/json")
                .header("origin", "http://evil.example")
                .body(Body::from("{}"))
                .expect("request"),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let rebound = console
        .send(
            Request::get("/admin/dead-letters")
                .header("host", "evil.example:8081")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN, "{}", rebound.text);
    assert_eq!(console.stream_messages().await, 0, "nothing was replayed");

    let dry = console
        .post(
            "/admin/dead-letters/dry-run",
            json!({"filter": {"entity": "order"}}),
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text);
    assert_eq!(
        (dry.body["total"].clone(), dry.body["would_pass"].clone()),
        (json!(2), json!(1))
    );
    let replayed = console
        .post(
            "/admin/dead-letters/replay",
            json!({"ids": [refused.to_string()]}),
        )
        .await;
    assert_eq!(replayed.status, StatusCode::OK, "{}", replayed.text);
    assert_eq!(replayed.body["replayed"], json!(1));
    assert_eq!(console.stream_messages().await, 1);
    let by_filter = console
        .post(
            "/admin/dead-letters/replay",
            json!({"filter": {"class": "invalid"}}),
        )
        .await;
    assert_eq!(by_filter.body["replayed"], json!(1), "{}", by_filter.text);
    assert_eq!(console.stream_messages().await, 2);
    assert_eq!(
        console
            .post(
                "/admin/dead-letters/replay",
                json!({"ids": [], "filter": {}})
            )
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let no_note = console
        .post(
            &format!("/admin/dead-letters/{invalid}/discard"),
            json!({"note": "  "}),
        )
        .await;
    assert_eq!(no_note.status, StatusCode::BAD_REQUEST);
    let discarded = console
        .post(
            &format!("/admin/dead-letters/{invalid}/discard"),
            json!({"note": "a test body, not a customer's"}),
        )
        .await;
    assert_eq!(discarded.status, StatusCode::OK, "{}", discarded.text);
    assert_eq!(discarded.body["by"], json!("local"));
    let again = console
        .post(
            &format!("/admin/dead-letters/{invalid}/discard"),
            json!({"note": "again"}),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let trace = console.get(&format!("/messages/{invalid}/trace")).await;
    assert_eq!(trace.body["outcome"], json!("discarded"), "{}", trace.text);
    assert_eq!(trace.body["discarded"]["by"], json!("local"));

    let audit = console.get("/admin/actions").await;
    let actions: Vec<(String, String, i64)> = audit.body["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| {
            (
                a["who"].as_str().expect("who").to_string(),
                a["action"].as_str().expect("action").to_string(),
                a["count"].as_i64().expect("count"),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("local".into(), "discard".into(), 1),
            ("local".into(), "replay".into(), 1),
            ("local".into(), "replay".into(), 1),
            ("local".into(), "dry_run".into(), 1),
        ]
    );
    console.stop().await;
}

/// A message's trace: its status and the rows it wrote (table and key); an id the store has no
/// record of is `unknown`; a malformed id is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_shows_the_rows_a_message_wrote() {
    let console = Console::start().await;
    let message =
        nomnom::generated::parse_message("order", support::order(7, 2).to_string().as_bytes())
            .expect("valid");
    let write = nomnom::store::PendingWrite {
        message_id: uuid::Uuid::now_v7(),
        received_at: chrono::Utc::now(),
        attempts: 1,
        position: nomnom::runtime::Position {
            epoch: 1,
            sequence: 1,
        },
        replayed: false,
        content: nomnom::store::Content::Message(&message),
    };
    console.store.write_batch(&[write]).await.expect("written");
    let trace = console
        .get(&format!("/messages/{}/trace", write.message_id))
        .await;
    assert_eq!(trace.status, StatusCode::OK, "{}", trace.text);
    assert_eq!(trace.body["outcome"], json!("stored"));
    assert_eq!(trace.body["status"]["row_count"], json!(3));
    assert_eq!(trace.body["position"], json!({"epoch": 1, "sequence": 1}));
    let tables: Vec<&str> = trace.body["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["table"].as_str())
        .collect();
    assert_eq!(tables, ["orders", "order_line_items", "order_line_items"]);
    let unknown = console
        .get(&format!("/messages/{}/trace", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(unknown.body["outcome"], json!("unknown"));
    assert_eq!(
        console.get("/messages/not-an-id/trace").await.status,
        StatusCode::BAD_REQUEST
    );
    console.stop().await;
}

/// The overview counts from where it is true across replicas: what the store committed, what
/// waits in the stream per entity (with the age of the oldest), and the workers that reported
/// themselves in the roster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_from_the_store_and_jetstream_and_lists_the_workers() {
    let console = Console::start().await;
    // The workers' consumer, as a worker makes it; nothing consumes, so messages wait.
    let stream = console
        .state
        .jetstream
        .get_stream(&console.nats.stream)
        .await
        .expect("stream");
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(console.state.consumer.clone()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let ingest = nomnom::api::router(console.state.clone());
    let mut accepted = Vec::new();
    for n in 0..3 {
        let response = ingest
            .clone()
            .oneshot(
                Request::post("/ingest/message/order")
                    .header("content-type", "application/json")
                    .body(Body::from(support::order(100 + n, 1).to_string()))
                    .expect("request"),
            )
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = serde_json::from_slice(
            &response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes(),
        )
        .expect("json");
        accepted.push(body["message_id"].as_str().expect("id").to_string());
    }
    // Accepted, not yet stored: the trace finds it waiting in the stream.
    let waiting = console
        .get(&format!("/messages/{}/trace", accepted[0]))
        .await;
    assert_eq!(
        waiting.body["outcome"],
        json!("waiting"),
        "{}",
        waiting.text
    );
    assert_eq!(waiting.body["waiting"]["entity"], json!("Order"));
    assert!(
        waiting.body["waiting"]["stream_sequence"]
            .as_u64()
            .is_some()
    );
    let message =
        nomnom::generated::parse_message("customer", support::customer(5).to_string().as_bytes())
            .expect("valid");
    let write = nomnom::store::PendingWrite {
        message_id: uuid::Uuid::now_v7(),
        received_at: chrono::Utc::now(),
        attempts: 1,
        position: Default::default(),
        replayed: false,
        content: nomnom::store::Content::Message(&message),
    };
    console.store.write_batch(&[write]).await.expect("written");
    let bucket = nomnom::admin::workers::open(&console.state.jetstream, &console.nats.stream)
        .await
        .expect("roster");
    let now = chrono::Utc::now();
    nomnom::admin::workers::report(
        &bucket,
        &nomnom::admin::workers::WorkerReport {
            id: "test-worker-1".into(),
            host: "test".into(),
            version: "0.0.0".into(),
            consumer: console.state.consumer.clone(),
            started_at: now,
            at: now,
            database_up: false,
            database_down_seconds: Some(12),
            committed: 0,
            dead_lettered: 0,
        },
    )
    .await
    .expect("reported");

    let stats = console.get("/stats").await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    let entity = |name: &str| {
        stats.body["entities"]
            .as_array()
            .expect("entities")
            .iter()
            .find(|e| e["entity"] == json!(name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {}", stats.text))
    };
    let order = entity("Order");
    assert_eq!(
        (
            order["waiting"].clone(),
            order["accepted"].clone(),
            order["committed"].clone()
        ),
        (json!(3), json!(3), json!(0)),
        "{}",
        stats.text
    );
    let customer = entity("Customer");
    assert_eq!(
        (
            customer["committed"].clone(),
            customer["committed_recent"].clone(),
            customer["waiting"].clone()
        ),
        (json!(1), json!(1), json!(0))
    );
    assert_eq!(stats.body["stream"]["undelivered"], json!(3));
    assert!(
        stats.body["stream"]["oldest_waiting_seconds"]
            .as_f64()
            .is_some(),
        "{}",
        stats.text
    );
    assert_eq!(stats.body["workers"][0]["id"], json!("test-worker-1"));
    assert_eq!(stats.body["database"]["workers_reporting_down"], json!(1));
    assert_eq!(stats.body["database"]["up"], json!(true));
    // The counting consumers are short-lived: named `console-…`, gone within seconds by
    // themselves (the api needs no right to delete consumers).
    let names = |stream: async_nats::jetstream::stream::Stream| async move {
        let mut names = stream.consumer_names();
        let mut all = Vec::new();
        while let Some(name) = futures::StreamExt::next(&mut names).await {
            all.push(name.expect("name"));
        }
        all
    };
    let others: Vec<String> = names(stream.clone())
        .await
        .into_iter()
        .filter(|n| n != &console.state.consumer)
        .collect();
    assert!(
        others.iter().all(|n| n.starts_with("console-")),
        "{others:?}"
    );
    let start = std::time::Instant::now();
    while names(stream.clone()).await.len() > 1 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "counting consumers stay"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    console.stop().await;
}
