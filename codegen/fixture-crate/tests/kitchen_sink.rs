//! Round trips of the `kitchen_sink` fixture: every type, nested derived entities, coalesce,
//! constant, dotted paths, List[String] parents, keyword field names, and its upserts on the
//! real PostgreSQL.

use nomnom_codegen_fixtures::kitchen_sink::{ParsedMessage, RootEntity, ShipmentMessage};
use nomnom_runtime::WriteMode;
use serde_json::{Value, json};
use support::{FixtureDb, origin, pg, texts};

mod support;

fn shipment() -> Value {
    json!({
        "id_code": "6f1c1e52-0d5e-4c4e-9d6b-7b3a2c1d0e9f",
        "shipped_at": "2024-05-01T12:30:00+02:00",
        "weight": 12.5,
        "pieces": 9007199254740993i64,
        "fragile": true,
        "meta": {"note": "keep dry", "n": [1, 2]},
        "tags": ["express", "intl"],
        "carrier": "DHL",
        "fallback_carrier": null,
        "pickup_time": "08:15:30.5",
        "label_png": "iVBORw0KGgo=",
        "signature": null,
        "match": "yes",
        "origin": {"address": {"city": "Lyon"}},
        "packages": [
            {"label": "A", "carrier": "UPS", "size": 1.25, "handled_at": "23:59:59.999999",
             "contents": {"items": [{"sku": "X1", "qty": 2}, {"sku": "X2", "qty": 5}]}},
            {"label": "B"}
        ]
    })
}

fn parse(v: &Value) -> Result<ShipmentMessage, Vec<(String, String)>> {
    match RootEntity::Shipment.parse_value(v) {
        Ok(ParsedMessage::Shipment(m)) => Ok(m),
        Ok(other) => panic!("parsed as another entity: {other:?}"),
        Err(errors) => Err(errors.into_iter().map(|e| (e.field, e.error)).collect()),
    }
}

#[test]
fn every_type_and_transform_round_trips() {
    let m = parse(&shipment()).expect("valid");
    let s = &m.shipment;
    assert_eq!(
        s.id_code.to_string(),
        "6f1c1e52-0d5e-4c4e-9d6b-7b3a2c1d0e9f"
    );
    assert_eq!(s.shipped_at.to_rfc3339(), "2024-05-01T10:30:00+00:00");
    assert_eq!(s.weight, 12.5);
    assert_eq!(s.pieces, 9007199254740993);
    assert!(s.fragile);
    assert_eq!(s.meta, Some(json!({"note": "keep dry", "n": [1, 2]})));
    assert_eq!(s.tags, vec!["express", "intl"]);
    assert_eq!(s.r#match, "yes");
    assert_eq!(s.origin_city.as_deref(), Some("Lyon"));
    assert_eq!(s.pickup_time.to_string(), "08:15:30.500");
    assert_eq!(s.label_png, b"\x89PNG\r\n\x1a\n");
    assert_eq!(s.signature, None);
    // Bytes serialize back to the base64 they were read from.
    let back = serde_json::to_value(s).expect("serialize");
    assert_eq!(back["label_png"], json!("iVBORw0KGgo="));
    assert_eq!(back["signature"], Value::Null);
    assert_eq!(back["pickup_time"], json!("08:15:30.500"));
    // The Time constant and an optional Time read from each element.
    assert_eq!(m.package[0].cutoff.to_string(), "17:30:00.250");
    assert_eq!(
        m.package[0].handled_at.map(|t| t.to_string()).as_deref(),
        Some("23:59:59.999999")
    );
    assert_eq!(m.package[1].handled_at, None);

    // Derived: coalesce picks the element's carrier, then the parent's fallback, then carrier.
    let labels: Vec<(&str, &str, &str, i32)> = m
        .package
        .iter()
        .map(|p| {
            (
                p.label.as_str(),
                p.carrier.as_str(),
                p.source.as_str(),
                p.priority,
            )
        })
        .collect();
    assert_eq!(labels, vec![("A", "UPS", "api", 3), ("B", "DHL", "api", 3)]);
    assert_eq!(m.package[0].shipment_code, s.id_code);
    assert_eq!(
        m.package[0]
            .dims
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("1.25")
    );
    assert_eq!(m.package[1].dims, None);
    assert_eq!(m.package[1].items, None);

    // Depth 3: items of package A, with the package label copied from their parent.
    let items: Vec<(&str, &str, i32)> = m
        .package_item
        .iter()
        .map(|i| (i.label.as_str(), i.sku.as_str(), i.qty))
        .collect();
    assert_eq!(items, vec![("A", "X1", 2), ("A", "X2", 5)]);

    // A derived entity repeated for a List[String].
    let tags: Vec<&str> = m.shipment_tag.iter().map(|t| t.tag.as_str()).collect();
    assert_eq!(tags, vec!["express", "intl"]);
    assert_eq!(m.row_count(), 1 + 2 + 2 + 2);
}

#[test]
fn coalesce_falls_back_to_the_parent() {
    let mut v = shipment();
    v["fallback_carrier"] = json!("FedEx");
    let m = parse(&v).expect("valid");
    assert_eq!(m.package[1].carrier, "FedEx");
}

#[test]
fn errors_at_every_depth_name_their_path() {
    let mut v = shipment();
    v["id_code"] = json!("not-a-uuid");
    v["shipped_at"] = json!("2024-05-01 12:30");
    v["pieces"] = json!(9.5);
    v["fragile"] = json!("yes");
    v["tags"] = json!(["ok", 3]);
    v["carrier"] = json!("a carrier name longer than twenty");
    v["packages"][1] = json!({"size": "big"});
    v["packages"][0]["contents"]["items"][1]["qty"] = json!(99999999999i64);
    let errors = parse(&v).expect_err("invalid");
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "id_code",
            "shipped_at",
            "pieces",
            "fragile",
            "tags",
            "carrier",
            "packages[0].contents.items[1].qty",
            "packages[1].label",
            "packages[1].size",
            // The ShipmentTag element itself: same problem, exact path.
            "tags[1]",
        ],
        "{errors:?}"
    );
    assert_eq!(errors[4].1, "element 1 must be a string, found a number");
    assert_eq!(errors[8].1, "`big` is not a decimal number");
}

