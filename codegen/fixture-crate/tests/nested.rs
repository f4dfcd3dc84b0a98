//! Round trips of the `nested` fixture: entities derived from a nested object (`parent` +
//! `object`: zero or one row per parent), also inside a repeated entity, and
//! `copy_field_conditional` over element members and over a parent field — parsed, checked by
//! the validate-only path, and stored in the real PostgreSQL.

use nomnom_codegen_fixtures::nested::{ParcelMessage, ParsedMessage, RootEntity, RowBatch, TABLES};
use nomnom_runtime::WriteMode;
use serde_json::{Value, json};
use support::{FixtureDb, origin, pg, texts};

mod support;

fn parcel() -> Value {
    json!({
        "parcel_key": "P-1",
        "system": "metric",
        "sender": {"city": "Austin", "country": "US", "state": "TX", "province": "ignored"},
        "items": [
            {"line": 1, "length_cm": "30.5", "length_in": "12.0", "dimensions": {"width": 2.5, "height": 4}},
            {"line": 2, "length_cm": 10, "length_in": 4, "dimensions": null},
            {"line": 3, "length_cm": 7, "length_in": 3}
        ]
    })
}

fn parse(v: &Value) -> Result<ParcelMessage, support::Errors> {
    support::agreeing(
        RootEntity::Parcel.validate_json(nomnom_runtime::doc_from_value(v).root()),
        RootEntity::Parcel
            .parse_value(v)
            .map(|ParsedMessage::Parcel(m)| m),
    )
}

#[test]
fn a_nested_object_gives_one_row_and_null_or_absent_gives_none() {
    let m = parse(&parcel()).expect("valid");
    assert_eq!(m.sender.len(), 1);
    let s = &m.sender[0];
    assert_eq!(
        (s.parcel_key.as_str(), s.city.as_str(), s.country.as_str()),
        ("P-1", "Austin", "US")
    );
    // Inside the repeated items: a row for the one item with dimensions, none for null or absent.
    assert_eq!(m.item_dimensions.len(), 1);
    let d = &m.item_dimensions[0];
    assert_eq!((d.line, d.width, d.height), (1, 2.5, Some(4.0)));

    for sender in [Value::Null, Value::Bool(false)] {
        let mut body = parcel();
        match sender {
            Value::Null => body["sender"] = Value::Null,
            _ => {
                body.as_object_mut().expect("object").remove("sender");
            }
        }
        let m = parse(&body).expect("valid");
        assert!(m.sender.is_empty(), "no sender row: {body}");
        assert_eq!(m.parcel.sender, None);
    }
}

#[test]
fn a_condition_picks_its_first_source_when_it_holds_else_the_second() {
    let m = parse(&parcel()).expect("valid");
    assert_eq!(m.sender[0].region.as_deref(), Some("TX"), "US: the state");
    let lengths: Vec<String> = m.parcel_item.iter().map(|i| i.length.to_string()).collect();
    assert_eq!(lengths, ["30.5", "10", "7"], "metric: the centimetres");

    let mut body = parcel();
    body["sender"]["country"] = json!("CA");
    body["system"] = json!("imperial");
    let m = parse(&body).expect("valid");
    assert_eq!(
        m.sender[0].region.as_deref(),
        Some("ignored"),
        "else: the province"
    );
    let lengths: Vec<String> = m.parcel_item.iter().map(|i| i.length.to_string()).collect();
    assert_eq!(lengths, ["12.0", "4", "3"], "imperial: the inches");

    // The chosen source is required when the field is: a missing one is the field's error.
    let mut body = parcel();
    body["items"][0]
        .as_object_mut()
        .expect("item")
        .remove("length_cm");
    let errors = parse(&body).expect_err("length is required");
    assert_eq!(errors[0].0, "items[0].length", "{errors:?}");
    // A condition on a number compares its text.
    let mut body = parcel();
    body["sender"]["country"] = json!(1);
    assert!(parse(&body).is_err(), "country must be a string");
}

#[test]
fn a_nested_object_of_the_wrong_kind_is_an_error_at_its_path() {
    let mut body = parcel();
    body["sender"] = json!("Austin, TX");
    let errors = parse(&body).expect_err("not an object");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "sender");
    assert!(errors[0].1.contains("`Sender` row"), "{errors:?}");
    let mut body = parcel();
    body["items"][1]["dimensions"] = json!([1, 2]);
    body["sender"]["city"] = Value::Null;
    let errors = parse(&body).expect_err("two problems");
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["sender.city", "items[1].dimensions"], "{errors:?}");
}

