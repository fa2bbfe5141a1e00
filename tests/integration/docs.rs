//! The documentation stays true: every relative link in the Markdown files leads somewhere, the
//! README's first pipeline is the example file and runs, and the patch BENCHMARKS.md measures
//! with still applies.

use crate::harness::Project;

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation other than `-` and `_`
/// dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
            }
            !fenced && l.starts_with('#')
        })
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// `[text](target)` links outside code blocks and code spans.
fn links(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    for (n, line) in markdown.lines().enumerate() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        // Drop code spans: a `](` inside backticks is not a link.
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((n + 1, after[..end].to_owned()));
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_docs_leads_somewhere() {
    let root = crate::harness::repo_root();
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    let mut dead = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (line, target) in links(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !resolved.exists() {
                dead.push(format!(
                    "{}:{line}: `{target}` does not exist",
                    file.display()
                ));
                continue;
            }
            if let Some(fragment) = fragment
                && resolved.extension().is_some_and(|e| e == "md")
            {
                let headings = anchors(&std::fs::read_to_string(&resolved).unwrap());
                if !headings.iter().any(|h| h == fragment) {
                    dead.push(format!(
                        "{}:{line}: `{target}`: no heading `#{fragment}` in {}",
                        file.display(),
                        resolved.display()
                    ));
                }
            }
        }
    }
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
    assert!(
        checked > 20,
        "only {checked} links found: is the scan broken?"
    );
}

#[test]
fn the_link_scan_finds_links_and_anchors() {
    let md = "see [a](docs/a.md#x-y) and `[not](a link)`\n```\n[no](code)\n```\n# X y!\n";
    assert_eq!(links(md), vec![(1, "docs/a.md#x-y".to_owned())]);
    assert_eq!(anchors(md), vec!["x-y".to_owned()]);
    assert_eq!(anchor(" The lock and `--locked`"), "the-lock-and---locked");
}

#[test]
fn the_readme_first_pipeline_is_the_example_and_runs() {
    let root = crate::harness::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/first.toml")).unwrap();
    assert!(
        readme.contains(&format!("```toml\n{example}```")),
        "README.md's first pipeline differs from examples/first.toml"
    );
    // The same pipeline, with the built-in plugins this suite built.
    let project = Project::new();
    let text = example
        .replace("../target/plugins/all_succeeded.wasm", "{ALL_SUCCEEDED}")
        .replace("../target/plugins/text_stats.wasm", "{TEXT_STATS}")
        .replace("../target/plugins/json_reshape.wasm", "{JSON_RESHAPE}");
    project.pipeline(&text);
    let run = project.run_json(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let finished = run.events.last().unwrap();
    assert_eq!(finished["event"], "run-finished");
    let words = &finished["outcome"]["context"]["phases"]["report"]["tasks"]["words"]["output"];
    assert_eq!(words["words"], 9, "{finished}");
    assert_eq!(words["lines"], 1, "{finished}");
}

/// BENCHMARKS.md measures what a task's key and records cost with a build that can switch them
/// off, made by applying `host/cli/benches/without-records.patch`: it must still apply.
#[test]
fn the_benchmark_patch_that_switches_records_off_still_applies() {
    let root = crate::harness::repo_root();
    let patch = "host/cli/benches/without-records.patch";
    let check = std::process::Command::new("git")
        .args(["apply", "--check", patch])
        .current_dir(&root)
        .output()
        .expect("git runs");
    assert!(
        check.status.success(),
        "{patch} no longer applies to host/runner ({}); make the same changes by hand, then \
         `git diff host/runner > {patch}` and `git checkout host/runner`",
        String::from_utf8_lossy(&check.stderr).trim()
    );
    let text = std::fs::read_to_string(root.join(patch)).unwrap();
    for switch in [
        "\"key\"",
        "\"journal\"",
        "\"snapshot\"",
        "PHASEGATE_BENCH_OFF",
    ] {
        assert!(text.contains(switch), "{patch} lost its switch {switch}");
    }
}