#[test]
fn nulls_follow_nullability() {
    let mut v = shipment();
    v["meta"] = Value::Null;
    v.as_object_mut().expect("object").remove("origin");
    let m = parse(&v).expect("nullable fields may be null or missing");
    assert_eq!((m.shipment.meta, m.shipment.origin_city), (None, None));
    v["weight"] = Value::Null;
    let errors = parse(&v).expect_err("weight is not nullable");
    assert_eq!(
        errors,
        vec![(
            "weight".into(),
            "required field is missing or null (expected a number)".into()
        )]
    );
}

#[test]
fn reference_entities_without_persistence_generate_no_code() {
    assert_eq!(
        RootEntity::ALL.iter().map(|e| e.name()).collect::<Vec<_>>(),
        vec!["Shipment", "Reading", "Quote", "Level"]
    );
    let tables: Vec<&str> = nomnom_codegen_fixtures::kitchen_sink::TABLES
        .iter()
        .map(|t| t.table)
        .collect();
    assert_eq!(
        tables,
        vec![
            "shipments",
            "packages",
            "package_items",
            "readings",
            "quotes",
            "levels"
        ]
    );
}

#[test]
fn json_schemas_come_from_the_type_table() {
    let schema = RootEntity::Shipment.json_schema();
    let props = &schema["properties"];
    assert_eq!(props["pickup_time"]["type"], "string");
    assert_eq!(
        props["pickup_time"]["pattern"],
        nomnom_runtime::TIME_PATTERN
    );
    assert_eq!(
        props["pickup_time"]["description"],
        "Local time of day the carrier collects"
    );
    assert_eq!(props["label_png"]["contentEncoding"], "base64");
    assert_eq!(props["signature"]["anyOf"][1]["type"], "null");
    assert_eq!(props["carrier"]["maxLength"], 20);
    let package = &props["packages"]["items"]["properties"];
    assert_eq!(package["label"]["type"], "string");
    let required: Vec<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(required.contains(&"label_png") && !required.contains(&"signature"));
}

