//! Guarantees at the edges, on the real NATS and PostgreSQL: the newest version of a key wins
//! through replays and re-created streams, a bad message is isolated (never an outage), and a
//! dead letter is never lost.

use crate::support::PublishDirect;
use crate::{common, support};
use std::time::Duration;

use common::Pipeline;
use nomnom::admin::{ReplayReport, replay};
use nomnom::store::DeadLetterFilter as ReplayFilter;
use serde_json::json;
use support::order as tpch_order;
use tokio_util::sync::CancellationToken;

/// The order `RK` with `total_price` set to `total` (a JSON number as written).
fn order_rk(total: &str) -> String {
    let mut order = tpch_order(77, 1);
    order["order_key"] = json!("RK");
    let mut body = order.to_string();
    let old = format!("\"total_price\":{}", order["total_price"]);
    assert!(body.contains(&old), "{body}");
    body = body.replace(&old, &format!("\"total_price\":{total}"));
    body
}

async fn refuse_big_totals(p: &Pipeline) {
    p.db.client()
        .await
        .batch_execute(
            "ALTER TABLE orders ADD CONSTRAINT small_total CHECK (total_price < 1000000)",
        )
        .await
        .expect("constraint");
}

async fn allow_big_totals(p: &Pipeline) {
    p.db.client()
        .await
        .batch_execute("ALTER TABLE orders DROP CONSTRAINT small_total")
        .await
        .expect("drop constraint");
}

async fn replay_all(p: &Pipeline) -> ReplayReport {
    let store = nomnom::store::pg::PgStore::open(&p.db.url, 1).expect("store");
    replay(
        &nomnom::nats::JetStreamPublisher::new(p.jetstream.clone()),
        &p.stream,
        &store,
        &ReplayFilter::default(),
    )
    .await
    .expect("replay")
}

async fn accepted(p: &Pipeline, body: &str) -> String {
    let (status, answer) = p.post("/ingest/message/order", body).await;
    assert_eq!(status, 202, "{answer}");
    answer["message_id"].as_str().expect("id").to_string()
}

async fn total_of_rk(p: &Pipeline) -> String {
    let rows =
        p.db.rows("SELECT total_price::text FROM orders WHERE order_key = 'RK'")
            .await;
    rows[0][0].clone().expect("a total")
}

fn processed(id: &str) -> String {
    format!("SELECT 1 FROM message_status WHERE message_id = '{id}' AND status = 'processed'")
}

/// The operator's scenario: an old version is dead-lettered, a newer one stored, the cause
/// fixed and the dead letter replayed. The replayed copy is ordered where the original arrived,
/// so the newer version stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_old_version_never_overwrites_a_newer_one() {
    let p = Pipeline::start().await;
    refuse_big_totals(&p).await;
    let old = accepted(&p, &order_rk("5000000")).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    let new = accepted(&p, &order_rk("10.00")).await;
    p.db.wait_count(&processed(&new), 1).await;
    allow_big_totals(&p).await;
    let report = replay_all(&p).await;
    assert_eq!(report.replayed.len(), 1, "{report:?}");
    p.db.wait_count(&processed(&old), 1).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 0).await;
    assert_eq!(total_of_rk(&p).await, "10.00");
    p.stop().await;
}

/// A replay while the cause is still there dead-letters the copies again: the record stays,
/// counting every time (twice within the dead-letter stream's duplicate window), and a replay
/// after the fix stores the message and removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_before_the_fix_keeps_the_dead_letter_and_counts_it() {
    let p = Pipeline::start().await;
    refuse_big_totals(&p).await;
    let id = accepted(&p, &order_rk("5000000")).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    for round in 2..=3 {
        assert_eq!(replay_all(&p).await.replayed.len(), 1);
        p.db.wait_count(
            &format!("SELECT 1 FROM dead_letters WHERE times = {round} AND attempts = {round}"),
            1,
        )
        .await;
    }
    let (_, status) = p.get(&format!("/ingest/status/{id}")).await;
    assert_eq!(status["status"], "dead_lettered", "{status}");
    allow_big_totals(&p).await;
    assert_eq!(replay_all(&p).await.replayed.len(), 1);
    p.db.wait_count(&processed(&id), 1).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 0).await;
    assert_eq!(total_of_rk(&p).await, "5000000");
    let (_, status) = p.get(&format!("/ingest/status/{id}")).await;
    assert_eq!(status["status"], "processed", "{status}");
    p.stop().await;
}

