//! Plugin authoring end to end: `phasegate new` in every language and kind, `phasegate build`,
//! `phasegate test` with fixtures (passing, failing with a diff, recorded from a real run), and a
//! pipeline that mixes all four languages in one parallel phase.
//!
//! The guest toolchains come from `scripts/setup-guest-toolchain` (clang + wasi-libc from apt,
//! componentize-py and componentize-js under `.toolchains/`). A missing one fails these tests
//! with the message `phasegate build` prints, which names what to install.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::harness::{Project, by_id, max_overlap};

const LANGS: [&str; 4] = ["rust", "python", "js", "c"];

/// PATH with the toolchains `scripts/setup-guest-toolchain` installs under `.toolchains/`.
fn path_with_toolchains() -> String {
    let tc = crate::harness::repo_root().join(".toolchains");
    format!(
        "{}:{}:{}",
        tc.join("venv/bin").display(),
        tc.join("node_modules/.bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn phasegate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args(args)
        .current_dir(dir)
        .env("PATH", path_with_toolchains())
        .env(
            "PHASEGATE_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-cache"),
        )
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Eight projects made by `phasegate new` (a task and a gate per language), each built and
/// tested once with its template fixture, shared by the tests below.
///
/// They live in the target directory, not in a temporary one: a `static` is never dropped, so
/// a `TempDir` here left ~370 MiB in the system's temporary directory on every run.
struct Authored {
    dir: PathBuf,
}

impl Authored {
    fn project(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn component(&self, lang: &str, kind: &str) -> PathBuf {
        let name = format!("{lang}-{kind}");
        let dir = self.project(&name);
        if lang == "rust" {
            dir.join(format!(
                "target/wasm32-wasip2/release/{}.wasm",
                name.replace('-', "_")
            ))
        } else {
            dir.join(format!("build/{name}.wasm"))
        }
    }
}

fn authored() -> &'static Authored {
    static AUTHORED: OnceLock<Authored> = OnceLock::new();
    AUTHORED.get_or_init(|| {
        // Made afresh by each run (the projects of a previous run would make `new` refuse).
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("authored");
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("clearing {}: {e}", dir.display()),
        }
        std::fs::create_dir_all(&dir).unwrap();
        for lang in LANGS {
            for kind in ["task", "gate"] {
                let name = format!("{lang}-{kind}");
                let out = phasegate(&dir, &["new", kind, &name, "--lang", lang]);
                assert!(out.status.success(), "new {name}: {}", text(&out));
                // `test` builds first, then runs the template's fixture: both must pass as written.
                let out = phasegate(&dir, &["test", &name]);
                assert!(out.status.success(), "test {name}: {}", text(&out));
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    stdout.contains(&format!("implements phasegate:plugin/{kind}@0.1.0")),
                    "{name}: {stdout}"
                );
                assert!(stdout.contains("PASS basic"), "{name}: {stdout}");
                // A gate's second fixture reads the tasks' usage through the contract.
                let passed = if kind == "gate" {
                    assert!(stdout.contains("PASS written"), "{name}: {stdout}");
                    "2 passed, 0 failed"
                } else {
                    "1 passed, 0 failed"
                };
                assert!(stdout.contains(passed), "{name}: {stdout}");
            }
        }
        Authored { dir }
    })
}

#[test]
fn templates_build_and_pass_their_fixtures_in_every_language() {
    let a = authored();
    for lang in LANGS {
        for kind in ["task", "gate"] {
            let component = a.component(lang, kind);
            let bytes = std::fs::read(&component).unwrap();
            // A component (layer 1), not a core module (version 1).
            assert_eq!(&bytes[4..8], &[0x0d, 0, 1, 0], "{}", component.display());
        }
    }
}

