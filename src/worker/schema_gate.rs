//! Whether this worker's schema is still the database's: during a rolling deploy a worker of
//! the older build, once a newer build's schema is applied, stops pulling (its rules no longer
//! fit the tables) and reports not-ready until it is replaced — or its schema is made current
//! again (`worker schema apply --make-current`, a rollback), when it resumes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::WorkerMetrics;
use crate::store::{AppliedSchema, Store};

/// How often the database's ledger is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The schema applied after this worker's, while there is one.
pub struct SchemaGate {
    behind: Mutex<Option<AppliedSchema>>,
    metrics: Arc<WorkerMetrics>,
}

impl SchemaGate {
    /// Open, or closed by `newer` (what the worker's start found).
    pub fn new(newer: Option<AppliedSchema>, metrics: Arc<WorkerMetrics>) -> Self {
        let gate = Self {
            behind: Mutex::new(None),
            metrics,
        };
        gate.set(newer);
        gate
    }

    /// The newer schema that keeps this worker from pulling, if any.
    pub fn behind(&self) -> Option<AppliedSchema> {
        self.behind.lock().ok()?.clone()
    }

    fn set(&self, newer: Option<AppliedSchema>) {
        let Ok(mut behind) = self.behind.lock() else {
            return;
        };
        match (&*behind, &newer) {
            (None, Some(n)) => tracing::error!(
                database_schema = %n.version,
                applied_at = %n.applied_at,
                this_worker = crate::generated::SCHEMA_VERSION,
                "the database's schema is newer than this worker's: it pulls nothing and reports not-ready until it is replaced by a worker of the new build (or this build's schema is made current again with `worker schema apply --make-current`)"
            ),
            (Some(_), None) => tracing::info!(
                this_worker = crate::generated::SCHEMA_VERSION,
                "this worker's schema is the database's again: pulling"
            ),
            _ => {}
        }
        self.metrics.schema_behind.set(i64::from(newer.is_some()));
        *behind = newer;
    }
}

/// Reads the database's ledger every [`CHECK_EVERY`] until `shutdown`; a failed read changes
/// nothing (outages are the batches' business).
pub async fn watch(gate: Arc<SchemaGate>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if let Ok(head) = store.schema_head().await {
            gate.set(head.newer_than_own());
        }
    }
}
