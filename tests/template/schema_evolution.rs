//! Worker start-up against a live database whose tables differ from the YAML.

use crate::common;
use nomnom::store::pg as db;

async fn prepared() -> common::TestDb {
    let test_db = common::TestDb::create().await;
    let changes = db::prepare_schema(&test_db.url)
        .await
        .expect("fresh schema");
    assert_eq!(
        changes.created,
        vec![
            "customers",
            "orders",
            "order_line_items",
            "order_events",
            "products"
        ]
    );
    test_db
}

async fn exec(test_db: &common::TestDb, sql: &str) {
    test_db
        .client()
        .await
        .batch_execute(sql)
        .await
        .expect("setup SQL");
}

async fn error_text(test_db: &common::TestDb) -> String {
    match db::prepare_schema(&test_db.url).await {
        Ok(changes) => panic!("expected a mismatch, got {changes:?}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_nullable_field_becomes_add_column() {
    let test_db = prepared().await;
    // The table as an older YAML (without the nullable `comment` field) created it.
    exec(&test_db, "ALTER TABLE customers DROP COLUMN comment").await;
    exec(&test_db, "INSERT INTO customers (customer_key, name, address, nation_key, phone, account_balance, market_segment) VALUES ('C1', 'n', 'a', 1, 'p', 1.5, 'm')").await;
    let changes = db::prepare_schema(&test_db.url).await.expect("evolves");
    assert_eq!(changes.added_columns, vec!["customers.comment"]);
    assert!(changes.created.is_empty());
    assert_eq!(
        test_db
            .rows("SELECT customer_key, comment FROM customers")
            .await,
        vec![vec![Some("C1".to_string()), None]]
    );
    let again = db::prepare_schema(&test_db.url).await.expect("idempotent");
    assert_eq!(again, Default::default());
    test_db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_difference_stops_with_a_clear_message() {
    let test_db = prepared().await;
    exec(
        &test_db,
        "ALTER TABLE orders ALTER COLUMN clerk TYPE INTEGER USING 0; \
         ALTER TABLE products ADD COLUMN legacy_code TEXT; \
         ALTER TABLE customers DROP COLUMN name; \
         ALTER TABLE order_line_items ALTER COLUMN ship_mode TYPE VARCHAR(20); \
         ALTER TABLE order_line_items DROP CONSTRAINT order_line_items_unicity; \
         ALTER TABLE order_line_items ADD CONSTRAINT order_line_items_unicity UNIQUE (order_key)",
    )
    .await;
    let text = error_text(&test_db).await;
    let expected = [
        "table `orders`, column `clerk`: live INTEGER NOT NULL, declared VARCHAR(15) NOT NULL; change the YAML back, or migrate the column by hand",
        "table `order_line_items`, column `ship_mode`: live VARCHAR(20) NULL, declared VARCHAR(10) NULL;",
        "table `order_line_items`, column `constraint order_line_items_unicity`: live UNIQUE (order_key), declared UNIQUE (order_key, line_number); unicity_fields changed",
        "table `customers`, column `name`: live no such column, declared VARCHAR(25) NOT NULL; a new column must be `nullable: true` or have a `default:`",
        "table `products`, column `legacy_code`: live TEXT, declared no such field; the field was removed from the YAML; add it back, list it under the entity's `removed:`",
    ];
    assert!(
        text.starts_with("the database schema differs from entities/*.yaml:"),
        "{text}"
    );
    for e in expected {
        assert!(text.contains(e), "missing `{e}` in:\n{text}");
    }
    // Nothing was changed while mismatches remain.
    assert_eq!(
        test_db.count("SELECT 1 FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'name'").await,
        0
    );
    test_db.drop_db().await;
}

/// A table with one column per stored type of the type table (so `Time` and `Bytes`, and any
/// type added later); the `c_time` column is declared as `declared_time`.
fn every_type_table(declared_time: nomnom::runtime::FieldType) -> nomnom::runtime::TableDef {
    use nomnom::runtime::{ColumnDef, FieldType, TYPES, TableDef};
    let mut columns = Vec::new();
    let mut ddl = vec!["\"id\" BIGSERIAL PRIMARY KEY".to_string()];
    for t in TYPES.iter().filter(|t| t.ty.is_stored()) {
        let name: &'static str = Box::leak(
            format!("c_{}", t.ty.name().to_lowercase().replace(['[', ']'], "_")).into_boxed_str(),
        );
        let sql = t.ty.sql_type(None).expect("stored");
        ddl.push(format!("\"{name}\" {sql} NOT NULL"));
        let ty = if t.ty == FieldType::Time {
            declared_time
        } else {
            t.ty
        };
        columns.push(ColumnDef {
            name,
            ty,
            max_length: None,
            sql_type: Box::leak(ty.sql_type(None).expect("stored").into_boxed_str()),
            nullable: false,
        });
    }
    ddl.push("\"c_varchar\" VARCHAR(12) NOT NULL".into());
    columns.push(ColumnDef {
        name: "c_varchar",
        ty: FieldType::String,
        max_length: Some(12),
        sql_type: "VARCHAR(12)",
        nullable: false,
    });
    TableDef {
        entity: "EveryType",
        table: "every_type",
        id_column: "id",
        columns: Box::leak(columns.into_boxed_slice()),
        unicity_fields: &[],
        root_entity: "EveryType",
        version_field: None,
        renames: &[],
        defaults: &[],
        removed: &[],
        create_sql: Box::leak(
            format!("CREATE TABLE IF NOT EXISTS every_type ({})", ddl.join(", ")).into_boxed_str(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_in_the_type_table_is_recognised_live() {
    use diesel_async::{AsyncConnection, AsyncPgConnection};
    use nomnom::runtime::FieldType;
    use nomnom::store::pg::evolve::{ReconcileError, reconcile};
    let test_db = common::TestDb::create().await;
    let mut conn = AsyncPgConnection::establish(&test_db.url)
        .await
        .expect("connect");
    let table = every_type_table(FieldType::Time);
    let created = reconcile(&mut conn, &[table]).await.expect("create");
    assert_eq!(created.created, vec!["every_type"]);
    // The live TIME, BYTEA, TEXT[], VARCHAR(12)… columns all read back as what was declared.
    let again = reconcile(&mut conn, &[table]).await.expect("same shape");
    assert_eq!(again, Default::default());
    // Declaring the TIME column as Bytes is a mismatch named in DDL spelling on both sides.
    match reconcile(&mut conn, &[every_type_table(FieldType::Bytes)]).await {
        Err(ReconcileError::Mismatch(m)) => {
            assert_eq!(m.len(), 1, "{m:?}");
            assert_eq!(
                m[0].to_string().split(';').next(),
                Some(
                    "table `every_type`, column `c_time`: live TIME NOT NULL, declared BYTEA NOT NULL"
                )
            );
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    drop(conn);
    test_db.drop_db().await;
}

/// A table as an older YAML made it, and the declared changes of the new one: every step that
/// keeps stored values is applied at start-up in one transaction — a rename, widenings (a type
/// the type table lets widen, a longer VARCHAR), a required column with its default, a column
/// made nullable, a removed field's column kept and freed of NOT NULL — and the rows keep their
/// values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_and_safe_changes_are_applied_and_keep_every_value() {
    use diesel_async::{AsyncConnection, AsyncPgConnection};
    use nomnom::runtime::{ColumnDef, FieldType, TableDef};
    use nomnom::store::pg::evolve::reconcile;
    let test_db = common::TestDb::create().await;
    exec(
        &test_db,
        "CREATE TABLE parcels (id BIGSERIAL PRIMARY KEY, parcel_key VARCHAR(8) NOT NULL, \
         quantity INTEGER NOT NULL, weight INTEGER NOT NULL, note VARCHAR(20) NOT NULL, \
         legacy_code TEXT NOT NULL); \
         INSERT INTO parcels (parcel_key, quantity, weight, note, legacy_code) \
         VALUES ('P-1', 3, 2147483647, 'fragile', 'X9')",
    )
    .await;
    let column = |name, ty, max_length, sql_type, nullable| ColumnDef {
        name,
        ty,
        max_length,
        sql_type,
        nullable,
    };
    let table = TableDef {
        entity: "Parcel",
        table: "parcels",
        id_column: "id",
        columns: Box::leak(Box::new([
            column(
                "parcel_key",
                FieldType::String,
                Some(32),
                "VARCHAR(32)",
                false,
            ),
            column("units", FieldType::BigInt, None, "BIGINT", false),
            column("weight", FieldType::Decimal, None, "NUMERIC", false),
            column("note", FieldType::String, None, "TEXT", true),
            column("channel", FieldType::String, Some(10), "VARCHAR(10)", false),
        ])),
        unicity_fields: &[],
        create_sql: "CREATE TABLE IF NOT EXISTS parcels (id BIGSERIAL PRIMARY KEY)",
        version_field: None,
        root_entity: "Parcel",
        renames: &[("units", "quantity")],
        defaults: &[("channel", "'web'::VARCHAR(10)")],
        removed: &["legacy_code"],
    };
    let mut conn = AsyncPgConnection::establish(&test_db.url)
        .await
        .expect("connect");
    let changes = reconcile(&mut conn, &[table]).await.expect("applied");
    assert_eq!(changes.added_columns, ["parcels.channel"]);
    assert_eq!(
        changes.altered,
        [
            "parcels.parcel_key: widened to VARCHAR(32)",
            "parcels.units: renamed from quantity",
            "parcels.units: widened to BIGINT (the table was rewritten)",
            "parcels.weight: widened to NUMERIC (the table was rewritten)",
            "parcels.note: widened to TEXT",
            "parcels.note: may be null",
            "parcels.legacy_code: may be null",
        ]
    );
    assert_eq!(
        test_db
            .rows(
                "SELECT parcel_key, units::text, weight::text, note, channel, legacy_code, \
                 pg_typeof(units)::text, pg_typeof(weight)::text FROM parcels"
            )
            .await,
        vec![
            [
                "P-1",
                "3",
                "2147483647",
                "fragile",
                "web",
                "X9",
                "bigint",
                "numeric"
            ]
            .map(|v| Some(v.to_string()))
            .to_vec()
        ]
    );
    // New rows may leave the removed column and the nullable one out.
    exec(
        &test_db,
        "INSERT INTO parcels (parcel_key, units, weight, channel) VALUES ('P-2', 9000000000, 1.5, 'app')",
    )
    .await;
    let again = reconcile(&mut conn, &[table]).await.expect("idempotent");
    assert_eq!(again, Default::default());
    drop(conn);
    test_db.drop_db().await;
}

/// `worker schema plan` prints the SQL that brings a database of an older shape to the YAML's,
/// changing nothing; `worker schema apply` runs it; a difference no safe change mends is refused
/// by both, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_plan_prints_the_sql_and_apply_runs_it() {
    let test_db = prepared().await;
    exec(
        &test_db,
        "ALTER TABLE customers DROP COLUMN comment; \
         ALTER TABLE orders ALTER COLUMN comment SET NOT NULL",
    )
    .await;
    let worker = |args: &[&str]| {
        let out = common::process::binary(env!("CARGO_BIN_EXE_worker"))
            .env("DATABASE_URL", &test_db.url)
            .args(args)
            .output()
            .expect("worker runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, plan, err) = worker(&["schema", "plan"]);
    assert!(ok, "{err}");
    assert_eq!(
        plan.lines().collect::<Vec<_>>(),
        [
            r#"ALTER TABLE "customers" ADD COLUMN IF NOT EXISTS "comment" TEXT;"#,
            r#"ALTER TABLE "orders" ALTER COLUMN "comment" DROP NOT NULL;"#,
        ],
        "{plan}"
    );
    let column_count = "SELECT 1 FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'comment'";
    assert_eq!(test_db.count(column_count).await, 0, "plan changes nothing");
    let (ok, applied, err) = worker(&["schema", "apply"]);
    assert!(ok, "{err}");
    assert!(
        applied.contains("added column customers.comment")
            && applied.contains("orders.comment: may be null"),
        "{applied}"
    );
    assert_eq!(test_db.count(column_count).await, 1);
    let (ok, plan, _) = worker(&["schema", "plan"]);
    assert!(ok && plan.contains("nothing to change"), "{plan}");
    // The database records the shape its tables were brought to, by schema version.
    assert_eq!(
        test_db
            .rows("SELECT version, ledger->'entities'->'Order'->>'table' FROM nomnom_schema_ledger")
            .await,
        vec![vec![
            Some(nomnom::generated::SCHEMA_VERSION.to_string()),
            Some("orders".to_string())
        ]]
    );

    exec(
        &test_db,
        "ALTER TABLE orders ALTER COLUMN clerk TYPE VARCHAR(50)",
    )
    .await;
    for action in ["plan", "apply"] {
        let (ok, _, err) = worker(&["schema", action]);
        assert!(!ok, "{action} refuses a narrowed column");
        assert!(
            err.contains("table `orders`, column `clerk`: live VARCHAR(50) NOT NULL, declared VARCHAR(15) NOT NULL"),
            "{action}: {err}"
        );
    }
    exec(
        &test_db,
        "ALTER TABLE orders ALTER COLUMN clerk TYPE VARCHAR(15)",
    )
    .await;

    // A database another build brought to its shape (its ledger names a schema that is neither
    // this build's nor its entities.lock's): refused, naming both and what this build would do.
    exec(
        &test_db,
        "INSERT INTO nomnom_schema_ledger (version, ledger, applied_at) \
         VALUES ('00000000000000cc', '{}', clock_timestamp()); \
         ALTER TABLE customers DROP COLUMN comment",
    )
    .await;
    for action in ["plan", "apply"] {
        let (ok, _, err) = worker(&["schema", action]);
        assert!(!ok, "{action} refuses a database of an unknown shape");
        assert!(
            err.contains("the database's schema is 00000000000000cc")
                && err.contains(&format!(
                    "neither this build's YAML ({})",
                    nomnom::generated::SCHEMA_VERSION
                ))
                && err
                    .contains(r#"ALTER TABLE "customers" ADD COLUMN IF NOT EXISTS "comment" TEXT"#)
                && err.contains("--any-shape"),
            "{action}: {err}"
        );
    }
    assert_eq!(test_db.count(column_count).await, 0, "nothing applied");
    let (ok, plan, err) = worker(&["schema", "plan", "--any-shape"]);
    assert!(ok, "{err}");
    assert!(plan.contains("is newer than this build's"), "{plan}");
    test_db.drop_db().await;
}

/// The rolling deploy of issue 34: an api still on the previous schema (here: another version
/// in the envelope) accepted an order without `clerk`, a field this build requires. The worker
/// does not dead-letter it for that: it is held — handed back, then sent to the stream again
/// with its first position and its version, so its deliveries never count it as poison — and
/// counted and logged, until a worker of its version takes it. A message of this worker's own
/// version that fails its parse is dead-lettered as before; one of another version that parses
/// is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_accepted_under_another_schema_is_held_not_dead_lettered() {
    use crate::support::PublishDirect;
    use nomnom::envelope::{MessageEnvelope, SchemaVersion};
    // The shipped MAX_DELIVER (5): handed back four times, 10 s apart, then sent again.
    let mut p = common::Pipeline::paused_with(|_| {}).await;
    assert_eq!(p.worker_config.max_deliver, 5);
    let other = SchemaVersion::parse("00000000000000aa").expect("a version");
    let mut without_clerk = crate::support::order(1, 1);
    without_clerk
        .as_object_mut()
        .expect("an object")
        .remove("clerk");
    let envelope = |id: uuid::Uuid, body: &serde_json::Value, schema| MessageEnvelope {
        schema,
        ..MessageEnvelope::new(id, "Order", body.to_string())
    };
    let held = envelope(uuid::Uuid::now_v7(), &without_clerk, Some(other));
    p.publish(&held).await;
    let own = envelope(
        uuid::Uuid::now_v7(),
        &without_clerk,
        Some(SchemaVersion::own()),
    );
    p.publish(&own).await;
    let compatible = envelope(
        uuid::Uuid::now_v7(),
        &crate::support::order(2, 1),
        Some(other),
    );
    p.publish(&compatible).await;
    // An entity this build does not know (dropped from its YAML), accepted under another
    // version: held too, not dead-lettered as an unknown entity.
    let gone = MessageEnvelope {
        schema: Some(other),
        // An id that is not time-ordered: the envelope travels in headers, entity and all.
        ..MessageEnvelope::new(uuid::Uuid::new_v4(), "Gone", "{}")
    };
    p.publish(&gone).await;
    let subject = nomnom::nats::message_subject(&p.stream, "order", &held.message_id);
    let stream = p.jetstream.get_stream(&p.stream).await.expect("stream");
    let first = stream
        .direct_get_last_for_subject(&subject)
        .await
        .expect("in the stream");

    let metrics = p.start_worker().await;
    p.db.wait_count("SELECT 1 FROM dead_letters", 1).await;
    p.db.wait_count("SELECT 1 FROM orders", 1).await;
    let dead =
        p.db.rows("SELECT message_id::text, reason FROM dead_letters")
            .await;
    assert_eq!(
        dead[0][0].as_deref(),
        Some(own.message_id.to_string().as_str())
    );
    assert!(
        dead[0][1].as_deref().unwrap_or("").contains("clerk"),
        "{dead:?}"
    );

    let mut copy = None;
    for _ in 0..900 {
        let last = stream
            .direct_get_last_for_subject(&subject)
            .await
            .expect("still in the stream");
        if last.sequence > first.sequence {
            copy = Some(last);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let copy = copy.expect("the held message was sent to the stream again within 90 s");
    let again = MessageEnvelope::decode(&copy.subject, Some(&copy.headers), &copy.payload)
        .expect("a readable envelope");
    assert_eq!(again.message_id, held.message_id);
    assert_eq!(again.body, held.body);
    assert_eq!(
        again.schema,
        Some(other),
        "it keeps the version it was accepted under"
    );
    let position = again.replay_of.expect("it keeps its first position");
    assert_eq!(position.sequence, i64::try_from(first.sequence).unwrap());

    // Never dead-lettered, never stored under this worker's rules.
    assert_eq!(p.db.count("SELECT 1 FROM dead_letters").await, 1);
    let status = format!(
        "SELECT 1 FROM message_status WHERE message_id = '{}'",
        held.message_id
    );
    assert_eq!(p.db.count(&status).await, 0);
    let counted = |outcome: &str| {
        metrics
            .other_schema
            .with_label_values(&["order", &other.to_string(), outcome])
            .get()
    };
    assert!(counted("held") >= 5, "held at each delivery");
    let gone_held = metrics
        .other_schema
        .with_label_values(&["unknown", &other.to_string(), "held"])
        .get();
    assert!(gone_held >= 1, "the unknown entity's message is held");
    assert_eq!(counted("parsed"), 1, "the compatible one");
    assert!(metrics.render().contains(&format!(
        "nomnom_schema_info{{schema_version=\"{}\"}} 1",
        nomnom::generated::SCHEMA_VERSION
    )));
    // The api's status lookup finds it waiting in the stream.
    let (code, body) = p.get(&format!("/ingest/status/{}", held.message_id)).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("pending")),
        "{body}"
    );
    p.stop().await;
}

/// A rolling deploy's other half: once a newer build's schema is applied to the database, a
/// worker of the older build stops pulling (its rules no longer fit the tables) and says why
/// in `/ready` (and the `schema_behind` gauge); it resumes when its schema is made current
/// again (`worker schema apply --make-current`, a rollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_older_than_the_database_schema_stops_consuming_until_its_schema_is_current() {
    use crate::support::PublishDirect;
    let mut p = common::Pipeline::paused_with(|_| {}).await;
    let metrics = p.start_worker().await;
    p.publish(&nomnom::envelope::MessageEnvelope::new(
        uuid::Uuid::now_v7(),
        "Order",
        crate::support::order(1, 1).to_string(),
    ))
    .await;
    p.db.wait_count("SELECT 1 FROM orders", 1).await;
    assert_eq!(metrics.schema_behind.get(), 0);

    // A newer build's worker applied its schema.
    p.db.client()
        .await
        .batch_execute(
            "INSERT INTO nomnom_schema_ledger (version, ledger, applied_at) \
             VALUES ('00000000000000bb', '{}', clock_timestamp())",
        )
        .await
        .expect("a newer schema");
    let head = nomnom::store::pg::schema_head_at(&p.db.url)
        .await
        .expect("ledger");
    assert_eq!(
        head.newer_than_own().map(|n| n.version).as_deref(),
        Some("00000000000000bb")
    );
    // The api (of this build too) says the database's schema is another and counts it.
    let (code, ready) = p.get("/ready").await;
    assert_eq!(code, 200, "{ready}");
    assert_eq!(ready["database_schema_version"], "00000000000000bb");
    let text = reqwest::get(format!("{}/metrics", p.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains("nomnom_api_schema_mismatch 1"), "{text}");
    for _ in 0..150 {
        if metrics.schema_behind.get() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        metrics.schema_behind.get(),
        1,
        "the worker saw it within 15 s"
    );
    p.publish(&nomnom::envelope::MessageEnvelope::new(
        uuid::Uuid::now_v7(),
        "Order",
        crate::support::order(2, 1).to_string(),
    ))
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        p.db.count("SELECT 1 FROM orders").await,
        1,
        "nothing pulled"
    );
    // A worker of this build starting now applies nothing and would not pull either.
    let changes = nomnom::store::pg::prepare_schema(&p.db.url)
        .await
        .expect("prepare");
    assert_eq!(
        changes.behind.map(|n| n.version).as_deref(),
        Some("00000000000000bb")
    );

    // Rolled back: this build's schema made current again.
    nomnom::store::pg::make_schema_current(&p.db.url)
        .await
        .expect("make current");
    p.db.wait_count("SELECT 1 FROM orders", 2).await;
    assert_eq!(metrics.schema_behind.get(), 0);
    let (_, ready) = p.get("/ready").await;
    assert_eq!(
        ready["database_schema_version"],
        nomnom::generated::SCHEMA_VERSION
    );
    p.stop().await;
}
