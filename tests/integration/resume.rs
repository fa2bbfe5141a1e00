//! Kill and resume: `kill -9` mid-phase, then `phasegate resume` finishes without re-running
//! finished tasks, and ends in the same state as an uninterrupted run.

use std::collections::BTreeSet;

use crate::harness::{Project, next_event, normalized, stderr_of};

fn pipeline(p: &Project) {
    let mut toml = String::from(
        r#"
name = "killable"
[[phase]]
id = "prepare"
[[phase.task]]
id = "setup"
plugin = "{PROBE}"
input = "ready"

[[phase]]
id = "bulk"
concurrency = 2
gate = { plugin = "{ALL_SUCCEEDED}" }
"#,
    );
    for i in 0..6 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"job{i}\"\nplugin = \"{{PROBE}}\"\ninput = \"{{{{ phases.prepare.tasks.setup.output.input }}}}-{i}\"\nconfig = {{ sleep-ms = 300 }}\n"
        ));
    }
    toml.push_str(
        r#"
[[phase]]
id = "finish"
parallel = false
[[phase.task]]
id = "report"
plugin = "{TEXT_STATS}"
input = "{{ phases.bulk.tasks.job5.output.input }}"
"#,
    );
    p.pipeline(&toml);
}

#[test]
fn kill_9_mid_phase_then_resume_finishes_without_rerunning_finished_tasks() {
    let p = Project::new();
    pipeline(&p);

    // Run until two tasks of `bulk` have finished, then SIGKILL the CLI.
    let (mut child, mut events) = p.spawn_json(&["run", "pipeline.toml", "--state", "run.toml"]);
    let mut finished_before_kill = BTreeSet::new();
    let mut invoked_before_kill = BTreeSet::new();
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-log" && e["message"].as_str().unwrap().starts_with("invoked ") {
            invoked_before_kill.insert(e["task"].as_str().unwrap().to_owned());
        }
        if e["event"] == "task-finished" && e["phase"] == "bulk" {
            finished_before_kill.insert(e["task"].as_str().unwrap().to_owned());
            if finished_before_kill.len() == 2 {
                child.kill().expect("SIGKILL"); // std's kill is SIGKILL on unix
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_eq!(finished_before_kill.len(), 2);

    let mid = p.state("run.toml");
    assert_eq!(mid["status"], "running");
    assert_eq!(mid["phase"][0]["status"], "complete");
    assert_eq!(mid["phase"][1]["status"], "running");
    let recorded: BTreeSet<String> = mid["phase"][1]["task"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "succeeded")
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        recorded.is_superset(&finished_before_kill),
        "{recorded:?} vs {finished_before_kill:?}"
    );

    let resumed = p.run_json(&["resume", "--state", "run.toml"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let inv = resumed.invocations();
    for task in &recorded {
        assert!(
            !inv.contains_key(task),
            "{task} finished before the kill but ran again"
        );
    }
    assert!(!inv.contains_key("setup"), "a completed phase ran again");
    let all_bulk: BTreeSet<String> = (0..6).map(|i| format!("job{i}")).collect();
    let rerun: BTreeSet<String> = inv
        .keys()
        .filter(|k| k.starts_with("job"))
        .cloned()
        .collect();
    assert_eq!(
        rerun,
        &all_bulk - &recorded,
        "exactly the unfinished tasks ran"
    );
    assert_eq!(resumed.of("phase-skipped").len(), 1);
    assert_eq!(
        resumed.outcome()["completed"],
        serde_json::json!(["prepare", "bulk", "finish"])
    );

    // Same final state as a run that was never interrupted.
    let straight = p.run_json(&["run", "pipeline.toml", "--state", "straight.toml"]);
    assert_eq!(straight.code, 0, "{}", straight.stderr);
    assert_eq!(
        normalized(p.state("run.toml")),
        normalized(p.state("straight.toml"))
    );
}

/// A phase of many small tasks that never wait keeps every worker thread busy until its end.
/// Its records must still reach the journal as the tasks finish: they once waited for the
/// phase's last task (the recorder's pause was on tokio's timer, which busy workers never
/// serviced), so a run killed mid-phase lost nearly everything it had done.
#[test]
fn a_busy_phase_is_recorded_while_it_runs() {
    let p = Project::new();
    let tasks = 20_000;
    let mut toml = String::from("name = \"busy\"\n[[phase]]\nid = \"bulk\"\nconcurrency = 64\n");
    for i in 0..tasks {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{NOOP}}\"\n"
        ));
    }
    p.pipeline(&toml);

    // Kill after the first 1,000 tasks are announced (each announced after it was recorded).
    let (mut child, mut events) = p.spawn_json(&["run", "pipeline.toml", "--state", "run.toml"]);
    let mut announced = 0;
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-finished" {
            announced += 1;
            if announced == 1_000 {
                child.kill().expect("SIGKILL");
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(
        announced, 1_000,
        "the run ended before 1,000 tasks were announced"
    );

    let mid = p.state("run.toml");
    assert_eq!(mid["status"], "running");
    let recorded = mid["phase"][0]["task"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "succeeded")
        .count();
    assert!(recorded >= 1_000, "{recorded} recorded, 1,000 announced");
    // Announcements trail the records by what the event pipe holds; far from the whole phase.
    assert!(
        recorded < tasks / 2,
        "{recorded} of {tasks} recorded when the 1,000th was announced: records were held back"
    );
}

