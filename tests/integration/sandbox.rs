//! The hostile-plugin suite: every attack ends in a typed failure or a denial inside the guest,
//! the host stays up, siblings finish, and the progress file stays consistent.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::harness::{Project, RunResult, by_id};

/// Runs one phase: the given hostile tasks plus a well-behaved sibling. Returns the run and the
/// final progress state, after checking what every hostile test checks.
fn attack(p: &Project, defaults: &str, tasks: &[(&str, &str)]) -> (RunResult, Value) {
    let mut toml =
        format!("name = \"hostile\"\n{defaults}\n[[phase]]\nid = \"attack\"\nconcurrency = 8\n");
    for (id, rest) in tasks {
        let plugin = if rest.contains("plugin =") {
            ""
        } else {
            "plugin = \"{HOSTILE}\"\n"
        };
        toml.push_str(&format!("[[phase.task]]\nid = \"{id}\"\n{plugin}{rest}\n"));
    }
    toml.push_str("[[phase.task]]\nid = \"sibling\"\nplugin = \"{HOSTILE}\"\nconfig = { attack = \"well-behaved\" }\n");
    p.pipeline(&toml);
    let r = p.run_json(&["run", "pipeline.toml"]);
    // The host is alive and answered with a documented exit code, not a signal or a crash.
    assert!(
        r.code == 0 || r.code == 1,
        "host exit {}: {}",
        r.code,
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert_eq!(r.of("run-finished").len(), 1, "{}", r.stderr);
    let state = p.state(".phasegate/state.toml");
    // Consistent progress: the run ended, every task has a final record.
    assert_ne!(state["status"], "running");
    for t in state["phase"][0]["task"].as_array().unwrap() {
        assert_ne!(t["status"], "pending", "{t}");
    }
    assert!(!p.path(".phasegate/state.toml.journal").exists());
    let sibling = task(&state, "sibling");
    assert_eq!(
        sibling["status"], "succeeded",
        "the sibling must be unaffected: {sibling}"
    );
    (r, state)
}

fn task<'a>(state: &'a Value, id: &str) -> &'a Value {
    by_id(&state["phase"][0]["task"], id)
}

fn failure(state: &Value, id: &str) -> (String, String) {
    let t = task(state, id);
    assert_eq!(t["status"], "failed", "{t}");
    (
        t["error"]["kind"].as_str().unwrap().to_owned(),
        t["error"]["message"].as_str().unwrap().to_owned(),
    )
}

fn output(state: &Value, id: &str) -> Value {
    let t = task(state, id);
    assert_eq!(t["status"], "succeeded", "{t}");
    serde_json::from_str(t["output"].as_str().unwrap()).unwrap()
}

fn denied(state: &Value, id: &str) -> String {
    let out = output(state, id);
    assert!(out.get("breach").is_none(), "sandbox breach in {id}: {out}");
    out["denied"]
        .as_str()
        .unwrap_or_else(|| panic!("{id}: {out}"))
        .to_owned()
}

fn logs(r: &RunResult, id: &str) -> Vec<String> {
    r.of("task-log")
        .iter()
        .filter(|e| e["task"] == id)
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn infinite_loop_is_stopped_by_the_wall_clock() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[(
            "spin",
            "config = { attack = \"loop\" }\ntimeout = \"300ms\"",
        )],
    );
    let (kind, msg) = failure(&state, "spin");
    assert_eq!(kind, "timeout");
    assert!(
        msg.contains("task `spin` in phase `attack`")
            && msg.contains("exceeded its timeout of 300ms; if it needs longer, raise `timeout`"),
        "{msg}"
    );
}

#[test]
fn infinite_loop_is_stopped_by_fuel() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[(
            "spin",
            "config = { attack = \"loop\" }\nlimits = { fuel = 50_000_000 }",
        )],
    );
    let (kind, msg) = failure(&state, "spin");
    assert_eq!(kind, "limit");
    assert!(
        msg.contains("ran out of fuel: its budget of 50000000 units is spent; raise `limits.fuel`"),
        "{msg}"
    );
}

#[test]
fn blocked_in_a_host_call_still_times_out() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[(
            "sleeper",
            "config = { attack = \"sleep-forever\" }\ntimeout = \"200ms\"",
        )],
    );
    assert_eq!(failure(&state, "sleeper").0, "timeout");
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[(
            "bomb",
            "config = { attack = \"memory-bomb\" }\nlimits = { memory = \"16MiB\" }\nretries = 3",
        )],
    );
    let (kind, msg) = failure(&state, "bomb");
    assert_eq!(kind, "limit");
    assert!(
        msg.contains("task `bomb` in phase `attack`")
            && msg.contains("exceeded its memory limit of 16 MiB")
            && msg.contains("raise `limits.memory`"),
        "{msg}"
    );
    assert_eq!(
        task(&state, "bomb")["attempts"],
        1,
        "limits are not retried by default"
    );
}

