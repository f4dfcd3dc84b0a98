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

/// What the document depends on besides the entities: the api's configuration.
#[derive(Debug, Clone, Copy)]
pub struct DocumentOptions {
    /// API keys are configured: keyed operations declare the schemes and their 401/403.
    pub auth: bool,
    /// `/metrics` is served on the main port (not moved to `METRICS_PORT`).
    pub metrics_on_main_port: bool,
    /// `MAX_BATCH_LINES`: the most messages one batch may hold.
    pub max_batch_lines: usize,
}

impl DocumentOptions {
    /// The options of a running api.
    pub fn of(state: &AppState) -> Self {
        Self {
            auth: state.keys.enabled(),
            metrics_on_main_port: state.metrics_on_main_port,
            max_batch_lines: state.max_batch_lines,
        }
    }
}

/// What `Idempotency-Key` accepts (checked by the ingest handlers).
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// A response that carries `Retry-After` (seconds).
fn retry_later(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "headers": {
            "Retry-After": {"$ref": "#/components/headers/RetryAfter"},
            "X-Request-Id": {"$ref": "#/components/headers/RequestId"}
        },
        "content": {"application/json": {"schema": schema}}
    })
}

/// The answers every ingest operation can give besides its 2xx.
fn ingest_errors(batch: bool) -> serde_json::Map<String, Value> {
    let error = json!({"$ref": "#/components/schemas/Error"});
    // A batch whose lines were all refused answers with the per-line result.
    let refused = if batch {
        json!({"anyOf": [{"$ref": "#/components/schemas/BatchResult"}, error]})
    } else {
        error.clone()
    };
    let mut r = serde_json::Map::new();
    r.insert(
        "400".into(),
        error_response("Invalid JSON, a malformed header or a body the format cannot frame"),
    );
    r.insert(
        "408".into(),
        error_response("The request or its body took too long"),
    );
    r.insert(
        "413".into(),
        error_response(if batch {
            "Body larger than MAX_BATCH_BYTES, a line larger than MAX_BODY_BYTES, or more than MAX_BATCH_LINES lines"
        } else {
            "Body larger than MAX_BODY_BYTES"
        }),
    );
    r.insert(
        "409".into(),
        error_response(
            "The Idempotency-Key was sent within the deduplication window with another body; `message_id` names the first message",
        ),
    );
    r.insert("415".into(), error_response("Unsupported content type"));
    r.insert(
        "422".into(),
        json!({
            "description": "The body does not match the entity; `details` lists {field, error}",
            "content": {"application/json": {"schema": refused}}
        }),
    );
    r.insert(
        "503".into(),
        retry_later(
            "NATS unavailable, or too many requests in flight; retry after Retry-After seconds",
            if batch { refused } else { error },
        ),
    );
    r
}

/// A link from an answer carrying `message_id` to the message's status.
fn status_link() -> Value {
    json!({"status": {
        "operationId": "message_status",
        "parameters": {"message_id": "$response.body#/message_id"},
        "description": "Where the message is: pending, processed or dead_lettered"
    }})
}

/// An example CSV body: `example` laid out as the entity's CSV is read (its delimiter, quote,
/// header, column order and date format), written by the `csv` crate so cells that hold the
/// delimiter or quotes are quoted.
fn csv_example(spec: &crate::runtime::CsvSpec, example: &Value) -> String {
    let cell = |name: &str| -> String {
        let Some(field) = spec.fields.iter().find(|f| f.name == name) else {
            return String::new();
        };
        let mut v = example;
        for segment in field.path {
            v = v.get(segment).unwrap_or(&Value::Null);
        }
        match v {
            Value::Null => String::new(),
            Value::String(s) => match (field.ty, spec.date_format) {
                (crate::runtime::FieldType::Date, Some(format)) => {
                    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                        .map_or_else(|_| s.clone(), |d| d.format(format).to_string())
                }
                _ => s.clone(),
            },
            other => other.to_string(),
        }
    };
    let names: Vec<&str> = if spec.columns.is_empty() {
        spec.fields.iter().map(|f| f.name).collect()
    } else {
        spec.columns.to_vec()
    };
    let header: Vec<&str> = names
        .iter()
        .map(|n| {
            spec.header_map
                .iter()
                .find(|(_, field)| field == n)
                .map_or(*n, |(text, _)| *text)
        })
        .collect();
    let mut writer = csv::WriterBuilder::new()
        .delimiter(spec.delimiter)
        .quote(spec.quote)
        .from_writer(Vec::new());
    let written = (!spec.header || writer.write_record(&header).is_ok())
        && writer.write_record(names.iter().map(|n| cell(n))).is_ok();
    let bytes = writer.into_inner().unwrap_or_default();
    if written {
        String::from_utf8(bytes).unwrap_or_default()
    } else {
        String::new()
    }
}

