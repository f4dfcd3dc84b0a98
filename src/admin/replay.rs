//! Replay: dead letters published again as copies that keep where the original first arrived
//! (so a copy never overwrites what later messages wrote); the worker resolves a record in the
//! transaction that stores its copy.

use chrono::Utc;

use crate::envelope::MessageEnvelope;
use crate::generated::RootEntity;
use crate::nats::{Outgoing, Publish, message_subject};
use crate::store::{DeadLetterFilter, DeadLetterPage, Store};
use uuid::Uuid;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Messages published again.
    pub replayed: Vec<Uuid>,
    /// Dead letters whose body is not a JSON message (e.g. an unreadable envelope).
    pub skipped: Vec<(Uuid, String)>,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The store could not be read.
    #[error("reading dead letters: {0}")]
    Store(String),
    /// Publishing failed.
    #[error("publishing the replayed message failed: {0}")]
    Publish(String),
}

/// Dead letters read per page by replay: with bodies up to the largest message (1 MiB by
/// default), a page holds at most 16 MiB.
const REPLAY_PAGE: usize = 16;

/// Publishes a copy of each dead letter (the filter's) for processing again. The records stay:
/// the worker removes a record in the transaction that stores its copy, and a copy rejected
/// again updates it (one more time dead-lettered, attempts added), so a replay before the cause
/// is fixed loses nothing. A copy carries where the original first arrived, so it never
/// overwrites what later messages wrote. Reads the dead letters a page at a time.
pub async fn replay(
    publisher: &dyn Publish,
    stream: &str,
    store: &dyn Store,
    filter: &DeadLetterFilter,
) -> Result<ReplayReport, ReplayError> {
    replay_with_progress(publisher, stream, store, filter, &mut |_| {}).await
}

/// [`replay`], calling `on_page` with the report so far after each page (for a progress bar).
pub async fn replay_with_progress(
    publisher: &dyn Publish,
    stream: &str,
    store: &dyn Store,
    filter: &DeadLetterFilter,
    on_page: &mut (dyn FnMut(&ReplayReport) + Send),
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    let mut page = DeadLetterPage {
        filter: filter.clone(),
        after: None,
        limit: REPLAY_PAGE,
    };
    loop {
        let rows = store
            .dead_letters(&page)
            .await
            .map_err(|e| ReplayError::Store(e.to_string()))?;
        let Some(last) = rows.last() else {
            break;
        };
        page.after = Some((last.first_seen, last.message_id));
        let full = rows.len() == page.limit;
        for row in rows {
            let Some(entity) = RootEntity::from_name(&row.entity) else {
                report
                    .skipped
                    .push((row.message_id, format!("unknown entity `{}`", row.entity)));
                continue;
            };
            if serde_json::from_slice::<serde::de::IgnoredAny>(&row.body).is_err() {
                report
                    .skipped
                    .push((row.message_id, "the body is not JSON".into()));
                continue;
            }
            let id = row.message_id;
            let mut copy = MessageEnvelope::new(id, entity.name(), row.body);
            copy.replay_of = Some(row.position);
            // A replayed copy is judged by the rules of the worker that takes it.
            copy.schema = None;
            let publish = copy
                .to_publish(false)
                .message_id(format!("{id}:replay:{}", Utc::now().timestamp_micros()));
            let outgoing = Outgoing {
                subject: message_subject(stream, entity.snake_name(), &id),
                message: publish,
            };
            publisher
                .publish(outgoing)
                .await
                .map_err(|e| ReplayError::Publish(e.to_string()))?;
            report.replayed.push(id);
        }
        on_page(&report);
        if !full {
            break;
        }
    }
    Ok(report)
}
