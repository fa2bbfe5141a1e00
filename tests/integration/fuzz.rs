//! The fuzz targets on stable Rust: every seed of `fuzz/corpus/` and every crash kept in
//! `fuzz/regressions/` goes through its target, which must return (an error is a fine answer).
//! The coverage-guided runs themselves are `scripts/fuzz` (libFuzzer; nightly Rust).

use crate::harness::repo_root;

#[test]
fn every_seed_and_every_kept_crash_parses_without_panicking() {
    let root = repo_root().join("fuzz");
    let mut seen = 0;
    for (name, target) in phasegate_fuzz_targets::TARGETS {
        let mut seeds = 0;
        let mut folders = vec![
            root.join("corpus").join(name),
            root.join("regressions").join(name),
        ];
        if *name == "pipeline" {
            // Pipelines are seeded from the golden error cases and the examples.
            folders.extend([repo_root().join("tests/ui"), repo_root().join("examples")]);
        }
        for dir in folders {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n == ".gitkeep")
                    || path.extension().is_some_and(|e| e == "err")
                {
                    continue;
                }
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                seeds += 1;
            }
        }
        assert!(
            seeds > 0,
            "target `{name}` has no seed in fuzz/corpus/{name}"
        );
        seen += seeds;
    }
    assert!(seen >= 30, "{seen} inputs");
}
