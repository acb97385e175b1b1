//! The operator's modules depend on each other without a loop: every `crate::…` (and, inside
//! `rollout/` and `crd/`, `super::…`) path in `src/` is an edge, and the graph must be acyclic.
//! Submodules of `rollout` and `crd` are nodes of their own (`rollout::plan`, `crd::rollout` …);
//! a module's own `mod.rs` re-exports are not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn node_of(file: &Path, src: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    match parts.as_slice() {
        [dir, m] if m == "mod" => dir.clone(),
        [dir, m] => format!("{dir}::{m}"),
        [m] => m.clone(),
        _ => rel.display().to_string(),
    }
}

/// The modules a file names through `crate::a[::b]` or `super::b` paths.
fn edges(text: &str, node: &str, nodes: &BTreeSet<String>) -> BTreeSet<String> {
    let parent = node.split_once("::").map(|(p, _)| p);
    let mut out = BTreeSet::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for (prefix, base) in [("crate::", None), ("super::", parent)] {
        if prefix == "super::" && base.is_none() {
            continue;
        }
        for (i, _) in code.match_indices(prefix) {
            // `super::super` and friends are not used here; `self::` is not an edge.
            let rest = &code[i + prefix.len()..];
            let ident = |s: &str| -> String {
                s.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            };
            let first = ident(rest);
            let second = rest
                .strip_prefix(&format!("{first}::"))
                .map(ident)
                .unwrap_or_default();
            let target = match base {
                Some(b) => format!("{b}::{first}"),
                None if nodes.contains(&format!("{first}::{second}")) => format!("{first}::{second}"),
                None => first,
            };
            if nodes.contains(&target) && target != node && !node.starts_with(&format!("{target}::")) {
                out.insert(target);
            }
        }
    }
    out
}

#[test]
fn operator_modules_have_no_import_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for entry in walk(&src) {
        if entry.extension().is_some_and(|e| e == "rs") {
            files.push(entry);
        }
    }
    let nodes: BTreeSet<String> = files.iter().map(|f| node_of(f, &src)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let node = node_of(f, &src);
        let text = std::fs::read_to_string(f).unwrap();
        // A parent's mod.rs only declares and re-exports its children.
        let mut e = edges(&text, &node, &nodes);
        e.retain(|t| !t.starts_with(&format!("{node}::")));
        graph.entry(node).or_default().extend(e);
    }
    // Depth-first search for a cycle.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(cycle) = visit(n, &graph, &mut Vec::new(), &mut done) {
            panic!("import loop: {}", cycle.join(" -> "));
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
