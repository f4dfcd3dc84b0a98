//! The database layer on the real PostgreSQL: database creation, schema set-up, and the
//! transactional write with its redelivery guard.

use crate::{common, support};
use nomnom::generated::ParsedMessage;
use nomnom::generated::parse_message;
use nomnom::store::PendingWrite;
use nomnom::store::pg as db;
use nomnom_runtime::WriteMode;

/// A fresh database with the schema, and a pool on it.
async fn prepared() -> (common::TestDb, db::DbPool) {
    let test_db = common::TestDb::create().await;
    db::prepare_schema(&test_db.url).await.expect("schema");
    let pool = db::pool(&test_db.url, 2).expect("pool");
    (test_db, pool)
}

/// The first delivery of `message`, at stream position `sequence`, accepted now.
fn write(message: &ParsedMessage, sequence: i64) -> PendingWrite<'_> {
    PendingWrite {
        message_id: uuid::Uuid::now_v7(),
        received_at: chrono::Utc::now(),
        attempts: 1,
        position: nomnom::runtime::Position { epoch: 1, sequence },
        replayed: false,
        content: nomnom::store::Content::Message(message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_is_created_and_schema_is_idempotent() {
    let name = format!("nomnom_test_{}", common::unique());
    let url = format!("{}/{name}", common::pg_admin_url());
    db::ensure_database(&url).await.expect("created");
    db::ensure_database(&url).await.expect("exists: no-op");
    db::prepare_schema(&url).await.expect("schema");
    db::prepare_schema(&url).await.expect("schema again");
    let test_db = common::TestDb { name, url };
    let tables = test_db
        .rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        .await;
    let tables: Vec<String> = tables.into_iter().filter_map(|mut r| r.remove(0)).collect();
    assert_eq!(
        tables,
        vec![
            "__diesel_schema_migrations",
            "admin_actions",
            "customers",
            "dead_letters",
            "discarded_dead_letters",
            "message_status",
            "nomnom_schema_ledger",
            "order_events",
            "order_line_items",
            "orders",
            "products"
        ]
    );
    test_db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_message_writes_nothing_twice() {
    let (test_db, pool) = prepared().await;
    let body = support::order(5, 3).to_string();
    let message = parse_message("order", body.as_bytes()).expect("valid");
    let write = write(&message, 1);
    let mut conn = db::connection(&pool).await.expect("conn");
    let first_mode = db::InsertFirst::default();
    let first = db::write_messages(&mut conn, &[write], &first_mode)
        .await
        .expect("first write");
    assert_eq!(first.written, vec![write.message_id]);
    assert_eq!(first.rows.total(), 4);
    let again = db::write_messages(
        &mut conn,
        &[PendingWrite {
            attempts: 2,
            ..write
        }],
        &first_mode,
    )
    .await
    .expect("second write");
    assert!(again.written.is_empty());
    assert_eq!(again.already_processed, vec![write.message_id]);
    assert_eq!(again.rows.total(), 0);
    assert_eq!(test_db.count("SELECT 1 FROM orders").await, 1);
    assert_eq!(test_db.count("SELECT 1 FROM order_line_items").await, 3);
    assert_eq!(
        test_db
            .rows("SELECT attempts::text, row_count::text FROM message_status")
            .await,
        vec![vec![Some("1".to_string()), Some("4".to_string())]]
    );
    drop(conn);
    test_db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_inside_one_batch_merge_last_wins() {
    let (test_db, pool) = prepared().await;
    let mut second = support::order(9, 2);
    second["clerk"] = serde_json::json!("Clerk#2");
    let a = parse_message("order", support::order(9, 2).to_string().as_bytes()).expect("a");
    let b = parse_message("order", second.to_string().as_bytes()).expect("b");
    let writes: Vec<PendingWrite<'_>> = [(&a, 1), (&b, 2)]
        .into_iter()
        .map(|(m, sequence)| write(m, sequence))
        .collect();
    let mut conn = db::connection(&pool).await.expect("conn");
    let first_mode = db::InsertFirst::default();
    let outcome = db::write_messages(&mut conn, &writes, &first_mode)
        .await
        .expect("one statement per table");
    assert_eq!(outcome.written.len(), 2);
    assert_eq!(
        test_db.rows("SELECT clerk FROM orders").await,
        vec![vec![Some("Clerk#2".to_string())]]
    );
    assert_eq!(test_db.count("SELECT 1 FROM order_line_items").await, 2);
    drop(conn);
    test_db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_message_wins_even_when_an_earlier_one_commits_after_it() {
    let (test_db, pool) = prepared().await;
    let mut later = support::order(11, 1);
    later["clerk"] = serde_json::json!("Clerk#later");
    let earlier =
        parse_message("order", support::order(11, 1).to_string().as_bytes()).expect("earlier");
    let later = parse_message("order", later.to_string().as_bytes()).expect("later");
    let mut conn = db::connection(&pool).await.expect("conn");
    let first_mode = db::InsertFirst::default();
    // Two batches of two workers commit in the opposite order of the stream.
    db::write_messages(&mut conn, &[write(&later, 20)], &first_mode)
        .await
        .expect("later first");
    db::write_messages(&mut conn, &[write(&earlier, 10)], &first_mode)
        .await
        .expect("earlier second");
    assert_eq!(
        test_db
            .rows("SELECT clerk, _nomnom_seq::text FROM orders")
            .await,
        vec![vec![
            Some("Clerk#later".to_string()),
            Some("20".to_string())
        ]]
    );
    assert_eq!(test_db.count("SELECT 1 FROM message_status").await, 2);
    drop(conn);
    test_db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_meeting_an_existing_key_is_written_again_with_upserts() {
    let (test_db, pool) = prepared().await;
    let mut changed = support::order(21, 2);
    changed["clerk"] = serde_json::json!("Clerk#changed");
    let original = parse_message("order", support::order(21, 2).to_string().as_bytes()).expect("a");
    let changed = parse_message("order", changed.to_string().as_bytes()).expect("changed");
    let other =
        parse_message("order", support::order(22, 3).to_string().as_bytes()).expect("other");
    let mut conn = db::connection(&pool).await.expect("conn");
    let first_mode = db::InsertFirst::default();
    db::write_messages(&mut conn, &[write(&original, 1)], &first_mode)
        .await
        .expect("new keys");
    assert_eq!(first_mode.next_mode(), WriteMode::Insert);
    // A new order beside an update of the first: the plain insert fails on the order key, the
    // batch is written again with upserts, both messages in full.
    let batch = [write(&changed, 2), write(&other, 3)];
    let outcome = db::write_messages(&mut conn, &batch, &first_mode)
        .await
        .expect("upserted");
    assert_eq!(
        outcome.written,
        vec![batch[0].message_id, batch[1].message_id]
    );
    assert_eq!(outcome.rows.total(), 2 + 2 + 3);
    assert_eq!(
        test_db
            .rows("SELECT clerk FROM orders ORDER BY order_key")
            .await,
        vec![
            vec![Some("Clerk#changed".to_string())],
            vec![Some("Clerk#000000951".to_string())]
        ]
    );
    assert_eq!(test_db.count("SELECT 1 FROM order_line_items").await, 5);
    assert_eq!(test_db.count("SELECT 1 FROM message_status").await, 3);
    // The batches right after a conflict go straight to upserts.
    assert_eq!(first_mode.next_mode(), WriteMode::Upsert);
    drop(conn);
    test_db.drop_db().await;
}

/// What the edge accepts, PostgreSQL stores: every literal `check_numeric` passes is written as
/// a bound NUMERIC (diesel's binary format) and inside a jsonb value; the boundaries are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_literals_accepted_at_the_edge_are_stored_by_postgresql() {
    use diesel::sql_types::{Jsonb, Numeric};
    use diesel_async::RunQueryDsl;
    use std::str::FromStr;

    let nines = |n: usize| "9".repeat(n);
    let literals: Vec<(String, bool)> = vec![
        ("0".into(), true),
        ("-0.000".into(), true),
        ("0e99999".into(), true),
        ("0e-16383".into(), true),
        ("0.0e-16383".into(), false),
        ("173665.47".into(), true),
        ("-1.5E+3".into(), true),
        ("1e-16383".into(), true),
        ("1e-16384".into(), false),
        ("1.5e-16382".into(), true),
        ("1.5e-16383".into(), false),
        ("1e131063".into(), true),
        ("1e131072".into(), false),
        (nines(131_064), true),
        (nines(131_065), false),
        ("1e9223372036854775807".into(), false),
        ("-1e-9223372036854775807".into(), false),
        ("1e99999999999999999999".into(), false),
    ];
    let mut conn = db::connect(&format!("{}/test", common::pg_admin_url()))
        .await
        .expect("connect");
    #[derive(diesel::QueryableByName)]
    #[allow(dead_code)] // loaded to prove PostgreSQL took the value
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::Text)]
        text: String,
    }
    for (literal, expected) in literals {
        let verdict = nomnom::runtime::check_numeric(&literal);
        let short = &literal[..literal.len().min(30)];
        assert_eq!(verdict.is_ok(), expected, "{short}: {verdict:?}");
        let exponent_fits = literal
            .rsplit(['e', 'E'])
            .next()
            .is_some_and(|e| e.trim_start_matches(['-', '+']).len() < 10);
        if verdict.is_err() && !exponent_fits {
            continue;
        }
        if verdict.is_err() {
            // The boundary is exact: one step past it, PostgreSQL refuses the literal too.
            let stored: Result<Stored, _> =
                diesel::sql_query("SELECT ($1::text::numeric)::text AS text")
                    .bind::<diesel::sql_types::Text, _>(&literal)
                    .get_result(&mut *conn)
                    .await;
            assert!(
                stored.is_err(),
                "{short} was refused but PostgreSQL stores it"
            );
            continue;
        }
        let value = bigdecimal::BigDecimal::from_str(&literal).expect("parses");
        let stored: Result<Stored, _> = diesel::sql_query("SELECT ($1::numeric)::text AS text")
            .bind::<Numeric, _>(&value)
            .get_result(&mut *conn)
            .await;
        assert!(stored.is_ok(), "{short} as NUMERIC: {:?}", stored.err());
        // The worker binds decimals as binary `numeric[]` built from their text
        // (`pg::NumericArray`): that path stores every accepted value too.
        let numeric = nomnom_runtime::Numeric::parse(&literal).expect("accepted");
        let stored: Result<Stored, _> =
            diesel::sql_query("SELECT (($1::numeric[])[1])::text AS text")
                .bind::<diesel::sql_types::Array<Numeric>, _>(
                    nomnom_runtime::pg::NumericArray::new([&numeric]),
                )
                .get_result(&mut *conn)
                .await;
        assert!(
            stored.is_ok(),
            "{short} bound as binary numeric[]: {:?}",
            stored.err()
        );
        let json: serde_json::Value =
            serde_json::from_str(&format!("{{\"n\":{literal}}}")).expect("json");
        let stored: Result<Stored, _> = diesel::sql_query("SELECT ($1::jsonb)::text AS text")
            .bind::<Jsonb, _>(&json)
            .get_result(&mut *conn)
            .await;
        assert!(stored.is_ok(), "{short} in jsonb: {:?}", stored.err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numerics_bound_in_binary_are_what_postgresql_reads_from_their_text() {
    use diesel::sql_types::{Array, Nullable, Numeric as SqlNumeric, Text};
    use diesel_async::RunQueryDsl as _;
    use nomnom_runtime::Numeric;
    use nomnom_runtime::pg::NumericArray;

    #[derive(diesel::QueryableByName)]
    struct Pair {
        #[diesel(sql_type = Nullable<Text>)]
        binary: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        text: Option<String>,
    }

    let (test_db, pool) = prepared().await;
    let mut texts: Vec<String> = [
        "0",
        "-0",
        "+0",
        "0.000",
        "0e-5",
        "0e99999",
        "0e-16383",
        "1",
        "-1",
        "12.50",
        "-12.50",
        ".5",
        "5.",
        "-.5",
        "0.06",
        "23696.25",
        "398465.75",
        "41.0",
        "9999",
        "10000",
        "10001",
        "0.0001",
        "0.00001",
        "123456789.123456789",
        "1e5",
        "1E+5",
        "1.5e1",
        "1.500e1",
        "15e-1",
        "1e-3",
        "-2.5e-7",
        "1e-16383",
        "9.99e-16380",
        "1e131000",
        "-7e130000",
        "100000000000000000000000000000000000000001",
        "0.000000000000000000000000000000000000001",
        "18446744073709551616",
        "-9223372036854775808",
        "000123.4500",
        "1234e-2",
        "1234e-4",
        "1234e-5",
        "1234e2",
        "12345e-1",
        "5e3",
        "5e4",
        "5e-4",
        "5e-5",
    ]
    .map(String::from)
    .to_vec();
    let long = format!("{}.{}", "9".repeat(1000), "1".repeat(999));
    texts.push(long);
    let values: Vec<Option<Numeric>> = texts
        .iter()
        .map(|t| Some(Numeric::parse(t).unwrap_or_else(|e| panic!("{t}: {e}"))))
        .chain([None])
        .collect();
    let text_binds: Vec<Option<&str>> = texts
        .iter()
        .map(|t| Some(t.as_str()))
        .chain([None])
        .collect();
    let mut conn = pool.get().await.expect("connection");
    let pairs: Vec<Pair> = diesel::sql_query(
        "SELECT b::text AS binary, t::numeric::text AS text \
         FROM unnest($1::numeric[], $2::text[]) AS u(b, t)",
    )
    .bind::<Array<Nullable<SqlNumeric>>, _>(NumericArray::new(values.iter().map(Option::as_ref)))
    .bind::<Array<Nullable<Text>>, _>(text_binds)
    .load(&mut conn)
    .await
    .expect("select");
    assert_eq!(pairs.len(), texts.len() + 1);
    for (pair, text) in pairs.iter().zip(texts.iter().map(Some).chain([None])) {
        assert_eq!(pair.binary, pair.text, "{text:?}");
    }
    drop(conn);
    test_db.drop_db().await;
}

/// Discarding a dead letter moves its record, whole, among the discarded ones with who and why;
/// replay no longer sees it, its status stays dead-lettered, and a second discard finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discarded_dead_letter_is_kept_whole_with_who_and_why() {
    use nomnom::store::{DeadLetter, DeadLetterPage, Store as _};
    let test_db = common::TestDb::create().await;
    let store = db::PgStore::open(&test_db.url, 2).expect("store");
    store.prepare().await.expect("prepared");
    let id = uuid::Uuid::now_v7();
    let body = bytes::Bytes::from_static(b"{\"order_key\": \x00 not json");
    store
        .record_dead_letter(&DeadLetter {
            message_id: id,
            entity: "Order".into(),
            body: body.clone(),
            class: nomnom::store::ReasonClass::Invalid,
            reason: "invalid JSON".into(),
            attempts: 3,
            received_at: chrono::Utc::now(),
            position: nomnom::runtime::Position {
                epoch: 5,
                sequence: 42,
            },
            record_id: format!("{id}:1"),
        })
        .await
        .expect("recorded");
    assert!(
        store
            .discard_dead_letter(id, "cli:ops", "a test message, not a customer's")
            .await
            .expect("discarded")
    );
    let page = DeadLetterPage {
        limit: 10,
        ..Default::default()
    };
    assert!(store.dead_letters(&page).await.expect("page").is_empty());
    let kept = test_db
        .count(&format!(
            "SELECT 1 FROM discarded_dead_letters WHERE message_id = '{id}' \
             AND body = decode('{}', 'hex') AND reason = 'invalid JSON' AND attempts = 3 \
             AND position_epoch = 5 AND position_seq = 42 \
             AND discarded_by = 'cli:ops' AND note = 'a test message, not a customer''s'",
            hex(&body)
        ))
        .await;
    assert_eq!(kept, 1);
    let status = store
        .message_status(id)
        .await
        .expect("status")
        .expect("a row");
    assert_eq!(status.status, "dead_lettered");
    assert!(
        !store
            .discard_dead_letter(id, "cli:ops", "again")
            .await
            .expect("answers")
    );
    test_db.drop_db().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every row keeps the id of the message that last wrote it: the trace of a message lists the
/// rows it wrote that no later message overwrote (its order and line items), bounded per table;
/// the counts per entity and the dead letters grouped by entity and reason class read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_leads_to_the_message_that_last_wrote_it() {
    use nomnom::store::{DeadLetter, ReasonClass, Store as _};
    let test_db = common::TestDb::create().await;
    let store = db::PgStore::open(&test_db.url, 2).expect("store");
    store.prepare().await.expect("prepared");
    let first = parse_message("order", support::order(11, 2).to_string().as_bytes()).expect("ok");
    let later = parse_message("order", support::order(11, 3).to_string().as_bytes()).expect("ok");
    let (first, later) = (write(&first, 10), write(&later, 20));
    store.write_batch(&[first]).await.expect("first");
    store.write_batch(&[later]).await.expect("later");
    assert_eq!(
        test_db
            .rows("SELECT _nomnom_message_id::text FROM orders")
            .await,
        vec![vec![Some(later.message_id.to_string())]]
    );
    let trace = store
        .message_trace(first.message_id, 10)
        .await
        .expect("trace");
    assert_eq!(trace.status.expect("status").status, "processed");
    assert!(trace.rows.is_empty(), "{:?}", trace.rows);
    let trace = store
        .message_trace(later.message_id, 10)
        .await
        .expect("trace");
    let tables: Vec<&str> = trace.rows.iter().map(|r| r.table.as_str()).collect();
    assert_eq!(
        tables,
        [
            "orders",
            "order_line_items",
            "order_line_items",
            "order_line_items"
        ]
    );
    assert_eq!(trace.rows[0].key["order_key"], "ORD-000011");
    assert_eq!(trace.rows[3].key["line_number"], "3");
    assert!(!trace.rows_truncated);
    let bounded = store
        .message_trace(later.message_id, 2)
        .await
        .expect("trace");
    assert_eq!(bounded.rows.len(), 3);
    assert!(bounded.rows_truncated);
    // A message the store never saw has an empty trace.
    let unknown = store
        .message_trace(uuid::Uuid::now_v7(), 10)
        .await
        .expect("trace");
    assert_eq!(unknown, Default::default());

    let dead = uuid::Uuid::now_v7();
    store
        .record_dead_letter(&DeadLetter {
            message_id: dead,
            entity: "Order".into(),
            body: bytes::Bytes::from_static(b"{}"),
            class: ReasonClass::Invalid,
            reason: "order_key: required".into(),
            attempts: 1,
            received_at: chrono::Utc::now(),
            position: Default::default(),
            record_id: format!("{dead}:1"),
        })
        .await
        .expect("recorded");
    let groups = store.dead_letter_groups().await.expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(
        (groups[0].entity.as_str(), groups[0].class, groups[0].count),
        ("Order", ReasonClass::Invalid, 1)
    );
    let trace = store.message_trace(dead, 10).await.expect("trace");
    assert_eq!(trace.dead_letter.expect("kept").class, ReasonClass::Invalid);
    // Counted with the same filters as the pages.
    let count = |filter: nomnom::store::DeadLetterFilter| {
        let store = &store;
        async move { store.count_dead_letters(&filter).await.expect("count") }
    };
    assert_eq!(count(Default::default()).await, 1);
    let of = |entity: &str, class: Option<ReasonClass>, reason: Option<&str>| {
        nomnom::store::DeadLetterFilter {
            entity: Some(entity.into()),
            class,
            reason: reason.map(str::to_string),
            ..Default::default()
        }
    };
    assert_eq!(
        count(of("order", Some(ReasonClass::Invalid), Some("REQUIRED"))).await,
        1
    );
    assert_eq!(
        count(of("order", Some(ReasonClass::RefusedByDatabase), None)).await,
        0
    );
    assert_eq!(count(of("customer", None, None)).await, 0);
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let counts = store.entity_counts(hour_ago).await.expect("counts");
    let total: (i64, i64, i64) = counts.iter().fold((0, 0, 0), |t, c| {
        (
            t.0 + c.processed,
            t.1 + c.dead_lettered,
            t.2 + c.processed_recent,
        )
    });
    assert_eq!(total, (2, 1, 2));
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    let later_counts = store.entity_counts(future).await.expect("counts");
    assert!(later_counts.iter().all(|c| c.processed_recent == 0));
    test_db.drop_db().await;
}