/// The `maxLength` of the field a CSV column feeds, read from the entity's JSON Schema.
fn max_length_in(schema: &Value, field: &crate::runtime::CsvField) -> Option<u32> {
    let mut s = schema;
    for segment in field.path {
        s = s.get("properties")?.get(segment)?;
    }
    let s = s.get("anyOf").and_then(|o| o.get(0)).unwrap_or(s);
    s.get("maxLength")?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
}

/// The OpenAPI 3.1 document: every route, and each entity's body schema from the YAML; what a
/// schema admits is what the handlers accept (`tests/template/contract.rs` holds them to it with
/// schemathesis).
pub fn openapi_document(options: DocumentOptions) -> Value {
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let idempotency = json!({"$ref": "#/components/parameters/IdempotencyKey"});
    let accepted = json!({
        "description": "Stored by JetStream",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
        "links": status_link(),
    });
    let mut tagged = Vec::new();
    let mut mapping = serde_json::Map::new();
    let mut untyped_bodies = vec![json!({"$ref": "#/components/schemas/TaggedMessage"})];
    for entity in RootEntity::ALL {
        let name = entity.name();
        let snake = entity.snake_name();
        let schema = entity.json_schema();
        let example = entity.example();
        schemas.insert(name.to_string(), schema.clone());
        let schema_ref = json!({"$ref": format!("#/components/schemas/{name}")});
        // The untyped route's body: the entity's, naming it in `entity_type`.
        let tagged_name = format!("{name}Message");
        schemas.insert(
            tagged_name.clone(),
            json!({"allOf": [schema_ref, {
                "type": "object",
                "required": ["entity_type"],
                "properties": {"entity_type": {"const": snake}}
            }]}),
        );
        let tagged_ref = format!("#/components/schemas/{tagged_name}");
        tagged.push(json!({"$ref": tagged_ref}));
        mapping.insert(snake.to_string(), json!(tagged_ref));
        // The untyped route's body without `entity_type`: the entity's, with no member it does
        // not know (that is what makes a body match it).
        let unnamed_name = format!("{name}Unnamed");
        let mut unnamed = schema.clone();
        unnamed["additionalProperties"] = json!(false);
        schemas.insert(unnamed_name.clone(), unnamed);
        untyped_bodies.push(json!({"$ref": format!("#/components/schemas/{unnamed_name}")}));

        let mut single = ingest_errors(false);
        single.insert("202".into(), accepted.clone());
        paths.insert(
            format!("/ingest/message/{snake}"),
            json!({"post": {
                "operationId": format!("ingest_{snake}"),
                "summary": format!("Ingest one {name} message"),
                "parameters": [idempotency],
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": schema_ref, "example": example
                }}},
                "responses": single,
            }}),
        );

        let mut dry_run = ingest_errors(false);
        dry_run.remove("409");
        dry_run.insert(
            "200".into(),
            json!({"description": "The body would be accepted (nothing was published)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Valid"}}}}),
        );
        paths.insert(
            format!("/ingest/validate/{snake}"),
            json!({"post": {
                "operationId": format!("validate_{snake}"),
                "summary": format!("Check one {name} message as ingesting would, without publishing it"),
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": schema_ref, "example": example
                }}},
                "responses": dry_run,
            }}),
        );

        let mut batch = ingest_errors(true);
        batch.insert(
            "202".into(),
            json!({"description": "At least one message stored; the result of every line", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}}}),
        );
        let messages = json!({
            "type": "array", "items": schema_ref,
            "minItems": 1, "maxItems": options.max_batch_lines
        });
        let mut ndjson = messages.clone();
        ndjson["description"] = json!(
            "One message per line (each line a JSON object; blank lines are skipped). Shown as an array of the lines' objects."
        );
        let spec = entity.csv();
        let mut csv = json!({
            "type": "string",
            "description": "CSV as the entity's `csv:` block says (by default a header row naming the fields, then `,`-separated rows; empty cells are null). The pattern describes the plain form; quoted cells (RFC 4180) are read too.",
        });
        if let Some(pattern) = spec.body_pattern(|f| max_length_in(&schema, f)) {
            csv["pattern"] = json!(pattern);
        }
        let ndjson_example = format!("{example}\n{example}\n");
        paths.insert(
            format!("/ingest/batch/{snake}"),
            json!({"post": {
                "operationId": format!("ingest_batch_{snake}"),
                "summary": format!("Ingest {name} messages as NDJSON, a JSON array or CSV"),
                "description": "Each line (array element, CSV row) becomes one message with its own message_id (without an Idempotency-Key, up to 256 lines share one JetStream message); invalid lines are refused one by one. Nothing is published unless the whole body is within the limits.",
                "parameters": [idempotency],
                "requestBody": {"required": true, "content": {
                    "application/x-ndjson": {"schema": ndjson, "example": ndjson_example},
                    "application/json": {"schema": messages, "example": [example]},
                    "text/csv": {"schema": csv, "example": csv_example(spec, &example)}
                }},
                "responses": batch,
            }}),
        );
    }
    schemas.insert(
        "Valid".into(),
        json!({
            "type": "object",
            "required": ["valid", "entity"],
            "properties": {"valid": {"const": true}, "entity": {"type": "string"}}
        }),
    );
    schemas.insert(
        "TaggedMessage".into(),
        json!({
            "oneOf": tagged,
            "discriminator": {"propertyName": "entity_type", "mapping": mapping}
        }),
    );
    schemas.insert("UntypedMessage".into(), json!({"anyOf": untyped_bodies}));
    let untyped_ref = json!({"$ref": "#/components/schemas/UntypedMessage"});
    let mut untyped = ingest_errors(false);
    untyped.insert("202".into(), accepted);
    untyped.insert(
        "404".into(),
        error_response("`entity_type` names no entity"),
    );
    untyped.insert(
        "400".into(),
        error_response(
            "Invalid JSON, a malformed header, or a body several entities match (`matching_entities` names them; name one)",
        ),
    );
    untyped.insert(
        "422".into(),
        error_response(
            "No entity matches: `entity` names the closest, `details` its field errors, `unknown_members` the members it does not know (with `did_you_mean`)",
        ),
    );
    paths.insert(
        "/ingest/message".into(),
        json!({"post": {
            "operationId": "ingest_untyped",
            "summary": "Ingest one message of whichever entity it is",
            "description": "The entity is the one a top-level `entity_type` member (or `?entity_type=`, or an `X-Entity-Type` header, which take precedence; not described here because a body can only be checked against one entity) names; without one, the one entity the body matches: its validator accepts it and the body has no member it does not know. The answer names the entity.",
            "parameters": [idempotency],
            "requestBody": {"required": true, "content": {"application/json": {"schema": untyped_ref}}},
            "responses": untyped,
        }}),
    );
    let mut untyped_batch = ingest_errors(true);
    untyped_batch.insert(
        "202".into(),
        json!({"description": "At least one message stored; the result of every line, naming each accepted line's entity", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchResult"}}}}),
    );
    let untyped_messages = json!({
        "type": "array", "items": untyped_ref,
        "minItems": 1, "maxItems": options.max_batch_lines
    });
    let mut untyped_ndjson = untyped_messages.clone();
    untyped_ndjson["description"] = json!(
        "One message per line, each routed as POST /ingest/message routes a body. Shown as an array of the lines' objects."
    );
    paths.insert(
        "/ingest/batch".into(),
        json!({"post": {
            "operationId": "ingest_batch_untyped",
            "summary": "Ingest messages of any entities as NDJSON or a JSON array, each line routed on its own",
            "description": "Each line goes to the entity its `entity_type` member names, or the one entity it matches (as POST /ingest/message); `?entity_type=` or `X-Entity-Type` name one entity for every line instead. CSV needs an entity (POST /ingest/batch/{entity}).",
            "parameters": [idempotency],
            "requestBody": {"required": true, "content": {
                "application/x-ndjson": {"schema": untyped_ndjson},
                "application/json": {"schema": untyped_messages}
            }},
            "responses": untyped_batch,
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
                "503": retry_later("NATS or PostgreSQL unavailable", json!({"$ref": "#/components/schemas/Error"})),
            }
        }}),
    );
    paths.insert("/health".into(), json!({"get": {
        "operationId": "health", "summary": "Liveness",
        "responses": {"200": {"description": "Alive", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}}
    }}));
    paths.insert("/ready".into(), json!({"get": {
        "operationId": "ready",
        "summary": "Readiness to accept: NATS and the stream (PostgreSQL is reported, not required)",
        "responses": {
            "200": {"description": "Ready", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}},
            "503": retry_later("A dependency failed; `failed` names it", json!({"$ref": "#/components/schemas/Readiness"}))
        }
    }}));
    if options.metrics_on_main_port {
        paths.insert("/metrics".into(), json!({"get": {
            "operationId": "metrics", "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}
        }}));
    }
    let field_errors = json!({"type": "array", "items": {
        "type": "object", "required": ["field", "error"],
        "properties": {"field": {"type": "string"}, "error": {"type": "string"}}
    }});
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error", "status"], "properties": {
            "error": {"type": "string"}, "status": {"type": "integer"}, "details": field_errors,
            "entity": {"type": "string", "description": "The entity the body was checked against (for an unnamed body: the closest)"},
            "unknown_members": {"type": "array", "items": {
                "type": "object", "required": ["member"],
                "properties": {"member": {"type": "string"}, "did_you_mean": {"type": "string"}}
            }},
            "matching_entities": {"type": "array", "items": {"type": "string"}},
            "routes": {"type": "array", "items": {"type": "string"}}
        }}),
    );
    schemas.insert(
        "Accepted".into(),
        json!({"type": "object", "required": ["message_id", "status", "entity", "timestamp"], "properties": {
            "message_id": {"type": "string", "format": "uuid"}, "status": {"const": "accepted"},
            "entity": {"type": "string", "description": "The entity the message was accepted as"},
            "timestamp": {"type": "string", "format": "date-time"}, "duplicate": {"type": "boolean"}
        }}),
    );
    schemas.insert("BatchResult".into(), json!({
        "type": "object",
        "required": ["entity", "accepted", "rejected", "results", "errors_omitted", "rejected_by_reason"],
        "properties": {
            "entity": {"type": ["string", "null"], "description": "The entity of every line; null when each line was routed on its own"},
            "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
            "results": {
                "description": "Every accepted line with its message_id, and the first 100 rejected lines in full",
                "type": "array", "items": {"type": "object", "required": ["line"], "properties": {
                    "line": {"type": "integer"}, "message_id": {"type": "string", "format": "uuid"},
                    "entity": {"type": "string", "description": "A routed line's entity"},
                    "error": {"type": "string"}, "retryable": {"type": "boolean"}, "details": field_errors
                }}
            },
            "errors_omitted": {"type": "integer", "description": "Rejected lines not listed in results"},
            "rejected_by_reason": {"type": "object", "additionalProperties": {"type": "integer"}}
        }
    }));
    schemas.insert("MessageStatus".into(), json!({"type": "object", "required": ["message_id", "status"], "properties": {
        "message_id": {"type": "string", "format": "uuid"},
        "status": {"enum": ["pending", "processed", "dead_lettered"]},
        "entity": {"type": "string"}, "received_at": {"type": "string", "format": "date-time"},
        "processed_at": {"type": "string", "format": "date-time"}, "row_count": {"type": "integer"},
        "attempts": {"type": "integer"}, "reason": {"type": "string"},
        "chunk_run": {"type": "object", "description": "A bulk-loaded row: the run of its chunk stored with it (row_count is the run's)",
            "required": ["first_message_id", "messages"], "properties": {
            "first_message_id": {"type": "string", "format": "uuid"}, "messages": {"type": "integer"}
        }}
    }}));
    schemas.insert("Health".into(), json!({"type": "object", "required": ["status", "entities", "version", "schema_version"], "properties": {
        "status": {"const": "ok"}, "entities": {"type": "array", "items": {"type": "string"}}, "version": {"type": "string"},
        "schema_version": {"type": "string", "description": "This build's schema version: a digest of the entities' shape (entities.lock's)"}
    }}));
    schemas.insert(
        "Readiness".into(),
        json!({"type": "object", "required": ["status", "postgres"], "properties": {
            "status": {"enum": ["ready", "unavailable"]}, "postgres": {"type": "string"},
            "database_schema_version": {"type": "string", "description": "The schema the database applied last (its ledger); compare with /health's schema_version"},
            "failed": {"type": "object", "additionalProperties": {"type": "string"}}
        }}),
    );
    let mut components = json!({
        "schemas": schemas,
        "parameters": {"IdempotencyKey": {
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Same key (from the same client), same message_id: a retried request creates no duplicate",
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}
        }},
        "headers": {
            "RetryAfter": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}},
            "RequestId": {"description": "When a dependency (the broker, the store) failed: the request's `X-Request-Id`, or one the api made up, naming the api's log line about it", "schema": {"type": "string"}},
            "WwwAuthenticate": {"description": "`Bearer`, with `error=\"invalid_token\"` when a key was sent", "schema": {"type": "string"}}
        }
    });
    if options.auth {
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
                responses["401"] = json!({
                    "description": "No API key, or not a valid one",
                    "headers": {"WWW-Authenticate": {"$ref": "#/components/headers/WwwAuthenticate"}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                });
                responses["403"] = error_response(
                    if path.starts_with("/ingest/message") || path.starts_with("/ingest/batch") {
                        "The key may not post this entity"
                    } else if path == "/metrics" {
                        "The key lacks the `metrics` scope"
                    } else {
                        "Not allowed"
                    },
                );
            }
        }
        if let Some(metrics) = paths.get_mut("/metrics") {
            metrics["get"]["description"] =
                json!("Needs a key with the `metrics` scope, unless served on METRICS_PORT");
        }
        // Only keyed operations can answer 403; status lookups are open to every key.
        if let Some(r) = paths
            .get_mut("/ingest/status/{message_id}")
            .and_then(|status| status["get"]["responses"].as_object_mut())
        {
            r.remove("403");
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
    Json(openapi_document(DocumentOptions::of(&state)))
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
