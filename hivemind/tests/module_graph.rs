//! The code map's invariants, checked on the source (ARCHITECTURE.md):
//! the daemon's module graph has no cycles (each top-level module of
//! `hivemind/src` may use the modules below it, never one that uses it back;
//! edges are `crate::<module>` paths outside test code), and each outside
//! system is reached from its one module. `cargo test --test module_graph
//! -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`node` for `src/node/apps.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// `crate::x` references in code that is not a test module.
fn references(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        // `hivemind_tests::` and friends are not this crate.
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Every source file of the daemon with its top-level module and text.
fn sources() -> Vec<(String, PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let module = module_of(&src, &file)?;
            let text = std::fs::read_to_string(&file).expect("read a source file");
            Some((module, file, text))
        })
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, text) in sources() {
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(references(&text).into_iter().filter(|m| *m != module));
    }
    graph
}

/// A cycle through `start`, if any, as the list of modules on it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(graph, node, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_module_graph_has_no_cycles() {
    let graph = graph();
    for (module, uses) in &graph {
        let uses: Vec<&str> = uses.iter().map(String::as_str).collect();
        println!("{module} -> {}", uses.join(", "));
    }
    assert!(
        graph.contains_key("node") && graph.contains_key("api"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the module graph has a cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn each_outside_system_is_reached_from_its_one_module() {
    let seams: [(&str, &[&str]); 6] = [
        ("aya::", &["dataplane"]),
        ("containerd_client", &["containerd", "runtime", "image"]),
        ("redb::", &["state"]),
        ("rtnetlink", &["network"]),
        ("foca::", &["cluster"]),
        ("hickory_server::", &["discovery"]),
    ];
    for (module, file, text) in sources() {
        for (needle, owners) in seams {
            assert!(
                owners.contains(&module.as_str()) || !text.contains(needle),
                "{} uses {needle}, which only {owners:?} may",
                file.display()
            );
        }
    }
    let common = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hivemind-common/src/lib.rs");
    let common = std::fs::read_to_string(common).expect("read hivemind-common");
    assert!(
        common.contains("#![no_std]"),
        "hivemind-common must be no_std"
    );
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        references("use crate::node::Node; hivemind_tests::daemon"),
        BTreeSet::from(["node".to_string()])
    );
}
