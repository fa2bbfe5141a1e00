//! `phasegate schema`: the JSON Schema editors check pipeline files with. Every example and
//! every pipeline the tests use is valid against it; every `tests/ui` case the schema can
//! express is invalid against it, and the ones it cannot (checked by `validate` only) are
//! listed, so a schema that grows stricter or looser shows up here.

use std::path::{Path, PathBuf};

use crate::harness::{Project, repo_root};

/// The `tests/ui` cases whose problem a JSON Schema can say (types, unknown keys, enums,
/// patterns, ranges). The rest need the files, the lock, the other phases or templates.
const SCHEMA_REJECTS: &[&str] = &[
    "bad-bounds-checks",
    "bad-duration",
    "bad-grants",
    "bad-id",
    "bad-size",
    "gate-policies",
    "missing-id",
    "table-elements-too-large",
    "unknown-grant",
    "unknown-key",
    "unknown-policy",
    "wrong-types",
    "zero-concurrency",
    "zero-descriptors",
    "zero-reuse",
];

fn schema() -> jsonschema::Validator {
    let p = Project::new();
    let out = p.output(&["schema"]);
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The copy in docs/ (which the examples' `#:schema` lines point to) is this one.
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("docs/pipeline.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        committed, schema,
        "docs/pipeline.schema.json is stale: phasegate schema > docs/pipeline.schema.json"
    );
    jsonschema::validator_for(&schema).unwrap()
}

fn as_json(path: &Path) -> serde_json::Value {
    toml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn tomls(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    found.sort();
    found
}

#[test]
fn examples_are_valid_and_expressible_mistakes_are_not() {
    let validator = schema();
    for example in tomls(&repo_root().join("examples")) {
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&example))
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", example.display());
    }
    let mut wrong = Vec::new();
    for case in tomls(&repo_root().join("tests/ui")) {
        let name = case.file_stem().unwrap().to_str().unwrap();
        let Ok(text) = std::fs::read_to_string(&case) else {
            continue;
        };
        let Ok(json) = toml::from_str::<serde_json::Value>(&text) else {
            continue; // not TOML at all: nothing for a schema to check
        };
        let valid = validator.is_valid(&json);
        if valid == SCHEMA_REJECTS.contains(&name) {
            wrong.push(format!(
                "{name}: the schema {} it",
                if valid { "accepts" } else { "rejects" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
