//! The api's error type, mapped once to an HTTP status and a JSON body.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::detect::UnknownMember;
use crate::runtime::{FieldError, ParseError};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No root entity has this name.
    #[error("unknown entity `{0}`")]
    UnknownEntity(String),
    /// The body is not JSON.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// serde_json's description.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The body is JSON but not an object.
    #[error("the message body must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// The body is JSON but does not match the entity (or, unnamed, any entity).
    #[error("{}", match (.entity, .guessed) {
        (Some(e), true) => format!("the message matches no entity this key may post; the closest is `{e}`: fix the problems listed, or name the entity (POST /ingest/message/{{entity}})"),
        (Some(e), false) => format!("the message does not match entity `{e}`"),
        (None, _) => "the message does not match its entity".into(),
    })]
    Invalid {
        /// Entity name, when known.
        entity: Option<&'static str>,
        /// Every problem, per field.
        errors: Vec<FieldError>,
        /// Members of the body the entity does not read, with hints.
        unknown: Vec<UnknownMember>,
        /// Whether the entity was the closest of those tried for an unnamed body.
        guessed: bool,
    },
    /// An unnamed body matches several entities.
    #[error("the message matches several entities ({}); name one: POST /ingest/message/{{entity}}, ?entity_type=, an X-Entity-Type header or an \"entity_type\" member", .0.join(", "))]
    Ambiguous(Vec<&'static str>),
    /// The request body could not be read (too large, connection dropped).
    #[error("{message}")]
    Body {
        /// HTTP status from the body reader (413 for too large).
        status: StatusCode,
        /// Description.
        message: String,
    },
    /// A service the request needs did not answer; the client should retry. The body says so
    /// in words a client can act on; `detail` (the upstream error) is only logged.
    #[error("{}", .what.client_message())]
    Unavailable {
        /// Which service.
        what: Dependency,
        /// The upstream error, for the log.
        detail: String,
    },
    /// The request is malformed (bad header, bad id, missing entity type).
    #[error("{0}")]
    BadRequest(String),
    /// The body's content type is not JSON (or NDJSON for batches).
    #[error("unsupported content type `{found}`; send {expected}")]
    UnsupportedMediaType {
        /// The Content-Type sent.
        found: String,
        /// What the route takes.
        expected: &'static str,
    },
    /// The body is larger than the configured limit.
    #[error("the body is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A batch has more lines than `MAX_BATCH_LINES`.
    #[error("the batch has more than {limit} lines; split it")]
    TooManyLines {
        /// The limit in lines.
        limit: usize,
    },
    /// The request (or its body) took longer than the server allows.
    #[error("the request took too long; send it again")]
    Timeout,
    /// More requests are in flight than `MAX_IN_FLIGHT_REQUESTS`.
    #[error("the server is at its limit of requests in flight; retry after the Retry-After header")]
    Overloaded,
    /// An `Idempotency-Key` sent again within the deduplication window with another body.
    #[error(
        "this Idempotency-Key was sent within the deduplication window with another body (message {first}); a new message needs a new key"
    )]
    KeyReused {
        /// The message the key stands for (what the first body was accepted as).
        first: uuid::Uuid,
    },
    /// The request bodies in flight would pass `MAX_INFLIGHT_BODY_BYTES` (the body was not read).
    #[error(
        "the server holds as many request bytes as it may; retry after the Retry-After header (a smaller body, or one with a Content-Length, is let in sooner)"
    )]
    BodiesInFlight,
    /// No such message (or other resource).
    #[error("{0}")]
    NotFound(String),
    /// No route has this path; the answer lists the routes.
    #[error(
        "no route for {0}; the routes are listed in `routes` (and described at GET /api-docs/openapi.json)"
    )]
    NoRoute(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// No API key, or one that is not configured.
    #[error("{}", if *.invalid {
        "the API key is not valid"
    } else {
        "an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
    })]
    Unauthorized {
        /// A key was presented but matches none.
        invalid: bool,
    },
    /// The key is valid but may not do this.
    #[error("{0}")]
    Forbidden(String),
}

/// A service the api depends on, as a 503 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// JetStream, for publishing.
    Broker,
    /// The stream is at its limits and refuses new messages.
    StreamFull,
    /// The idempotency records (a JetStream key-value bucket).
    IdempotencyRecords,
    /// Where message status is looked up (the database, and the stream for pending messages).
    StatusLookup,
    /// What the console reads and records (dead letters, the audit, counts: the database).
    OperatorRecords,
}

