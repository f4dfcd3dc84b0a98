//! Round trips of the `hl7` fixture: fields computed by functions of the crate
//! (`transform: {rust: crate::transforms::…}`, the template's `src/transforms.rs`), from the
//! message body and from each element of a list; their errors reported at the field by the
//! validate-only path and the parse alike; rows stored in the real PostgreSQL.

use nomnom_codegen_fixtures::hl7::{
    Hl7MessageMessage, ParsedMessage, RootEntity, RowBatch, TABLES,
};
use nomnom_runtime::WriteMode;
use serde_json::{Value, json};
use support::{FixtureDb, origin, pg, texts};

mod support;

fn message() -> Value {
    json!({
        "raw": "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|MSG00001|P|2.5\rPID|1||12345",
        "dg1_segments": [
            "DG1|1||I10^Essential hypertension^ICD10||20240101|A",
            "DG1|2||E11.9||20240102"
        ]
    })
}

fn parse(v: &Value) -> Result<Hl7MessageMessage, support::Errors> {
    support::agreeing(
        RootEntity::Hl7Message.validate_json(nomnom_runtime::doc_from_value(v).root()),
        RootEntity::Hl7Message
            .parse_value(v)
            .map(|ParsedMessage::Hl7Message(m)| m),
    )
}

#[test]
fn fields_come_from_the_crates_functions() {
    let m = parse(&message()).expect("valid");
    assert_eq!(m.hl7_message.control_id, "MSG00001");
    assert_eq!(m.hl7_message.message_type.as_deref(), Some("ADT"));
    let rows: Vec<(i32, &str, Option<&str>, Option<&str>)> = m
        .diagnosis
        .iter()
        .map(|d| {
            (
                d.set_id,
                d.code.as_str(),
                d.description.as_deref(),
                d.diagnosis_type.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (1, "I10", Some("Essential hypertension"), Some("A")),
            (2, "E11.9", None, None)
        ]
    );
    // The YAML's example is what the parse accepts.
    assert!(parse(&RootEntity::Hl7Message.example()).is_ok());
    assert!(RootEntity::Hl7Message.runs_user_code());
}

#[test]
fn a_transforms_error_is_the_fields_and_the_limits_still_apply() {
    let mut body = message();
    body["dg1_segments"][1] = json!("PID|1||12345");
    body["raw"] = json!(
        "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ADT^A01|A-CONTROL-ID-LONGER-THAN-20|P|2.5"
    );
    let errors = parse(&body).expect_err("refused");
    assert_eq!(
        errors,
        [
            (
                "control_id".to_string(),
                "is 27 characters long; at most 20 are allowed".to_string()
            ),
            (
                "dg1_segments[1].set_id".to_string(),
                "expected a DG1 segment, found PID".to_string()
            ),
            (
                "dg1_segments[1].code".to_string(),
                "expected a DG1 segment, found PID".to_string()
            ),
            (
                "dg1_segments[1].description".to_string(),
                "expected a DG1 segment, found PID".to_string()
            ),
            (
                "dg1_segments[1].diagnosis_type".to_string(),
                "expected a DG1 segment, found PID".to_string()
            ),
        ]
    );
    // A value the function leaves null for a field that is not nullable.
    let mut body = message();
    body["dg1_segments"][0] = json!("DG1|1||");
    let errors = parse(&body).expect_err("no code");
    assert_eq!(errors[0].0, "dg1_segments[0].code");
    assert!(errors[0].1.contains("gave no value"), "{errors:?}");
    // The input absent: the field is null, as a missing member is.
    let mut body = message();
    body.as_object_mut().expect("object").remove("raw");
    let errors = parse(&body).expect_err("raw is required");
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["raw", "control_id"], "{errors:?}");
}

#[tokio::test]
async fn rows_computed_by_transforms_are_stored_in_postgresql() {
    let db = FixtureDb::create(TABLES).await;
    let mut conn = db.connect().await;
    let m = RootEntity::Hl7Message
        .parse_value(&message())
        .expect("valid");
    let mut batch = RowBatch::default();
    batch.push(&m, origin(1, 1));
    batch
        .write(&mut conn, WriteMode::Upsert)
        .await
        .expect("write");
    let client = pg(&db.url).await;
    assert_eq!(
        texts(&client, "SELECT control_id, message_type FROM hl7_messages").await,
        ["MSG00001|ADT"]
    );
    assert_eq!(
        texts(
            &client,
            "SELECT control_id, set_id, code, description, diagnosis_type FROM diagnoses ORDER BY set_id"
        )
        .await,
        [
            "MSG00001|1|I10|Essential hypertension|A",
            "MSG00001|2|E11.9|NULL|NULL"
        ]
    );
    drop((conn, client));
    db.drop().await;
}
