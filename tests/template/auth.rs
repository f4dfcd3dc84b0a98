//! API keys: which routes need one, 401/403 answers, per-client idempotency, metrics of
//! refusals — the router through `tower::ServiceExt::oneshot` on the real NATS, and the whole
//! pipeline for idempotency keys of two clients.

use crate::{common, support};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use nomnom::api::{ApiKeys, AppState, metrics_router, router};
use nomnom::nats::NatsConfig;
use serde_json::Value;
use tower::ServiceExt;

const INGEST_KEY: &str = "ingest-client-secret-0001";
const ORDERS_KEY: &str = "orders-only-secret-00002";
const PROM_KEY: &str = "prometheus-scrape-secret3";

fn keys() -> ApiKeys {
    ApiKeys::parse(&format!(
        "ingest:{INGEST_KEY}\norders:{ORDERS_KEY}:order\nprometheus:{PROM_KEY}:metrics\n"
    ))
    .expect("valid keys")
}

struct Api {
    state: AppState,
    stream: String,
}

impl Api {
    async fn with_keys(keys: ApiKeys) -> Self {
        let nats = NatsConfig {
            url: common::nats_url(),
            stream: format!("AUTH_{}", common::unique()),
            duplicate_window: std::time::Duration::from_secs(120),
            replicas: 1,
            auth: Default::default(),
            limits: Default::default(),
        };
        let jetstream = nomnom::nats::connect(&nats).await.expect("NATS reachable");
        nomnom::nats::ensure_stream(&jetstream, &nats)
            .await
            .expect("stream");
        let db = std::sync::Arc::new(
            nomnom::store::pg::PgStore::open("postgres://postgres@127.0.0.1:5432/test", 1)
                .expect("store"),
        );
        let mut state = AppState::new(jetstream, nats.stream.clone(), db);
        state.keys = keys;
        Self {
            state,
            stream: nats.stream,
        }
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, Value, HeaderMap) {
        call(router(self.state.clone()), req).await
    }

    async fn cleanup(self) {
        let _ = self.state.jetstream.delete_stream(&self.stream).await;
    }
}

async fn call(app: axum::Router, req: Request<Body>) -> (StatusCode, Value, HeaderMap) {
    let response = app.oneshot(req).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, json, headers)
}

fn post(uri: &str, body: String, auth: Option<(&str, &str)>) -> Request<Body> {
    let mut req = Request::post(uri).header("content-type", "application/json");
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    req.body(Body::from(body)).expect("request")
}

