//! What the message layout costs nats-server: one subject per message (`<stream>.order.<id>`,
//! what `/ingest/status` looks pending messages up by) against one subject per entity, with and
//! without the envelope headers, in a work-queue stream (each ack removes its message) and in a
//! limits stream trimmed below the consumer's ack floor once a second (as the worker does). For
//! every variant: publish `--orders` messages (the TPC-H sample body, 256 in flight, awaiting
//! every ack), then consume them as the worker does (pull 500, ack each), and print nats-server
//! CPU microseconds per message for both phases (read from /proc, so run it on an otherwise idle
//! machine).
//!
//! ```sh
//! cargo bench --bench nats_layout -- --orders 50000
//! ```

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use nomnom::envelope::MessageEnvelope;

/// CPU ticks (user + system) of the local nats-server.
fn nats_ticks() -> Option<u64> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "nats-server" {
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline).contains("4222") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // Fields after the parenthesised command name: utime is the 14th field overall.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        return Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?);
    }
    None
}

/// Microseconds of one clock tick (USER_HZ is 100 on Linux).
const TICK_US: f64 = 10_000.0;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = common::BenchArgs::parse(0)?;
    let client = async_nats::connect(&args.nats_url).await?;
    let js = jetstream::new(client);
    let body = common::sample::tpch_order(1, 4).to_string();
    println!(
        "{} messages of {} bytes per variant; nats-server CPU µs per message",
        args.orders,
        body.len()
    );
    println!("| subjects | envelope headers | retention | publish | consume + ack | total |");
    println!("|---|---|---|---|---|---|");
    for (per_message, headers, trimmed) in [
        (true, true, false),
        (true, false, false),
        (false, true, false),
        (false, false, false),
        (true, false, true),
        (false, false, true),
    ] {
        let name = format!("LAYOUT{}", uuid::Uuid::new_v4().simple());
        let stream = js
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                storage: stream::StorageType::File,
                retention: if trimmed {
                    stream::RetentionPolicy::Limits
                } else {
                    stream::RetentionPolicy::WorkQueue
                },
                allow_direct: true,
                ..Default::default()
            })
            .await?;
        let t0 = nats_ticks().ok_or("no nats-server listening on 4222 found in /proc")?;
        let started = Instant::now();
        let mut inflight = FuturesUnordered::new();
        for _ in 0..args.orders {
            let envelope = MessageEnvelope::new(uuid::Uuid::now_v7(), "Order", body.clone());
            let subject = if per_message {
                nomnom::nats::message_subject(&name, "order", &envelope.message_id)
            } else {
                format!("{name}.order")
            };
            let publish = if headers {
                envelope.to_publish(false)
            } else {
                jetstream::message::PublishMessage::build().payload(envelope.body.clone())
            };
            inflight.push(js.send_publish(subject, publish).await?.into_future());
            if inflight.len() >= args.window
                && let Some(ack) = inflight.next().await
            {
                ack?;
            }
        }
        while let Some(ack) = inflight.next().await {
            ack?;
        }
        let publish_s = started.elapsed().as_secs_f64();
        let t1 = nats_ticks().unwrap_or(t0);
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("layout".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                filter_subject: format!("{name}.>"),
                ..Default::default()
            })
            .await?;
        let mut left = args.orders;
        // The worker trims once a second.
        let mut last_trim = Instant::now();
        while left > 0 {
            let mut batch = consumer
                .batch()
                .max_messages(500)
                .expires(Duration::from_secs(1))
                .messages()
                .await?;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| e.to_string())?;
                m.ack().await.map_err(|e| e.to_string())?;
                left = left.saturating_sub(1);
            }
            if trimmed && last_trim.elapsed() >= Duration::from_secs(1) {
                let info = consumer.get_info().await?;
                nomnom::worker::trim_acknowledged(&stream, &info, 1).await?;
                last_trim = Instant::now();
            }
        }
        // Acks are fire-and-forget: wait until the stream has removed every message.
        while stream.get_info().await?.state.messages > 0 {
            if trimmed {
                let info = consumer.get_info().await?;
                nomnom::worker::trim_acknowledged(&stream, &info, 1).await?;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t2 = nats_ticks().unwrap_or(t1);
        let per = |ticks: u64| ticks as f64 * TICK_US / args.orders as f64;
        println!(
            "| {} | {} | {} | {:.1} ({:.0} msg/s) | {:.1} | {:.1} |",
            if per_message {
                "per message"
            } else {
                "per entity"
            },
            if headers { "yes" } else { "no" },
            if trimmed {
                "limits, trimmed"
            } else {
                "work queue"
            },
            per(t1 - t0),
            args.orders as f64 / publish_s,
            per(t2 - t1),
            per(t2 - t0)
        );
        js.delete_stream(&name).await?;
    }
    Ok(())
}
