//! The axum router, driven with `tower::ServiceExt::oneshot` against the real NATS (and, for
//! readiness, the real PostgreSQL).

use crate::{common, support};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nomnom::api::{AppState, router};
use nomnom::nats::NatsConfig;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Api {
    state: AppState,
    stream: String,
}

impl Api {
    /// A router on a fresh stream (created unless `create_stream` is false). The database pool
    /// points at `database_url` (lazy: only status and readiness use it).
    async fn new(create_stream: bool, database_url: &str) -> Self {
        let nats = NatsConfig {
            url: common::nats_url(),
            stream: format!("A_{}", common::unique()),
            duplicate_window: std::time::Duration::from_secs(120),
            replicas: 1,
            auth: Default::default(),
            limits: Default::default(),
        };
        let jetstream = nomnom::nats::connect(&nats).await.expect("NATS reachable");
        if create_stream {
            nomnom::nats::ensure_stream(&jetstream, &nats)
                .await
                .expect("stream");
        }
        let db =
            std::sync::Arc::new(nomnom::store::pg::PgStore::open(database_url, 1).expect("store"));
        Self {
            state: AppState::new(jetstream, nats.stream.clone(), db),
            stream: nats.stream,
        }
    }

    async fn plain() -> Self {
        Self::new(true, "postgres://postgres@127.0.0.1:5432/test").await
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, Value, axum::http::HeaderMap) {
        let response = router(self.state.clone())
            .oneshot(req)
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
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, json, headers)
    }

    async fn post(&self, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
        let req = Request::post(uri)
            .header("content-type", "application/json")
            .body(body.into())
            .expect("request");
        let (s, v, _) = self.call(req).await;
        (s, v)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        let (s, v, _) = self
            .call(Request::get(uri).body(Body::empty()).expect("request"))
            .await;
        (s, v)
    }

    /// The test's stream.
    async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        self.state
            .jetstream
            .get_stream(&self.stream)
            .await
            .expect("stream")
    }

    /// Messages the stream holds, each member of a group counted.
    async fn stream_messages(&self) -> u64 {
        common::stream_members(&self.state.jetstream, &self.stream).await
    }

    /// JetStream messages in the stream (a group is one).
    async fn stream_publishes(&self) -> u64 {
        let mut stream = self.stream().await;
        stream.info().await.expect("info").state.messages
    }

    /// The message at `sequence` of the stream as stored, and its (first member's) envelope.
    async fn stored(
        &self,
        sequence: u64,
    ) -> (
        async_nats::jetstream::message::StreamMessage,
        nomnom::envelope::MessageEnvelope,
    ) {
        let stored = self
            .stream()
            .await
            .get_raw_message(sequence)
            .await
            .expect("the message");
        let envelope = nomnom::envelope::MessageEnvelope::decode_all(
            &stored.subject,
            Some(&stored.headers),
            &stored.payload,
        )
        .expect("envelope")
        .swap_remove(0);
        (stored, envelope)
    }

    async fn cleanup(self) {
        let _ = self.state.jetstream.delete_stream(&self.stream).await;
    }
}

