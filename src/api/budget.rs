//! The bytes of request bodies the api holds at once (`MAX_INFLIGHT_BODY_BYTES`): each request
//! that carries messages reserves its body's size (its `Content-Length`, or the route's limit
//! when it has none) before reading it, and is answered 503 + `Retry-After` at once when the
//! reservation does not fit. The in-flight limit bounds how many requests run; this bounds what
//! their bodies can cost, so a few maximum-size batches cannot push the process past its memory.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// Default `MAX_INFLIGHT_BODY_BYTES` (80 MiB): a request body costs the api up to about 2.5
/// times its size while it is checked (the body, the parsed rows of one message, the lines
/// awaiting publication), so this keeps a pod with a 256 MiB limit below it, while 4 batches
/// of `MAX_BATCH_BYTES` (16 MiB) and dozens of single messages fit at once.
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 80 * 1024 * 1024;

/// The shared reservation of body bytes.
#[derive(Debug)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    /// The whole budget, in KiB (one permit per KiB).
    total_kib: u32,
}

/// A request's share of the [`BodyBudget`], given back when dropped.
#[derive(Debug)]
pub struct BodyPermit {
    _reserved: OwnedSemaphorePermit,
}

impl BodyBudget {
    /// A budget of `bytes` (at least 1 KiB).
    pub fn new(bytes: usize) -> Self {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX >> 3)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        Self {
            permits: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.permits.available_permits() * 1024
    }

    /// Reserves the body of a request whose headers are `headers`: its declared length, at
    /// most `limit` (a larger one is refused as too large by the reader), or `limit` when it
    /// declares none. A body larger than the whole budget takes all of it.
    pub fn reserve(&self, headers: &HeaderMap, limit: usize) -> Result<BodyPermit, ApiError> {
        let bytes = declared_length(headers).map_or(limit, |n| n.min(limit));
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_kib);
        self.permits
            .clone()
            .try_acquire_many_owned(kib)
            .map(|reserved| BodyPermit {
                _reserved: reserved,
            })
            .map_err(|_| ApiError::BodiesInFlight)
    }
}

/// The body length a request declares (`Content-Length`), if it declares a readable one.
pub fn declared_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

impl Default for BodyBudget {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_INFLIGHT_BODY_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
        h
    }

    #[test]
    fn reservations_follow_the_declared_length_and_come_back_when_dropped() {
        let budget = BodyBudget::new(10 * 1024);
        let a = budget
            .reserve(&with_length(6 * 1024), 1 << 20)
            .expect("fits");
        assert!(matches!(
            budget.reserve(&with_length(5 * 1024), 1 << 20),
            Err(ApiError::BodiesInFlight)
        ));
        // No length declared: the route's limit is reserved (here more than what is left).
        assert!(budget.reserve(&HeaderMap::new(), 8 * 1024).is_err());
        let b = budget
            .reserve(&with_length(4 * 1024), 1 << 20)
            .expect("fits");
        drop(a);
        drop(b);
        assert_eq!(budget.available(), 10 * 1024);
        // Larger than the whole budget: all of it, once nothing else is held.
        let all = budget
            .reserve(&with_length(50 * 1024), 1 << 20)
            .expect("all");
        assert_eq!(budget.available(), 0);
        drop(all);
    }
}
