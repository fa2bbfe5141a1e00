//! `reuse`: one instance serving several tasks in a row, through `phasegate run`, with the probe
//! component counting the calls its instance has had (`count`).

use serde_json::Value;

use crate::harness::{Project, by_id};

/// The `served` count each task of `phase` returned, in the phase's order (0 for a task with
/// no output).
pub(crate) fn served(state: &Value, phase: &str) -> Vec<u64> {
    by_id(&state["phase"], phase)["task"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["output"]
                .as_str()
                .and_then(|o| serde_json::from_str::<Value>(o).ok())
                .and_then(|o| o["served"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

/// A phase `id` of `n` counting probe tasks with the extra keys `extra`.
fn phase(id: &str, head: &str, n: usize, extra: &str) -> String {
    let mut toml = format!("[[phase]]\nid = \"{id}\"\n{head}\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\nconfig = {{ count = true }}\n{extra}\n"
        ));
    }
    toml
}

#[test]
fn an_instance_serves_up_to_reuse_tasks_in_a_row_then_a_fresh_one_follows() {
    let p = Project::new();
    let toml = format!(
        "name = \"reuse\"\n{}{}{}",
        phase("fresh", "parallel = false", 4, ""),
        phase("sequential", "parallel = false", 7, "reuse = 3"),
        phase("one-lane", "concurrency = 1", 7, "reuse = 3"),
    );
    p.pipeline(&toml);
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let state = p.state(".phasegate/state.toml");
    // Without `reuse`, every task has an instance of its own.
    assert_eq!(served(&state, "fresh"), [1, 1, 1, 1]);
    // With it, an instance serves three tasks, then the next task gets a fresh one.
    assert_eq!(served(&state, "sequential"), [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(served(&state, "one-lane"), [1, 2, 3, 1, 2, 3, 1]);
    // Each task's log holds its own lines only: the instance's log starts again per task.
    for (i, task) in by_id(&state["phase"], "sequential")["task"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let log: Vec<&str> = task["log"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            log,
            [format!("info: invoked sequential/t{i} attempt 1")],
            "{task}"
        );
    }
}

#[test]
fn a_trap_discards_the_instance_and_only_like_tasks_share_one() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "reuse-breaks"
[defaults]
reuse = 5

[[phase]]
id = "trap"
parallel = false
# The failed task does not stop the run: the next phase runs too.
gate = { plugin = "{ALL_SUCCEEDED}", policy = "advisory" }
[[phase.task]]
id = "a"
plugin = "{PROBE}"
config = { count = true }
[[phase.task]]
id = "b"
plugin = "{PROBE}"
config = { count = true }
[[phase.task]]
id = "crash"
plugin = "{PROBE}"
config = { count = true, trap = true }
[[phase.task]]
id = "c"
plugin = "{PROBE}"
config = { count = true }
[[phase.task]]
id = "d"
plugin = "{PROBE}"
config = { count = true }

[[phase]]
id = "unlike"
parallel = false
[[phase.task]]
id = "a"
plugin = "{PROBE}"
config = { count = true }
[[phase.task]]
id = "other-limits"
plugin = "{PROBE}"
config = { count = true }
limits = { memory = "32MiB" }
[[phase.task]]
id = "b"
plugin = "{PROBE}"
config = { count = true }
[[phase.task]]
id = "fresh"
plugin = "{PROBE}"
config = { count = true }
reuse = 1
[[phase.task]]
id = "c"
plugin = "{PROBE}"
config = { count = true }
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    // The advisory gate's fail is a warning: the run completes.
    assert_eq!(r.code, 0, "{}", r.stderr);
    let state = p.state(".phasegate/state.toml");
    assert_eq!(
        by_id(&by_id(&state["phase"], "trap")["task"], "crash")["error"]["kind"],
        "trap"
    );
    // The instance that trapped (its third task) is not given another.
    assert_eq!(served(&state, "trap"), [1, 2, 0, 1, 2]);
    // A task with other limits, or one that asks for a fresh instance, does not take the kept
    // one; the task after it gets a fresh one too.
    assert_eq!(served(&state, "unlike"), [1, 1, 1, 1, 1]);
}

#[test]
fn reuse_is_validated_and_keeps_results_out_of_the_cache() {
    let p = Project::new();
    p.pipeline(&format!(
        "name = \"reuse-validate\"\n{}",
        phase("work", "", 2, "reuse = 4")
    ));
    let out = p.output(&["validate", "pipeline.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("not cached: `reuse = 4`: what an instance left from an earlier task may change its result"),
        "{text}"
    );
}
