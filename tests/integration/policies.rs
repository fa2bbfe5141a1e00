//! Gate policies through the CLI with a real gate component (threshold): required, advisory and
//! quorum gates, what each records and shows, and resume after a failed policy.

use crate::harness::{Project, RunResult, by_id};

/// Phase `review`: task `a` returns `{"n": N}`; five threshold gates judge it: one required
/// (n ≤ 10), one advisory (n ≤ 0), three quorum gates of which two must pass (n ≤ 5, n ≥ 5,
/// n ≤ 1). Then phase `after`.
fn pipeline(n: u32, required_max: u32, second_min: u32) -> String {
    format!(
        r#"
name = "policies"
[[phase]]
id = "review"
quorum = 2
gates = [
  {{ plugin = "{{THRESHOLD}}", config = {{ field = "/n", max = {required_max} }} }},
  {{ plugin = "{{THRESHOLD}}", config = {{ field = "/n", max = 0 }}, policy = "advisory" }},
  {{ plugin = "{{THRESHOLD}}", config = {{ field = "/n", max = 5 }}, policy = "quorum" }},
  {{ plugin = "{{THRESHOLD}}", config = {{ field = "/n", min = {second_min} }}, policy = "quorum" }},
  {{ plugin = "{{THRESHOLD}}", config = {{ field = "/n", max = 1 }}, policy = "quorum" }},
]
[[phase.task]]
id = "a"
plugin = "{{PROBE}}"
config = {{ output = {{ n = {n} }} }}
[[phase]]
id = "after"
[[phase.task]]
id = "b"
plugin = "{{PROBE}}"
"#
    )
}

/// Each gate's event: (policy, verdict kind, kept).
fn gate_events(r: &RunResult) -> Vec<(String, String, bool)> {
    r.of("gate-verdict")
        .into_iter()
        .map(|e| {
            (
                e["policy"].as_str().unwrap().to_owned(),
                e["verdict"]["kind"].as_str().unwrap().to_owned(),
                e["kept"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn phase_verdict(r: &RunResult, phase: &str) -> serde_json::Value {
    r.of("verdict")
        .into_iter()
        .find(|e| e["phase"] == phase)
        .unwrap()["verdict"]
        .clone()
}

#[test]
fn an_advisory_fail_warns_and_a_quorum_decides() {
    let p = Project::new();
    // n = 5: the required gate passes, the advisory one fails, quorum: ≤5 and ≥5 pass, ≤1 fails.
    p.pipeline(&pipeline(5, 10, 5));
    let out = p.output(&["validate", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("  gate (advisory): "), "{said}");
    assert!(
        said.contains("policies: 1 required gate(s) must not fail; 2 of 3 quorum gates must pass; 1 advisory gate(s) only warn"),
        "{said}"
    );

    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = |v: &str| v.to_owned();
    assert_eq!(
        gate_events(&r),
        [
            (s("required"), s("pass"), false),
            (s("advisory"), s("fail"), false),
            (s("quorum"), s("pass"), false),
            (s("quorum"), s("pass"), false),
            (s("quorum"), s("fail"), false),
        ]
    );
    let v = phase_verdict(&r, "review");
    assert_eq!(v["kind"], "warn", "{v}");
    assert_eq!(v["gate"], "policy:advisory", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("advisory gate `threshold.wasm` failed (`/n` must be at most 0: a = 5)")
            && reason.ends_with("; quorum reached: 2 of 3 passed, 2 needed"),
        "{reason}"
    );
    // Recorded, and shown by status and the report.
    let state = p.state(".phasegate/state.toml");
    let gates = by_id(&state["phase"], "review")["gates"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(gates.len(), 5);
    assert_eq!(gates[1]["policy"], "advisory");
    assert_eq!(gates[1]["verdict"]["kind"], "fail");
    assert!(gates[1]["key"].as_str().unwrap().starts_with("sha256:"));
    let status = p.output(&["status"]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("    advisory gate threshold: fail: `/n` must be at most 0: a = 5"),
        "{shown}"
    );
    assert!(p.output(&["report"]).status.success());
    let html = std::fs::read_to_string(p.path(".phasegate/report.html")).unwrap();
    assert!(
        html.contains("advisory gate <code>threshold</code>"),
        "report"
    );
}

#[test]
fn a_missed_quorum_fails_and_resume_asks_only_the_gates_that_must_answer_again() {
    let p = Project::new();
    // n = 3: quorum ≤5 passes, ≥5 fails, ≤1 fails: 1 of 3.
    p.pipeline(&pipeline(3, 10, 5));
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = phase_verdict(&r, "review");
    assert_eq!(v["gate"], "policy:quorum", "{v}");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .starts_with("quorum not reached: 1 of 3 quorum gate(s) passed, 2 needed"),
        "{v}"
    );

    // The second quorum gate is relaxed: the task is kept; passing gates whose key holds keep
    // their verdicts; the edited gate and the ones that failed are asked again.
    p.pipeline(&pipeline(3, 10, 1));
    let resumed = p.run_json(&["resume"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        !resumed.invocations().contains_key("a"),
        "{:?}",
        resumed.invocations()
    );
    let s = |v: &str| v.to_owned();
    assert_eq!(
        gate_events(&resumed),
        [
            (s("required"), s("pass"), true),
            (s("advisory"), s("fail"), false),
            (s("quorum"), s("pass"), true),
            (s("quorum"), s("pass"), false),
            (s("quorum"), s("fail"), false),
        ]
    );
    assert_eq!(phase_verdict(&resumed, "review")["kind"], "warn");
}

#[test]
fn a_failed_required_gate_stops_the_run_whatever_the_others_say() {
    let p = Project::new();
    // n = 5 passes the quorum, but the required gate allows at most 4.
    p.pipeline(&pipeline(5, 4, 5));
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = phase_verdict(&r, "review");
    assert_eq!(v["gate"], "policy:required", "{v}");
    assert!(
        v["reason"].as_str().unwrap().starts_with(
            "required gate failed: `threshold.wasm` failed (`/n` must be at most 4: a = 5)"
        ),
        "{v}"
    );
    assert!(r.of("task-started").iter().all(|e| e["phase"] == "review"));

    // The required gate's limit raised: only it (and the gates that failed) answer again; the
    // task and the passing quorum gates are kept; the next phase runs.
    p.pipeline(&pipeline(5, 10, 5));
    let explained = p.output(&["resume", "--explain"]);
    let said = String::from_utf8_lossy(&explained.stdout);
    assert!(said.contains("  keep  a  its key is unchanged"), "{said}");
    assert!(
        said.contains("  gate  asked again: its verdict was fail"),
        "{said}"
    );
    let resumed = p.run_json(&["resume"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let s = |v: &str| v.to_owned();
    assert_eq!(
        gate_events(&resumed),
        [
            (s("required"), s("pass"), false),
            (s("advisory"), s("fail"), false),
            (s("quorum"), s("pass"), true),
            (s("quorum"), s("pass"), true),
            (s("quorum"), s("fail"), false),
        ]
    );
    assert_eq!(
        resumed.invocations().keys().collect::<Vec<_>>(),
        ["b"],
        "only the next phase's task runs"
    );
}