#[test]
fn instances_in_every_language_serve_several_tasks_each_with_its_own_result_and_log() {
    let a = authored();
    let p = Project::new();
    // `reuse = 3`: each language's instance serves up to three of its five tasks in a row.
    let mut toml = String::from("name = \"reuse\"\n[defaults]\nreuse = 3\n");
    for lang in LANGS {
        toml.push_str(&format!("\n[[phase]]\nid = \"{lang}\"\nparallel = false\n"));
        for i in 1..=5 {
            let input = vec!["word"; i].join(" ");
            toml.push_str(&format!(
                "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{}\"\ninput = \"{input}\"\n",
                a.component(lang, "task").display()
            ));
        }
    }
    p.pipeline(&toml);
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let state = p.state(".phasegate/state.toml");
    for lang in LANGS {
        for i in 1..=5u64 {
            let task = by_id(&by_id(&state["phase"], lang)["task"], &format!("t{i}"));
            let output: serde_json::Value =
                serde_json::from_str(task["output"].as_str().unwrap()).unwrap();
            assert_eq!(output["words"], i, "{lang} t{i}: {task}");
            // The log is the task's own, not the instance's so far.
            let log = task["log"].as_array().unwrap();
            assert_eq!(log.len(), 1, "{lang} t{i}: {task}");
            assert!(
                log[0].as_str().unwrap().contains(&format!("task `t{i}`")),
                "{lang} t{i}: {task}"
            );
        }
    }
}

#[test]
fn a_failing_fixture_shows_a_diff_and_exits_1() {
    let a = authored();
    for lang in LANGS {
        let project = a.project(&format!("{lang}-task"));
        let fixtures = project.join("wrong-fixtures");
        std::fs::create_dir_all(&fixtures).unwrap();
        std::fs::write(
            fixtures.join("wrong.toml"),
            "[request]\ninput = \"one two\"\n[expect]\noutput = { words = 3, chars = 7, language = \"cobol\" }\n",
        )
        .unwrap();
        std::fs::write(
            fixtures.join("too-short.toml"),
            "[request]\ninput = \"one\"\nconfig = { min-words = 2 }\n[expect]\nerror = \"invalid-input\"\nmessage-contains = \"fewer than min-words = 2\"\n",
        )
        .unwrap();
        let out = phasegate(
            &project,
            &["test", "--no-build", "--fixtures", "wrong-fixtures"],
        );
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{lang}: {all}");
        assert!(all.contains("PASS too-short"), "{lang}: {all}");
        assert!(all.contains("FAIL wrong"), "{lang}: {all}");
        assert!(all.contains("output differs"), "{lang}: {all}");
        assert!(all.contains("  -  \"words\": 3"), "{lang}: {all}");
        assert!(all.contains("  +  \"words\": 2"), "{lang}: {all}");
        assert!(
            all.contains(&format!("  +  \"language\": \"{lang}\"")),
            "{lang}: {all}"
        );
        assert!(all.contains("1 passed, 1 failed"), "{lang}: {all}");
    }
}

