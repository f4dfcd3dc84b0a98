//! Error-text snapshots: each directory of `tests/broken/` is a broken schema (one kind of error
//! each, plus one with many problems in many files) and its `expected.txt` is exactly what
//! `cargo build` prints. A directory with a `before/` holds a valid schema and the one it was
//! (`before/`): a change the schema ledger refuses, one kind each, judged against the ledger of
//! `before/` as a build judges the YAML against `entities.lock`. Set `UPDATE_SNAPSHOTS=1` to
//! rewrite the expected files.

use std::path::PathBuf;

use nomnom_codegen::ledger::{Ledger, compare};
use nomnom_codegen::{SourceFile, load_and_validate};

fn cases() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/broken")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

/// The YAML files of `dir`, named as the user would see them in their crate.
fn sources(dir: &std::path::Path) -> Vec<SourceFile> {
    let mut files: Vec<SourceFile> = std::fs::read_dir(dir)
        .expect("yaml dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| SourceFile {
            path: format!(
                "entities/{}",
                p.file_name().expect("name").to_string_lossy()
            ),
            text: std::fs::read_to_string(&p).expect("read"),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn diagnostics(case: &std::path::Path) -> String {
    let files = sources(case);
    let before = case.join("before");
    if before.is_dir() {
        let valid = |files: &[SourceFile]| {
            load_and_validate(files)
                .unwrap_or_else(|d| panic!("{} is not a valid schema:\n{d}", case.display()))
        };
        let ledger = Ledger::of(&valid(&sources(&before)));
        let changes = compare(&ledger, &valid(&files), "entities.lock");
        let (errors, _notes) = nomnom_codegen::ledger::diagnostics(&changes);
        assert!(
            !errors.0.is_empty(),
            "{}: the ledger accepts the change",
            case.display()
        );
        return format!("{errors}\n");
    }
    match load_and_validate(&files) {
        Ok(_) => panic!("{} is unexpectedly valid", case.display()),
        Err(d) => format!("{d}\n"),
    }
}

#[test]
fn broken_schemas_report_exact_errors() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut problems = Vec::new();
    let all = cases();
    assert!(all.len() >= 15, "at least 15 broken schemas");
    for case in all {
        let actual = diagnostics(&case);
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &actual).expect("write expected.txt");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            problems.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_error_has_a_position() {
    for case in cases() {
        for line in diagnostics(&case)
            .lines()
            .filter(|l| l.starts_with("error: "))
        {
            // A YAML file's position, or the ledger's for what the YAML no longer has.
            let rest = line.trim_start_matches("error: ");
            let mut parts = rest.splitn(4, ':');
            let (_file, l, c) = (parts.next(), parts.next(), parts.next());
            let ok = l.is_some_and(|l| l.parse::<usize>().is_ok_and(|n| n > 0))
                && c.is_some_and(|c| c.parse::<usize>().is_ok_and(|n| n > 0));
            assert!(ok, "{}: no line:col in `{line}`", case.display());
        }
    }
}

/// A unique key that could outgrow PostgreSQL's index entry builds, with a warning at the key's
/// position (shown by cargo as `warning: entities/…:line:col: …` with the hint): the earlier
/// generator's TPC-H files, whose String keys have no `max_length`, keep building.
#[test]
fn unbounded_string_keys_build_with_a_warning_at_their_position() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upstream");
    let files = sources(&dir);
    let schema = load_and_validate(&files).expect("the upstream files build");
    let warnings: Vec<String> = schema.warnings.0.iter().map(|w| w.to_string()).collect();
    let customer = warnings
        .iter()
        .find(|w| w.starts_with("entities/customer.yaml:"))
        .unwrap_or_else(|| panic!("no warning for customers: {warnings:?}"));
    assert!(
        customer.contains("the unique key of `customers` may not fit PostgreSQL's index")
            && customer.contains("over 2600 bytes (422)")
            && customer.contains("hint: give each a `max_length`"),
        "{customer}"
    );
    let position = customer.split(':').skip(1).take(2).collect::<Vec<_>>();
    assert!(
        position
            .iter()
            .all(|n| n.parse::<usize>().is_ok_and(|n| n > 0)),
        "{customer}"
    );
    // The template's own example keys are bounded: no warnings.
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tpch");
    if example.is_dir() {
        let files = nomnom_codegen::read_dir(&example).expect("tpch fixture");
        let schema = load_and_validate(&files).expect("tpch builds");
        assert!(schema.warnings.is_empty(), "{}", schema.warnings);
    }
}

/// A name PostgreSQL would cut (over 63 bytes) is refused with its position.
#[test]
fn identifiers_over_63_bytes_are_refused() {
    let long = "a_column_name_that_goes_on_and_on_well_past_what_postgres_keeps_x";
    assert!(long.len() > 63);
    let yaml = format!(
        "entity:\n  name: Thing\n  source_type: root\n  fields:\n    - name: code\n      type: String\n      max_length: 10\n    - name: {long}\n      type: Integer\n  persistence:\n    database:\n      conformant_table: things\n      unicity_fields: [code]\n"
    );
    let files = [SourceFile {
        path: "entities/thing.yaml".into(),
        text: yaml,
    }];
    let errors = load_and_validate(&files).expect_err("refused").to_string();
    assert!(
        errors.contains(&format!(
            "entities/thing.yaml:8:13: column (field) name `{long}` is {} bytes; PostgreSQL identifiers are at most 63",
            long.len()
        )),
        "{errors}"
    );
}

/// A field added to an entity but not to its `csv: columns` (the README's example: a nullable
/// `loyalty_tier` on the customer read from dbgen's files) builds with a warning at the columns'
/// position; a required one left out is an error.
#[test]
fn a_field_left_out_of_csv_columns_is_a_warning_or_an_error_if_required() {
    let yaml = |nullable: bool| {
        format!(
            "entity:\n  name: Customer\n  source_type: reference\n  fields:\n    - name: customer_key\n      type: String\n      max_length: 32\n    - name: loyalty_tier\n      type: String\n      nullable: {nullable}\n  persistence:\n    database:\n      conformant_table: customers\n      unicity_fields: [customer_key]\n  csv:\n    header: false\n    columns: [customer_key, _]\n"
        )
    };
    let files = [SourceFile {
        path: "entities/customer.yaml".into(),
        text: yaml(true),
    }];
    let schema = load_and_validate(&files).expect("a nullable field left out builds");
    let warnings = schema.warnings.to_string();
    assert!(
        warnings.contains(
            "entities/customer.yaml:17:15: `csv.columns` does not list field `loyalty_tier`: rows read from CSV leave it null"
        ) && warnings.contains("hint: add `loyalty_tier` where its column is"),
        "{warnings}"
    );
    let files = [SourceFile {
        path: "entities/customer.yaml".into(),
        text: yaml(false),
    }];
    let errors = load_and_validate(&files)
        .expect_err("a required field left out")
        .to_string();
    assert!(
        errors.contains("`csv.columns` does not list the required field `loyalty_tier`"),
        "{errors}"
    );
}