#[test]
fn huge_initial_memory_is_refused_at_instantiation() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "[defaults.limits]\nmemory = \"32MiB\"",
        &[("big", "plugin = \"{BIG_MEMORY}\"")],
    );
    let (kind, msg) = failure(&state, "big");
    assert_eq!(kind, "limit");
    assert!(msg.contains("exceeded its memory limit of 32 MiB"), "{msg}");
}

#[test]
fn deep_recursion_hits_the_stack_limit() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "[defaults.limits]\nmax-stack = \"256KiB\"",
        &[("deep", "config = { attack = \"recursion\" }")],
    );
    let (kind, msg) = failure(&state, "deep");
    assert_eq!(kind, "limit");
    assert!(
        msg.contains("exceeded its stack limit of 256 KiB") && msg.contains("`max-stack`"),
        "{msg}"
    );
}

#[test]
fn giant_output_is_rejected() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[(
            "huge",
            "config = { attack = \"giant-output\" }\nlimits = { max-output = \"1MiB\" }",
        )],
    );
    let (kind, msg) = failure(&state, "huge");
    assert_eq!(kind, "invalid-output");
    assert!(
        msg.contains("over its limit of 1 MiB; raise `limits.max-output`"),
        "{msg}"
    );
}

#[test]
fn log_flood_is_bounded() {
    let p = Project::new();
    let (r, state) = attack(
        &p,
        "",
        &[(
            "chatty",
            "config = { attack = \"log-flood\" }\nlimits = { log-records = 50 }",
        )],
    );
    assert_eq!(output(&state, "chatty"), "flooded");
    let lines = logs(&r, "chatty");
    assert!(lines.len() <= 52, "{} log lines kept", lines.len());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("log limit reached (50 records")),
        "{lines:?}"
    );
    // The bounded log is kept with the task's result in the progress file.
    let kept: Vec<&str> = task(&state, "chatty")["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), lines.len());
    assert_eq!(kept[0], "info: invoked attack/chatty attempt 1");
    assert!(
        kept.last().unwrap().starts_with("warn: log limit reached"),
        "{kept:?}"
    );
}

#[test]
fn stdout_flood_is_bounded_and_does_not_fail_the_task() {
    let p = Project::new();
    let (r, state) = attack(
        &p,
        "",
        &[(
            "printer",
            "config = { attack = \"stdout-flood\" }\nlimits = { max-log = \"16KiB\" }",
        )],
    );
    assert_eq!(output(&state, "printer"), "printed 16 MiB");
    let lines = logs(&r, "printer");
    let kept: usize = r
        .of("task-log")
        .iter()
        .filter(|e| e["task"] == "printer" && e["level"] == "stdout")
        .map(|e| e["message"].as_str().unwrap().len() + 1)
        .sum();
    assert!(kept <= 16 << 10, "kept {kept} bytes");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("bytes of stdout dropped past the limit of 16 KiB")),
        "{lines:?}"
    );
}

#[test]
fn trap_and_panic_are_typed_traps() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[
            ("trap", "config = { attack = \"trap\" }"),
            ("panic", "config = { attack = \"panic\" }"),
        ],
    );
    let (kind, msg) = failure(&state, "trap");
    assert_eq!(kind, "trap");
    assert!(msg.contains("unreachable"), "{msg}");
    let (kind, msg) = failure(&state, "panic");
    assert_eq!(kind, "trap");
    assert!(msg.contains("hostile plugin panics on purpose"), "{msg}");
    // The guest's own message comes first; the backtrace is in the log, not the message.
    assert!(
        msg.contains("trapped: hostile plugin panics on purpose (panicked at ")
            && msg.contains("src/lib.rs:"),
        "{msg}"
    );
    assert!(!msg.contains("wasm backtrace"), "{msg}");
    let log = task(&state, "panic")["log"].to_string();
    assert!(log.contains("debug: wasm backtrace: "), "{log}");
}

#[test]
fn too_many_instances_is_a_limit() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[(
            "greedy",
            "config = { attack = \"well-behaved\" }\nlimits = { instances = 1 }",
        )],
    );
    let (kind, msg) = failure(&state, "greedy");
    assert_eq!(kind, "limit");
    assert!(msg.contains("raise `limits.instances`"), "{msg}");
}

