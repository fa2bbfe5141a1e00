//! Installing third-party plugins, through the CLI, against real sources: component files, a
//! loopback HTTP server, and a real OCI registry (Debian's `docker-registry`, the CNCF
//! distribution registry) started on loopback with basic auth.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use phasegate_test_artifacts::{NOOP, PROBE, TEXT_STATS, THRESHOLD, WIDENED};

use crate::harness::{Project, stderr_of};

/// `alice:secret`, bcrypt (the registry's htpasswd format).
const HTPASSWD: &str = "alice:$2y$05$61xzpUqDGQvhkYeASDU2iukBNrJOK04lHGdxjxF189UHBSZUUwni2\n";
const PASSWORD: &str = "secret";

/// A CNCF distribution registry on a free loopback port, with basic auth; killed on drop.
struct Registry {
    child: Child,
    host: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let binary = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("docker-registry is not installed: `apt-get install docker-registry` (scripts/setup-guest-toolchain installs it)");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("htpasswd"), HTPASSWD).unwrap();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: phasegate-tests\nauth:\n  htpasswd:\n    realm: phasegate-tests\n    path: {htpasswd}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(binary)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let host = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&host).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            host,
            _dir: dir,
        }
    }

    fn oci(&self, repo_tag: &str) -> String {
        format!("oci://{}/{repo_tag}", self.host)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves the files of a folder over plain HTTP on loopback (GET only; 404 for the rest).
fn serve_files(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let file = dir.join(path.trim_start_matches('/'));
            let mut stream = stream;
            match std::fs::read(&file) {
                Ok(body) => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(&body);
                }
                Err(_) => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    format!("http://{addr}")
}

/// A project folder with registry credentials in a Docker config of its own.
struct Store {
    project: Project,
    docker: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        let docker = tempfile::tempdir().unwrap();
        Store {
            project: Project::new(),
            docker,
        }
    }

    /// Writes `~/.docker/config.json`-style credentials for the registry.
    fn login(&self, registry: &Registry) {
        use base64::Engine as _;
        let config = format!(
            r#"{{"auths": {{"{}": {{"auth": "{}"}}}}}}"#,
            registry.host,
            base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"))
        );
        std::fs::write(self.docker.path().join("config.json"), config).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.project.command(args);
        cmd.env("DOCKER_CONFIG", self.docker.path())
            .env_remove("PHASEGATE_REGISTRY_USERNAME")
            .env_remove("PHASEGATE_REGISTRY_PASSWORD");
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "phasegate {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must exit 2; returns its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let out: Output = self.cmd(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "phasegate {args:?} should exit 2:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        );
        stderr_of(&out)
    }

    fn lock(&self) -> String {
        std::fs::read_to_string(self.project.path("phasegate.lock")).unwrap_or_default()
    }

    fn lock_toml(&self) -> toml::Table {
        toml::from_str(&self.lock()).unwrap()
    }

    fn entry(&self, name: &str) -> toml::Table {
        self.lock_toml()["plugin"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` in the lock:\n{}", self.lock()))
            .as_table()
            .unwrap()
            .clone()
    }

    fn stored(&self, name: &str) -> PathBuf {
        let digest = self.entry(name)["digest"].as_str().unwrap().to_owned();
        self.project.path(&format!(
            ".phasegate/plugins/sha256/{}.wasm",
            digest.trim_start_matches("sha256:")
        ))
    }
}

/// Runs a `run` command with JSON events; it must succeed. Returns the run's outcome.
fn outcome_of(mut run: Command) -> serde_json::Value {
    let out = run.args(["--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let result = crate::harness::RunResult {
        code: out.status.code().unwrap_or(-1),
        events: crate::harness::parse_events(&String::from_utf8_lossy(&out.stdout)),
        stderr: stderr_of(&out),
    };
    result.outcome().clone()
}

const PIPELINE: &str = r#"
name = "installed"

[[phase]]
id = "work"
gate = { plugin = "limit", config = { field = "/words", max = 100, tasks = ["stats"] } }

[[phase.task]]
id = "stats"
plugin = "text-stats"
input = "one two three"

[[phase.task]]
id = "tool"
plugin = "tool"
"#;

#[test]
fn add_from_path_url_and_oci_then_run_locked() {
    let registry = Registry::start();
    let s = Store::new();
    s.login(&registry);

    // Publish, then add back by tag and by digest (credentials from the Docker config).
    let published = s.ok(&["plugin", "publish", NOOP, &registry.oci("acme/tool:1.0")]);
    let by_digest = published
        .lines()
        .find_map(|l| l.trim().strip_prefix("manifest:"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(by_digest.contains("@sha256:"), "{published}");
    s.ok(&[
        "plugin",
        "add",
        &registry.oci("acme/tool:1.0"),
        "--name",
        "tool",
    ]);
    s.ok(&["plugin", "add", &by_digest, "--name", "tool-pinned"]);
    assert_eq!(s.entry("tool")["digest"], s.entry("tool-pinned")["digest"]);
    assert_eq!(
        s.entry("tool")["resolved"].as_str(),
        Some(by_digest.as_str())
    );

    // From a path and from a URL.
    s.ok(&["plugin", "add", TEXT_STATS]);
    let served = tempfile::tempdir().unwrap();
    std::fs::copy(THRESHOLD, served.path().join("threshold.wasm")).unwrap();
    let base = serve_files(served.path().to_owned());
    s.ok(&[
        "plugin",
        "add",
        &format!("{base}/threshold.wasm"),
        "--name",
        "limit",
    ]);

    let lock = s.lock();
    for needle in [PASSWORD, "alice"] {
        assert!(
            !lock.contains(needle),
            "credentials leaked into the lock:\n{lock}"
        );
    }
    let tool = s.entry("tool");
    assert_eq!(tool["plugin-name"].as_str(), Some("noop"));
    assert_eq!(tool["version"].as_str(), Some("0.1.0"));
    assert_eq!(tool["world"].as_str(), Some("phasegate:plugin/task@0.1.0"));
    assert_eq!(tool["capabilities"].as_array().unwrap().len(), 0);
    assert_eq!(
        s.entry("limit")["world"].as_str(),
        Some("phasegate:plugin/gate@0.1.0")
    );
    assert_eq!(
        s.entry("text-stats")["capabilities"].as_array().unwrap()[0].as_str(),
        Some("environment")
    );
    assert!(s.stored("tool").is_file() && s.stored("limit").is_file());

    let list = s.ok(&["plugin", "list"]);
    for name in ["tool", "tool-pinned", "text-stats", "limit"] {
        assert!(list.contains(name), "{list}");
    }
    let inspect = s.ok(&["plugin", "inspect", "text-stats"]);
    assert!(
        inspect.contains("environment  via wasi:cli/environment"),
        "{inspect}"
    );
    assert!(inspect.contains("exports:      metadata, run"), "{inspect}");
    let remote = s.ok(&["plugin", "inspect", &registry.oci("acme/tool:1.0")]);
    assert!(remote.contains("capability surface: none"), "{remote}");
    assert!(s.ok(&["plugin", "verify"]).contains("4 plugin(s) verified"));

    // A pipeline naming installed plugins: --locked needs its record first.
    let pipeline = s.project.pipeline(PIPELINE);
    let pipeline = pipeline.to_str().unwrap();
    let err = s.refused(&["run", pipeline, "--locked"]);
    assert!(err.contains("has no record of this pipeline"), "{err}");
    assert!(!s.project.path(".phasegate/state.toml").exists());
    s.ok(&["validate", pipeline]);
    assert_eq!(s.lock_toml()["pipeline"].as_array().unwrap().len(), 1);
    let mut run = s.cmd(&["run", pipeline, "--locked"]);
    run.env_remove("PHASEGATE_CACHE_DIR");
    let outcome = outcome_of(run);
    assert_eq!(outcome["status"], "completed", "{outcome}");
    assert_eq!(
        outcome["context"]["phases"]["work"]["tasks"]["stats"]["output"]["words"], 3,
        "{outcome}"
    );
    // `tool` (the noop) imports no WASI: its instances run without a WASI context.
    assert_eq!(
        outcome["context"]["phases"]["work"]["tasks"]["tool"]["output"],
        serde_json::json!({}),
        "{outcome}"
    );
    // Without PHASEGATE_CACHE_DIR, compiled components are cached beside the store.
    assert!(
        std::fs::read_dir(s.project.path(".phasegate/compiled"))
            .unwrap()
            .next()
            .is_some()
    );

    // Remove: the shared file stays while another name uses it; the pipeline then fails to load.
    let tool_file = s.stored("tool");
    s.ok(&["plugin", "remove", "tool-pinned"]);
    assert!(tool_file.is_file());
    s.ok(&["plugin", "remove", "tool"]);
    assert!(!tool_file.exists());
    let err = s.refused(&["run", pipeline, "--fresh"]);
    assert!(err.contains("plugin `tool` is not installed"), "{err}");
    assert!(
        err.contains("phasegate plugin add SOURCE --name tool"),
        "{err}"
    );
}

/// Plugin commands run side by side (a script installing several plugins at once) keep what
/// each other wrote: edits of phasegate.lock are serialised, not last-writer-wins.
#[test]
fn plugins_added_at_the_same_time_are_all_recorded() {
    let s = Store::new();
    let names = ["one", "two", "three", "four", "five", "six"];
    let adding: Vec<Child> = names
        .iter()
        .map(|name| {
            s.cmd(&["plugin", "add", PROBE, "--name", name])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in adding {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    let mut recorded: Vec<String> = s.lock_toml()["plugin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    recorded.sort();
    let mut expected = names.map(str::to_owned).to_vec();
    expected.sort();
    assert_eq!(recorded, expected, "{}", s.lock());
}

#[test]
fn a_tampered_store_file_is_caught_before_it_runs() {
    let s = Store::new();
    s.ok(&["plugin", "add", PROBE, "--name", "tool"]);
    s.ok(&["plugin", "add", TEXT_STATS]);
    s.ok(&["plugin", "add", THRESHOLD, "--name", "limit"]);
    let pipeline = s.project.pipeline(PIPELINE);
    let pipeline = pipeline.to_str().unwrap();
    s.ok(&["lock", pipeline]);
    let lock_before = s.lock();

    // Swap the stored probe for another component (a valid one, so only the hash can tell).
    std::fs::copy(NOOP, s.stored("tool")).unwrap();
    for args in [
        vec!["run", pipeline],
        vec!["run", pipeline, "--locked"],
        vec!["validate", pipeline],
    ] {
        let err = s.refused(&args);
        assert!(err.contains("was modified"), "{args:?}: {err}");
        assert!(err.contains("plugin `tool`"), "{err}");
    }
    assert!(
        !s.project.path(".phasegate/state.toml").exists(),
        "nothing ran"
    );
    let err = s.refused(&["plugin", "verify"]);
    assert!(
        err.contains("`tool`") && err.contains("was modified"),
        "{err}"
    );
    assert!(!err.contains("`limit`"), "{err}");
    assert_eq!(s.lock(), lock_before, "the lock is untouched");
}

#[test]
fn an_update_that_widens_capabilities_is_refused_under_locked() {
    let registry = Registry::start();
    let s = Store::new();
    s.login(&registry);
    let tag = registry.oci("acme/tool:stable");
    s.ok(&["plugin", "publish", NOOP, &tag]);
    s.ok(&["plugin", "add", &tag, "--name", "tool"]);
    s.ok(&["plugin", "add", TEXT_STATS]);
    s.ok(&["plugin", "add", THRESHOLD, "--name", "limit"]);
    let pipeline = s.project.pipeline(PIPELINE);
    let pipeline = pipeline.to_str().unwrap();
    s.ok(&["validate", pipeline]);
    s.ok(&["run", pipeline, "--locked"]);

    // The publisher pushes 0.2.0, which reads files, to the same tag.
    s.ok(&["plugin", "publish", WIDENED, &tag]);
    let lock_before = s.lock();
    let dry = s.ok(&["plugin", "update", "tool", "--dry-run"]);
    assert!(dry.contains("version:    0.1.0 -> 0.2.0"), "{dry}");
    assert!(dry.contains("WIDER: +"), "{dry}");
    assert!(dry.contains("filesystem"), "{dry}");
    assert_eq!(s.lock(), lock_before, "--dry-run writes nothing");

    let update = s.ok(&["plugin", "update", "tool"]);
    assert!(update.contains("updated `tool`"), "{update}");
    assert_eq!(s.entry("tool")["version"].as_str(), Some("0.2.0"));

    let err = s.refused(&["run", pipeline, "--locked", "--fresh"]);
    assert!(err.contains("[wider]"), "{err}");
    assert!(
        err.contains("wider capability surface: none -> ") && err.contains("filesystem"),
        "{err}"
    );
    assert!(err.contains("task `tool` in phase `work`"), "{err}");
    let err = s.refused(&["validate", pipeline, "--locked"]);
    assert!(err.contains("[wider]"), "{err}");

    // Reviewing accepts it; then a wider grant in the pipeline is refused the same way.
    s.ok(&["validate", pipeline]);
    s.ok(&["run", pipeline, "--locked", "--fresh"]);
    std::fs::create_dir(s.project.path("data")).unwrap();
    let granted = PIPELINE.replace(
        "plugin = \"tool\"\n",
        "plugin = \"tool\"\ngrants = { dirs = [{ host = \"data\", guest = \"/data\", mode = \"rw\" }], context = true }\n",
    );
    s.project.pipeline(&granted);
    let err = s.refused(&["run", pipeline, "--locked", "--fresh"]);
    assert!(err.contains("new grant `dir data -> /data (rw)`"), "{err}");
    // Seeing every earlier result is a grant too.
    assert!(err.contains("new grant `context`"), "{err}");

    // Switching the engine to explicit bounds checks (no Spectre mitigations) is a widening too;
    // once reviewed, the lock records it.
    let explicit = PIPELINE.replace(
        "name = \"installed\"\n",
        "name = \"installed\"\n[engine]\nbounds-checks = \"explicit\"\n",
    );
    s.project.pipeline(&explicit);
    let err = s.refused(&["run", pipeline, "--locked", "--fresh"]);
    assert!(
        err.contains("[wider] `[engine] bounds-checks` is now `explicit` instead of `guard-pages`"),
        "{err}"
    );
    s.ok(&["validate", pipeline]);
    assert!(
        s.lock().contains("bounds-checks = \"explicit\""),
        "{}",
        s.lock()
    );
    s.ok(&["run", pipeline, "--locked", "--fresh"]);
}

#[test]
fn a_moved_tag_and_a_downgrade_are_refused() {
    let registry = Registry::start();
    let s = Store::new();
    s.login(&registry);
    let tag = registry.oci("acme/tool:stable");
    s.ok(&["plugin", "publish", WIDENED, &tag]);
    s.ok(&["plugin", "add", &tag, "--name", "tool"]);
    let stored = s.stored("tool");
    assert!(s.ok(&["plugin", "update"]).contains("`tool` is up to date"));

    let pipeline = s.project.pipeline(
        "name = \"pinned\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"t\"\nplugin = \"tool\"\n",
    );
    let pipeline = pipeline.to_str().unwrap();
    s.ok(&["lock", pipeline]);
    let lock_before = s.lock();

    // 0.1.0 under the same tag: a downgrade.
    s.ok(&["plugin", "publish", NOOP, &tag]);
    // A moved tag changes nothing that is installed: the locked run runs the pinned 0.2.0.
    let outcome = outcome_of(s.cmd(&["run", pipeline, "--locked"]));
    assert_eq!(
        outcome["context"]["phases"]["one"]["tasks"]["t"]["output"],
        serde_json::json!({ "bytes": 0 }),
        "{outcome}"
    );
    let err = s.refused(&["plugin", "update", "tool"]);
    assert!(err.contains("0.2.0 -> 0.1.0 is a downgrade"), "{err}");
    assert!(err.contains("nothing was updated"), "{err}");
    assert_eq!(s.lock(), lock_before);
    assert!(stored.is_file());

    // Other bytes under the same version: the tag was moved.
    s.ok(&["plugin", "add", &tag, "--name", "old"]);
    let lock_before = s.lock();
    s.ok(&["plugin", "publish", PROBE, &tag]);
    let err = s.refused(&["plugin", "update", "old"]);
    assert!(
        err.contains("different bytes under the same version 0.1.0"),
        "{err}"
    );
    assert_eq!(s.lock(), lock_before);

    // Both can be accepted explicitly.
    s.ok(&["plugin", "update", "old", "--allow-replaced"]);
    assert_eq!(s.entry("old")["plugin-name"].as_str(), Some("probe"));
    s.ok(&["plugin", "update", "tool", "--allow-downgrade"]);
    assert_eq!(s.entry("tool")["version"].as_str(), Some("0.1.0"));
    assert!(!stored.exists(), "the replaced file left the store");
}

#[test]
fn signatures_are_checked_against_the_trust_policy() {
    let registry = Registry::start();
    let s = Store::new();
    s.login(&registry);
    s.ok(&["key", "generate", "acme"]);
    s.ok(&["key", "generate", "mallory"]);
    let acme_pub = std::fs::read_to_string(s.project.path("acme.pub")).unwrap();
    let acme_line = acme_pub.lines().last().unwrap();
    s.project.write(
        "phasegate-trust.toml",
        &format!("[[key]]\nname = \"acme\"\npublic-key = \"{acme_line}\"\nsources = [\"oci://{}/acme/\"]\n", registry.host),
    );

    // Signed by an untrusted key.
    let untrusted = registry.oci("mallory/tool:1");
    s.ok(&[
        "plugin",
        "publish",
        NOOP,
        &untrusted,
        "--key",
        "mallory.key",
    ]);
    let err = s.refused(&[
        "plugin",
        "add",
        &untrusted,
        "--name",
        "tool",
        "--require-signed",
    ]);
    assert!(
        err.contains("which the trust policy does not list"),
        "{err}"
    );
    assert!(
        !s.project.path("phasegate.lock").exists(),
        "nothing recorded"
    );
    // Without --require-signed it installs, recorded as such, and a signed run refuses it.
    s.ok(&["plugin", "add", &untrusted, "--name", "tool"]);
    assert_eq!(
        s.entry("tool")["signature"]["status"].as_str(),
        Some("untrusted-key")
    );

    // Signed by the trusted key, from the publisher's path.
    let trusted = registry.oci("acme/stats:1");
    let copy = s.project.path("text_stats.wasm");
    std::fs::copy(TEXT_STATS, &copy).unwrap();
    s.ok(&[
        "plugin",
        "sign",
        copy.to_str().unwrap(),
        "--key",
        "acme.key",
    ]);
    s.ok(&["plugin", "publish", copy.to_str().unwrap(), &trusted]);
    s.ok(&["plugin", "add", &trusted, "--require-signed"]);
    let entry = s.entry("text-stats");
    assert_eq!(entry["signature"]["status"].as_str(), Some("verified"));
    assert_eq!(entry["signature"]["signer"].as_str(), Some("acme"));

    // The acme key outside its publisher path is not enough.
    let elsewhere = registry.oci("mallory/stats:1");
    s.ok(&["plugin", "publish", copy.to_str().unwrap(), &elsewhere]);
    let err = s.refused(&[
        "plugin",
        "add",
        &elsewhere,
        "--name",
        "stats2",
        "--require-signed",
    ]);
    assert!(err.contains("does not allow for this plugin"), "{err}");

    // A signature that does not match the bytes is refused whatever the policy.
    let forged = s.project.path("probe.wasm");
    std::fs::copy(PROBE, &forged).unwrap();
    std::fs::copy(
        s.project.path("text_stats.wasm.minisig"),
        s.project.path("probe.wasm.minisig"),
    )
    .unwrap();
    let err = s.refused(&["plugin", "add", forged.to_str().unwrap()]);
    assert!(err.contains("tampered"), "{err}");

    // Runs: --require-signed refuses the untrusted plugin; the policy can require it too.
    let err = s.refused(&[
        "plugin",
        "add",
        THRESHOLD,
        "--name",
        "limit",
        "--require-signed",
    ]);
    assert!(err.contains("unsigned; --require-signed"), "{err}");
    s.ok(&["plugin", "add", THRESHOLD, "--name", "limit"]);
    let pipeline = s.project.pipeline(PIPELINE);
    let pipeline = pipeline.to_str().unwrap();
    s.ok(&["validate", pipeline]);
    let err = s.refused(&["run", pipeline, "--require-signed"]);
    assert!(err.contains("plugin `tool`"), "{err}");
    assert!(
        err.contains("plugin `limit`") && err.contains("unsigned"),
        "{err}"
    );
    assert!(!err.contains("plugin `text-stats`"), "{err}");
    s.project.write(
        "phasegate-trust.toml",
        &format!("require-signed = true\n[[key]]\nname = \"acme\"\npublic-key = \"{acme_line}\"\n"),
    );
    let err = s.refused(&["run", pipeline]);
    assert!(
        err.contains("the trust policy requires signed plugins"),
        "{err}"
    );
    let err = s.refused(&["plugin", "verify"]);
    assert!(err.contains("`tool`") && err.contains("`limit`"), "{err}");
}

#[test]
fn an_unreachable_registry_is_a_clear_error_and_changes_nothing() {
    let registry = Registry::start();
    let s = Store::new();
    s.login(&registry);
    let tag = registry.oci("acme/tool:1");
    s.ok(&["plugin", "publish", NOOP, &tag]);
    s.ok(&["plugin", "add", &tag, "--name", "tool"]);
    let lock_before = s.lock();
    drop(registry);

    let err = s.refused(&["plugin", "update", "tool"]);
    assert!(
        err.contains("cannot fetch") && err.contains("reachable"),
        "{err}"
    );
    assert!(err.contains("nothing was updated"), "{err}");
    let closed = format!("oci://127.0.0.1:{}/acme/other:1", free_port());
    let err = s.refused(&["plugin", "add", &closed]);
    assert!(
        err.contains("Connection refused") || err.contains("connect"),
        "{err}"
    );
    assert!(err.contains("help: check that the registry is up"), "{err}");
    assert_eq!(s.lock(), lock_before);

    // Wrong credentials are named as such.
    let registry = Registry::start();
    let err = s.refused(&["plugin", "add", &registry.oci("acme/tool:1")]);
    assert!(err.contains("docker login"), "{err}");
    assert_eq!(s.lock(), lock_before);
}

#[test]
fn only_components_of_this_contract_are_installed() {
    let s = Store::new();
    let dir = Path::new(phasegate_test_artifacts::COMPONENTS_DIR);
    let core = dir.join("noop.core.wasm");
    let garbage = s.project.write("garbage.wasm", "not wasm at all");
    for (source, expected) in [
        (core.as_path(), "core Wasm module, not a component"),
        (garbage.as_path(), "not a valid Wasm component"),
    ] {
        let err = s.refused(&["plugin", "add", source.to_str().unwrap()]);
        assert!(err.contains(expected), "{}: {err}", source.display());
    }
    assert!(
        !s.project.path("phasegate.lock").exists(),
        "nothing recorded"
    );
    let err = s.refused(&["plugin", "add", "./missing.wasm"]);
    assert!(err.contains("cannot read"), "{err}");
    let err = s.refused(&["plugin", "add", NOOP, "--name", "Not A Name"]);
    assert!(err.contains("cannot be an installed name"), "{err}");
}

#[test]
fn plugin_add_compiles_into_the_projects_cache_so_the_first_run_is_warm() {
    let s = Store::new();
    let warm = |args: &[&str]| {
        let mut cmd = s.cmd(args);
        cmd.env_remove("PHASEGATE_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", s.project.path("home"));
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr_of(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    warm(&["plugin", "add", TEXT_STATS]);
    let pipeline = s.project.pipeline(
        "name = \"warm\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"stats\"\nplugin = \"text-stats\"\ninput = \"a b\"\n",
    );
    let shown = warm(&["validate", pipeline.to_str().unwrap()]);
    assert!(shown.contains("loaded from the compile cache"), "{shown}");
}
