//! The project's own entities end to end, driven by the generated code: nothing here names an
//! entity, so these tests follow whatever `entities/*.yaml` describe. For every entity posted
//! directly (root, or reference with `persistence`):
//! - its example (its `example:` in YAML, or one built from its fields' types) goes through the
//!   api, JetStream and the worker into PostgreSQL, with every row it derives — as JSON and as the
//!   CSV the OpenAPI document shows;
//! - the OpenAPI document carries its JSON Schema and example, and the schema admits the example;
//! - a body with any one member broken (a value of the wrong kind, or a required one left out) is
//!   refused with 422 naming that member, and the JSON Schema refuses it too.

mod common;

use std::time::{Duration, Instant};

use nomnom::generated::{RootEntity, RowBatch};
use nomnom::runtime::Origin;
use serde_json::{Value, json};

/// Where an entity's YAML is, for failure messages.
fn yaml_of(entity: RootEntity) -> String {
    format!("entities/*.yaml (entity `{}`)", entity.name())
}

/// Rows of every table, by table name.
async fn table_counts(db: &common::TestDb) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for t in nomnom::generated::TABLES {
        let n = db
            .count(&format!(
                "SELECT 1 FROM \"{}\"",
                t.table.replace('"', "\"\"")
            ))
            .await;
        counts.push((t.table, n));
    }
    counts
}

/// Rows each table gains from one message of `entity` with body `example`.
fn expected_rows(entity: RootEntity, example: &Value) -> Vec<(&'static str, i64)> {
    let parsed = entity.parse_value(example).unwrap_or_else(|errors| {
        panic!(
            "the example of `{entity}` does not parse: {errors:?}\nexample: {example}\nfix `example:` in {}",
            yaml_of(entity)
        )
    });
    let mut batch = RowBatch::default();
    batch.push(&parsed, Origin::default());
    batch
        .counts()
        .0
        .into_iter()
        .map(|(table, n)| (table, i64::try_from(n).expect("row count")))
        .collect()
}