/// A host directory tree: `granted/` (with a file and escape links) beside `secret.txt`.
fn host_tree(p: &Project) {
    std::fs::create_dir_all(p.path("granted/sub")).unwrap();
    std::fs::write(p.path("granted/hello.txt"), "hello from the grant").unwrap();
    std::fs::write(p.path("secret.txt"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink("../secret.txt", p.path("granted/link")).unwrap();
    std::os::unix::fs::symlink(p.path("secret.txt"), p.path("granted/abs-link")).unwrap();
}

#[test]
fn files_are_denied_without_a_grant_and_escapes_are_refused() {
    let p = Project::new();
    host_tree(&p);
    let ro = "grants = { dirs = [{ host = \"granted\", guest = \"/data\" }] }";
    let (_, state) = attack(
        &p,
        "",
        &[
            (
                "no-grant",
                "config = { attack = \"read-file\", path = \"/etc/passwd\" }",
            ),
            (
                "no-grant-secret",
                &format!(
                    "config = {{ attack = \"read-file\", path = \"{}\" }}",
                    p.path("secret.txt").display()
                ),
            ),
            (
                "granted",
                &format!("config = {{ attack = \"read-file\", path = \"/data/hello.txt\" }}\n{ro}"),
            ),
            (
                "dotdot",
                &format!(
                    "config = {{ attack = \"read-file\", path = \"/data/../secret.txt\" }}\n{ro}"
                ),
            ),
            (
                "dotdot-deep",
                &format!(
                    "config = {{ attack = \"read-file\", path = \"/data/sub/../../secret.txt\" }}\n{ro}"
                ),
            ),
            (
                "symlink",
                &format!("config = {{ attack = \"read-file\", path = \"/data/link\" }}\n{ro}"),
            ),
            (
                "abs-symlink",
                &format!("config = {{ attack = \"read-file\", path = \"/data/abs-link\" }}\n{ro}"),
            ),
            (
                "list-root",
                &format!("config = {{ attack = \"list-dir\", path = \"/\" }}\n{ro}"),
            ),
        ],
    );
    for id in [
        "no-grant",
        "no-grant-secret",
        "dotdot",
        "dotdot-deep",
        "symlink",
        "abs-symlink",
        "list-root",
    ] {
        denied(&state, id);
    }
    // The positive control: the grant really works, so the denials above are the sandbox's.
    assert_eq!(output(&state, "granted")["breach"], "hello from the grant");
}

#[test]
fn read_only_grants_refuse_writes_and_read_write_grants_allow_them() {
    let p = Project::new();
    host_tree(&p);
    let (_, state) = attack(
        &p,
        "",
        &[
            (
                "write-ro",
                "config = { attack = \"write-file\", path = \"/data/new.txt\" }\ngrants = { dirs = [{ host = \"granted\", guest = \"/data\", mode = \"ro\" }] }",
            ),
            (
                "write-rw",
                "config = { attack = \"write-file\", path = \"/out/new.txt\" }\ngrants = { dirs = [{ host = \"granted/sub\", guest = \"/out\", mode = \"rw\" }] }",
            ),
            (
                "write-escape",
                "config = { attack = \"write-file\", path = \"/out/../escaped.txt\" }\ngrants = { dirs = [{ host = \"granted/sub\", guest = \"/out\", mode = \"rw\" }] }",
            ),
        ],
    );
    denied(&state, "write-ro");
    assert!(!p.path("granted/new.txt").exists());
    denied(&state, "write-escape");
    assert!(!p.path("granted/escaped.txt").exists());
    output(&state, "write-rw");
    assert_eq!(
        std::fs::read_to_string(p.path("granted/sub/new.txt")).unwrap(),
        "pwned"
    );
}

#[test]
fn writes_past_the_quota_fail_in_the_guest_and_the_task_names_the_limit() {
    let p = Project::new();
    let rw = |dir: &str| {
        std::fs::create_dir_all(p.path(dir)).unwrap();
        format!(
            "grants = {{ dirs = [{{ host = \"{dir}\", guest = \"/out\", mode = \"rw\" }}] }}\nlimits = {{ max-written = \"1MiB\" }}"
        )
    };
    let (_, state) = attack(
        &p,
        "",
        &[
            (
                "stream",
                &format!(
                    "config = {{ attack = \"fill-disk\", path = \"/out/big\", bytes = 4_194_304 }}\n{}",
                    rw("w-stream")
                ),
            ),
            (
                "positioned",
                &format!(
                    "config = {{ attack = \"fill-disk-at\", path = \"/out/big\", bytes = 4_194_304 }}\n{}",
                    rw("w-at")
                ),
            ),
            (
                "raw-stream",
                &format!(
                    "config = {{ attack = \"fill-disk-at\", var = \"stream\", path = \"/out/big\", bytes = 4_194_304 }}\n{}",
                    rw("w-raw")
                ),
            ),
            (
                "read-only",
                &format!(
                    "config = {{ attack = \"fill-disk-at\", var = \"read-only\", path = \"/out/big\", bytes = 4_194_304 }}\n{}",
                    rw("w-ro").replace("1MiB", "16KiB")
                ),
            ),
            (
                "grow",
                &format!(
                    "config = {{ attack = \"grow-file\", path = \"/out/big\", bytes = 1_073_741_824 }}\n{}",
                    rw("w-grow")
                ),
            ),
            (
                "within",
                &format!(
                    "config = {{ attack = \"fill-disk\", path = \"/out/big\", bytes = 524_288 }}\n{}",
                    rw("w-within")
                ),
            ),
        ],
    );
    for (id, dir, guest_saw) in [
        ("stream", "w-stream", "write failed"),
        // The guest itself sees `quota` where it asks WASI directly; wasi-libc (Rust's std,
        // C, Python) reports a failed stream write as EIO whatever the cause.
        ("positioned", "w-at", "name: \"quota\""),
        (
            "raw-stream",
            "w-raw",
            "Some(ErrorCode { code: 6, name: \"quota\"",
        ),
        ("grow", "w-grow", "set_len failed"),
    ] {
        let (kind, msg) = failure(&state, id);
        assert_eq!(kind, "limit", "{id}: {msg}");
        assert!(
            msg.contains("reached its write limit of 1 MiB")
                && msg.contains("raise `limits.max-written`")
                && msg.contains(guest_saw),
            "{id}: {msg}"
        );
        // What reached the disk stayed within the quota.
        let on_disk = std::fs::metadata(p.path(&format!("{dir}/big")))
            .unwrap()
            .len();
        assert!(on_disk <= 1 << 20, "{id}: {on_disk} bytes on disk");
        let usage = &task(&state, id)["usage"];
        assert!(
            usage["written"].as_u64().unwrap_or(0) <= 1 << 20,
            "{id}: {usage}"
        );
        // A limit is not retried by default: one attempt.
        assert_eq!(task(&state, id)["attempts"], 1);
    }
    // A write that cannot succeed anyway (a descriptor opened for reading) is not counted: it
    // fails with its own error, not the quota's.
    let (kind, msg) = failure(&state, "read-only");
    assert_eq!(kind, "failed", "{msg}");
    assert!(
        !msg.contains("quota") && !msg.contains("write limit"),
        "{msg}"
    );
    // A task within its quota wrote what it meant to, and its usage says so.
    assert_eq!(output(&state, "within")["wrote"], 524_288);
    assert_eq!(
        std::fs::metadata(p.path("w-within/big")).unwrap().len(),
        524_288
    );
    let usage = &task(&state, "within")["usage"];
    assert_eq!(usage["written"], 524_288, "{usage}");
    assert_eq!(usage["opened"], 1, "{usage}");
}

#[test]
fn a_gate_reads_what_each_task_used_through_the_contract() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("out")).unwrap();
    let rw = "grants = { dirs = [{ host = \"out\", guest = \"/out\", mode = \"rw\" }] }";
    p.pipeline(&format!(
        r#"
name = "budget"
[[phase]]
id = "write"
gate = {{ plugin = "{{ECHO_GATE}}", config = {{ max-written = 100_000 }} }}
[[phase.task]]
id = "small"
plugin = "{{HOSTILE}}"
config = {{ attack = "fill-disk", path = "/out/small", bytes = 1000 }}
{rw}
[[phase.task]]
id = "big"
plugin = "{{HOSTILE}}"
config = {{ attack = "fill-disk", path = "/out/big", bytes = 300_000 }}
{rw}
[[phase.task]]
id = "none"
plugin = "{{HOSTILE}}"
config = {{ attack = "well-behaved" }}
"#
    ));
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let state = p.state(".phasegate/state.toml");
    let verdict = &state["phase"][0]["verdict"];
    assert_eq!(verdict["kind"], "fail", "{verdict}");
    assert_eq!(verdict["reason"], "wrote more than allowed: big");
    let evidence: Value = serde_json::from_str(verdict["evidence"].as_str().unwrap()).unwrap();
    // The figures the gate read are the ones recorded: a task that wrote nothing reads 0.
    assert_eq!(
        evidence["written"],
        serde_json::json!({"small": 1000, "big": 300_000, "none": 0})
    );

    // A gate's author gets the same figures: the recorded fixture carries each task's usage,
    // and the gate judges the replay as it judged the run (without them it would pass).
    let gate = phasegate_test_artifacts::ALL
        .iter()
        .find(|(name, _)| *name == "ECHO_GATE")
        .unwrap()
        .1;
    let state = ".phasegate/state.toml";
    let record = [
        "test",
        gate,
        "--fixtures",
        "fixtures",
        "--record",
        state,
        "--phase",
        "write",
    ];
    let out = p.output(&record);
    assert!(out.status.success(), "{}", crate::harness::stderr_of(&out));
    let fixture = std::fs::read_to_string(p.path("fixtures/write-gate.toml")).unwrap();
    assert!(fixture.contains("written = 300000"), "{fixture}");
    let out = p.output(&["test", gate, "--fixtures", "fixtures"]);
    assert!(out.status.success(), "{}", crate::harness::stderr_of(&out));
}

