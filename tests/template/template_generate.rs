//! The cargo-generate template end to end: installs cargo-generate from crates.io if it is not
//! on PATH (the README's command), generates a project from this repository
//! (scripts/test-template.sh), checks it holds the project's world and not the template's,
//! replaces its entities with an unrelated schema (`tests/schemas/library/`) and runs the
//! project's test command. Its build output is kept in `target/template-check`.

use std::path::PathBuf;
use std::process::Command;

/// The cargo-generate release this test pins (newer ones need a newer rustc than this machine's).
const CARGO_GENERATE_VERSION: &str = "0.23.5";

/// The install command README.md gives a new user: exactly the one this test runs.
fn install_command(root: &std::path::Path) -> Vec<String> {
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let line = readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo install") && l.contains("cargo-generate"))
        .expect("README.md says how to install cargo-generate");
    let words: Vec<String> = line.split_whitespace().map(String::from).collect();
    assert_eq!(
        words.join(" "),
        format!("cargo install --locked cargo-generate --version {CARGO_GENERATE_VERSION}"),
        "README.md installs the cargo-generate this test pins, with --locked"
    );
    words
}

#[test]
fn a_generated_project_builds_and_passes_its_tests() {
    if std::env::var_os("NOMNOM_INSIDE_TEMPLATE_TEST").is_some() {
        // We are the generated project's own test run: do not recurse.
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if !root.join("cargo-generate.toml").exists() {
        // A generated project is not a template any more.
        return;
    }
    let install = install_command(&root);
    let installed = Command::new("cargo")
        .args(["generate", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        let status = Command::new(&install[0])
            .args(&install[1..])
            .status()
            .expect("cargo install runs");
        assert!(
            status.success(),
            "installing cargo-generate from crates.io failed"
        );
    }
    let out = root.join("target/template-check/generated");
    let status = Command::new("bash")
        .arg(root.join("scripts/test-template.sh"))
        .arg(&out)
        .env("CARGO_TARGET_DIR", root.join("target/template-check"))
        .env("NOMNOM_INSIDE_TEMPLATE_TEST", "1")
        .status()
        .expect("scripts/test-template.sh runs");
    assert!(
        status.success(),
        "the generated project did not build or its tests failed"
    );
}