/// Phase `one`'s gate allows `n` up to 10; phase `two`'s gate allows `c`'s input (b's `n`) up
/// to 5. With b's `n` at 9 the run fails at phase `two`.
const EDITED: &str = r#"
name = "edits"
[[phase]]
id = "one"
gate = { plugin = "{THRESHOLD}", config = { field = "/n", max = 10 } }
[[phase.task]]
id = "a"
plugin = "{PROBE}"
config = { output = { n = 1 } }
[[phase.task]]
id = "b"
plugin = "{PROBE}"
config = { output = { n = 9 } }
[[phase]]
id = "two"
gate = { plugin = "{THRESHOLD}", config = { field = "/input", max = 5, tasks = ["c"] } }
[[phase.task]]
id = "c"
plugin = "{PROBE}"
input = "{{ phases.one.tasks.b.output.n }}"
[[phase.task]]
id = "d"
plugin = "{PROBE}"
input = "fixed"
[[phase]]
id = "three"
[[phase.task]]
id = "e"
plugin = "{PROBE}"
"#;

fn edit(p: &Project, from: &str, to: &str) {
    let text = std::fs::read_to_string(p.path("pipeline.toml")).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(p.path("pipeline.toml"), text.replacen(from, to, 1)).unwrap();
}

/// Compares `got` with the golden file `tests/ui/NAME` (`BLESS=1` rewrites it).
fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/ui")
        .join(name);
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(expected, got, "{name} differs (BLESS=1 to accept)");
}

