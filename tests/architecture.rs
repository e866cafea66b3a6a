//! The shape of the source, checked: the promises of docs/ARCHITECTURE.md
//! that a refactor could silently break.
//!
//! - Events flow one way: the top-level modules of `src/` import each other
//!   without a cycle (a module is `src/NAME.rs` or `src/NAME/`).
//! - The async runtime is named in `src/runtime/` only.
//! - The WebSocket side and the control API know nothing of cluster mode:
//!   they talk to the hub's delivery interface.
//! - No function is longer than 80 lines.
//! - A backend is named only in `src/backend/` (its file, its line in
//!   `BACKENDS`) and `config.rs` (its flag).
//!
//! These read the source text, not the compiled crate: a `use crate::x` or a
//! `crate::x::…` path anywhere in a module is an edge, doc comments and
//! string literals aside.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.expect("a directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to (`src/ws/upgrade.rs` → `ws`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("a file under src");
    let first = rel.components().next().expect("a path").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file without comments and string literals, line by line
/// (so that prose and messages naming a module are not edges).
fn code_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_block = 0usize;
    for line in text.lines() {
        let mut out = String::new();
        let b = line.as_bytes();
        let mut i = 0;
        let mut in_str = false;
        while i < b.len() {
            if in_block > 0 {
                if b[i..].starts_with(b"*/") {
                    in_block -= 1;
                    i += 2;
                } else {
                    i += 1;
                }
            } else if in_str {
                if b[i] == b'\\' {
                    i += 2;
                } else {
                    in_str = b[i] != b'"';
                    i += 1;
                }
            } else if b[i..].starts_with(b"//") {
                break;
            } else if b[i..].starts_with(b"/*") {
                in_block += 1;
                i += 2;
            } else if b[i] == b'"' {
                in_str = true;
                i += 1;
            } else {
                out.push(b[i] as char);
                i += 1;
            }
        }
        lines.push(out);
    }
    lines
}

/// Top-level modules named in `line` as `crate::NAME`.
fn crate_refs(line: &str, modules: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if modules.contains(&name) {
            out.insert(name);
        }
        // `use crate::{a, b::c}`
        if after.starts_with('{') {
            let group = &after[1..after.find('}').unwrap_or(after.len())];
            for part in group.split(',') {
                let n: String = part.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if modules.contains(&n) {
                    out.insert(n);
                }
            }
        }
        rest = after;
    }
}

/// Module → the other top-level modules it refers to.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = rust_files(&src());
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).filter(|m| m != "lib" && m != "main").collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for f in &files {
        let m = module_of(f);
        if m == "lib" || m == "main" {
            continue;
        }
        let text = std::fs::read_to_string(f).expect("a source file");
        let mut refs = BTreeSet::new();
        for line in code_lines(&text) {
            crate_refs(&line, &modules, &mut refs);
        }
        refs.remove(&m);
        graph.get_mut(&m).expect("known module").extend(refs);
    }
    graph
}

/// Every cycle's modules, found as strongly connected components of more
/// than one module (Tarjan's algorithm, small enough to spell out).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t =
        T { g: graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on: BTreeSet::new(), out: vec![] };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// For a cycle, the edges inside it, to say what to cut.
fn edges_within(graph: &BTreeMap<String, BTreeSet<String>>, comp: &[String]) -> String {
    let mut s = String::new();
    for a in comp {
        for b in &graph[a] {
            if comp.contains(b) {
                s.push_str(&format!("\n    {a} -> {b}"));
            }
        }
    }
    s
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = module_graph();
    assert!(graph.contains_key("ws") && graph.contains_key("hub"), "the module scan found {:?}", graph.keys());
    assert!(graph["ws"].contains("hub"), "the scan sees ws using the hub: {:?}", graph["ws"]);
    let found = cycles(&graph);
    let report: Vec<String> = found.iter().map(|c| format!("{}:{}", c.join(", "), edges_within(&graph, c))).collect();
    assert!(found.is_empty(), "import cycles between top-level modules:\n  {}", report.join("\n  "));
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        g.entry(a.into()).or_default().insert(b.into());
        g.entry(b.into()).or_default();
    }
    assert_eq!(cycles(&g), vec![vec!["a".to_owned(), "b".into(), "c".into()]]);
    g.get_mut("c").expect("c").remove("a");
    assert!(cycles(&g).is_empty());
}

