//! Error-text snapshots: each directory of `tests/broken/` is a broken schema (one kind of error
//! each, plus one with many problems in many files) and its `expected.txt` is exactly what
//! `cargo build` prints. Set `UPDATE_SNAPSHOTS=1` to rewrite the expected files.

use std::path::PathBuf;

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

fn diagnostics(case: &PathBuf) -> String {
    let mut files: Vec<SourceFile> = std::fs::read_dir(case)
        .expect("case dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| SourceFile {
            // Shown as the user would see it in their crate.
            path: format!(
                "entities/{}",
                p.file_name().expect("name").to_string_lossy()
            ),
            text: std::fs::read_to_string(&p).expect("read"),
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
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
            let rest = line.trim_start_matches("error: entities/");
            let mut parts = rest.splitn(4, ':');
            let (_file, l, c) = (parts.next(), parts.next(), parts.next());
            let ok = l.is_some_and(|l| l.parse::<usize>().is_ok_and(|n| n > 0))
                && c.is_some_and(|c| c.parse::<usize>().is_ok_and(|n| n > 0));
            assert!(ok, "{}: no line:col in `{line}`", case.display());
        }
    }
}
