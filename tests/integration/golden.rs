//! Golden tests for pipeline errors: each `tests/ui/*.toml` is validated through the CLI and its
//! stderr compared with the `.err` file beside it. `BLESS=1 cargo test` rewrites the `.err` files.

use std::path::Path;

use crate::harness::Project;

#[test]
fn pipeline_errors_match_golden_files() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui");
    let mut cases: Vec<_> = std::fs::read_dir(&ui)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 10, "golden cases missing");
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    for case in cases {
        let name = case.file_name().unwrap().to_str().unwrap().to_owned();
        let p = Project::new();
        std::fs::copy(phasegate_test_artifacts::PROBE, p.path("probe.wasm")).unwrap();
        std::fs::copy(&case, p.path(&name)).unwrap();
        let out = p.output(&["validate", &name]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name} should be rejected with exit 2"
        );
        let stderr = String::from_utf8_lossy(&out.stderr)
            .replace(&p.dir.path().display().to_string(), "$DIR");
        let expected_path = case.with_extension("err");
        if bless {
            std::fs::write(&expected_path, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != stderr {
            failures.push(format!("--- {name}: expected\n{expected}--- got\n{stderr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (BLESS=1 to accept):\n{}",
        failures.join("\n")
    );
}