#[test]
fn environment_is_empty_unless_granted() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[
            ("home", "config = { attack = \"env\", var = \"HOME\" }"),
            ("path", "config = { attack = \"env\", var = \"PATH\" }"),
            (
                "granted",
                "config = { attack = \"env-all\" }\ngrants = { env = [\"HOME\"], env-set = { MODE = \"ci\" } }",
            ),
        ],
    );
    denied(&state, "home");
    denied(&state, "path");
    assert_eq!(
        output(&state, "granted")["vars"],
        serde_json::json!(["HOME", "MODE"])
    );
}

#[test]
fn stdin_is_closed() {
    let p = Project::new();
    let (_, state) = attack(&p, "", &[("stdin", "config = { attack = \"read-stdin\" }")]);
    denied(&state, "stdin");
}

/// A loopback TCP server that counts connections (and answers HTTP 200).
fn server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(500)));
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (addr, count)
}

#[test]
fn sockets_reach_only_allow_listed_addresses() {
    let (denied_addr, denied_count) = server();
    let (allowed_addr, allowed_count) = server();
    let p = Project::new();
    let (r, state) = attack(
        &p,
        "",
        &[
            (
                "no-grant",
                &format!("config = {{ attack = \"connect\", addr = \"{denied_addr}\" }}"),
            ),
            (
                "other-grant",
                &format!(
                    "config = {{ attack = \"connect\", addr = \"{denied_addr}\" }}\ngrants = {{ net = [\"{allowed_addr}\"] }}"
                ),
            ),
            (
                "granted",
                &format!(
                    "config = {{ attack = \"connect\", addr = \"{allowed_addr}\" }}\ngrants = {{ net = [\"{allowed_addr}\"] }}"
                ),
            ),
        ],
    );
    denied(&state, "no-grant");
    denied(&state, "other-grant");
    assert_eq!(
        output(&state, "granted")["breach"],
        format!("connected to {allowed_addr}"),
        "{}",
        output(&state, "granted")
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        denied_count.load(Ordering::SeqCst),
        0,
        "the refused server saw a connection"
    );
    assert_eq!(allowed_count.load(Ordering::SeqCst), 1);
    let hint = format!(
        "denied TCP connect to {denied_addr}: no grant allows it; add `grants.net = [\"{denied_addr}\"]`"
    );
    assert!(
        logs(&r, "no-grant").iter().any(|l| l.contains(&hint)),
        "{:?}",
        logs(&r, "no-grant")
    );
}

