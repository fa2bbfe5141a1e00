//! Many machines: a real `nats-server` (JetStream, file storage) on loopback, real
//! `phasegate worker` processes, and the controller through the CLI with `--nats`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Project, by_id, next_event, normalized};

/// A JetStream server on a free loopback port, storing in a temporary folder; killed on drop.
struct Nats {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        assert!(
            Path::new("/usr/sbin/nats-server").exists() || which("nats-server"),
            "nats-server is not installed: `apt-get install nats-server` (scripts/setup-guest-toolchain installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Self::serve(port, dir.path());
        Nats { child, port, dir }
    }

    fn serve(port: u16, dir: &Path) -> Child {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and storage.
    fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = Self::serve(self.port, self.dir.path());
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A `phasegate worker` process; the keys of the attempts it ran are collected from its
/// output. Killed on drop.
struct Worker {
    child: Child,
    ran: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    fn start(p: &Project, nats: &Nats, name: &str, extra: &[&str]) -> Worker {
        let components = p.path(&format!("components-{name}"));
        let mut args: Vec<String> = vec![
            "worker".into(),
            "--nats".into(),
            nats.url(),
            "--name".into(),
            name.into(),
            "--components".into(),
            components.display().to_string(),
        ];
        if !extra.contains(&"--concurrency") {
            args.extend(["--concurrency".into(), "2".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = p
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start phasegate worker");
        let stderr = child.stderr.take().unwrap();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let collected = ran.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("worker ") {
                    let _ = ready_tx.send(());
                }
                if let Some(rest) = line.strip_prefix("ran ") {
                    let key = rest.split(' ').next().unwrap_or_default().to_owned();
                    collected.lock().unwrap().push(key);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the worker did not get ready");
        Worker { child, ran }
    }

    fn ran(&self) -> Vec<String> {
        self.ran.lock().unwrap().clone()
    }
}

/// Every attempt the workers ran, once their output has caught up with `n` (a worker prints
/// an attempt after publishing its result, so the run can end before the line is read).
fn ran_by(workers: &[&Worker], n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ran: Vec<String> = workers.iter().flat_map(|w| w.ran()).collect();
        if ran.len() >= n || Instant::now() > deadline {
            ran.sort();
            return ran;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three phases: parallel probes, a sequential phase reading them, text statistics; gates
/// between them.
const THREE_PHASES: &str = r#"
name = "spread"
[defaults]
retry-backoff = "10ms"
[[phase]]
id = "fan"
concurrency = 4
gate = { plugin = "{ALL_SUCCEEDED}" }
[[phase.task]]
id = "a"
plugin = "{PROBE}"
input = "alpha"
[[phase.task]]
id = "b"
plugin = "{PROBE}"
input = "beta"
config = { fail-until-attempt = 2 }
retries = 1
[[phase.task]]
id = "c"
plugin = "{PROBE}"
input = "gamma"
[[phase.task]]
id = "d"
plugin = "{PROBE}"
input = "delta"

[[phase]]
id = "join"
parallel = false
[[phase.task]]
id = "first"
plugin = "{PROBE}"
input = "{{ phases.fan.tasks.a.output.input }}+{{ phases.fan.tasks.b.output.input }}"
[[phase.task]]
id = "second"
plugin = "{PROBE}"
input = "{{ phases.join.tasks.first.output.input }}!"

[[phase]]
id = "count"
[[phase.task]]
id = "stats"
plugin = "{TEXT_STATS}"
input = "{{ phases.join.tasks.second.output.input }} and more words here"
"#;

/// The progress file without what differs between runs (ids, times, workers).
fn comparable(state: Value) -> Value {
    let mut state = normalized(state);
    state.as_object_mut().unwrap().remove("pipeline-digest");
    for phase in state["phase"].as_array_mut().unwrap() {
        for task in phase["task"].as_array_mut().unwrap() {
            task.as_object_mut().unwrap().remove("worker");
            task.as_object_mut().unwrap().remove("log");
        }
    }
    state
}

#[test]
fn two_workers_run_a_three_phase_pipeline_as_a_local_run_does() {
    let nats = Nats::start();
    let p = Project::new();
    p.pipeline(THREE_PHASES);
    let local = p.run_json(&["run", "pipeline.toml", "--state", "local.toml"]);
    assert_eq!(local.code, 0, "{}", local.stderr);

    let w1 = Worker::start(&p, &nats, "w1", &[]);
    let w2 = Worker::start(&p, &nats, "w2", &[]);
    // Every task on the workers: none from the result cache the local run filled.
    let remote = p.run_json(&[
        "run",
        "pipeline.toml",
        "--state",
        "remote.toml",
        "--nats",
        &nats.url(),
        "--no-cache",
    ]);
    assert_eq!(remote.code, 0, "{}", remote.stderr);
    let state = p.state("remote.toml");
    assert_eq!(
        comparable(state.clone()),
        comparable(p.state("local.toml")),
        "the progress file through NATS differs from a local run's"
    );
    // Every task was recorded with the worker that ran it, and the events say so too.
    for phase in state["phase"].as_array().unwrap() {
        for task in phase["task"].as_array().unwrap() {
            let worker = task["worker"].as_str().unwrap_or_default();
            assert!(["w1", "w2"].contains(&worker), "{task}");
        }
    }
    for finished in remote.of("task-finished") {
        assert!(finished["worker"].is_string(), "{finished}");
    }
    // Each attempt ran once: b's two attempts, every other task's one.
    let ran = ran_by(&[&w1, &w2], 8);
    let run_id = state["run-id"].as_str().unwrap();
    let mut expected: Vec<String> = [
        "fan/a/1",
        "fan/b/1",
        "fan/b/2",
        "fan/c/1",
        "fan/d/1",
        "join/first/1",
        "join/second/1",
        "count/stats/1",
    ]
    .iter()
    .map(|k| format!("{run_id}/{k}"))
    .collect();
    expected.sort();
    assert_eq!(ran, expected);
    // `status` names the workers.
    let status = p.output(&["status", "--state", "remote.toml"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("w1") || text.contains("w2"), "{text}");
}

#[test]
fn a_worker_lets_an_instance_serve_reuse_tasks_of_one_run_and_phase_only() {
    let nats = Nats::start();
    let p = Project::new();
    // Sequential phases, so that jobs reach the worker one at a time and the counts are exact;
    // and a parallel one, two jobs at a time.
    let phase = |id: &str, head: &str, n: usize, reuse: &str| {
        let mut toml = format!("[[phase]]\nid = \"{id}\"\n{head}\n");
        for i in 0..n {
            toml.push_str(&format!(
                "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\nconfig = {{ count = true }}\n{reuse}\n"
            ));
        }
        toml
    };
    p.pipeline(&format!(
        "name = \"reuse-remote\"\n{}{}{}{}",
        phase("a", "parallel = false", 3, "reuse = 5"),
        phase("b", "parallel = false", 3, "reuse = 5"),
        phase("fresh", "parallel = false", 3, ""),
        phase("both", "concurrency = 2", 8, "reuse = 3"),
    ));
    let w = Worker::start(&p, &nats, "w1", &[]);
    for state in ["one.toml", "two.toml"] {
        let run = p.run_json(&[
            "run",
            "pipeline.toml",
            "--state",
            state,
            "--nats",
            &nats.url(),
            "--no-cache",
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let state = p.state(state);
        // One instance serves a phase's three tasks; the next phase (same plugin, limits and
        // grants) does not get it, nor does the second run the instance the first one left.
        assert_eq!(crate::reuse::served(&state, "a"), [1, 2, 3]);
        assert_eq!(crate::reuse::served(&state, "b"), [1, 2, 3]);
        assert_eq!(crate::reuse::served(&state, "fresh"), [1, 1, 1]);
        // Two at a time: a job finds the instance the one before it left (a worker shelves it
        // before it publishes the result that lets the controller send the next job), and no
        // instance serves more than three.
        let both = crate::reuse::served(&state, "both");
        assert!(both.iter().all(|s| (1..=3).contains(s)), "{both:?}");
        assert!(both.iter().filter(|s| **s == 1).count() >= 3, "{both:?}");
        assert!(both.iter().any(|s| *s > 1), "{both:?}");
        for phase in state["phase"].as_array().unwrap() {
            for task in phase["task"].as_array().unwrap() {
                assert_eq!(task["worker"], "w1", "{task}");
            }
        }
    }
    assert_eq!(ran_by(&[&w], 34).len(), 34);
}

#[test]
fn a_worker_runs_as_many_jobs_as_its_concurrency_whatever_runs_they_come_from() {
    let nats = Nats::start();
    let p = Project::new();
    // Each run's engine limits count two tasks at once (a pool of 14 instances); nine such runs
    // at once give the worker 18 jobs, which it must run together.
    p.pipeline(
        r#"
name = "many-runs"
[[phase]]
id = "sleepy"
concurrency = 2
[[phase.task]]
id = "a"
plugin = "{PROBE}"
config = { sleep-ms = 3000 }
[[phase.task]]
id = "b"
plugin = "{PROBE}"
config = { sleep-ms = 3000 }
"#,
    );
    let w = Worker::start(&p, &nats, "wide", &["--concurrency", "18"]);
    let url = nats.url();
    let runs: Vec<Child> = (0..9)
        .map(|i| {
            let state = format!("run{i}.toml");
            p.command(&[
                "run",
                "pipeline.toml",
                "--state",
                &state,
                "--nats",
                &url,
                "--no-cache",
                "--progress",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.wait_with_output().unwrap();
        let state = p.state(&format!("run{i}.toml"));
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {i}: {}\n{state}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(ran_by(&[&w], 18).len(), 18);
}

#[test]
fn a_job_or_a_result_over_the_servers_max_payload_fails_at_once_naming_it() {
    let nats = Nats::start();
    let p = Project::new();
    // nats-server's default `max_payload` is 1 MiB: a 1.2 MB input makes a job over it, and a
    // 1.5 MB output (within the task's own `max-output`) a result over it.
    p.pipeline(
        r#"
name = "too-big"
[vars]
text = ""
[[phase]]
id = "big"
[[phase.task]]
id = "input"
plugin = "{PROBE}"
input = "{{ vars.text }}"
[[phase.task]]
id = "output"
plugin = "{HOSTILE}"
config = { attack = "giant-output", bytes = 1_500_000 }
limits = { max-output = "4MiB" }
[[phase.task]]
id = "small"
plugin = "{PROBE}"
input = "fits"
"#,
    );
    std::fs::write(p.path("big.txt"), "x".repeat(1_200_000)).unwrap();
    let _w = Worker::start(&p, &nats, "w1", &[]);
    // Neither may wait for a publish that can never succeed (a minute of retries, or a job
    // delivered again and again): the run ends on its own well before this bound.
    let mut run = p
        .command(&[
            "run",
            "pipeline.toml",
            "--nats",
            &nats.url(),
            "--no-cache",
            "--progress",
            "none",
            "--var",
            "text=@big.txt",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(45);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            panic!("the run did not end: a publish over max_payload is being retried");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let state = p.state(".phasegate/state.toml");
    let tasks = &by_id(&state["phase"], "big")["task"];
    let task = |id: &str| by_id(tasks, id).clone();
    let input = task("input");
    assert_eq!(input["error"]["kind"], "limit", "{input}");
    let message = input["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the job of task `input` in phase `big` is")
            && message.contains("over the NATS server's `max_payload` of 1 MiB")
            && message.contains("read-only `dirs` grant"),
        "{message}"
    );
    let output = task("output");
    assert_eq!(output["error"]["kind"], "limit", "{output}");
    assert_eq!(output["worker"], "w1", "{output}");
    let message = output["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the result of task `output` in phase `big` is")
            && message.contains("over the NATS server's `max_payload` of 1 MiB")
            && message.contains("`limits.max-output`"),
        "{message}"
    );
    assert_eq!(task("small")["status"], "succeeded");
}

#[test]
fn a_worker_refuses_a_job_whose_limits_exceed_its_ceilings_and_names_the_flag() {
    let nats = Nats::start();
    let p = Project::new();
    p.pipeline(
        r#"
name = "greedy-limits"
[defaults.limits]
memory = "16MiB"
timeout = "2s"
[[phase]]
id = "one"
[[phase.task]]
id = "fits"
plugin = "{PROBE}"
[[phase.task]]
id = "memory"
plugin = "{PROBE}"
limits = { memory = "1GiB" }
[[phase.task]]
id = "patient"
plugin = "{PROBE}"
timeout = "1h"
"#,
    );
    let _w = Worker::start(
        &p,
        &nats,
        "small",
        &["--max", "memory=32MiB", "--max", "timeout=5s"],
    );
    let run = p.run_json(&["run", "pipeline.toml", "--nats", &nats.url(), "--no-cache"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let state = p.state(".phasegate/state.toml");
    let task = |id: &str| by_id(&state["phase"][0]["task"], id).clone();
    assert_eq!(task("fits")["status"], "succeeded", "{}", task("fits"));
    for (id, asked, flag) in [
        (
            "memory",
            "asks for memory 1 GiB, and this worker allows at most 32 MiB",
            "--max memory=1GiB",
        ),
        (
            "patient",
            "asks for timeout 1h, and this worker allows at most 5s",
            "--max timeout=1h",
        ),
    ] {
        let t = task(id);
        assert_eq!(t["error"]["kind"], "limit", "{t}");
        let message = t["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("worker `small` refuses the job"),
            "{message}"
        );
        assert!(message.contains(asked), "{message}");
        assert!(message.contains(flag), "{message}");
    }
    // A component over the worker's ceiling is not read past it, nor compiled.
    drop(_w);
    let _tiny = Worker::start(&p, &nats, "tiny", &["--max", "component=1KiB"]);
    let run = p.run_json(&[
        "run",
        "pipeline.toml",
        "--state",
        "tiny.toml",
        "--nats",
        &nats.url(),
        "--no-cache",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let fits = p.state("tiny.toml")["phase"][0]["task"][0].clone();
    assert_eq!(fits["error"]["kind"], "limit", "{fits}");
    let message = fits["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("worker `tiny` refuses component sha256:")
            && message.contains("ceiling of 1 KiB for a component")
            && message.contains("--max component=SIZE"),
        "{message}"
    );
    // A ceiling the flag cannot read stops the worker before it takes a job.
    let bad = p.output(&["worker", "--nats", &nats.url(), "--max", "memry=1GiB"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("`memry` is not a limit `--max` sets; it sets memory, timeout"),
        "{stderr}"
    );
}

#[test]
fn a_context_too_large_for_a_job_travels_by_digest_and_arrives_whole() {
    let nats = Nats::start();
    let p = Project::new();
    // Two outputs of 600 KB make the context of the second phase 1.2 MB: over the server's
    // `max_payload` (1 MiB) and far over what a job carries itself.
    p.pipeline(
        r#"
name = "big-context"
[vars]
text = ""
[[phase]]
id = "make"
[[phase.task]]
id = "a"
plugin = "{PROBE}"
input = "{{ vars.text }}"
[[phase.task]]
id = "b"
plugin = "{PROBE}"
input = "{{ vars.text }}"
[[phase]]
id = "read"
[[phase.task]]
id = "one"
plugin = "{PROBE}"
config = { context-digest = true }
grants = { context = true }
[[phase.task]]
id = "two"
plugin = "{PROBE}"
config = { context-digest = true }
grants = { context = true }
"#,
    );
    std::fs::write(p.path("big.txt"), "y".repeat(600_000)).unwrap();
    let args = |state: &'static str| {
        vec![
            "run",
            "pipeline.toml",
            "--state",
            state,
            "--no-cache",
            "--var",
            "text=@big.txt",
        ]
    };
    let local = p.run_json(&args("local.toml"));
    assert_eq!(local.code, 0, "{}", local.stderr);
    let _w = Worker::start(&p, &nats, "w1", &[]);
    let url = nats.url();
    let mut remote_args = args("remote.toml");
    remote_args.extend(["--nats", &url]);
    let remote = p.run_json(&remote_args);
    assert_eq!(remote.code, 0, "{}", remote.stderr);
    let outputs = |state: &str| -> Vec<Value> {
        let state = p.state(state);
        by_id(&state["phase"], "read")["task"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| serde_json::from_str(t["output"].as_str().unwrap()).unwrap())
            .collect()
    };
    let (here, there) = (outputs("local.toml"), outputs("remote.toml"));
    assert!(
        here[0]["outputs-bytes"].as_u64().unwrap() > 1_200_000,
        "{here:?}"
    );
    // Each worker's task saw the context the local run's did, byte for byte.
    assert_eq!(there, here);
    assert_eq!(there[0], there[1]);
    for task in by_id(&p.state("remote.toml")["phase"], "read")["task"]
        .as_array()
        .unwrap()
    {
        assert_eq!(task["worker"], "w1", "{task}");
    }
}

#[test]
fn a_worker_refuses_a_grant_it_does_not_allow_and_names_it() {
    let nats = Nats::start();
    let p = Project::new();
    p.pipeline(
        r#"
name = "greedy"
[[phase]]
id = "one"
[[phase.task]]
id = "wants-env"
plugin = "{PROBE}"
grants = { env = ["HOME"] }
"#,
    );
    let _w = Worker::start(&p, &nats, "strict", &[]);
    let run = p.run_json(&["run", "pipeline.toml", "--nats", &nats.url()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let task = &p.state(".phasegate/state.toml")["phase"][0]["task"][0];
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("worker `strict` does not allow the grant env HOME"),
        "{message}"
    );
    assert!(message.contains("--allow-env HOME"), "{message}");

    // A worker that allows it runs it.
    drop(_w);
    let _open = Worker::start(&p, &nats, "open", &["--allow-env", "HOME"]);
    let again = p.run_json(&["run", "pipeline.toml", "--fresh", "--nats", &nats.url()]);
    assert_eq!(again.code, 0, "{}", again.stderr);
}

#[test]
fn an_unreachable_server_is_exit_2_naming_the_url_and_writes_nothing() {
    let p = Project::new();
    p.pipeline(
        "name = \"x\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{PROBE}\"\n",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let out = p.output(&["run", "pipeline.toml", "--nats", &url]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the NATS server at {url}")),
        "{stderr}"
    );
    assert!(!p.path(".phasegate/state.toml").exists());
    let worker = p.output(&["worker", "--nats", &url]);
    assert_eq!(worker.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&worker.stderr).contains(&url));
}

#[test]
fn a_tampered_component_object_is_refused() {
    let nats = Nats::start();
    let p = Project::new();
    p.pipeline(
        "name = \"x\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"{PROBE}\"\n",
    );
    // Put other bytes into the bucket under the probe's digest before any run does.
    let digest = sha256(&std::fs::read(phasegate_test_artifacts::PROBE).unwrap());
    let url = nats.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = phasegate_remote::connect::connect(&url, "test")
            .await
            .unwrap()
            .js;
        let store = phasegate_remote::connect::ensure(&js)
            .await
            .unwrap()
            .components;
        store
            .put(digest.as_str(), &mut &b"\0asm not the probe"[..])
            .await
            .unwrap();
    });
    let _w = Worker::start(&p, &nats, "careful", &[]);
    let run = p.run_json(&["run", "pipeline.toml", "--nats", &url]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let task = &p.state(".phasegate/state.toml")["phase"][0]["task"][0];
    let message = task["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("refused component {digest}")),
        "{message}"
    );
    assert!(message.contains("tampered"), "{message}");
}

#[test]
fn a_worker_killed_mid_task_leaves_it_to_another_and_every_task_is_recorded_once() {
    let nats = Nats::start();
    let p = Project::new();
    let mut toml = String::from("name = \"long\"\n[[phase]]\nid = \"slow\"\nconcurrency = 4\n");
    for i in 0..4 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\nconfig = {{ sleep-ms = 1500 }}\n"
        ));
    }
    p.pipeline(&toml);
    // The first worker takes jobs, and is killed while it runs them.
    let mut first = Worker::start(&p, &nats, "doomed", &["--ack-wait", "2"]);
    let (mut controller, mut events) =
        p.spawn_json(&["run", "pipeline.toml", "--nats", &nats.url()]);
    let mut started = 0;
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-started" {
            started += 1;
            if started == 4 {
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(
        first.ran().is_empty(),
        "the doomed worker finished {:?}",
        first.ran()
    );
    // Another worker gets them once their ack deadline has passed.
    let second = Worker::start(&p, &nats, "heir", &["--ack-wait", "2"]);
    let mut finished = BTreeMap::new();
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-finished" {
            *finished
                .entry(e["task"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(controller.wait().unwrap().code(), Some(0));
    assert_eq!(finished.len(), 4, "{finished:?}");
    assert!(finished.values().all(|&n| n == 1), "{finished:?}");
    let state = p.state(".phasegate/state.toml");
    for task in state["phase"][0]["task"].as_array().unwrap() {
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["worker"], "heir", "{task}");
    }
    assert_eq!(ran_by(&[&second], 4).len(), 4);
}

#[test]
fn a_controller_killed_mid_phase_resumes_through_nats_without_running_anything_twice() {
    let nats = Nats::start();
    let p = Project::new();
    let mut toml = String::from("name = \"steady\"\n[[phase]]\nid = \"bulk\"\nconcurrency = 4\n");
    for i in 0..8 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\nconfig = {{ sleep-ms = 400 }}\n"
        ));
    }
    toml.push_str("[[phase]]\nid = \"after\"\n[[phase.task]]\nid = \"sum\"\nplugin = \"{PROBE}\"\ninput = \"{{ phases.bulk.tasks.t7.output.task }}\"\n");
    p.pipeline(&toml);
    let w1 = Worker::start(&p, &nats, "w1", &[]);
    let w2 = Worker::start(&p, &nats, "w2", &[]);
    let (mut controller, mut events) = p.spawn_json(&[
        "run",
        "pipeline.toml",
        "--state",
        "run.toml",
        "--nats",
        &nats.url(),
    ]);
    let mut finished = 0;
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-finished" {
            finished += 1;
            if finished == 2 {
                controller.kill().unwrap();
                break;
            }
        }
    }
    controller.wait().unwrap();
    let mid = p.state("run.toml");
    assert_eq!(mid["status"], "running");
    let recorded = mid["phase"][0]["task"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"] == "succeeded")
        .count();
    assert!((2..8).contains(&recorded), "{recorded} recorded");

    let resumed = p.run_json(&["resume", "--state", "run.toml", "--nats", &nats.url()]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let state = p.state("run.toml");
    assert_eq!(state["status"], "completed");
    for phase in state["phase"].as_array().unwrap() {
        for task in phase["task"].as_array().unwrap() {
            assert_eq!(task["status"], "succeeded", "{task}");
        }
    }
    // Tasks in flight when the controller died finished on their workers; the resumed run took
    // their results instead of running them again.
    let mut ran = ran_by(&[&w1, &w2], 9);
    let before = ran.len();
    ran.dedup();
    assert_eq!(before, ran.len(), "an attempt ran twice: {ran:?}");
    assert_eq!(ran.len(), 9, "{ran:?}");
}

#[test]
fn the_server_killed_and_restarted_mid_phase_loses_nothing() {
    let mut nats = Nats::start();
    let p = Project::new();
    let mut toml = String::from("name = \"sturdy\"\n[[phase]]\nid = \"bulk\"\nconcurrency = 4\n");
    for i in 0..8 {
        toml.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\ninput = \"{i}\"\nconfig = {{ sleep-ms = 300 }}\n"
        ));
    }
    p.pipeline(&toml);
    let w1 = Worker::start(&p, &nats, "w1", &[]);
    let (mut controller, mut events) =
        p.spawn_json(&["run", "pipeline.toml", "--nats", &nats.url()]);
    let mut finished = 0;
    while let Some(e) = next_event(&mut events) {
        if e["event"] == "task-finished" {
            finished += 1;
            if finished == 2 {
                nats.restart();
                break;
            }
        }
    }
    while next_event(&mut events).is_some() {}
    assert_eq!(controller.wait().unwrap().code(), Some(0));
    let state = p.state(".phasegate/state.toml");
    assert_eq!(state["status"], "completed");
    for task in state["phase"][0]["task"].as_array().unwrap() {
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["attempts"], 1, "{task}");
    }
    assert!(ran_by(&[&w1], 8).len() >= 8);
}

#[test]
fn a_long_task_keeps_its_job_while_it_runs() {
    let nats = Nats::start();
    let p = Project::new();
    p.pipeline("name = \"long\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"slow\"\nplugin = \"{PROBE}\"\nconfig = { sleep-ms = 3500 }\n");
    // Its ack deadline is one second; it runs for 3.5: only the extensions keep another
    // worker from getting it.
    let w1 = Worker::start(&p, &nats, "w1", &["--ack-wait", "1"]);
    let w2 = Worker::start(&p, &nats, "w2", &["--ack-wait", "1"]);
    let run = p.run_json(&["run", "pipeline.toml", "--nats", &nats.url()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::thread::sleep(Duration::from_millis(1500));
    let ran = ran_by(&[&w1, &w2], 1);
    assert_eq!(
        ran.len(),
        1,
        "the job was delivered again while it ran: {ran:?}"
    );
}

fn sha256(bytes: &[u8]) -> String {
    phasegate_model::digest::sha256_bytes(bytes)
}
