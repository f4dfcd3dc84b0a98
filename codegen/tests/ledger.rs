//! The schema ledger: `nomnom-schema lock` records the YAML's shape; every later change is
//! classified against it at build time (safe and declared ones build with a note, the others
//! fail with their remedy and file:line:col) and by `nomnom-schema check`.

use std::path::Path;
use std::process::Command;

use nomnom_codegen::ledger::{ChangeClass, Ledger, compare};
use nomnom_codegen::{Builder, CodegenError, SourceFile, load_and_validate};

const ORDER: &str = r#"entity:
  name: Order
  source_type: root
  fields:
    - name: order_key
      type: String
      max_length: 32
    - name: quantity
      type: Integer
    - name: note
      type: String
      max_length: 100
      nullable: true
    - name: placed_on
      type: Date
  persistence:
    database:
      conformant_table: orders
      conformant_id_column: id
      unicity_fields: [order_key]
    primary_key: {name: id, type: BigInt, autogenerate: true}
"#;

fn schema(text: &str) -> nomnom_codegen::Schema {
    load_and_validate(&[SourceFile {
        path: "entities/order.yaml".into(),
        text: text.into(),
    }])
    .unwrap_or_else(|d| panic!("valid YAML:\n{d}"))
}

/// The changes from ORDER to `text`: (class, line, what).
fn changes(text: &str) -> Vec<(ChangeClass, u32, String)> {
    let ledger = Ledger::of(&schema(ORDER));
    compare(&ledger, &schema(text), "entities.lock")
        .into_iter()
        .map(|c| (c.class, c.loc.line as u32, c.what))
        .collect()
}

fn classes(text: &str) -> Vec<ChangeClass> {
    changes(text).into_iter().map(|(c, ..)| c).collect()
}

#[test]
fn the_ledger_reads_back_what_it_wrote() {
    let ledger = Ledger::of(&schema(ORDER));
    let text = ledger.to_text();
    assert_eq!(Ledger::parse(&text), Ok(ledger.clone()));
    assert!(text.contains("\"order_key\"") && text.ends_with('\n'));
    assert!(changes(ORDER).is_empty(), "no change, no note");
    // The version follows the shape, not the YAML's spelling.
    let version = ledger.version();
    assert_eq!(version.len(), 16);
    let respelled = ORDER.replace("  fields:\n", "  # a comment\n  fields:\n");
    assert_eq!(Ledger::of(&schema(&respelled)).version(), version);
    let reshaped = ORDER.replace("max_length: 100", "max_length: 101");
    assert_ne!(Ledger::of(&schema(&reshaped)).version(), version);
    assert!(Ledger::parse("{}").is_err());
    assert!(Ledger::parse(&text.replace("\"format\": 1", "\"format\": 9")).is_err());
}

#[test]
fn widenings_new_nullable_fields_and_new_entities_are_safe() {
    let text = ORDER
        .replace("      type: Integer", "      type: BigInt")
        .replace("max_length: 100", "max_length: 200")
        .replace(
            "    - name: placed_on",
            "    - name: channel\n      type: String\n      nullable: true\n    - name: placed_on",
        );
    assert_eq!(
        classes(&text),
        [ChangeClass::Safe, ChangeClass::Safe, ChangeClass::Safe],
        "{:?}",
        changes(&text)
    );
    let text = ORDER.replace("      max_length: 100\n", "");
    assert_eq!(classes(&text), [ChangeClass::Safe]);
}

#[test]
fn narrowings_type_changes_and_dropped_fields_are_breaking() {
    let narrowed = ORDER.replace("max_length: 100", "max_length: 50");
    assert_eq!(
        changes(&narrowed),
        [(
            ChangeClass::Breaking,
            12,
            "`Order.note`'s `max_length` narrows from 100 to 50: stored values may be longer"
                .into()
        )]
    );
    let retyped = ORDER.replace("      type: Date", "      type: Boolean");
    assert_eq!(classes(&retyped), [ChangeClass::Breaking]);
    let narrowed_type = ORDER.replace("      type: Integer", "      type: Float");
    assert_eq!(classes(&narrowed_type), [ChangeClass::Breaking]);
    let dropped = ORDER.replace("    - name: quantity\n      type: Integer\n", "");
    assert_eq!(classes(&dropped), [ChangeClass::Breaking]);
    // Declared: `removed` keeps the column and stops writing it.
    let removed = dropped.replace("  persistence:", "  removed: [quantity]\n  persistence:");
    assert_eq!(classes(&removed), [ChangeClass::Declared]);
}