#[test]
fn http_reaches_only_allow_listed_hosts() {
    let (denied_addr, denied_count) = server();
    let (allowed_addr, allowed_count) = server();
    let p = Project::new();
    let (r, state) = attack(
        &p,
        "",
        &[
            (
                "no-grant",
                &format!("config = {{ attack = \"http\", url = \"http://{denied_addr}/x\" }}"),
            ),
            (
                "granted",
                &format!(
                    "config = {{ attack = \"http\", url = \"http://{allowed_addr}/x\" }}\ngrants = {{ http = [\"{allowed_addr}\"] }}"
                ),
            ),
        ],
    );
    assert!(denied(&state, "no-grant").contains("HttpRequestDenied"));
    assert_eq!(output(&state, "granted")["breach"], "HTTP 200");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        denied_count.load(Ordering::SeqCst),
        0,
        "the refused server saw a connection"
    );
    assert_eq!(allowed_count.load(Ordering::SeqCst), 1);
    assert!(
        logs(&r, "no-grant")
            .iter()
            .any(|l| l.contains(&format!("add `grants.http = [\"{denied_addr}\"]`"))),
        "{:?}",
        logs(&r, "no-grant")
    );
}

#[test]
fn deterministic_clocks_and_random_repeat() {
    let p = Project::new();
    let det = "config = { attack = \"clock\" }\ngrants = { deterministic = true, seed = 7 }";
    let (_, state) = attack(
        &p,
        "",
        &[
            ("a", det),
            ("b", det),
            ("real", "config = { attack = \"clock\" }"),
        ],
    );
    let (a, b, real) = (
        output(&state, "a"),
        output(&state, "b"),
        output(&state, "real"),
    );
    assert_eq!(a, b);
    assert_eq!(a["wall"], 946_684_800);
    assert!(real["wall"].as_u64().unwrap() > 1_700_000_000);
    assert_ne!(real["random"], a["random"]);
}

