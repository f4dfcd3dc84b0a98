//! Round trips of the `legacy` fixture: the earlier generator's spellings (`type:` for
//! source_type, `args: [n]`, `json_get_*`, `copy_field`, `source: <Parent>`, `field_overrides`,
//! `Int`/`Numeric`/`List[Json]`/`NaiveDate*`) and an entity that is parsed but not stored.

use nomnom_codegen_fixtures::legacy::{ParsedMessage, RootEntity, TABLES};
use serde_json::json;

/// event_id, label, amount, score, flag, note
type EntryView<'a> = (&'a str, &'a str, i64, Option<f64>, bool, Option<&'a str>);

#[test]
fn legacy_getters_and_aliases_round_trip() {
    let body = json!({
        "event_id": "E-1", "count": 3, "ratio": "0.333",
        "entries": [
            {"label": "a", "amount": 9000000000i64, "score": 0.5, "flag": true, "note": "n"},
            {"label": "b", "amount": -1, "flag": false}
        ]
    });
    let Ok(ParsedMessage::Event(m)) = RootEntity::Event.parse_value(&body) else {
        panic!("valid event");
    };
    assert_eq!(
        m.event.ratio.as_ref().map(ToString::to_string).as_deref(),
        Some("0.333")
    );
    let entries: Vec<EntryView<'_>> = m
        .event_entry
        .iter()
        .map(|e| {
            (
                e.event_id.as_str(),
                e.label.as_str(),
                e.amount,
                e.score,
                e.flag,
                e.note.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        vec![
            ("E-1", "a", 9000000000, Some(0.5), true, Some("n")),
            ("E-1", "b", -1, None, false, None)
        ]
    );
    let long = json!({"event_id": "x".repeat(41), "count": 1, "entries": []});
    let errors = RootEntity::Event.parse_value(&long).expect_err("too long");
    assert_eq!(
        errors[0].error,
        "is 41 characters long; at most 40 are allowed"
    );
}

#[test]
fn unstored_entities_parse_but_have_no_table() {
    let body = json!({"source": "probe", "at": "2024-01-01T00:00:00Z", "day": "2024-01-01", "labels": ["a"]});
    let Ok(ParsedMessage::Heartbeat(h)) = RootEntity::Heartbeat.parse_value(&body) else {
        panic!("valid heartbeat");
    };
    assert_eq!(h.heartbeat.labels, vec!["a"]);
    let tables: Vec<(&str, &str)> = TABLES.iter().map(|t| (t.table, t.id_column)).collect();
    assert_eq!(tables, vec![("events", "event_pk")]);
    assert!(
        TABLES[0]
            .create_sql
            .contains("\"event_pk\" SERIAL PRIMARY KEY")
    );
    assert!(
        TABLES[0]
            .create_sql
            .contains("\"event_id\" VARCHAR(40) NOT NULL")
    );
}

#[test]
fn validate_gives_the_parse_verdict_and_errors() {
    let bodies = [
        json!({}),
        json!({"id": "x", "ts": 5, "tags": [1, "a"]}),
        json!({"name": "x".repeat(300), "count": 1.5}),
        json!("not an object"),
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
