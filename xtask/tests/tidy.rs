//! Tidy: the import arrows the layering allows, read from the `use crate::…`
//! lines (and inline `crate::…` paths) of every file.
//!
//! xtask: `commands/` → `render/`, `analysis/` → `model/`, `infra/`; a layer
//! never imports a higher one and a command never imports another command;
//! the module graph has no cycle. Broker: `core/` imports no protocol, a
//! protocol (`mqtt`, `kafka`, `amqp`) imports neither another protocol nor
//! `server`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file as its module path (`commands/bench.rs` → `["commands", "bench"]`)
/// and the crate paths it names.
struct SourceFile {
    module: Vec<String>,
    display: String,
    imports: Vec<Import>,
}

struct Import {
    line: usize,
    path: Vec<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Every `.rs` file under `src`, as (path relative to `src`, text).
fn read_tree(src: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().to_string_lossy();
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((rel.replace('\\', "/"), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out
}

/// `commands/bench.rs` → `commands::bench`; `model/mod.rs` → `model`;
/// `main.rs` and `lib.rs` → the crate root (empty).
fn module_of(rel: &str) -> Vec<String> {
    let stem = rel.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "main" | "lib")
    ) {
        parts.pop();
    }
    parts
}

/// The text without `//` comments and string literals, so that prose and
/// fixtures naming `crate::x` are not read as imports. Line breaks are kept
/// for line numbers.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        let after_ident = is_ident(prev);
        prev = c;
        match c {
            // r"…", r#"…"#: only the matching quote and hashes end it.
            'r' if !after_ident && matches!(chars.peek(), Some('"' | '#')) => {
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.next() != Some('"') {
                    out.push('r');
                    out.push_str(&"#".repeat(hashes));
                    continue;
                }
                let closing = format!("\"{}", "#".repeat(hashes));
                let mut body = String::new();
                for c in chars.by_ref() {
                    body.push(c);
                    if body.ends_with(&closing) {
                        break;
                    }
                }
                out.extend(body.chars().filter(|&c| c == '\n'));
                out.push_str("\"\"");
                prev = '"';
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal such as '"' must not open a string.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let mut r = rest.chars();
                match (r.next(), r.next(), r.next()) {
                    (Some('\\'), Some(_), Some('\'')) => {
                        chars.nth(2);
                        out.push_str("' '");
                    }
                    (Some(_), Some('\''), _) => {
                        chars.nth(1);
                        out.push_str("' '");
                    }
                    _ => out.push('\''),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, self}}`) into paths.
fn expand_tree(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    let Some(open) = tree.find('{') else {
        let mut path = prefix.to_vec();
        let head = tree.split(" as ").next().unwrap().trim();
        for seg in head.split("::").map(str::trim).filter(|s| !s.is_empty()) {
            if seg != "self" && seg != "*" {
                path.push(seg.to_string());
            }
        }
        out.push(path);
        return;
    };
    let mut path = prefix.to_vec();
    for seg in tree[..open].split("::").map(str::trim) {
        if !seg.is_empty() {
            path.push(seg.to_string());
        }
    }
    let inner = &tree[open + 1..tree.rfind('}').expect("balanced use tree")];
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand_tree(&inner[start..i], &path, out);
                start = i + 1;
            }
            _ => {}
        }
    }
    expand_tree(&inner[start..], &path, out);
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The crate paths a file names: `use crate::…;` trees (grouped or not) and
/// inline `crate::a::b` paths, each with its line.
fn imports_of(text: &str) -> Vec<Import> {
    let code = code_only(text);
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(pos) = code[i..].find("crate::") {
        let at = i + pos;
        let line = code[..at].matches('\n').count() + 1;
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| is_ident(c) || c == ':' || c == '$') {
            i = at + "crate::".len();
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        let in_use = code[..at]
            .rsplit(['\n', ';', '{', '}'])
            .next()
            .is_some_and(|s| s.trim_start().starts_with("use ") || s.contains(" use "));
        if in_use {
            let end = rest.find(';').unwrap_or(rest.len());
            let mut paths = Vec::new();
            expand_tree(&rest[..end], &[], &mut paths);
            for path in paths {
                found.push(Import { line, path });
            }
            i = at + "crate::".len() + end;
        } else {
            let mut path = Vec::new();
            let mut segs = rest;
            loop {
                let len = segs.find(|c: char| !is_ident(c)).unwrap_or(segs.len());
                if len == 0 {
                    break;
                }
                path.push(segs[..len].to_string());
                match segs[len..].strip_prefix("::") {
                    Some(next) if next.starts_with(is_ident) => segs = next,
                    _ => break,
                }
            }
            found.push(Import { line, path });
            i = at + "crate::".len();
        }
    }
    found
}

fn parse_tree(files: &[(String, String)]) -> Vec<SourceFile> {
    files
        .iter()
        .map(|(rel, text)| SourceFile {
            module: module_of(rel),
            display: rel.clone(),
            imports: imports_of(text),
        })
        .collect()
}

/// The longest prefix of `path` that is a module of this tree (a file).
fn target_module(path: &[String], modules: &BTreeSet<Vec<String>>) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
        .unwrap_or_default()
}

/// xtask's layers, high to low; same-rank folders may import each other.
fn xtask_rank(folder: &str) -> Option<u8> {
    match folder {
        "commands" => Some(3),
        "render" | "analysis" => Some(2),
        "model" | "infra" => Some(1),
        _ => None,
    }
}

/// Every forbidden arrow in an xtask-shaped tree, one line each.
fn xtask_violations(files: &[(String, String)]) -> Vec<String> {
    let parsed = parse_tree(files);
    let mut problems = Vec::new();
    // `use crate::a::b::{self, C}` is one arrow, not two.
    let mut seen = BTreeSet::new();
    for f in &parsed {
        let Some(from) = f.module.first() else {
            continue; // main.rs and flags.rs sit above every layer
        };
        let Some(from_rank) = xtask_rank(from) else {
            continue;
        };
        for imp in &f.imports {
            let Some(to) = imp.path.first() else { continue };
            if !seen.insert((
                &f.display,
                imp.line,
                imp.path.iter().take(2).collect::<Vec<_>>(),
            )) {
                continue;
            }
            let Some(to_rank) = xtask_rank(to) else {
                problems.push(format!(
                    "{}:{}: {} imports crate::{} which is in no layer (only main.rs and flags.rs may)",
                    f.display,
                    imp.line,
                    from,
                    imp.path.join("::")
                ));
                continue;
            };
            if to_rank > from_rank {
                problems.push(format!(
                    "{}:{}: {from} → {to} (crate::{}): a lower layer imports a higher one",
                    f.display,
                    imp.line,
                    imp.path.join("::")
                ));
            } else if from == "commands" && to == "commands" && imp.path.get(1) != f.module.get(1) {
                problems.push(format!(
                    "{}:{}: command {} → command {} (crate::{}): a command never imports another command; move what they share down a layer",
                    f.display,
                    imp.line,
                    f.module.get(1).map(String::as_str).unwrap_or("?"),
                    imp.path.get(1).map(String::as_str).unwrap_or("?"),
                    imp.path.join("::")
                ));
            }
        }
    }
    problems.sort();
    problems
}

/// A cycle in the module graph (file → the files it imports), if any.
fn find_cycle(files: &[(String, String)]) -> Option<Vec<String>> {
    let parsed = parse_tree(files);
    let modules: BTreeSet<Vec<String>> = parsed.iter().map(|f| f.module.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for f in &parsed {
        let out = edges.entry(f.module.clone()).or_default();
        for imp in &f.imports {
            let to = target_module(&imp.path, &modules);
            // A module naming its own items or its parent's `mod` list is no arrow.
            if to != f.module && !f.module.starts_with(&to) {
                out.insert(to);
            }
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        m: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        match marks.get(m) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|s| s == m).unwrap();
                let mut cycle: Vec<String> = stack[from..].iter().map(|s| s.join("::")).collect();
                cycle.push(m.join("::"));
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(m.clone(), Mark::Open);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(m.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in edges.keys() {
        if let Some(c) = visit(m, &edges, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

const PROTOCOLS: [&str; 3] = ["mqtt", "kafka", "amqp"];

/// Every forbidden arrow in a broker-shaped tree, one line each.
fn broker_violations(files: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for f in parse_tree(files) {
        let Some(from) = f.module.first().map(String::as_str) else {
            continue;
        };
        for imp in &f.imports {
            let Some(to) = imp.path.first().map(String::as_str) else {
                continue;
            };
            let why = if from == "core" && PROTOCOLS.contains(&to) {
                "core imports a protocol"
            } else if PROTOCOLS.contains(&from) && PROTOCOLS.contains(&to) && from != to {
                "a protocol imports another protocol"
            } else if PROTOCOLS.contains(&from) && to == "server" {
                "a protocol imports the server"
            } else {
                continue;
            };
            problems.push(format!(
                "{}:{}: {from} → {to} (crate::{}): {why}",
                f.display,
                imp.line,
                imp.path.join("::")
            ));
        }
    }
    problems.sort();
    problems
}

fn report(what: &str, problems: &[String]) -> String {
    format!(
        "{} forbidden import arrow(s) in {what}:\n  {}",
        problems.len(),
        problems.join("\n  ")
    )
}

#[test]
fn xtask_layers_point_down() {
    let files = read_tree(&workspace_root().join("xtask/src"));
    assert!(files.len() > 10, "read xtask/src");
    let problems = xtask_violations(&files);
    assert!(problems.is_empty(), "{}", report("xtask/src", &problems));
}

#[test]
fn xtask_module_graph_has_no_cycle() {
    let files = read_tree(&workspace_root().join("xtask/src"));
    if let Some(cycle) = find_cycle(&files) {
        panic!(
            "xtask modules import each other in a circle: {}",
            cycle.join(" → ")
        );
    }
}

#[test]
fn broker_core_and_protocols_stay_apart() {
    let files = read_tree(&workspace_root().join("broker/src"));
    assert!(files.len() > 10, "read broker/src");
    let problems = broker_violations(&files);
    assert!(problems.is_empty(), "{}", report("broker/src", &problems));
}

// ---- the checker itself, on synthetic trees --------------------------------

fn tree(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

#[test]
fn a_command_importing_another_command_is_reported() {
    let files = tree(&[
        ("main.rs", "mod commands;\nuse crate::commands::bench;\n"),
        ("commands/mod.rs", "pub mod bench;\npub mod ci;\n"),
        (
            "commands/ci.rs",
            "//! ci\nuse crate::model::report::Report;\nuse crate::commands::bench::{self, Options};\n\nfn f() { crate::commands::bench::run(); }\n",
        ),
        ("commands/bench.rs", "use crate::infra::cargo;\n"),
        (
            "infra/cargo.rs",
            "use crate::{model::report::Report, render::format::bytes};\n// crate::commands::ci is only named in a comment\nconst S: &str = \"crate::commands::ci\";\n",
        ),
        ("model/report.rs", "use crate::infra::cargo;\n"),
        ("render/format.rs", "use crate::analysis::gate::evaluate;\n"),
        ("analysis/gate.rs", "use crate::model::report::Report;\n"),
    ]);
    let problems = xtask_violations(&files);
    println!("{}", report("a synthetic xtask tree", &problems));
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("commands/ci.rs:3: command ci → command bench"));
    assert!(problems[1].starts_with("commands/ci.rs:5: command ci → command bench"));
    assert!(problems[2].starts_with("infra/cargo.rs:1: infra → render"));
}

#[test]
fn a_cycle_is_found() {
    let files = tree(&[
        (
            "model/report.rs",
            "use crate::infra::environment::Environment;\n",
        ),
        (
            "infra/environment.rs",
            "use crate::infra::launcher::BrokerInfo;\n",
        ),
        ("infra/launcher.rs", "use crate::model::{report::Report};\n"),
        ("infra/sampler.rs", "use crate::model::report::Report;\n"),
    ]);
    let cycle = find_cycle(&files).expect("report → environment → launcher → report");
    println!("cycle: {}", cycle.join(" → "));
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let acyclic = tree(&[
        (
            "model/report.rs",
            "use crate::infra::environment::Environment;\n",
        ),
        (
            "infra/environment.rs",
            "use crate::model::report;\n// use crate::model::report;\n",
        ),
    ]);
    assert!(find_cycle(&acyclic[..1]).is_none());
    assert!(find_cycle(&acyclic).is_some());
}

#[test]
fn broker_arrows_are_reported() {
    let files = tree(&[
        (
            "core/message.rs",
            "use crate::mqtt::packet::QoS;\nuse crate::core::topic;\n",
        ),
        (
            "kafka/connection.rs",
            "use crate::{server::write_counted, core::io};\n",
        ),
        (
            "amqp/queue.rs",
            "fn f() { let _ = crate::mqtt::topic::matches(); }\n",
        ),
        (
            "mqtt/connection.rs",
            "use crate::core::{message::Message, io::write};\nuse crate::mqtt::packet;\n",
        ),
        ("server.rs", "use crate::{mqtt, kafka, amqp};\n"),
    ]);
    let problems = broker_violations(&files);
    println!("{}", report("a synthetic broker tree", &problems));
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("amqp/queue.rs:1: amqp → mqtt"));
    assert!(problems[1].starts_with("core/message.rs:1: core → mqtt (crate::mqtt::packet::QoS)"));
    assert!(problems[2].starts_with("kafka/connection.rs:1: kafka → server"));
}

#[test]
fn grouped_and_inline_paths_are_read() {
    let imports = imports_of(
        "use crate::{a, b::{c, d::e as f}, g::self};\npub(crate) use crate::h::i;\nfn x() { crate::j::k(); let _ = '\"'; }\n",
    );
    let paths: Vec<String> = imports.iter().map(|i| i.path.join("::")).collect();
    assert_eq!(paths, ["a", "b::c", "b::d::e", "g", "h::i", "j::k"]);
    assert_eq!(imports.last().unwrap().line, 3);
}
