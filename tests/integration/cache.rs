//! The result cache through the CLI, with real components: what hits, what never does, and what
//! an edit, a damaged entry or two runs at once do to it.

use std::collections::BTreeMap;

use crate::harness::{Project, RunResult, by_id, stderr_of};

/// Two tasks read a file of their own read-only directory, one is given an environment variable,
/// one reads the first one's output, and the last one's input is refused (so the run fails, at
/// its last phase). All deterministic.
const PIPELINE: &str = r#"
name = "cached"
[[phase]]
id = "read"
[[phase.task]]
id = "a"
plugin = "{HOSTILE}"
config = { attack = "read-file", path = "/data/a.txt" }
grants = { deterministic = true, dirs = [{ host = "dir-a", guest = "/data" }] }
[[phase.task]]
id = "b"
plugin = "{HOSTILE}"
config = { attack = "read-file", path = "/data/b.txt" }
grants = { deterministic = true, dirs = [{ host = "dir-b", guest = "/data" }] }
[[phase.task]]
id = "env"
plugin = "{HOSTILE}"
config = { attack = "env", var = "CACHE_TEST_VALUE" }
grants = { deterministic = true, env = ["CACHE_TEST_VALUE"] }
[[phase]]
id = "after"
[[phase.task]]
id = "use"
plugin = "{PROBE}"
input = "{{ phases.read.tasks.a.output.breach }}"
grants = { deterministic = true }
[[phase]]
id = "last"
[[phase.task]]
id = "refused"
plugin = "{PROBE}"
config = { invalid-input = "never valid" }
grants = { deterministic = true }
"#;

fn project() -> Project {
    let p = Project::new();
    for (dir, text) in [("dir-a", "alpha"), ("dir-b", "bravo")] {
        std::fs::create_dir(p.path(dir)).unwrap();
        std::fs::write(p.path(&format!("{dir}/{}.txt", &dir[4..])), text).unwrap();
    }
    p.pipeline(PIPELINE);
    p
}

/// Writes `text` (as long as what `file` holds) into `file` and sets its modification time back:
/// an edit only the contents (and the status-change time) show.
fn edit_keeping_size_and_time(file: &std::path::Path, text: &str) {
    let before = std::fs::metadata(file).unwrap();
    assert_eq!(before.len(), text.len() as u64);
    std::fs::write(file, text).unwrap();
    std::fs::File::options()
        .append(true)
        .open(file)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
}

