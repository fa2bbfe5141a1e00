//! What a person sees: bounded summaries, `status --failed` / `--phase`, the live display.

use crate::harness::{Project, stderr_of};

fn many(p: &Project, tasks: usize, fail: bool) {
    let mut toml = String::from("name = \"many\"\n[[phase]]\nid = \"bulk\"\n");
    for i in 0..tasks {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i:02}\"\nplugin = \"{{PROBE}}\"\ninput = \"{i}\"\n{}",
            if fail {
                format!(
                    "config = {{ fail = \"broken number {i} {}\" }}\n",
                    "x".repeat(300)
                )
            } else {
                String::new()
            }
        ));
    }
    p.pipeline(&toml);
}

#[test]
fn a_failed_phase_names_the_first_few_and_status_lists_them_all() {
    let p = Project::new();
    many(&p, 8, true);
    let out = p.output(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let summary = String::from_utf8_lossy(&out.stdout);
    let first = summary.lines().next().unwrap();
    assert!(
        first.contains("8 of 8 task(s) failed: `t00` (broken number 0"),
        "{first}"
    );
    assert!(
        first.ends_with("… and 5 more (`phasegate status --failed` lists them all)"),
        "{first}"
    );
    assert!(!first.contains("`t03`"), "{first}");
    assert!(first.len() < 1200, "bounded: {} bytes", first.len());

    let status = p.output(&["status", "--failed"]);
    let text = String::from_utf8_lossy(&status.stdout);
    for i in 0..8 {
        assert!(
            text.contains(&format!("t{i:02}"))
                && text.contains(&format!("failed: broken number {i} ")),
            "{text}"
        );
    }
    let phase = p.output(&["status", "--phase", "bulk"]);
    let rows = |out: &std::process::Output, status: &str| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("    t") && l.contains(status))
            .count()
    };
    assert_eq!(rows(&phase, " failed "), 8);
    let wrong = p.output(&["status", "--phase", "bulkk"]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr_of(&wrong).contains("no phase `bulkk` (did you mean `bulk`?)"));
}

#[test]
fn the_final_outputs_are_bounded_and_say_how_to_list_the_rest() {
    let p = Project::new();
    many(&p, 12, false);
    let out = p.output(&["run", "pipeline.toml"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(summary.matches("\"input\":").count(), 10, "{summary}");
    assert!(
        summary.contains("… and 2 more (`phasegate status --phase bulk` lists them all)"),
        "{summary}"
    );
    let listed = p.output(&["status", "--phase", "bulk"]);
    let rows = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter(|l| l.starts_with("    t") && l.contains(" succeeded "))
        .count();
    assert_eq!(rows, 12);
}

#[test]
fn bars_show_progress_and_only_the_lines_that_matter() {
    let p = Project::new();
    let mut toml = String::from("name = \"bars\"\n[[phase]]\nid = \"bulk\"\nconcurrency = 4\n");
    for i in 0..40 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\nconfig = {{ sleep-ms = 10{} }}\n",
            if i == 7 { ", fail = \"broken\"" } else { "" }
        ));
    }
    p.pipeline(&toml);
    let out = p.output(&["run", "pipeline.toml", "--progress", "bars"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("bulk ["), "a bar: {err}");
    assert!(err.contains("/40 1 failed"), "done/total and failed: {err}");
    assert!(err.contains("40/40"), "{err}");
    assert!(err.contains("\x1b[2K"), "drawn in place: {err}");
    assert!(err.contains("phase bulk: 40 task(s)"), "{err}");
    assert!(err.contains("✗ t7 failed: broken"), "{err}");
    assert!(err.contains("FAIL (builtin:all-succeeded)"), "{err}");
    assert!(
        !err.contains("✓ t1 ok"),
        "per-task lines only with -v: {err}"
    );
    assert!(
        !err.contains("invoked bulk/"),
        "info logs only with -v: {err}"
    );

    let verbose = p.output(&[
        "run",
        "pipeline.toml",
        "--fresh",
        "--progress",
        "bars",
        "-v",
    ]);
    let err = stderr_of(&verbose);
    assert!(
        err.contains("✓ t1 ok") && err.contains("invoked bulk/t1"),
        "{err}"
    );

    let none = p.output(&["run", "pipeline.toml", "--fresh", "--progress", "none"]);
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(stderr_of(&none), "", "nothing while it runs");
    assert!(String::from_utf8_lossy(&none.stdout).contains("run failed at phase `bulk`"));

    // Not a terminal and not asked for bars: a line per event, as a log.
    let auto = p.output(&["run", "pipeline.toml", "--fresh"]);
    let err = stderr_of(&auto);
    assert!(err.contains("✓ t1 ok") && !err.contains("\x1b["), "{err}");
}

#[test]
fn what_each_attempt_used_is_recorded_announced_and_shown() {
    let p = Project::new();
    p.pipeline(
        "name = \"usage\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"spin\"\nplugin = \"{PROBE}\"\nconfig = { spin = 20000 }\nlimits = { fuel = 500_000_000 }\n[[phase.task]]\nid = \"plain\"\nplugin = \"{PROBE}\"\n",
    );
    let run = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let state = p.state(".phasegate/state.toml");
    let task = |id: &str| crate::harness::by_id(&state["phase"][0]["task"], id).clone();
    let spin = task("spin")["usage"].clone();
    let fuel = spin["fuel"]
        .as_u64()
        .expect("metered: fuel used is recorded");
    assert!(fuel > 20_000 && fuel < 500_000_000, "{spin}");
    assert!(spin["memory"].as_u64().unwrap() >= 64 << 10, "{spin}");
    assert!(
        spin["log-bytes"].as_u64().unwrap() > 0,
        "the probe logs its invocation: {spin}"
    );
    assert!(spin["wall-us"].as_u64().unwrap() > 0, "{spin}");
    let plain = task("plain")["usage"].clone();
    assert!(
        plain.get("fuel").is_none(),
        "no budget, no fuel figure: {plain}"
    );
    // The event carries it too, and `status` shows it.
    let finished = run.of("task-finished");
    let event = finished.iter().find(|e| e["task"] == "spin").unwrap();
    assert_eq!(event["usage"]["fuel"].as_u64(), Some(fuel));
    let status = p.output(&["status", "--phase", "one"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!(", fuel {fuel}, logs ")), "{text}");
}

#[test]
fn the_final_outputs_come_in_the_pipelines_order() {
    let p = Project::new();
    let mut toml = String::from("name = \"order\"\n[[phase]]\nid = \"bulk\"\n");
    let ids = ["zeta", "alpha", "mu", "beta"];
    for id in ids {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"{id}\"\nplugin = \"{{PROBE}}\"\n"
        ));
    }
    p.pipeline(&toml);
    let out = p.output(&["run", "pipeline.toml"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let summary = String::from_utf8_lossy(&out.stdout);
    let shown: Vec<&str> = summary
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split_once(':').map(|(id, _)| id))
        .collect();
    assert_eq!(shown, ids, "{summary}");
}
