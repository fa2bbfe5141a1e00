//! CLI surface: validate, status, exit codes.

use crate::harness::{Project, stderr_of};

#[test]
fn validate_names_each_plugins_world() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "v"
[[phase]]
id = "one"
gate = { plugin = "{THRESHOLD}", config = { field = "/words", min = 1 } }
[[phase.task]]
id = "a"
plugin = "{TEXT_STATS}"
"#,
    );
    let out = p.output(&["validate", "pipeline.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stdout.contains("text_stats.wasm implements phasegate:plugin/task@0.1.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("threshold.wasm implements phasegate:plugin/gate@0.1.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("text-stats 0.1.0: Counts lines"),
        "{stdout}"
    );
    assert!(stdout.contains("bounds checks guard-pages"), "{stdout}");
    assert!(!stdout.contains("Spectre"), "{stdout}");

    // Explicit bounds checks are named, with what they give up.
    let text = std::fs::read_to_string(p.path("pipeline.toml")).unwrap();
    p.pipeline(&text.replace(
        "name = \"v\"\n",
        "name = \"v\"\n[engine]\nbounds-checks = \"explicit\"\n",
    ));
    let out = p.output(&["validate", "pipeline.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout.contains("bounds checks explicit"), "{stdout}");
    assert!(
        stdout.contains("Spectre mitigations are off for every plugin"),
        "{stdout}"
    );
}

#[test]
fn validate_rejects_a_gate_used_as_a_task_and_a_core_module() {
    let p = Project::new();
    p.pipeline("name = \"v\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{ALL_SUCCEEDED}\"\n");
    let out = p.output(&["validate", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("task `a` in phase `one` uses plugin"),
        "{}",
        stderr_of(&out)
    );
    assert!(stderr_of(&out).contains(
        "implements phasegate:plugin/gate@0.1.0; a task needs phasegate:plugin/task@0.1.0"
    ));

    // A core module (the smallest valid one) is not a component.
    std::fs::write(p.path("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(p.path("junk.wasm"), b"not wasm at all").unwrap();
    p.pipeline("name = \"v\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"core.wasm\"\n[[phase.task]]\nid = \"b\"\nplugin = \"junk.wasm\"\n");
    let out = p.output(&["validate", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("core Wasm module, not a component"), "{err}");
    assert!(
        err.contains("junk.wasm") && err.contains("not a valid Wasm component"),
        "{err}"
    );
}

#[test]
fn status_and_human_output() {
    let p = Project::new();
    p.pipeline("name = \"h\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{TEXT_STATS}\"\ninput = \"hi there\"\n");
    let out = p.output(&["run", "pipeline.toml"]);
    assert!(out.status.success());
    let err = stderr_of(&out);
    assert!(err.contains("phase one: 1 task(s)"), "{err}");
    assert!(err.contains("✓ a ok"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("run completed: 1 phase(s) passed"));
    let status = p.output(&["status"]);
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(
        s.contains("completed") && s.contains("1/1 tasks finished"),
        "{s}"
    );
    let missing = p.output(&["status", "--state", "nope.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr_of(&missing).contains("nope.toml"));
}

#[test]
fn task_failures_are_typed_trap_and_bad_output() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "typed"
[[phase]]
id = "one"
[[phase.task]]
id = "panics"
plugin = "{PROBE}"
config = { trap = true }
retries = 3
[[phase.task]]
id = "slow"
plugin = "{PROBE}"
config = { sleep-ms = 5000 }
timeout = "200ms"
[[phase.task]]
id = "big"
plugin = "{PROBE}"
input = "0123456789012345678901234567890123456789"
limits = { max-output = "32B" }
[[phase.task]]
id = "fine"
plugin = "{PROBE}"
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 1);
    let state = p.state(".phasegate/state.toml");
    let t = &state["phase"][0]["task"];
    assert_eq!(t[0]["error"]["kind"], "trap");
    assert_eq!(t[0]["attempts"], 1, "traps are not retried");
    assert!(
        t[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("probe was told to trap"),
        "{}",
        t[0]
    );
    assert_eq!(t[1]["error"]["kind"], "timeout");
    assert!(
        t[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeded its timeout of 200ms; if it needs longer, raise `timeout`"),
        "{}",
        t[1]
    );
    assert_eq!(t[2]["error"]["kind"], "invalid-output");
    assert!(
        t[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("over its limit of 32 B; raise `limits.max-output`"),
        "{}",
        t[2]
    );
    assert_eq!(
        t[3]["status"], "succeeded",
        "a sibling of failing tasks is unaffected"
    );
}

#[test]
fn validate_reviews_limits_grants_and_imports() {
    let p = Project::new();
    std::fs::create_dir(p.path("data")).unwrap();
    p.pipeline(
        r#"
name = "review"
[defaults.limits]
memory = "16MiB"
max-stack = "1MiB"
[[phase]]
id = "one"
[[phase.task]]
id = "stats"
plugin = "{TEXT_STATS}"
grants = { http = ["example.com"] }
[[phase.task]]
id = "h"
plugin = "{HOSTILE}"
grants = { dirs = [{ host = "data", guest = "/data", mode = "rw" }], env = ["HOME"] }
limits = { fuel = 1000000 }
"#,
    );
    let out = p.output(&["validate", "pipeline.toml"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        s.contains("engine: max-stack 1 MiB, fuel metering on"),
        "{s}"
    );
    assert!(
        s.contains("capability surface: filesystem, environment, sockets, http"),
        "{s}"
    );
    assert!(
        s.contains("limits: memory 16 MiB, timeout 30s, max-output 1 MiB, fuel 1000000"),
        "{s}"
    );
    assert!(s.contains("/data (rw); env HOME"), "{s}");
    assert!(
        s.contains(
            "warning: `grants.http` is granted but the component does not import any http interface"
        ),
        "{s}"
    );
    assert!(s.contains("not granted: sockets (wasi:sockets/"), "{s}");
    assert!(s.contains("(allow with `grants.net`)"), "{s}");
    assert!(s.contains("ok (1 warning(s))"), "{s}");
}

#[test]
fn validate_rejects_a_component_importing_an_unknown_interface() {
    let p = Project::new();
    let bytes = wat::parse_str(
        r#"(component (import "acme:vault/door" (instance (export "open" (func)))))"#,
    )
    .unwrap();
    std::fs::write(p.path("odd.wasm"), bytes).unwrap();
    p.pipeline("name = \"v\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"odd.wasm\"\n");
    let out = p.output(&["validate", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("plugin `odd.wasm`")
            && err.contains("imports an interface phasegate does not provide"),
        "{err}"
    );
    assert!(err.contains("acme:vault/door"), "{err}");
}

#[test]
fn validate_rejects_a_component_of_the_wrong_shape() {
    let p = Project::new();
    // Exports `run`, but as `func()`, not the task world's `run`.
    let bytes = wat::parse_str(
        r#"(component
             (core module $m (func (export "run")))
             (core instance $i (instantiate $m))
             (func (export "run") (canon lift (core func $i "run"))))"#,
    )
    .unwrap();
    std::fs::write(p.path("shape.wasm"), bytes).unwrap();
    p.pipeline("name = \"v\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"shape.wasm\"\n");
    let out = p.output(&["validate", "pipeline.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(
        err.contains("plugin `shape.wasm`")
            && err.contains("does not match phasegate:plugin/task@0.1.0"),
        "{err}"
    );
}

#[test]
fn compile_cache_is_used_verified_and_refused_when_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    p.pipeline("name = \"c\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{TEXT_STATS}\"\n");
    let cache = p.path("cache");
    let validate = || {
        let out = p
            .command(&["validate", "pipeline.toml"])
            .env("PHASEGATE_CACHE_DIR", &cache)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = validate();
    assert!(
        first.contains(&format!("compile cache {}", cache.display())),
        "{first}"
    );
    assert!(first.contains("bytes, compiled)"), "{first}");
    assert!(validate().contains("bytes, loaded from the compile cache)"));

    // A tampered entry is not loaded: it is compiled again (and the run still works).
    let entry = walk(&cache)
        .into_iter()
        .find(|f| f.extension().is_some_and(|e| e == "cwasm"))
        .unwrap();
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();
    assert!(validate().contains("bytes, compiled)"));
    assert!(validate().contains("bytes, loaded from the compile cache)"));

    // A cache directory others can write to is not trusted at all.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = validate();
    assert!(
        refused.contains("compile cache not used") && refused.contains("closed to others"),
        "{refused}"
    );
    assert!(refused.contains("bytes, compiled)"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()))
        } else {
            out.push(e.path())
        }
    }
    out
}

#[test]
fn completions_load_in_bash_and_complete_commands_and_flags() {
    let p = Project::new();
    let script = p.output(&["completions", "bash"]);
    assert!(script.status.success());
    std::fs::write(p.path("phasegate.bash"), &script.stdout).unwrap();
    // Ask bash's completion function what it offers, as the shell would on <TAB>.
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "source phasegate.bash && COMP_WORDS=({}) && COMP_CWORD={} && _phasegate phasegate '{}' '{}' && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
                words.len() - 1,
                words[words.len() - 1],
                words[words.len() - 2],
            ))
            .current_dir(p.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let commands = complete("phasegate re");
    assert!(commands.lines().any(|l| l == "resume"), "{commands}");
    let flags = complete("phasegate run --fr");
    assert!(flags.lines().any(|l| l == "--fresh"), "{flags}");
    for shell in ["zsh", "fish"] {
        let out = p.output(&["completions", shell]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("validate"));
    }
}

#[test]
fn validate_of_a_large_phase_is_a_few_lines() {
    let p = Project::new();
    let mut toml = String::from("name = \"wide\"\n[[phase]]\nid = \"many\"\n");
    for i in 0..200 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\n"
        ));
    }
    // One task apart: its own sandbox.
    toml.push_str(
        "[[phase.task]]\nid = \"odd\"\nplugin = \"{PROBE}\"\nlimits = { memory = \"8MiB\" }\n",
    );
    p.pipeline(&toml);
    let out = p.output(&["validate", "pipeline.toml"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(s.lines().count() < 25, "{s}");
    assert!(
        s.contains("  tasks t0, t1, t2, t3, t4, t5, t6, t7, … and 192 more: "),
        "{s}"
    );
    assert!(s.contains("sandbox 1: 200 task(s), 0 gate(s)"), "{s}");
    assert!(s.contains("  task odd: "), "{s}");
    assert!(s.contains("sandbox 2: 1 task(s), 0 gate(s)"), "{s}");
    assert!(s.contains("limits: memory 8 MiB"), "{s}");
}

/// A large pipeline is read table by table (`model/src/pipeline/split.rs`): what `validate`
/// says of a task deep in it points at the task's own line, and a misspelt key there is
/// reported as for a small file.
#[test]
fn validate_of_a_large_pipeline_points_at_the_lines_of_its_tasks() {
    let p = Project::new();
    let mut toml = String::from("name = \"large\"\n[[phase]]\nid = \"one\"\n");
    for i in 0..1_500 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PATTERN_FIND}}\"\ninput = \"\"\"\n[[phase.task]]\n\"\"\"\nconfig = {{ pattern = \"x{i}\" }}\n"
        ));
        if i % 100 == 0 {
            toml.push_str("[phase.task.limits]\nmemory = \"32MiB\"\n");
        }
    }
    toml.push_str("[phase.gate]\nplugin = \"{ALL_SUCCEEDED}\"\n[[phase]]\nid = \"two\"\n");
    for i in 0..1_500 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"u{i}\"\nplugin = \"{{PATTERN_FIND}}\"\ninput = \"{{{{ phases.one.tasks.t{i}.output }}}}\"\nconfig = {{ pattern = \"y\" }}\n"
        ));
    }
    let line_of =
        |text: &str, needle: &str| text[..text.find(needle).unwrap()].matches('\n').count() + 1;
    p.pipeline(&toml);
    let out = p.output(&["validate", "pipeline.toml"]);
    assert!(out.status.success(), "{}", stderr_of(&out));

    // A config the plugin rejects, near the end: named at its own line.
    let bad = toml.replace(
        "config = { pattern = \"x1498\" }",
        "config = { pattern = \"x1498\", ignorecase = true }",
    );
    let line = line_of(&bad, "ignorecase");
    p.pipeline(&bad);
    let out = p.output(&["validate", "pipeline.toml"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "pipeline.toml:{line}: the `config` of task `t1498` in phase `one`"
        )),
        "line {line}: {err}"
    );

    // A misspelt key in the second phase: its line and column.
    let bad = toml.replace("id = \"u1400\"\n", "id = \"u1400\"\nmemroy = 1\n");
    let line = line_of(&bad, "memroy");
    p.pipeline(&bad);
    let out = p.output(&["validate", "pipeline.toml"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("pipeline.toml:{line}:1: unknown field `memroy`")),
        "line {line}: {err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn configs_are_checked_against_the_plugins_schema_before_anything_runs() {
    let p = Project::new();
    p.pipeline(
        r#"name = "schema"
[[phase]]
id = "one"
[[phase.task]]
id = "a"
plugin = "{PATTERN_FIND}"
config = { pattern = "x", ignorecase = true, max-matches = "3" }
[[phase.task]]
id = "b"
plugin = "{PATTERN_FIND}"
"#,
    );
    for args in [
        &["validate", "pipeline.toml"][..],
        &["run", "pipeline.toml"][..],
    ] {
        let out = p.output(args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("pipeline.toml:7: the `config` of task `a` in phase `one` does not match what plugin `")
                && err.contains("unknown key `ignorecase` (did you mean `ignore-case`?)")
                && err.contains("at `max-matches`: \"3\" is not of type \"integer\""),
            "{args:?}: {err}"
        );
        // A task without `config` is placed at its id.
        assert!(
            err.contains("pipeline.toml:9: the `config` of task `b` in phase `one`")
                && err.contains("\"pattern\" is a required property"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("help: it takes `ignore-case` (boolean), `max-matches` (integer), `pattern` (string)"),
            "{args:?}: {err}"
        );
    }
    // Nothing ran, nothing was recorded.
    assert!(!p.path(".phasegate/state.toml").exists());

    p.pipeline(
        "name = \"schema\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{PATTERN_FIND}\"\nconfig = { pattern = \"x\", ignore-case = true }\n",
    );
    let out = p.output(&["validate", "pipeline.toml"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        s.contains("config (checked against its schema): `ignore-case` (boolean), `max-matches` (integer), `pattern` (string)"),
        "{s}"
    );
}
