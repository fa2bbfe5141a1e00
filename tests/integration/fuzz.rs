//! The fuzz targets on stable Rust: every seed of `fuzz/corpus/` and every crash kept in
//! `fuzz/regressions/` goes through its target, which must return (an error is a fine answer);
//! then thousands of mutants of those seeds do, so that every run of the test command explores
//! beyond the seeds even where there is no nightly Rust. The coverage-guided runs are
//! `scripts/fuzz` (libFuzzer; nightly Rust).

use std::path::PathBuf;

use crate::harness::repo_root;

/// The inputs a target starts from: its corpus, its kept crashes and, for pipelines, the golden
/// error cases and the examples.
fn seeds(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = repo_root().join("fuzz");
    let mut folders = vec![
        root.join("corpus").join(name),
        root.join("regressions").join(name),
    ];
    if name == "pipeline" {
        folders.extend([repo_root().join("tests/ui"), repo_root().join("examples")]);
    }
    let mut seeds = Vec::new();
    for dir in folders {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        // In a fixed order, so that a seed of the mutation run names the same mutants everywhere.
        paths.sort();
        for path in paths {
            if path.file_name().is_some_and(|n| n == ".gitkeep")
                || path.extension().is_some_and(|e| e == "err")
            {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            seeds.push((path, data));
        }
    }
    seeds
}

#[test]
fn every_seed_and_every_kept_crash_parses_without_panicking() {
    let mut seen = 0;
    for (name, target) in phasegate_fuzz_targets::TARGETS {
        let seeds = seeds(name);
        for (path, data) in &seeds {
            let outcome = std::panic::catch_unwind(|| target(data));
            assert!(outcome.is_ok(), "{name}: {} panics", path.display());
        }
        assert!(
            !seeds.is_empty(),
            "target `{name}` has no seed in fuzz/corpus/{name}"
        );
        seen += seeds.len();
    }
    assert!(seen >= 30, "{seen} inputs");
}

/// Pieces of the formats the targets read, inserted by the mutation run: TOML's and JSON's
/// punctuation and quoting, numbers at the edges of their types, the pipeline's own keys and
/// template syntax, a journal line, a reference's separators, and text that is not ASCII.
const PIECES: &[&str] = &[
    "\n",
    "=",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    ".",
    "#",
    " ",
    "\\",
    "\\u0000",
    "\\uD800",
    "\\U0010FFFF",
    "0",
    "-1",
    "4294967296",
    "18446744073709551616",
    "-9223372036854775809",
    "1e309",
    "nan",
    "-inf",
    "true",
    "1979-05-27T07:32:00Z",
    "0x_1",
    "[[phase]]\nid = \"x\"\n",
    "[[phase.task]]\nid = \"t\"\nplugin = \"p.wasm\"\n",
    "[defaults.limits]\n",
    "\n[phase.task.limits]\nmemory = \"1MiB\"\n",
    "\n[[phase.task.gates]]\n",
    "\n[phase.gate]\nplugin = \"g.wasm\"\n",
    "\n[ [phase.task] ]\n",
    "\n[[ phase . task ]] # a comment\n",
    "\n[[\"phase\".task]]\n",
    "\n[phase]\n",
    "task = [{ id = \"t\", plugin = \"p.wasm\" }]\n",
    "input = \"\"\"\n[[phase.task]]\n\"\"\"\n",
    "{{",
    "}}",
    "{%",
    "%}",
    "{{ phases.a.tasks.b.output }}",
    "{{ vars.x | upper }}",
    "tasks[\"",
    "limits = { memory = \"0B\" }",
    "timeout = \"0s\"",
    "timeout = \"99999999999h\"",
    "reuse = 0",
    "concurrency = 0",
    "grants = { dirs = [\"/a=/b:rw\"] }",
    "grants = { env = [\"\"] }",
    "\0",
    "{\"phase\":\"p\",\"task\":{\"id\":\"t\",\"status\":\"succeeded\"}}\n",
    "{\"started\":\"p\"}\n",
    "{\"judged\":\"p\"}\n",
    "@sha256:",
    ":",
    "/",
    "é",
    "\u{10FFFF}",
    "\u{FEFF}",
    "\r\n",
];

/// xorshift64*: the mutation run's randomness, seeded, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A place in `data` that does not cut a UTF-8 character in two (the targets read text, so
/// mutants that stay text reach past the first check).
fn boundary(data: &[u8], rng: &mut Rng) -> usize {
    let mut at = rng.below(data.len() + 1);
    while at < data.len() && (data[at] as i8) < -0x40 {
        at += 1;
    }
    at
}

/// One to four edits of `data`: a piece inserted or written over a span, a span deleted or
/// repeated, a span of another seed spliced in, or the tail cut off.
fn mutate(data: &mut Vec<u8>, others: &[(PathBuf, Vec<u8>)], rng: &mut Rng) {
    for _ in 0..=rng.below(4) {
        let a = boundary(data, rng);
        let b = boundary(data, rng);
        let (from, to) = (a.min(b), a.max(b));
        let piece = PIECES[rng.below(PIECES.len())].as_bytes();
        match rng.below(6) {
            0 => {
                data.splice(a..a, piece.iter().copied());
            }
            1 => {
                data.splice(from..to, piece.iter().copied());
            }
            2 => {
                data.drain(from..to);
            }
            3 => {
                let span = data[from..to].to_vec();
                let at = boundary(data, rng);
                data.splice(at..at, span);
            }
            4 => {
                let other = &others[rng.below(others.len())].1;
                let x = boundary(other, rng);
                let y = boundary(other, rng);
                data.splice(a..a, other[x.min(y)..x.max(y)].iter().copied());
            }
            _ => data.truncate(a),
        }
    }
}

#[test]
fn mutants_of_every_seed_parse_without_panicking() {
    // `PHASEGATE_FUZZ_SEED` and `PHASEGATE_FUZZ_MUTANTS` explore further (or replay a failure).
    let seed: u64 = std::env::var("PHASEGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d);
    let mutants: usize = std::env::var("PHASEGATE_FUZZ_MUTANTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let mut rng = Rng(seed | 1);
    let found = repo_root().join("target/fuzz-stable");
    for (name, target) in phasegate_fuzz_targets::TARGETS {
        let seeds = seeds(name);
        for n in 0..mutants {
            let mut data = seeds[rng.below(seeds.len())].1.clone();
            mutate(&mut data, &seeds, &mut rng);
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                std::fs::create_dir_all(&found).unwrap();
                let path = found.join(format!("{name}-{seed}-{n}"));
                std::fs::write(&path, &data).unwrap();
                panic!(
                    "{name}: mutant {n} of seed {seed} panics; it is in {}: copy it into fuzz/regressions/{name}/ and fix the parser",
                    path.display()
                );
            }
        }
    }
}
