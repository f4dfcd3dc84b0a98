//! The OpenAPI document of the console's port (`/api-docs/admin.json`): its JSON endpoints,
//! and the dry-run routes and entity schemas taken from the ingest port's document (one
//! description of each).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use super::super::AppState;
use super::super::openapi::{DocumentOptions, openapi_document};
use super::handlers::{MAX_IDS, MAX_PAGE};
use crate::store::ReasonClass;

/// `GET /api-docs/admin.json`.
pub(super) async fn admin_openapi_json(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(admin_openapi_document(DocumentOptions::of(&state)))
}

fn nullable(ty: &str) -> Value {
    json!({"type": [ty, "null"]})
}

fn error(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn unavailable() -> Value {
    json!({
        "description": "The database (or JetStream) cannot answer now; nothing was changed",
        "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn filter_params() -> Vec<Value> {
    vec![
        query(
            "entity",
            "Only this entity (any case)",
            json!({"type": "string"}),
        ),
        query(
            "class",
            "Only this reason class",
            json!({"type": "string", "enum": classes()}),
        ),
        query(
            "reason",
            "Only those whose reason contains this text (any case)",
            json!({"type": "string"}),
        ),
        query(
            "since",
            "Only those first dead-lettered since this time (RFC 3339) or age (30m, 2h, 7d)",
            json!({"type": "string"}),
        ),
        query(
            "message_id",
            "Only this message",
            json!({"type": "string", "format": "uuid"}),
        ),
    ]
}

fn classes() -> Vec<&'static str> {
    ReasonClass::ALL.iter().map(|c| c.label()).collect()
}

fn message_id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}})
}

