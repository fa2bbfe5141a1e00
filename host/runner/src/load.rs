//! Loading a pipeline file: the model validates the text; this answers what the text cannot
//! tell ([`Resolve`]): whether plugin files and granted directories exist, installed plugin
//! names through the project's lock, and what input templates refer to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use phasegate_model::error::{PipelineError, PipelineErrors};
use phasegate_model::pipeline::{
    EngineLimits, Grants, Limits, Pipeline, PluginRef, RawGrants, RawLimits, Resolve, Scope,
};
use phasegate_store::{Lock, Project};

use crate::template;

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, PipelineErrors> {
    let source = read_text(path).map_err(|e| {
        PipelineErrors::single(PipelineError {
            file: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read the pipeline file: {e}"),
            help: Some("check the path passed to phasegate".into()),
        })
    })?;
    parse(path, &source)
}

/// From this size on, a pipeline file is read in parts at once, one per loading thread: most of
/// reading a large file is the page faults of the memory it is read into, which then happen on
/// every core.
const READ_APART: u64 = 1 << 20;

/// The text of the file at `path`, as `std::fs::read_to_string` reads it (the same errors).
fn read_text(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let threads = phasegate_model::pipeline::loading_threads();
    let len = file.metadata()?.len();
    let Some(len) = usize::try_from(len)
        .ok()
        .filter(|_| len >= READ_APART && threads > 1)
    else {
        return std::fs::read_to_string(path);
    };
    let mut bytes = vec![0u8; len];
    let share = len.div_ceil(threads);
    let file = &file;
    let read_part =
        move |(i, part): (usize, &mut [u8])| file.read_exact_at(part, (i * share) as u64);
    let all_read = std::thread::scope(|scope| {
        let mut parts = bytes.chunks_mut(share).enumerate();
        let first = parts.next();
        // A thread the system refuses leaves its part unread: the file is then read whole.
        let others: Vec<_> = parts
            .map(|part| std::thread::Builder::new().spawn_scoped(scope, move || read_part(part)))
            .collect();
        let mut ok = first.is_none_or(|part| read_part(part).is_ok());
        for other in others {
            ok &= other.is_ok_and(|thread| thread.join().is_ok_and(|read| read.is_ok()));
        }
        ok
    });
    // Read whole and nothing more since (a file that changes while it is read is read again,
    // as is one that is not UTF-8, for `read_to_string`'s answer).
    let mut more = [0u8; 1];
    if !all_read || !file.read_at(&mut more, len as u64).is_ok_and(|n| n == 0) {
        return std::fs::read_to_string(path);
    }
    String::from_utf8(bytes).or_else(|_| std::fs::read_to_string(path))
}

/// Validates pipeline text read from `path` (relative paths in it are relative to its folder).
pub fn parse(path: &Path, source: &str) -> Result<Pipeline, PipelineErrors> {
    Pipeline::parse(path, source, &mut Resolver::default())
}

/// [`parse`] with the text read as one TOML document: the reference the fuzz target `pipeline`
/// compares [`parse`] with.
#[doc(hidden)]
pub fn parse_as_one_document(path: &Path, source: &str) -> Result<Pipeline, PipelineErrors> {
    Pipeline::parse_as_one_document(path, source, &mut Resolver::default())
}

/// Validates the `limits` and `grants` tables of one plugin outside a pipeline (a fixture
/// file), with the same checks, defaults and errors as for a pipeline task.
pub fn sandbox(
    path: &Path,
    source: &str,
    limits: &RawLimits,
    grants: &RawGrants,
) -> Result<(Limits, Grants, EngineLimits), PipelineErrors> {
    phasegate_model::pipeline::sandbox(path, source, limits, grants, &mut Resolver::default())
}

/// A plugin reference as far as it resolved, and `(message, help)` if it did not.
type Resolved = (Arc<PluginRef>, Option<(String, String)>);

/// Answers a pipeline's questions from the filesystem, the project's lock and the template
/// engine.
#[derive(Default)]
pub struct Resolver {
    /// The project and its lock, read on the first installed-plugin name.
    lock: Option<Result<(Project, Lock), String>>,
    /// Each plugin as written (and the folder it is relative to) resolved once: thousands of
    /// tasks name the same few plugins.
    plugins: HashMap<PathBuf, HashMap<String, Resolved>>,
    /// The last plugin asked for, and its folder: tasks that name a plugin mostly follow one
    /// that named the same, and comparing is cheaper than hashing two paths.
    last: Option<(PathBuf, String, Resolved)>,
}

impl Resolve for Resolver {
    fn plugin(&mut self, spec: &str, dir: &Path) -> Resolved {
        if let Some((_, _, known)) = self.last.as_ref().filter(|(d, s, _)| s == spec && d == dir) {
            return known.clone();
        }
        let resolved = match self.plugins.get(dir).and_then(|known| known.get(spec)) {
            Some(known) => known.clone(),
            None => {
                let (plugin, problem) = self.resolve_plugin(spec, dir);
                let resolved = (Arc::new(plugin), problem);
                self.plugins
                    .entry(dir.to_owned())
                    .or_default()
                    .insert(spec.to_owned(), resolved.clone());
                resolved
            }
        };
        self.last = Some((dir.to_owned(), spec.to_owned(), resolved.clone()));
        resolved
    }