#[tokio::test]
async fn accepted_message_is_in_the_stream_byte_for_byte() {
    let api = Api::plain().await;
    let body = support::order(1, 2)
        .to_string()
        .replace("\"170001.47\"", "170001.4700000000000000001");
    let (status, answer) = api.post("/ingest/message/order", body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert!(answer.get("duplicate").is_none());
    let id = answer["message_id"].as_str().expect("id").to_string();

    let (stored, envelope) = api.stored(1).await;
    assert_eq!(
        stored.subject.as_str(),
        format!("{}.order.{id}", api.stream)
    );
    // Without an Idempotency-Key the id is fresh and time-ordered: no dedup, and one header
    // only, the schema version it was checked against (the subject carries the entity and the
    // id, the id the arrival time).
    let headers: Vec<(String, String)> = stored
        .headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_string()))
        })
        .collect();
    assert_eq!(
        headers,
        [(
            "Nomnom-Schema".to_string(),
            nomnom::generated::SCHEMA_VERSION.to_string()
        )]
    );
    assert_eq!(
        envelope.schema,
        Some(nomnom::envelope::SchemaVersion::own())
    );
    // The payload is the body exactly as sent.
    assert_eq!(envelope.message_id.to_string(), id);
    assert_eq!(envelope.entity, "Order");
    assert_eq!(&envelope.body[..], body.as_bytes());
    // The arrival time the client was given is the one the worker reads.
    let answered: chrono::DateTime<chrono::Utc> = answer["timestamp"]
        .as_str()
        .expect("timestamp")
        .parse()
        .expect("RFC 3339");
    assert_eq!(envelope.received_at, answered);
    api.cleanup().await;
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let api = Api::plain().await;
    let (status, body) = api.post("/ingest/message/nope", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown entity `nope`");
    assert_eq!(
        body["known_entities"],
        json!(["customer", "order", "order_event", "product"])
    );

    let (status, body) = api.post("/ingest/message/order", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("invalid JSON at line 1, column 2")
    );

    let (status, body) = api.post("/ingest/message/customer", "[1, 2]").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["details"][0]["field"], "$");

    // A member named twice is ambiguous: refused, not resolved by a reader's convention.
    let twice = r#"{"customer_key": "C1", "customer_key": "C2"}"#;
    let (status, body) = api.post("/ingest/message/customer", twice).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = body["error"].as_str().expect("error");
    assert!(
        error.contains("the member name `customer_key` appears twice"),
        "{error}"
    );

    let customer = r#"{"customer_key": "C1", "name": "n", "address": "a", "nation_key": 1.5,
        "phone": "p", "account_balance": "12x", "market_segment": "BUILDING"}"#;
    let (status, body) = api.post("/ingest/message/customer", customer).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["details"],
        json!([
            {"field": "nation_key", "error": "expected an integer (32-bit), found 1.5"},
            {"field": "account_balance", "error": "`12x` is not a decimal number"}
        ])
    );

    // PostgreSQL cannot store U+0000: refused here, not dead-lettered later.
    let mut nul = support::order(4, 1);
    nul["comment"] = json!("a\u{0}b");
    let (status, body) = api.post("/ingest/message/order", nul.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["details"][0]["field"], "comment");

    let (status, _) = api.get("/ingest/message/order").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, body) = api.get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no route for /nowhere;")),
        "{body}"
    );

    let xml = Request::post("/ingest/message/order")
        .header("content-type", "application/xml")
        .body(Body::from("<order/>"))
        .expect("request");
    let (status, body, _) = api.call(xml).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        body["error"],
        "unsupported content type `application/xml`; send application/json"
    );

    // curl's default for `-d` is accepted: the body is checked as JSON anyway.
    let form = Request::post("/ingest/message/order")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(support::order(3, 1).to_string()))
        .expect("request");
    assert_eq!(api.call(form).await.0, StatusCode::ACCEPTED);
    assert_eq!(api.stream_messages().await, 1);
    api.cleanup().await;
}

#[tokio::test]
async fn body_limit_is_413() {
    let mut api = Api::plain().await;
    api.state.max_body_bytes = 1000;
    let (status, body) = api.post("/ingest/message/order", "x".repeat(1001)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        body["error"],
        "the body is larger than the limit of 1000 bytes"
    );
    let (status, _) = api
        .post("/ingest/message/order", support::order(1, 1).to_string())
        .await;
    assert!(support::order(1, 1).to_string().len() < 1000);
    assert_eq!(status, StatusCode::ACCEPTED);
    api.cleanup().await;
}

#[tokio::test]
async fn missing_stream_is_503_with_retry_after() {
    let api = Api::new(false, "postgres://postgres@127.0.0.1:5432/test").await;
    let req = Request::post("/ingest/message/order")
        .body(Body::from(support::order(2, 1).to_string()))
        .expect("request");
    let (status, body, headers) = api.call(req).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        headers.get("retry-after").map(|v| v.to_str().unwrap_or("")),
        Some("1")
    );
    // What a client can do, never the broker's own error text (that goes to the log).
    assert_eq!(
        body["error"].as_str(),
        Some(nomnom::api::Dependency::Broker.client_message()),
        "{body}"
    );
}

#[tokio::test]
async fn untyped_route_finds_the_entity_three_ways() {
    let api = Api::plain().await;
    let order = support::order(4, 1);
    let (status, _) = api
        .post("/ingest/message?entity_type=order", order.to_string())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let req = Request::post("/ingest/message")
        .header("x-entity-type", "Order")
        .body(Body::from(order.to_string()))
        .expect("request");
    assert_eq!(api.call(req).await.0, StatusCode::ACCEPTED);
    let mut with_member = order.clone();
    with_member["entity_type"] = json!("order");
    assert_eq!(
        api.post("/ingest/message", with_member.to_string()).await.0,
        StatusCode::ACCEPTED
    );

    // Without any name: the one entity the body matches, named in the answer.
    let (status, body) = api.post("/ingest/message", order.to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["entity"], "order");
    let (status, _) = api
        .post("/ingest/message?entity_type=invoice", order.to_string())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Percent-encoding and other parameters are the query extractor's business.
    let (status, _) = api
        .post("/ingest/message?x=1&entity_type=%4Frder", order.to_string())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = api
        .post(
            "/ingest/message?entity_type=order&entity_type=x",
            order.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("invalid query string"))
    );
    assert_eq!(api.stream_messages().await, 5);
    api.cleanup().await;
}

