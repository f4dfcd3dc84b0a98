//! The `upstream` fixture: reference entities written as the earlier generator wrote them
//! (`type: reference`, `persistence.database`, `primary_key`, `field_overrides`) are posted
//! directly and stored in their own tables; a reference entity without `persistence` is
//! documentation only.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use nomnom_codegen_fixtures::upstream::{ParsedMessage, RootEntity, RowBatch, TABLES};
use nomnom_runtime::WriteMode;
use serde_json::json;

#[test]
fn stored_reference_entities_are_ingested_and_documentation_only_ones_are_not() {
    let names: Vec<&str> = RootEntity::ALL.iter().map(|e| e.name()).collect();
    assert_eq!(names, vec!["Customer", "Product"]);
    assert_eq!(RootEntity::from_name("nation"), None);
    let tables: Vec<(&str, &str)> = TABLES.iter().map(|t| (t.entity, t.table)).collect();
    assert_eq!(
        tables,
        vec![("Customer", "customers"), ("Product", "products")]
    );
    let body = json!({"customer_key": "C-1", "name": "Ann", "account_balance": 12.5});
    let Ok(ParsedMessage::Customer(m)) = RootEntity::Customer.parse_value(&body) else {
        panic!("a valid customer");
    };
    assert_eq!(m.customer.customer_key, "C-1");
    assert_eq!(m.customer.nation_key, None);
    let Err(errors) = RootEntity::Product.parse_value(&json!({"part_key": "P-1"})) else {
        panic!("name and retail_price are required");
    };
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, vec!["name", "retail_price"]);
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn reference_rows_are_stored_with_their_surrogate_key_and_upserted_on_unicity_fields() {
    let base = std::env::var("TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("nomnom_fixture_{}", uuid::Uuid::new_v4().simple());
    let admin = pg(&format!("{base}/test")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create db");
    let url = format!("{base}/{name}");
    let mut conn = AsyncPgConnection::establish(&url).await.expect("connect");
    for t in TABLES {
        diesel::sql_query(t.create_sql)
            .execute(&mut conn)
            .await
            .expect("create table");
    }
    let rows = [
        (
            json!({"customer_key": "C-1", "name": "Ann", "account_balance": 1.5}),
            1,
        ),
        (
            json!({"customer_key": "C-2", "name": "Bob", "account_balance": 2}),
            2,
        ),
        (
            json!({"customer_key": "C-1", "name": "Ann B.", "account_balance": 3.25, "comment": "moved"}),
            3,
        ),
    ];
    for (body, sequence) in rows {
        let m = RootEntity::Customer.parse_value(&body).expect("valid");
        let mut batch = RowBatch::default();
        batch.push(
            &m,
            nomnom_runtime::Origin {
                position: nomnom_runtime::Position { epoch: 1, sequence },
                message_id: nomnom_runtime::Uuid::new_v4(),
            },
        );
        batch
            .write(&mut conn, WriteMode::Upsert)
            .await
            .expect("write");
    }
    let client = pg(&url).await;
    let stored: Vec<String> = client
        .query(
            "SELECT id, customer_key, name, account_balance, coalesce(comment, '-') FROM customers ORDER BY customer_key",
            &[],
        )
        .await
        .expect("query")
        .iter()
        .map(|r| {
            format!(
                "{}|{}|{}|{}|{}",
                r.get::<_, i32>(0) > 0,
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, f64>(3),
                r.get::<_, String>(4)
            )
        })
        .collect();
    assert_eq!(
        stored,
        vec!["true|C-1|Ann B.|3.25|moved", "true|C-2|Bob|2|-"]
    );
    drop(client);
    drop(conn);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop db");
}

#[test]
fn validate_gives_the_parse_verdict_and_errors() {
    let bodies = [
        json!({"part_key": "P-1"}),
        json!({"part_key": 5, "name": null}),
        json!([]),
        json!({"customer_key": "C-1", "name": "x".repeat(100)}),
    ];
    for entity in RootEntity::ALL {
        for body in &bodies {
            let doc = nomnom_runtime::doc_from_value(body);
            assert_eq!(
                entity.validate_json(doc.root()),
                entity.parse_json(doc.root()).map(drop),
                "{entity} {body}"
            );
        }
    }
}