    fn is_dir(&mut self, path: &Path) -> bool {
        path.is_dir()
    }

    fn template(&mut self, text: &str, scope: &Scope<'_>) -> Result<(), (String, String)> {
        template::check_template(text, scope)
    }

    fn fork(&self) -> Option<Box<dyn Resolve + Send>> {
        Some(Box::new(Resolver {
            lock: self.lock.clone(),
            plugins: self.plugins.clone(),
            last: None,
        }))
    }

    fn project(&mut self, dir: &Path) -> Option<PathBuf> {
        match &self.lock {
            Some(Ok((project, _))) => Some(project.root.clone()),
            _ => Project::find(dir).map(|p| p.root),
        }
    }
}

impl Resolver {
    /// Resolves a plugin as written: a component file's path or an installed plugin's name.
    fn resolve_plugin(&mut self, spec: &str, dir: &Path) -> (PluginRef, Option<(String, String)>) {
        if phasegate_store::is_installed_name(spec) {
            return self.installed(spec, dir);
        }
        let path = dir.join(spec);
        let problem = if spec.trim().is_empty() {
            Some(("empty `plugin`".to_owned(), "write the path of a component file, e.g. `plugin = \"plugins/text_stats.wasm\"`, or the name of an installed plugin".to_owned()))
        } else if !path.is_file() {
            let help = match nearby_component(spec, dir) {
                Some(near) => format!("did you mean `plugin = \"{near}\"`? Relative paths are relative to the pipeline file"),
                None => "build the plugin first (scripts/build-guests) or correct the path; relative paths are relative to the pipeline file".to_owned(),
            };
            Some((
                format!(
                    "plugin file `{spec}` not found (looked for {})",
                    path.display()
                ),
                help,
            ))
        } else {
            None
        };
        (
            PluginRef {
                spec: spec.to_owned(),
                path,
                installed: None,
                digest: None,
            },
            problem,
        )
    }

    /// Resolves an installed plugin's name through the project's lock to its stored file.
    fn installed(&mut self, name: &str, dir: &Path) -> (PluginRef, Option<(String, String)>) {
        let lock = self.lock.get_or_insert_with(|| {
            let project = Project::find(dir).ok_or_else(|| {
                format!(
                    "`{name}` names an installed plugin, but no {} was found in the pipeline's folder ({}) or any folder above it",
                    phasegate_store::LOCK_FILE,
                    std::fs::canonicalize(if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
                        .unwrap_or_else(|_| dir.to_owned())
                        .display()
                )
            })?;
            let lock = project.lock().map_err(|e| format!("{e:#}"))?;
            Ok((project, lock))
        });
        let resolved = match lock {
            Err(why) => Err((
                why.clone(),
                format!(
                    "install it with `phasegate plugin add SOURCE --name {name}` in the project's folder, or write the path of a component file (paths contain `/` or end in `.wasm`)"
                ),
            )),
            Ok((project, lock)) => match lock.plugin(name) {
                Some(p) => Ok((project.stored(&p.digest), p.digest.clone())),
                None => Err((
                    format!(
                        "plugin `{name}` is not installed (not in {}; installed: {})",
                        project.lock_path().display(),
                        if lock.plugins.is_empty() {
                            "none".to_owned()
                        } else {
                            lock.plugins
                                .iter()
                                .map(|p| p.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                    format!(
                        "install it with `phasegate plugin add SOURCE --name {name}`, or correct the name"
                    ),
                )),
            },
        };
        let (path, digest, problem) = match resolved {
            Ok((path, digest)) => (path, Some(digest), None),
            // A name that is meant as a file next to the pipeline (`text-stats` for
            // `text_stats.wasm`): say so before anything about installing.
            Err((message, help)) => {
                let help = match nearby_component(name, dir) {
                    Some(near) => format!(
                        "did you mean the component file `plugin = \"{near}\"`? (a name without `/` or `.wasm` is an installed plugin's name); or {help}"
                    ),
                    None => help,
                };
                (PathBuf::new(), None, Some((message, help)))
            }
        };
        (
            PluginRef {
                spec: name.to_owned(),
                path,
                installed: Some(name.to_owned()),
                digest,
            },
            problem,
        )
    }
}

/// A component file near what a plugin reference names, when one is a likely misspelling of
/// it: `.wasm` files in the folder the reference points into, and for a bare name also in the
/// pipeline's folder's immediate subfolders. The result is written as the pipeline would.
fn nearby_component(spec: &str, dir: &Path) -> Option<String> {
    let spec_path = Path::new(spec);
    let stem = spec_path.file_stem()?.to_str()?;
    let parent = spec_path.parent().unwrap_or(Path::new(""));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let mut folders = vec![parent.to_path_buf()];
    if parent.as_os_str().is_empty()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let mut subfolders: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| PathBuf::from(e.file_name()))
            .collect();
        subfolders.sort();
        folders.extend(subfolders);
    }
    let mut candidates: Vec<(String, String)> = Vec::new();
    for folder in folders {
        let Ok(entries) = std::fs::read_dir(dir.join(&folder)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = PathBuf::from(entry.file_name());
            if name.extension().is_some_and(|e| e == "wasm")
                && let Some(file_stem) = name.file_stem().and_then(|s| s.to_str())
            {
                let written = folder.join(&name).to_string_lossy().into_owned();
                candidates.push((file_stem.to_owned(), written));
            }
        }
    }
    candidates.sort();
    let near = phasegate_model::suggest::nearest(stem, candidates.iter().map(|(s, _)| s.as_str()))
        .or_else(|| {
            candidates
                .iter()
                .find(|(s, _)| s == stem)
                .map(|(s, _)| s.as_str())
        })?;
    candidates
        .iter()
        .find(|(s, _)| s == near)
        .map(|(_, written)| written.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_read_in_parts_is_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("large.toml");
        // Characters of 1 to 4 bytes, so that parts start inside one whatever their size.
        let text = "a\u{e9}\u{20ac}\u{1F600}\n".repeat((READ_APART as usize) / 5);
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_text(&path).unwrap(), text);
        // Not UTF-8 (the last part's last byte): `read_to_string`'s error.
        let mut bytes = text.into_bytes();
        *bytes.last_mut().unwrap() = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            read_text(&path).unwrap_err().to_string(),
            std::fs::read_to_string(&path).unwrap_err().to_string()
        );
        assert!(read_text(&dir.path().join("missing.toml")).is_err());
    }

