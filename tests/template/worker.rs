//! The worker's guarantees on the real services: poison isolation, transient faults with retry,
//! data errors dead-lettered at once, replay, exactly-once effect under redelivery, status lookups.

use crate::support::PublishDirect;
use crate::{common, support};
use std::time::Duration;

use common::Pipeline;
use nomnom::envelope::MessageEnvelope;
use serde_json::json;
use support::order as tpch_order;

fn envelope(id: uuid::Uuid, body: &serde_json::Value) -> MessageEnvelope {
    MessageEnvelope::new(id, "Order", body.to_string())
}

/// Makes the test database refuse connections and drops the open ones: a database outage
/// scoped to this test.
async fn block_db(p: &Pipeline) {
    let admin = common::pg(&format!("{}/test", common::pg_admin_url())).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}'",
            p.db.name
        ))
        .await
        .expect("block database");
}

async fn unblock_db(p: &Pipeline) {
    let admin = common::pg(&format!("{}/test", common::pg_admin_url())).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            p.db.name
        ))
        .await
        .expect("unblock database");
}

/// Every message was acked and the worker has trimmed them: the stream is empty.
async fn assert_stream_drains(p: &Pipeline) {
    let mut stream = p.jetstream.get_stream(&p.stream).await.expect("stream");
    for _ in 0..100 {
        if stream.info().await.expect("info").state.messages == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stream.info().await.expect("info").state.messages, 0);
}

