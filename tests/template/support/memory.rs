//! Worker memory under large messages: preloads a fresh stream with N orders whose comment is
//! K KiB, runs the worker binary at its default settings until every message is committed, and
//! samples its peak RSS (`VmHWM`). Shared by `tests/template/binaries.rs` and `benches/worker_memory.rs`.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one drain measured.
pub(crate) struct DrainMemory {
    /// Messages committed.
    pub messages: u64,
    /// Payload bytes published.
    pub payload_bytes: u64,
    /// Peak resident memory of the worker process.
    pub peak_rss: u64,
    /// From worker start to the last commit.
    pub elapsed: Duration,
}

/// Peak resident memory of a process in bytes (`VmHWM`).
pub(crate) fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Drains `messages` orders of about `kib` KiB each through `worker_bin`, with `env` added to
/// its (otherwise default) settings.
pub(crate) async fn drain(
    worker_bin: &str,
    nats_url: &str,
    pg_admin_url: &str,
    messages: u64,
    kib: usize,
    env: &[(&str, &str)],
) -> Result<DrainMemory, String> {
    let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let (stream, db) = (format!("WM_{id}"), format!("nomnom_mem_{id}"));
    let (admin, conn) =
        tokio_postgres::connect(&format!("{pg_admin_url}/postgres"), tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let nats = nomnom::nats::NatsConfig {
        url: nats_url.to_string(),
        stream: stream.clone(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        auth: Default::default(),
        limits: Default::default(),
    };
    let js = nomnom::nats::connect(&nats)
        .await
        .map_err(|e| e.to_string())?;
    nomnom::nats::ensure_stream(&js, &nats)
        .await
        .map_err(|e| e.to_string())?;
    let comment = "x".repeat(kib * 1024);
    let mut payload_bytes = 0u64;
    let mut acks = Vec::new();
    for n in 0..messages {
        let mut order = super::sample::tpch_order(n, 4);
        order["comment"] = serde_json::Value::String(comment.clone());
        let message_id = uuid::Uuid::new_v4();
        let envelope =
            nomnom::envelope::MessageEnvelope::new(message_id, "Order", order.to_string());
        payload_bytes += envelope.body.len() as u64;
        let subject = nomnom::nats::message_subject(&stream, "order", &message_id);
        acks.push(
            js.send_publish(subject, envelope.to_publish(false))
                .await
                .map_err(|e| e.to_string())?,
        );
        if acks.len() >= 64 {
            for ack in acks.drain(..) {
                ack.await.map_err(|e| e.to_string())?;
            }
        }
    }
    for ack in acks {
        ack.await.map_err(|e| e.to_string())?;
    }
    let url = format!("{pg_admin_url}/{db}");
    let started = Instant::now();
    // Shared with a bench, which has no test helpers: never a developer's `.env`, by hand.
    let mut worker = Command::new(worker_bin)
        .env(nomnom::process::ENV_FILE_VAR, "none")
        .env("NATS_URL", nats_url)
        .env("NATS_STREAM", &stream)
        .env("NATS_CONSUMER", format!("c_{id}"))
        .env("DATABASE_URL", &url)
        .env("WORKER_METRICS_PORT", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut peak = 0;
    let mut done = 0i64;
    // The worker creates the database; connect once it is there.
    let mut counter: Option<tokio_postgres::Client> = None;
    let result = loop {
        peak = peak.max(peak_rss(worker.id()));
        if done >= messages as i64 {
            break Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            break Err(format!("only {done} of {messages} committed after 600 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if counter.is_none()
            && let Ok((client, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await
        {
            tokio::spawn(conn);
            counter = Some(client);
        }
        if let Some(client) = &counter {
            match client
                .query_one("SELECT count(*) FROM message_status", &[])
                .await
            {
                Ok(row) => done = row.get::<_, i64>(0),
                // The table may not exist yet, or the connection dropped: try again.
                Err(_) if client.is_closed() => counter = None,
                Err(_) => {}
            }
        }
    };
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    let _ = js.delete_stream(&stream).await;
    let _ = js
        .delete_stream(nomnom::worker::dead_letter::dlq_stream_name(&stream))
        .await;
    drop(counter);
    let _ = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await;
    Ok(DrainMemory {
        messages,
        payload_bytes,
        peak_rss: peak,
        elapsed: result?,
    })
}
