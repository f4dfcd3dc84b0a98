//! `worker load`: files of CSV, NDJSON (gzip too) and JSON arrays loaded into the stream and
//! stored by the worker; exact accepted/rejected counts with the reasons in a file; loading
//! the same file twice stores nothing twice; the binary's summary and exit code.

use crate::{common, support};
use std::io::Write;
use std::path::PathBuf;

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
    let store = nomnom::store::pg::PgStore::open(&p.db.url, 1).expect("store");
    load_file(
        &nomnom::nats::JetStreamPublisher::new(p.jetstream.clone()),
        Some(&store),
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
            rejected: 2,
            chunks_sent: 1,
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
    p.db.wait_count("SELECT 1 FROM customers", 4).await;
    // One chunk: one status row covering its four rows.
    assert_eq!(
        p.db.count("SELECT 1 FROM message_status WHERE members = 4")
            .await,
        1
    );

    // Again: the database holds the chunk, so it is not even sent.
    let second = load(&p, "customer", &file).await;
    assert_eq!(
        (
            second.accepted,
            second.already_loaded,
            second.rejected,
            second.chunks_sent
        ),
        (4, 4, 2, 0)
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(p.db.count("SELECT 1 FROM message_status").await, 1);
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
    p.db.wait_count(
        "SELECT 1 FROM message_status s, generate_series(1, COALESCE(s.members, 1))",
        23,
    )
    .await;
    let lines: i64 = (1..=20).map(|n| 1 + i64::from(n % 4)).sum();
    assert_eq!(p.db.count("SELECT 1 FROM order_line_items").await, lines);
    assert_eq!(p.db.count("SELECT 1 FROM products").await, 3);
    // Stored by binary COPY, every value reads back as the file has it (dates, decimals,
    // NULLs, text).
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "NULL".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut expected = Vec::new();
    for n in 1..=20u32 {
        let order = support::order(n, 1 + n % 4);
        for item in order["line_items"].as_array().expect("items") {
            expected.push(
                [
                    &order["order_key"],
                    &order["order_date"],
                    &order["total_price"],
                    &item["line_number"],
                    &item["supplier_key"],
                    &item["extended_price"],
                    &item["discount"],
                    &item["ship_date"],
                    &item["commit_date"],
                    &item["receipt_date"],
                ]
                .map(text)
                .join("|"),
            );
        }
    }
    expected.sort();
    let stored: Vec<String> =
        p.db.rows(
            "SELECT o.order_key, o.order_date::text, o.total_price::text, i.line_number::text, \
                    coalesce(i.supplier_key, 'NULL'), i.extended_price::text, i.discount::text, \
                    i.ship_date::text, coalesce(i.commit_date::text, 'NULL'), i.receipt_date::text \
             FROM order_line_items i JOIN orders o USING (order_key) ORDER BY 1, 4",
        )
        .await
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(Option::unwrap_or_default)
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    let mut stored_sorted = stored.clone();
    stored_sorted.sort();
    assert_eq!(stored_sorted, expected);
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
        crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
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
    let mut child = crate::common::process::binary(env!("CARGO_BIN_EXE_worker"))
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

/// Publishes through JetStream until `budget` chunks went out, then fails every publish: a
/// loader that stops part-way (its host lost, the connection gone).
struct FailingAfter {
    inner: nomnom::nats::JetStreamPublisher,
    budget: std::sync::atomic::AtomicUsize,
}

impl nomnom::nats::Publish for FailingAfter {
    fn send(
        &self,
        out: nomnom::nats::Outgoing,
    ) -> nomnom::nats::publish::PublishFuture<
        '_,
        Result<
            nomnom::nats::publish::PublishFuture<'static, nomnom::nats::Acked>,
            nomnom::nats::PublishFailure,
        >,
    > {
        use std::sync::atomic::Ordering;
        let left = self.budget.fetch_sub(1, Ordering::SeqCst);
        if left == 0 || left > usize::MAX / 2 {
            self.budget.store(0, Ordering::SeqCst);
            return Box::pin(async {
                Err(nomnom::nats::PublishFailure {
                    kind: async_nats::jetstream::context::PublishErrorKind::Other,
                    detail: "the loader's connection is gone".into(),
                })
            });
        }
        self.inner.send(out)
    }

    fn max_payload(&self) -> usize {
        self.inner.max_payload()
    }
}

/// `n` small dbgen customers, `|`-separated.
fn customers(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "{i}|Customer#{i:09}|addr {i}|{}|25-989-741-2988|{}.56|BUILDING|c {i}|\n",
                i % 25,
                i % 9999
            )
        })
        .collect()
}

