//! `worker load`: files of CSV, NDJSON (gzip too) and JSON arrays loaded into the stream and
//! stored by the worker; exact accepted/rejected counts with the reasons in a file; loading
//! the same file twice stores nothing twice; the binary's summary and exit code.

use crate::{common, support};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use common::Pipeline;
use nomnom::generated::RootEntity;
use nomnom::load::{LoadOptions, LoadReport, Progress, load_file};

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nomnom-load-{}", common::unique()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Six dbgen-style customer rows (`|`, no header, trailing `|`): rows 3 and 5 are bad.
const CUSTOMERS: &str = "\
1|Customer#000000001|IVhzIApeRb ot,c,E|15|25-989-741-2988|711.56|BUILDING|regular platelets|
2|Customer#000000002|XSTf4,NCwDVaWNe6tEgvwfmRchLXak|13|23-768-687-3665|121.65|AUTOMOBILE||
3|Customer#000000003|MG9kdTD2WBHm|one|11-719-748-3364|7498.12|AUTOMOBILE|x|
4|Customer#000000004|XxVSJsLAGtn|4|14-128-190-5944|2866.83|MACHINERY|y|

5|Customer#000000005 whose name is far too long|KvpyuHCplrB84WgAiGV6sYpZq7Tj|3|13-750-942-6364|794.47|HOUSEHOLD|z|
6|Customer#000000006|sKZz0CsnMD7mp4Xd0YrBvx,LREYKUWAh yVn|20|30-114-968-4951|7638.57|AUTOMOBILE|w|
";