#[test]
fn many_hostile_tasks_at_once() {
    let (addr, count) = server();
    let p = Project::new();
    host_tree(&p);
    let (_, state) = attack(
        &p,
        "[defaults.limits]\nmemory = \"24MiB\"\ntimeout = \"2s\"",
        &[
            (
                "loop",
                "config = { attack = \"loop\" }\ntimeout = \"300ms\"",
            ),
            (
                "fuel",
                "config = { attack = \"loop\" }\nlimits = { fuel = 20_000_000 }",
            ),
            ("bomb", "config = { attack = \"memory-bomb\" }"),
            ("big", "plugin = \"{BIG_MEMORY}\""),
            ("deep", "config = { attack = \"recursion\" }"),
            (
                "huge",
                "config = { attack = \"giant-output\", bytes = 2_000_000 }\nlimits = { max-output = \"1MiB\" }",
            ),
            ("trap", "config = { attack = \"trap\" }"),
            ("panic", "config = { attack = \"panic\" }"),
            ("flood", "config = { attack = \"log-flood\" }"),
            ("print", "config = { attack = \"stdout-flood\" }"),
            (
                "file",
                "config = { attack = \"read-file\", path = \"/etc/passwd\" }",
            ),
            (
                "escape",
                "config = { attack = \"read-file\", path = \"/data/../secret.txt\" }\ngrants = { dirs = [{ host = \"granted\", guest = \"/data\" }] }",
            ),
            (
                "net",
                &format!("config = {{ attack = \"connect\", addr = \"{addr}\" }}"),
            ),
            ("friend", "config = { attack = \"well-behaved\" }"),
        ],
    );
    let kinds: Vec<(&str, &str)> = vec![
        ("loop", "timeout"),
        ("fuel", "limit"),
        ("bomb", "limit"),
        ("big", "limit"),
        ("deep", "limit"),
        ("huge", "invalid-output"),
        ("trap", "trap"),
        ("panic", "trap"),
    ];
    for (id, kind) in kinds {
        assert_eq!(failure(&state, id).0, kind, "{id}");
    }
    for id in ["file", "escape", "net"] {
        denied(&state, id);
    }
    for id in ["flood", "print", "friend"] {
        output(&state, id);
    }
    assert_eq!(count.load(Ordering::SeqCst), 0);
    assert_eq!(
        state["status"], "failed",
        "the default gate fails a phase with failed tasks"
    );
}

#[test]
fn table_growth_hits_the_table_limit() {
    let p = Project::new();
    let wat = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/guests-wat/table-bomb.wat");
    std::fs::write(p.path("table-bomb.wasm"), wat::parse_file(wat).unwrap()).unwrap();
    let (_, state) = attack(
        &p,
        "",
        &[(
            "tables",
            "plugin = \"table-bomb.wasm\"\nlimits = { table-elements = 10_000 }",
        )],
    );
    let (kind, msg) = failure(&state, "tables");
    assert_eq!(kind, "limit");
    assert!(
        msg.contains("task `tables` in phase `attack`")
            && msg.contains("grew a table to 1000001 elements, over the limit of 10000"),
        "{msg}"
    );
}

const EXPLICIT: &str = "[engine]\nbounds-checks = \"explicit\"";

/// Runs, under each bounds-check mode, a sequential phase of three rounds of two hostile tasks,
/// `first` then `then`, each given as (id prefix, config) and numbered by round (`grow0`,
/// `read0`, `grow1`, ...): every `then` instance takes the pool slot that the `first` before it
/// just left. Returns, per mode, the mode, the run's exit code, its stderr and progress file.
fn one_slot_after_another(
    first: (&str, &str),
    then: (&str, &str),
) -> Vec<(&'static str, i32, String, Value)> {
    ["", EXPLICIT]
        .into_iter()
        .map(|engine| {
            let p = Project::new();
            let mut toml = format!(
                "name = \"slots\"\n{engine}\n[[phase]]\nid = \"attack\"\nparallel = false\n"
            );
            for i in 0..3 {
                for (id, config) in [first, then] {
                    toml.push_str(&format!(
                        "[[phase.task]]\nid = \"{id}{i}\"\nplugin = \"{{HOSTILE}}\"\nconfig = {config}\n"
                    ));
                }
            }
            p.pipeline(&toml);
            let r = p.run_json(&["run", "pipeline.toml"]);
            (engine, r.code, r.stderr, p.state(".phasegate/state.toml"))
        })
        .collect()
}

