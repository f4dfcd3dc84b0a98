//! Error text for broken schemas: file:line:col, what was expected, and a hint.

use nomnom_codegen::{SourceFile, load_and_validate};

const ORDER: &str = "entity:
  name: Order
  source_type: root
  fields:
    - name: order_key
      type: String
    - name: line_items
      type: List[Object]
  persistence:
    database:
      conformant_table: orders
      unicity_fields: [order_key]
";

fn errors(files: &[(&str, &str)]) -> String {
    let files: Vec<SourceFile> = files
        .iter()
        .map(|(path, text)| SourceFile {
            path: path.to_string(),
            text: text.to_string(),
        })
        .collect();
    match load_and_validate(&files) {
        Ok(_) => panic!("schema unexpectedly valid"),
        Err(d) => d.to_string(),
    }
}

fn one(yaml: &str) -> String {
    errors(&[("entities/order.yaml", yaml)])
}

#[test]
fn unknown_type_with_hint() {
    let yaml = ORDER.replace("type: String", "type: Strng");
    assert_eq!(
        one(&yaml),
        "error: entities/order.yaml:6:13: unknown type `Strng` for field `order_key`\n  hint: did you mean `String`? (known: String, Integer, BigInt, Float, Decimal, Boolean, Date, DateTime, Uuid, Json, List[Object], List[String])"
    );
}

#[test]
fn unknown_keys_everywhere_at_once() {
    let yaml = ORDER
        .replace("source_type: root", "sorce_type: root\n  source_type: root")
        .replace(
            "      type: String",
            "      type: String\n      nulable: true",
        );
    assert_eq!(
        one(&yaml),
        "error: entities/order.yaml:3:3: unknown key `sorce_type` in `entity`\n  hint: did you mean `source_type`? (known: name, source_type, type, doc, prefix, fields, repeated_for, parent, persistence)\n\
         error: entities/order.yaml:8:7: unknown key `nulable` in a field\n  hint: did you mean `nullable`? (known: name, type, nullable, doc, max_length, args, computed_from)"
    );
}

#[test]
fn problems_in_several_files_are_all_reported() {
    let bad_a = ORDER.replace("source_type: root", "source_type: rooot");
    let bad_b = ORDER
        .replace("name: Order", "name: Customer")
        .replace("[order_key]", "[order_id]")
        .replace("orders", "customers");
    assert_eq!(
        errors(&[("entities/a.yaml", &bad_a), ("entities/b.yaml", &bad_b)]),
        "error: entities/a.yaml:3:16: unknown source_type `rooot`\n  hint: did you mean `root`? (known: root, derived, reference)"
    );
    // Validation runs once every file loads; then all its problems are listed too.
    let bad_c = bad_b.replace("[order_id]", "[order_id, line_items]");
    assert_eq!(
        errors(&[("entities/b.yaml", &bad_c)]),
        "error: entities/b.yaml:12:24: unicity field `order_id` is not a field of `Customer`\n  hint: did you mean `order_key`? (known: order_key)\n\
         error: entities/b.yaml:12:34: unicity field `line_items` is a `List[Object]`, which is not stored"
    );
}

#[test]
fn invalid_yaml_has_a_position() {
    let text = one("entity:\n  name: [Order\n");
    assert!(
        text.starts_with("error: entities/order.yaml:3:1: invalid YAML:"),
        "{text}"
    );
}

#[test]
fn duplicate_keys_are_errors() {
    let yaml = ORDER.replace(
        "  source_type: root\n",
        "  source_type: root\n  source_type: derived\n",
    );
    assert_eq!(
        one(&yaml),
        "error: entities/order.yaml:4:3: duplicate key `source_type` (first written at line 3, column 3)"
    );
}

const LINE_ITEM: &str = "entity:
  name: OrderLineItem
  source_type: derived
  repeated_for:
    entity: Order
    field: line_items
    each_known_as: item
  fields:
    - name: order_key
      type: String
      computed_from:
        transform: copy_from_parent
        sources: [{source: parent, field: order_key}]
    - name: line_number
      type: Integer
      computed_from:
        transform: extract_field
        sources: [item]
        args: {field_path: line_number}
";

fn with_child(child: &str) -> String {
    errors(&[
        ("entities/order.yaml", ORDER),
        ("entities/order_line_item.yaml", child),
    ])
}

#[test]
fn derived_entity_problems() {
    assert_eq!(
        with_child(&LINE_ITEM.replace("entity: Order", "entity: Ordr")),
        "error: entities/order_line_item.yaml:5:13: unknown parent entity `Ordr`\n  hint: did you mean `Order`? (known: Order, OrderLineItem)"
    );
    assert_eq!(
        with_child(&LINE_ITEM.replace("field: line_items", "field: order_key")),
        "error: entities/order_line_item.yaml:6:12: `repeated_for.field` must be a List field, but `Order.order_key` is `String`"
    );
    assert_eq!(
        with_child(&LINE_ITEM.replace("field: order_key}", "field: order_kye}")),
        "error: entities/order_line_item.yaml:13:43: parent `Order` has no field `order_kye`\n  hint: did you mean `order_key`? (known: order_key, line_items)"
    );
    assert_eq!(
        with_child(&LINE_ITEM.replace("copy_from_parent", "copy_form_parent")),
        "error: entities/order_line_item.yaml:12:20: unknown transform `copy_form_parent`\n  hint: did you mean `copy_from_parent`? (known: copy_from_parent, copy_field, extract_field, json_get_string, json_get_int, json_get_float, json_get_bool, json_get_optional_string, json_get_optional_int, json_get_optional_float, json_get_optional_bool, constant, constant_value, coalesce)"
    );
    assert_eq!(
        with_child(
            &LINE_ITEM
                .replace("type: Integer", "type: String")
                .replace("transform: extract_field", "transform: json_get_int")
        ),
        "error: entities/order_line_item.yaml:17:20: this transform reads a integer (32-bit) but field `line_number` is `String`"
    );
}

#[test]
fn cycles_are_reported() {
    let a = LINE_ITEM
        .replace("name: OrderLineItem", "name: A")
        .replace("entity: Order", "entity: B")
        .replace("field: order_key}", "field: x}")
        .replace("field: line_items", "field: x");
    let b = a
        .replace("name: A", "name: B")
        .replace("entity: B", "entity: A");
    let a = a.replace(
        "    - name: order_key",
        "    - name: x\n      type: List[Object]\n    - name: order_key",
    );
    let b = b.replace(
        "    - name: order_key",
        "    - name: x\n      type: List[Object]\n    - name: order_key",
    );
    let text = errors(&[("entities/a.yaml", &a), ("entities/b.yaml", &b)]);
    assert!(
        text.contains("entities/a.yaml:2:9: derived entities form a cycle: A -> B -> A"),
        "{text}"
    );
    assert!(
        text.contains("entities/b.yaml:2:9: derived entities form a cycle: B -> A -> B"),
        "{text}"
    );
}

#[test]
fn field_overrides_must_agree() {
    let yaml = format!("{ORDER}    field_overrides:\n      - {{name: order_key, type: Integer}}\n");
    assert_eq!(
        one(&yaml),
        "error: entities/order.yaml:14:16: field_overrides `order_key` is `Integer` but `fields` says `String`"
    );
}

#[test]
fn duplicate_entity_names() {
    let other = ORDER.replace("orders", "orders2");
    assert_eq!(
        errors(&[("entities/a.yaml", ORDER), ("entities/b.yaml", &other)]),
        "error: entities/b.yaml:2:9: entity `Order` is already defined in entities/a.yaml:2:9"
    );
}
