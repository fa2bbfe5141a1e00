//! Runner behaviour through `phasegate run`: parallelism, order, context, gates, retries.

use serde_json::{Value, json};

use crate::harness::{Project, by_id, max_overlap, next_event};

#[test]
fn parallel_tasks_overlap() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "overlap"
[[phase]]
id = "work"
concurrency = 3
[[phase.task]]
id = "a"
plugin = "{PROBE}"
config = { sleep-ms = 300 }
[[phase.task]]
id = "b"
plugin = "{PROBE}"
config = { sleep-ms = 300 }
[[phase.task]]
id = "c"
plugin = "{PROBE}"
config = { sleep-ms = 300 }
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let iv = r.intervals("work");
    assert_eq!(iv.len(), 3);
    // Every task started before any finished: all three ran at the same time.
    let last_start = iv.iter().map(|i| i.1).max().unwrap();
    let first_end = iv.iter().map(|i| i.2).min().unwrap();
    assert!(last_start < first_end, "tasks did not overlap: {iv:?}");
    assert_eq!(max_overlap(&iv), 3);
}

#[test]
fn concurrency_cap_holds() {
    let p = Project::new();
    let mut toml = String::from("name = \"cap\"\n[[phase]]\nid = \"work\"\nconcurrency = 2\n");
    for i in 0..6 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\nconfig = {{ sleep-ms = 150 }}\n"
        ));
    }
    p.pipeline(&toml);
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let iv = r.intervals("work");
    assert_eq!(iv.len(), 6);
    // Never more than the cap at once, and the cap is actually used.
    assert_eq!(max_overlap(&iv), 2, "{iv:?}");
    assert_eq!(r.of("phase-started")[0]["concurrency"], 2);
}

#[test]
fn sequential_phase_runs_in_file_order_and_sees_earlier_tasks() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "seq"
[[phase]]
id = "steps"
parallel = false
concurrency = 8
[[phase.task]]
id = "first"
plugin = "{PROBE}"
input = "one"
config = { sleep-ms = 50 }
[[phase.task]]
id = "second"
plugin = "{PROBE}"
input = "{{ phases.steps.tasks.first.output.input }}+two"
config = { sleep-ms = 50 }
[[phase.task]]
id = "third"
plugin = "{PROBE}"
input = "{{ phases.steps.tasks.second.output.input }}+three"
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let started: Vec<&str> = r
        .of("task-started")
        .iter()
        .map(|e| e["task"].as_str().unwrap())
        .collect();
    assert_eq!(started, ["first", "second", "third"]);
    let mut iv = r.intervals("steps");
    iv.sort_by_key(|i| i.1);
    for w in iv.windows(2) {
        assert!(
            w[0].2 <= w[1].1,
            "{} finished after {} started",
            w[0].0,
            w[1].0
        );
    }
    let ctx = &r.outcome()["context"]["phases"]["steps"]["tasks"];
    assert_eq!(ctx["third"]["output"]["input"], "one+two+three");
}

#[test]
fn context_reaches_later_phases_and_templates_render() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "ctx"
[[phase]]
id = "discovery"
[[phase.task]]
id = "stats"
plugin = "{TEXT_STATS}"
input = "alpha beta gamma\nalpha delta\nalpha beta"
config = { top = 2, min-length = 1 }
[[phase.task]]
id = "find"
plugin = "{PATTERN_FIND}"
input = "fn main() {}\nfn helper() {}\nstruct X;"
config = { pattern = "^fn " }

[[phase]]
id = "planning"
[[phase.task]]
id = "summary"
plugin = "{PROBE}"
input = "{{ phases.discovery.tasks.stats.output.words }} words, top {{ phases.discovery.tasks.stats.output.top_words[0].word }}, {{ phases.discovery.tasks.find.output.matches | length }} functions, run {{ run.id }}"
[[phase.task]]
id = "reshape"
plugin = "{JSON_RESHAPE}"
input = "{{ phases.discovery.tasks.stats.output | tojson }}"
config = { fields = { total = "/words", top = "/top_words/0/word", distinct = "/top_words | length" } }
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let outcome = r.outcome();
    let run_id = r.of("run-started")[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let planning = &outcome["context"]["phases"]["planning"]["tasks"];
    assert_eq!(
        planning["summary"]["output"]["input"],
        format!("7 words, top alpha, 2 functions, run {run_id}")
    );
    assert_eq!(
        planning["reshape"]["output"],
        json!({"total": 7, "top": "alpha", "distinct": 2})
    );
    assert_eq!(outcome["completed"], json!(["discovery", "planning"]));
}

#[test]
fn the_whole_context_reaches_only_plugins_granted_it() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "grants"
vars = { secret = "s3cret" }