/// A raw message with a NUL byte (any client with publish rights on the stream) is one dead
/// letter with its bytes whole; it is no database outage, and valid orders sent at the same
/// time are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_message_with_a_nul_byte_is_a_dead_letter_not_an_outage() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    let metrics = p.start_worker().await;
    let orders: Vec<String> = (1..=40).map(|n| tpch_order(n, 2).to_string()).collect();
    let posts =
        futures::future::join_all(orders.iter().map(|b| p.post("/ingest/message/order", b)));
    let (answers, ()) = tokio::join!(posts, p.publish_raw(b"a\0b".to_vec()));
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    p.db.wait_count(
        "SELECT 1 FROM message_status WHERE status = 'processed'",
        40,
    )
    .await;
    let dead =
        p.db.rows("SELECT encode(body, 'hex'), reason, entity FROM dead_letters")
            .await;
    assert_eq!(
        dead[0][0].as_deref(),
        Some("610062"),
        "the bytes as published"
    );
    let reason = dead[0][1].clone().unwrap_or_default();
    assert!(reason.contains("unreadable envelope"), "{reason}");
    assert_eq!(metrics.database_outages.get(), 0);
    assert_eq!(metrics.database_up.get(), 1);
    p.stop().await;
}

/// Positions keep increasing across a stream deleted and re-created (its sequence restarts at
/// 1): an update sent after the re-creation still replaces the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_and_re_created_still_applies_newer_updates() {
    let p = Pipeline::paused_with(|_| {}).await;
    let run_worker = || async {
        let worker = nomnom::worker::Worker::connect(p.worker_config.clone())
            .await
            .expect("worker connects");
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker.run(stop.clone()));
        (stop, task)
    };
    // Other orders first, so RK's sequence in the first stream is above 1.
    for n in 1..=5 {
        accepted(&p, &tpch_order(n, 1).to_string()).await;
    }
    let first = accepted(&p, &order_rk("1.00")).await;
    let (stop, task) = run_worker().await;
    p.db.wait_count(&processed(&first), 1).await;
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;

    p.jetstream
        .delete_stream(&p.stream)
        .await
        .expect("delete stream");
    nomnom::nats::ensure_stream(&p.jetstream, &p.worker_config.nats)
        .await
        .expect("stream re-created");
    let second = accepted(&p, &order_rk("2.00")).await;
    let (stop, task) = run_worker().await;
    p.db.wait_count(&processed(&second), 1).await;
    assert_eq!(total_of_rk(&p).await, "2.00");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    p.stop().await;
}

/// A body near the largest the api accepts, full of characters JSON escapes, is dead-lettered
/// whole (the dead letter carries the bytes raw, its metadata in headers, so it fits the
/// server's max_payload as the message did) and, replayed after the fix, stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_near_the_payload_limit_travels_whole_and_replays() {
    let p = Pipeline::start().await;
    p.db.client()
        .await
        .batch_execute(
            "ALTER TABLE orders ADD CONSTRAINT short_comment CHECK (length(comment) < 1000)",
        )
        .await
        .expect("constraint");
    let mut order = tpch_order(5, 1);
    order["order_key"] = json!("BIG");
    order["comment"] = json!("");
    let frame = order.to_string();
    // `\\` and `\"` in JSON: two body bytes for each character stored.
    let limit = 1024 * 1024 - nomnom::worker::dead_letter::DEAD_LETTER_HEADROOM;
    let pairs = (limit - frame.len() - 16) / 2;
    let comment: String = (0..pairs)
        .map(|i| if i % 2 == 0 { "\\\\" } else { "\\\"" })
        .collect();
    let body = frame.replace("\"comment\":\"\"", &format!("\"comment\":\"{comment}\""));
    assert!(
        body.len() > limit - 64 && body.len() <= limit,
        "{}",
        body.len()
    );
    let id = accepted(&p, &body).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    let same: i64 =
        p.db.client()
            .await
            .query_one(
                "SELECT count(*) FROM dead_letters WHERE body = $1",
                &[&body.as_bytes()],
            )
            .await
            .expect("compare")
            .get(0);
    assert_eq!(same, 1, "the dead letter holds the bytes as accepted");
    p.db.client()
        .await
        .batch_execute("ALTER TABLE orders DROP CONSTRAINT short_comment")
        .await
        .expect("drop constraint");
    assert_eq!(replay_all(&p).await.replayed.len(), 1);
    p.db.wait_count(&processed(&id), 1).await;
    let rows =
        p.db.rows("SELECT length(comment)::text FROM orders WHERE order_key = 'BIG'")
            .await;
    assert_eq!(rows[0][0].as_deref(), Some(pairs.to_string().as_str()));
    // One byte more than the api accepts is refused up front.
    let padding = "x".repeat(limit - body.len() + 1);
    let too_big = body.replace("\"comment\":\"", &format!("\"comment\":\"{padding}"));
    let (status, answer) = p.post("/ingest/message/order", &too_big).await;
    assert_eq!(status, 413, "{answer}");
    p.stop().await;
}

