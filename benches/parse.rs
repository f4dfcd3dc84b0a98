//! What parsing one message body costs, in the same run: the generated parser over the flat
//! `JsonDoc` (what the api and the worker run), the document alone, and a `serde_json::Value`
//! tree of the same bytes (what the parser was built on before) as the baseline.
//!
//! ```sh
//! cargo bench --bench parse -- --orders 200000
//! ```

mod common;

use std::hint::black_box;
use std::time::Instant;

use nomnom::generated::RootEntity;

fn time(label: &str, n: u64, baseline: Option<f64>, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    match baseline {
        Some(b) => println!(
            "{label:<58} {ns:>8.0} ns/message  ({:.2} of the Value tree)",
            ns / b
        ),
        None => println!("{label:<58} {ns:>8.0} ns/message"),
    }
    ns
}

/// What the api runs on a body: the document, then the generated check (no rows).
fn validate(body: &[u8]) -> bool {
    nomnom::runtime::parse_json_object(body)
        .is_ok_and(|doc| RootEntity::Order.validate_json(doc.root()).is_ok())
}

fn main() -> Result<(), String> {
    let args = common::BenchArgs::parse(0)?;
    let body = common::sample::tpch_order(1, 4).to_string().into_bytes();
    let n = args.orders;
    println!(
        "TPC-H order, 4 line items, {} bytes, {n} iterations",
        body.len()
    );
    let tree = time("serde_json::Value tree (baseline)", n, None, || {
        black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).ok());
    });
    time("JsonDoc (flat, borrowed)", n, Some(tree), || {
        black_box(nomnom::runtime::JsonDoc::parse(black_box(&body)).ok());
    });
    time(
        "JsonDoc + generated parser → OrderMessage (worker)",
        n,
        Some(tree),
        || {
            black_box(RootEntity::Order.parse_bytes(black_box(&body)).ok());
        },
    );
    time(
        "JsonDoc + generated validate-only check (api)",
        n,
        Some(tree),
        || {
            black_box(validate(black_box(&body)));
        },
    );
    // The sample lists its keys alphabetically (serde_json's map order); clients usually send
    // them in schema order, as this one (the compare load's body) does.
    let line = |n: u32| {
        format!(
            r#"{{"line_number":{n},"part_key":"P-008641{n}","supplier_key":"S-7706","quantity":4{n}.0,"extended_price":23696.25,"discount":0.06,"tax":0.02,"return_flag":"N","line_status":"O","ship_date":"1994-12-15","commit_date":null,"receipt_date":null,"ship_mode":"TRUCK"}}"#
        )
    };
    let ordered = format!(
        r#"{{"order_key":"W0-0000000001","customer_key":"C-000010485","order_status":"O","total_price":398465.75,"order_date":"1994-12-12","order_priority":"1-URGENT","clerk":"Clerk#000000345","ship_priority":0,"comment":"carefully final deposits detect slyly agai","line_items":[{},{},{},{}]}}"#,
        line(1),
        line(2),
        line(3),
        line(4)
    )
    .into_bytes();
    println!(
        "the same order with its keys in schema order, {} bytes",
        ordered.len()
    );
    // Both bodies are valid: the timings are of the success path.
    for b in [&body, &ordered] {
        RootEntity::Order
            .parse_bytes(b)
            .map_err(|e| format!("sample body refused: {e}"))?;
    }
    let tree = time("serde_json::Value tree (baseline)", n, None, || {
        black_box(serde_json::from_slice::<serde_json::Value>(black_box(&ordered)).ok());
    });
    time(
        "JsonDoc + generated parser → OrderMessage (worker)",
        n,
        Some(tree),
        || {
            black_box(RootEntity::Order.parse_bytes(black_box(&ordered)).ok());
        },
    );
    time(
        "JsonDoc + generated validate-only check (api)",
        n,
        Some(tree),
        || {
            black_box(validate(black_box(&ordered)));
        },
    );
    Ok(())
}
