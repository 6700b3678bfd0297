//! The code of orchestratord flows one way (docs/ARCHITECTURE.md): api → operations (admission,
//! dispatch, completion, lifecycle, health, runner, registry_follower) → state →
//! orchestrator-core. This test reads every file under `src/`, collects the edges between the
//! crate's top-level modules that `crate::…` paths make (in `use` items and inline paths,
//! comments stripped; `lib.rs` is the root and is skipped), and fails on any cycle, naming it.
//!
//! What it does not see: a call of an inherent method of `AppState` defined in another room
//! (`state.release(…)`) needs no path, so the runtime loop "a task ends → its pool is
//! dispatched again" is not an edge here. The check is about imports: a module never imports
//! one that imports it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Removes `//` and `/* */` comments and the contents of string literals, so that paths named
/// in docs or messages are not edges.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 3 < b.len() && b[i + 1] == b'\\' {
            // An escaped char literal ('\'', '\n'): skip to its closing quote.
            i = src[i + 3..].find('\'').map_or(b.len(), |e| i + 3 + e + 1);
        } else if b[i] == b'\'' && i + 2 < b.len() && b[i + 2] == b'\'' {
            // A char literal ('"'); lifetimes ('a) pass through.
            i += 3;
        } else {
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules a source file names through `crate::`.
fn crate_refs(src: &str) -> BTreeSet<String> {
    let code = strip(src);
    let mut refs = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate::".len()..];
        rest = after;
        // `$crate::` (macros) and `foo_crate::` are not this crate.
        if before.is_some_and(|c| c == '$' || c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let after = after.trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a::X, b, c::{D, E}}`: the first segment of each item at depth 0.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start && depth == 0 => {
                        let id = ident_at(&group[i..]);
                        if !id.is_empty() && id != "self" {
                            refs.insert(id);
                        }
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let id = ident_at(after);
            if !id.is_empty() {
                refs.insert(id);
            }
        }
    }
    refs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module of a file under `src/`: `state/pool.rs` → `state`, `runner.rs` → `runner`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// Edges between top-level modules (self-edges dropped), with one file that makes each.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(src, f) else {
            continue;
        };
        let text = std::fs::read_to_string(f).expect("read source");
        let entry = graph.entry(from.clone()).or_default();
        for to in crate_refs(&text) {
            // Re-exports at the crate root (`crate::PoolController`) resolve to their module
            // through lib.rs; only names of this crate's modules are edges.
            if to != from && modules.contains(&to) {
                let rel = f.strip_prefix(src).unwrap().display().to_string();
                entry.entry(to).or_insert(rel);
            }
        }
    }
    graph
}

/// Every elementary cycle's first sighting, as "a → b → … → a" (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            if let Some(c) = visit(next, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_of_orchestratord_import_in_one_direction() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.len() >= 10 && graph.values().map(BTreeMap::len).sum::<usize>() >= 10,
        "the scan found too little to mean anything: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let hops: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("{} → {} (in src/{})", w[0], w[1], graph[&w[0]][&w[1]]))
            .collect();
        panic!(
            "module import cycle in orchestratord: {}\n  {}",
            cycle.join(" → "),
            hops.join("\n  ")
        );
    }
}

#[test]
fn the_scan_sees_grouped_and_inline_paths_and_ignores_comments() {
    let src = r#"
        // use crate::ignored_comment::X;
        /// doc: crate::ignored_doc
        use crate::{alpha::A, beta, gamma::{C, D}};
        use crate::delta::E;
        fn f() { crate::epsilon::run(); let _ = "crate::ignored_string"; let c = '"'; let q = '\''; crate::zeta::g(); }
        macro_rules! m { () => { $crate::ignored_macro::x() } }
    "#;
    let refs: Vec<String> = crate_refs(src).into_iter().collect();
    assert_eq!(
        refs,
        ["alpha", "beta", "delta", "epsilon", "gamma", "zeta"].map(String::from)
    );
}

#[test]
fn a_back_edge_is_reported_as_a_cycle() {
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (from, to) in [
        ("api", "admission"),
        ("admission", "state"),
        ("state", "task"),
    ] {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), format!("{from}.rs"));
    }
    assert_eq!(find_cycle(&graph), None);
    graph
        .entry("state".into())
        .or_default()
        .insert("admission".into(), "state/mod.rs".into());
    assert_eq!(
        find_cycle(&graph),
        Some(
            ["admission", "state", "admission"]
                .map(String::from)
                .to_vec()
        )
    );
}
