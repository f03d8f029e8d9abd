//! The library's imports point one way (docs/architecture.md, "Layers"): read from the source,
//! every `crate::<module>` a module names is an edge. The adapters never import the pipeline or
//! the worker, the pure cores import nothing but cores, and the graph has no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const CORES: &[&str] = &["contract", "offsets", "config", "synth", "retry", "error"];
const ADAPTERS: &[&str] = &["kafka", "db", "lag", "registry", "http"];
const COMPOSITION: &[&str] = &[
    "pipeline",
    "worker",
    "dev",
    "produce",
    "dead_letters",
    "check",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level module a file under src/ belongs to (`src/kafka/group.rs` -> `kafka`).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The code of a file without its `#[cfg(test)]` module, which may reach anywhere.
fn production_code(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at])
}

/// Every `crate::name` and every `name` inside `crate::{...}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let is_test_file = path.file_name().is_some_and(|n| n == "tests.rs");
            if path.extension().is_none_or(|e| e != "rs") || is_test_file {
                continue;
            }
            let Some(module) = module_of(path.strip_prefix(&src).expect("under src/")) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).expect("a source file");
            let edges = graph.entry(module.clone()).or_default();
            for to in named_modules(production_code(&text)) {
                if to != module {
                    edges.insert(to);
                }
            }
        }
    }
    graph
}

fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            return Some(path[at..].to_vec());
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|start| visit(start, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_graph_is_read_from_every_module() {
    let graph = graph();
    for module in CORES.iter().chain(ADAPTERS).chain(COMPOSITION) {
        assert!(graph.contains_key(*module), "{module} not found: {graph:?}");
    }
    assert!(graph["pipeline"].contains("kafka"), "{graph:?}");
}

#[test]
fn adapters_never_import_the_pipeline_or_the_worker() {
    let graph = graph();
    for adapter in ADAPTERS {
        let wrong: Vec<_> = graph[*adapter]
            .iter()
            .filter(|to| COMPOSITION.contains(&to.as_str()))
            .collect();
        assert!(wrong.is_empty(), "{adapter} imports {wrong:?}");
    }
}

#[test]
fn pure_cores_import_only_cores() {
    let graph = graph();
    for core in CORES {
        let wrong: Vec<_> = graph[*core]
            .iter()
            .filter(|to| !CORES.contains(&to.as_str()))
            .collect();
        assert!(wrong.is_empty(), "{core} imports {wrong:?}");
    }
}

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    assert_eq!(cycle(&graph()), None);
}

#[test]
fn a_cycle_is_found_when_there_is_one() {
    let mut graph = Graph::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into()])
    );
}
