//! Metric label values, always from closed sets: a label taken from a request (an entity name
//! in the URL, an HTTP method token) would let any client create series without bound.

use axum::http::Method;

use crate::generated::RootEntity;

/// A known root entity's snake name, else `unknown`.
pub fn entity_label(name: &str) -> &'static str {
    RootEntity::from_name(name).map_or("unknown", RootEntity::snake_name)
}

/// A standard HTTP method, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    STANDARD
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, label)| label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_names_and_methods_map_to_one_label() {
        // Whatever the schema: an entity's name in any case is its label.
        let entity = crate::generated::RootEntity::ALL[0];
        assert_eq!(entity_label(entity.name()), entity.snake_name());
        assert_eq!(entity_label(entity.snake_name()), entity.snake_name());
        assert_eq!(entity_label("x9f3k"), "unknown");
        assert_eq!(method_label(&Method::POST), "POST");
        let custom = Method::from_bytes(b"BREW").expect("token");
        assert_eq!(method_label(&custom), "other");
    }
}
