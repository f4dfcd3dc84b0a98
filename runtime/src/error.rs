//! What a parse reports: a problem per field (`FieldError`, by JSON path) and why a body was
//! refused as a whole (`ParseError`).

use serde::Serialize;

use crate::JsonDoc;

/// One problem with one field of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the field (`line_items[2].quantity`).
    pub field: String,
    /// What is wrong.
    pub error: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.error)
    }
}

/// Why a message body could not be parsed as an entity.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// No root entity has this name.
    #[error("unknown entity `{0}`")]
    UnknownEntity(String),
    /// The body is not valid JSON.
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
    /// Fields are missing or invalid; every problem is listed.
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

pub(crate) fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses bytes as a JSON object (a message body).
pub fn parse_json_object(body: &[u8]) -> Result<JsonDoc<'_>, ParseError> {
    let doc = JsonDoc::parse(body)?;
    if doc.root().is_object() {
        Ok(doc)
    } else {
        Err(ParseError::NotAnObject(doc.root().kind()))
    }
}
