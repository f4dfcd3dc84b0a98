//! Property: edge validation equals storage validation. Over generated and mutated bodies, every
//! body the api answers 202 for is stored by the worker without a dead letter, and every body it
//! refuses gets a JSON 4xx. Real NATS and PostgreSQL, the real api and worker.

use crate::{common, support};
use std::time::Duration;

use common::Pipeline;
use nomnom::generated::RootEntity;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use support::order as tpch_order;

/// `CASES` (default 1000) bodies per run.
fn cases() -> usize {
    std::env::var("CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Numbers and numeric strings near and past every limit: digits, scale, exponent.
fn numeric_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(""), Just("-"), Just("+")],
        "[0-9]{0,25}",
        prop::option::of("[0-9]{0,25}"),
        prop::option::of(prop_oneof![
            -20_000i64..20_000,
            Just(131_072i64),
            Just(-16_384i64),
            Just(i64::MAX),
            Just(i64::MIN + 1),
        ]),
    )
        .prop_map(|(sign, int, frac, exp)| {
            let mut s = format!("{sign}{int}");
            if let Some(f) = frac {
                s.push('.');
                s.push_str(&f);
            }
            if let Some(e) = exp {
                s.push_str(&format!("e{e}"));
            }
            s
        })
}

/// A value of any JSON kind, biased toward what each field type finds hard.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        numeric_text().prop_map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t))),
        numeric_text().prop_map(Value::String),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        "[a-z\\x00\\u{1F600}\\u{FFFF}]{0,40}".prop_map(Value::String),
        (-300_000i32..300_000, 0u32..14, 0u32..33).prop_map(|(y, m, d)| {
            let sign = if y < 0 {
                "-"
            } else if y > 9999 {
                "+"
            } else {
                ""
            };
            Value::String(format!("{sign}{:04}-{m:02}-{d:02}", y.unsigned_abs()))
        }),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"x": 1}])),
    ]
}

const ORDER_FIELDS: &[&str] = &[
    "order_key",
    "customer_key",
    "order_status",
    "total_price",
    "order_date",
    "order_priority",
    "clerk",
    "ship_priority",
    "comment",
    "line_items",
];
const LINE_FIELDS: &[&str] = &[
    "line_number",
    "part_key",
    "supplier_key",
    "quantity",
    "extended_price",
    "discount",
    "tax",
    "return_flag",
    "line_status",
    "ship_date",
    "commit_date",
    "receipt_date",
    "ship_mode",
];

/// Where to put a hostile value: a top-level field, a line item's field, or remove one.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, Value),
    SetLine(usize, usize, Value),
    Remove(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (0..ORDER_FIELDS.len(), hostile_value()).prop_map(|(f, v)| Mutation::Set(f, v)),
        3 => (0..3usize, 0..LINE_FIELDS.len(), hostile_value())
            .prop_map(|(l, f, v)| Mutation::SetLine(l, f, v)),
        1 => (0..ORDER_FIELDS.len()).prop_map(Mutation::Remove),
    ]
}

/// An order body after 0–3 mutations; sometimes its bytes cut or corrupted too.
fn body(n: u32, mutations: &[Mutation], corrupt: Option<(usize, u8)>) -> Vec<u8> {
    let mut order = tpch_order(n, 3);
    order["order_key"] = json!(format!("PROP-{n}"));
    for m in mutations {
        match m {
            Mutation::Set(f, v) => order[ORDER_FIELDS[*f]] = v.clone(),
            Mutation::SetLine(l, f, v) => {
                if let Some(item) = order["line_items"].get_mut(*l) {
                    item[LINE_FIELDS[*f]] = v.clone();
                }
            }
            Mutation::Remove(f) => {
                if let Some(o) = order.as_object_mut() {
                    o.remove(ORDER_FIELDS[*f]);
                }
            }
        }
    }
    let mut bytes = order.to_string().into_bytes();
    if let Some((at, byte)) = corrupt {
        let at = at % bytes.len();
        bytes[at] = byte;
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_body_is_stored_and_every_refused_one_gets_json_4xx() {
    let p = Pipeline::start().await;
    let strategy = (
        prop::collection::vec(mutation(), 0..4),
        prop::option::weighted(0.1, (any::<usize>(), any::<u8>())),
    );
    let mut runner = TestRunner::deterministic();
    let client = reqwest::Client::new();
    let (mut accepted, mut refused) = (0i64, 0usize);
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for n in 0..cases() {
        let (mutations, corrupt) = strategy.new_tree(&mut runner).expect("strategy").current();
        let bytes = body(n as u32, &mutations, corrupt);
        // The api validates without building rows; the worker parses: same verdict, same errors.
        if let Ok(doc) = nomnom::runtime::parse_json_object(&bytes) {
            assert_eq!(
                RootEntity::Order.validate_json(doc.root()),
                RootEntity::Order.parse_json(doc.root()).map(drop),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let response = client
            .post(format!("{}/ingest/message/order", p.base))
            .header("content-type", "application/json")
            .body(bytes.clone())
            .send()
            .await
            .expect("answered");
        let status = response.status().as_u16();
        *by_status.entry(status).or_default() += 1;
        let text = response.text().await.expect("body");
        let answer: Result<Value, _> = serde_json::from_str(&text);
        match status {
            202 => accepted += 1,
            400..=499 => {
                refused += 1;
                let answer =
                    answer.unwrap_or_else(|e| panic!("{status} is not JSON ({e}): {text}"));
                assert!(answer["error"].is_string(), "{answer}");
            }
            other => panic!(
                "status {other} for {}: {text}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
    println!(
        "{} bodies: {accepted} accepted, {refused} refused, by status {by_status:?}",
        cases()
    );
    assert!(
        accepted > 0 && refused > 0,
        "the generator covers both outcomes"
    );
    p.db.wait_at_least(
        "SELECT 1 FROM message_status",
        accepted,
        Duration::from_secs(60),
        "accepted messages stored",
    )
    .await;
    let dead =
        p.db.rows("SELECT reason, body FROM dead_letters LIMIT 5")
            .await;
    assert!(dead.is_empty(), "accepted but dead-lettered: {dead:?}");
    assert_eq!(
        p.db.count("SELECT 1 FROM message_status WHERE status = 'processed'")
            .await,
        accepted
    );
    p.stop().await;
}