/// The document: the console's endpoints, with `/ingest/validate/*` and the entity schemas of
/// the ingest document.
pub fn admin_openapi_document(options: DocumentOptions) -> Value {
    let auth = options.auth;
    let ingest = openapi_document(options);
    let mut paths = Map::new();
    if let Some(ingest_paths) = ingest["paths"].as_object() {
        for (path, item) in ingest_paths {
            if path.starts_with("/ingest/validate/") {
                let mut item = item.clone();
                // The console checks any entity: the key's entity scope does not apply.
                if let Some(r) = item["post"]["responses"].as_object_mut() {
                    r.remove("403");
                }
                paths.insert(path.clone(), item);
            }
        }
    }
    let selection = json!({"$ref": "#/components/schemas/Selection"});
    let changes = |op: &str, summary: &str, result: &str| {
        json!({"post": {
            "operationId": op,
            "summary": summary,
            "requestBody": {"required": false, "content": {"application/json": {"schema": selection}}},
            "responses": {
                "200": ok(summary, result),
                "400": error("A malformed selection (ids, filter)"),
                "415": error("Not application/json"),
                "503": unavailable(),
            }
        }})
    };
    paths.insert("/stats".into(), json!({"get": {
        "operationId": "stats",
        "summary": "Per-entity counts from the store and JetStream, the consumer's backlog, the database, the workers alive",
        "responses": {"200": ok("The overview", "Overview"), "503": unavailable()}
    }}));
    let mut list_params = filter_params();
    list_params.push(query(
        "after",
        "The cursor of the next page (`next` of the previous one)",
        json!({"type": "string"}),
    ));
    list_params.push(query(
        "limit",
        "At most this many",
        json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
    ));
    paths.insert("/admin/dead-letters".into(), json!({"get": {
        "operationId": "list_dead_letters",
        "summary": "A page of dead letters, oldest first",
        "parameters": list_params,
        "responses": {"200": ok("The page", "DeadLetterPage"), "400": error("A malformed filter or cursor"), "503": unavailable()}
    }}));
    paths.insert(
        "/admin/dead-letters/groups".into(),
        json!({"get": {
            "operationId": "group_dead_letters",
            "summary": "Dead letters counted per entity and reason class",
            "responses": {"200": ok("The groups", "DeadLetterGroups"), "503": unavailable()}
        }}),
    );
    paths.insert("/admin/dead-letters/{id}".into(), json!({"get": {
        "operationId": "show_dead_letter",
        "summary": "One dead letter: reason, deliveries, the body pretty-printed, its field errors now",
        "parameters": [message_id_param()],
        "responses": {"200": ok("The dead letter", "DeadLetterDetail"), "400": error("Not a message id"), "404": error("No dead letter of this message is kept"), "503": unavailable()}
    }}));
    paths.insert(
        "/admin/dead-letters/dry-run".into(),
        changes(
            "dry_run_dead_letters",
            "How many of the selected dead letters would pass validation now (nothing published)",
            "DryRun",
        ),
    );
    paths.insert(
        "/admin/dead-letters/replay".into(),
        changes(
            "replay_dead_letters",
            "Publish copies of the selected dead letters to be processed again",
            "Replayed",
        ),
    );
    paths.insert("/admin/dead-letters/{id}/discard".into(), json!({"post": {
        "operationId": "discard_dead_letter",
        "summary": "Set a dead letter aside with a note (kept whole among the discarded ones)",
        "parameters": [message_id_param()],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["note"], "additionalProperties": false,
            "properties": {"note": {"type": "string", "minLength": 1, "maxLength": 2000, "pattern": "\\S"}}
        }}}},
        "responses": {
            "200": ok("Discarded", "Discarded"),
            "400": error("No note, or not a message id"),
            "404": error("No dead letter of this message is kept"),
            "415": error("Not application/json"),
            "503": unavailable()
        }
    }}));
    paths.insert("/admin/actions".into(), json!({"get": {
        "operationId": "list_actions",
        "summary": "The audit: operators' replays, dry runs and discards, newest first",
        "parameters": [query("limit", "At most this many", json!({"type": "integer", "minimum": 1, "maximum": MAX_PAGE}))],
        "responses": {"200": ok("The actions", "Actions"), "400": error("A malformed limit"), "503": unavailable()}
    }}));
    paths.insert("/admin/schema".into(), json!({"get": {
        "operationId": "schema",
        "summary": "Entities with their tables, columns, unique keys, version fields, JSON Schema and example",
        "responses": {"200": ok("The schema", "Schema")}
    }}));
    paths.insert("/messages/{id}/trace".into(), json!({"get": {
        "operationId": "trace_message",
        "summary": "A message's fate: status, dead letter or discard, and the rows it last wrote",
        "parameters": [message_id_param()],
        "responses": {"200": ok("The trace (`waiting` while it is in the stream, `unknown` when neither the store nor the stream has it)", "Trace"), "400": error("Not a message id"), "503": unavailable()}
    }}));

    let mut schemas: Map<String, Value> = ingest["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let time = json!({"type": "string", "format": "date-time"});
    let uuid = json!({"type": "string", "format": "uuid"});
    let class = json!({"type": "string", "enum": classes()});
    let int = json!({"type": "integer"});
    let filter = json!({"type": "object", "additionalProperties": false, "properties": {
        "entity": {"type": "string"}, "class": class, "reason": {"type": "string"},
        "since": {"type": "string"}, "message_id": uuid
    }});
    for (name, schema) in [
        (
            "Selection",
            json!({
                "description": "Dead letters by id, or every one a filter matches (no body or `{}`: every dead letter)",
                "type": "object", "additionalProperties": false,
                "properties": {
                    "ids": {"type": "array", "items": uuid, "minItems": 1, "maxItems": MAX_IDS},
                    "filter": filter
                },
                "not": {"required": ["ids", "filter"]}
            }),
        ),
        (
            "EntityOverview",
            json!({"type": "object", "required": ["entity", "committed", "dead_lettered", "committed_recent", "dead_lettered_recent"], "properties": {
                "entity": {"type": "string"}, "accepted": nullable("integer"), "committed": int, "dead_lettered": int,
                "committed_recent": int, "dead_lettered_recent": int, "waiting": nullable("integer")
            }}),
        ),
        (
            "WorkerReport",
            json!({"type": "object", "required": ["id", "host", "version", "started_at", "at", "database_up"], "properties": {
                "id": {"type": "string"}, "host": {"type": "string"}, "version": {"type": "string"}, "consumer": {"type": "string"},
                "started_at": time, "at": time, "database_up": {"type": "boolean"},
                "database_down_seconds": nullable("integer"), "committed": int, "dead_lettered": int
            }}),
        ),
        (
            "Overview",
            json!({"type": "object", "required": ["at", "version", "uptime_seconds", "entities", "stream", "database", "workers", "dead_letters_kept"], "properties": {
                "at": time, "version": {"type": "string"}, "uptime_seconds": int, "recent_window_seconds": int,
                "entities": {"type": "array", "items": {"$ref": "#/components/schemas/EntityOverview"}},
                "dead_letters_kept": int,
                "stream": {"type": "object", "required": ["stream", "consumer"], "properties": {
                    "stream": {"type": "string"}, "consumer": {"type": "string"},
                    "undelivered": nullable("integer"), "in_progress": nullable("integer"),
                    "oldest_waiting_seconds": nullable("number"), "error": nullable("string")
                }},
                "database": {"type": "object", "required": ["up"], "properties": {
                    "up": {"type": "boolean"}, "workers_reporting_down": int, "longest_outage_seconds": nullable("integer")
                }},
                "workers": {"type": "array", "items": {"$ref": "#/components/schemas/WorkerReport"}},
                "workers_error": nullable("string")
            }}),
        ),
        (
            "DeadLetterSummary",
            json!({"type": "object", "required": ["message_id", "entity", "reason_class", "reason", "attempts", "times", "first_seen", "last_seen", "body_bytes"], "properties": {
                "message_id": uuid, "entity": {"type": "string"}, "reason_class": class, "reason": {"type": "string"},
                "reason_truncated": {"type": "boolean"}, "attempts": int, "times": int, "first_seen": time, "last_seen": time, "body_bytes": int
            }}),
        ),
        (
            "DeadLetterPage",
            json!({"type": "object", "required": ["items", "next", "total"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/DeadLetterSummary"}, "maxItems": MAX_PAGE},
                "next": nullable("string"),
                "total": {"type": "integer", "minimum": 0, "description": "Dead letters the filter matches, on every page"}
            }}),
        ),
        (
            "DeadLetterGroups",
            json!({"type": "object", "required": ["groups"], "properties": {"groups": {"type": "array", "items": {
                "type": "object", "required": ["entity", "reason_class", "count", "first_seen", "last_seen"], "properties": {
                    "entity": {"type": "string"}, "reason_class": class, "count": int, "first_seen": time, "last_seen": time
                }
            }}}}),
        ),
        (
            "DeadLetterDetail",
            json!({"type": "object", "required": ["message_id", "entity", "reason_class", "reason", "attempts", "times", "first_seen", "last_seen", "body_bytes", "body_pretty", "body_truncated", "field_errors_now"], "properties": {
                "message_id": uuid, "entity": {"type": "string"}, "reason_class": class, "reason": {"type": "string"},
                "attempts": int, "times": int, "first_seen": time, "last_seen": time,
                "position": {"type": "object", "properties": {"epoch": int, "sequence": int}},
                "body_bytes": int, "body_is_json": {"type": "boolean"}, "body_pretty": {"type": "string"}, "body_truncated": {"type": "boolean"},
                "field_errors_now": {"type": "array", "items": {"type": "object", "required": ["field", "error"], "properties": {"field": {"type": "string"}, "error": {"type": "string"}}}}
            }}),
        ),
        (
            "DryRun",
            json!({"type": "object", "required": ["total", "would_pass", "refusals"], "properties": {
                "total": int, "would_pass": int,
                "refusals": {"type": "array", "items": {"type": "object", "required": ["reason", "count"], "properties": {"reason": {"type": "string"}, "count": int}}}
            }}),
        ),
        (
            "Replayed",
            json!({"type": "object", "required": ["replayed", "replayed_ids", "skipped"], "properties": {
                "replayed": int, "replayed_ids": {"type": "array", "items": uuid},
                "skipped": {"type": "array", "items": {"type": "object", "required": ["message_id", "reason"], "properties": {"message_id": uuid, "reason": {"type": "string"}}}}
            }}),
        ),
        (
            "Discarded",
            json!({"type": "object", "required": ["discarded", "message_id", "by"], "properties": {
                "discarded": {"const": true}, "message_id": uuid, "by": {"type": "string"}
            }}),
        ),
        (
            "Actions",
            json!({"type": "object", "required": ["actions"], "properties": {"actions": {"type": "array", "items": {
                "type": "object", "required": ["id", "at", "who", "action", "target", "count"], "properties": {
                    "id": int, "at": time, "who": {"type": "string"}, "action": {"type": "string"}, "target": {},
                    "count": int, "note": nullable("string")
                }
            }}}}),
        ),
        (
            "Trace",
            json!({"type": "object", "required": ["message_id", "outcome", "rows", "rows_truncated"], "properties": {
                "message_id": uuid,
                "outcome": {"enum": ["stored", "dead_lettered", "discarded", "waiting", "unknown"]},
            "waiting": {"type": ["object", "null"], "properties": {"entity": {"type": "string"}, "stream_sequence": int}},
            "position": {"type": ["object", "null"], "properties": {"epoch": int, "sequence": int}},
                "status": {"type": ["object", "null"]},
                "dead_letter": {"type": ["object", "null"]},
                "discarded": {"type": ["object", "null"]},
                "rows": {"type": "array", "items": {"type": "object", "required": ["table", "key"], "properties": {"table": {"type": "string"}, "key": {"type": "object"}}}},
                "rows_truncated": {"type": "boolean"}, "rows_per_table_shown": int
            }}),
        ),
        (
            "Schema",
            json!({"type": "object", "required": ["entities"], "properties": {"entities": {"type": "array", "items": {
                "type": "object", "required": ["name", "route", "tables", "json_schema", "example"], "properties": {
                    "name": {"type": "string"}, "route": {"type": "string"}, "tables": {"type": "array"},
                    "json_schema": {"type": "object"}, "example": {"type": "object"}
                }
            }}}}),
        ),
    ] {
        schemas.insert(name.into(), schema);
    }
    let mut components = json!({
        "schemas": schemas,
        "headers": ingest["components"]["headers"].clone(),
    });
    if auth {
        components["securitySchemes"] = ingest["components"]["securitySchemes"].clone();
        for item in paths.values_mut() {
            for operation in item
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                operation["security"] = json!([{"bearerKey": []}, {"apiKeyHeader": []}]);
                operation["responses"]["401"] = json!({
                    "description": "No API key, or not a valid one",
                    "headers": {"WWW-Authenticate": {"$ref": "#/components/headers/WwwAuthenticate"}},
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                });
                operation["responses"]["403"] = error("The key lacks the `admin` scope");
            }
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "nomnom operator console",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Served on ADMIN_PORT only. Dead letters, replay, discard and message traces; every change is recorded in the audit with who did it."
        },
        "paths": paths,
        "components": components,
    })
}