#[test]
fn renames_defaults_and_required_fields_are_judged_by_what_the_yaml_declares() {
    let renamed = ORDER.replace(
        "    - name: quantity\n      type: Integer\n",
        "    - name: units\n      type: BigInt\n      renamed_from: quantity\n",
    );
    assert_eq!(
        classes(&renamed),
        [ChangeClass::Declared, ChangeClass::Safe],
        "a rename, and a widening of what was renamed: {:?}",
        changes(&renamed)
    );
    let required = ORDER.replace(
        "    - name: placed_on",
        "    - name: channel\n      type: String\n    - name: placed_on",
    );
    assert_eq!(classes(&required), [ChangeClass::NeedsBackfill]);
    let defaulted = required.replace(
        "    - name: channel\n      type: String\n",
        "    - name: channel\n      type: String\n      default: web\n",
    );
    assert_eq!(classes(&defaulted), [ChangeClass::Declared]);
    let made_required = ORDER.replace("      nullable: true\n", "");
    assert_eq!(classes(&made_required), [ChangeClass::NeedsBackfill]);
    let rekeyed = ORDER.replace("[order_key]", "[order_key, placed_on]");
    assert_eq!(classes(&rekeyed), [ChangeClass::NeedsBackfill]);
}

fn project(dir: &Path, order: &str) {
    std::fs::create_dir_all(dir.join("entities")).expect("entities dir");
    std::fs::write(dir.join("entities/order.yaml"), order).expect("yaml");
}

#[test]
fn a_build_refuses_what_the_ledger_calls_breaking_naming_the_yaml_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), ORDER);
    let out = dir.path().join("out");
    let builder = Builder::new(dir.path().join("entities")).out_dir(&out);
    // No ledger yet: nothing is judged.
    assert!(builder.run().expect("builds").warnings.0.is_empty());
    std::fs::write(
        dir.path().join("entities.lock"),
        Ledger::of(&schema(ORDER)).to_text(),
    )
    .expect("lock");
    project(
        dir.path(),
        &ORDER.replace("max_length: 100", "max_length: 200"),
    );
    let report = builder.run().expect("a safe change builds");
    // The build knows the ledger's version beside its own (`worker schema plan` takes a
    // database of either).
    let generated = std::fs::read_to_string(out.join("nomnom_generated.rs")).expect("generated");
    let locked = Ledger::of(&schema(ORDER)).version();
    assert!(
        generated.contains(&format!(
            "LOCK_SCHEMA_VERSION: Option<&str> = Some(\"{locked}\")"
        )),
        "the lock's version is generated"
    );
    let notes: Vec<String> = report.warnings.0.iter().map(|d| d.to_string()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains(":12:") && n.contains("safe schema change")),
        "{notes:?}"
    );
    project(
        dir.path(),
        &ORDER.replace("max_length: 100", "max_length: 10"),
    );
    match builder.run() {
        Err(CodegenError::Schema(d)) => {
            let text = d.to_string();
            assert!(
                text.contains("order.yaml:12:")
                    && text.contains("breaking schema change")
                    && text.contains("nomnom-schema lock"),
                "{text}"
            );
        }
        other => panic!("a narrowing built: {other:?}"),
    }
}

fn schema_command(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nomnom-schema"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("nomnom-schema runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn nomnom_schema_records_and_checks_the_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    project(dir.path(), ORDER);
    let (ok, said) = schema_command(dir.path(), &["check"]);
    assert!(ok && said.contains("no ledger"), "{said}");
    let (ok, said) = schema_command(dir.path(), &["lock"]);
    assert!(
        ok && said.contains("wrote entities.lock: 1 entities"),
        "{said}"
    );
    let recorded = std::fs::read_to_string(dir.path().join("entities.lock")).expect("lock");
    assert_eq!(Ledger::parse(&recorded), Ok(Ledger::of(&schema(ORDER))));

    project(
        dir.path(),
        &ORDER.replace("      type: Integer", "      type: BigInt"),
    );
    let (ok, said) = schema_command(dir.path(), &["check"]);
    assert!(
        ok && said.contains("safe: `Order.quantity` widens"),
        "{said}"
    );

    project(
        dir.path(),
        &ORDER.replace("      type: Integer", "      type: Boolean"),
    );
    let (ok, said) = schema_command(dir.path(), &["check"]);
    assert!(
        !ok && said.contains("breaking") && said.contains("remedy:"),
        "{said}"
    );
    let (ok, said) = schema_command(dir.path(), &["lock"]);
    assert!(!ok && said.contains("--accept-breaking"), "{said}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("entities.lock")).expect("lock"),
        recorded,
        "a refused lock leaves the ledger as it was"
    );
    let (ok, said) = schema_command(dir.path(), &["lock", "--accept-breaking"]);
    assert!(
        ok && said.contains("1 refused change(s) accepted"),
        "{said}"
    );
    let (ok, _) = schema_command(dir.path(), &["check"]);
    assert!(ok, "the accepted shape is the ledger's now");
}