/// A body without an entity matches the one entity whose validator accepts it and which knows
/// all its members; the notes' body that matches none is refused naming the closest entity,
/// its field errors and did-you-mean hints for the members it does not know.
#[tokio::test]
async fn an_unnamed_body_is_routed_to_the_one_entity_it_matches() {
    let api = Api::plain().await;
    for (body, entity) in [
        (support::order(7, 2), "order"),
        (support::customer(7), "customer"),
        (
            json!({"order_key": "ORD-7", "event_type": "shipped", "occurred_at": "2026-12-07T10:00:00Z", "note": null}),
            "order_event",
        ),
    ] {
        let (status, answer) = api.post("/ingest/message", body.to_string()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["entity"], entity, "{answer}");
    }
    // An order with a member no entity reads matches nothing: the closest is the order.
    let mut extra = support::order(8, 1);
    extra["shipping_adress"] = json!("somewhere");
    let (status, answer) = api.post("/ingest/message", extra.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["entity"], "Order", "{answer}");
    assert_eq!(answer["unknown_members"][0]["member"], "shipping_adress");

    let (status, answer) = api
        .post("/ingest/message", r#"{"order_id": "123", "total": 100.50}"#)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["entity"], "Order", "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("matches no entity") && e.contains("closest is `Order`")),
        "{answer}"
    );
    let hints: Vec<(String, String)> = answer["unknown_members"]
        .as_array()
        .expect("unknown members")
        .iter()
        .map(|m| {
            (
                m["member"].as_str().unwrap_or_default().to_string(),
                m["did_you_mean"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        hints,
        [
            ("order_id".to_string(), "order_key".to_string()),
            ("total".to_string(), "total_price".to_string())
        ]
    );
    assert!(
        answer["details"]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e["field"] == "order_key")),
        "{answer}"
    );
    // A named route lists the members it does not know too.
    let (status, answer) = api
        .post("/ingest/message/order", r#"{"order_id": "123"}"#)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["unknown_members"][0]["did_you_mean"], "order_key");
    assert_eq!(api.stream_messages().await, 3);
    api.cleanup().await;
}

/// An unknown route is a 404 listing the routes.
#[tokio::test]
async fn an_unknown_route_lists_the_routes() {
    let api = Api::plain().await;
    let (status, answer) = api.post("/ingest/mesage", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let routes: Vec<&str> = answer["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert_eq!(routes, nomnom::api::ROUTES);
    assert!(routes.contains(&"POST /ingest/message") && routes.contains(&"POST /ingest/batch"));
    // Every ingest and status route listed is one the document describes.
    let (_, document) = api.get("/api-docs/openapi.json").await;
    for route in routes {
        let (method, path) = route.split_once(' ').expect("METHOD path");
        // The document does not describe itself, its UI page, or metrics without a key scope.
        if matches!(path, "/swagger-ui" | "/metrics" | "/api-docs/openapi.json") {
            continue;
        }
        let described = document["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .any(|(p, item)| {
                let template = p.starts_with(path.split('{').next().unwrap_or(path))
                    && (path.contains('{') || p == path);
                template && item.get(method.to_lowercase()).is_some()
            });
        assert!(described, "{route} is in the OpenAPI document");
    }
    api.cleanup().await;
}

#[tokio::test]
async fn idempotency_key_gives_one_message_and_the_same_id() {
    let api = Api::plain().await;
    let send = || {
        Request::post("/ingest/message/order")
            .header("idempotency-key", "client-42")
            .body(Body::from(support::order(5, 2).to_string()))
            .expect("request")
    };
    let (s1, first, _) = api.call(send()).await;
    let (s2, second, _) = api.call(send()).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(first["message_id"], second["message_id"]);
    assert_eq!(second["duplicate"], true);
    assert_eq!(api.stream_messages().await, 1);
    // A key-derived id carries no time: the envelope travels in headers, with the dedup id.
    let (stored, envelope) = api.stored(1).await;
    let id = first["message_id"].as_str().expect("id");
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(id)
    );
    let answered: chrono::DateTime<chrono::Utc> = first["timestamp"]
        .as_str()
        .expect("timestamp")
        .parse()
        .expect("RFC 3339");
    assert_eq!(
        (
            envelope.message_id.to_string().as_str(),
            envelope.received_at
        ),
        (id, answered)
    );
    api.cleanup().await;
}

#[tokio::test]
async fn batch_answers_per_line_and_publishes_valid_lines() {
    let api = Api::plain().await;
    let lines = [
        support::order(1, 2).to_string(),
        "{broken".to_string(),
        String::new(),
        support::order(2, 3).to_string(),
        json!({"order_key": "X"}).to_string(),
        support::order(3, 1).to_string(),
    ];
    let req = Request::post("/ingest/batch/order")
        .header("content-type", "application/x-ndjson")
        .body(Body::from(lines.join("\n")))
        .expect("request");
    let (status, body, _) = api.call(req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (body["accepted"].clone(), body["rejected"].clone()),
        (json!(3), json!(2))
    );
    let results = body["results"].as_array().expect("results");
    let lines: Vec<u64> = results
        .iter()
        .map(|r| r["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, vec![1, 2, 4, 5, 6]);
    assert!(results[0]["message_id"].is_string());
    assert!(
        results[1]["error"]
            .as_str()
            .expect("error")
            .starts_with("invalid JSON")
    );
    assert_eq!(results[3]["details"][0]["field"], "customer_key");
    assert_eq!(results[3]["retryable"], false);
    assert_eq!(api.stream_messages().await, 3);

    let (status, _) = api.post("/ingest/batch/order", "\n\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = api.post("/ingest/batch/order", "{}\n[]").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    api.cleanup().await;
}

#[tokio::test]
async fn a_json_array_batch_is_checked_element_by_element_and_published_as_sent() {
    let api = Api::plain().await;
    // Leading white space, a reference entity (customer), odd spacing kept byte for byte.
    let good = crate::support::customer(1).to_string().replace(",", " ,");
    let body = format!(
        "\n  [{good}, {{\"customer_key\": \"X\"}}, 42,\n{}]  ",
        crate::support::customer(2)
    );
    let req = Request::post("/ingest/batch/customer")
        .header("content-type", "application/json")
        .header("idempotency-key", "array-1")
        .body(Body::from(body))
        .expect("request");
    let (status, answer, _) = api.call(req).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        (answer["accepted"].clone(), answer["rejected"].clone()),
        (json!(2), json!(2))
    );
    let results = answer["results"].as_array().expect("results");
    let positions: Vec<u64> = results
        .iter()
        .map(|r| r["line"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(positions, vec![1, 2, 3, 4]);
    assert_eq!(results[1]["details"][0]["field"], "name");
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap_or("")
            .contains("must be a JSON object"),
        "{answer}"
    );
    // Each element is its own message, its payload the element's text as sent.
    let (_, envelope) = api.stored(1).await;
    assert_eq!(&envelope.body[..], good.as_bytes());
    assert_eq!(envelope.entity, "Customer");
    assert_eq!(
        envelope.message_id.to_string(),
        results[0]["message_id"].as_str().unwrap_or("")
    );
    assert_eq!(api.stream_messages().await, 2);
    api.cleanup().await;
}

#[tokio::test]
async fn json_array_batches_keep_the_batch_limits_and_report_bad_json() {
    let mut api = Api::plain().await;
    api.state.max_batch_lines = 3;
    let four = format!(
        "[{}]",
        vec![crate::support::customer(1).to_string(); 4].join(",")
    );
    let (status, body) = api.post("/ingest/batch/customer", four).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        api.stream_messages().await,
        0,
        "nothing published past the limit"
    );
    let (status, body) = api.post("/ingest/batch/customer", "[]").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("empty"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/ingest/batch/customer",
            format!("[{},\n  ", crate::support::customer(1)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("invalid JSON at line 2"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/ingest/batch/customer",
            format!("[{}] trailing", crate::support::customer(1)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Leading blank lines are not kept, but still count for the error's line.
    let (status, body) = api
        .post(
            "/ingest/batch/customer",
            format!("\n \n[{},", crate::support::customer(1)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("invalid JSON at line 3"),
        "{body}"
    );
    // An element larger than MAX_BODY_BYTES is refused on its own.
    api.state.max_body_bytes = 300;
    let mut big = crate::support::customer(5);
    big["comment"] = json!("x".repeat(400));
    let (status, body) = api
        .post(
            "/ingest/batch/customer",
            format!("[{},{big}]", crate::support::customer(4)),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["rejected_by_reason"]["too_large"], 1, "{body}");
    assert_eq!(api.stream_messages().await, 1);
    api.cleanup().await;
}

async fn post_csv(api: &Api, entity: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::post(format!("/ingest/batch/{entity}"))
        .header("content-type", "text/csv; charset=utf-8")
        .body(Body::from(body.to_string()))
        .expect("request");
    let (status, answer, _) = api.call(req).await;
    (status, answer)
}

#[tokio::test]
async fn csv_rows_convert_by_the_entity_spec_and_errors_name_line_and_column() {
    let api = Api::plain().await;
    // customer.yaml reads dbgen's customer.tbl: `|`, no header, a trailing `|`.
    let body = "1|Customer#000000001|IVhzIApeRb ot,c,E|15|25-989-741-2988|711.56|BUILDING|regular platelets|\n\
                2|Customer#000000002|XSTf4|x|23-768-687-3665|121.65|AUTOMOBILE||\n\
                \n\
                3|A name much longer than twenty-five|MG9kdTD2WBHm|1|11-719-748-3364|7498.12|AUTOMOBILE|c|\n\
                4|Customer#000000004|XxVSJsL|4|14-128-190-5944|2866.83|MACHINERY|d|\n";
    let (status, answer) = post_csv(&api, "customer", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        (answer["accepted"].clone(), answer["rejected"].clone()),
        (json!(2), json!(2))
    );
    let results = answer["results"].as_array().expect("results");
    let lines: Vec<u64> = results
        .iter()
        .map(|r| r["line"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        lines,
        vec![1, 2, 4, 5],
        "CSV line numbers (the blank line 3 is skipped)"
    );
    // A cell that does not convert, and a value the parser refuses: both name the column.
    assert_eq!(results[1]["details"][0]["field"], "nation_key (column 4)");
    assert_eq!(results[1]["details"][0]["error"], "`x` is not a number");
    assert_eq!(results[2]["details"][0]["field"], "name (column 2)");
    assert!(
        results[2]["details"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("at most 25"),
        "{answer}"
    );
    // The published message is the JSON object the row stands for, typed by the YAML.
    let (_, envelope) = api.stored(1).await;
    let published: Value = serde_json::from_slice(&envelope.body).expect("JSON");
    assert_eq!(
        published,
        json!({"customer_key": "1", "name": "Customer#000000001", "address": "IVhzIApeRb ot,c,E",
               "nation_key": 15, "phone": "25-989-741-2988", "account_balance": 711.56,
               "market_segment": "BUILDING", "comment": "regular platelets"})
    );
    api.cleanup().await;
}

#[tokio::test]
async fn csv_with_a_header_maps_columns_by_name_and_refuses_a_header_that_does_not_fit() {
    let api = Api::plain().await;
    // product.yaml has no csv block: a header row names the fields (any case, any order).
    let body = "PART_KEY,name,manufacturer,brand,type,size,container,retail_price,comment\n\
                P-1,\"bolt, zinc\",Manufacturer#1,Brand#13,PROMO,7,JUMBO PKG,901.00,\n\
                P-2,nut,Manufacturer#1,Brand#13,PROMO,,JUMBO PKG,902.00,\"two\nlines\"\n\
                P-3,washer,Manufacturer#2,Brand#2,SMALL,3,SM BOX,903.5,ok\n";
    let (status, answer) = post_csv(&api, "product", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(results[1]["line"], 3);
    assert_eq!(results[1]["details"][0]["field"], "size (column 6)");
    assert_eq!(
        results[1]["details"][0]["error"],
        "is empty; a value is required"
    );
    assert_eq!(
        results[2]["line"], 5,
        "a quoted line break moves the next row down"
    );
    let (status, answer) = post_csv(&api, "product", "part_key,nmae\nP-1,x\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("CSV header: column 2 `nmae`"),
        "{answer}"
    );
    let (status, answer) = post_csv(&api, "product", "part_key,name\nP-1,x\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or("")
            .contains("required field `manufacturer`"),
        "{answer}"
    );
    let (status, answer) = post_csv(&api, "product", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(api.stream_messages().await, 2);
    api.cleanup().await;
}

/// More lines than the JetStream context lets be unacknowledged at once (5 000, shared by all
/// requests): two such batches at the same time are still accepted whole. Keyed, so every line
/// is a message of its own (unkeyed, 6 000 lines are a few chunks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_larger_than_the_ack_window_are_accepted_whole() {
    let api = Api::plain().await;
    let body = |offset: u32| {
        (0..6000)
            .map(|n| crate::support::customer(offset + n).to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let send = |body: String| {
        let app = router(api.state.clone());
        let key = format!("ack-window-{}", common::unique());
        async move {
            let req = Request::post("/ingest/batch/customer")
                .header("content-type", "application/x-ndjson")
                .header("idempotency-key", key)
                .body(Body::from(body))
                .expect("request");
            let response = app.oneshot(req).await.expect("router answers");
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (a, b) = tokio::join!(send(body(0)), send(body(10_000)));
    for (status, answer) in [a, b] {
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["accepted"], 6000);
    }
    assert_eq!(api.stream_messages().await, 12_000);
    assert_eq!(api.stream_publishes().await, 12_000);
    api.cleanup().await;
}

/// Unkeyed batches: under 1 000 lines in groups of up to 256 (a status row per line), from
/// 1 000 lines in chunks (a status row per chunk); every line has its id either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_unkeyed_batches_travel_in_chunks_and_small_ones_in_groups() {
    let api = Api::plain().await;
    for (lines, publishes) in [(999u32, 4..=4), (6000, 2..=6)] {
        let before = api.stream_publishes().await;
        let body: String = (0..lines)
            .map(|n| crate::support::customer(lines * 10 + n).to_string() + "\n")
            .collect();
        let (status, answer) = api.post("/ingest/batch/customer", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        assert_eq!(answer["accepted"], lines);
        let ids: std::collections::HashSet<&str> = answer["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|r| r["message_id"].as_str())
            .collect();
        assert_eq!(ids.len(), lines as usize, "every line its own id");
        let sent = api.stream_publishes().await - before;
        assert!(
            publishes.contains(&sent),
            "{lines} lines: {sent} JetStream messages"
        );
    }
    api.cleanup().await;
}

#[tokio::test]
async fn readiness_follows_what_accepting_needs() {
    let test_db = common::TestDb::create().await;
    let api = Api::new(true, &test_db.url).await;
    let (status, body) = api.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["postgres"], "ok");

    // PostgreSQL down: still ready (messages are accepted), and said so.
    let no_pg_only = Api::new(true, "postgres://postgres@127.0.0.1:1/none").await;
    let (status, body) = no_pg_only.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["postgres"]
            .as_str()
            .is_some_and(|s| s.starts_with("unavailable")),
        "{body}"
    );
    no_pg_only.cleanup().await;

    // No stream: not ready, and the answer names it.
    let no_stream = Api::new(false, "postgres://postgres@127.0.0.1:1/none").await;
    let (status, body) = no_stream.get("/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let failed = body["failed"].as_object().expect("failed");
    let names: Vec<&str> = failed.keys().map(String::as_str).collect();
    assert_eq!(names, vec!["stream"]);
    let said = failed["stream"].as_str().expect("why");
    assert!(
        said.ends_with("cannot be read (missing, or JetStream unavailable)"),
        "/ready says what failed in its own words, not JetStream's: {said}"
    );
    api.cleanup().await;
    test_db.drop_db().await;
}

#[tokio::test]
async fn health_metrics_openapi_and_swagger() {
    let api = Api::plain().await;
    let (status, body) = api.get("/health").await;
    assert_eq!(
        (status, body["status"].clone()),
        (StatusCode::OK, json!("ok"))
    );

    api.post("/ingest/message/order", support::order(9, 1).to_string())
        .await;
    api.post("/ingest/message/order", "{}").await;
    let (status, text) = api.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().expect("text").to_string();
    assert!(text.contains(r#"nomnom_http_requests_total{method="POST",route="/ingest/message/{entity}",status="202"} 1"#), "{text}");
    assert!(text.contains(r#"nomnom_messages_accepted_total{entity="order"} 1"#));
    assert!(text.contains(r#"nomnom_messages_rejected_total{entity="order",reason="invalid"} 1"#));
    assert!(text.contains("nomnom_publish_duration_seconds_bucket"));

    let (status, doc) = api.get("/api-docs/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    for p in [
        "/ingest/message/order",
        "/ingest/message/customer",
        "/ingest/message/product",
        "/ingest/batch/order",
        "/ingest/message",
        "/ingest/status/{message_id}",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    let order = &doc["components"]["schemas"]["Order"];
    assert_eq!(order["properties"]["order_status"]["maxLength"], 1);
    assert_eq!(
        order["properties"]["line_items"]["items"]["properties"]["line_number"]["format"],
        "int32"
    );
    assert!(
        order["required"]
            .as_array()
            .expect("required")
            .contains(&json!("order_key"))
    );

    let (status, page) = api.get("/swagger-ui").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.as_str()
            .expect("html")
            .contains("/api-docs/openapi.json")
    );
    let (status, js) = api.get("/swagger-ui/swagger-ui-bundle.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(js.as_str().expect("js").len() > 100_000);
    api.cleanup().await;
}

/// xorshift64*: deterministic pseudo-random bytes without extra dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn hostile_bodies() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let valid = support::order(77, 3).to_string().into_bytes();
    let mut bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"{\"order_key\": \"\xff\"}".to_vec(),
        "[".repeat(100_000).into_bytes(),
        format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000)).into_bytes(),
        format!("{{\"ship_priority\": 1{}}}", "0".repeat(5000)).into_bytes(),
        b"{\"order_key\": \"\\u0000\"}".to_vec(),
        b"{\"total_price\": 1e999999}".to_vec(),
        b"{\"line_items\": [1, \"x\", null, [], {}]}".to_vec(),
        b"{\"order_key\": {\"$ne\": null}}".to_vec(),
        b"\"just a string\"".to_vec(),
        b"{\"order_key\": \"a\", \"order_key\": \"b\"}".to_vec(),
    ];
    for _ in 0..1500 {
        // Random bytes, including invalid UTF-8.
        let len = rng.below(200);
        bodies.push((0..len).map(|_| rng.next() as u8).collect());
    }
    for _ in 0..1500 {
        // A valid order with a few bytes changed, deleted or duplicated.
        let mut b = valid.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            match rng.below(3) {
                0 => b[i] = rng.next() as u8,
                1 => {
                    b.remove(i);
                }
                _ => b.insert(i, b[i]),
            }
        }
        bodies.push(b);
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_hostile_bodies_never_panic_and_always_get_json() {
    let api = Api::plain().await;
    let bodies = hostile_bodies();
    let total = bodies.len();
    let mut accepted = 0;
    for (i, body) in bodies.into_iter().enumerate() {
        let uri = match i % 3 {
            0 => "/ingest/message/order",
            1 => "/ingest/message?entity_type=order",
            _ => "/ingest/batch/order",
        };
        let req = Request::post(uri).body(Body::from(body)).expect("request");
        let (status, answer, headers) = api.call(req).await;
        assert!(
            headers
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json")),
            "request {i}: not JSON: {answer}"
        );
        assert!(
            status.is_client_error() || status == StatusCode::ACCEPTED,
            "request {i}: {status} {answer}"
        );
        if status == StatusCode::ACCEPTED {
            accepted += 1;
        }
    }
    assert!(total >= 3000);
    // Every accepted message is in the stream; nothing else is.
    let in_stream = api.stream_messages().await;
    let batch_lines_accepted = in_stream.saturating_sub(accepted);
    assert!(in_stream >= accepted, "{in_stream} < {accepted}");
    assert!(batch_lines_accepted <= total as u64);
    api.cleanup().await;
}

#[tokio::test]
async fn a_full_stream_is_503_with_retry_after() {
    let api = Api::new(false, "postgres://postgres@127.0.0.1:5432/test").await;
    // A stream that holds one message and refuses new ones when full.
    api.state
        .jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: api.stream.clone(),
            subjects: vec![format!("{}.>", api.stream)],
            max_messages: 1,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .expect("stream");
    let (first, _) = api
        .post("/ingest/message/order", support::order(1, 1).to_string())
        .await;
    assert_eq!(first, StatusCode::ACCEPTED);
    let req = Request::post("/ingest/message/order")
        .body(Body::from(support::order(2, 1).to_string()))
        .expect("request");
    let (status, body, headers) = api.call(req).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("the stream has reached its limits"),
        "{body}"
    );
    assert_eq!(api.stream_messages().await, 1);
    api.cleanup().await;
}

/// Samples (not comments) in the `/metrics` text.
fn series(metrics: &Value) -> usize {
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

#[tokio::test]
async fn made_up_entity_names_and_methods_add_no_metric_series() {
    let api = Api::plain().await;
    let hostile = |i: usize| {
        let name = format!("e{}", common::unique());
        let method = axum::http::Method::from_bytes(format!("M{i}X").as_bytes()).expect("token");
        (name, method)
    };
    let send = |i: usize| {
        let (name, method) = hostile(i);
        let api = &api;
        async move {
            api.post(&format!("/ingest/message/{name}"), "{}").await;
            api.post(&format!("/ingest/batch/{name}"), "{}\n").await;
            api.call(
                Request::builder()
                    .method(method)
                    .uri(format!("/ingest/message/{name}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        }
    };
    for i in 0..3 {
        send(i).await;
    }
    // The first scrape creates the scrape's own series.
    api.get("/metrics").await;
    let (_, before) = api.get("/metrics").await;
    for i in 3..1003 {
        send(i).await;
    }
    let (_, after) = api.get("/metrics").await;
    assert_eq!(
        series(&after),
        series(&before),
        "{}",
        after.as_str().unwrap_or_default()
    );
    let text = after.as_str().unwrap_or_default();
    assert!(text.contains(r#"entity="unknown""#), "{text}");
    assert!(text.contains(r#"method="other""#), "{text}");
    api.cleanup().await;
}

#[tokio::test]
async fn batches_are_bounded_in_lines_bytes_and_answer_size() {
    let mut api = Api::plain().await;
    api.state.max_batch_lines = 50;
    api.state.max_body_bytes = 2000;
    let order = support::order(1, 1).to_string();

    // One line too many: 413 JSON, and nothing is published.
    let body = format!("{order}\n").repeat(51);
    let (status, answer) = api.post("/ingest/batch/order", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(
        answer["error"],
        "the batch has more than 50 lines; split it"
    );
    assert_eq!(api.stream_messages().await, 0);

    // Blank lines do not count; a line over MAX_BODY_BYTES is refused alone.
    let mut body = format!("{order}\n\n\n").repeat(48);
    body.push_str(&format!("{{\"pad\":\"{}\"}}\n", "x".repeat(3000)));
    body.push_str(&order);
    let (status, answer) = api.post("/ingest/batch/order", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["accepted"], 49);
    assert_eq!(answer["rejected"], 1);
    assert_eq!(answer["rejected_by_reason"]["too_large"], 1);
    assert_eq!(api.stream_messages().await, 49);

    // 300 bad lines: counted, but only the first 100 listed in full.
    api.state.max_batch_lines = 10_000;
    let (status, answer) = api.post("/ingest/batch/order", "{}\n".repeat(300)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer["rejected"], 300);
    assert_eq!(answer["errors_omitted"], 200);
    assert_eq!(answer["rejected_by_reason"]["invalid"], 300);
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), nomnom::api::MAX_ERRORS_SHOWN);
    assert_eq!(results[99]["line"], 100);
    assert!(
        results[0]["details"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    );
    api.cleanup().await;
}

#[tokio::test]
async fn status_and_readiness_run_against_any_store() {
    let api = Api::plain().await;
    let id = uuid::Uuid::now_v7();
    let at = chrono::Utc::now();
    let stored = nomnom::store::StoredStatus {
        entity: "Order".into(),
        status: "processed".into(),
        received_at: at,
        processed_at: at,
        row_count: 3,
        attempts: 1,
        error: None,
        run: None,
    };
    for up in [true, false] {
        let mut state = api.state.clone();
        let store = crate::support::store::MemoryStore::with_statuses([(id, stored.clone())]);
        store.up.store(up, std::sync::atomic::Ordering::SeqCst);
        state.store = std::sync::Arc::new(store);
        let fake = Api {
            state,
            stream: api.stream.clone(),
        };
        let (status, body) = fake.get(&format!("/ingest/status/{id}")).await;
        if up {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(
                (body["status"].clone(), body["row_count"].clone()),
                (json!("processed"), json!(3)),
                "{body}"
            );
        } else {
            // A store that does not answer: the client is told to ask again, not the store's text.
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            let error = body["error"].as_str().expect("error");
            assert!(
                error.contains("ask again") && !error.contains("in-memory"),
                "{body}"
            );
        }
        let (status, body) = fake.get("/ready").await;
        // The store decides nothing about readiness (messages are accepted without it); it is
        // reported.
        assert_eq!(status, StatusCode::OK, "{body}");
        let postgres = body["postgres"].as_str().expect("reported");
        assert_eq!(postgres == "ok", up, "{body}");
    }
    api.cleanup().await;
}

/// The api publishes through the `Publish` seam: single messages, keyed ones and batches reach
/// an in-memory publisher, and a publisher that fails makes a 503 whose body says what the
/// client can do, never the publisher's own text.
#[tokio::test]
async fn single_keyed_and_batch_messages_go_through_any_publisher() {
    let api = Api::plain().await;
    let publisher = std::sync::Arc::new(support::publisher::MemoryPublisher::default());
    let fake = Api {
        state: api.state.clone().with_publisher(publisher.clone()),
        stream: api.stream.clone(),
    };
    let (status, body) = fake
        .post("/ingest/message/order", support::order(1, 1).to_string())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let keyed = Request::post("/ingest/message/order")
        .header("content-type", "application/json")
        .header("idempotency-key", "publisher-seam-1")
        .body(Body::from(support::order(2, 1).to_string()))
        .expect("request");
    let (status, body, _) = fake.call(keyed).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let lines = [support::order(3, 1), support::order(4, 2)]
        .map(|o| o.to_string())
        .join("\n");
    let (status, body) = fake.post("/ingest/batch/order", lines).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    let sent = publisher.sent();
    // One single, one keyed, one group of two lines.
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(
        sent.iter()
            .all(|s| s.starts_with(&format!("{}.order.", api.stream))),
        "{sent:?}"
    );
    assert_eq!(api.stream_messages().await, 0, "nothing reached JetStream");

    publisher
        .refuse
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The failure is logged with a request id, which the answer carries: the client's own, or
    // one the api made up.
    for sent_id in [None, Some("client-chosen-id-7")] {
        let mut request =
            Request::post("/ingest/message/order").header("content-type", "application/json");
        if let Some(id) = sent_id {
            request = request.header("x-request-id", id);
        }
        let request = request
            .body(Body::from(support::order(5, 1).to_string()))
            .expect("request");
        let (status, body, headers) = fake.call(request).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let error = body["error"].as_str().expect("error");
        assert!(
            !error.contains("10.0.0.7") && !error.contains("in-memory"),
            "upstream text reached the client: {body}"
        );
        let answered_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("a request id on the 503");
        match sent_id {
            Some(id) => assert_eq!(answered_id, id),
            None => assert!(uuid::Uuid::parse_str(answered_id).is_ok(), "{answered_id}"),
        }
    }
    // A batch whose every line failed to publish: the same.
    let (status, body, headers) = fake
        .call(
            Request::post("/ingest/batch/order")
                .header("content-type", "application/x-ndjson")
                .body(Body::from(support::order(6, 1).to_string()))
                .expect("request"),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.to_string().contains("10.0.0.7"), "{body}");
    assert!(headers.contains_key("x-request-id"), "{headers:?}");
    api.cleanup().await;
}

/// The dry run answers what ingesting would — 200 for a body it would accept, the same 422 for
/// one it would refuse — and publishes nothing.
#[tokio::test]
async fn validate_answers_as_ingest_would_and_publishes_nothing() {
    let api = Api::plain().await;
    let (status, body) = api
        .post("/ingest/validate/order", support::order(1, 2).to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"valid": true, "entity": "Order"}));
    let mut bad = support::order(2, 1);
    bad["total_price"] = json!("lots");
    let (dry_status, dry) = api.post("/ingest/validate/order", bad.to_string()).await;
    let (status, ingested) = api.post("/ingest/message/order", bad.to_string()).await;
    assert_eq!(
        (dry_status, &dry),
        (status, &ingested),
        "the dry run's answer is ingest's"
    );
    assert_eq!(dry_status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = api.post("/ingest/validate/nope", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api.stream_messages().await, 0, "nothing was published");
    api.cleanup().await;
}