/// Posts a valid order every 50 ms until `stop`: the traffic whose commits show the database
/// works while one batch keeps failing.
fn steady_traffic(p: &Pipeline, stop: CancellationToken) -> tokio::task::JoinHandle<u32> {
    let base = p.base.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut n = 1000;
        while !stop.is_cancelled() {
            n += 1;
            let _ = client
                .post(format!("{base}/ingest/message/order"))
                .header("content-type", "application/json")
                .body(tpch_order(n, 1).to_string())
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n - 1000
    })
}

/// A message that makes the database fail with an error of a transient class (here a trigger
/// raising XX000 for one clerk) every time, while other batches commit: it is isolated by
/// bisection and dead-lettered with the error, the others are stored, and no outage is
/// declared (the slots keep pulling).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_fails_every_time_while_others_commit_is_isolated() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    p.db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.clerk = 'Clerk#poison' THEN \
                 RAISE EXCEPTION 'internal trouble with %', NEW.order_key USING ERRCODE = 'XX000'; \
               END IF; RETURN NEW; END $$; \
             CREATE TRIGGER poison BEFORE INSERT OR UPDATE ON orders \
               FOR EACH ROW EXECUTE FUNCTION poison()",
        )
        .await
        .expect("trigger");
    let metrics = p.start_worker().await;
    let stop = CancellationToken::new();
    let traffic = steady_traffic(&p, stop.clone());
    let mut bad = tpch_order(1, 2);
    bad["clerk"] = json!("Clerk#poison");
    let batch: Vec<String> = (2..=30)
        .map(|n| tpch_order(n, 2).to_string())
        .chain([bad.to_string()])
        .collect();
    let answers =
        futures::future::join_all(batch.iter().map(|b| p.post("/ingest/message/order", b))).await;
    assert!(answers.iter().all(|(s, _)| *s == 202), "{answers:?}");
    p.db.wait_at_least(
        "SELECT 1 FROM dead_letters",
        1,
        Duration::from_secs(60),
        "the poison message dead-lettered",
    )
    .await;
    stop.cancel();
    let sent = traffic.await.expect("traffic");
    let dead = p.db.rows("SELECT reason FROM dead_letters").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0][0].clone().unwrap_or_default();
    assert!(
        reason.contains("XX000") && reason.contains("internal trouble"),
        "{reason}"
    );
    p.db.wait_count(
        "SELECT 1 FROM message_status WHERE status = 'processed'",
        29 + i64::from(sent),
    )
    .await;
    assert_eq!(metrics.database_outages.get(), 0);
    p.stop().await;
}

/// A deadlock or serialization failure (here raised twice by a trigger) is a conflict with a
/// concurrent transaction: the batch is retried at once and stored, nothing is dead-lettered
/// and no outage is declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadlock_is_retried_at_once_without_an_outage() {
    let mut p = Pipeline::paused_with(|_| {}).await;
    p.db.client()
        .await
        .batch_execute(
            "CREATE SEQUENCE conflicts; \
             CREATE FUNCTION conflict() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF nextval('conflicts') <= 2 THEN \
                 RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01'; \
               END IF; RETURN NEW; END $$; \
             CREATE TRIGGER conflict BEFORE INSERT ON orders \
               FOR EACH ROW EXECUTE FUNCTION conflict()",
        )
        .await
        .expect("trigger");
    let id = accepted(&p, &tpch_order(3, 2).to_string()).await;
    let metrics = p.start_worker().await;
    p.db.wait_count(&processed(&id), 1).await;
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 0);
    assert_eq!(metrics.database_outages.get(), 0);
    assert_eq!(metrics.db_errors.with_label_values(&["40"]).get(), 2);
    p.stop().await;
}

