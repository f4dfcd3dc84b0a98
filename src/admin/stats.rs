//! The overview: what happened to the messages of every entity, read from where it is true
//! across every api and worker replica — the store (committed, dead-lettered), JetStream (what
//! is waiting, how old the oldest is) and the workers' roster (who is alive, whether they can
//! reach the database) — never from one process's memory.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::admin::workers::{self, WorkerReport};
use crate::generated::RootEntity;
use crate::store::{EntityCounts, Store};

/// The window of the "recent" counts.
pub const RECENT: Duration = Duration::from_secs(5 * 60);

/// One entity's messages.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EntityOverview {
    /// The entity.
    pub entity: String,
    /// Accepted in all: committed + dead-lettered + waiting (when waiting is known).
    pub accepted: Option<i64>,
    /// Committed, in all.
    pub committed: i64,
    /// Dead-lettered, in all.
    pub dead_lettered: i64,
    /// Committed within the recent window.
    pub committed_recent: i64,
    /// Dead-lettered within the recent window.
    pub dead_lettered_recent: i64,
    /// In the stream, not yet committed or dead-lettered (unknown when JetStream did not say).
    pub waiting: Option<u64>,
}

/// The stream and the workers' consumer.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct StreamOverview {
    /// The stream.
    pub stream: String,
    /// The durable consumer the workers share.
    pub consumer: String,
    /// Messages not yet delivered to a worker.
    pub undelivered: Option<u64>,
    /// Messages delivered and not yet acknowledged.
    pub in_progress: Option<u64>,
    /// How long the oldest message not yet acknowledged has waited, in seconds.
    pub oldest_waiting_seconds: Option<f64>,
    /// Why JetStream could not say, if it could not.
    pub error: Option<String>,
}

/// The database as the api sees it, and as the workers report it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DatabaseOverview {
    /// Whether the api's probe passed just now.
    pub up: bool,
    /// Workers that report the database down.
    pub workers_reporting_down: usize,
    /// The longest outage a worker reports, in seconds.
    pub longest_outage_seconds: Option<u64>,
}

/// Everything the overview page shows.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overview {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// The api's version.
    pub version: &'static str,
    /// How long this api process has run, in seconds.
    pub uptime_seconds: u64,
    /// The window of the recent counts, in seconds.
    pub recent_window_seconds: u64,
    /// Per entity.
    pub entities: Vec<EntityOverview>,
    /// Dead letters kept (not replayed or discarded).
    pub dead_letters_kept: i64,
    /// The stream.
    pub stream: StreamOverview,
    /// The database.
    pub database: DatabaseOverview,
    /// The workers alive.
    pub workers: Vec<WorkerReport>,
    /// Why the roster could not be read, if it could not.
    pub workers_error: Option<String>,
}

/// Where the overview reads from.
pub struct Sources<'a> {
    /// The store.
    pub store: &'a dyn Store,
    /// JetStream.
    pub jetstream: &'a jetstream::Context,
    /// The stream's name.
    pub stream: &'a str,
    /// The workers' durable consumer.
    pub consumer: &'a str,
    /// When this process started.
    pub started: std::time::Instant,
}