/// Waits until message `id` is processed; fails with its status otherwise.
async fn wait_processed(p: &common::Pipeline, id: &str, what: &str) {
    let start = Instant::now();
    loop {
        let (code, status) = p.get(&format!("/ingest/status/{id}")).await;
        match status["status"].as_str() {
            Some("processed") => return,
            Some("dead_lettered") => panic!("{what} was dead-lettered: {status}"),
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what} not processed after 30 s: {code} {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every table holds `before` plus `gained` rows.
async fn wait_rows(
    db: &common::TestDb,
    before: &[(&str, i64)],
    gained: &[(&str, i64)],
    what: &str,
) {
    let start = Instant::now();
    loop {
        let now = table_counts(db).await;
        let diff: Vec<(&str, i64)> = now
            .iter()
            .zip(before)
            .map(|((t, n), (_, b))| (*t, n - b))
            .collect();
        let want: Vec<(&str, i64)> = diff
            .iter()
            .map(|(t, _)| {
                let n = gained.iter().find(|(g, _)| g == t).map_or(0, |(_, n)| *n);
                (*t, n)
            })
            .collect();
        if diff == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: rows gained per table {diff:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entity_example_is_stored_with_every_row_it_derives() {
    let p = common::Pipeline::start().await;
    for &entity in RootEntity::ALL {
        let example = entity.example();
        let gained = expected_rows(entity, &example);
        let before = table_counts(&p.db).await;
        let route = format!("/ingest/message/{}", entity.snake_name());
        let (code, answer) = p.post(&route, &example.to_string()).await;
        assert_eq!(
            code, 202,
            "POST {route} with the example of `{entity}`: {answer}"
        );
        let id = answer["message_id"]
            .as_str()
            .expect("message_id")
            .to_string();
        wait_processed(&p, &id, &format!("the example of `{entity}`")).await;
        wait_rows(
            &p.db,
            &before,
            &gained,
            &format!("the example of `{entity}`"),
        )
        .await;
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entity_csv_example_of_the_openapi_document_is_stored() {
    let p = common::Pipeline::start().await;
    let (code, doc) = p.get("/api-docs/openapi.json").await;
    assert_eq!(code, 200, "{doc}");
    for &entity in RootEntity::ALL {
        let route = format!("/ingest/batch/{}", entity.snake_name());
        let csv = doc["paths"][&route]["post"]["requestBody"]["content"]["text/csv"]["example"]
            .as_str()
            .unwrap_or_else(|| panic!("the OpenAPI document has no CSV example for {route}"))
            .to_string();
        // A CSV row of `entity` holds what its example body holds.
        let gained = expected_rows(entity, &entity.example());
        let before = table_counts(&p.db).await;
        let resp = reqwest::Client::new()
            .post(format!("{}{route}", p.base))
            .header("content-type", "text/csv")
            .body(csv.clone())
            .send()
            .await
            .expect("request");
        let code = resp.status().as_u16();
        let answer: Value = resp.json().await.expect("JSON answer");
        assert_eq!(code, 202, "POST {route} with CSV\n{csv}\nanswer: {answer}");
        let id = answer["results"][0]["message_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no message_id in {answer}"))
            .to_string();
        wait_processed(&p, &id, &format!("the CSV example of `{entity}`")).await;
        wait_rows(
            &p.db,
            &before,
            &gained,
            &format!("the CSV example of `{entity}`"),
        )
        .await;
    }
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_carries_each_entity_schema_and_example_and_they_agree() {
    let p = common::Pipeline::paused_with(|_| {}).await;
    let (code, doc) = p.get("/api-docs/openapi.json").await;
    assert_eq!(code, 200, "{doc}");
    for &entity in RootEntity::ALL {
        let schema = entity.json_schema();
        assert_eq!(
            doc["components"]["schemas"][entity.name()],
            schema,
            "the OpenAPI schema of `{entity}` is its JSON Schema"
        );
        let body = &doc["paths"][format!("/ingest/message/{}", entity.snake_name())]["post"]["requestBody"]
            ["content"]["application/json"];
        assert_eq!(
            body["schema"]["$ref"],
            json!(format!("#/components/schemas/{}", entity.name()))
        );
        assert_eq!(body["example"], entity.example(), "example of `{entity}`");
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("the JSON Schema of `{entity}` is not valid: {e}"));
        let example = entity.example();
        let errors: Vec<String> = validator
            .iter_errors(&example)
            .map(|e| e.to_string())
            .collect();
        assert!(
            errors.is_empty(),
            "the JSON Schema of `{entity}` refuses its example {example}: {errors:?}"
        );
    }
    p.stop().await;
}

/// A value no field type accepts where `value` is (a JSON value is accepted by `Json` fields
/// only, which are skipped): an object for a scalar or list, a string for an object.
fn wrong_kind(value: &Value) -> Value {
    match value {
        Value::Object(_) => json!("not an object"),
        _ => json!({"not": "this kind"}),
    }
}

/// Every member of `value` with its path as the api names it (`a.b`, `list[0].c`), and whether
/// the value is a container (its members are listed too).
fn members(
    value: &Value,
    base: &str,
    out: &mut Vec<(String, Vec<PathStep>)>,
    steps: Vec<PathStep>,
) {
    match value {
        Value::Object(map) => {
            for (name, v) in map {
                let path = if base.is_empty() {
                    name.clone()
                } else {
                    format!("{base}.{name}")
                };
                let mut here = steps.clone();
                here.push(PathStep::Member(name.clone()));
                out.push((path.clone(), here.clone()));
                members(v, &path, out, here);
            }
        }
        Value::Array(items) => {
            // Elements of a list of objects are checked one by one; the first stands for all.
            if let Some(first @ Value::Object(_)) = items.first() {
                let mut here = steps;
                here.push(PathStep::Index(0));
                members(first, &format!("{base}[0]"), out, here);
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Member(String),
    Index(usize),
}

fn at_path<'a>(value: &'a mut Value, steps: &[PathStep]) -> Option<&'a mut Value> {
    let mut at = value;
    for step in steps {
        at = match step {
            PathStep::Member(m) => at.get_mut(m)?,
            PathStep::Index(i) => at.get_mut(*i)?,
        };
    }
    Some(at)
}

/// The JSON Schema fragment describing the member at `steps`, if the schema describes it.
fn schema_at<'a>(schema: &'a Value, steps: &[PathStep]) -> Option<&'a Value> {
    let mut at = schema;
    for step in steps {
        at = at
            .get("anyOf")
            .and_then(|o| o.get(0))
            .filter(|_| at.get("properties").is_none() && at.get("items").is_none())
            .unwrap_or(at);
        at = match step {
            PathStep::Member(m) => at.get("properties")?.get(m)?,
            PathStep::Index(_) => at.get("items")?,
        };
    }
    Some(at)
}

/// Whether the schema fragment admits any JSON value (a `Json` field, nullable or not).
fn admits_anything(fragment: &Value) -> bool {
    let options = fragment.get("anyOf").and_then(Value::as_array);
    options.is_some_and(|o| o.iter().any(admits_anything))
        || fragment.as_object().is_some_and(|o| {
            o.keys()
                .all(|k| matches!(k.as_str(), "description" | "title"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_with_any_member_broken_is_refused_naming_that_member() {
    let p = common::Pipeline::paused_with(|_| {}).await;
    let mut checked = 0;
    for &entity in RootEntity::ALL {
        let example = entity.example();
        let schema = entity.json_schema();
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let route = format!("/ingest/message/{}", entity.snake_name());
        let mut paths = Vec::new();
        members(&example, "", &mut paths, Vec::new());
        for (path, steps) in paths {
            let fragment = schema_at(&schema, &steps);
            // A `Json` field takes any value, and whatever is inside it.
            let inside_json = (1..=steps.len())
                .any(|n| schema_at(&schema, &steps[..n]).is_some_and(admits_anything));
            if inside_json {
                continue;
            }
            let mut broken = example.clone();
            let slot = at_path(&mut broken, &steps).expect("the member exists");
            if slot.is_null() {
                // A null example value stands for an absent one: nothing to break.
                continue;
            }
            *slot = wrong_kind(slot);
            let (code, answer) = p.post(&route, &broken.to_string()).await;
            assert_eq!(
                code, 422,
                "`{entity}` with `{path}` broken was not refused: {answer}\nbody: {broken}"
            );
            let named = answer["details"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["field"].as_str() == Some(path.as_str()));
            assert!(
                named,
                "refusing `{entity}` with `{path}` broken does not name it: {answer}"
            );
            if fragment.is_some() {
                assert!(
                    !validator.is_valid(&broken),
                    "the JSON Schema of `{entity}` admits it with `{path}` broken: {broken}"
                );
            }
            checked += 1;
        }
        // Every required member left out.
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().expect("member name");
            let mut body = example.clone();
            body.as_object_mut().expect("an object").remove(name);
            let (code, answer) = p.post(&route, &body.to_string()).await;
            assert_eq!(
                code, 422,
                "`{entity}` without its required `{name}` was not refused: {answer}"
            );
            let named = answer["details"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d["field"].as_str() == Some(name));
            assert!(
                named,
                "refusing `{entity}` without `{name}` does not name it: {answer}"
            );
            assert!(!validator.is_valid(&body));
            checked += 1;
        }
    }
    assert!(checked > 0, "no member of any entity was checked");
    p.stop().await;
}