/// Two line items of one order with the same key (`order_key`, `line_number`) would be one row
/// while the status counted two: the api refuses the message with 422 naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_rows_that_repeat_a_unique_key_are_refused_naming_both() {
    let p = Pipeline::start().await;
    let mut order = tpch_order(8, 3);
    order["line_items"][2]["line_number"] = order["line_items"][0]["line_number"].clone();
    // The api's check (no rows built) and the worker's parse refuse it alike.
    let entity = nomnom::generated::RootEntity::Order;
    let parsed = entity.parse_value(&order).expect_err("parse refuses");
    let doc = nomnom::runtime::doc_from_value(&order);
    assert_eq!(
        entity.validate_json(doc.root()).expect_err("check refuses"),
        parsed
    );
    let (status, answer) = p.post("/ingest/message/order", &order.to_string()).await;
    assert_eq!(status, 422, "{answer}");
    let details = answer["details"].as_array().expect("details");
    assert_eq!(details.len(), 1, "{answer}");
    assert_eq!(details[0]["field"], "line_items[2]", "{answer}");
    let error = details[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("(order_key, line_number)") && error.contains("line_items[0]"),
        "{error}"
    );
    // Distinct keys: accepted, and the status counts the rows written.
    let order = tpch_order(9, 3);
    let id = accepted(&p, &order.to_string()).await;
    p.db.wait_count(&processed(&id), 1).await;
    let rows =
        p.db.rows(&format!(
            "SELECT row_count::text FROM message_status WHERE message_id = '{id}'"
        ))
        .await;
    assert_eq!(rows[0][0].as_deref(), Some("4"));
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, 3);
    p.stop().await;
}

/// An `Idempotency-Key` sent again with the same body is a retry (the same id, a duplicate);
/// with another body inside the deduplication window it is refused with 409 naming the first
/// message, and nothing of the second body is published — for single messages and batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_with_another_body_is_refused_naming_the_first_message() {
    let p = Pipeline::start().await;
    let first = tpch_order(31, 2).to_string();
    let key = [("idempotency-key", "order-31")];
    let (status, answer) = p.post_with("/ingest/message/order", &first, &key).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["message_id"].clone();
    let (status, again) = p.post_with("/ingest/message/order", &first, &key).await;
    assert_eq!(
        (status, &again["message_id"], &again["duplicate"]),
        (202, &id, &json!(true))
    );
    let (status, refused) = p
        .post_with(
            "/ingest/message/order",
            &tpch_order(32, 2).to_string(),
            &key,
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["message_id"], id, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("another body"),
        "{refused}"
    );

    let batch = |from: u32| -> String {
        (from..from + 3)
            .map(|n| format!("{}\n", tpch_order(n, 1)))
            .collect()
    };
    let batch_key = [("idempotency-key", "batch-40")];
    let (status, answer) = p
        .post_with("/ingest/batch/order", &batch(40), &batch_key)
        .await;
    assert_eq!((status, &answer["accepted"]), (202, &json!(3)), "{answer}");
    let (status, answer) = p
        .post_with("/ingest/batch/order", &batch(40), &batch_key)
        .await;
    assert_eq!((status, &answer["accepted"]), (202, &json!(3)), "{answer}");
    let (status, refused) = p
        .post_with("/ingest/batch/order", &batch(50), &batch_key)
        .await;
    assert_eq!(status, 409, "{refused}");
    p.db.wait_count("SELECT 1 FROM message_status", 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 4);
    assert_eq!(
        p.db.count("SELECT 1 FROM orders WHERE order_key IN ('ORD-000032', 'ORD-000050')")
            .await,
        0
    );
    p.stop().await;
}