#[tokio::test]
async fn upserts_follow_on_conflict_and_unicity() {
    let db = FixtureDb::create(nomnom_codegen_fixtures::kitchen_sink::TABLES).await;
    let (url, mut conn) = (db.url.clone(), db.connect().await);
    let first = RootEntity::Shipment
        .parse_value(&shipment())
        .expect("valid");
    let mut changed = shipment();
    changed["weight"] = json!(99.0);
    changed["packages"][0]["carrier"] = json!("TNT");
    let second = RootEntity::Shipment.parse_value(&changed).expect("valid");
    for (m, sequence) in [(&first, 1), (&second, 2)] {
        // `write` takes the batch: one per attempt.
        let batch = || {
            let mut batch = nomnom_codegen_fixtures::kitchen_sink::RowBatch::default();
            batch.push(m, origin(1, sequence));
            batch
        };
        if sequence == 1 {
            batch()
                .write(&mut conn, WriteMode::Insert)
                .await
                .expect("new keys insert");
        } else {
            // A plain insert refuses a key that exists (the worker then upserts).
            let refused = batch().write(&mut conn, WriteMode::Insert).await;
            assert!(
                matches!(
                    refused,
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _
                    ))
                ),
                "{refused:?}"
            );
            batch()
                .write(&mut conn, WriteMode::Upsert)
                .await
                .expect("upsert");
        }
    }
    let client = pg(&url).await;
    // on_conflict: ignore → first write wins; the keyword column is stored as "match".
    assert_eq!(
        texts(
            &client,
            "SELECT weight, pieces, fragile, tags::text, \"match\", meta::text FROM shipments"
        )
        .await,
        vec![r#"12.5|9007199254740993|t|{express,intl}|yes|{"n": [1, 2], "note": "keep dry"}"#]
    );
    // Time and Bytes land as TIME and BYTEA, to the microsecond and the byte.
    assert_eq!(
        texts(
            &client,
            "SELECT pickup_time::text, encode(label_png, 'hex'), signature IS NULL, \
             pg_typeof(pickup_time)::text, pg_typeof(label_png)::text FROM shipments"
        )
        .await,
        vec!["08:15:30.5|89504e470d0a1a0a|t|time without time zone|bytea"]
    );
    assert_eq!(
        texts(
            &client,
            "SELECT cutoff::text, coalesce(handled_at::text, 'NULL') FROM packages ORDER BY label"
        )
        .await,
        vec!["17:30:00.25|23:59:59.999999", "17:30:00.25|NULL"]
    );
    // on_conflict: update (default) → last write wins.
    assert_eq!(
        texts(
            &client,
            "SELECT label, carrier, dims::text FROM packages ORDER BY label"
        )
        .await,
        vec!["A|TNT|1.25", "B|DHL|NULL"]
    );
    // No unicity_fields → plain inserts (the worker's message_status guard prevents doubles).
    assert_eq!(
        texts(&client, "SELECT count(*) FROM package_items").await,
        vec!["4"]
    );
    drop(client);
    drop(conn);
    db.drop().await;
}

/// `order_by: version` decides which version a key keeps: the highest, whether versions arrive
/// reversed in one batch or across batches, and against positions that say otherwise; equal
/// versions fall back to the later position (a later stream epoch is later).
#[tokio::test]
async fn a_declared_version_keeps_the_highest_whatever_the_arrival_order() {
    use nomnom_codegen_fixtures::kitchen_sink::RowBatch;
    let db = FixtureDb::create(nomnom_codegen_fixtures::kitchen_sink::TABLES).await;
    let (url, mut conn) = (db.url.clone(), db.connect().await);
    let reading = |sensor: &str, version: i64, value: f64| {
        RootEntity::Reading
            .parse_value(&json!({
                "sensor": sensor,
                "version": version,
                "taken_at": "2026-12-07T10:00:00Z",
                "value": value
            }))
            .expect("valid")
    };
    let at = origin;
    // One batch, versions reversed: 3 arrives first, 2 after it.
    let (v3, v2) = (reading("s1", 3, 3.0), reading("s1", 2, 2.0));
    let mut batch = RowBatch::default();
    batch.push(&v3, at(1, 1));
    batch.push(&v2, at(1, 2));
    batch
        .write(&mut conn, WriteMode::Insert)
        .await
        .expect("insert");
    // Across batches: 5, then 4 later (and in a later stream epoch), then 5 again later.
    let (v5, v4, v5_again) = (
        reading("s2", 5, 5.0),
        reading("s2", 4, 4.0),
        reading("s2", 5, 5.5),
    );
    for (m, position) in [(&v5, at(1, 3)), (&v4, at(2, 1)), (&v5_again, at(2, 2))] {
        let mut batch = RowBatch::default();
        batch.push(m, position);
        batch
            .write(&mut conn, WriteMode::Upsert)
            .await
            .expect("upsert");
    }
    // A stale version of s1 in a later batch changes nothing.
    let v1 = reading("s1", 1, 1.0);
    let mut batch = RowBatch::default();
    batch.push(&v1, at(3, 1));
    batch
        .write(&mut conn, WriteMode::Upsert)
        .await
        .expect("upsert");
    let client = pg(&url).await;
    assert_eq!(
        texts(
            &client,
            "SELECT sensor, version, value, _nomnom_epoch, _nomnom_seq FROM readings ORDER BY sensor"
        )
        .await,
        vec!["s1|3|3|1|1", "s2|5|5.5|2|2"]
    );
    drop(client);
    drop(conn);
    db.drop().await;
}

