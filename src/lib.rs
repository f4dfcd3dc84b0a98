//! nomnom: schema-driven message ingestion.
//!
//! `entities/*.yaml` → `build.rs` generates [`generated`] → the [`api`] accepts messages and
//! publishes them to NATS JetStream → the [`worker`] parses them and writes rows to PostgreSQL
//! through the [`store`].

pub mod admin;
pub mod api;
pub mod bulk;
pub mod config;
pub mod defaults;
pub mod describe;
pub mod envelope;
pub mod generated;
pub mod labels;
pub mod load;
pub mod metrics;
pub mod nats;
pub mod process;
pub mod store;
pub mod text;
pub mod throttle;
pub mod transforms;
pub mod worker;

/// The runtime crate the generated code stands on, re-exported for users of the generated types.
pub use nomnom_runtime as runtime;

#[cfg(test)]
mod layers {
    //! The crates' modules import one another in one direction: a test over their `crate::`
    //! paths fails on any cycle between top-level modules (this crate, the generator and the
    //! runtime), naming the files that close it.

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Top-level module → (module it names → a file that names it).
    fn imports(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut files = Vec::new();
        let mut dirs = vec![src.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("source folder").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n != "bin") {
                        dirs.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let module_of = |path: &Path| -> Option<String> {
            let rel = path.strip_prefix(src).ok()?;
            let first = rel.components().next()?.as_os_str().to_string_lossy();
            let name = first.trim_end_matches(".rs").to_string();
            (name != "lib" && name != "main").then_some(name)
        };
        let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
        let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for file in &files {
            let Some(from) = module_of(file) else {
                continue;
            };
            let text = std::fs::read_to_string(file).expect("source file");
            let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
            for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if name != from && modules.contains(&name) {
                        graph
                            .entry(from.clone())
                            .or_default()
                            .entry(name)
                            .or_insert_with(|| file.display().to_string());
                    }
                }
            }
        }
        graph
    }

    /// A cycle of the graph, if it has one (module names, the first repeated at the end).
    fn cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeMap<String, String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|n| n == node) {
                let mut found = path[at..].to_vec();
                found.push(node.to_string());
                return Some(found);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_string());
            for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
                if let Some(found) = visit(next, graph, path, done) {
                    return Some(found);
                }
            }
            path.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
    }

    #[test]
    fn no_module_imports_itself_back() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for crate_src in ["src", "codegen/src", "runtime/src"] {
            let graph = imports(&root.join(crate_src));
            assert!(
                !graph.is_empty() || crate_src != "src",
                "no imports read in {crate_src}"
            );
            if let Some(found) = cycle(&graph) {
                let steps: Vec<String> = found
                    .windows(2)
                    .map(|w| format!("{} -> {} (in {})", w[0], w[1], graph[&w[0]][&w[1]]))
                    .collect();
                panic!("an import cycle in {crate_src}:\n{}", steps.join("\n"));
            }
        }
    }

    #[test]
    fn the_cycle_finder_finds_a_cycle() {
        let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (a, b) in [("config", "api"), ("api", "nats"), ("nats", "config")] {
            graph
                .entry(a.into())
                .or_default()
                .insert(b.into(), format!("src/{a}.rs"));
        }
        assert_eq!(
            cycle(&graph),
            Some(vec![
                "api".into(),
                "nats".into(),
                "config".into(),
                "api".into()
            ])
        );
        graph.get_mut("nats").expect("nats").clear();
        assert_eq!(cycle(&graph), None);
    }
}
