//! An `Idempotency-Key` means "this message again", never "another message": the api keeps a
//! digest (SHA-256) of the body first sent with a key for the deduplication window
//! (`NATS_DUPLICATE_WINDOW_SECS`, the window in which JetStream drops the retries), in a
//! JetStream key-value bucket `<stream>_IDEMPOTENCY` whose entries expire with it, so every api
//! replica sees it. A retry with the same body goes on (and JetStream drops it as a duplicate);
//! the same key with another body is refused with 409 naming the first message, as payment
//! APIs do. A batch with a key is one body: its digest covers the whole of it.

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{ApiError, Dependency};

/// How long recording or checking a digest may take.
const CLAIM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The digests of keyed bodies, opened (or created) on the first keyed request.
#[derive(Debug, Default)]
pub struct Fingerprints {
    bucket: OnceCell<kv::Store>,
}

/// The SHA-256 of a body (or of the chunks of one, in order).
pub(super) fn digest<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    hasher.finalize().into()
}

/// The bucket of a stream: `<stream>_IDEMPOTENCY`.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_IDEMPOTENCY")
}

impl Fingerprints {
    /// Records `digest` as the body of message `id` (derived from its key), or checks it
    /// against the one recorded within the window: `Ok` for the same body, 409 for another.
    pub(super) async fn claim(
        &self,
        js: &jetstream::Context,
        stream: &str,
        id: Uuid,
        digest: [u8; 32],
    ) -> Result<(), ApiError> {
        // As long as a publish may wait for its ack: with NATS away, a 503 soon, not a hang.
        tokio::time::timeout(CLAIM_TIMEOUT, self.claim_now(js, stream, id, digest))
            .await
            .unwrap_or_else(|_| {
                Err(Dependency::IdempotencyRecords.unavailable(format_args!(
                    "no answer from JetStream within {} s",
                    CLAIM_TIMEOUT.as_secs()
                )))
            })
    }

    async fn claim_now(
        &self,
        js: &jetstream::Context,
        stream: &str,
        id: Uuid,
        digest: [u8; 32],
    ) -> Result<(), ApiError> {
        let store = self.bucket.get_or_try_init(|| open(js, stream)).await?;
        let key = id.simple().to_string();
        let value = Bytes::copy_from_slice(&digest);
        // Twice at most: an entry that expires between `create` and `get` is created again.
        for _ in 0..2 {
            match store.create(&key, value.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match store.get(&key).await.map_err(unavailable)? {
                        Some(first) if first == value => return Ok(()),
                        Some(_) => return Err(ApiError::KeyReused { first: id }),
                        None => continue,
                    }
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(Dependency::IdempotencyRecords
            .unavailable("the idempotency record of this key changed while it was read"))
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    Dependency::IdempotencyRecords.unavailable(e)
}

/// The bucket, created if missing with the stream's duplicate window as its entries' age and
/// the stream's replicas.
async fn open(js: &jetstream::Context, stream: &str) -> Result<kv::Store, ApiError> {
    let name = bucket_name(stream);
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let info = js
        .get_stream(stream)
        .await
        .map_err(unavailable)?
        .cached_info()
        .config
        .clone();
    // The bucket's stream as async-nats' `create_key_value` makes it; made here because that
    // call first asks for the account's info, which it cannot read from nats-server 2.9.
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some("digests of bodies sent with an Idempotency-Key (nomnom api)".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: info.duplicate_window,
        storage: jetstream::stream::StorageType::File,
        num_replicas: info.num_replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    crate::nats::get_or_create_stream(js, config)
        .await
        .map_err(unavailable)?;
    js.get_key_value(&name).await.map_err(unavailable)
}
