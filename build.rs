//! Generates models, parsers, `ParsedMessage` and diesel code from `entities/*.yaml`.
fn main() {
    nomnom_codegen::Builder::new("entities").run_for_cargo();
}
