//! The workspace's shape, checked from the source text: no import cycle between the modules of
//! any crate, and in each agent crate the modules at the top of `src/` are pure (the edges,
//! which own sockets, netlink, HTTP, files and the runtime, live under `src/edge/`).
//!
//! Read, not compiled: a module is a file (`a.rs` or `a/mod.rs` is `a`, `a/b.rs` is `a::b`),
//! its references are the `crate::` and `super::` paths written in it outside its test block
//! (`#[cfg(test)] mod tests` and `*_tests.rs` files are tests and may use anything), and a
//! module may use its ancestors and descendants (a parent declares its children; a child sees
//! its parent), so only references between modules neither of which contains the other count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The agent crates, whose top-level modules must be pure.
pub const AGENTS: &[&str] = &[
    "uplink-monitor",
    "cross-site-failover",
    "whereami",
    "dhcp-takeover",
    "imds-endpoint",
    "inventory",
];

/// What a pure module does not name: the async runtime, sockets, netlink, HTTP, files, libc
/// and the edges themselves.
const IMPURE: &[&str] = &[
    "tokio",
    "UdpSocket",
    "TcpStream",
    "TcpListener",
    "UnixStream",
    "socket2",
    "rtnetlink",
    "netlink_",
    "fieldnet::net",
    "BusClient",
    "reqwest",
    "hyper",
    "axum",
    "std::fs",
    "libc",
    "crate::edge",
];

/// One module of a crate: its path (`a::b`, empty for the crate root) and its source outside
/// tests.
#[derive(Debug)]
pub struct Module {
    pub path: Vec<String>,
    pub file: PathBuf,
    pub text: String,
}

/// The modules of the crate whose `src` is `src`, test files left out.
pub fn modules(src: &Path) -> std::io::Result<Vec<Module>> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    let mut modules = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap_or(&file);
        let mut path: Vec<String> = relative
            .iter()
            .map(|part| part.to_string_lossy().into_owned())
            .collect();
        let Some(last) = path.pop() else { continue };
        let Some(stem) = last.strip_suffix(".rs") else {
            continue;
        };
        if stem.ends_with("_tests") || stem == "tests" {
            continue;
        }
        // `lib.rs` and `main.rs` at the top are the root; `mod.rs` is its directory's module.
        if stem != "mod" && (!matches!(stem, "lib" | "main") || !path.is_empty()) {
            path.push(stem.to_owned());
        }
        let text = std::fs::read_to_string(&file)?;
        modules.push(Module {
            path,
            file,
            text: without_tests(&text),
        });
    }
    Ok(modules)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The source before its `#[cfg(test)]` module (kept at the end of a file by convention), with
/// comments removed.
fn without_tests(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|next| {
                next.trim_start().starts_with("mod ") || next.contains("#[path")
            })
        {
            // A test module declared here: inline (to the end) or in its own file (one line).
            let next = lines.peek().copied().unwrap_or_default();
            if next.trim_end().ends_with('{') {
                break;
            }
            continue;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        kept.push_str(line.split(" // ").next().unwrap_or(line));
        kept.push('\n');
    }
    kept
}

/// The module paths `module` refers to (`crate::a::b::Item` and `super::` paths resolved, brace
/// groups expanded), as written; [`resolve`] maps them to modules.
pub fn references(module: &Module) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let text = &module.text;
    for (start, _) in text.match_indices("crate::") {
        if text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        paths(&text[start + "crate::".len()..], Vec::new(), &mut found);
    }
    for (start, _) in text.match_indices("super::") {
        if text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        {
            continue;
        }
        let mut base = module.path.clone();
        let mut rest = &text[start..];
        while let Some(after) = rest.strip_prefix("super::") {
            base.pop();
            rest = after;
        }
        paths(rest, base, &mut found);
    }
    found
}

/// Reads one path (or brace group) at the start of `text`, below `base`.
fn paths(text: &str, base: Vec<String>, found: &mut BTreeSet<Vec<String>>) {
    let mut path = base;
    let mut rest = text;
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut end = group.len();
            for (index, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = index;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            for item in split_top(&group[..end]) {
                paths(item.trim(), path.clone(), found);
            }
            return;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || name == "self" {
            break;
        }
        path.push(name.clone());
        rest = &rest[name.len()..];
        match rest.strip_prefix("::") {
            Some(after) => rest = after,
            None => break,
        }
    }
    found.insert(path);
}

