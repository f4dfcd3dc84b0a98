//! The database's errors, classified by SQLSTATE into what they mean for the messages, and
//! the codes themselves.

use diesel::result::DatabaseErrorKind;

use crate::store::{FaultKind, StoreError};

/// A five-character PostgreSQL error code (`23505`, `57P01`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState([u8; 5]);

impl SqlState {
    /// Parses a code; `None` unless it is five ASCII letters or digits.
    pub fn new(code: &str) -> Option<Self> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(Self(bytes))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Constructed from ASCII only.
        std::str::from_utf8(&self.0).unwrap_or("?????")
    }

    /// Its class: the first two characters (`23` for integrity constraint violations).
    pub fn class(&self) -> &str {
        &self.as_str()[..2]
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `DATABASE_URL` is not a PostgreSQL URL or connection string.
    #[error("invalid database URL: {0}")]
    Url(String),
    /// The server could not be reached, refused us, or failed during start-up.
    #[error("{message}")]
    Server {
        /// What happened (never includes a password).
        message: String,
        /// The server's error code, when it sent one (`3D000`: no such database).
        sqlstate: Option<SqlState>,
    },
}

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be obtained.
    #[error("database connection: {message}")]
    Connection {
        /// What happened.
        message: String,
        /// The server's code, when it refused us with one (`53300` too many connections).
        sqlstate: Option<SqlState>,
    },
    /// A statement failed.
    #[error("database query{}: {source}", sqlstate.map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default())]
    Query {
        /// diesel's error.
        source: diesel::result::Error,
        /// The server's code for it, read off the connection.
        sqlstate: Option<SqlState>,
    },
    /// A statement on a tokio-postgres client (bulk `COPY` writes) failed.
    #[error("database statement{}: {message}", sqlstate.map(|s| format!(" (SQLSTATE {s})")).unwrap_or_default())]
    Statement {
        /// The server's message, or the client's.
        message: String,
        /// The server's code, when it sent one.
        sqlstate: Option<SqlState>,
    },
    /// A value could not be put in PostgreSQL's binary form (the parsers admit none such).
    #[error("a value cannot be encoded for PostgreSQL: {0}")]
    Encode(String),
    /// Running the embedded migrations failed.
    #[error("database migration: {0}")]
    Migration(String),
    /// The live tables differ from the YAML in ways that need an operator.
    #[error("{0}")]
    Schema(String),
}

impl From<diesel::result::Error> for DbError {
    fn from(source: diesel::result::Error) -> Self {
        DbError::Query {
            source,
            sqlstate: None,
        }
    }
}

impl From<ConnectError> for DbError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Url(_) => DbError::Connection {
                message: e.to_string(),
                sqlstate: None,
            },
            ConnectError::Server { message, sqlstate } => DbError::Connection { message, sqlstate },
        }
    }
}

/// Classifies a SQLSTATE by its class. `21` (cardinality violation: one statement met the same
/// row twice), `22` (data exception), `23` (integrity constraint) and `54` (program limit
/// exceeded, e.g. an index row too large) are data errors: the same rows fail again. `40`
/// (transaction rollback: serialization failure, deadlock) is a conflict with a concurrent
/// transaction, retried at once. `08` connection, `53` insufficient resources, `57` operator
/// intervention (`57014` statement timeout, `57P01` terminated), `58` system error, `XX`
/// internal error and every class not named here are transient.
pub fn classify_sqlstate(code: SqlState) -> FaultKind {
    match code.class() {
        "21" | "22" | "23" | "54" => FaultKind::Data,
        "40" => FaultKind::Conflict,
        _ => FaultKind::Transient,
    }
}

impl DbError {
    /// The server's SQLSTATE, when the error came with one.
    pub fn sqlstate(&self) -> Option<SqlState> {
        match self {
            DbError::Connection { sqlstate, .. }
            | DbError::Query { sqlstate, .. }
            | DbError::Statement { sqlstate, .. } => *sqlstate,
            _ => None,
        }
    }

    /// Attaches the code read off the connection (keeps one already known).
    pub fn with_sqlstate(self, code: Option<SqlState>) -> Self {
        match self {
            DbError::Query { source, sqlstate } => DbError::Query {
                source,
                sqlstate: sqlstate.or(code),
            },
            other => other,
        }
    }

