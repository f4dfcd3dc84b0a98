//! The generated parsers on real TPC-H JSON: every type, edge values and field-level errors.

use nomnom::generated::{ParsedMessage, RootEntity, parse_message};
use nomnom::runtime::ParseError;

const ORDER: &str = include_str!("../../examples/order.json");

/// The api's validate-only path gives exactly the parse's verdict and errors.
fn same_as_validate(entity: &str, body: &str) {
    let Ok(doc) = nomnom::runtime::parse_json_object(body.as_bytes()) else {
        return;
    };
    let root = RootEntity::from_name(entity).expect("entity");
    assert_eq!(
        root.validate_json(doc.root()),
        root.parse_json(doc.root()).map(drop),
        "{body}"
    );
}

fn field_errors(entity: &str, body: &str) -> Vec<(String, String)> {
    same_as_validate(entity, body);
    match parse_message(entity, body.as_bytes()) {
        Err(ParseError::Invalid(errors)) => {
            errors.into_iter().map(|e| (e.field, e.error)).collect()
        }
        other => panic!("expected field errors, got {other:?}"),
    }
}

#[test]
fn example_order_round_trips_with_its_line_items() {
    same_as_validate("order", ORDER);
    let ParsedMessage::Order(m) = parse_message("order", ORDER.as_bytes()).expect("valid order")
    else {
        panic!("not an order");
    };
    assert_eq!(m.order.order_key, "ORD-000001");
    assert_eq!(m.order.total_price.to_string(), "173665.47");
    assert_eq!(m.order.order_date.to_string(), "1996-01-02");
    assert_eq!(
        m.order.comment.as_deref(),
        Some("nstructions sleep furiously among")
    );
    assert_eq!(m.order_line_item.len(), 4);
    let last = &m.order_line_item[3];
    assert_eq!(last.order_key, "ORD-000001");
    assert_eq!(last.line_number, 4);
    assert_eq!(last.supplier_key, None);
    assert_eq!(last.commit_date, None);
    assert_eq!(last.discount.to_string(), "0.09");
    assert_eq!(m.order_line_item[2].extended_price.to_string(), "13309.60");
    assert_eq!(m.row_count(), 5);
}

#[test]
fn entity_names_match_any_case() {
    for name in ["order", "Order", "ORDER"] {
        assert_eq!(RootEntity::from_name(name), Some(RootEntity::Order));
    }
    assert_eq!(
        RootEntity::from_name("order_line_item"),
        None,
        "derived entities are not roots"
    );
    assert!(matches!(
        parse_message("invoice", b"{}"),
        Err(ParseError::UnknownEntity(e)) if e == "invoice"
    ));
}

#[test]
fn edge_values_are_errors_naming_the_field() {
    let mut v: serde_json::Value = serde_json::from_str(ORDER).expect("json");
    v["ship_priority"] = serde_json::json!(2147483648i64);
    v["order_date"] = serde_json::json!("1996-13-01");
    v["total_price"] = serde_json::json!(true);
    v["comment"] = serde_json::Value::Null;
    v["order_status"] = serde_json::json!("OPEN");
    v["line_items"][0]["quantity"] = serde_json::Value::Null;
    v["line_items"][2]["line_number"] = serde_json::json!("3");
    let errors = field_errors("order", &v.to_string());
    let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        vec![
            "order_status",
            "total_price",
            "order_date",
            "ship_priority",
            "line_items[0].quantity",
            "line_items[2].line_number"
        ]
    );
    assert_eq!(errors[0].1, "is 4 characters long; at most 1 are allowed");
    assert_eq!(
        errors[3].1,
        "2147483648 is out of range for an integer (32-bit)"
    );
    assert_eq!(
        errors[4].1,
        "required field is missing or null (expected a number or numeric string)"
    );
}

#[test]
fn decimals_keep_all_digits_and_accept_strings() {
    let body = ORDER.replace("173665.47", "12345678901234567890.123456789012345678");
    let ParsedMessage::Order(m) = parse_message("order", body.as_bytes()).expect("valid") else {
        panic!("not an order");
    };
    assert_eq!(
        m.order.total_price.to_string(),
        "12345678901234567890.123456789012345678"
    );
    let body = ORDER.replace("173665.47", "\"0.10\"");
    let ParsedMessage::Order(m) = parse_message("order", body.as_bytes()).expect("valid") else {
        panic!("not an order");
    };
    assert_eq!(m.order.total_price.to_string(), "0.10");
}

#[test]
fn line_items_must_be_objects() {
    let mut v: serde_json::Value = serde_json::from_str(ORDER).expect("json");
    v["line_items"] = serde_json::json!([1]);
    let errors = field_errors("order", &v.to_string());
    assert_eq!(
        errors[0],
        (
            "line_items".to_string(),
            "element 0 must be an object, found a number".to_string()
        )
    );
}

#[test]
fn invalid_json_reports_position() {
    match parse_message("order", b"{\n  \"order_key\": oops}") {
        Err(ParseError::InvalidJson { line, column, .. }) => assert_eq!((line, column), (2, 16)),
        other => panic!("{other:?}"),
    }
}
