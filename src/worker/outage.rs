//! The worker's view of database availability: one warning when an outage starts, a summary
//! every 30 s while it lasts, one line when it ends, and gauges for `/metrics`. While it lasts
//! the worker pulls nothing new and holds the messages it has (see `worker::process_batch`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::StoreError;
use crate::worker::WorkerMetrics;

/// How often a continuing outage is summarised in the log.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// How long after the last failure a success must begin to end an outage: while a server shuts
/// down, a transaction on a backend not yet told to stop can still commit, and must not end an
/// outage that the next statement restarts.
const RECOVERY_QUIET: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    since: Option<Instant>,
    last_fault: Option<Instant>,
    last_summary: Option<Instant>,
    faults_since_summary: u64,
    last_error: String,
    /// When the last committed write began (any batch of this worker).
    last_commit: Option<Instant>,
}

/// Tracks whether the database is reachable, shared by every batch of a worker.
pub struct DbOutage {
    state: Mutex<State>,
    metrics: Arc<WorkerMetrics>,
    quiet: Duration,
}

impl DbOutage {
    /// No outage yet.
    pub fn new(metrics: Arc<WorkerMetrics>) -> Self {
        metrics.database_up.set(1);
        Self {
            state: Mutex::new(State::default()),
            metrics,
            quiet: RECOVERY_QUIET,
        }
    }

    /// Whether an outage is going on (pulls are paused).
    pub fn is_down(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.since.is_some())
            .unwrap_or(false)
    }

    /// Seconds the current outage has lasted, if one is going on.
    pub fn down_for(&self) -> Option<Duration> {
        self.state.lock().ok()?.since.map(|s| s.elapsed())
    }

    /// A transient fault: starts an outage (logged once) or counts toward the next summary.
    pub fn fault(&self, error: &StoreError, held_messages: usize) {
        self.metrics
            .db_errors
            .with_label_values(&[error.metric_class()])
            .inc();
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.last_error = error.to_string();
        s.last_fault = Some(Instant::now());
        match (s.since, s.last_summary) {
            (None, _) => {
                let now = Instant::now();
                s.since = Some(now);
                s.last_summary = Some(now);
                s.faults_since_summary = 0;
                self.metrics.database_up.set(0);
                self.metrics.database_outages.inc();
                tracing::warn!(
                    error = %error,
                    held_messages,
                    "database unavailable: holding the messages in hand and pulling no more until it is back"
                );
            }
            (Some(since), Some(last)) if last.elapsed() >= SUMMARY_EVERY => {
                tracing::warn!(
                    down_secs = since.elapsed().as_secs(),
                    faults = s.faults_since_summary + 1,
                    last_error = %s.last_error,
                    "database still unavailable"
                );
                s.last_summary = Some(Instant::now());
                s.faults_since_summary = 0;
            }
            _ => {
                s.faults_since_summary += 1;
                tracing::debug!(error = %error, "database still unavailable");
            }
        }
    }

    /// A batch write that began at `started` committed: the evidence that the database stores
    /// what it is given (see [`DbOutage::committed_since`]); also ends an outage like
    /// [`DbOutage::recovered`].
    pub fn committed(&self, started: Instant) {
        if let Ok(mut s) = self.state.lock() {
            s.last_commit = Some(s.last_commit.map_or(started, |c| c.max(started)));
        }
        self.recovered(started);
    }

    /// Whether a write that began after `since` committed: with a batch that fails every
    /// time meanwhile, the fault is that batch's, not the database's.
    pub fn committed_since(&self, since: Instant) -> bool {
        self.state
            .lock()
            .map(|s| s.last_commit.is_some_and(|c| c > since))
            .unwrap_or(false)
    }

    /// A database operation that began at `started` succeeded: ends the outage, if any (logged
    /// once). An operation that began before the last failure, or less than a second after it
    /// (a commit racing a shutdown), proves nothing about the database now and leaves the outage
    /// on; the next probe decides.
    pub fn recovered(&self, started: Instant) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if s.since.is_some() && s.last_fault.is_some_and(|last| started < last + self.quiet) {
            return;
        }
        if let Some(since) = s.since.take() {
            let down = since.elapsed();
            s.last_summary = None;
            self.metrics.database_up.set(1);
            self.metrics
                .database_outage_seconds
                .inc_by(down.as_secs_f64());
            tracing::info!(
                down_secs = down.as_secs_f64(),
                "database available again; resuming"
            );
        }
    }
}

/// Backoff between write attempts while the database is failing: 250 ms doubling to 5 s.
pub fn hold_delay(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FaultKind;

    #[test]
    fn an_outage_is_counted_once_and_its_length_recorded() {
        let metrics = Arc::new(WorkerMetrics::new());
        let mut outage = DbOutage::new(metrics.clone());
        outage.quiet = Duration::from_millis(20);
        let e = StoreError::new(FaultKind::Transient, "connection", "refused");
        let before_outage = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        for _ in 0..100 {
            outage.fault(&e, 10);
        }
        assert!(outage.is_down());
        outage.recovered(before_outage);
        assert!(
            outage.is_down(),
            "a success that began before the outage does not end it"
        );
        assert_eq!(metrics.database_up.get(), 0);
        assert_eq!(metrics.database_outages.get(), 1);
        outage.fault(&e, 10);
        assert!(outage.is_down());
        outage.recovered(Instant::now());
        assert!(
            outage.is_down(),
            "a success right after a failure does not end it"
        );
        std::thread::sleep(Duration::from_millis(30));
        outage.recovered(Instant::now());
        outage.recovered(Instant::now());
        assert!(!outage.is_down());
        assert_eq!(metrics.database_up.get(), 1);
        assert_eq!(metrics.database_outages.get(), 1);
        assert_eq!(
            metrics.db_errors.with_label_values(&["connection"]).get(),
            101
        );
    }

    #[test]
    fn hold_delays_grow_and_stop_at_five_seconds() {
        assert_eq!(hold_delay(0), Duration::from_millis(250));
        assert_eq!(hold_delay(2), Duration::from_secs(1));
        assert_eq!(hold_delay(40), Duration::from_secs(5));
    }
}