/// A String key without `max_length` (`Reading.sensor`): a value at the limit the build derived
/// from PostgreSQL's index entry is stored (random CJK text, which compresses poorly), one byte
/// more is refused by the parser and by the validate-only check alike, naming the field.
#[tokio::test]
async fn an_unbounded_string_key_is_refused_past_what_the_index_holds() {
    use nomnom_codegen_fixtures::kitchen_sink::RowBatch;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut sensor = String::new();
    while sensor.len() + 3 <= 2600 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        sensor.push(char::from_u32(0x4e00 + (seed % 0x5000) as u32).expect("CJK"));
    }
    sensor.push_str(&"x".repeat(2600 - sensor.len()));
    assert_eq!(sensor.len(), 2600);
    let body = |sensor: &str| json!({"sensor": sensor, "version": 1, "taken_at": "2026-12-07T10:00:00Z", "value": 1.0});
    let too_long = format!("{sensor}y");
    let refused = RootEntity::Reading
        .parse_value(&body(&too_long))
        .expect_err("refused");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].field, "sensor");
    assert!(
        refused[0].error.contains("2601 bytes"),
        "{}",
        refused[0].error
    );
    let doc = nomnom_runtime::doc_from_value(&body(&too_long));
    let checked = RootEntity::Reading
        .validate_json(doc.root())
        .expect_err("refused");
    assert_eq!(checked, refused, "validate and parse agree");

    let db = FixtureDb::create(nomnom_codegen_fixtures::kitchen_sink::TABLES).await;
    let mut conn = db.connect().await;
    let m = RootEntity::Reading
        .parse_value(&body(&sensor))
        .expect("at the limit");
    let mut batch = RowBatch::default();
    batch.push(&m, origin(1, 1));
    batch
        .write(&mut conn, WriteMode::Insert)
        .await
        .expect("a key at the limit fits the index");
    drop(conn);
    db.drop().await;
}

/// `order_by` on text and on a decimal: text compares byte by byte in the batch and in the
/// table alike whatever the database's collation (`"a-1"` after `"B-2"`, where a locale would
/// put it first), decimals numerically (`10` after `9.5`, though `"10" < "9.5"` as text); a
/// stale version arriving later changes nothing.
#[tokio::test]
async fn text_and_decimal_versions_order_as_postgresql_orders_them() {
    use nomnom_codegen_fixtures::kitchen_sink::RowBatch;
    // A database whose own collation orders text as a locale does (ICU en-US: `a` before `B`).
    let db = FixtureDb::create_with(
        nomnom_codegen_fixtures::kitchen_sink::TABLES,
        "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'",
    )
    .await;
    let mut conn = db.connect().await;
    let quote = |stamp: &str, price: &str| {
        let body: Value = serde_json::from_str(&format!(
            r#"{{"symbol": "NOM", "stamp": "{stamp}", "price": {price}}}"#
        ))
        .expect("json");
        RootEntity::Quote.parse_value(&body).expect("valid")
    };
    let level = |revision: &str, litres: f64| {
        let body: Value = serde_json::from_str(&format!(
            r#"{{"tank": 7, "revision": {revision}, "litres": {litres}}}"#
        ))
        .expect("json");
        RootEntity::Level.parse_value(&body).expect("valid")
    };
    let at = |sequence| origin(1, sequence);
    let (q_old, q_new, q_stale) = (
        quote("B-2", "1.5"),
        quote("a-1", "2.5"),
        quote("A-0", "0.5"),
    );
    let (l_new, l_old, l_stale) = (level("10", 100.0), level("9.5", 95.0), level("9.75", 97.5));
    // Batch 1: an old quote; the newer level before the older one.
    let mut batch = RowBatch::default();
    batch.push(&q_old, at(1));
    batch.push(&l_new, at(2));
    batch.push(&l_old, at(3));
    batch
        .write(&mut conn, WriteMode::Insert)
        .await
        .expect("insert");
    // Batches 2 and 3: the newer quote, then stale versions of both.
    for (q, l, seq) in [(&q_new, &l_old, 4), (&q_stale, &l_stale, 6)] {
        let mut batch = RowBatch::default();
        batch.push(q, at(seq));
        batch.push(l, at(seq + 1));
        batch
            .write(&mut conn, WriteMode::Upsert)
            .await
            .expect("upsert");
    }
    let client = pg(&db.url).await;
    assert_eq!(
        texts(&client, "SELECT stamp, price FROM quotes").await,
        vec!["a-1|2.5"]
    );
    assert_eq!(
        texts(&client, "SELECT revision, litres FROM levels").await,
        vec!["10|100"]
    );
    drop(client);
    drop(conn);
    db.drop().await;
}

