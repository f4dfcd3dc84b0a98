//! End to end on the real services: HTTP api → JetStream → worker → PostgreSQL.

use crate::{common, support};
use common::Pipeline;
use serde_json::json;
use std::time::{Duration, Instant};
use support::order as tpch_order;

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_and_line_items_land_exactly() {
    let p = Pipeline::start().await;
    let mut ids = Vec::new();
    for (n, lines) in [(1u32, 1u32), (2, 4), (3, 7)] {
        let (status, body) = p
            .post("/ingest/message/order", &tpch_order(n, lines).to_string())
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "accepted");
        assert!(body["timestamp"].as_str().is_some());
        ids.push(body["message_id"].as_str().expect("message_id").to_string());
    }
    p.db.wait_count("SELECT 1 FROM message_status WHERE status = 'processed'", 3)
        .await;

    let orders =
        p.db.rows(
            "SELECT order_key, customer_key, order_status, total_price::text, order_date::text, \
             order_priority, clerk, ship_priority::text, comment FROM orders ORDER BY order_key",
        )
        .await;
    let expected: Vec<Vec<Option<String>>> = [1u32, 2, 3]
        .iter()
        .map(|n| {
            vec![
                s(&format!("ORD-{n:06}")),
                s(&format!("CUST-{:04}", n % 97)),
                s("O"),
                s(&format!("{}.47", 170000 + n)),
                s("1996-01-02"),
                s("5-LOW"),
                s("Clerk#000000951"),
                s("0"),
                s(&format!("order number {n}")),
            ]
        })
        .collect();
    assert_eq!(orders, expected);

    let lines =
        p.db.rows(
            "SELECT order_key, line_number::text, part_key, supplier_key, quantity::text, \
             extended_price::text, discount::text, tax::text, return_flag, line_status, \
             ship_date::text, commit_date::text, receipt_date::text, ship_mode \
             FROM order_line_items ORDER BY order_key, line_number",
        )
        .await;
    let mut expected_lines = Vec::new();
    for (n, count) in [(1u32, 1u32), (2, 4), (3, 7)] {
        for l in 1..=count {
            expected_lines.push(vec![
                s(&format!("ORD-{n:06}")),
                s(&l.to_string()),
                s(&format!("P-{}", n * 10 + l)),
                if l % 3 == 0 {
                    None
                } else {
                    s(&format!("S-{}", l * 7))
                },
                s(&(5 + l).to_string()),
                s(&format!("{}.{:02}", 1000 + n * 3 + l, (n + l) % 100)),
                s("0.05"),
                s("0.10"),
                s("N"),
                s("O"),
                s(&format!("1996-03-{:02}", l + 10)),
                if l % 2 == 0 {
                    None
                } else {
                    s(&format!("1996-02-{:02}", l + 1))
                },
                s(&format!("1996-04-{:02}", l + 1)),
                s("TRUCK"),
            ]);
        }
    }
    assert_eq!(lines, expected_lines);

    let statuses = p
        .db
        .rows("SELECT message_id::text, entity, row_count::text FROM message_status ORDER BY row_count")
        .await;
    assert_eq!(
        statuses,
        vec![
            vec![s(&ids[0]), s("Order"), s("2")],
            vec![s(&ids[1]), s("Order"), s("5")],
            vec![s(&ids[2]), s("Order"), s("8")],
        ]
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posting_the_same_order_twice_keeps_one_row_per_key() {
    let p = Pipeline::start().await;
    let first = tpch_order(7, 3);
    let mut second = tpch_order(7, 3);
    second["total_price"] = json!("999.99");
    second["line_items"][1]["quantity"] = json!(42);
    for body in [&first, &second] {
        let (status, answer) = p.post("/ingest/message/order", &body.to_string()).await;
        assert_eq!(status, 202, "{answer}");
    }
    p.db.wait_count("SELECT 1 FROM message_status", 2).await;
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 1);
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, 3);
    // Last write wins (`on_conflict: update`).
    assert_eq!(
        p.db.rows("SELECT total_price::text FROM orders").await,
        vec![vec![s("999.99")]]
    );
    assert_eq!(
        p.db.rows("SELECT quantity::text FROM order_line_items WHERE line_number = 2")
            .await,
        vec![vec![s("42")]]
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_order_gets_422_and_writes_nothing() {
    let p = Pipeline::start().await;
    let mut bad = tpch_order(11, 2);
    bad["ship_priority"] = json!(2147483648u64);
    bad["line_items"][1]["ship_date"] = json!("1996-02-30");
    bad.as_object_mut().expect("object").remove("clerk");
    let (status, answer) = p.post("/ingest/message/order", &bad.to_string()).await;
    assert_eq!(status, 422, "{answer}");
    let fields: Vec<&str> = answer["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["field"].as_str().expect("field"))
        .collect();
    assert_eq!(
        fields,
        vec!["clerk", "ship_priority", "line_items[1].ship_date"]
    );

    let (status, answer) = p.post("/ingest/message/order", "{\"order_key\": ").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .expect("error")
            .contains("invalid JSON")
    );

    let (status, answer) = p.post("/ingest/message/invoice", "{}").await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"], "unknown entity `invoice`");

    // A valid order posted afterwards is processed; nothing of the rejected ones is there.
    let (status, _) = p
        .post("/ingest/message/order", &tpch_order(12, 1).to_string())
        .await;
    assert_eq!(status, 202);
    p.db.wait_count("SELECT 1 FROM message_status", 1).await;
    assert_eq!(
        p.db.rows("SELECT order_key FROM orders").await,
        vec![vec![s("ORD-000012")]]
    );
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, 1);
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 0);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_root_entity_is_stored() {
    let p = Pipeline::start().await;
    let customer = json!({
        "customer_key": "CUST-0001", "name": "Customer#000000001",
        "address": "IVhzIApeRb ot,c,E", "nation_key": 15, "phone": "25-989-741-2988",
        "account_balance": 711.56, "market_segment": "BUILDING", "comment": null
    });
    let product = json!({
        "part_key": "P-1", "name": "goldenrod lavender spring chocolate lace",
        "manufacturer": "Manufacturer#1", "brand": "Brand#13", "type": "PROMO BURNISHED COPPER",
        "size": 7, "container": "JUMBO PKG", "retail_price": "901.00",
        "comment": "ly. slyly ironi"
    });
    assert_eq!(
        p.post("/ingest/message/customer", &customer.to_string())
            .await
            .0,
        202
    );
    assert_eq!(
        p.post("/ingest/message/Product", &product.to_string())
            .await
            .0,
        202
    );
    p.db.wait_count("SELECT 1 FROM message_status", 2).await;
    assert_eq!(
        p.db.rows(
            "SELECT customer_key, name, nation_key::text, account_balance::text, comment FROM customers"
        )
        .await,
        vec![vec![s("CUST-0001"), s("Customer#000000001"), s("15"), s("711.56"), None]]
    );
    assert_eq!(
        p.db.rows("SELECT part_key, \"type\", size::text, retail_price::text FROM products")
            .await,
        vec![vec![
            s("P-1"),
            s("PROMO BURNISHED COPPER"),
            s("7"),
            s("901.00")
        ]]
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_message_is_dead_lettered_with_reason() {
    let p = Pipeline::start().await;
    // Bypass the api: a client publishing straight to the stream with a wrong body.
    let envelope = json!({
        "message_id": "5f0e3c1e-1111-4b7a-9a55-000000000001",
        "entity": "Order",
        "received_at": "2026-01-01T00:00:00Z",
        "body": {"order_key": "X"}
    });
    p.jetstream
        .publish(format!("{}.order", p.stream), envelope.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    p.jetstream
        .publish(format!("{}.order", p.stream), "not json".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    p.db.wait_count("SELECT 1 FROM dead_letters", 2).await;
    let rows =
        p.db.rows("SELECT message_id::text, entity, reason FROM dead_letters ORDER BY reason")
            .await;
    assert_eq!(rows[0][0], s("5f0e3c1e-1111-4b7a-9a55-000000000001"));
    assert_eq!(rows[0][1], s("Order"));
    let reason = rows[0][2].clone().unwrap_or_default();
    assert!(
        reason.starts_with("customer_key: required field is missing"),
        "{reason}"
    );
    assert!(
        rows[1][2]
            .clone()
            .unwrap_or_default()
            .starts_with("unreadable envelope")
    );
    assert_eq!(
        p.db.count("SELECT 1 FROM message_status WHERE status = 'dead_lettered'")
            .await,
        2
    );
    assert_eq!(p.db.count("SELECT 1 FROM orders").await, 0);
    // The dead-letter stream is bounded (defaults: 30 days, 1 GiB, oldest removed first).
    let mut dlq = p
        .jetstream
        .get_stream(nomnom::worker::dead_letter::dlq_stream_name(&p.stream))
        .await
        .expect("dead-letter stream");
    let config = dlq.info().await.expect("info").config.clone();
    assert_eq!(config.max_age, std::time::Duration::from_secs(30 * 86_400));
    assert_eq!(config.max_bytes, 1 << 30);
    assert_eq!(
        config.discard,
        async_nats::jetstream::stream::DiscardPolicy::Old
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_of_reference_rows_and_one_of_orders_are_stored() {
    let p = Pipeline::start().await;
    let customers: Vec<serde_json::Value> = (1..=3)
        .map(|n| {
            json!({
                "customer_key": format!("CUST-{n}"), "name": format!("Customer#{n}"),
                "address": "x", "nation_key": n, "phone": "25-989-741-2988",
                "account_balance": format!("{n}.50"), "market_segment": "BUILDING", "comment": null
            })
        })
        .collect();
    let (status, answer) = p
        .post("/ingest/batch/customer", &json!(customers).to_string())
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 3);
    let orders = json!([tpch_order(1, 2), tpch_order(2, 3)]);
    let (status, answer) = p.post("/ingest/batch/order", &orders.to_string()).await;
    assert_eq!(status, 202, "{answer}");
    p.db.wait_count("SELECT 1 FROM message_status", 5).await;
    assert_eq!(
        p.db.rows("SELECT customer_key, account_balance::text FROM customers ORDER BY 1")
            .await,
        vec![
            vec![s("CUST-1"), s("1.50")],
            vec![s("CUST-2"), s("2.50")],
            vec![s("CUST-3"), s("3.50")]
        ]
    );
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, 5);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_of_reference_entities_are_stored_typed() {
    let p = Pipeline::start().await;
    let client = reqwest::Client::new();
    let post_csv = |entity: &str, body: &'static str| {
        client
            .post(format!("{}/ingest/batch/{entity}", p.base))
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    let tbl = "7|Customer#000000007|TcGe5gaZNgVePxU5kRrvXBfkasDTea|18|28-190-982-9759|9561.95|AUTOMOBILE|ainst the ironic|\n\
               8|Customer#000000008|I0B10bB0AymmC, 0PrRYBCP1yGJ8xcBPmWhl5|17|27-147-574-9335|6819.74|BUILDING||\n";
    let resp = post_csv("customer", tbl).await.expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    let csv = "part_key,name,manufacturer,brand,type,size,container,retail_price,comment\n\
               P-1,\"bolt, zinc\",Manufacturer#1,Brand#13,PROMO BURNISHED,7,JUMBO PKG,901.00,\n";
    let resp = post_csv("product", csv).await.expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    p.db.wait_count("SELECT 1 FROM message_status", 3).await;
    assert_eq!(
        p.db.rows("SELECT customer_key, nation_key::text, account_balance::text, coalesce(comment, 'NULL') FROM customers ORDER BY 1")
            .await,
        vec![
            vec![s("7"), s("18"), s("9561.95"), s("ainst the ironic")],
            vec![s("8"), s("17"), s("6819.74"), s("NULL")]
        ]
    );
    assert_eq!(
        p.db.rows(
            "SELECT name, size::text, retail_price::text, coalesce(comment, 'NULL') FROM products"
        )
        .await,
        vec![vec![s("bolt, zinc"), s("7"), s("901.00"), s("NULL")]]
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_of_a_root_entity_are_stored_and_bad_rows_named() {
    let p = Pipeline::start().await;
    let body = "order_key,event_type,occurred_at,note\n\
                ORD-1,created,2024-05-01T12:30:00Z,\n\
                ORD-1,shipped,not a time,fast\n\
                ORD-2,\"created, again\",2024-05-02T08:00:00+02:00,\"said \"\"hi\"\"\"\n";
    let resp = reqwest::Client::new()
        .post(format!("{}/ingest/batch/order_event", p.base))
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);
    let answer: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(
        (answer["accepted"].clone(), answer["rejected"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(answer["results"][1]["line"], 3);
    assert_eq!(
        answer["results"][1]["details"][0]["field"],
        "occurred_at (column 3)"
    );
    p.db.wait_count("SELECT 1 FROM order_events", 2).await;
    assert_eq!(
        p.db.rows("SELECT event_type, occurred_at::text, coalesce(note, 'NULL') FROM order_events ORDER BY occurred_at")
            .await,
        vec![
            vec![s("created"), s("2024-05-01 12:30:00+00"), s("NULL")],
            vec![s("created, again"), s("2024-05-02 06:00:00+00"), s("said \"hi\"")]
        ]
    );
    p.stop().await;
}

/// A batch without an `Idempotency-Key` goes out in groups of up to 256 lines: 600 lines take
/// three JetStream messages, every line keeps its own id and status, and upserts of the same
/// order follow line order within and across groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_lines_go_out_in_groups_each_with_its_own_id_and_order() {
    let p = Pipeline::start().await;
    let body: String = (1..=600u32)
        .map(|line| {
            let mut order = tpch_order(line % 10, 1);
            order["comment"] = json!(format!("line {line}"));
            format!("{order}\n")
        })
        .collect();
    let (status, answer) = p.post("/ingest/batch/order", &body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 600);
    let ids: Vec<String> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["message_id"].as_str().expect("an id").to_string())
        .collect();
    assert_eq!(ids.len(), 600);
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 600, "every line its own id");
    let mut stream = p.jetstream.get_stream(&p.stream).await.expect("stream");
    assert_eq!(stream.info().await.expect("info").state.messages, 3);
    p.db.wait_count("SELECT 1 FROM message_status", 600).await;
    let stored: std::collections::HashSet<String> =
        p.db.rows("SELECT message_id::text FROM message_status WHERE status = 'processed'")
            .await
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
    assert_eq!(stored, ids.iter().cloned().collect());
    let (code, line_status) = p.get(&format!("/ingest/status/{}", ids[599])).await;
    assert_eq!((code, &line_status["status"]), (200, &json!("processed")));
    // Order n's last line is 590 + n (order 0: line 600).
    let comments =
        p.db.rows("SELECT order_key, comment FROM orders ORDER BY order_key")
            .await;
    let expected: Vec<Vec<Option<String>>> = (0..10u32)
        .map(|n| {
            let last = if n == 0 { 600 } else { 590 + n };
            vec![Some(format!("ORD-{n:06}")), Some(format!("line {last}"))]
        })
        .collect();
    assert_eq!(comments, expected);
    p.stop().await;
}

/// A stream at its `NATS_STREAM_MAX_BYTES` refuses new messages (503, nothing stored, the
/// reason said) and keeps every message it accepted: the worker stores them all, its trim frees
/// the room, and the api takes messages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_answers_503_and_keeps_every_message_it_accepted() {
    let mut p = Pipeline::paused_with(|w| w.nats.limits.max_bytes = Some(16 * 1024)).await;
    let mut stream = p.jetstream.get_stream(&p.stream).await.expect("stream");
    assert_eq!(
        stream.info().await.expect("info").config.max_bytes,
        16 * 1024
    );
    let event = |n: usize| {
        json!({
            "order_key": format!("ORD-FULL-{n}"), "event_type": "created",
            "occurred_at": "2026-12-07T10:00:00Z", "note": "n".repeat(900)
        })
        .to_string()
    };
    let mut accepted = 0;
    let mut refused = None;
    for n in 0..200 {
        let (status, answer) = p.post("/ingest/message/order_event", &event(n)).await;
        match status {
            202 => accepted += 1,
            503 => {
                refused = Some(answer);
                break;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    let refused = refused.expect("the stream fills up and the api says so");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("reached its limits") && e.contains("nothing was stored")),
        "{refused}"
    );
    assert!(
        accepted >= 5,
        "{accepted} accepted before the stream was full"
    );
    p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM order_events", accepted as i64)
        .await;
    // The worker trims what it stored, so the stream takes messages again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, answer) = p.post("/ingest/message/order_event", &event(1000)).await;
        if status == 202 {
            break;
        }
        assert_eq!(status, 503, "{answer}");
        assert!(Instant::now() < deadline, "the stream never drained");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    p.db.wait_count("SELECT 1 FROM order_events", accepted as i64 + 1)
        .await;
    p.stop().await;
}

/// `POST /ingest/batch` without an entity routes every line on its own (its `entity_type`, or
/// the one entity it matches), names each accepted line's entity, refuses lines that match
/// none with the closest entity's problems, and the worker stores each as its entity. CSV,
/// which has no member names to route by, needs an entity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_batch_routes_each_line_to_its_entity() {
    let p = Pipeline::start().await;
    let mut tagged = json!({"order_key": "ORD-U1", "event_type": "created",
        "occurred_at": "2026-12-07T10:00:00Z", "note": null});
    tagged["entity_type"] = json!("order_event");
    let lines = [
        tpch_order(71, 2).to_string(),
        support::customer(71).to_string(),
        r#"{"order_id": "123", "total": 100.50}"#.to_string(),
        tagged.to_string(),
    ];
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/ingest/batch", p.base))
        .header("content-type", "application/x-ndjson")
        .body(lines.join("\n"))
        .send()
        .await
        .expect("batch");
    assert_eq!(response.status(), 202);
    let answer: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");
    assert!(answer["entity"].is_null(), "{answer}");
    let results = answer["results"].as_array().expect("results");
    let entities: Vec<&str> = results
        .iter()
        .map(|r| r["entity"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        entities,
        ["order", "customer", "-", "order_event"],
        "{answer}"
    );
    assert!(
        results[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("closest is `Order`")),
        "{answer}"
    );
    p.db.wait_count("SELECT 1 FROM orders WHERE order_key = 'ORD-000071'", 1)
        .await;
    p.db.wait_count(
        "SELECT 1 FROM customers WHERE customer_key = 'CUST-0071'",
        1,
    )
    .await;
    p.db.wait_count("SELECT 1 FROM order_events WHERE order_key = 'ORD-U1'", 1)
        .await;
    let csv = client
        .post(format!("{}/ingest/batch", p.base))
        .header("content-type", "text/csv")
        .body("customer_key,name\nC1,x\n")
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.status(), 400);
    let answer: serde_json::Value = csv.json().await.expect("JSON");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("/ingest/batch/{entity}")),
        "{answer}"
    );
    p.stop().await;
}