[[phase]]
id = "first"
gate = { plugin = "{ECHO_GATE}" }
[[phase.task]]
id = "made"
plugin = "{PROBE}"
config = { output = { token = "t0k" } }

[[phase]]
id = "second"
gate = { plugin = "{ECHO_GATE}", grants = { context = true } }
[[phase.task]]
id = "plain"
plugin = "{PROBE}"
config = { echo-context = true }
[[phase.task]]
id = "granted"
plugin = "{PROBE}"
config = { echo-context = true }
grants = { context = true }
[[phase.task]]
id = "templated"
plugin = "{PROBE}"
input = "{{ phases.first.tasks.made.output.token }} {{ vars.secret }}"

[[phase]]
id = "third"
parallel = false
gate = { plugin = "{ECHO_GATE}", grants = { context = true } }
[[phase.task]]
id = "s1"
plugin = "{PROBE}"
config = { output = { n = 1 } }
[[phase.task]]
id = "s2"
plugin = "{PROBE}"
config = { echo-context = true }
grants = { context = true }
[[phase.task]]
id = "s3"
plugin = "{PROBE}"
config = { echo-context = true }
[[phase.task]]
id = "s4"
plugin = "{PROBE}"
config = { echo-context = true }
grants = { context = true }
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run_id = r.of("run-started")[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Without the grant: who runs the plugin, nothing that any plugin produced, no vars.
    let ungranted = json!({"run": {"id": run_id}, "pipeline": {"name": "grants"}});
    let outcome = r.outcome();
    let phases = &outcome["context"]["phases"];
    let evidence = |phase: &str| phases[phase]["verdict"]["evidence"].clone();
    assert_eq!(evidence("first")["context"], ungranted);

    let second = &phases["second"]["tasks"];
    assert_eq!(second["plain"]["output"]["context"], ungranted);
    let whole = &second["granted"]["output"]["context"];
    assert_eq!(
        whole["phases"]["first"]["tasks"]["made"]["output"]["token"],
        "t0k"
    );
    assert_eq!(whole["vars"]["secret"], "s3cret");
    assert_eq!(whole["run"], ungranted["run"]);
    // Templates see the whole context either way: the task gets what its template selects.
    assert_eq!(second["templated"]["output"]["input"], "t0k s3cret");
    // The granted gate sees the earlier phases (its own tasks come as outcomes).
    let gate = evidence("second");
    assert_eq!(gate["outcomes"], 3);
    assert_eq!(
        gate["context"]["phases"]["first"]["verdict"]["evidence"]["context"],
        ungranted
    );
    let phases_seen = |gate: &Value| {
        gate["context"]["phases"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(phases_seen(&gate), ["first"]);
    // So does a sequential phase's gate, though that phase's context had its tasks added one
    // by one as they finished (it once showed them as a running phase).
    let gate = evidence("third");
    assert_eq!(gate["outcomes"], 4);
    assert_eq!(phases_seen(&gate), ["first", "second"]);

    // In a sequential phase a granted task sees the tasks before it, a later one more.
    let third = &phases["third"]["tasks"];
    let s2 = &third["s2"]["output"]["context"]["phases"];
    assert_eq!(s2["third"]["status"], "running");
    assert_eq!(s2["third"]["tasks"]["s1"]["output"], json!({"n": 1}));
    assert_eq!(
        s2["second"]["tasks"]["plain"]["output"]["context"],
        ungranted
    );
    assert_eq!(third["s3"]["output"]["context"], ungranted);
    let s4 = &third["s4"]["output"]["context"]["phases"]["third"]["tasks"];
    assert_eq!(
        s4.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["s1", "s2", "s3"]
    );
    assert_eq!(s4["s3"]["output"]["context"], ungranted);

    // `validate` shows the grant with the others.
    let v = p.output(&["validate", "pipeline.toml"]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{text}");
    assert!(text.contains("grants: the whole context"), "{text}");
}

#[test]
fn gate_fail_stops_the_run_with_completed_failed_reason_context() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "gated"
[[phase]]
id = "discovery"
gate = { plugin = "{ALL_SUCCEEDED}" }
[[phase.task]]
id = "scan"
plugin = "{PATTERN_FIND}"
input = "TODO one\nTODO two\nTODO three\ndone"
config = { pattern = "TODO" }

[[phase]]
id = "review"
gate = { plugin = "{THRESHOLD}", config = { field = "/count", max = 1 } }
[[phase.task]]
id = "todos"
plugin = "{JSON_RESHAPE}"
input = "{{ phases.discovery.tasks.scan.output | tojson }}"
config = { fields = { count = "/count" } }

[[phase]]
id = "never"
[[phase.task]]
id = "unreached"
plugin = "{PROBE}"
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 1, "a failed gate exits 1: {}", r.stderr);
    let o = r.outcome();
    assert_eq!(o["status"], "failed");
    assert_eq!(o["completed"], json!(["discovery"]));
    assert_eq!(o["failed"], "review");
    assert_eq!(o["reason"], "`/count` must be at most 1: todos = 3");
    assert_eq!(
        o["context"]["phases"]["discovery"]["tasks"]["scan"]["output"]["count"],
        3
    );
    assert_eq!(o["context"]["phases"]["review"]["verdict"]["kind"], "fail");
    assert!(o["context"]["phases"].get("never").is_none());
    assert!(
        r.of("task-started").iter().all(|e| e["phase"] != "never"),
        "a phase after a failed gate ran"
    );
    let state = p.state(".phasegate/state.toml");
    assert_eq!(state["status"], "failed");
    assert_eq!(state["phase"][1]["status"], "failed");
    assert_eq!(state["phase"][2]["status"], "pending");
}

#[test]
fn gate_warn_continues_and_is_recorded() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "warned"
[[phase]]
id = "check"
gate = { plugin = "{THRESHOLD}", config = { field = "/words", min = 100, on-violation = "warn" } }
[[phase.task]]
id = "stats"
plugin = "{TEXT_STATS}"
input = "too few words"
[[phase]]
id = "after"
[[phase.task]]
id = "next"
plugin = "{PROBE}"
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let o = r.outcome();
    assert_eq!(o["completed"], json!(["check", "after"]));
    assert_eq!(o["warnings"][0]["phase"], "check");
    assert_eq!(
        o["warnings"][0]["reason"],
        "`/words` must be at least 100: stats = 3"
    );
    let state = p.state(".phasegate/state.toml");
    assert_eq!(state["phase"][0]["verdict"]["kind"], "warn");
    let evidence: Value =
        serde_json::from_str(state["phase"][0]["verdict"]["evidence"].as_str().unwrap()).unwrap();
    assert_eq!(evidence["values"][0]["value"], 3.0);
}