#[test]
fn resume_runs_again_only_the_edited_task_and_what_reads_it() {
    let p = Project::new();
    p.pipeline(EDITED);
    let first = p.run_json(&["run", "pipeline.toml", "--no-cache"]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert_eq!(
        first.invocations().keys().collect::<Vec<_>>(),
        ["a", "b", "c", "d"]
    );

    edit(&p, "output = { n = 9 }", "output = { n = 3 }");
    let explained = p.output(&["resume", "--explain"]);
    assert!(explained.status.success(), "{}", stderr_of(&explained));
    golden(
        "resume-explain-task-edit.out",
        &String::from_utf8_lossy(&explained.stdout),
    );
    assert_eq!(
        p.state(".phasegate/state.toml")["status"],
        "failed",
        "--explain runs and records nothing"
    );

    let resumed = p.run_json(&["resume", "--no-cache"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    // b changed; c reads b; the gates of both phases judge again; a and d are kept.
    assert_eq!(
        resumed.invocations().keys().collect::<Vec<_>>(),
        ["b", "c", "e"]
    );
    let outdated: Vec<_> = resumed
        .of("task-outdated")
        .iter()
        .map(|e| e["task"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outdated, ["b", "c"]);
    assert_eq!(resumed.of("verdict").len(), 3);
    assert_eq!(p.state(".phasegate/state.toml")["status"], "completed");
}

#[test]
fn resume_after_a_gate_edit_asks_only_the_gate_and_force_keeps_records() {
    let p = Project::new();
    p.pipeline(EDITED);
    assert_eq!(p.run_json(&["run", "pipeline.toml", "--no-cache"]).code, 1);

    // --force keeps b's record although its config changed: phase two fails again.
    edit(&p, "output = { n = 9 }", "output = { n = 3 }");
    let forced = p.run_json(&["resume", "--force", "--no-cache"]);
    assert_eq!(forced.code, 1, "{}", forced.stderr);
    assert!(
        forced.invocations().is_empty(),
        "{:?}",
        forced.invocations()
    );
    edit(&p, "output = { n = 3 }", "output = { n = 9 }");

    // Both gates' limits raised: no task runs again but the ones never run; phase two's gate
    // judges again (it failed), and so does phase one's, which passed but changed.
    edit(&p, "max = 5,", "max = 9,");
    edit(&p, "max = 10 }", "max = 11 }");
    let explained = p.output(&["resume", "--explain"]);
    golden(
        "resume-explain-gate-edit.out",
        &String::from_utf8_lossy(&explained.stdout),
    );
    let resumed = p.run_json(&["resume", "--no-cache"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(resumed.invocations().keys().collect::<Vec<_>>(), ["e"]);
    assert!(resumed.of("phase-skipped").is_empty());
    assert_eq!(
        resumed.of("gate-started").len(),
        2,
        "the gates of one and two"
    );
    let two = resumed
        .of("verdict")
        .into_iter()
        .find(|v| v["phase"] == "two")
        .unwrap()
        .clone();
    assert_eq!(two["verdict"]["kind"], "pass", "{two}");
}

#[test]
fn resume_runs_again_what_a_changed_plugin_made() {
    let p = Project::new();
    let copy = p.path("probe-copy.wasm");
    std::fs::copy(phasegate_test_artifacts::PROBE, &copy).unwrap();
    p.pipeline(
        r#"
name = "plug"
[[phase]]
id = "one"
[[phase.task]]
id = "a"
plugin = "probe-copy.wasm"
[[phase.task]]
id = "b"
plugin = "{PROBE}"
config = { fail = "broken" }
"#,
    );
    assert_eq!(p.run_json(&["run", "pipeline.toml"]).code, 1);
    std::fs::copy(phasegate_test_artifacts::TEXT_STATS, &copy).unwrap();
    edit(
        &p,
        "config = { fail = \"broken\" }\n",
        "config = { fail = \"broken\" }\n[[phase.task]]\nid = \"c\"\nplugin = \"{PROBE}\"\n"
            .replace("{PROBE}", phasegate_test_artifacts::PROBE)
            .as_str(),
    );
    let explained = p.output(&["resume", "--explain"]);
    let said = String::from_utf8_lossy(&explained.stdout);
    assert!(
        said.contains("run   a  plugin `probe-copy.wasm` changed (sha256:"),
        "{said}"
    );
    assert!(
        said.contains("run   b  failed before, in the phase whose gate failed"),
        "{said}"
    );
    assert!(said.contains("run   c  new in the pipeline"), "{said}");
    assert!(
        stderr_of(&explained)
            .contains("changed since the run started: plugin `probe-copy.wasm` (was sha256:"),
        "{}",
        stderr_of(&explained)
    );
}

#[test]
fn run_refuses_to_clobber_an_unfinished_run() {
    let p = Project::new();
    p.pipeline("name = \"x\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{PROBE}\"\nconfig = { sleep-ms = 2000 }\n");
    let (mut child, mut events) = p.spawn_json(&["run", "pipeline.toml"]);
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-started" {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    let out = p.output(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("phasegate resume"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(p.run_json(&["run", "pipeline.toml", "--fresh"]).code, 0);
}

#[test]
fn run_refuses_to_replace_a_failed_or_unreadable_run_and_loses_nothing() {
    let p = Project::new();
    p.pipeline("name = \"x\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{PROBE}\"\nconfig = { fail = \"broken\" }\n");
    assert_eq!(p.run_json(&["run", "pipeline.toml"]).code, 1);
    let state = p.path(".phasegate/state.toml");
    let before = std::fs::read(&state).unwrap();
    let out = p.output(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("which failed") && err.contains("resume point"),
        "{err}"
    );
    assert!(
        err.contains("phasegate resume") && err.contains("--fresh"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "the failed run's file is kept"
    );

    // A file that cannot be read is not silently replaced either.
    std::fs::write(&state, "not = [a progress file").unwrap();
    let out = p.output(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("cannot be read"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        "not = [a progress file"
    );

    // `--fresh` is the user asking; a completed run is replaced without it.
    p.pipeline(
        "name = \"x\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{PROBE}\"\n",
    );
    assert_eq!(p.run_json(&["run", "pipeline.toml", "--fresh"]).code, 0);
    assert_eq!(p.run_json(&["run", "pipeline.toml"]).code, 0);
}

#[test]
fn two_runs_on_one_progress_file_one_refuses_at_once_and_status_still_reads() {
    let p = Project::new();
    p.pipeline("name = \"x\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{PROBE}\"\nconfig = { sleep-ms = 1500 }\n");
    // Both start at once; exactly one runs.
    let mut a = p.command(&["run", "pipeline.toml", "--format", "json"]);
    let mut b = p.command(&["run", "pipeline.toml", "--format", "json", "--fresh"]);
    let piped = |c: &mut std::process::Command| {
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (piped(&mut a), piped(&mut b));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(codes, [Some(0), Some(2)], "one runs, one refuses");
    let refused = if a.status.code() == Some(2) { &a } else { &b };
    let err = stderr_of(refused);
    assert!(
        err.contains("is in use: process ") && err.contains("(phasegate run)"),
        "{err}"
    );

    // While a run holds the file, `resume` refuses and `status` reads it.
    let (mut child, mut events) = p.spawn_json(&["run", "pipeline.toml", "--fresh"]);
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-started" {
            break;
        }
    }
    let resume = p.output(&["resume"]);
    assert_eq!(resume.status.code(), Some(2));
    assert!(
        stderr_of(&resume).contains(&format!("process {} (phasegate run)", child.id())),
        "{}",
        stderr_of(&resume)
    );
    let status = p.output(&["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", stderr_of(&status));
    assert!(String::from_utf8_lossy(&status.stdout).contains("running"));
    assert!(child.wait().unwrap().success());
    // The lock went with the process: the file is free again.
    assert_eq!(p.run_json(&["run", "pipeline.toml"]).code, 0);
}