/// Reads the overview. The store must answer (an error otherwise); JetStream and the roster
/// may not, which the overview says.
pub async fn overview(sources: &Sources<'_>) -> Result<Overview, crate::store::StoreError> {
    let now = Utc::now();
    let up = sources.store.probe().await.is_ok();
    let since = now - chrono::Duration::from_std(RECENT).unwrap_or_default();
    let counts = sources.store.entity_counts(since).await?;
    let groups = sources.store.dead_letter_groups().await?;
    let (stream, waiting) = read_stream(sources).await;
    let (workers, workers_error) = match workers::alive(sources.jetstream, sources.stream).await {
        Ok(list) => (list, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let down: Vec<&WorkerReport> = workers.iter().filter(|w| !w.database_up).collect();
    Ok(Overview {
        at: now,
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: sources.started.elapsed().as_secs(),
        recent_window_seconds: RECENT.as_secs(),
        entities: entities(&counts, &waiting),
        dead_letters_kept: groups.iter().map(|g| g.count).sum(),
        stream,
        database: DatabaseOverview {
            up,
            workers_reporting_down: down.len(),
            longest_outage_seconds: down.iter().filter_map(|w| w.database_down_seconds).max(),
        },
        workers,
        workers_error,
    })
}

/// One line per root entity of this build (and per name the store holds that is none).
fn entities(
    counts: &[EntityCounts],
    waiting: &Option<Vec<(RootEntity, u64)>>,
) -> Vec<EntityOverview> {
    let mut out: Vec<EntityOverview> = RootEntity::ALL
        .iter()
        .map(|e| {
            let mut line = EntityOverview {
                entity: e.name().to_string(),
                accepted: None,
                committed: 0,
                dead_lettered: 0,
                committed_recent: 0,
                dead_lettered_recent: 0,
                waiting: waiting
                    .as_ref()
                    .and_then(|w| w.iter().find(|(we, _)| we == e).map(|(_, n)| *n)),
            };
            for c in counts
                .iter()
                .filter(|c| RootEntity::from_name(&c.entity) == Some(*e))
            {
                add(&mut line, c);
            }
            line
        })
        .collect();
    for c in counts
        .iter()
        .filter(|c| RootEntity::from_name(&c.entity).is_none())
    {
        let mut line = EntityOverview {
            entity: c.entity.clone(),
            accepted: None,
            committed: 0,
            dead_lettered: 0,
            committed_recent: 0,
            dead_lettered_recent: 0,
            waiting: Some(0),
        };
        add(&mut line, c);
        out.push(line);
    }
    for line in &mut out {
        line.accepted = line
            .waiting
            .map(|w| line.committed + line.dead_lettered + i64::try_from(w).unwrap_or(i64::MAX));
    }
    out
}

fn add(line: &mut EntityOverview, c: &EntityCounts) {
    line.committed += c.processed;
    line.dead_lettered += c.dead_lettered;
    line.committed_recent += c.processed_recent;
    line.dead_lettered_recent += c.dead_lettered_recent;
}

/// The consumer's backlog, the oldest message waiting, and what waits per entity.
async fn read_stream(sources: &Sources<'_>) -> (StreamOverview, Option<Vec<(RootEntity, u64)>>) {
    let mut out = StreamOverview {
        stream: sources.stream.to_string(),
        consumer: sources.consumer.to_string(),
        ..Default::default()
    };
    let result = async {
        let stream = sources.jetstream.get_stream(sources.stream).await?;
        let info = stream.consumer_info(sources.consumer).await?;
        out.undelivered = Some(info.num_pending);
        out.in_progress = Some(info.num_ack_pending as u64);
        let first_waiting = info.ack_floor.stream_sequence + 1;
        if info.num_pending + info.num_ack_pending as u64 > 0 {
            let subjects = format!("{}.>", sources.stream);
            if let Ok(m) = stream
                .direct_get_next_for_subject(subjects, Some(first_waiting))
                .await
            {
                let at = m.time.unix_timestamp_nanos() as f64 / 1e9;
                let now = Utc::now().timestamp_nanos_opt().unwrap_or_default() as f64 / 1e9;
                out.oldest_waiting_seconds = Some((now - at).max(0.0));
            }
        }
        let mut waiting = Vec::new();
        for entity in RootEntity::ALL {
            waiting.push((
                *entity,
                count_from(&stream, sources.stream, *entity, first_waiting).await?,
            ));
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(waiting)
    }
    .await;
    match result {
        Ok(waiting) => (out, Some(waiting)),
        Err(e) => {
            out.error = Some(e.to_string());
            (out, None)
        }
    }
}

/// Messages of `entity` from stream sequence `start` on: the pending count of a short-lived
/// consumer filtered to the entity's subjects, as JetStream answers its creation (counted from
/// its subject index). Nothing pulls from it, so it delivers nothing; it expires by itself
/// after a few seconds, so a reader needs no right to delete consumers.
async fn count_from(
    stream: &jetstream::stream::Stream,
    stream_name: &str,
    entity: RootEntity,
    start: u64,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let name = format!(
        "console-{}-{}",
        entity.snake_name(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            name: Some(name),
            filter_subject: format!("{stream_name}.{}.>", entity.snake_name()),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(5),
            memory_storage: true,
            ..Default::default()
        })
        .await?;
    Ok(consumer.cached_info().num_pending)
}