#[test]
fn retry_then_success_and_retries_exhausted() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "flaky"
[defaults]
retry-backoff = "20ms"
[[phase]]
id = "work"
gate = { plugin = "{ALL_SUCCEEDED}", config = { allow-failures = 1 } }
[[phase.task]]
id = "recovers"
plugin = "{PROBE}"
config = { fail-until-attempt = 3 }
retries = 2
[[phase.task]]
id = "gives-up"
plugin = "{PROBE}"
config = { fail-until-attempt = 3 }
retries = 1
[[phase.task]]
id = "bad-input"
plugin = "{PROBE}"
config = { invalid-input = "not this" }
retries = 5
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(
        r.code, 1,
        "two failed tasks exceed `allow-failures = 1`: {}",
        r.stderr
    );
    let inv = r.invocations();
    assert_eq!(inv["recovers"], 3);
    assert_eq!(inv["gives-up"], 2);
    assert_eq!(inv["bad-input"], 1, "invalid-input is never retried");
    let retries: Vec<(String, u64)> = r
        .of("task-retry")
        .iter()
        .filter(|e| e["task"] == "recovers")
        .map(|e| {
            (
                e["error"]["kind"].as_str().unwrap().to_owned(),
                e["delay_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        retries,
        [("failed".to_owned(), 20), ("failed".to_owned(), 40)],
        "exponential backoff"
    );
    let state = p.state(".phasegate/state.toml");
    let tasks = &state["phase"][0]["task"];
    assert_eq!(tasks[0]["status"], "succeeded");
    assert_eq!(tasks[0]["attempts"], 3);
    assert_eq!(tasks[1]["status"], "failed");
    assert_eq!(tasks[1]["error"]["kind"], "failed");
    assert_eq!(tasks[2]["error"]["kind"], "invalid-input");
    assert_eq!(state["phase"][0]["verdict"]["kind"], "fail");
}

#[test]
fn progress_file_is_written_after_each_task_and_verdict() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "steps"
[[phase]]
id = "one"
parallel = false
[[phase.task]]
id = "a"
plugin = "{PROBE}"
config = { sleep-ms = 100 }
[[phase.task]]
id = "b"
plugin = "{PROBE}"
config = { sleep-ms = 100 }
[[phase]]
id = "two"
[[phase.task]]
id = "c"
plugin = "{PROBE}"
config = { sleep-ms = 100 }
"#,
    );
    let (mut child, mut events) = p.spawn_json(&["run", "pipeline.toml"]);
    let mut checked = 0;
    while let Some(e) = next_event(&mut events) {
        match e["event"].as_str().unwrap() {
            "task-finished" => {
                // The record is in the journal before the event is emitted: the file shows it now.
                let state = p.state(".phasegate/state.toml");
                let phase = by_id(&state["phase"], e["phase"].as_str().unwrap());
                let task = by_id(&phase["task"], e["task"].as_str().unwrap());
                assert_eq!(task["status"], "succeeded", "{state:#}");
                assert!(task["output"].as_str().unwrap().contains("\"task\""));
                checked += 1;
            }
            "verdict" => {
                let state = p.state(".phasegate/state.toml");
                let phase = by_id(&state["phase"], e["phase"].as_str().unwrap());
                assert_eq!(phase["status"], "complete");
                assert_eq!(phase["verdict"]["kind"], "pass");
                checked += 1;
            }
            _ => {}
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(checked, 5, "3 tasks + 2 verdicts observed");
    let text = std::fs::read_to_string(p.path(".phasegate/state.toml")).unwrap();
    assert!(text.contains("status = \"completed\""), "{text}");
    assert!(
        !p.path(".phasegate/state.toml.journal").exists(),
        "journal folded at the end"
    );
}

/// A waiting task's timeout fires on time even while its siblings keep every worker thread busy
/// with tasks that never wait (the scheduler, and so its timers, got the threads back only when
/// the phase ended: a 100 ms timeout fired after the whole phase).
#[test]
fn a_timeout_fires_on_time_among_busy_tasks() {
    let p = Project::new();
    let mut toml = String::from(
        "name = \"mixed\"\n[[phase]]\nid = \"work\"\nconcurrency = 64\n\
         [[phase.task]]\nid = \"sleeper\"\nplugin = \"{PROBE}\"\nconfig = { sleep-ms = 60000 }\n\
         retries = 0\nlimits = { timeout = \"100ms\" }\n",
    );
    for i in 0..30_000 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{NOOP}}\"\n"
        ));
    }
    p.pipeline(&toml);
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 1, "the sleeper fails the phase: {}", r.stderr);
    let sleeper = r
        .of("task-finished")
        .into_iter()
        .find(|e| e["task"] == "sleeper")
        .expect("the sleeper finished");
    assert_eq!(sleeper["error"]["kind"], "timeout", "{sleeper}");
    let took = sleeper["duration_ms"].as_u64().unwrap();
    let at = |kind: &str| r.of(kind)[0]["elapsed_us"].as_u64().unwrap() / 1_000;
    let phase = at("phase-finished") - at("phase-started");
    // On time, give or take the scheduler: well inside the phase, not at its end.
    assert!(
        took < 100 + (phase - 100) / 2,
        "a 100 ms timeout fired after {took} ms, in a phase of {phase} ms"
    );
}

