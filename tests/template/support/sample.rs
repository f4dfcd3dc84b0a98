//! Sample TPC-H messages for the example schema, shared by the tests and the benchmarks.
#![allow(dead_code)]

use serde_json::{Value, json};

/// A TPC-H order with `lines` line items (1–7), deterministic from `n`.
pub(crate) fn tpch_order(n: u64, lines: u32) -> Value {
    let items: Vec<Value> = (1..=u64::from(lines))
        .map(|l| {
            json!({
                "line_number": l,
                "part_key": format!("P-{}", n * 10 + l),
                "supplier_key": if l % 3 == 0 { Value::Null } else { format!("S-{}", l * 7).into() },
                "quantity": 5 + l,
                "extended_price": format!("{}.{:02}", 1000 + n * 3 + l, (n + l) % 100),
                "discount": "0.05",
                "tax": "0.10",
                "return_flag": "N",
                "line_status": "O",
                "ship_date": format!("1996-03-{:02}", l + 10),
                "commit_date": if l % 2 == 0 { Value::Null } else { format!("1996-02-{:02}", l + 1).into() },
                "receipt_date": format!("1996-04-{:02}", l + 1),
                "ship_mode": "TRUCK"
            })
        })
        .collect();
    json!({
        "order_key": format!("ORD-{n:06}"),
        "customer_key": format!("CUST-{:04}", n % 97),
        "order_status": "O",
        "total_price": format!("{}.47", 170000 + n),
        "order_date": "1996-01-02",
        "order_priority": "5-LOW",
        "clerk": "Clerk#000000951",
        "ship_priority": 0,
        "comment": format!("order number {n}"),
        "line_items": items
    })
}

/// [`tpch_order`] numbered by a `u32`.
pub(crate) fn order(n: u32, lines: u32) -> Value {
    tpch_order(u64::from(n), lines)
}

/// A valid customer (a reference entity) with key `CUST-<n>`.
pub(crate) fn customer(n: u32) -> Value {
    serde_json::json!({
        "customer_key": format!("CUST-{n:04}"), "name": format!("Customer#{n}"), "address": "x",
        "nation_key": 3, "phone": "25-989-741-2988", "account_balance": "711.56",
        "market_segment": "BUILDING", "comment": null
    })
}