fn get(uri: &str, auth: Option<(&str, &str)>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    req.body(Body::empty()).expect("request")
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn customer() -> String {
    crate::support::customer(1).to_string()
}

/// The value of one series of `nomnom_auth_failures_total`.
async fn auth_failures(api: &Api, reason: &str) -> u64 {
    let bearer = bearer(PROM_KEY);
    let (status, text, _) = api
        .call(get("/metrics", Some(("authorization", &bearer))))
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().expect("text exposition").to_string();
    let series = format!("nomnom_auth_failures_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
        .trim()
        .parse()
        .expect("a count")
}

#[tokio::test]
async fn every_route_but_health_and_ready_needs_a_valid_key() {
    let api = Api::with_keys(keys()).await;
    let order = support::order(1, 2).to_string();
    // No key: 401 with a challenge and a JSON body, nothing published.
    let (status, body, headers) = api
        .call(post("/ingest/message/order", order.clone(), None))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["status"], 401);
    assert!(
        body["error"].as_str().unwrap_or("").contains("X-API-Key"),
        "{body}"
    );
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="nomnom""#
    );
    // A wrong key: 401 invalid_token.
    let (status, body, headers) = api
        .call(post(
            "/ingest/message/order",
            order.clone(),
            Some(("authorization", "Bearer not-a-configured-key-at-all")),
        ))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap_or("")
            .contains("invalid_token")
    );
    // Every keyed route refuses without a key (batch, untyped, status, OpenAPI, metrics).
    for req in [
        post("/ingest/batch/order", order.clone(), None),
        post("/ingest/message?entity_type=order", order.clone(), None),
        get("/ingest/status/0190a0a0-0000-7000-8000-000000000000", None),
        get("/api-docs/openapi.json", None),
        get("/metrics", None),
    ] {
        let uri = req.uri().to_string();
        let (status, body, _) = api.call(req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
    }
    assert_eq!(api.stream_messages().await, 0);
    // Liveness and readiness stay open (probes carry no key), as does the static UI page
    // (it asks for a key before loading the document); unknown paths are 404.
    for uri in ["/health", "/ready", "/swagger-ui"] {
        let (status, body, _) = api.call(get(uri, None)).await;
        assert_ne!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
    }
    let (status, _, _) = api.call(get("/no/such/route", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The right key in either header gets in.
    let bearer_ingest = bearer(INGEST_KEY);
    for auth in [
        ("authorization", bearer_ingest.as_str()),
        ("x-api-key", INGEST_KEY),
    ] {
        let (status, body, _) = api
            .call(post("/ingest/message/order", order.clone(), Some(auth)))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{auth:?}: {body}");
        let id = body["message_id"].as_str().expect("id").to_string();
        // Past authentication (the shared `test` database has no status table: 503 here).
        let (status, body, _) = api
            .call(get(&format!("/ingest/status/{id}"), Some(auth)))
            .await;
        assert!(
            ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
            "{body}"
        );
    }
    let (status, doc, _) = api
        .call(get(
            "/api-docs/openapi.json",
            Some(("x-api-key", INGEST_KEY)),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    // The document declares both key headers and the 401/403 answers of keyed operations.
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["apiKeyHeader"]["name"], "X-API-Key");
    assert_eq!(schemes["bearerKey"]["scheme"], "bearer");
    let ingest = &doc["paths"]["/ingest/message/order"]["post"];
    assert!(ingest["security"].is_array());
    assert!(ingest["responses"]["401"].is_object() && ingest["responses"]["403"].is_object());
    assert!(doc["paths"]["/health"]["get"]["security"].is_null());
    assert_eq!(api.stream_messages().await, 2);
    // Refusals are counted by reason: 6 without a key, 1 with a wrong one.
    assert_eq!(auth_failures(&api, "missing").await, 6);
    assert_eq!(auth_failures(&api, "invalid").await, 1);
    api.cleanup().await;
}

#[tokio::test]
async fn a_key_posts_only_the_entities_of_its_scope_and_metrics_need_their_own() {
    let api = Api::with_keys(keys()).await;
    let orders = Some(("x-api-key", ORDERS_KEY));
    let (status, body, _) = api
        .call(post(
            "/ingest/message/order",
            support::order(2, 1).to_string(),
            orders,
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for req in [
        post("/ingest/message/customer", customer(), orders),
        post("/ingest/batch/customer", customer(), orders),
        post("/ingest/message?entity_type=customer", customer(), orders),
    ] {
        let uri = req.uri().to_string();
        let (status, body, _) = api.call(req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}: {body}");
        assert_eq!(body["status"], 403);
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("`orders` may not post `customer`"),
            "{body}"
        );
    }
    // The unscoped key posts any entity but may not read metrics; the metrics key only that.
    let (status, body, _) = api
        .call(post(
            "/ingest/message/customer",
            customer(),
            Some(("x-api-key", INGEST_KEY)),
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body, _) = api
        .call(get("/metrics", Some(("x-api-key", INGEST_KEY))))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("METRICS_PORT")
    );
    let (status, body, _) = api
        .call(post(
            "/ingest/message/order",
            support::order(3, 1).to_string(),
            Some(("x-api-key", PROM_KEY)),
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // An unnamed body is tried only against the entities of the key's scope: a customer is no
    // match for the orders key (422 naming the order as the closest), an order is.
    let (status, body, _) = api.call(post("/ingest/message", customer(), orders)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["entity"], "Order", "{body}");
    let (status, body, _) = api
        .call(post(
            "/ingest/message",
            support::order(4, 1).to_string(),
            orders,
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["entity"], "order", "{body}");
    assert_eq!(api.stream_messages().await, 3);
    assert_eq!(auth_failures(&api, "forbidden").await, 5);
    api.cleanup().await;
}

#[tokio::test]
async fn metrics_on_their_own_port_leave_the_main_port() {
    let mut api = Api::with_keys(keys()).await;
    api.state.metrics_on_main_port = false;
    let (status, _, _) = api
        .call(get("/metrics", Some(("x-api-key", PROM_KEY))))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, text, _) = call(metrics_router(api.state.clone()), get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.as_str()
            .unwrap_or("")
            .contains("nomnom_auth_failures_total")
    );
    api.cleanup().await;
}

#[tokio::test]
async fn without_keys_everything_stays_open() {
    let api = Api::with_keys(ApiKeys::none()).await;
    let (status, body, _) = api
        .call(post(
            "/ingest/message/order",
            support::order(4, 1).to_string(),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, _) = api.call(get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    api.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_with_the_same_idempotency_key_store_two_messages() {
    let p = common::Pipeline::start_with_api(|state| state.keys = keys()).await;
    let mut ids = Vec::new();
    for (key, order) in [(INGEST_KEY, 11), (ORDERS_KEY, 12), (INGEST_KEY, 11)] {
        let body = support::order(order, 2).to_string();
        let (status, answer) = p
            .post_with(
                "/ingest/message/order",
                &body,
                &[("x-api-key", key), ("idempotency-key", "shared-key-1")],
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["message_id"].as_str().expect("id").to_string());
    }
    // Different clients: different ids; the same client again: its own id, a duplicate.
    assert_ne!(ids[0], ids[1]);
    assert_eq!(ids[0], ids[2]);
    p.db.wait_count("SELECT 1 FROM message_status", 2).await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 2);
    let stored =
        p.db.rows("SELECT message_id::text FROM message_status ORDER BY 1")
            .await;
    let mut expected: Vec<Vec<Option<String>>> =
        ids[..2].iter().map(|id| vec![Some(id.clone())]).collect();
    expected.sort();
    assert_eq!(stored, expected);
    p.stop().await;
}

impl Api {
    /// Messages the stream holds, each member of a group counted.
    async fn stream_messages(&self) -> u64 {
        common::stream_members(&self.state.jetstream, &self.stream).await
    }
}

/// A key reads the status only of messages of entities its scope covers: a key scoped to
/// `customer` gets 404 for an order (as for an unknown id), pending and once processed; keys
/// that cover orders get the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_scoped_like_posting() {
    const CUSTOMERS_KEY: &str = "customers-only-secret-04";
    let keys = ApiKeys::parse(&format!(
        "ingest:{INGEST_KEY}\norders:{ORDERS_KEY}:order\ncustomers:{CUSTOMERS_KEY}:customer\n"
    ))
    .expect("valid keys");
    let mut p = common::Pipeline::paused_full(
        common::TestDb::create().await,
        |_| {},
        |state| state.keys = keys,
    )
    .await;
    let body = support::order(21, 2).to_string();
    let (status, answer) = p
        .post_with("/ingest/message/order", &body, &[("x-api-key", ORDERS_KEY)])
        .await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["message_id"].as_str().expect("id").to_string();
    let base = p.base.clone();
    let status_as = |key: &'static str| {
        let url = format!("{base}/ingest/status/{id}");
        async move {
            let resp = reqwest::Client::new()
                .get(url)
                .header("x-api-key", key)
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let json: Value = resp.json().await.expect("json");
            (status, json)
        }
    };
    for round in ["pending", "processed"] {
        if round == "processed" {
            p.start_worker().await;
            p.db.wait_count("SELECT 1 FROM message_status", 1).await;
        }
        for key in [ORDERS_KEY, INGEST_KEY] {
            let (status, json) = status_as(key).await;
            assert_eq!(
                (status, json["status"].as_str()),
                (200, Some(round)),
                "{json}"
            );
        }
        let (status, json) = status_as(CUSTOMERS_KEY).await;
        assert_eq!(status, 404, "{round}: {json}");
        assert_eq!(
            json["error"],
            format!("no message with id {id}"),
            "as for an unknown id"
        );
    }
    p.stop().await;
}