/// Runs the pipeline from the start (a run that failed is replaced).
fn run(p: &Project, extra: &[&str]) -> RunResult {
    let mut args = vec!["run", "pipeline.toml", "--fresh"];
    args.extend(extra);
    let mut cmd_args: Vec<&str> = args.clone();
    cmd_args.extend(["--format", "json"]);
    let out = p
        .command(&cmd_args)
        .env("CACHE_TEST_VALUE", "from the host")
        .output()
        .unwrap();
    RunResult {
        code: out.status.code().unwrap_or(-1),
        events: crate::harness::parse_events(&String::from_utf8_lossy(&out.stdout)),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The tasks that ran (started an attempt), and the ones taken from the cache.
fn ran_and_cached(r: &RunResult) -> (Vec<String>, Vec<String>) {
    let ids = |kind: &str, cached: bool| -> Vec<String> {
        let mut ids: Vec<String> = r
            .of(kind)
            .into_iter()
            .filter(|e| kind == "task-started" || e.get("cached").is_some() == cached)
            .map(|e| e["task"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    (ids("task-started", false), ids("task-finished", true))
}

#[test]
fn only_what_changed_runs_again_and_impure_or_failed_tasks_never_hit() {
    let p = project();
    let first = run(&p, &[]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    let (ran, cached) = ran_and_cached(&first);
    assert_eq!(ran, ["a", "b", "env", "refused", "use"]);
    assert!(cached.is_empty(), "{cached:?}");

    // Everything pure and lasting comes from the cache; the env-granted task runs.
    let second = run(&p, &[]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    let (ran, cached) = ran_and_cached(&second);
    assert_eq!(ran, ["env"]);
    assert_eq!(cached, ["a", "b", "refused", "use"]);
    let state = p.state(".phasegate/state.toml");
    let a = by_id(&by_id(&state["phase"], "read")["task"], "a");
    assert_eq!(a["cached"], true, "{a}");
    assert!(a["key"].as_str().unwrap().starts_with("sha256:"), "{a}");
    assert!(a["output"].as_str().unwrap().contains("alpha"), "{a}");
    let hit = second
        .of("task-finished")
        .into_iter()
        .find(|e| e["task"] == "a")
        .unwrap()
        .clone();
    assert_eq!(hit["cached"], a["key"], "the event names the key");

    // One byte of one file, same size and modification time: only its reader and what reads
    // its output run again.
    edit_keeping_size_and_time(&p.path("dir-b/b.txt"), "braVo");
    let third = run(&p, &[]);
    assert_eq!(ran_and_cached(&third).0, ["b", "env"]);
    let state = p.state(".phasegate/state.toml");
    let b = by_id(&by_id(&state["phase"], "read")["task"], "b");
    assert!(b["output"].as_str().unwrap().contains("braVo"), "{b}");

    // A config edit: that task, then its reader.
    let text = std::fs::read_to_string(p.path("pipeline.toml")).unwrap();
    std::fs::write(
        p.path("pipeline.toml"),
        text.replace(
            "path = \"/data/a.txt\" }",
            "path = \"/data/a.txt\", bytes = 1 }",
        ),
    )
    .unwrap();
    assert_eq!(ran_and_cached(&run(&p, &[])).0, ["a", "env"]);

    // `--no-cache` runs everything; `cache = false` opts one task out.
    assert_eq!(
        ran_and_cached(&run(&p, &["--no-cache"])).0,
        ["a", "b", "env", "refused", "use"]
    );
    let text = std::fs::read_to_string(p.path("pipeline.toml")).unwrap();
    std::fs::write(
        p.path("pipeline.toml"),
        text.replace("id = \"b\"\n", "id = \"b\"\ncache = false\n"),
    )
    .unwrap();
    assert_eq!(ran_and_cached(&run(&p, &[])).0, ["b", "env"]);

    // validate says which tasks are cached, and why the others are not.
    let out = p.output(&["validate", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("not cached: reads host environment variables (CACHE_TEST_VALUE)"),
        "{said}"
    );
    assert!(said.contains("not cached: `cache = false`"), "{said}");
    assert!(
        said.contains("result cache: 3 of 5 task(s) cacheable"),
        "{said}"
    );
}

#[test]
fn failures_are_not_cached_and_clocks_make_a_task_uncacheable() {
    let p = Project::new();
    p.pipeline(
        r#"
name = "impure"
[[phase]]
id = "one"
[[phase.task]]
id = "failing"
plugin = "{PROBE}"
config = { fail = "not today" }
grants = { deterministic = true }
[[phase.task]]
id = "clock"
plugin = "{HOSTILE}"
config = { attack = "clock" }
"#,
    );
    for _ in 0..2 {
        let r = run(&p, &[]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert_eq!(ran_and_cached(&r).0, ["clock", "failing"]);
    }
    let out = p.output(&["validate", "pipeline.toml"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("not cached: may read the host's clocks and random (grant `deterministic = true` to fix them)"),
        "{said}"
    );
}

#[test]
fn a_damaged_entry_is_reported_removed_and_run_again() {
    let p = project();
    assert_eq!(run(&p, &[]).code, 1);
    // Damage every entry: one byte of each outcome line (`E <key> <at> <digest> <json>`).
    let mut damaged = 0;
    for file in std::fs::read_dir(p.path(".phasegate/cache")).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let ends: Vec<usize> = (1..bytes.len())
            .filter(|&i| {
                bytes[i] == b'\n'
                    && bytes[..i]
                        .rsplit(|&b| b == b'\n')
                        .next()
                        .is_some_and(|l| l.starts_with(b"E "))
            })
            .collect();
        for end in ends {
            bytes[end - 2] ^= 0x20;
            damaged += 1;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    assert_eq!(damaged, 4, "a, b, refused and use are cached");
    let r = run(&p, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(ran_and_cached(&r).0, ["a", "b", "env", "refused", "use"]);
    let problems = r.of("cache-problem");
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(
        problems[0]["message"].as_str().unwrap().contains(
            "is damaged (its contents do not match their digest); it was removed and the task runs"
        ),
        "{problems:?}"
    );
    // Filed again, whole.
    assert_eq!(ran_and_cached(&run(&p, &[])).0, ["env"]);
}

#[test]
fn runs_filling_the_cache_at_once_share_it() {
    let p = Project::new();
    let mut text = String::from("name = \"many\"\n[[phase]]\nid = \"one\"\n");
    for i in 0..40 {
        text.push_str(&format!(
            "[[phase.task]]\nid = \"t{i}\"\nplugin = \"{{PROBE}}\"\ninput = \"{i}\"\ngrants = {{ deterministic = true }}\n"
        ));
    }
    p.pipeline(&text);
    let children: Vec<_> = (0..3)
        .map(|i| {
            p.command(&[
                "run",
                "pipeline.toml",
                "--state",
                &format!("run-{i}.toml"),
                "--format",
                "json",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
    let stats = p.output(&["cache", "stats"]);
    let said = String::from_utf8_lossy(&stats.stdout);
    assert!(said.contains("40 result(s)"), "{said}");
    // Every entry whole: a fourth run takes all 40, with the outputs each task made.
    let r = p.run_json(&["run", "pipeline.toml", "--state", "run-3.toml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (ran, cached) = ran_and_cached(&r);
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(cached.len(), 40);
    assert!(r.of("cache-problem").is_empty());
    let state = p.state("run-3.toml");
    let outputs: BTreeMap<String, serde_json::Value> = state["phase"][0]["task"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let output: serde_json::Value =
                serde_json::from_str(t["output"].as_str().unwrap()).unwrap();
            (t["id"].as_str().unwrap().to_owned(), output)
        })
        .collect();
    for i in 0..40 {
        let output = &outputs[&format!("t{i}")];
        assert_eq!(output["task"], format!("t{i}"), "{output}");
        assert_eq!(output["input"], i, "{output}");
    }

    // Pruning what was not used for a day keeps them; pruning everything empties it.
    let kept = p.output(&["cache", "prune", "--older-than", "1d"]);
    assert!(
        String::from_utf8_lossy(&kept.stdout).contains("removed 0 result(s) not used for 1day"),
        "{}",
        String::from_utf8_lossy(&kept.stdout)
    );
    let all = p.output(&["cache", "prune"]);
    assert!(
        String::from_utf8_lossy(&all.stdout).contains("removed 40 result(s)"),
        "{}",
        String::from_utf8_lossy(&all.stdout)
    );
    let stats = p.output(&["cache", "stats"]);
    assert!(String::from_utf8_lossy(&stats.stdout).contains("empty"));
    let bad = p.output(&["cache", "prune", "--older-than", "soon"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr_of(&bad).contains("write a duration such as `7d`"));
}

#[test]
fn a_cache_that_cannot_be_used_is_said_once_per_phase_and_the_run_goes_on() {
    let p = project();
    // The cache's folder is a file: nothing can be read from it or written to it.
    std::fs::create_dir(p.path(".phasegate")).unwrap();
    std::fs::write(p.path(".phasegate/cache"), "not a folder").unwrap();
    let r = run(&p, &[]);
    assert_eq!(
        r.code, 1,
        "the refused task fails the run, as always: {}",
        r.stderr
    );
    assert_eq!(ran_and_cached(&r).0, ["a", "b", "env", "refused", "use"]);
    let problems = r.of("cache-problem");
    let said = |phase: &str, what: &str| {
        problems
            .iter()
            .filter(|e| e["phase"] == phase && e["message"].as_str().unwrap().contains(what))
            .count()
    };
    // Each phase with a task that may be cached: one read problem, one write problem.
    for phase in ["read", "after", "last"] {
        assert_eq!(said(phase, "cannot read"), 1, "{phase}: {problems:?}");
        assert_eq!(
            said(phase, "results of this phase are not cached"),
            1,
            "{phase}: {problems:?}"
        );
    }
    assert_eq!(problems.len(), 6, "{problems:?}");
    let unwritten = problems
        .iter()
        .find(|e| e["phase"] == "read" && e["message"].as_str().unwrap().contains("cannot write"))
        .unwrap();
    assert!(
        ["a", "b"].contains(&unwritten["task"].as_str().unwrap()),
        "the first task whose outcome was not filed: {unwritten}"
    );
    // Everything the tasks did is in the progress file.
    let state = p.state(".phasegate/state.toml");
    let a = by_id(&by_id(&state["phase"], "read")["task"], "a");
    assert!(a["output"].as_str().unwrap().contains("alpha"), "{a}");

    // Once the folder can be made, the cache fills and serves again.
    std::fs::remove_file(p.path(".phasegate/cache")).unwrap();
    assert_eq!(
        ran_and_cached(&run(&p, &[])).0,
        ["a", "b", "env", "refused", "use"]
    );
    let r = run(&p, &[]);
    assert!(
        r.of("cache-problem").is_empty(),
        "{:?}",
        r.of("cache-problem")
    );
    assert_eq!(ran_and_cached(&r).0, ["env"]);
}

/// Two phases whose tasks read the same file of one read-only directory (a gigabyte of data
/// granted this way was read once per phase and per run to make the tasks' keys).
const TREE_PIPELINE: &str = r#"
name = "trees"
[[phase]]
id = "one"
[[phase.task]]
id = "read"
plugin = "{HOSTILE}"
config = { attack = "read-file", path = "/data/b.txt" }
grants = { deterministic = true, dirs = [{ host = "data", guest = "/data" }] }
[[phase]]
id = "two"
[[phase.task]]
id = "again"
plugin = "{HOSTILE}"
config = { attack = "read-file", path = "/data/b.txt" }
grants = { deterministic = true, dirs = [{ host = "data", guest = "/data" }] }
"#;

/// Per phase, the files of its read-only tree and how many of them were read for the keys.
fn tree_reads(r: &RunResult) -> Vec<(String, u64, u64)> {
    r.of("tree-digested")
        .into_iter()
        .map(|e| {
            (
                e["phase"].as_str().unwrap().to_owned(),
                e["files"].as_u64().unwrap(),
                e["read"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_read_only_tree_is_read_again_only_where_a_file_changed() {
    let p = Project::new();
    std::fs::create_dir(p.path("data")).unwrap();
    std::fs::write(p.path("data/a.txt"), "alpha").unwrap();
    std::fs::write(p.path("data/b.txt"), "bravo").unwrap();
    p.pipeline(TREE_PIPELINE);
    // A file changed less than this long ago is read every time (two writes in one tick of the
    // file system's clock would leave the same times).
    std::thread::sleep(phasegate_runner::tree::SETTLE + std::time::Duration::from_millis(100));

    let first = run(&p, &[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(
        tree_reads(&first),
        [("one".into(), 2, 2), ("two".into(), 2, 0)]
    );
    assert!(p.path(".phasegate/trees").is_file());

    // Another run: nothing read, every outcome from the cache.
    let second = run(&p, &[]);
    assert_eq!(
        tree_reads(&second),
        [("one".into(), 2, 0), ("two".into(), 2, 0)]
    );
    assert_eq!(
        ran_and_cached(&second),
        (vec![], vec!["again".into(), "read".into()])
    );

    // One byte of one file, the same size and modification time: that file is read (in both
    // phases: it changed just now), the keys change, and the tasks see the new text.
    edit_keeping_size_and_time(&p.path("data/b.txt"), "braVo");
    let third = run(&p, &[]);
    assert_eq!(third.code, 0, "{}", third.stderr);
    assert_eq!(
        tree_reads(&third),
        [("one".into(), 2, 1), ("two".into(), 2, 1)]
    );
    assert_eq!(ran_and_cached(&third).0, ["again", "read"]);
    let state = p.state(".phasegate/state.toml");
    for (phase, task) in [("one", "read"), ("two", "again")] {
        let t = by_id(&by_id(&state["phase"], phase)["task"], task);
        assert!(t["output"].as_str().unwrap().contains("braVo"), "{t}");
    }

    // Without the memo (removing it is always safe) every file is read once more.
    std::fs::remove_file(p.path(".phasegate/trees")).unwrap();
    let fourth = run(&p, &[]);
    assert_eq!(tree_reads(&fourth)[0], ("one".into(), 2, 2));
    assert_eq!(ran_and_cached(&fourth).1, ["again", "read"]);
}
