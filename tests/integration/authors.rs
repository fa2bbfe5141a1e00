//! Pipeline authors: what the CLI says when a pipeline is wrong at run time, values given on
//! the command line, and the lines a person reads.

use crate::harness::{Project, by_id, stderr_of};

#[test]
fn a_template_error_at_run_time_names_the_expression_the_task_and_the_line() {
    let p = Project::new();
    p.pipeline(
        r#"name = "rt"
[[phase]]
id = "scan"
[[phase.task]]
id = "stats"
plugin = "{PROBE}"
config = { output = { n = 1 } }

[[phase]]
id = "report"
[[phase.task]]
id = "use"
plugin = "{PROBE}"
input = """
count: {{ phases.scan.tasks.stats.output.m }}
"""
"#,
    );
    // What the output holds is not known before the run: validate accepts it.
    assert!(p.output(&["validate", "pipeline.toml"]).status.success());
    let out = p.output(&["run", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains(
            "✗ use invalid-input: cannot render the `input` of task `use` in phase `report` ("
        ) && err.contains("pipeline.toml:15): `phases.scan.tasks.stats.output.m` is undefined"),
        "{err}"
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("run failed at phase `report`: 1 of 1 task(s) failed: `use`"),
        "{summary}"
    );
    // The advice says what to do for each kind of fix, with the pipeline's path.
    assert!(summary.contains("      phasegate resume\n"), "{summary}");
    assert!(
        summary.contains("(`--explain` shows what runs and why)"),
        "{summary}"
    );
    assert!(
        summary.contains("      phasegate run pipeline.toml --fresh"),
        "{summary}"
    );
}

#[test]
fn vars_come_from_the_command_line_and_files_and_resume_uses_the_same() {
    let p = Project::new();
    let pipeline = |fail: bool| {
        format!(
            r#"name = "vars"
[vars]
notes = "none"
count = 1
[[phase]]
id = "one"
[[phase.task]]
id = "a"
plugin = "{{PROBE}}"
input = "{{{{ vars.notes }}}}|{{{{ vars.count + 1 }}}}"
[[phase]]
id = "two"
[[phase.task]]
id = "b"
plugin = "{{PROBE}}"
input = "{{{{ vars.notes }}}}"
{}
"#,
            if fail {
                "config = { fail = \"not yet\" }"
            } else {
                ""
            }
        )
    };
    p.pipeline(&pipeline(true));
    std::fs::write(p.path("notes.md"), "# Notes\nline two\n").unwrap();

    // Refused before anything is written: an undeclared var, a value of the wrong type, a
    // file that is not there.
    for (args, says) in [
        (
            &["--var", "note=x"][..],
            "declares no var `note` (did you mean `notes`?)",
        ),
        (&["--var", "count=many"][..], "`many` is not a whole number"),
        (
            &["--var", "notes=@missing.md"][..],
            "cannot read missing.md",
        ),
        (&["--var", "notes"][..], "has no `=`"),
    ] {
        let mut cmd = vec!["run", "pipeline.toml"];
        cmd.extend_from_slice(args);
        let out = p.output(&cmd);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr_of(&out).contains(says),
            "{args:?}: {}",
            stderr_of(&out)
        );
        assert!(!p.path(".phasegate/state.toml").exists());
    }

    let first = p.run_json(&[
        "run",
        "pipeline.toml",
        "--var",
        "notes=@notes.md",
        "--var",
        "count=41",
    ]);
    assert_eq!(first.code, 1);
    let state = p.state(".phasegate/state.toml");
    assert_eq!(
        output_of(&state, "one", "a")["input"],
        "# Notes\nline two\n|42"
    );
    assert_eq!(state["vars"]["notes"], "# Notes\nline two\n");
    assert_eq!(state["vars"]["count"], "41");

    // The file changes; resume renders what the run started with.
    std::fs::write(p.path("notes.md"), "changed").unwrap();
    let other = p.output(&["resume", "--var", "notes=@notes.md"]);
    assert_eq!(other.status.code(), Some(2));
    assert!(
        stderr_of(&other).contains("other vars than it started with: `notes`"),
        "{}",
        stderr_of(&other)
    );
    p.pipeline(&pipeline(false));
    let resumed = p.run_json(&["resume", "--force"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(
        resumed.stderr.contains("using the vars run"),
        "{}",
        resumed.stderr
    );
    let state = p.state(".phasegate/state.toml");
    assert_eq!(
        output_of(&state, "two", "b")["input"],
        "# Notes\nline two\n"
    );
    assert_eq!(state["vars"]["count"], "41", "kept through --force");
    assert_eq!(by_id(&state["phase"], "two")["status"], "complete");
}

/// A task's recorded output, parsed.
fn output_of(state: &serde_json::Value, phase: &str, task: &str) -> serde_json::Value {
    let text = by_id(&by_id(&state["phase"], phase)["task"], task)["output"]
        .as_str()
        .unwrap_or_else(|| panic!("{phase}/{task} has no output: {state}"));
    serde_json::from_str(text).unwrap()
}

#[test]
fn status_without_a_progress_file_says_where_it_looked_and_how_to_start() {
    let p = Project::new();
    let out = p.output(&["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("no progress file at .phasegate/state.toml"),
        "{err}"
    );
    assert!(
        err.contains("phasegate run PIPELINE") && err.contains("--state FILE"),
        "{err}"
    );
}

#[test]
fn lines_name_a_gate_by_its_plugin_and_a_one_task_phase_plainly() {
    let p = Project::new();
    p.pipeline(
        r#"name = "h"
[[phase]]
id = "one"
concurrency = 4
gate = { plugin = "{THRESHOLD}", config = { field = "/words", min = 1 } }
[[phase.task]]
id = "a"
plugin = "{TEXT_STATS}"
input = "hi there"
"#,
    );
    let out = p.output(&["run", "pipeline.toml"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("phase one: 1 task(s)\n"), "{err}");
    let gate = std::path::Path::new(phasegate_test_artifacts::THRESHOLD)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(err.contains(&format!("? gate {gate}\n")), "{err}");
    assert!(err.contains(&format!("PASS ({gate}):")), "{err}");
    assert!(!err.contains(phasegate_test_artifacts::THRESHOLD), "{err}");
    let validate = p.output(&["validate", "pipeline.toml"]);
    let text = String::from_utf8_lossy(&validate.stdout);
    assert!(text.contains("phase one: 1 task(s)\n"), "{text}");
}
