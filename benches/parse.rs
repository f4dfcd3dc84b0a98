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
        "JsonDoc + generated parser → OrderMessage (api, worker)",
        n,
        Some(tree),
        || {
            black_box(RootEntity::Order.parse_bytes(black_box(&body)).ok());
        },
    );
    Ok(())
}