fn split_top(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// The longest known module path `reference` starts with.
fn resolve<'a>(known: &'a BTreeSet<Vec<String>>, reference: &[String]) -> Option<&'a Vec<String>> {
    (1..=reference.len())
        .rev()
        .find_map(|length| known.get(&reference[..length]))
}

fn related(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The module graph of one crate: who refers to whom, ancestors and descendants left out.
pub fn graph(modules: &[Module]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut graph = BTreeMap::new();
    for module in modules {
        let targets: BTreeSet<Vec<String>> = references(module)
            .iter()
            .filter_map(|reference| resolve(&known, reference))
            .filter(|target| !related(target, &module.path))
            .cloned()
            .collect();
        graph.insert(module.path.clone(), targets);
    }
    graph
}

/// A cycle of the graph, as the modules around it, if there is one.
pub fn cycle(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut names: Vec<String> = stack[from..].iter().map(|n| n.join("::")).collect();
                names.push(node.join("::"));
                return Some(names);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, marks, stack) {
                return Some(found);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(found) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(found);
        }
    }
    None
}

/// The impure names a top-level module of an agent uses, with the module's file.
pub fn impurities(modules: &[Module]) -> Vec<(PathBuf, &'static str)> {
    let mut found = Vec::new();
    for module in modules {
        if module.path.len() != 1 || module.path[0] == "edge" {
            continue;
        }
        for word in IMPURE {
            if module.text.contains(word) {
                found.push((module.file.clone(), *word));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask sits in the workspace")
            .to_path_buf()
    }

    fn crates() -> Vec<PathBuf> {
        let mut crates: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
            .expect("crates/")
            .map(|entry| entry.expect("crates/ entry").path())
            .filter(|path| path.join("src").is_dir())
            .collect();
        crates.push(workspace().join("xtask"));
        crates.sort();
        crates
    }

    fn module(path: &str, text: &str) -> Module {
        Module {
            path: path.split("::").map(str::to_owned).collect(),
            file: PathBuf::from(format!("{path}.rs")),
            text: without_tests(text),
        }
    }

    #[test]
    fn no_crate_has_an_import_cycle_between_its_modules() {
        let mut problems = Vec::new();
        for krate in crates() {
            let modules = modules(&krate.join("src")).expect("reading the sources");
            assert!(!modules.is_empty(), "{} has modules", krate.display());
            if let Some(cycle) = cycle(&graph(&modules)) {
                problems.push(format!("{}: {}", krate.display(), cycle.join(" -> ")));
            }
        }
        assert!(
            problems.is_empty(),
            "import cycles:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_top_level_modules_of_every_agent_are_pure() {
        let mut problems = Vec::new();
        for agent in AGENTS {
            let src = workspace().join("crates").join(agent).join("src");
            let modules = modules(&src).expect("reading the sources");
            for (file, word) in impurities(&modules) {
                problems.push(format!("{}: uses {word}", file.display()));
            }
        }
        assert!(
            problems.is_empty(),
            "top-level modules of agents must be pure (edges go under src/edge/):\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn a_cycle_between_siblings_is_found_and_a_parent_child_pair_is_not() {
        let modules = [
            module("agent", "use crate::hub_aws::{HubView, self};\n"),
            module("hub_aws", "use crate::{agent::{TunnelReport}, xml};\n"),
            module(
                "xml",
                "use super::agent;\n#[cfg(test)]\nmod tests {\n use crate::hub_aws;\n}\n",
            ),
        ];
        assert_eq!(
            cycle(&graph(&modules)),
            Some(vec!["agent".into(), "hub_aws".into(), "agent".into()])
        );
        let modules = [
            module("config", "mod validate;\nuse validate::x;\n"),
            module(
                "config::validate",
                "use super::*;\nuse crate::config::Wire;\n",
            ),
            module("names", "// use crate::config;\nfn f() {}\n"),
        ];
        assert_eq!(cycle(&graph(&modules)), None);
        let modules = [
            module("edge::agent", "use super::heartbeats::Socket;\n"),
            module("edge::heartbeats", "use crate::edge::agent::Agent;\n"),
        ];
        assert!(cycle(&graph(&modules)).is_some());
    }

    #[test]
    fn impure_names_are_found_outside_tests_only() {
        let modules = [
            module("decide", "use std::fs;\n"),
            module(
                "plan",
                "#[cfg(test)]\nmod tests {\n use tokio::net::UdpSocket;\n}\n",
            ),
            module("edge::agent", "use tokio::net::UdpSocket;\n"),
        ];
        let found: Vec<&str> = impurities(&modules).into_iter().map(|(_, w)| w).collect();
        assert_eq!(found, vec!["std::fs"]);
    }
}