    /// The loader's answers, on this thread only.
    struct OneThread(Resolver);

    impl Resolve for OneThread {
        fn plugin(&mut self, spec: &str, dir: &Path) -> Resolved {
            self.0.plugin(spec, dir)
        }
        fn is_dir(&mut self, path: &Path) -> bool {
            self.0.is_dir(path)
        }
        fn template(&mut self, text: &str, scope: &Scope<'_>) -> Result<(), (String, String)> {
            self.0.template(text, scope)
        }
        fn project(&mut self, dir: &Path) -> Option<PathBuf> {
            self.0.project(dir)
        }
    }

    /// A parallel and a sequential phase of 3,000 tasks each; with `problems`, a problem of
    /// every kind a task can have, spread over them (each thread's share has some).
    fn many_tasks(problems: bool) -> String {
        let mut text = String::from("name = \"many\"\n[vars]\nwho = \"w\"\n");
        for (phase, parallel) in [("one", true), ("two", false)] {
            text.push_str(&format!(
                "[[phase]]\nid = \"{phase}\"\nparallel = {parallel}\n"
            ));
            for i in 0..3_000 {
                let bad = |every: usize, at: usize| problems && i % every == at;
                let id = if bad(997, 5) {
                    "t1".to_owned()
                } else {
                    format!("t{i}")
                };
                let plugin = if bad(1_201, 7) {
                    "missing.wasm"
                } else {
                    "p.wasm"
                };
                let input = if bad(1_000, 3) {
                    "{{ vars.nobody }}".to_owned()
                } else if bad(1_000, 4) && !parallel {
                    format!("{{{{ phases.two.tasks.t{}.output }}}}", i + 1)
                } else if parallel {
                    format!("{{{{ vars.who }}}} {i}")
                } else if i == 0 {
                    "{{ phases.one.tasks.t0.output }}".to_owned()
                } else {
                    format!(
                        "{{{{ phases.one.tasks.t{i}.output }}}} {{{{ phases.two.tasks.t{}.output }}}}",
                        i - 1
                    )
                };
                text.push_str(&format!(
                    "[[phase.task]]\nid = \"{id}\"\nplugin = \"{plugin}\"\ninput = \"{input}\"\nconfig = {{ n = {i} }}\n"
                ));
                if bad(1_499, 2) {
                    text.push_str("limits = { descriptors = 0 }\n");
                }
                if bad(1_301, 11) {
                    text.push_str("grants = { env = [\"A=B\"] }\n");
                }
            }
        }
        text
    }

    #[test]
    fn a_large_phase_checked_on_several_threads_reads_as_checked_on_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let path = dir.path().join("pipeline.toml");

        let text = many_tasks(true);
        let threads = Pipeline::parse(&path, &text, &mut Resolver::default());
        let one = Pipeline::parse(&path, &text, &mut OneThread(Resolver::default()));
        let (Err(threads), Err(one)) = (threads, one) else {
            panic!("the problems were not found");
        };
        assert!(threads.0.len() >= 20, "{threads:?}");
        assert_eq!(threads.0, one.0);

        // Without problems: the same tasks, in the same order, with the same lines.
        let text = many_tasks(false);
        let threads = Pipeline::parse(&path, &text, &mut Resolver::default()).unwrap();
        let one = Pipeline::parse(&path, &text, &mut OneThread(Resolver::default())).unwrap();
        assert_eq!(threads.phases.len(), 2);
        assert_eq!(threads.phases[1].tasks.len(), 3_000);
        assert_eq!(format!("{threads:?}"), format!("{one:?}"));
    }
}