#[test]
fn reads_past_the_end_trap_even_in_a_slot_an_earlier_instance_grew() {
    // The reads come right after an instance of the same plugin grew its memory by 8 MiB and
    // wrote to the end.
    for (engine, code, stderr, state) in one_slot_after_another(
        ("grow", "{ attack = \"grow\", bytes = 8388608 }"),
        ("read", "{ attack = \"read-past-end\" }"),
    ) {
        assert_eq!(code, 1, "{engine}: {stderr}");
        for i in 0..3 {
            assert_eq!(
                output(&state, &format!("grow{i}"))["grown"],
                128,
                "{engine}"
            );
            let (kind, msg) = failure(&state, &format!("read{i}"));
            assert_eq!(kind, "trap", "{engine}: {msg}");
            assert!(
                msg.contains("out of bounds memory access"),
                "{engine}: {msg}"
            );
        }
    }
}

#[test]
fn a_task_never_reads_what_an_earlier_task_scattered_over_its_memory() {
    // `scatter` marks every other 4 KiB page of 256 KiB of its memory image and of 4 MiB it
    // grows: ~560 separate dirty runs, many more than one pass of the pool's page scan reports,
    // so the slot comes back pristine only if the scan goes on to the end (vendor/README.md).
    for (engine, code, stderr, state) in one_slot_after_another(
        ("scatter", "{ attack = \"scatter\", bytes = 4194304 }"),
        ("snoop", "{ attack = \"snoop\", bytes = 4194304 }"),
    ) {
        assert_eq!(code, 0, "{engine}: {stderr}");
        for i in 0..3 {
            // 32 pages of the image, 512 of the grown memory.
            assert_eq!(
                output(&state, &format!("scatter{i}"))["scattered"],
                544,
                "{engine}"
            );
            let seen = output(&state, &format!("snoop{i}"));
            assert_eq!(seen["clean"], 64 + 1024, "{engine}: snoop{i} saw {seen}");
        }
    }
}

#[test]
fn explicit_bounds_checks_keep_every_limit_and_trap() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        &format!("{EXPLICIT}\n[defaults.limits]\nmax-stack = \"256KiB\""),
        &[
            ("trap", "config = { attack = \"trap\" }"),
            ("panic", "config = { attack = \"panic\" }"),
            ("past-end", "config = { attack = \"read-past-end\" }"),
            (
                "bomb",
                "config = { attack = \"memory-bomb\" }\nlimits = { memory = \"16MiB\" }",
            ),
            ("deep", "config = { attack = \"recursion\" }"),
            (
                "spin",
                "config = { attack = \"loop\" }\ntimeout = \"300ms\"",
            ),
        ],
    );
    let expect = [
        ("trap", "trap", "unreachable"),
        ("panic", "trap", "hostile plugin panics on purpose"),
        ("past-end", "trap", "out of bounds memory access"),
        ("bomb", "limit", "exceeded its memory limit of 16 MiB"),
        ("deep", "limit", "exceeded its stack limit of 256 KiB"),
        ("spin", "timeout", "exceeded its timeout of 300ms"),
    ];
    for (id, want_kind, want_text) in expect {
        let (kind, msg) = failure(&state, id);
        assert_eq!(kind, want_kind, "{id}: {msg}");
        assert!(msg.contains(want_text), "{id}: {msg}");
    }
}

/// Runs `phasegate ARGS` with the descriptor limits `soft`/`hard` (as `ulimit -n` sets them).
fn with_nofile(p: &Project, soft: u32, hard: u32, args: &str) -> std::process::Output {
    let mut cmd = p.command(&[]);
    let program = cmd.get_program().to_owned();
    cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" {args}"
        ))
        .arg(program)
        .current_dir(p.dir.path())
        .env(
            "PHASEGATE_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-cache"),
        );
    cmd.output().unwrap()
}