    /// Transient or data fault. By SQLSTATE when the server sent one; otherwise by what diesel
    /// saw: a lost connection is transient, a value diesel could not encode is data.
    pub fn kind(&self) -> FaultKind {
        if let Some(code) = self.sqlstate() {
            return classify_sqlstate(code);
        }
        match self {
            DbError::Connection { .. } | DbError::Statement { .. } => FaultKind::Transient,
            DbError::Encode(_) => FaultKind::Data,
            DbError::Migration(_) | DbError::Schema(_) => FaultKind::Transient,
            DbError::Query { source, .. } => match source {
                diesel::result::Error::DatabaseError(
                    DatabaseErrorKind::UniqueViolation
                    | DatabaseErrorKind::ForeignKeyViolation
                    | DatabaseErrorKind::NotNullViolation
                    | DatabaseErrorKind::CheckViolation
                    | DatabaseErrorKind::RestrictViolation
                    | DatabaseErrorKind::ExclusionViolation,
                    _,
                ) => FaultKind::Data,
                diesel::result::Error::SerializationError(_)
                | diesel::result::Error::DeserializationError(_)
                | diesel::result::Error::QueryBuilderError(_) => FaultKind::Data,
                _ => FaultKind::Transient,
            },
        }
    }

    /// Whether retrying later may succeed (see [`DbError::kind`]).
    pub fn is_transient(&self) -> bool {
        self.kind() == FaultKind::Transient
    }

    /// A short, closed-set label for metrics: the SQLSTATE class, or `connection`/`client`.
    pub fn metric_class(&self) -> &'static str {
        const CLASSES: &[&str] = &[
            "08", "0A", "21", "22", "23", "25", "28", "3D", "40", "42", "53", "54", "55", "57",
            "58", "XX",
        ];
        match self.sqlstate() {
            Some(code) => CLASSES
                .iter()
                .find(|c| **c == code.class())
                .copied()
                .unwrap_or("other"),
            None if matches!(self, DbError::Connection { .. }) => "connection",
            None => "client",
        }
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::new(e.kind(), e.metric_class(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::DatabaseErrorKind;

    fn kind_of(code: &str) -> FaultKind {
        let sqlstate = SqlState::new(code);
        assert!(sqlstate.is_some(), "{code}");
        DbError::Query {
            source: diesel::result::Error::NotFound,
            sqlstate,
        }
        .kind()
    }

    #[test]
    fn connection_rollback_resource_operator_system_and_internal_classes_are_transient() {
        for code in [
            "08006", // connection_failure
            "08P01", // protocol_violation
            "53100", // disk_full
            "53200", // out_of_memory
            "53300", // too_many_connections
            "57014", // query_canceled (statement timeout)
            "57P01", // admin_shutdown (terminated backend)
            "57P03", // cannot_connect_now (starting up)
            "58030", // io_error
            "XX000", // internal_error
            "XX001", // data_corrupted
        ] {
            assert_eq!(kind_of(code), FaultKind::Transient, "{code}");
        }
    }

    #[test]
    fn rollbacks_by_a_concurrent_transaction_are_conflicts() {
        for code in [
            "40001", // serialization_failure
            "40P01", // deadlock_detected
        ] {
            assert_eq!(kind_of(code), FaultKind::Conflict, "{code}");
        }
    }

    #[test]
    fn data_exception_integrity_and_limit_classes_are_data_errors() {
        for code in [
            "21000", // cardinality_violation (ON CONFLICT met a row twice)
            "22003", // numeric_value_out_of_range
            "22001", // string_data_right_truncation
            "22P02", // invalid_text_representation
            "23505", // unique_violation
            "23514", // check_violation
            "23502", // not_null_violation
            "54000", // program_limit_exceeded (index row too large)
        ] {
            assert_eq!(kind_of(code), FaultKind::Data, "{code}");
        }
    }

    #[test]
    fn unknown_classes_are_transient() {
        for code in ["42P01", "25006", "0A000", "ZZ999"] {
            assert_eq!(kind_of(code), FaultKind::Transient, "{code}");
        }
    }

    #[test]
    fn without_a_sqlstate_lost_connections_are_transient_and_encoding_failures_data() {
        let closed = DbError::from(diesel::result::Error::DatabaseError(
            DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_string()),
        ));
        assert_eq!(closed.kind(), FaultKind::Transient);
        let encode = DbError::from(diesel::result::Error::SerializationError(
            "digits do not fit".into(),
        ));
        assert_eq!(encode.kind(), FaultKind::Data);
        let refused = DbError::Connection {
            message: "refused".into(),
            sqlstate: None,
        };
        assert_eq!(refused.kind(), FaultKind::Transient);
        assert_eq!(refused.metric_class(), "connection");
    }

    #[test]
    fn the_sqlstate_read_off_the_connection_is_kept_in_the_error() {
        let e =
            DbError::from(diesel::result::Error::NotFound).with_sqlstate(SqlState::new("23505"));
        assert_eq!(
            e.sqlstate().map(|s| s.to_string()).as_deref(),
            Some("23505")
        );
        assert!(e.to_string().contains("SQLSTATE 23505"), "{e}");
        assert_eq!(e.metric_class(), "23");
    }
}