/// One pipeline, four phases; every phase runs the four language's tasks in parallel and is
/// judged by a gate in a different language. Then fixtures are recorded from the run's progress
/// file and replayed.
#[test]
fn a_pipeline_mixes_all_four_languages_and_fixtures_record_from_it() {
    let a = authored();
    let p = Project::new();
    let mut toml =
        String::from("name = \"polyglot\"\n[vars]\ntext = \"the quick brown fox jumps\"\n");
    for (i, gate_lang) in ["c", "rust", "python", "js"].iter().enumerate() {
        toml.push_str(&format!(
            "\n[[phase]]\nid = \"p{i}\"\nconcurrency = 4\n[phase.gate]\nplugin = \"{}\"\nconfig = {{ max-failures = 0 }}\n",
            a.component(gate_lang, "gate").display()
        ));
        if i == 3 {
            // The last gate (JavaScript) is granted the whole context.
            toml.push_str("grants = { context = true }\n");
        }
        for lang in LANGS {
            // Later phases read the earlier phase's outputs through the context.
            let input = if i == 0 {
                "{{ vars.text }}".to_owned()
            } else {
                format!(
                    "{{{{ vars.text }}}} and {{{{ phases.p{}.tasks.{lang}.output.words }}}}",
                    i - 1
                )
            };
            toml.push_str(&format!(
                "[[phase.task]]\nid = \"{lang}\"\nplugin = \"{}\"\ninput = \"{input}\"\n",
                a.component(lang, "task").display()
            ));
        }
    }
    let pipeline = p.pipeline(&toml);
    // Every language's template publishes its config schema, and the configs match them.
    let v = p.output(&["validate", pipeline.to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&v.stdout);
    assert!(v.status.success(), "{shown}{}", text(&v));
    assert_eq!(
        shown
            .matches("config (checked against its schema): `min-words` (integer)")
            .count(),
        4,
        "{shown}"
    );
    assert_eq!(
        shown
            .matches("config (checked against its schema): `max-failures` (integer), `max-written` (integer)")
            .count(),
        4,
        "{shown}"
    );
    // And a wrong one is refused whichever language the plugin is in.
    let wrong = toml.replace("max-failures = 0", "max-failure = 0");
    let wrong_path = p.write("wrong.toml", &wrong);
    let out = p.output(&["validate", wrong_path.to_str().unwrap()]);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.matches("unknown key `max-failure` (did you mean `max-failures`?)")
            .count(),
        4,
        "{err}"
    );
    let r = p.run_json(&["run", pipeline.to_str().unwrap(), "--state", "state.toml"]);
    assert_eq!(r.code, 0, "{}\n{:?}", r.stderr, r.events);
    // The tasks of a phase ran in parallel: two of them were running at the same time. Judged
    // by when each started and finished (`elapsed_us`), not by the order of the lines: workers
    // hand their events over in batches, so one task's lines may follow a later one's.
    let finished = |task: &serde_json::Value| {
        r.events
            .iter()
            .find(|e| e["phase"] == "p0" && e["task"] == *task && e["event"] == "task-finished")
            .and_then(|e| e["elapsed_us"].as_u64())
            .unwrap_or_else(|| panic!("{task} did not finish in p0: {:?}", r.events))
    };
    let spans: Vec<(String, u64, u64)> = r
        .events
        .iter()
        .filter(|e| e["phase"] == "p0" && e["event"] == "task-started")
        .map(|e| {
            let task = &e["task"];
            (
                task.to_string(),
                e["elapsed_us"].as_u64().unwrap(),
                finished(task),
            )
        })
        .collect();
    assert_eq!(spans.len(), 4, "{:?}", r.events);
    assert!(max_overlap(&spans) >= 2, "{spans:?}\n{:?}", r.events);
    let state: toml::Table =
        toml::from_str(&std::fs::read_to_string(p.path("state.toml")).unwrap()).unwrap();
    assert_eq!(state["status"].as_str(), Some("completed"), "{state:#?}");
    let phases = state["phase"].as_array().unwrap();
    assert_eq!(phases.len(), 4);
    for (i, phase) in phases.iter().enumerate() {
        let verdict = &phase["verdict"];
        assert_eq!(verdict["kind"].as_str(), Some("pass"), "{phase:#?}");
        assert!(
            verdict["reason"].as_str().unwrap().contains("4 of 4"),
            "{phase:#?}"
        );
        for task in phase["task"].as_array().unwrap() {
            let lang = task["id"].as_str().unwrap();
            let output: serde_json::Value =
                serde_json::from_str(task["output"].as_str().unwrap()).unwrap();
            // "the quick brown fox jumps" (5 words), then "... and 5", "... and 7" (7 words).
            let words = if i == 0 { 5 } else { 7 };
            assert_eq!(output["words"], words, "{lang} in p{i}: {output}");
            assert_eq!(output["language"], lang, "{output}");
        }
    }

    // Record a task's request and a gate's report from the run, then replay them.
    let project = a.project("python-task");
    let out = phasegate(
        &project,
        &[
            "test",
            "--record",
            p.path("state.toml").to_str().unwrap(),
            "--phase",
            "p1",
            "--task",
            "python",
            "--fixtures",
            "recorded",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let recorded = std::fs::read_to_string(project.join("recorded/p1-python.toml")).unwrap();
    assert!(
        recorded.contains("input = \"the quick brown fox jumps and 5\""),
        "{recorded}"
    );
    assert!(recorded.contains("[expect.output]"), "{recorded}");
    assert!(recorded.contains("[limits]"), "{recorded}");
    // Recorded as the task was given it: without the grant, no earlier results.
    assert!(
        recorded.contains("[request.context.pipeline]") && !recorded.contains("phases"),
        "{recorded}"
    );
    let out = phasegate(&project, &["test", "--no-build", "--fixtures", "recorded"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PASS p1-python"),
        "{}",
        text(&out)
    );

    let gate_project = a.project("js-gate");
    let out = phasegate(
        &gate_project,
        &[
            "test",
            "--record",
            p.path("state.toml").to_str().unwrap(),
            "--phase",
            "p3",
            "--fixtures",
            "recorded",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let recorded = std::fs::read_to_string(gate_project.join("recorded/p3-gate.toml")).unwrap();
    assert!(recorded.contains("[[report.outcome]]"), "{recorded}");
    assert!(recorded.contains("verdict = \"pass\""), "{recorded}");
    // The granted gate was given the earlier phases, and the fixture replays under the grant.
    assert!(
        recorded.contains("[report.context.phases.p2.tasks.rust.output]"),
        "{recorded}"
    );
    // Only the earlier phases, as the runner gave them: the phase's own results are outcomes.
    assert!(
        !recorded.contains("[report.context.phases.p3"),
        "{recorded}"
    );
    assert!(recorded.contains("context = true"), "{recorded}");
    let out = phasegate(
        &gate_project,
        &["test", "--no-build", "--fixtures", "recorded"],
    );
    assert!(out.status.success(), "{}", text(&out));

    // The same recorded report replayed against a stricter gate in another language: a
    // fixture is a contract, so the C gate must give the same verdict.
    let out = phasegate(
        &a.project("c-gate"),
        &[
            "test",
            "--no-build",
            "--fixtures",
            gate_project.join("recorded").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_missing_toolchain_is_named_with_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = phasegate(dir.path(), &["new", "task", "lonely", "--lang", "python"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_phasegate"))
        .args(["build", "lonely"])
        .current_dir(dir.path())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("`componentize-py` was not found"), "{all}");
    assert!(all.contains("pip install componentize-py"), "{all}");
    assert!(!dir.path().join("lonely/build").exists(), "{all}");

    let out = phasegate(dir.path(), &["new", "task", "lonely", "--lang", "c"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("already exists and is not empty"));
    let out = phasegate(dir.path(), &["new", "task", "Bad_Name", "--lang", "c"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("cannot name a plugin"));
}

#[test]
fn build_refuses_a_component_of_the_wrong_kind_and_bad_fixtures() {
    let a = authored();
    let dir = tempfile::tempdir().unwrap();
    // A "gate" project whose build produces a task component.
    let liar = dir.path().join("liar");
    std::fs::create_dir_all(&liar).unwrap();
    std::fs::write(
        liar.join("plugin.toml"),
        format!(
            "[plugin]\nname = \"liar\"\nkind = \"gate\"\nlanguage = \"c\"\n[build]\ncommand = \"cp '{}' liar.wasm\"\noutput = \"liar.wasm\"\n",
            a.component("c", "task").display()
        ),
    )
    .unwrap();
    let out = phasegate(dir.path(), &["build", "liar"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(
            "implements phasegate:plugin/task@0.1.0, but plugin.toml says `kind = \"gate\"`"
        ),
        "{all}"
    );

    // A gate fixture given to a task, and a fixture with a typo: both named, exit 2.
    let fixtures = dir.path().join("bad");
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::write(
        fixtures.join("gate-shaped.toml"),
        "[report]\n[expect]\nverdict = \"pass\"\n",
    )
    .unwrap();
    let component = a.component("c", "task");
    let out = phasegate(
        dir.path(),
        &["test", component.to_str().unwrap(), "--fixtures", "bad"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("gate-shaped.toml: a task fixture needs a `[request]` table"),
        "{all}"
    );
    std::fs::write(
        fixtures.join("typo.toml"),
        "[request]\ninput = \"x\"\n[expect]\noutputt = 1\n",
    )
    .unwrap();
    let out = phasegate(
        dir.path(),
        &["test", component.to_str().unwrap(), "--fixtures", "bad"],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("typo.toml:4:1: unknown field `outputt`"),
        "{all}"
    );
}

/// The Rust SDK's allocator region (`arena` in plugin-sdk/src/lib.rs), in a real instance: blocks
/// allocated, grown, shrunk and freed in random order read back what was written, whether they
/// stay in the region or outgrow it into the standard allocator; and a task that stays in the
/// region never grows the instance's memory (the page-protection changes it saves are what
/// BENCHMARKS.md [1] measures).
#[test]
fn the_rust_sdk_allocator_keeps_small_tasks_in_its_region_and_hands_over_when_full() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "churn"
[[phase]]
id = "churn"
[[phase.task]]
id = "small"
plugin = "{ALLOC_CHURN}"
config = { rounds = 600, max = 96 }
[[phase.task]]
id = "small-other-seed"
plugin = "{ALLOC_CHURN}"
config = { rounds = 600, max = 96, seed = 12345 }
[[phase.task]]
id = "outgrows"
plugin = "{ALLOC_CHURN}"
config = { rounds = 3000, max = 4000 }
[[phase.task]]
id = "large-blocks"
plugin = "{ALLOC_CHURN}"
config = { rounds = 200, max = 300000, seed = 7 }
"#,
    );
    let r = p.run_json(&["run", "pipeline.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let tasks = &r.outcome()["context"]["phases"]["churn"]["tasks"];
    for id in ["small", "small-other-seed", "outgrows", "large-blocks"] {
        assert_eq!(tasks[id]["status"], "succeeded", "{id}: {}", tasks[id]);
        assert!(tasks[id]["output"]["checked"].as_u64().unwrap() > 0, "{id}");
    }
    let size = tasks["small"]["output"]["region-size"].as_u64().unwrap();
    for id in ["small", "small-other-seed"] {
        let out = &tasks[id]["output"];
        let peak = out["peak-region"].as_u64().unwrap();
        assert!(peak > 0 && peak < size, "{id} used the region: {out}");
        assert_eq!(out["memory-grew"], false, "{id}: {out}");
    }
    for id in ["outgrows", "large-blocks"] {
        let out = &tasks[id]["output"];
        assert_eq!(out["memory-grew"], true, "{id} left the region: {out}");
    }
}

#[test]
fn a_build_failure_with_a_known_cause_gets_a_hint() {
    let a = authored();
    let dir = scratch(a);
    let copy = copy_project(a, "python-gate", dir.path());
    // The import that looks unused, removed as a linter would.
    let app = copy.join("app.py");
    let source = std::fs::read_to_string(&app).unwrap();
    let without: String = source
        .lines()
        .filter(|l| !l.contains("import WitWorld"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(source, without);
    std::fs::write(&app, without).unwrap();
    let out = phasegate(dir.path(), &["build", "python-gate"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("help: componentize-py looks for a class named `WitWorld`")
            && all.contains("keep `from phasegate_plugin import WitWorld` in app.py"),
        "{all}"
    );
    // The build's own output still reaches the author.
    assert!(all.contains("has no attribute 'WitWorld'"), "{all}");
}

/// Copies the authored project `name` (with what it has built) into `dir`, as `name`.
///
/// Other tests run in the authored projects at the same time, and a build or cache write there
/// may remove a file between listing a directory and copying it: such a file is skipped, as
/// the copy wants the project and its last build, not a file written in passing.
///
/// A Rust project's `target/` holds ~150 MB of its dependencies' builds, which a build of the
/// copy reads and never writes: those files are hard-linked when `dir` is on the same file
/// system (see [`scratch`]), so a copy costs its own crates' files only. Anything whose path
/// names one of the project's own crates (itself and the SDK it carries: outputs, fingerprints,
/// dep-info, build-script output) and cargo's lock are copied, as a build of the copy rewrites
/// them.
fn copy_project(a: &Authored, name: &str, dir: &Path) -> PathBuf {
    let copy = dir.join(name);
    let own: Vec<String> = [name, "phasegate-plugin-sdk"]
        .iter()
        .flat_map(|crate_name| [crate_name.to_string(), crate_name.replace('-', "_")])
        .collect();
    let shared = |relative: &Path| {
        let mut parts = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy());
        parts.next().is_some_and(|first| first == "target")
            && !relative.ends_with(".cargo-lock")
            && !parts.any(|part| own.iter().any(|o| part.contains(o.as_str())))
    };
    copy_tree(&a.project(name), &copy, Path::new(""), &shared);
    copy
}

/// A temporary directory beside the authored projects, on their file system, so that
/// [`copy_project`] can link instead of copy.
fn scratch(a: &Authored) -> tempfile::TempDir {
    let parent = a
        .dir
        .parent()
        .expect("the authored projects have a parent directory");
    tempfile::tempdir_in(parent).unwrap()
}

fn copy_tree(from: &Path, to: &Path, relative: &Path, shared: &dyn Fn(&Path) -> bool) {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return,
        Err(e) => panic!("listing {}: {e}", from.display()),
    };
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", from.display()));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let inside = relative.join(entry.file_name());
        let kind = match entry.file_type() {
            Ok(kind) => kind,
            Err(e) if gone(&e) => continue,
            Err(e) => panic!("reading {}: {e}", source.display()),
        };
        let copied = if kind.is_dir() {
            copy_tree(&source, &target, &inside, shared);
            Ok(())
        } else if kind.is_symlink() {
            std::fs::read_link(&source).and_then(|link| std::os::unix::fs::symlink(link, &target))
        } else if shared(&inside) {
            // Another file system (or one without links): copied after all.
            std::fs::hard_link(&source, &target)
                .or_else(|_| std::fs::copy(&source, &target).map(|_| ()))
        } else {
            std::fs::copy(&source, &target).map(|_| ())
        };
        match copied {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => panic!("copying {} to {}: {e}", source.display(), target.display()),
        }
    }
}

#[test]
fn every_sdk_turns_an_unserialisable_result_into_a_clear_failure() {
    let a = authored();
    let dir = scratch(a);
    // Per language: a task whose output JSON cannot hold, a gate whose evidence it cannot hold.
    let sources = [
        (
            "python",
            "app.py",
            "import json\nimport phasegate_plugin as pg\nfrom phasegate_plugin import WitWorld  # noqa: F401\n\n@pg.task(name=\"bad\", version=\"0.1.0\")\ndef run(req: pg.Request):\n    if req.input == \"twice\":\n        return json.dumps({\"words\": 2})\n    return {\"tags\": {1, 2}}\n",
            "import phasegate_plugin as pg\nfrom phasegate_plugin import WitWorld  # noqa: F401\n\n@pg.gate(name=\"bad\", version=\"0.1.0\")\ndef check(report: pg.Report):\n    return pg.Verdict.pass_(\"fine\", {\"tags\": {1, 2}})\n",
        ),
        (
            "js",
            "app.js",
            "import { task } from \"./phasegate-plugin.js\";\nexport const { metadata, run } = task({\n  name: \"bad\",\n  version: \"0.1.0\",\n  run(req) {\n    return req.input === \"twice\" ? JSON.stringify({ words: 2 }) : { n: 1n };\n  },\n});\n",
            "import { gate, Verdict } from \"./phasegate-plugin.js\";\nexport const { metadata, check } = gate({\n  name: \"bad\",\n  version: \"0.1.0\",\n  check(report) {\n    return Verdict.pass(\"fine\", { n: 1n });\n  },\n});\n",
        ),
        (
            "rust",
            "src/lib.rs",
            "use std::collections::BTreeMap;\nuse phasegate_plugin_sdk::{Request, Result, Task};\nuse serde_json::Value;\nstruct Plugin;\nimpl Task for Plugin {\n    type Input = Value;\n    type Config = Value;\n    type Output = Value;\n    fn run(req: Request<Value, Value>) -> Result<Value> {\n        if req.input == \"twice\" {\n            return Ok(Value::String(serde_json::json!({\"words\": 2}).to_string()));\n        }\n        // Keys that are not strings: serde_json refuses them.\n        let bad = BTreeMap::from([((1u8, 2u8), 3u8)]);\n        Ok(serde_json::to_value(bad).map_err(|e| phasegate_plugin_sdk::Error::failed(format!(\"cannot serialise output: {e}\")))?)\n    }\n}\nphasegate_plugin_sdk::export_task!(Plugin);\n",
            "use std::collections::BTreeMap;\nuse phasegate_plugin_sdk::{Gate, Report, Verdict};\nuse serde_json::Value;\nstruct Plugin;\nimpl Gate for Plugin {\n    type Config = Value;\n    fn check(_: Report<Value>) -> Verdict {\n        Verdict::pass(\"fine\").with_evidence(BTreeMap::from([((1u8, 2u8), 3u8)]))\n    }\n}\nphasegate_plugin_sdk::export_gate!(Plugin);\n",
        ),
    ];
    for (lang, file, task_source, gate_source) in sources {
        // What the task returns for "twice": its own encoding of {"words": 2}, as a string.
        let encoded = if lang == "python" {
            r#"{\"words\": 2}"#
        } else {
            r#"{\"words\":2}"#
        };
        let twice = format!("[request]\ninput = \"twice\"\n[expect]\noutput = \"{encoded}\"\n");
        for (kind, source, fixtures) in [
            (
                "task",
                task_source,
                vec![
                    (
                        "unserialisable.toml",
                        "[request]\ninput = \"x\"\n[expect]\nerror = \"failed\"\nmessage-contains = \"cannot serialise output\"\n",
                    ),
                    ("twice.toml", twice.as_str()),
                ],
            ),
            (
                "gate",
                gate_source,
                vec![(
                    "unserialisable.toml",
                    "[report]\n[[report.outcome]]\ntask = \"a\"\noutput = 1\n[expect]\nverdict = \"fail\"\nreason-contains = \"cannot serialise evidence\"\n",
                )],
            ),
        ] {
            let name = format!("{lang}-{kind}");
            let project = copy_project(a, &name, dir.path());
            std::fs::write(project.join(file), source).unwrap();
            let bad = project.join("bad-fixtures");
            std::fs::create_dir_all(&bad).unwrap();
            for (fixture, text) in &fixtures {
                std::fs::write(bad.join(fixture), text).unwrap();
            }
            let out = phasegate(&project, &["test", "--fixtures", "bad-fixtures"]);
            let all = text(&out);
            assert!(out.status.success(), "{name}: {all}");
            assert!(all.contains("PASS unserialisable"), "{name}: {all}");
            if kind == "task" {
                // Passes as written, but the double encoding is pointed out.
                assert!(all.contains("PASS twice"), "{name}: {all}");
                assert!(
                    all.contains("warning: the output is a string that holds JSON"),
                    "{name}: {all}"
                );
            }
        }
    }
}

#[test]
fn a_build_inside_a_project_warms_the_projects_compile_cache() {
    let a = authored();
    let dir = scratch(a);
    let root = dir.path();
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    let project = copy_project(a, "c-task", &root.join("plugins"));
    std::fs::remove_dir_all(project.join("build")).unwrap();
    std::fs::write(
        root.join("pipeline.toml"),
        "name = \"warm\"\n[[phase]]\nid = \"one\"\n[[phase.task]]\nid = \"a\"\nplugin = \"plugins/c-task/build/c-task.wasm\"\ninput = \"one two\"\n",
    )
    .unwrap();
    // The caches as a user has them: the project's, and a home of its own.
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_phasegate"))
            .args(args)
            .current_dir(root)
            .env("PATH", path_with_toolchains())
            .env_remove("PHASEGATE_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME")
            .env("HOME", root.join("home"))
            .output()
            .unwrap()
    };
    std::fs::write(root.join(phasegate_store::LOCK_FILE), "version = 1\n").unwrap();
    let out = run(&["build", "plugins/c-task"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(root.join(".phasegate/compiled").is_dir(), "{}", text(&out));
    // The first look at the pipeline finds the component compiled already.
    let out = run(&["validate", "pipeline.toml"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(shown.contains("loaded from the compile cache"), "{shown}");
}

#[test]
fn an_unchanged_project_is_not_rebuilt_so_its_digest_stays() {
    let a = authored();
    let dir = scratch(a);
    let project = copy_project(a, "python-task", dir.path());
    let digest = |out: &Output| {
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap_or_else(|| panic!("no digest: {}", text(out)))
            .trim_end_matches(';')
            .to_owned()
    };
    let first = phasegate(dir.path(), &["build", "python-task"]);
    assert!(first.status.success(), "{}", text(&first));
    // Built again from the same sources (as `phasegate test` does first): kept as it is.
    let again = phasegate(dir.path(), &["build", "python-task"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("python-task is up to date"),
        "{}",
        text(&again)
    );
    assert_eq!(digest(&again), digest(&first));
    let tested = phasegate(&project, &["test"]);
    assert!(tested.status.success(), "{}", text(&tested));
    assert!(text(&tested).contains("up to date"), "{}", text(&tested));
    // A changed source is built; so is anything with --rebuild.
    let app = project.join("app.py");
    let source = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{source}\n# changed\n")).unwrap();
    let changed = phasegate(dir.path(), &["build", "python-task"]);
    assert!(changed.status.success(), "{}", text(&changed));
    assert!(!text(&changed).contains("up to date"), "{}", text(&changed));
    let forced = phasegate(dir.path(), &["build", "python-task", "--rebuild"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(!text(&forced).contains("up to date"), "{}", text(&forced));
    assert!(
        text(&forced).contains("Component built successfully"),
        "{}",
        text(&forced)
    );
}