/// A load stopped after 3 of its 5 chunks resumes: the re-run sends only the 2 chunks the
/// database does not hold, and the table then holds the file exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_stopped_part_way_resumes_with_the_chunks_the_database_lacks() {
    use nomnom::envelope::CHUNK_ROWS;
    let p = Pipeline::start().await;
    let dir = scratch();
    let file = dir.join("customer.tbl");
    let rows = CHUNK_ROWS * 4 + 100;
    std::fs::write(&file, customers(rows)).expect("write");
    let entity = RootEntity::from_name("customer").expect("entity");
    let mut options = LoadOptions::for_file(entity, &file, None).expect("options");
    // One chunk in flight at a time: exactly the first three are stored (chunks of at most
    // CHUNK_ROWS rows and CHUNK_BYTES: at least five here).
    options.in_flight = 1;
    let store = nomnom::store::pg::PgStore::open(&p.db.url, 1).expect("store");
    let failing = FailingAfter {
        inner: nomnom::nats::JetStreamPublisher::new(p.jetstream.clone()),
        budget: 3.into(),
    };
    let stopped = load_file(
        &failing,
        Some(&store),
        &p.stream,
        &options,
        Progress::Silent,
    )
    .await;
    let e = stopped.expect_err("the publisher failed");
    assert!(
        e.to_string().contains("loading the file again is safe"),
        "{e}"
    );
    p.db.wait_count("SELECT 1 FROM message_status", 3).await;
    let stored = p.db.count("SELECT 1 FROM customers").await;
    assert!(stored > 0 && stored < rows as i64 * 3 / 4, "{stored}");

    let resumed = load(&p, "customer", &file).await;
    assert_eq!(resumed.rows, rows as u64);
    assert_eq!(resumed.rejected, 0);
    assert!(resumed.chunks_sent >= 2, "{resumed:?}");
    assert_eq!(resumed.already_loaded, stored as u64, "{resumed:?}");
    p.db.wait_count("SELECT 1 FROM customers", rows as i64)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Every row once, as the file has it.
    assert_eq!(p.db.count("SELECT 1 FROM customers").await, rows as i64);
    assert_eq!(
        p.db.count(&format!(
            "SELECT 1 FROM customers WHERE name = 'Customer#' || lpad(customer_key, 9, '0') \
             AND comment = 'c ' || customer_key AND customer_key::int BETWEEN 1 AND {rows}"
        ))
        .await,
        rows as i64
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A chunk whose third member the worker cannot parse (a loader of another schema version sent
/// it): that member alone becomes a dead letter naming its line, the others are stored under
/// one status row per run, a member's status resolves through its run, and the chunk delivered
/// again stores nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_member_the_worker_refuses_is_dead_lettered_alone_and_a_redelivery_adds_nothing() {
    use nomnom::envelope::{MessageChunk, chunk_member_id, new_chunk_id};
    use nomnom::store::Store as _;
    let p = Pipeline::start().await;
    let id = new_chunk_id();
    let row = |key: usize, nation: &str| {
        bytes::Bytes::from(format!(
            r#"{{"customer_key":"{key}","name":"Customer#{key}","address":"a","nation_key":{nation},"phone":"p","account_balance":"1.50","market_segment":"m"}}"#
        ))
    };
    let chunk = MessageChunk {
        id,
        entity: "Customer".into(),
        received_at: chrono::Utc::now(),
        lines: vec![10, 20, 30, 40, 50],
        bodies: vec![
            row(1, "1"),
            row(2, "2"),
            row(3, "\"three\""),
            row(4, "4"),
            row(5, "5"),
        ],
        schema: Some(nomnom::envelope::SchemaVersion::own()),
    };
    let publish = |msg_id: String| {
        let (payload, mut headers) = chunk.parts();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
        let js = p.jetstream.clone();
        let subject = nomnom::nats::message_subject(&p.stream, "customer", &id);
        async move {
            js.publish_with_headers(subject, headers, payload)
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
    };
    publish(id.to_string()).await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    p.db.wait_count("SELECT 1 FROM customers", 4).await;
    let dead =
        p.db.rows("SELECT message_id::text, reason FROM dead_letters")
            .await;
    assert_eq!(
        dead[0][0].as_deref(),
        Some(chunk_member_id(&id, 2).to_string().as_str())
    );
    let reason = dead[0][1].clone().unwrap_or_default();
    assert!(reason.starts_with("line 30: "), "{reason}");
    assert!(reason.contains("nation_key"), "{reason}");
    // Two runs, [0, 2) and [3, 5), and the dead letter's own status.
    let runs = p
        .db
        .rows("SELECT message_id::text, members FROM message_status WHERE status = 'processed' ORDER BY message_id")
        .await;
    let runs: Vec<(String, String)> = runs
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap_or_default(),
                r[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        runs,
        vec![
            (chunk_member_id(&id, 0).to_string(), "2".to_string()),
            (chunk_member_id(&id, 3).to_string(), "2".to_string()),
        ]
    );
    let store = nomnom::store::pg::PgStore::open(&p.db.url, 1).expect("store");
    let status = store
        .message_status(chunk_member_id(&id, 4))
        .await
        .expect("store answers")
        .expect("member 4 has a status");
    assert_eq!(status.status, "processed");
    assert_eq!(status.run, Some((chunk_member_id(&id, 3), 2)));
    let refused = store
        .message_status(chunk_member_id(&id, 2))
        .await
        .expect("store answers")
        .expect("member 2 has a status");
    assert_eq!(refused.status, "dead_lettered");
    assert_eq!(
        store
            .message_status(chunk_member_id(&id, 5))
            .await
            .expect("answers"),
        None
    );
    // The api answers a member's status through its run too.
    let answer: serde_json::Value = reqwest::get(format!(
        "{}/ingest/status/{}",
        p.base,
        chunk_member_id(&id, 1)
    ))
    .await
    .expect("status")
    .json()
    .await
    .expect("JSON");
    assert_eq!(answer["status"], "processed", "{answer}");
    assert_eq!(answer["chunk_run"]["messages"], 2, "{answer}");

    // The same chunk again, past JetStream's de-duplication (another Nats-Msg-Id).
    publish(format!("{id}-again")).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(p.db.count("SELECT 1 FROM customers").await, 4);
    assert_eq!(p.db.count("SELECT 1 FROM message_status").await, 3);
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 1);
    p.stop().await;
}

/// Keys met again: within a file the later line wins, and a second file's changed rows replace
/// the stored ones (staged `COPY` merged with the entity's `on_conflict: update` rule), while
/// rows it repeats unchanged stay as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_lines_and_later_files_win_a_key() {
    let p = Pipeline::start().await;
    let dir = scratch();
    let first = dir.join("customers-1.tbl");
    let mut text = customers(20);
    // Key 7 again at the end, with another name: the later line wins.
    text.push_str("7|Customer#late|addr 7|7|25-989-741-2988|7.56|BUILDING|c 7|\n");
    std::fs::write(&first, &text).expect("write");
    let report = load(&p, "customer", &first).await;
    assert_eq!((report.rows, report.accepted), (21, 21));
    p.db.wait_count("SELECT 1 FROM customers", 20).await;
    p.db.wait_count("SELECT 1 FROM customers WHERE name = 'Customer#late'", 1)
        .await;
    // A second file: rows 1–10 again, row 3 changed.
    let second = dir.join("customers-2.tbl");
    let text = customers(10).replace("|c 3|", "|c 3 changed|");
    std::fs::write(&second, text).expect("write");
    let report = load(&p, "customer", &second).await;
    assert_eq!(
        (report.rows, report.accepted, report.already_loaded),
        (10, 10, 0)
    );
    p.db.wait_count("SELECT 1 FROM customers WHERE comment = 'c 3 changed'", 1)
        .await;
    assert_eq!(p.db.count("SELECT 1 FROM customers").await, 20);
    assert_eq!(
        p.db.count("SELECT 1 FROM customers WHERE comment = 'c ' || customer_key")
            .await,
        19
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A row PostgreSQL refuses (a CHECK constraint the YAML does not know) inside a loaded chunk:
/// the chunk is halved until that row is alone; it is dead-lettered as refused by the database
/// with its line, and every other row is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_isolated_from_its_chunk() {
    let p = Pipeline::start().await;
    p.db.client()
        .await
        .batch_execute(
            "ALTER TABLE customers ADD CONSTRAINT no_key_13 CHECK (customer_key <> '13')",
        )
        .await
        .expect("constraint");
    let dir = scratch();
    let file = dir.join("customers.tbl");
    std::fs::write(&file, customers(40)).expect("write");
    let report = load(&p, "customer", &file).await;
    assert_eq!((report.rows, report.accepted, report.rejected), (40, 40, 0));
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    p.db.wait_count("SELECT 1 FROM customers", 39).await;
    let dead =
        p.db.rows("SELECT reason, reason_class, convert_from(body, 'UTF8') FROM dead_letters")
            .await;
    let reason = dead[0][0].clone().unwrap_or_default();
    assert!(reason.starts_with("line 13: "), "{reason}");
    assert!(reason.contains("no_key_13"), "{reason}");
    assert_eq!(dead[0][1].as_deref(), Some("refused_by_database"));
    assert!(
        dead[0][2]
            .as_deref()
            .unwrap_or("")
            .contains("\"customer_key\":\"13\""),
        "{dead:?}"
    );
    assert_eq!(
        p.db.count("SELECT 1 FROM customers WHERE customer_key = '13'")
            .await,
        0
    );
    p.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