/// Stores `batch`'s rows with binary `COPY` over `client`: straight into the tables, or (with
/// `staged`) into the staging tables merged with the `ON CONFLICT` rules, as the worker does.
async fn copy_batch(
    client: &mut tokio_postgres::Client,
    batch: nomnom_codegen_fixtures::kitchen_sink::RowBatch<'_>,
    staged: bool,
) {
    use futures::SinkExt as _;
    let tx = client.transaction().await.expect("begin");
    for table in batch.copy() {
        if table.rows == 0 {
            continue;
        }
        let data = bytes::Bytes::from(table.data.expect("every value encodes"));
        let copy_sql = match (staged, table.stage_sql, table.stage_copy_sql) {
            (true, Some(stage), Some(copy)) => {
                tx.batch_execute(stage).await.expect("staging table");
                copy
            }
            _ => table.copy_sql,
        };
        let sink = tx.copy_in::<_, bytes::Bytes>(copy_sql).await.expect("copy");
        futures::pin_mut!(sink);
        sink.send(data).await.expect("rows sent");
        sink.finish().await.expect("rows copied");
        if let (true, Some(merge)) = (staged, table.merge_sql) {
            tx.execute(merge, &[]).await.expect("merge");
        }
    }
    tx.commit().await.expect("commit");
}

/// Every stored column of every table as text, rows in order, for exact comparisons.
async fn every_column(client: &tokio_postgres::Client) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for t in nomnom_codegen_fixtures::kitchen_sink::TABLES {
        let columns: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                format!(
                    "coalesce(\"{}\"::text, 'NULL')",
                    c.name.replace('"', "\"\"")
                )
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM \"{}\" ORDER BY 1",
            columns.join(" || '|' || "),
            t.table
        );
        out.push((t.table.to_string(), texts(client, &sql).await));
    }
    out
}

/// Binary `COPY` stores every type exactly as the `unnest` inserts do (numbers to the last
/// digit, NULLs, times to the microsecond, bytes, JSON, text arrays, the message id and
/// position), and a staged `COPY` merged with the `ON CONFLICT` rules leaves what the upserts
/// leave.
#[tokio::test]
async fn copy_stores_every_type_as_the_inserts_do() {
    use nomnom_codegen_fixtures::kitchen_sink::RowBatch;
    let (by_insert, by_copy) = (
        FixtureDb::create(nomnom_codegen_fixtures::kitchen_sink::TABLES).await,
        FixtureDb::create(nomnom_codegen_fixtures::kitchen_sink::TABLES).await,
    );
    let mut conn = by_insert.connect().await;
    let mut client = pg(&by_copy.url).await;
    let first = RootEntity::Shipment
        .parse_value(&shipment())
        .expect("valid");
    let mut changed = shipment();
    changed["weight"] = json!(99.0);
    changed["packages"][0]["carrier"] = json!("TNT");
    let second = RootEntity::Shipment.parse_value(&changed).expect("valid");
    for (m, sequence) in [(&first, 1), (&second, 2)] {
        let batch = || {
            let mut batch = RowBatch::default();
            batch.push(m, origin(1, sequence));
            batch
        };
        let mode = if sequence == 1 {
            WriteMode::Insert
        } else {
            WriteMode::Upsert
        };
        batch().write(&mut conn, mode).await.expect("inserts");
        copy_batch(&mut client, batch(), sequence > 1).await;
        let reader = pg(&by_insert.url).await;
        let expected = every_column(&reader).await;
        let written = expected.iter().filter(|(_, rows)| !rows.is_empty()).count();
        assert_eq!(
            written, 3,
            "shipments, packages, package items: {expected:?}"
        );
        assert_eq!(
            every_column(&client).await,
            expected,
            "after message {sequence}"
        );
    }
    drop((conn, client));
    by_insert.drop().await;
    by_copy.drop().await;
}