/// The state of a stream as the server has it now.
async fn stream_state(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> async_nats::jetstream::stream::State {
    let stream = js.get_stream(name).await.expect("stream");
    stream.cached_info().state.clone()
}

/// The trim follows the consumer's ack floor: a message still held keeps itself and everything
/// after it in the stream, acked or not; once it is acked, one trim removes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trim_removes_only_what_the_consumer_has_finished() {
    use async_nats::jetstream::{self, consumer::pull};
    use futures::StreamExt;
    let name = format!("TRIM{}", uuid::Uuid::new_v4().simple());
    let config = nomnom::nats::NatsConfig {
        url: common::nats_url(),
        stream: name.clone(),
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
        auth: Default::default(),
        limits: Default::default(),
    };
    let js = nomnom::nats::connect(&config).await.expect("nats");
    let stream = nomnom::nats::ensure_stream(&js, &config)
        .await
        .expect("stream");
    assert_eq!(
        stream.cached_info().config.retention,
        jetstream::stream::RetentionPolicy::Limits,
        "new streams are trimmed by the worker, not emptied per ack"
    );
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("trim".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer");
    for n in 0..6 {
        js.publish(format!("{name}.order.m{n}"), format!("{n}").into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let mut fetched = consumer
        .fetch()
        .max_messages(6)
        .messages()
        .await
        .expect("fetch");
    let mut held = Vec::new();
    while let Some(m) = fetched.next().await {
        held.push(m.expect("message"));
    }
    assert_eq!(held.len(), 6);
    // Sequences 1 and 2 finished, 3 still held, 4 to 6 finished.
    for m in held
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, m)| m)
    {
        m.double_ack().await.expect("ack");
    }
    let info = consumer.get_info().await.expect("info");
    assert_eq!(info.ack_floor.stream_sequence, 2);
    let kept = nomnom::worker::trim_acknowledged(&stream, &info, 1)
        .await
        .expect("trim");
    assert_eq!(kept, 3);
    let state = stream_state(&js, &name).await;
    assert_eq!(
        (state.first_sequence, state.messages),
        (3, 4),
        "3 and what follows it stay"
    );
    // Nothing new finished: no purge is sent.
    assert_eq!(
        nomnom::worker::trim_acknowledged(&stream, &info, kept)
            .await
            .unwrap(),
        3
    );
    held[2].double_ack().await.expect("ack");
    let info = consumer.get_info().await.expect("info");
    assert_eq!(info.ack_floor.stream_sequence, 6);
    assert_eq!(
        nomnom::worker::trim_acknowledged(&stream, &info, kept)
            .await
            .unwrap(),
        7
    );
    let state = stream_state(&js, &name).await;
    assert_eq!(state.messages, 0);
    js.delete_stream(&name).await.expect("delete");
}

/// A rule an operator added to the orders table: the api cannot know it, only the database does.
async fn refuse_poison_clerks(p: &Pipeline) {
    p.db.client()
        .await
        .batch_execute(
            "ALTER TABLE orders ADD CONSTRAINT no_test_clerk CHECK (clerk <> 'Clerk#poison')",
        )
        .await
        .expect("constraint");
}

/// Orders 1 to 6 (two line items each); the fourth breaks [`refuse_poison_clerks`]'s rule.
fn orders_with_poison_fourth() -> Vec<serde_json::Value> {
    (1..=6u32)
        .map(|n| {
            let mut order = tpch_order(n, 2);
            if n == 4 {
                order["clerk"] = json!("Clerk#poison");
            }
            order
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_error_dead_letters_only_the_offending_message() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    refuse_poison_clerks(&p).await;
    // Queue everything first, so the worker takes it as one batch.
    for order in orders_with_poison_fourth() {
        p.publish(&envelope(uuid::Uuid::new_v4(), &order)).await;
    }
    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM message_status", 6).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 5);
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, 10);
    let reason = p.db.rows("SELECT reason FROM dead_letters").await;
    let reason = reason[0][0].clone().unwrap_or_default();
    assert!(reason.contains("no_test_clerk"), "{reason}");
    assert_eq!(
        p.db.count("SELECT 1 FROM orders WHERE order_key = 'ORD-000004'")
            .await,
        0
    );
    p.stop().await;
}

/// A group's members are stored one by one: each has its own status row, a member the database
/// refuses and one that does not parse are dead-lettered alone with their own bodies, and the
/// group leaves the stream once every member has an outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_stored_member_by_member() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    refuse_poison_clerks(&p).await;
    // Pretty-printed: a member's body may hold newlines and spaces.
    let mut bodies: Vec<bytes::Bytes> = orders_with_poison_fourth()
        .iter()
        .map(|order| serde_json::to_string_pretty(order).expect("json").into())
        .collect();
    bodies.push(bytes::Bytes::from_static(b"{\"order_key\": 7}"));
    let ids = p.publish_group(bodies.clone()).await;
    // A second group after it: the stream keeps their order.
    let later = p
        .publish_group(vec![tpch_order(8, 1).to_string().into()])
        .await;
    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM message_status", 8).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 2).await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 6);
    for (i, id) in ids.iter().chain(&later).enumerate() {
        let want = match i {
            3 | 6 => "dead_lettered",
            _ => "processed",
        };
        let status =
            p.db.rows(&format!(
                "SELECT status FROM message_status WHERE message_id = '{id}'"
            ))
            .await;
        assert_eq!(status, vec![vec![Some(want.to_string())]], "member {i}");
    }
    for i in [3usize, 6] {
        let dead =
            p.db.rows(&format!(
                "SELECT convert_from(body, 'UTF8'), reason FROM dead_letters WHERE message_id = '{}'",
                ids[i]
            ))
            .await;
        let body = dead[0][0].clone().unwrap_or_default();
        assert_eq!(body.as_bytes(), &bodies[i][..], "member {i}'s own body");
        let reason = dead[0][1].clone().unwrap_or_default();
        let expected = if i == 3 { "no_test_clerk" } else { "missing" };
        assert!(reason.contains(expected), "member {i}: {reason}");
    }
    assert_stream_drains(&p).await;
    p.stop().await;
}

/// Concurrent requests share JetStream messages, and every member is found in the stream
/// (`pending`) until a worker stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_groups_and_each_member_is_pending_until_stored() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    const N: u32 = 60;
    let bodies: Vec<String> = (1..=N).map(|n| tpch_order(n, 1).to_string()).collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|b| p.post("/ingest/message/order", b))).await;
    let mut ids = Vec::new();
    for (status, answer) in answers {
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["message_id"].as_str().expect("id").to_string());
    }
    let stored = stream_state(&p.jetstream, &p.stream).await.messages;
    assert!(
        stored < u64::from(N),
        "{N} concurrent requests took {stored} JetStream messages"
    );
    // The metric counts the publishes and the messages they carried.
    let metrics = reqwest::get(format!("{}/metrics", p.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(
        sample("nomnom_publish_group_messages_count "),
        stored as f64
    );
    assert_eq!(sample("nomnom_publish_group_messages_sum "), f64::from(N));
    for id in &ids {
        let (code, body) = p.get(&format!("/ingest/status/{id}")).await;
        assert_eq!((code, &body["status"]), (200, &json!("pending")), "{body}");
    }
    // An id next to a member's, in no group: not found.
    let mut unknown = uuid::Uuid::parse_str(&ids[0]).expect("uuid").into_bytes();
    unknown[15] = 255;
    let (code, body) = p
        .get(&format!(
            "/ingest/status/{}",
            uuid::Uuid::from_bytes(unknown)
        ))
        .await;
    assert_eq!(code, 404, "{body}");
    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM message_status", i64::from(N))
        .await;
    for id in &ids {
        let (code, body) = p.get(&format!("/ingest/status/{id}")).await;
        assert_eq!(
            (code, &body["status"]),
            (200, &json!("processed")),
            "{body}"
        );
    }
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, i64::from(N));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_retried_and_everything_lands() {
    // Default settings: an outage spends no delivery, whatever MAX_DELIVER is.
    let p = Pipeline::start().await;
    block_db(&p).await;
    for n in 1..=20u32 {
        let (status, _) = p
            .post("/ingest/message/order", &tpch_order(n, 3).to_string())
            .await;
        assert_eq!(
            status, 202,
            "the api keeps accepting while PostgreSQL is down"
        );
    }
    // FAULT_PG_OUTAGE_SECS (scripts/faults.sh: 20) — 3 s in the default test run.
    let outage = std::env::var("FAULT_PG_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    tokio::time::sleep(Duration::from_secs(outage)).await;
    unblock_db(&p).await;
    p.db.wait_count(
        "SELECT 1 FROM message_status WHERE status = 'processed'",
        20,
    )
    .await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 20);
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, 60);
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_replayed_once_the_cause_is_fixed() {
    let p = Pipeline::start().await;
    p.db.client()
        .await
        .batch_execute("ALTER TABLE orders ADD CONSTRAINT no_clerk_7 CHECK (clerk <> 'Clerk#7')")
        .await
        .expect("constraint");
    let mut order = tpch_order(1, 2);
    order["clerk"] = json!("Clerk#7");
    let (status, answer) = p.post("/ingest/message/order", &order.to_string()).await;
    assert_eq!(status, 202);
    let id = answer["message_id"].as_str().expect("id").to_string();
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    let rows =
        p.db.rows("SELECT message_id::text, attempts::text, reason FROM dead_letters")
            .await;
    assert_eq!(rows[0][0].as_deref(), Some(id.as_str()));
    assert_eq!(
        rows[0][1].as_deref(),
        Some("1"),
        "a data error is final at once"
    );
    let reason = rows[0][2].clone().unwrap_or_default();
    assert!(
        reason.contains("SQLSTATE 23514") && reason.contains("no_clerk_7"),
        "{reason}"
    );
    let (_, status) = p.get(&format!("/ingest/status/{id}")).await;
    assert_eq!(status["status"], "dead_lettered");

    p.db.client()
        .await
        .batch_execute("ALTER TABLE orders DROP CONSTRAINT no_clerk_7")
        .await
        .expect("drop constraint");
    let store = nomnom::store::pg::PgStore::open(&p.db.url, 1).expect("store");
    let filter = nomnom::store::DeadLetterFilter {
        entity: Some("order".into()),
        ..Default::default()
    };
    let publisher = nomnom::nats::JetStreamPublisher::new(p.jetstream.clone());
    let report = nomnom::admin::replay(&publisher, &p.stream, &store, &filter)
        .await
        .expect("replay");
    assert_eq!(report.replayed.len(), 1);
    p.db.wait_count("SELECT 1 FROM message_status WHERE status = 'processed'", 1)
        .await;
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 0);
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, 2);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_has_exactly_once_effect() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    let same = uuid::Uuid::new_v4();
    let body = tpch_order(3, 4);
    // The same message twice in one batch (a redelivery racing the first delivery)...
    p.publish(&envelope(same, &body)).await;
    p.publish(&envelope(same, &body)).await;
    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM message_status", 1).await;
    // ...and again after it was committed (a worker killed between commit and ack).
    p.publish(&envelope(same, &body)).await;
    let other = uuid::Uuid::new_v4();
    p.publish(&envelope(other, &tpch_order(4, 1))).await;
    p.db.wait_count("SELECT 1 FROM message_status", 2).await;
    assert_stream_drains(&p).await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 2);
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, 5);
    assert_eq!(
        p.db.rows(&format!(
            "SELECT row_count::text FROM message_status WHERE message_id = '{same}'"
        ))
        .await,
        vec![vec![Some("5".to_string())]]
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_of_an_entity_without_unicity_fields_adds_no_rows() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    let event = json!({
        "order_key": "ORD-000001", "event_type": "shipped",
        "occurred_at": "2026-01-02T03:04:05Z", "note": null
    });
    let same = uuid::Uuid::new_v4();
    let payload = MessageEnvelope::new(same, "OrderEvent", event.to_string());
    // Twice in one batch, then once more after the commit: one row.
    p.publish(&payload).await;
    p.publish(&payload).await;
    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM message_status", 1).await;
    p.publish(&payload).await;
    // A different message with the same content is a new event: a second row.
    let other = MessageEnvelope::new(uuid::Uuid::new_v4(), "OrderEvent", event.to_string());
    p.publish(&other).await;
    p.db.wait_count("SELECT 1 FROM message_status", 2).await;
    assert_stream_drains(&p).await;
    assert_eq!(
        p.db.rows(
            "SELECT order_key, event_type, (occurred_at AT TIME ZONE 'UTC')::text FROM order_events"
        )
        .await,
        vec![
            vec![
                Some("ORD-000001".into()),
                Some("shipped".into()),
                Some("2026-01-02 03:04:05".into())
            ];
            2
        ]
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_pending_then_processed_and_errors_are_clear() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    let (status, answer) = p
        .post("/ingest/message/order", &tpch_order(8, 2).to_string())
        .await;
    assert_eq!(status, 202);
    let id = answer["message_id"].as_str().expect("id").to_string();
    let (code, body) = p.get(&format!("/ingest/status/{id}")).await;
    assert_eq!(
        (code, body["status"].clone()),
        (200, json!("pending")),
        "{body}"
    );
    assert_eq!(body["entity"], "Order");

    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM message_status", 1).await;
    let (code, body) = p.get(&format!("/ingest/status/{id}")).await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "processed");
    assert_eq!(body["row_count"], 3);
    assert!(body["processed_at"].is_string());

    let (code, body) = p
        .get(&format!("/ingest/status/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = p.get("/ingest/status/not-a-uuid").await;
    assert_eq!(code, 400);
    assert_eq!(body["error"], "`not-a-uuid` is not a message id (UUID)");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_consumer_without_duplicates() {
    let mut p = Pipeline::paused_with(|c| c.batch_size = 10).await;
    for n in 1..=200u32 {
        p.publish(&envelope(uuid::Uuid::new_v4(), &tpch_order(n, 1 + n % 7)))
            .await;
    }
    p.start_worker().await;
    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM message_status", 200).await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 200);
    let expected_lines: u32 = (1..=200u32).map(|n| 1 + n % 7).sum();
    assert_eq!(
        p.db.count("SELECT 1 FROM order_line_items").await,
        i64::from(expected_lines)
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_is_transient_and_the_batch_commits_on_retry() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    // The first insert into orders sleeps on the server (a sequence is not rolled back, so only
    // the first attempt sleeps), long enough to terminate its backend mid-write.
    p.db.client()
        .await
        .batch_execute(
            "CREATE SEQUENCE slow_once; \
             CREATE FUNCTION slow_first() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN IF nextval('slow_once') = 1 THEN PERFORM pg_sleep(60); END IF; RETURN NEW; END $$; \
             CREATE TRIGGER slow_first BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION slow_first()",
        )
        .await
        .expect("trigger");
    for n in 1..=3u32 {
        p.publish(&envelope(uuid::Uuid::new_v4(), &tpch_order(n, 2)))
            .await;
    }
    let metrics = p.start_worker().await;
    let pid = p.db.sleeping_backend().await;
    p.db.terminate_backend(pid).await;
    p.db.wait_count("SELECT 1 FROM message_status WHERE status = 'processed'", 3)
        .await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 3);
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 0);
    // 57P01 admin_shutdown, read off the wire, classified transient; the database answered
    // the probe that followed, so no outage was declared (the other slots kept pulling).
    assert_eq!(metrics.db_errors.with_label_values(&["57"]).get(), 1);
    assert_eq!(metrics.database_outages.get(), 0);
    assert_eq!(metrics.database_up.get(), 1);
    assert_stream_drains(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_is_contained_and_its_messages_redelivered() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    let marked = uuid::Uuid::new_v4();
    p.publish(&envelope(marked, &tpch_order(1, 2))).await;
    p.publish(&envelope(uuid::Uuid::new_v4(), &tpch_order(2, 2)))
        .await;
    let metrics = p
        .start_worker_with(|w| {
            w.set_fault_hook(std::sync::Arc::new(move |batch| {
                if batch
                    .iter()
                    .any(|(id, delivered)| *id == marked && *delivered == 1)
                {
                    panic!("injected fault");
                }
            }))
        })
        .await;
    p.db.wait_count("SELECT 1 FROM message_status WHERE status = 'processed'", 2)
        .await;
    assert_eq!(metrics.panicked_batches.get(), 1);
    assert_eq!(
        metrics.progress_tasks.get(),
        0,
        "the panicked batch's progress acks stopped"
    );
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 0);
    assert_stream_drains(&p).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_entity_names_add_no_worker_metric_series() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    let metrics = p.start_worker().await;
    let publish = |n: usize| {
        let p = &p;
        async move {
            for _ in 0..n {
                let body = format!(
                    r#"{{"message_id":"{}","entity":"E{}","received_at":"2026-01-01T00:00:00Z","body":{{}}}}"#,
                    uuid::Uuid::new_v4(),
                    common::unique()
                );
                p.publish_raw(body.into_bytes()).await;
            }
        }
    };
    let samples = |m: &nomnom::worker::WorkerMetrics| {
        m.render().lines().filter(|l| !l.starts_with('#')).count()
    };
    publish(3).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 3).await;
    let before = samples(&metrics);
    publish(1000).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 1003).await;
    assert_eq!(samples(&metrics), before, "{}", metrics.render());
    assert_eq!(
        metrics
            .dead_lettered
            .with_label_values(&["unknown", "unknown_entity"])
            .get(),
        1003
    );
    p.stop().await;
}