impl Dependency {
    /// What a client reads in the 503's `error`.
    pub fn client_message(self) -> &'static str {
        match self {
            Dependency::Broker => {
                "the message broker did not confirm the message; send it again after the Retry-After header (with an Idempotency-Key a retry is never stored twice)"
            }
            Dependency::StreamFull => {
                "the stream has reached its limits and takes no new messages; nothing was stored; send it again after the Retry-After header (its operator must raise the limits or let it drain)"
            }
            Dependency::IdempotencyRecords => {
                "the idempotency records cannot be checked right now; nothing was published; send it again after the Retry-After header"
            }
            Dependency::StatusLookup => {
                "message status cannot be looked up right now; ask again after the Retry-After header"
            }
            Dependency::OperatorRecords => {
                "the database holding dead letters and the audit cannot be reached right now; nothing was changed; try again after the Retry-After header"
            }
        }
    }

    /// A 503 for this dependency, keeping the upstream error for the log.
    pub fn unavailable(self, detail: impl std::fmt::Display) -> ApiError {
        ApiError::Unavailable {
            what: self,
            detail: detail.to_string(),
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::UnknownEntity(name) => ApiError::UnknownEntity(name),
            ParseError::InvalidJson {
                message,
                line,
                column,
            } => ApiError::InvalidJson {
                message,
                line,
                column,
            },
            ParseError::NotAnObject(found) => ApiError::NotAnObject(found),
            ParseError::Invalid(errors) => ApiError::Invalid {
                entity: None,
                errors,
                unknown: Vec::new(),
                guessed: false,
            },
        }
    }
}

impl From<crate::bulk::BulkError> for ApiError {
    fn from(e: crate::bulk::BulkError) -> Self {
        use crate::bulk::BulkError;
        match e {
            BulkError::Json {
                message,
                line,
                column,
            } => ApiError::InvalidJson {
                message,
                line,
                column,
            },
            BulkError::Io(io) => ApiError::Body {
                status: StatusCode::BAD_REQUEST,
                message: format!("the request body could not be read: {io}"),
            },
            e @ BulkError::RecordTooLong { .. } => ApiError::Body {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: e.to_string(),
            },
            e @ (BulkError::Header(_) | BulkError::Malformed(_)) => {
                ApiError::BadRequest(e.to_string())
            }
        }
    }
}

impl ApiError {
    /// The per-field problems of a 422 (`details`); empty for other errors.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ApiError::Invalid { errors, .. } => errors.clone(),
            ApiError::NotAnObject(_) => vec![FieldError {
                field: "$".into(),
                error: self.to_string(),
            }],
            _ => Vec::new(),
        }
    }

    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownEntity(_) | ApiError::NotFound(_) | ApiError::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::InvalidJson { .. } | ApiError::BadRequest(_) | ApiError::Ambiguous(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooLarge { .. } | ApiError::TooManyLines { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::Invalid { .. } | ApiError::NotAnObject(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::KeyReused { .. } => StatusCode::CONFLICT,
            ApiError::Body { status, .. } => *status,
            ApiError::Unavailable { .. } | ApiError::Overloaded | ApiError::BodiesInFlight => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({ "error": self.to_string(), "status": status.as_u16() });
        match &self {
            ApiError::Invalid {
                entity, unknown, ..
            } => {
                body["details"] = json!(self.field_errors());
                if let Some(entity) = entity {
                    body["entity"] = json!(entity);
                }
                if !unknown.is_empty() {
                    body["unknown_members"] = json!(unknown);
                }
            }
            ApiError::NotAnObject(_) => {
                body["details"] = json!(self.field_errors());
            }
            ApiError::Ambiguous(names) => {
                body["matching_entities"] = json!(names);
            }
            ApiError::NoRoute(_) => {
                body["routes"] = json!(super::ROUTES);
            }
            ApiError::KeyReused { first } => {
                body["message_id"] = json!(first);
            }
            ApiError::UnknownEntity(_) => {
                let known: Vec<&str> = crate::generated::RootEntity::ALL
                    .iter()
                    .map(|e| e.snake_name())
                    .collect();
                body["known_entities"] = json!(known);
            }
            _ => {}
        }
        let mut response = (status, Json(body)).into_response();
        if let ApiError::Unavailable { what, detail } = &self {
            // The upstream error goes to the log, never to the client: the request layer logs
            // it with the request's id.
            response.extensions_mut().insert(UpstreamFailure {
                what: *what,
                detail: detail.clone(),
            });
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            retry_after(&mut response, 1);
        }
        if let ApiError::Unauthorized { invalid } = self {
            // RFC 6750: the scheme, and why the token was refused when one was sent.
            let challenge = if invalid {
                r#"Bearer realm="nomnom", error="invalid_token""#
            } else {
                r#"Bearer realm="nomnom""#
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// A dependency's failure behind a 503, carried from the handler to the request layer in the
/// response's extensions and logged there with the request id (see [`log_upstream_failure`]).
#[derive(Debug, Clone)]
pub(super) struct UpstreamFailure {
    /// What failed.
    pub(super) what: Dependency,
    /// The upstream error's text.
    pub(super) detail: String,
}

/// Logs a 503's upstream failure with the request id the client got in `x-request-id`. During
/// an outage every request fails the same way: one line per 10 s.
pub(super) fn log_upstream_failure(failure: &UpstreamFailure, request_id: &str) {
    static FAILED: crate::throttle::Throttle =
        crate::throttle::Throttle::new(std::time::Duration::from_secs(10));
    if let Some(held_back) = FAILED.allow() {
        tracing::warn!(request_id, dependency = ?failure.what, error = %failure.detail, similar_since_last = held_back, "request failed: 503");
    }
}

/// Sets `Retry-After` (seconds) on an answer: every 503 of the api carries one.
pub(super) fn retry_after(response: &mut Response, seconds: u32) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
}
