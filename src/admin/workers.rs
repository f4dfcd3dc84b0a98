//! The workers alive: each worker puts a short report under its own key of a JetStream
//! key-value bucket (`<stream>_WORKERS`) every [`REPORT_EVERY`]; entries older than
//! [`REPORT_TTL`] expire, so the bucket holds exactly the workers that reported lately, whatever
//! replica or machine they run on. The console lists them.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How often a worker reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long a report lasts: a worker silent this long is no longer listed.
pub const REPORT_TTL: Duration = Duration::from_secs(20);
/// Reports read at most (a bucket of more workers lists the first ones).
pub const MAX_LISTED: usize = 256;

/// The bucket of a stream's workers: `<stream>_WORKERS`.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_WORKERS")
}

/// One worker's report of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The key: host name, process id and a random part.
    pub id: String,
    /// The host (a pod's name in Kubernetes).
    pub host: String,
    /// The binary's version.
    pub version: String,
    /// The durable consumer it pulls from.
    pub consumer: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it reported.
    pub at: DateTime<Utc>,
    /// Whether it can write to the database now.
    pub database_up: bool,
    /// How long the database has been down, as it sees it.
    pub database_down_seconds: Option<u64>,
    /// Messages it committed since it started.
    pub committed: u64,
    /// Messages it dead-lettered since it started.
    pub dead_lettered: u64,
}

/// Why the roster could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("the workers' bucket {bucket}: {reason}")]
pub struct RosterError {
    bucket: String,
    reason: String,
}

/// Opens the bucket, creating it if missing (as the idempotency bucket: a stream made here,
/// since `create_key_value` first reads the account's info, which nats-server 2.9 refuses).
pub async fn open(js: &jetstream::Context, stream: &str) -> Result<kv::Store, RosterError> {
    let name = bucket_name(stream);
    let err = |e: &dyn std::fmt::Display| RosterError {
        bucket: name.clone(),
        reason: e.to_string(),
    };
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{name}"),
        description: Some("the workers alive, each reporting itself (nomnom worker)".into()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age: REPORT_TTL,
        storage: jetstream::stream::StorageType::Memory,
        allow_rollup: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::Old,
        ..Default::default()
    };
    crate::nats::get_or_create_stream(js, config)
        .await
        .map_err(|e| err(&e))?;
    js.get_key_value(&name).await.map_err(|e| err(&e))
}

/// Puts a worker's report under its id.
pub async fn report(bucket: &kv::Store, report: &WorkerReport) -> Result<(), RosterError> {
    let value = serde_json::to_vec(report).unwrap_or_default();
    bucket
        .put(&report.id, value.into())
        .await
        .map(drop)
        .map_err(|e| RosterError {
            bucket: bucket.name.clone(),
            reason: e.to_string(),
        })
}

/// The workers that reported within [`REPORT_TTL`], by id: the latest report under each key,
/// read with direct gets (one per worker; no consumer, so a reader needs no right to create
/// one). No bucket yet: no worker has reported.
pub async fn alive(
    js: &jetstream::Context,
    stream: &str,
) -> Result<Vec<WorkerReport>, RosterError> {
    let name = bucket_name(stream);
    let err = |e: &dyn std::fmt::Display| RosterError {
        bucket: name.clone(),
        reason: e.to_string(),
    };
    let bucket_stream = match js.get_stream(format!("KV_{name}")).await {
        Ok(s) => s,
        Err(e) => {
            return match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(Vec::new())
                }
                _ => Err(err(&e)),
            };
        }
    };
    let subjects = format!("$KV.{name}.>");
    let mut out = Vec::new();
    let mut next = 1u64;
    while out.len() < MAX_LISTED {
        let message = match bucket_stream
            .direct_get_next_for_subject(subjects.clone(), Some(next))
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(err(&e)),
        };
        next = message.sequence + 1;
        // A worker that stopped deleted its key: the marker is the subject's last message.
        if message.headers.get("KV-Operation").is_some() {
            continue;
        }
        // A report this version cannot read (another version's) is skipped, not fatal.
        if let Ok(report) = serde_json::from_slice::<WorkerReport>(&message.payload) {
            out.push(report);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// A worker id: the host name, the process id and a random part (a restarted process in the
/// same pod is a new worker).
pub fn worker_id(host: &str) -> String {
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{clean}-{}-{}", std::process::id(), &random[..8])
}

/// This machine's host name (`HOSTNAME`, or `/etc/hostname`), or `unknown`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_ids_are_valid_keys_and_differ_per_process_start() {
        let id = worker_id("pod.example/7 ü");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{id}"
        );
        assert!(id.starts_with("pod_example_7__-"), "{id}");
        assert_ne!(worker_id("a"), worker_id("a"));
    }
}