/// The default byte budget per pull (8 MiB) grows to the NATS server's `max_payload` where that
/// is larger, so the largest message the server takes is still delivered; a budget the operator
/// set below it is refused at start with the size it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_pull_budget_follows_a_larger_max_payload() {
    use support::servers::{free_port, nats_with_config};
    let port = free_port();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-nats")
        .join(format!("max-payload-{}", common::unique()));
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\nmax_payload: 16MB\njetstream {{ store_dir: \"{}\" }}\n",
        dir.join("js").display()
    );
    let nats = nats_with_config(&dir, port, &config);
    let url = format!("nats://127.0.0.1:{port}");
    let mut p = Pipeline::paused_with(|c| c.nats.url = url.clone()).await;
    assert_eq!(
        p.worker_config.max_batch_bytes,
        nomnom::worker::DEFAULT_WORKER_MAX_BATCH_BYTES
    );
    let mut chosen = p.worker_config.clone();
    chosen.max_batch_bytes = 9 << 20;
    let refused = nomnom::worker::Worker::connect(chosen)
        .await
        .err()
        .expect("a budget below max_payload is refused")
        .to_string();
    assert!(
        refused.contains("WORKER_MAX_BATCH_BYTES=9437184")
            && refused.contains(&format!("use at least {}", (16 << 20) + 4096)),
        "{refused}"
    );
    // 12 MiB: more than the default budget, less than the server's max_payload.
    let mut order = tpch_order(1, 2);
    order["comment"] = json!("x".repeat(12 << 20));
    p.publish(&MessageEnvelope::new(
        uuid::Uuid::new_v4(),
        "Order",
        order.to_string(),
    ))
    .await;
    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM orders WHERE length(comment) = 12582912", 1)
        .await;
    p.stop().await;
    drop(nats);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker over a store it is given (`Worker::connect_with`): here an in-memory one, so the
/// worker's whole path (pull, parse, write, status, ack) runs against the [`Store`] seam alone.
/// The worker prepares the store; a redelivered message is recognised by it.
///
/// [`Store`]: nomnom::store::Store
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_over_a_store_it_is_given() {
    let p = Pipeline::paused_with(|_| {}).await;
    let store = std::sync::Arc::new(crate::support::store::MemoryStore::default());
    let worker = nomnom::worker::Worker::connect_with(p.worker_config.clone(), store.clone())
        .await
        .expect("worker connects");
    assert!(store.prepared(), "the worker prepares its store");
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop).await }
    });
    let mut ids = Vec::new();
    for key in 1..=3 {
        let (status, body) = p
            .post("/ingest/message/order", &tpch_order(key, 2).to_string())
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(uuid::Uuid::parse_str(body["message_id"].as_str().expect("id")).expect("uuid"));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.processed() < ids.len() {
        assert!(std::time::Instant::now() < deadline, "not stored in 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for id in &ids {
        let status = store.status(*id).expect("a status row");
        // The root row and two line items.
        assert_eq!((status.status.as_str(), status.row_count), ("processed", 3));
    }
    stop.cancel();
    running.await.expect("joined").expect("clean stop");
    assert_eq!(
        p.db.count("SELECT 1 FROM orders").await,
        0,
        "nothing went to PostgreSQL"
    );
    p.stop().await;
}
