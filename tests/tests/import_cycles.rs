//! No import cycles between the files of any crate: a rule of the project's structure (a file can
//! be read knowing only what it imports), checked here so that it stays true.
//!
//! The graph is the file-level one: an edge from a file to every module of its crate it names by
//! `crate::…` or `super::…` outside comments and its `#[cfg(test)] mod tests`. Edges between a
//! module and its own ancestors do not count: a parent declares its children, and a child using
//! its parent's types is one module with its parts in several files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose `src/` is checked, from the workspace root.
const CRATES: [&str; 9] = [
    "agent",
    "audit",
    "cli",
    "control-plane",
    "devstack",
    "proto",
    "sidecar",
    "tests",
    "trust",
];

#[test]
fn no_crate_has_an_import_cycle_between_its_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let mut found = Vec::new();
    for name in CRATES {
        let modules = modules_of(&root.join(name).join("src"));
        assert!(!modules.is_empty(), "{name}/src has no Rust files");
        for cycle in cycles(&edges(&modules)) {
            found.push(format!("{name}: {}", cycle.join(" → ")));
        }
    }
    assert!(
        found.is_empty(),
        "import cycles (break each by moving what both sides need below them):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_cycle_is_found_and_a_parent_child_pair_is_not() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["d::e"]),
        ("d::e", vec!["d"]),
    ]
    .into_iter()
    .map(|(from, to)| {
        (
            from.to_string(),
            to.into_iter().map(str::to_string).collect(),
        )
    })
    .collect();
    let edges = without_ancestry(edges);
    assert_eq!(cycles(&edges), vec![vec!["a", "b", "c"]]);
}

/// Every module of the crate whose sources are under `src`, by path (`capture::hit`), with its
/// file.
fn modules_of(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut modules = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).expect("a source directory");
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                modules.insert(module_path(src, &path), path);
            }
        }
    }
    modules
}

fn module_path(src: &Path, file: &Path) -> String {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|last| matches!(last.as_str(), "mod" | "lib" | "main"))
    {
        parts.pop();
    }
    parts.join("::")
}

/// Each module's edges to the other modules it names.
fn edges(modules: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges = BTreeMap::new();
    for (module, file) in modules {
        let source = std::fs::read_to_string(file).expect("a readable source file");
        let code = code_of(&source);
        let parent: Vec<&str> = module.split("::").filter(|part| !part.is_empty()).collect();
        // `super` in `a/b.rs` and in `a/b/mod.rs` both name `a`.
        let parent = &parent[..parent.len().saturating_sub(1)];
        let mut named = BTreeSet::new();
        for (prefix, base) in [("crate::", &[][..]), ("super::", parent)] {
            for path in &paths_after(&code, prefix) {
                let mut full: Vec<&str> = base.to_vec();
                full.extend(path.split("::"));
                if let Some(target) = longest_module(modules, &full) {
                    named.insert(target);
                }
            }
        }
        named.remove(module);
        edges.insert(module.clone(), named);
    }
    without_ancestry(edges)
}

/// `source` without comments and without its trailing test module.
fn code_of(source: &str) -> String {
    let source = source
        .find("#[cfg(test)]\nmod tests")
        .map_or(source, |at| &source[..at]);
    source
        .lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `::`-separated lowercase paths that follow each `prefix` in `code`, with each `{…}`
/// group of a `use` expanded into the paths it names (`a::{b, c::D}` is `a::b` and `a::c`).
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + prefix.len()..];
        if !preceded_by_ident {
            expand_path(rest, "", &mut paths);
        }
    }
    paths
}

/// Adds the path at the start of `text` (under `base`) to `paths`, each path of a `{…}` group
/// that follows it too.
fn expand_path(text: &str, base: &str, paths: &mut Vec<String>) {
    let end = text
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let path = text[..end].trim_end_matches(':');
    let full = match (base.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => base.to_owned(),
        (false, false) => format!("{base}::{path}"),
    };
    if !path.is_empty() && path != "self" {
        paths.push(full.clone());
    }
    let Some(group) = text[end..].strip_prefix('{') else {
        return;
    };
    for item in top_level_items(group) {
        expand_path(item.trim_start(), &full, paths);
    }
}

/// The comma-separated items of a `{…}` group whose text (after the `{`) is `group`, up to its
/// closing brace.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..at]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items
}

#[test]
fn a_use_group_names_each_of_its_modules() {
    let code = "use crate::a::{b, c::{d, E}, self};\nuse super::f::G;\nlet x = crate::h::i(1);";
    assert_eq!(
        paths_after(code, "crate::"),
        ["a", "a::b", "a::c", "a::c::d", "h::i"]
    );
    assert_eq!(paths_after(code, "super::"), ["f"]);
}

/// The longest prefix of `path` that is a module of the crate.
fn longest_module(modules: &BTreeMap<String, PathBuf>, path: &[&str]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|len| path[..len].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// `edges` without those between a module and one of its ancestors.
fn without_ancestry(
    edges: BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let related =
        |a: &str, b: &str| a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"));
    edges
        .into_iter()
        .map(|(from, to)| {
            let to = to.into_iter().filter(|t| !related(&from, t)).collect();
            (from, to)
        })
        .collect()
}

/// The groups of modules that reach each other (strongly connected, more than one module),
/// each sorted.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(module) = stack.pop() {
            for next in edges.get(&module).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        edges.keys().map(|module| (module, reach(module))).collect();
    let mut groups: BTreeSet<Vec<String>> = BTreeSet::new();
    for (module, reached) in &reachable {
        if !reached.contains(*module) {
            continue;
        }
        let group: Vec<String> = reached
            .iter()
            .filter(|other| {
                reachable
                    .get(other)
                    .is_some_and(|back| back.contains(*module))
            })
            .cloned()
            .collect();
        groups.insert(group);
    }
    groups.into_iter().collect()
}