#[test]
fn the_schema_describes_the_nested_object_with_its_rows_fields() {
    let schema = RootEntity::Parcel.json_schema();
    let sender = &schema["properties"]["sender"];
    assert_eq!(sender["anyOf"][1]["type"], "null", "{sender}");
    assert_eq!(
        sender["anyOf"][0]["properties"]["city"]["type"], "string",
        "{sender}"
    );
    // The example built from the types is a valid body with a sender and a dimensions object.
    let example = RootEntity::Parcel.example();
    let m = parse(&example).expect("the example is valid");
    assert_eq!(m.sender.len(), 1, "{example}");
    assert_eq!(m.item_dimensions.len(), 1, "{example}");
    assert_eq!(
        RootEntity::Parcel.members(),
        ["items", "parcel_key", "sender", "system", "units_system"]
    );
}

/// A field `renamed_from` its former name reads bodies of either shape (messages accepted
/// before the rename still parse); the new name wins when both are there. (A field read by an
/// explicit `field_path`, as `ParcelItem.line`, keeps its path: the rename is its column's.)
#[test]
fn a_renamed_field_reads_its_former_name_too() {
    let mut old_shape = parcel();
    let body = old_shape.as_object_mut().expect("object");
    body.remove("system");
    body.insert("units_system".into(), json!("imperial"));
    let m = parse(&old_shape).expect("the former name is read");
    assert_eq!(m.parcel.system, "imperial");
    let mut both = parcel();
    both["units_system"] = json!("imperial");
    assert_eq!(parse(&both).expect("valid").parcel.system, "metric");
    // Neither: the new name is the one missing; a wrong kind under the old name is named so.
    let mut neither = parcel();
    neither.as_object_mut().expect("object").remove("system");
    let errors = parse(&neither).expect_err("required");
    assert_eq!(errors[0].0, "system", "{errors:?}");
    let mut wrong = old_shape.clone();
    wrong["units_system"] = json!(3);
    let errors = parse(&wrong).expect_err("a string");
    assert_eq!(errors[0].0, "units_system", "{errors:?}");
    // The schema: the former name a deprecated property, one of the two required.
    let schema = RootEntity::Parcel.json_schema();
    assert_eq!(schema["properties"]["units_system"]["deprecated"], true);
    assert!(
        !schema["required"]
            .as_array()
            .expect("required")
            .contains(&json!("system"))
    );
    assert_eq!(
        schema["allOf"][0]["anyOf"],
        json!([{"required": ["system"]}, {"required": ["units_system"]}])
    );
}

#[tokio::test]
async fn nested_rows_are_stored_and_upserted_in_postgresql() {
    let db = FixtureDb::create(TABLES).await;
    let mut conn = db.connect().await;
    let first = RootEntity::Parcel.parse_value(&parcel()).expect("valid");
    let mut changed = parcel();
    changed["sender"]["city"] = json!("Dallas");
    changed["items"][0]["dimensions"]["width"] = json!(3.0);
    let second = RootEntity::Parcel.parse_value(&changed).expect("valid");
    for (m, sequence) in [(&first, 1), (&second, 2)] {
        let mut batch = RowBatch::default();
        batch.push(m, origin(1, sequence));
        batch
            .write(&mut conn, WriteMode::Upsert)
            .await
            .expect("write");
    }
    let client = pg(&db.url).await;
    assert_eq!(
        texts(&client, "SELECT parcel_key, sender->>'city' FROM parcels").await,
        ["P-1|Dallas"]
    );
    assert_eq!(
        texts(
            &client,
            "SELECT parcel_key, city, country, region FROM senders"
        )
        .await,
        ["P-1|Dallas|US|TX"]
    );
    assert_eq!(
        texts(
            &client,
            "SELECT line, length::text, dimensions IS NULL FROM parcel_items ORDER BY line"
        )
        .await,
        ["1|30.5|f", "2|10|t", "3|7|t"]
    );
    assert_eq!(
        texts(
            &client,
            "SELECT parcel_key, line, width, coalesce(height::text, 'NULL') FROM item_dimensions"
        )
        .await,
        ["P-1|1|3|4"]
    );
    drop((conn, client));
    db.drop().await;
}
