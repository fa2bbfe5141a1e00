//! A small test harness: a temp project directory, pipelines with component paths filled in,
//! and the CLI run with JSON events.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("host/cli is two folders below the root")
        .to_path_buf()
}

/// A temporary project directory holding a pipeline and its progress file.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// What a CLI run produced.
pub struct RunResult {
    pub code: i32,
    pub events: Vec<Value>,
    pub stderr: String,
}

impl Project {
    pub fn new() -> Self {
        Project {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `pipeline.toml`, replacing `{PROBE}`, `{TEXT_STATS}`... with component paths.
    pub fn pipeline(&self, toml: &str) -> PathBuf {
        self.write("pipeline.toml", toml)
    }

    pub fn write(&self, name: &str, toml: &str) -> PathBuf {
        let mut text = toml.to_owned();
        for (name, path) in phasegate_test_artifacts::ALL {
            text = text.replace(&format!("{{{name}}}"), path);
        }
        let path = self.path(name);
        std::fs::write(&path, text).expect("write pipeline");
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_phasegate"));
        cmd.args(args).current_dir(self.dir.path());
        // One compile cache for the whole suite: each component is compiled once.
        cmd.env(
            "PHASEGATE_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-cache"),
        );
        cmd
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run phasegate")
    }

    /// Runs with `--format json` appended and parses the event stream.
    pub fn run_json(&self, args: &[&str]) -> RunResult {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.output(&all);
        RunResult {
            code: out.status.code().unwrap_or(-1),
            events: parse_events(&String::from_utf8_lossy(&out.stdout)),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the CLI with JSON events on a pipe, for tests that act mid-run.
    pub fn spawn_json(&self, args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--format", "json"]);
        let mut child = self
            .command(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("piped");
        (child, BufReader::new(stdout))
    }

    /// The progress file as JSON (journal folded in), through `phasegate status`.
    pub fn state(&self, state: &str) -> Value {
        let out = self.output(&["status", "--state", state, "--format", "json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }
}

pub fn parse_events(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect()
}

/// Reads the next event line from a running CLI.
pub fn next_event(reader: &mut impl BufRead) -> Option<Value> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(serde_json::from_str(&line).expect("event json")),
    }
}

impl RunResult {
    pub fn of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    pub fn outcome(&self) -> &Value {
        let finished = self.of("run-finished");
        assert_eq!(
            finished.len(),
            1,
            "expected one run-finished event; stderr:\n{}",
            self.stderr
        );
        &finished[0]["outcome"]
    }

    /// `(start_us, end_us)` of each task's last attempt *inside the guest*, by task id: from the
    /// probe's `invoked` log line to its final `progress(1, 1)` call. Host bookkeeping around
    /// the call (recording, rendering) is deliberately left out.
    pub fn intervals(&self, phase: &str) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        for end in self
            .of("task-progress")
            .into_iter()
            .filter(|e| e["phase"] == phase && e["done"] == 1)
        {
            let task = end["task"].as_str().unwrap().to_owned();
            let start = self
                .of("task-log")
                .into_iter()
                .filter(|e| e["phase"] == phase && e["task"] == task.as_str())
                .filter(|e| e["message"].as_str().unwrap().starts_with("invoked "))
                .map(|e| e["elapsed_us"].as_u64().unwrap())
                .max()
                .unwrap();
            out.push((task, start, end["elapsed_us"].as_u64().unwrap()));
        }
        out
    }

    /// Guest invocations counted from the probe's `invoked ...` log lines, per task id.
    pub fn invocations(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for e in self.of("task-log") {
            if e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("invoked "))
            {
                *counts
                    .entry(e["task"].as_str().unwrap().to_owned())
                    .or_default() += 1;
            }
        }
        counts
    }
}

/// Maximum number of intervals open at the same instant.
pub fn max_overlap(intervals: &[(String, u64, u64)]) -> usize {
    let mut points: Vec<(u64, i32)> = Vec::new();
    for (_, s, e) in intervals {
        points.push((*s, 1));
        points.push((*e, -1));
    }
    // Ends sort before starts at the same instant: touching intervals do not overlap.
    points.sort_by_key(|&(t, d)| (t, d));
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in points {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

/// A state with the fields that differ between runs (ids, times, durations) removed.
pub fn normalized(mut state: Value) -> Value {
    for key in ["run-id", "started-at", "updated-at"] {
        state.as_object_mut().unwrap().remove(key);
    }
    for phase in state["phase"].as_array_mut().unwrap() {
        for task in phase["task"].as_array_mut().unwrap() {
            // Whether an outcome came from the result cache depends on what ran before.
            for key in ["duration-ms", "started-us", "ended-us", "cached"] {
                task.as_object_mut().unwrap().remove(key);
            }
            if let Some(usage) = task.get_mut("usage").and_then(Value::as_object_mut) {
                usage.remove("wall-us");
            }
        }
    }
    state
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The entry of a JSON array of `{"id": ..}` objects with the given id (phases, tasks).
pub fn by_id<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no `{id}` in {list}"))
}
