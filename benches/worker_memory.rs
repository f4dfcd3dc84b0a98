//! Worker memory benchmark (a benchmark, not a test): peak RSS of the worker binary, at its
//! default settings, draining large messages, beside the same worker draining small ones in the
//! same run.
//!
//! ```sh
//! cargo bench --bench worker_memory -- --orders 3000 --kib 100
//! ```

#[path = "../tests/template/support/memory.rs"]
mod memory;
#[path = "../tests/template/support/sample.rs"]
mod sample;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let orders = arg("--orders", 3000);
    let kib = arg("--kib", 100) as usize;
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let pg = std::env::var("BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let bin = env!("CARGO_BIN_EXE_worker");
    let small = memory::drain(bin, &nats, &pg, orders, 1, &[]).await?;
    let large = memory::drain(bin, &nats, &pg, orders, kib, &[]).await?;
    for (name, m) in [("1 KiB", &small), (&*format!("{kib} KiB"), &large)] {
        println!(
            "{name:>8} messages: {} in {:.1} s ({:.0} msg/s, {:.1} MB/s), payload {:.0} MB, worker peak RSS {:.0} MB",
            m.messages,
            m.elapsed.as_secs_f64(),
            m.messages as f64 / m.elapsed.as_secs_f64(),
            m.payload_bytes as f64 / 1e6 / m.elapsed.as_secs_f64(),
            m.payload_bytes as f64 / 1e6,
            m.peak_rss as f64 / 1e6
        );
    }
    // The default until 2026-12-03: it never drained large messages faster than 8 MiB, at three
    // times the memory.
    let budget = 32u64 << 20;
    let budget_text = budget.to_string();
    let wide = memory::drain(
        bin,
        &nats,
        &pg,
        orders,
        kib,
        &[("WORKER_MAX_BATCH_BYTES", budget_text.as_str())],
    )
    .await?;
    println!(
        "{kib:>4} KiB messages, WORKER_MAX_BATCH_BYTES=32 MiB: {:.1} s ({:.0} msg/s), worker peak RSS {:.0} MB",
        wide.elapsed.as_secs_f64(),
        wide.messages as f64 / wide.elapsed.as_secs_f64(),
        wide.peak_rss as f64 / 1e6
    );
    let per_budget = |m: &memory::DrainMemory, budget: u64| {
        m.peak_rss.saturating_sub(small.peak_rss) as f64 / (3 * budget) as f64
    };
    println!(
        "peak RSS large/small: {:.2}; RSS above the small-message run per byte of budget in flight (3 slots): {:.1} at the default {} MiB, {:.1} at 32 MiB",
        large.peak_rss as f64 / small.peak_rss.max(1) as f64,
        per_budget(
            &large,
            nomnom::worker::DEFAULT_WORKER_MAX_BATCH_BYTES as u64
        ),
        nomnom::worker::DEFAULT_WORKER_MAX_BATCH_BYTES >> 20,
        per_budget(&wide, budget)
    );
    Ok(())
}
