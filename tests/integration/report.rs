//! `phasegate report`: the HTML report of real runs, rendered by a real browser (headless
//! Chromium, `--dump-dom`), checked in the DOM the browser built.

use std::path::Path;
use std::process::Command;

use crate::harness::{Project, next_event, stderr_of};

/// The DOM headless Chromium builds from a file (after its scripts ran).
fn rendered_dom(file: &Path) -> String {
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .args(["--no-first-run", "--disable-extensions", "--disable-quic"])
        // Nothing is reachable from the test machines: no background connections.
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            file.with_extension("chromium-profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium: run scripts/setup-guest-toolchain, which installs it (apt)");
    assert!(out.status.success(), "chromium: {}", stderr_of(&out));
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("<body data-rendered=\"yes\">"),
        "the report's script did not run in the browser:\n{dom}"
    );
    dom
}

#[test]
fn a_failed_runs_report_shows_phases_verdicts_failures_and_escapes_what_plugins_wrote() {
    let p = Project::new();
    p.pipeline(
        r#"name = "reported"
[[phase]]
id = "scan"
gate = { plugin = "{THRESHOLD}", config = { field = "/words", min = 1 } }
[[phase.task]]
id = "words"
plugin = "{TEXT_STATS}"
input = "three words here"

[[phase]]
id = "check"
[[phase.task]]
id = "flaky"
plugin = "{PROBE}"
retries = 2
config = { fail-until-attempt = 2 }
[[phase.task]]
id = "hostile"
plugin = "{PROBE}"
config = { fail = "<script>document.title='owned'</script> \"quoted\" & more" }
"#,
    );
    assert_eq!(p.output(&["run", "pipeline.toml"]).status.code(), Some(1));
    let out = p.output(&["report", "-o", "report.html"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let html = std::fs::read_to_string(p.path("report.html")).unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );

    let dom = rendered_dom(&p.path("report.html"));
    assert!(
        dom.contains("2 phase(s), 3 task(s), 1 failed"),
        "the script's summary"
    );
    assert!(dom.contains("id=\"phase-scan\"") && dom.contains("id=\"phase-check\""));
    // The gates' verdicts, named by plugin, with their reasons.
    let threshold = Path::new(phasegate_test_artifacts::THRESHOLD)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        dom.contains(&format!("gate <code>{threshold}</code>")),
        "{dom}"
    );
    assert!(dom.contains(">PASS<") && dom.contains(">FAIL<"), "{dom}");
    assert!(dom.contains("1 of 2 task(s) failed: `hostile`"), "{dom}");
    // The failure, with its kind, escaped: the plugin's markup is text, not a script.
    assert!(dom.contains("<tr class=\"failure\"><td><code>hostile</code></td><td>failed</td>"));
    assert!(
        dom.contains("&lt;script&gt;document.title='owned'&lt;/script&gt; \"quoted\" &amp; more"),
        "{dom}"
    );
    assert_eq!(
        dom.matches("<script").count(),
        2,
        "only the report's own scripts"
    );
    assert!(
        dom.contains("<title>phasegate report: pipeline</title>"),
        "the title stays"
    );
    // The retried task is drawn as retried; logs are there, collapsed.
    assert!(dom.contains("<rect class=\"retried\""), "{dom}");
    assert!(
        dom.contains("<details class=\"logs\"><summary>logs of"),
        "{dom}"
    );
    assert!(
        dom.contains("<th>attempts</th><td>4 (1 retries)</td>"),
        "{dom}"
    );
}

#[test]
fn a_killed_runs_report_and_a_large_phase_drawn_as_density() {
    let p = Project::new();
    let mut toml = String::from("name = \"big\"\n[[phase]]\nid = \"bulk\"\nconcurrency = 4\n");
    for i in 0..450 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\n"
        ));
    }
    toml.push_str("[[phase]]\nid = \"slow\"\n[[phase.task]]\nid = \"wait\"\nplugin = \"{PROBE}\"\nconfig = { sleep-ms = 30000 }\n");
    p.pipeline(&toml);
    let (mut child, mut events) = p.spawn_json(&["run", "pipeline.toml"]);
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-started" && e["phase"] == "slow" {
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();
    let out = p.output(&["report"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote .phasegate/report.html"));
    let dom = rendered_dom(&p.path(".phasegate/report.html"));
    assert!(
        dom.contains("<svg class=\"timeline density\""),
        "450 tasks as a band"
    );
    assert!(dom.contains("450 tasks, drawn as their density"), "{dom}");
    assert!(
        dom.contains("badge running"),
        "the run was killed while running: {dom}"
    );
    assert!(
        dom.contains("450 succeeded, 0 failed, 1 not run, of 451"),
        "{dom}"
    );
}
