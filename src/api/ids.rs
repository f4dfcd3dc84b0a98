//! Message ids: derived from an `Idempotency-Key` (per client, entity and key), else fresh.

use axum::http::HeaderMap;
use uuid::Uuid;

use super::ApiError;
use super::auth::Client;
use crate::generated::RootEntity;

/// Namespace of message ids derived from an `Idempotency-Key` (UUIDv5) without API keys.
pub(super) const IDEMPOTENCY_NAMESPACE: Uuid =
    Uuid::from_u128(0x6e6f_6d6e_6f6d_4b65_9f1d_7a1c_0de5_1d01);
/// Namespace of ids derived from an `Idempotency-Key` sent with an API key: the key's name is
/// part of the id, so one client's keys cannot claim another client's ids.
pub(super) const CLIENT_IDEMPOTENCY_NAMESPACE: Uuid =
    Uuid::from_u128(0x6e6f_6d6e_6f6d_4b65_9f1d_7a1c_0de5_1d02);

/// The `Idempotency-Key` header, validated.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // Exactly IDEMPOTENCY_KEY_PATTERN (HTTP has already dropped surrounding white space).
    let key = v
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?;
    Ok(Some(key.to_string()))
}

/// The message id: derived from the client, the entity and the idempotency key (same key from
/// the same client → same id), else random.
pub(super) fn message_id(
    client: &Client,
    entity: RootEntity,
    key: Option<&str>,
    line: Option<usize>,
) -> Uuid {
    let Some(key) = key else {
        // Time-ordered: consecutive messages land next to each other in the status table's
        // primary-key index instead of at random pages.
        return Uuid::now_v7();
    };
    let entity = entity.name();
    let name = match line {
        None => format!("{entity}\n{key}"),
        Some(l) => format!("{entity}\n{key}\n{l}"),
    };
    if client.is_anonymous() {
        Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, name.as_bytes())
    } else {
        // Key names cannot contain `\n`, so (client, rest) pairs cannot collide.
        let scoped = format!("{}\n{name}", client.name);
        Uuid::new_v5(&CLIENT_IDEMPOTENCY_NAMESPACE, scoped.as_bytes())
    }
}
