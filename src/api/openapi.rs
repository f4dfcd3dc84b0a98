//! OpenAPI document (built from the generated entity schemas) and Swagger UI.

use axum::Json;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use std::sync::Arc;

use axum::extract::State;

use super::{ApiError, AppState};
use crate::generated::RootEntity;

const SWAGGER_JS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js");
const SWAGGER_CSS: &[u8] = include_bytes!("../../assets/swagger-ui/swagger-ui.css");

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The OpenAPI 3.1 document: every route, and each entity's body schema from the YAML. With
/// `auth` (API keys configured) the keyed operations declare both key headers and their 401
/// and 403 answers.
pub fn openapi_document(auth: bool) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let standard_errors = |extra: &[(&str, &str)]| {
        let mut r = serde_json::Map::new();
        for (code, text) in [
            ("400", "Invalid JSON or malformed request"),
            ("404", "Unknown entity"),
            ("408", "The request or its body took too long"),
            ("413", "Body larger than the limit (or, for a batch, more than MAX_BATCH_LINES lines)"),
            ("415", "Unsupported content type"),
            (
                "422",
                "The body does not match the entity; `details` lists {field, error}",
            ),
            (
                "503",
                "NATS unavailable, or too many requests in flight; retry after the Retry-After header",
            ),
        ]
        .iter()
        .chain(extra)
        {
            r.insert((*code).to_string(), error_response(text));
        }
        r
    };
    let idempotency = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "description": "Same key, same message_id; a retried request creates no duplicate",
        "schema": {"type": "string", "maxLength": 255}
    });
    for entity in RootEntity::ALL {
        let name = entity.name();
        schemas.insert(name.to_string(), entity.json_schema());
        let schema_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        let mut ok = standard_errors(&[]);
        ok.insert(
            "202".into(),
            json!({"description": "Stored by JetStream", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}}),
        );
        paths.insert(
            format!("/ingest/message/{}", entity.snake_name()),
            json!({"post": {
                "operationId": format!("ingest_{}", entity.snake_name()),
                "summary": format!("Ingest one {name} message"),
                "parameters": [idempotency],
                "requestBody": {"required": true, "content": {"application/json": {"schema": schema_ref}}},
                "responses": ok,
            }}),
        );
        let mut batch = standard_errors(&[]);
        batch.insert(
            "202".into(),
            json!({"description": "At least one line stored; per-line results", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}}}),
        );
        paths.insert(
            format!("/ingest/batch/{}", entity.snake_name()),
            json!({"post": {
                "operationId": format!("ingest_batch_{}", entity.snake_name()),
                "summary": format!("Ingest {name} messages as NDJSON (one JSON object per line), a JSON array or CSV"),
                "parameters": [idempotency],
                "requestBody": {"required": true, "content": {
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "array", "items": schema_ref, "minItems": 1}},
                    "text/csv": {"schema": {"type": "string", "description": "Rows as the entity's `csv:` block says (default: a header row naming the fields, `,` separated)"}}
                }},
                "responses": batch,
            }}),
        );
    }
    let names: Vec<&str> = RootEntity::ALL.iter().map(|e| e.snake_name()).collect();
    let mut untyped = standard_errors(&[]);
    untyped.insert("202".into(), json!({"description": "Stored by JetStream", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}}));
    paths.insert(
        "/ingest/message".into(),
        json!({"post": {
            "operationId": "ingest_untyped",
            "summary": "Ingest one message; the entity comes from ?entity_type=, X-Entity-Type or a top-level entity_type member",
            "parameters": [
                {"name": "entity_type", "in": "query", "required": false, "schema": {"type": "string", "enum": names}},
                {"name": "X-Entity-Type", "in": "header", "required": false, "schema": {"type": "string", "enum": names}},
                idempotency
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": untyped,
        }}),
    );
    paths.insert(
        "/ingest/status/{message_id}".into(),
        json!({"get": {
            "operationId": "message_status",
            "summary": "pending, processed (time, row count) or dead_lettered (reason, attempts)",
            "parameters": [{"name": "message_id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "responses": {
                "200": {"description": "Known message", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageStatus"}}}},
                "400": error_response("Malformed message id"),
                "404": error_response("Unknown message id"),
                "503": error_response("NATS or PostgreSQL unavailable"),
            }
        }}),
    );
    paths.insert("/health".into(), json!({"get": {"operationId": "health", "summary": "Liveness", "responses": {"200": {"description": "Alive"}}}}));
    paths.insert("/ready".into(), json!({"get": {"operationId": "ready", "summary": "Readiness to accept: NATS and the stream (PostgreSQL is reported, not required)", "responses": {"200": {"description": "Ready"}, "503": {"description": "A dependency failed; `failed` names it"}}}}));
    paths.insert("/metrics".into(), json!({"get": {"operationId": "metrics", "summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}}));
    schemas.insert("Error".into(), json!({"type": "object", "required": ["error", "status"], "properties": {
        "error": {"type": "string"}, "status": {"type": "integer"},
        "details": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "error": {"type": "string"}}}}
    }}));
    schemas.insert(
        "Accepted".into(),
        json!({"type": "object", "required": ["message_id", "status", "timestamp"], "properties": {
            "message_id": {"type": "string", "format": "uuid"}, "status": {"const": "accepted"},
            "timestamp": {"type": "string", "format": "date-time"}, "duplicate": {"type": "boolean"}
        }}),
    );
    schemas.insert("BatchResult".into(), json!({"type": "object", "properties": {
        "entity": {"type": "string"}, "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
        "results": {
            "description": "Every accepted line with its message_id, and the first 100 rejected lines in full",
            "type": "array", "items": {"type": "object", "properties": {
            "line": {"type": "integer"}, "message_id": {"type": "string", "format": "uuid"},
            "error": {"type": "string"}, "retryable": {"type": "boolean"},
            "details": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "error": {"type": "string"}}}}
        }}},
        "errors_omitted": {"type": "integer", "description": "Rejected lines not listed in results"},
        "rejected_by_reason": {"type": "object", "additionalProperties": {"type": "integer"}}
    }}));
    schemas.insert("MessageStatus".into(), json!({"type": "object", "required": ["message_id", "status"], "properties": {
        "message_id": {"type": "string", "format": "uuid"},
        "status": {"enum": ["pending", "processed", "dead_lettered"]},
        "entity": {"type": "string"}, "received_at": {"type": "string", "format": "date-time"},
        "processed_at": {"type": "string", "format": "date-time"}, "row_count": {"type": "integer"},
        "attempts": {"type": "integer"}, "reason": {"type": "string"}
    }}));
    let mut components = json!({"schemas": schemas});
    if auth {
        components["securitySchemes"] = json!({
            "bearerKey": {"type": "http", "scheme": "bearer", "description": "An API key as a bearer token"},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        });
        for (path, item) in paths.iter_mut() {
            if matches!(path.as_str(), "/health" | "/ready") {
                continue;
            }
            for operation in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                operation["security"] = json!([{"bearerKey": []}, {"apiKeyHeader": []}]);
                let responses = &mut operation["responses"];
                responses["401"] =
                    error_response("No API key, or not a valid one (WWW-Authenticate says which)");
                responses["403"] = error_response(
                    if path.starts_with("/ingest/message") || path.starts_with("/ingest/batch") {
                        "The key may not post this entity"
                    } else {
                        "The key lacks the scope (metrics)"
                    },
                );
            }
        }
        if let Some(metrics) = paths.get_mut("/metrics") {
            // /metrics needs a key scoped `metrics`; other keys get 403.
            metrics["get"]["description"] =
                json!("Needs a key with the `metrics` scope, unless served on METRICS_PORT");
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "nomnom ingestion api",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Messages are validated against entities/*.yaml, stored in NATS JetStream and written to PostgreSQL by the worker."
        },
        "paths": paths,
        "components": components,
    })
}

/// `GET /api-docs/openapi.json`.
pub(super) async fn openapi_json(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(openapi_document(state.keys.enabled()))
}

/// `GET /swagger-ui`: the Swagger UI page (assets served from the binary, no CDN).
pub(super) async fn swagger_ui() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nomnom api</title>
<link rel="stylesheet" href="/swagger-ui/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/swagger-ui/swagger-ui-bundle.js"></script>
<script>
// With API keys on, the document itself needs a key: ask for one, then send it with every
// request the UI makes (it stays in this page only).
const open = (key) => { window.ui = SwaggerUIBundle({url: "/api-docs/openapi.json", dom_id: "#swagger-ui",
  requestInterceptor: (r) => { if (key) { r.headers["X-API-Key"] = key; } return r; }}); };
fetch("/api-docs/openapi.json").then((r) => open(r.status === 401 ? window.prompt("API key") : null));
</script>
</body></html>"##,
    )
}

/// `GET /swagger-ui/{asset}`.
pub(super) async fn swagger_asset(Path(asset): Path<String>) -> Response {
    let (body, mime) = match asset.as_str() {
        "swagger-ui-bundle.js" => (SWAGGER_JS, "application/javascript"),
        "swagger-ui.css" => (SWAGGER_CSS, "text/css"),
        _ => return ApiError::NotFound(format!("no asset {asset}")).into_response(),
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