#[test]
fn hoarding_descriptors_is_a_limit_and_starves_no_sibling_nor_the_progress_file() {
    let p = Project::new();
    host_tree(&p);
    let ro = "grants = { dirs = [{ host = \"granted\", guest = \"/data\" }] }";
    let mut toml = String::from("name = \"hoard\"\n[[phase]]\nid = \"attack\"\nconcurrency = 6\n");
    for (id, attack) in [
        ("files-1", "hoard-files"),
        ("files-2", "hoard-files"),
        ("sockets", "hoard-sockets"),
    ] {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"{id}\"\nplugin = \"{{HOSTILE}}\"\nconfig = {{ attack = \"{attack}\", path = \"/data/hello.txt\" }}\n{ro}\n"
        ));
    }
    for i in 0..40 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"sibling-{i}\"\nplugin = \"{{HOSTILE}}\"\nconfig = {{ attack = \"read-file\", path = \"/data/hello.txt\" }}\n{ro}\n"
        ));
    }
    p.pipeline(&toml);
    // A soft limit of 512 and a hard one of 4096: three hoarders held to 256 each would use
    // 768 descriptors, more than the soft limit, so the run also shows that phasegate raised
    // its soft limit to the hard one. Without the per-instance limit they would take all 4096.
    let out = with_nofile(&p, 512, 4096, "run pipeline.toml --format json");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let state = p.state(".phasegate/state.toml");
    assert_eq!(state["status"], "failed");
    for i in 0..40 {
        let sibling = task(&state, &format!("sibling-{i}"));
        assert_eq!(sibling["status"], "succeeded", "{sibling}");
        assert_eq!(
            output(&state, &format!("sibling-{i}"))["breach"],
            "hello from the grant"
        );
    }
    for id in ["files-1", "files-2", "sockets"] {
        let (kind, msg) = failure(&state, id);
        assert_eq!(kind, "limit", "{id}: {msg}");
        assert!(
            msg.contains("more than 256 files, directories, sockets or streams")
                && msg.contains("raise `limits.descriptors`"),
            "{id}: {msg}"
        );
        // Each open before the refusal is in the attempt's usage.
        let opened = task(&state, id)["usage"]["opened"].as_u64().unwrap_or(0);
        assert!((200..=256).contains(&opened), "{id}: opened {opened}");
    }
    // The journal was folded into the snapshot at the end: its writes were never refused.
    assert!(!p.path(".phasegate/state.toml.journal").exists());

    // The limit is the pipeline's to set: a hoarder allowed 300 opens its 300.
    p.pipeline(&toml.replacen(
        "config = { attack = \"hoard-files\", path = \"/data/hello.txt\" }",
        "config = { attack = \"hoard-files\", path = \"/data/hello.txt\", bytes = 300 }\nlimits = { descriptors = 320 }",
        1,
    ));
    let out = with_nofile(&p, 512, 4096, "run pipeline.toml --fresh --format json");
    assert_eq!(out.status.code(), Some(1));
    let state = p.state(".phasegate/state.toml");
    assert_eq!(output(&state, "files-1")["opened"], 300);
}

#[test]
fn a_guests_own_faults_are_not_blamed_on_the_host() {
    let p = Project::new();
    let (_, state) = attack(
        &p,
        "",
        &[
            ("exit", "config = { attack = \"exit\" }"),
            ("bad-utf8", "config = { attack = \"bad-utf8\" }"),
            (
                "big-hostcall",
                "config = { attack = \"big-hostcall\", bytes = 140_000_000 }\nlimits = { memory = \"600MiB\", max-log = \"1KiB\" }",
            ),
        ],
    );
    let (kind, msg) = failure(&state, "exit");
    assert_eq!(
        (
            kind.as_str(),
            msg.contains("called exit(1) instead of returning a result")
        ),
        ("trap", true),
        "{msg}"
    );
    let (kind, msg) = failure(&state, "bad-utf8");
    assert_eq!(
        (
            kind.as_str(),
            msg.contains("a string that is not valid UTF-8")
        ),
        ("invalid-output", true),
        "{msg}"
    );
    let (kind, msg) = failure(&state, "big-hostcall");
    assert_eq!(
        (
            kind.as_str(),
            msg.contains("passed more than 128 MiB to the host in one call")
        ),
        ("limit", true),
        "{msg}"
    );
}

#[test]
fn long_failure_messages_and_reasons_are_bounded_naming_the_limit() {
    let p = Project::new();
    let long = "echo ".repeat(50_000); // 250 KB
    let (r, state) = attack(
        &p,
        "",
        &[(
            "echo",
            &format!("plugin = \"{{PROBE}}\"\nconfig = {{ fail = \"{long}\" }}"),
        )],
    );
    let (kind, msg) = failure(&state, "echo");
    assert_eq!(kind, "failed");
    assert!(msg.len() < 5_000, "{} bytes kept", msg.len());
    assert!(
        msg.ends_with(
            "… [cut: 250000 bytes in all; messages and reasons are kept up to 4096 bytes]"
        ),
        "{}",
        &msg[msg.len() - 120..]
    );
    let finished = r.of("task-finished");
    let event = finished.iter().find(|e| e["task"] == "echo").unwrap();
    assert!(event["error"]["message"].as_str().unwrap().len() < 5_000);
    let reason = state["phase"][0]["verdict"]["reason"].as_str().unwrap();
    assert!(reason.len() < 1_000, "{reason}");
}
