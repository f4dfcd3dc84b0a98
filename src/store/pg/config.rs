//! The store's settings: `DATABASE_URL`.

use crate::config::var;

/// Default `DATABASE_URL`: local PostgreSQL, the database named when the project was generated.
pub fn default_database_url() -> String {
    format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        crate::defaults::DATABASE
    )
}

/// `DATABASE_URL` (default [`default_database_url`]).
pub fn database_url_from_env() -> String {
    var("DATABASE_URL", &default_database_url())
}

/// The variables this file reads.
pub const DB_ENV_VARS: &[&str] = &["DATABASE_URL"];