#[test]
fn crate_paths_are_read_from_code_not_comments_or_strings() {
    let modules: BTreeSet<String> = ["hub", "ws", "api"].iter().map(|s| s.to_string()).collect();
    let mut refs = BTreeSet::new();
    for line in code_lines("use crate::{hub::Hub, ws};\n// crate::api\nlet s = \"crate::api\"; /* crate::api */") {
        crate_refs(&line, &modules, &mut refs);
    }
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), vec!["hub".to_owned(), "ws".into()]);
}

#[test]
fn only_the_runtime_module_names_the_runtime() {
    let mut named = Vec::new();
    for f in rust_files(&src()) {
        if module_of(&f) == "runtime" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("a source file");
        for (n, line) in code_lines(&text).iter().enumerate() {
            if line.contains("async_std") || line.contains("async_io") {
                named.push(format!("{}:{}", f.display(), n + 1));
            }
        }
    }
    assert!(named.is_empty(), "async_std or async_io named outside src/runtime/: {named:?}");
}

#[test]
fn the_websocket_side_and_the_api_know_nothing_of_cluster_mode() {
    let mut found = Vec::new();
    for dir in ["ws", "api"] {
        let files = match std::fs::metadata(src().join(dir)) {
            Ok(m) if m.is_dir() => rust_files(&src().join(dir)),
            _ => vec![src().join(format!("{dir}.rs"))],
        };
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            for (n, line) in code_lines(&text).iter().enumerate() {
                if line.to_ascii_lowercase().contains("cluster") {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "cluster mode named in ws/ or api/:\n{}", found.join("\n"));
}

/// The backends registered in `BACKENDS` (src/backend/mod.rs): `fastcgi` for `fastcgi::routes`.
fn registered_backends() -> Vec<String> {
    let text = std::fs::read_to_string(src().join("backend/mod.rs")).expect("src/backend/mod.rs");
    let list = text.split("const BACKENDS").nth(1).expect("a BACKENDS list").split(';').next().unwrap_or("");
    list.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter_map(|item| item.strip_suffix("::routes"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_backend_is_named_only_in_its_file_its_list_and_its_flag() {
    let names = registered_backends();
    assert!(names.len() >= 2, "BACKENDS read as {names:?}");
    let mut found = Vec::new();
    for f in rust_files(&src()) {
        if module_of(&f) == "backend" || f.ends_with("config.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("a source file");
        for (n, line) in code_lines(&text).iter().enumerate() {
            for name in &names {
                if line.contains(&format!("backend::{name}")) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "a backend named outside src/backend/ and config.rs:\n{}", found.join("\n"));
}

/// Lengths of `fn` items, from the line of `fn` to its closing brace at the
/// same indentation.
fn long_functions(text: &str, max: usize) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        let after_quals = ["pub(crate) ", "pub(super) ", "pub ", "async ", "unsafe ", "const "]
            .iter()
            .fold(t, |s, q| s.strip_prefix(q).unwrap_or(s));
        let after_quals = ["async ", "unsafe "].iter().fold(after_quals, |s, q| s.strip_prefix(q).unwrap_or(s));
        let Some(rest) = after_quals.strip_prefix("fn ") else { continue };
        if line.trim_end().ends_with(';') {
            continue;
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let end = lines[i + 1..]
            .iter()
            .position(|l| l.starts_with(&format!("{}}}", " ".repeat(indent))))
            .map_or(lines.len(), |p| i + 1 + p);
        let len = end - i + 1;
        if len > max {
            out.push((i + 1, name, len));
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let mut long = Vec::new();
    for f in rust_files(&src()) {
        let text = std::fs::read_to_string(&f).expect("a source file");
        for (line, name, len) in long_functions(&text, 80) {
            long.push(format!("{}:{line}: {name} has {len} lines", f.display()));
        }
    }
    assert!(long.is_empty(), "split these functions:\n{}", long.join("\n"));
}

#[test]
fn the_length_check_measures_functions() {
    let body = "    x();\n".repeat(81);
    let text = format!("fn short() {{\n}}\n\npub async fn long() {{\n{body}}}\n");
    assert_eq!(long_functions(&text, 80), vec![(4, "long".to_owned(), 83)]);
}