#[test]
fn a_crashed_gate_is_a_crash_not_a_judgement_in_the_run_and_in_fixtures() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "crash"
[[phase]]
id = "judged"
gate = { plugin = "{ECHO_GATE}", config = { panic = true } }
[[phase.task]]
id = "a"
plugin = "{PROBE}"
"#,
    );
    let out = p.output(&["run", "pipeline.toml", "--progress", "lines"]);
    let err = crate::harness::stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CRASH (echo_gate): the gate did not judge the phase (trap)"),
        "{err}"
    );
    let state = p.state(".phasegate/state.toml");
    let verdict = &state["phase"][0]["verdict"];
    // A phase no gate approved does not go on, and the record says why.
    assert_eq!(verdict["kind"], "fail", "{verdict}");
    assert_eq!(verdict["crashed"], "trap", "{verdict}");
    assert!(
        verdict["reason"].as_str().unwrap().contains("trapped"),
        "{verdict}"
    );
    let status = p.output(&["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(shown.contains("gate crashed (trap)"), "{shown}");

    // A fixture that expects `fail` does not pass on a crashed gate; one that expects the
    // crash does.
    let gate = phasegate_test_artifacts::ALL
        .iter()
        .find(|(name, _)| *name == "ECHO_GATE")
        .unwrap()
        .1;
    std::fs::create_dir_all(p.path("fixtures")).unwrap();
    let report =
        "[report]\nconfig = { panic = true }\n[[report.outcome]]\ntask = \"a\"\noutput = 1\n";
    p.write(
        "fixtures/expects-fail.toml",
        &format!("{report}[expect]\nverdict = \"fail\"\n"),
    );
    p.write(
        "fixtures/expects-crash.toml",
        &format!("{report}[expect]\nerror = \"trap\"\nmessage-contains = \"unreachable\"\n"),
    );
    let out = p.output(&["test", gate, "--fixtures", "fixtures"]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        crate::harness::stderr_of(&out)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("PASS expects-crash"), "{all}");
    assert!(all.contains("FAIL expects-fail"), "{all}");
    assert!(
        all.contains("the gate crashed (`trap`) instead of judging the phase")
            && all.contains("writes `error = \"trap\"`"),
        "{all}"
    );
}