async fn load(p: &Pipeline, entity: &str, path: &std::path::Path) -> LoadReport {
    let entity = RootEntity::from_name(entity).expect("entity");
    let options = LoadOptions::for_file(entity, path, None).expect("options");
    load_file(
        &nomnom::nats::JetStreamPublisher::new(p.jetstream.clone()),
        &p.stream,
        &options,
        Progress::Silent,
    )
    .await
    .expect("load runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_bad_rows_ends_with_exact_counts_and_loading_it_again_stores_nothing_twice() {
    let p = Pipeline::start().await;
    let dir = scratch();
    let file = dir.join("customer.tbl");
    std::fs::write(&file, CUSTOMERS).expect("write");
    let first = load(&p, "customer", &file).await;
    assert_eq!(
        first,
        LoadReport {
            rows: 6,
            accepted: 4,
            already_loaded: 0,
            rejected: 2
        }
    );
    // The reasons, with the CSV line (past the blank line) and the column.
    let rejects =
        std::fs::read_to_string(dir.join("customer.tbl.rejected.ndjson")).expect("rejects file");
    let rejects: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rejects.len(), 2);
    assert_eq!(rejects[0]["line"], 3);
    assert_eq!(rejects[0]["details"][0]["field"], "nation_key (column 4)");
    assert_eq!(rejects[1]["line"], 6);
    assert_eq!(rejects[1]["details"][0]["field"], "name (column 2)");
    p.db.wait_count("SELECT 1 FROM message_status", 4).await;
    assert_eq!(p.db.count("SELECT 1 FROM customers").await, 4);

    // Again: the same ids, so nothing is stored twice.
    let second = load(&p, "customer", &file).await;
    assert_eq!(
        (second.accepted, second.already_loaded, second.rejected),
        (4, 4, 2)
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(p.db.count("SELECT 1 FROM message_status").await, 4);
    assert_eq!(p.db.count("SELECT 1 FROM customers").await, 4);
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzipped_ndjson_orders_and_a_json_array_of_products_are_stored() {
    let p = Pipeline::start().await;
    let dir = scratch();
    let orders = dir.join("orders.ndjson.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&orders).expect("create"),
        flate2::Compression::fast(),
    );
    for n in 1..=20 {
        writeln!(gz, "{}", support::order(n, 1 + n % 4)).expect("write");
        if n == 10 {
            writeln!(gz).expect("blank line");
            writeln!(gz, "{{\"order_key\": 1}}").expect("bad line");
        }
    }
    gz.finish().expect("gzip");
    let report = load(&p, "order", &orders).await;
    assert_eq!((report.rows, report.accepted, report.rejected), (21, 20, 1));
    let products = dir.join("products.json");
    let rows: Vec<serde_json::Value> = (1..=3)
        .map(|n| {
            serde_json::json!({
                "part_key": format!("P-{n}"), "name": "bolt", "manufacturer": "M", "brand": "B",
                "type": "T", "size": n, "container": "C", "retail_price": "1.50", "comment": null
            })
        })
        .collect();
    std::fs::write(
        &products,
        serde_json::to_string_pretty(&rows).expect("json"),
    )
    .expect("write");
    let report = load(&p, "product", &products).await;
    assert_eq!((report.rows, report.accepted, report.rejected), (3, 3, 0));
    p.db.wait_count("SELECT 1 FROM message_status", 23).await;
    let lines: i64 = (1..=20).map(|n| 1 + i64::from(n % 4)).sum();
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, lines);
    assert_eq!(p.db.count("SELECT 1 FROM products").await, 3);
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_command_prints_a_summary_and_fails_when_rows_were_rejected() {
    let p = Pipeline::start().await;
    let dir = scratch();
    let file = dir.join("customer.tbl");
    std::fs::write(&file, CUSTOMERS).expect("write");
    let rejects = dir.join("bad-rows.ndjson");
    let run = |path: &std::path::Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_worker"))
            .arg("load")
            .args(extra)
            .arg(path)
            .env("NATS_URL", common::nats_url())
            .env("NATS_STREAM", &p.stream)
            .output()
            .expect("worker load runs")
    };
    let out = run(
        &file,
        &[
            "--entity",
            "customer",
            "--rejects",
            &rejects.to_string_lossy(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("6 rows, 4 accepted (0 already loaded before), 2 rejected"),
        "{stdout}"
    );
    assert!(
        stderr.contains("2 rows rejected") && stderr.contains("bad-rows.ndjson"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&rejects)
            .expect("rejects")
            .lines()
            .count(),
        2
    );
    // A clean file exits 0; an unknown format or entity is a clear error.
    let clean = dir.join("clean.tbl");
    std::fs::write(
        &clean,
        CUSTOMERS.lines().take(2).collect::<Vec<_>>().join("\n"),
    )
    .expect("write");
    let out = run(&clean, &["--entity", "customer"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&dir.join("data.xml"), &["--entity", "customer"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot tell the format"));
    let out = run(&clean, &["--entity", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown entity `nope`"));
    p.db.wait_count("SELECT 1 FROM customers", 4).await;
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Peak resident memory (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The smaller version of `scripts/bench-load.sh`: a 120 MB file (60 000 rows of 2 KB) goes
/// through `worker load` while its peak memory stays under the stated bound of 100 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_the_memory_bound_streams_through_the_loader() {
    const ROWS: usize = 60_000;
    const BOUND: u64 = 100 * 1024 * 1024;
    let dir = scratch();
    let file = dir.join("customer.tbl");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).expect("create"));
        let filler = "regular deposits haggle ".repeat(85);
        for i in 1..=ROWS {
            writeln!(
                out,
                "{i}|Customer#{i:09}|IVhzIApeRb ot,c,E|{}|25-989-741-2988|{}.56|BUILDING|{filler}{i}|",
                i % 25,
                i % 9999
            )
            .expect("write");
        }
    }
    let size = std::fs::metadata(&file).expect("file").len();
    assert!(
        size > BOUND + BOUND / 5,
        "the file ({size} bytes) must exceed the bound"
    );
    let (ok, stdout, peak) = load_binary("customer", &file).await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!("{ROWS} rows, {ROWS} accepted")),
        "{stdout}"
    );
    eprintln!(
        "loader peak RSS {} MB for a {} MB file",
        peak / 1024 / 1024,
        size / 1024 / 1024
    );
    assert!(
        peak > 0 && peak < BOUND,
        "loader peak RSS {} MB",
        peak / 1024 / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `worker load` on `file` (a stream of its own), sampling its peak RSS; returns the exit
/// success, stdout+stderr and the peak.
async fn load_binary(entity: &str, file: &std::path::Path) -> (bool, String, u64) {
    let stream = format!("LOADBOUND_{}", common::unique());
    let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(["load", "--entity", entity])
        .arg(file)
        .env("NATS_URL", common::nats_url())
        .env("NATS_STREAM", &stream)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("worker load runs");
    let mut peak = 0;
    while child.try_wait().expect("wait").is_none() {
        peak = peak.max(peak_rss(child.id()));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    common::delete_streams(&stream).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, peak)
}

/// 300 MB of `a`, gzip-compressed to well under a megabyte, after `head`.
fn gzip_bomb(path: &std::path::Path, head: &str, tail: &str) {
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).expect("create"),
        flate2::Compression::best(),
    );
    gz.write_all(head.as_bytes()).expect("head");
    let block = vec![b'a'; 1 << 20];
    for _ in 0..300 {
        gz.write_all(&block).expect("block");
    }
    gz.write_all(tail.as_bytes()).expect("tail");
    gz.finish().expect("gzip");
}

/// A CSV record with an unterminated quote, 300 MB long once decompressed, and a JSON array
/// element as long: `worker load` stops while reading it, with the line (element) and the
/// limit, and its memory stays bounded (peak RSS read from /proc, bound 64 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_record_stops_the_loader_with_its_line_and_bounded_memory() {
    const BOUND: u64 = 64 * 1024 * 1024;
    let dir = scratch();
    let csv = dir.join("customer.tbl.gz");
    gzip_bomb(
        &csv,
        &format!("{}7|\"Customer#7 ", CUSTOMERS.replace("\n\n", "\n")),
        "|\n",
    );
    assert!(std::fs::metadata(&csv).expect("file").len() < 2 * 1024 * 1024);
    let (ok, text, peak) = load_binary("customer", &csv).await;
    eprintln!("unterminated quote: peak RSS {} MB", peak / 1024 / 1024);
    assert!(!ok, "{text}");
    assert!(
        text.contains("a CSV record starting at line 7 is longer than")
            && text.contains("unterminated quote"),
        "{text}"
    );
    assert!(peak < BOUND, "peak RSS {} MB", peak / 1024 / 1024);

    let json = dir.join("customers.json.gz");
    let first = r#"{"customer_key":"C1","name":"n","address":"a","nation_key":1,"phone":"p","account_balance":1,"market_segment":"m","comment":null}"#;
    gzip_bomb(
        &json,
        &format!("[{first},\n{{\"customer_key\":\"C2\",\"comment\":\""),
        "\"}]",
    );
    let (ok, text, peak) = load_binary("customer", &json).await;
    eprintln!("endless array element: peak RSS {} MB", peak / 1024 / 1024);
    assert!(!ok, "{text}");
    assert!(
        text.contains("an array element starting at element 2 is longer than"),
        "{text}"
    );
    assert!(peak < BOUND, "peak RSS {} MB", peak / 1024 / 1024);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one byte at a time, like a slow socket or a small buffer.
struct Trickle<'a>(&'a [u8]);
impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.is_empty()) {
            (Some((b, rest)), false) => {
                buf[0] = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn csv_rows_carry_the_line_they_start_on_past_blank_lines() {
    let entity = nomnom::generated::RootEntity::from_name("product").expect("product entity");
    let body = "part_key,name,manufacturer,brand,type,size,container,retail_price,comment\n\
                \n\r\n\
                P-1,a,M,B,T,1,C,1.5,\"two\nlines\"\n\
                \n\
                P-2,b,M,B,T,x,C,2,\n";
    for trickle in [false, true] {
        let mut seen = Vec::new();
        let mut each = |row: nomnom::bulk::Row<'_>| -> Result<(), nomnom::bulk::BulkError> {
            seen.push(match row {
                nomnom::bulk::Row::Text(n, _) => format!("{n}:ok"),
                nomnom::bulk::Row::TooLong(n) => format!("{n}:too long"),
                nomnom::bulk::Row::Invalid(n, p) => format!("{n}:{p}"),
            });
            Ok(())
        };
        let walked = if trickle {
            nomnom::bulk::each_csv_row(Trickle(body.as_bytes()), entity, 4096, drop, &mut each)
        } else {
            nomnom::bulk::each_csv_row(body.as_bytes(), entity, 4096, drop, &mut each)
        };
        assert!(walked.is_ok());
        assert_eq!(
            seen,
            ["4:ok", "7:size (column 6): `x` is not a number"],
            "trickle {trickle}"
        );
    }
}
