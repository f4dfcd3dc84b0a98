//! Snapshot tests of the generated code. Set `UPDATE_SNAPSHOTS=1` to rewrite the expected files.

use std::path::{Path, PathBuf};

use nomnom_codegen::{generate_from_sources, read_dir};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("fixtures"))
        .expect("fixtures dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn generate(name: &str) -> Vec<nomnom_codegen::GeneratedFile> {
    let files = read_dir(&root().join("fixtures").join(name)).expect("read fixture");
    generate_from_sources(&files).unwrap_or_else(|d| panic!("fixture {name} is invalid:\n{d}"))
}

fn check(dir: &Path, files: &[nomnom_codegen::GeneratedFile]) -> Vec<String> {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut problems = Vec::new();
    if update {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("snapshot dir");
    }
    for f in files {
        let path = dir.join(&f.name);
        if update {
            std::fs::write(&path, &f.contents).expect("write snapshot");
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == f.contents => {}
            Ok(_) => problems.push(format!("{} differs", path.display())),
            Err(_) => problems.push(format!("{} is missing", path.display())),
        }
    }
    let expected: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            if !expected.contains(&name) {
                problems.push(format!("{} is stale", e.path().display()));
            }
        }
    }
    problems
}

#[test]
fn generated_code_matches_snapshots() {
    let mut problems = Vec::new();
    for name in fixtures() {
        let files = generate(&name);
        problems.extend(check(&root().join("snapshots").join(&name), &files));
    }
    assert!(
        problems.is_empty(),
        "generated code changed (rerun with UPDATE_SNAPSHOTS=1 and review the diff):\n{}",
        problems.join("\n")
    );
}

#[test]
fn generation_is_deterministic() {
    for name in fixtures() {
        assert_eq!(generate(&name), generate(&name), "fixture {name}");
    }
}

#[test]
fn generated_files_parse_as_rust() {
    for name in fixtures() {
        for f in generate(&name) {
            syn::parse_file(&f.contents).unwrap_or_else(|e| panic!("{name}/{}: {e}", f.name));
        }
    }
}

#[test]
fn files_are_only_rewritten_when_they_change() {
    let src = tempfile::tempdir().expect("tempdir");
    let out = tempfile::tempdir().expect("tempdir");
    for f in read_dir(&root().join("fixtures/tpch")).expect("fixture") {
        let name = Path::new(&f.path).file_name().expect("name").to_owned();
        std::fs::write(src.path().join(name), f.text).expect("copy");
    }
    let builder = nomnom_codegen::Builder::new(src.path()).out_dir(out.path());
    let first = builder.run().expect("first run");
    assert_eq!(first.written.len(), 5);
    assert_eq!(first.inputs.len(), 4);
    let second = builder.run().expect("second run");
    assert!(second.written.is_empty(), "{:?}", second.written);
    // A doc change of one entity rewrites that entity's file only.
    let customer = src.path().join("customer.yaml");
    let text = std::fs::read_to_string(&customer).expect("read");
    std::fs::write(&customer, text.replace("A TPC-H customer", "A customer")).expect("edit");
    let third = builder.run().expect("third run");
    let names: Vec<String> = third
        .written
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["nomnom_entity_customer.rs"]);
}
