//! Generates the code of every fixture in `../tests/fixtures/<name>/` into `OUT_DIR/<name>/`.
use std::path::PathBuf;

fn main() {
    let fixtures = PathBuf::from("../tests/fixtures");
    println!("cargo:rerun-if-changed={}", fixtures.display());
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&fixtures)
        .expect("fixtures directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut modules = String::new();
    for name in &names {
        nomnom_codegen::Builder::new(fixtures.join(name))
            .out_dir(out.join(name))
            .run_for_cargo();
        modules.push_str(&format!(
            "/// Generated from fixture `{name}`.\npub mod {name} {{ include!(\"{name}/nomnom_generated.rs\"); }}\n"
        ));
    }
    std::fs::write(out.join("fixtures.rs"), modules).expect("write fixtures.rs");
}
