//! The axum router, driven with `tower::ServiceExt::oneshot` against the real NATS.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nomnom::api::{AppState, router};
use nomnom::config::NatsConfig;
use serde_json::Value;
use tower::ServiceExt;

async fn state(create_stream: bool) -> (AppState, NatsConfig) {
    let nats = NatsConfig {
        url: common::nats_url(),
        stream: format!("A_{}", common::unique()),
        duplicate_window: std::time::Duration::from_secs(120),
    };
    let jetstream = nomnom::nats::connect(&nats).await.expect("NATS reachable");
    if create_stream {
        nomnom::nats::ensure_stream(&jetstream, &nats)
            .await
            .expect("stream");
    }
    (
        AppState {
            jetstream,
            stream: nats.stream.clone(),
        },
        nats,
    )
}

async fn call(
    state: &AppState,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, Value, String) {
    let response = router(state.clone())
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
        .expect("router answers");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, json, retry_after)
}

#[tokio::test]
async fn accepted_message_is_in_the_stream_byte_for_byte() {
    let (state, nats) = state(true).await;
    let body = common::tpch_order(1, 2)
        .to_string()
        .replace("\"170001.47\"", "170001.4700000000000000001");
    let (status, answer, _) = call(&state, "POST", "/ingest/message/order", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["status"], "accepted");
    let id = answer["message_id"].as_str().expect("id").to_string();

    let stream = state
        .jetstream
        .get_stream(&nats.stream)
        .await
        .expect("stream exists");
    let stored = stream.get_raw_message(1).await.expect("first message");
    assert_eq!(stored.subject.as_str(), format!("{}.order", nats.stream));
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(id.as_str())
    );
    let envelope =
        nomnom::envelope::MessageEnvelope::from_bytes(&stored.payload).expect("envelope");
    assert_eq!(envelope.message_id.to_string(), id);
    assert_eq!(envelope.entity, "Order");
    assert_eq!(envelope.body.get(), body);
    assert!(envelope.body.get().contains("170001.4700000000000000001"));
    let _ = state.jetstream.delete_stream(&nats.stream).await;
}

#[tokio::test]
async fn errors_are_json_with_the_right_status() {
    let (state, nats) = state(true).await;

    let (status, body, _) = call(&state, "POST", "/ingest/message/nope", "{}").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "unknown entity `nope`");
    assert_eq!(
        body["known_entities"],
        serde_json::json!(["customer", "order", "product"])
    );

    let (status, body, _) = call(&state, "POST", "/ingest/message/order", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("invalid JSON at line 1, column 2")
    );

    let (status, body, _) = call(&state, "POST", "/ingest/message/customer", "[1, 2]").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["details"][0]["field"], "$");

    let customer = r#"{"customer_key": "C1", "name": "n", "address": "a", "nation_key": 1.5,
        "phone": "p", "account_balance": "12x", "market_segment": "BUILDING"}"#;
    let (status, body, _) = call(&state, "POST", "/ingest/message/customer", customer).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        body["details"],
        serde_json::json!([
            {"field": "nation_key", "error": "expected an integer (32-bit), found 1.5"},
            {"field": "account_balance", "error": "`12x` is not a decimal number"}
        ])
    );

    let (status, body, _) = call(&state, "GET", "/ingest/message/order", "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    let (status, body, _) = call(&state, "GET", "/nowhere", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no route for /nowhere");

    let (status, body, _) = call(&state, "GET", "/health", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let _ = state.jetstream.delete_stream(&nats.stream).await;
}

#[tokio::test]
async fn missing_stream_is_503_with_retry_after() {
    let (state, _) = state(false).await;
    let body = common::tpch_order(2, 1).to_string();
    let (status, body, retry_after) = call(&state, "POST", "/ingest/message/order", &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry_after, "1");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("message broker unavailable")
    );
}
