//! The host's layers hold: each crate under `host/` depends only on the layers below it (by
//! `cargo metadata`, through every transitive dependency), the model reaches neither wasmtime
//! nor tokio nor the filesystem, and no crate's modules import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The host's crates, bottom first, with the phasegate crates each may depend on.
const LAYERS: [(&str, &[&str]); 7] = [
    ("phasegate-model", &[]),
    ("phasegate-store", &["phasegate-model"]),
    ("phasegate-engine", &["phasegate-model", "phasegate-store"]),
    ("phasegate-runner", &["phasegate-model", "phasegate-store"]),
    (
        "phasegate-author",
        &[
            "phasegate-model",
            "phasegate-store",
            "phasegate-engine",
            "phasegate-runner",
        ],
    ),
    (
        "phasegate-remote",
        &["phasegate-model", "phasegate-store", "phasegate-engine"],
    ),
    (
        "phasegate",
        &[
            "phasegate-model",
            "phasegate-store",
            "phasegate-engine",
            "phasegate-runner",
            "phasegate-author",
            "phasegate-remote",
        ],
    ),
];

/// Crates a layer must not reach, even indirectly.
const FORBIDDEN: [(&str, &[&str]); 3] = [
    (
        "phasegate-model",
        &["wasmtime", "tokio", "minijinja", "reqwest", "oci-client"],
    ),
    ("phasegate-store", &["wasmtime", "minijinja"]),
    ("phasegate-runner", &["wasmtime", "cranelift-codegen"]),
];

/// Each package's name and its normal (not dev, not build) dependencies' package ids.
fn graph() -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    // Only this machine's platform: the others' crates are not downloaded, and offline
    // `cargo metadata` would need them.
    let rustc = std::process::Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline", "--locked"])
        .args(["--filter-platform", &host])
        .current_dir(crate::harness::repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let deps = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let normal = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap().to_owned())
                .collect();
            (n["id"].as_str().unwrap().to_owned(), normal)
        })
        .collect();
    (names, deps)
}

#[test]
fn each_host_crate_depends_only_on_the_layers_below_it() {
    let (names, deps) = graph();
    let id_of = |name: &str| {
        names
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("no package {name}"))
    };
    for (layer, allowed) in LAYERS {
        let direct: BTreeSet<&str> = deps[&id_of(layer)]
            .iter()
            .map(|id| names[id].as_str())
            .filter(|n| n.starts_with("phasegate"))
            .collect();
        let allowed: BTreeSet<&str> = allowed.iter().copied().collect();
        assert!(
            direct.is_subset(&allowed),
            "{layer} depends on {:?}, beyond its layers {allowed:?}",
            direct.difference(&allowed).collect::<Vec<_>>()
        );
    }
    for (layer, forbidden) in FORBIDDEN {
        // Everything the layer reaches through normal dependencies.
        let mut seen = BTreeSet::new();
        let mut todo = vec![id_of(layer)];
        while let Some(id) = todo.pop() {
            if seen.insert(id.clone()) {
                todo.extend(deps[&id].iter().cloned());
            }
        }
        let reached: BTreeSet<&str> = seen.iter().map(|id| names[id].as_str()).collect();
        for f in forbidden {
            assert!(
                !reached.contains(f),
                "{layer} reaches `{f}` through its dependencies (cargo tree -p {layer} -i {f})"
            );
        }
    }
}

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn the_model_uses_no_filesystem_process_network_tokio_or_wasmtime() {
    let src = crate::harness::repo_root().join("host/model/src");
    for file in sources(&src) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for banned in [
                "std::fs",
                "fs::",
                "File::",
                "std::net",
                "std::process",
                "std::env",
                "tokio",
                "wasmtime",
                "canonicalize",
                ".exists()",
                ".is_file()",
                ".is_dir()",
            ] {
                assert!(
                    !code.contains(banned),
                    "{}:{}: the model must stay plain data, but uses `{banned}`: {line}",
                    file.display(),
                    n + 1
                );
            }
        }
    }
}

/// The top-level modules a file refers to through `crate::m` (anywhere) or, in a top-level
/// module's own file, `super::m` (its siblings).
fn referenced(text: &str, top_level_file: bool, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if top_level_file {
        prefixes.push("super::");
    }
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for prefix in &prefixes {
            for (i, _) in code.match_indices(prefix) {
                let before = code[..i].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let rest = &code[i + prefix.len()..];
                let names: Vec<&str> = match rest.strip_prefix('{') {
                    Some(group) => group
                        .split('}')
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|s| s.trim().split("::").next().unwrap_or(""))
                        .collect(),
                    None => vec![
                        rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or(""),
                    ],
                };
                out.extend(
                    names
                        .into_iter()
                        .filter(|n| modules.contains(*n))
                        .map(str::to_owned),
                );
            }
        }
    }
    out
}

#[test]
fn no_crate_has_a_module_cycle() {
    for krate in [
        "model", "store", "engine", "runner", "author", "remote", "cli",
    ] {
        let src = crate::harness::repo_root()
            .join("host")
            .join(krate)
            .join("src");
        // Each file belongs to the top-level module it is in; the crate root (which declares
        // the modules and re-exports) is not a module of its own here.
        let module_of = |file: &Path| -> Option<String> {
            let rel = file.strip_prefix(&src).unwrap();
            let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
            let name = first.trim_end_matches(".rs").to_owned();
            (name != "lib" && name != "main").then_some(name)
        };
        let files = sources(&src);
        let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(module) = module_of(file) else {
                continue;
            };
            let top_level = file.parent() == Some(src.as_path())
                || file.file_name().is_some_and(|n| n == "mod.rs")
                    && file.parent().and_then(Path::parent) == Some(src.as_path());
            let text = std::fs::read_to_string(file).unwrap();
            let refs = referenced(&text, top_level, &modules);
            edges
                .entry(module.clone())
                .or_default()
                .extend(refs.into_iter().filter(|r| *r != module));
        }
        // Depth-first search for a back edge.
        fn visit(
            m: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| p == m) {
                let mut cycle = path[at..].to_vec();
                cycle.push(m.to_owned());
                return Some(cycle);
            }
            if done.contains(m) {
                return None;
            }
            path.push(m.to_owned());
            for next in edges.get(m).into_iter().flatten() {
                if let Some(cycle) = visit(next, edges, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(m.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        for m in &modules {
            if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
                panic!(
                    "host/{krate}: modules import each other in a circle: {}",
                    cycle.join(" -> ")
                );
            }
        }
    }
}

#[test]
fn the_reference_scan_finds_crate_and_sibling_imports() {
    // The scan the cycle check is built on: `crate::m`, grouped `super::{..}` in a top-level
    // module, and nothing in comments or nested modules' `super::`.
    let modules: BTreeSet<String> = ["a", "b", "c"].map(str::to_owned).into();
    let a = referenced(
        "use crate::b::Thing;\nuse super::{c, other};",
        true,
        &modules,
    );
    assert_eq!(a, ["b", "c"].map(str::to_owned).into());
    let nested = referenced("use super::c;\nlet x = crate::a::f();", false, &modules);
    assert_eq!(nested, ["a"].map(str::to_owned).into());
    let comment = referenced("// crate::b is mentioned only here", true, &modules);
    assert!(comment.is_empty());
}
