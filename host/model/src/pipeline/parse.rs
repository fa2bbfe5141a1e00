//! Validating a pipeline file: every problem found at once, in file order, each with its line,
//! column and fix. What the text alone cannot tell (files, the lock, templates) is asked of a
//! [`Resolve`], which the runner's loader implements.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value as Json;
use toml::Spanned;

use super::raw::{self, Part, RawGate, RawLimits};
use super::*;
use crate::error::{LineIndex, PipelineError, PipelineErrors, line_col};
use crate::grants::{Check, RawGrants};
use crate::units::ByteSize;

/// What validating a pipeline needs from outside its text: whether the plugins and directories
/// it names exist, installed plugin names resolved through the project's lock, and what input
/// templates refer to. The runner's loader answers from the filesystem, the lock and the
/// template engine; the model stays plain data.
pub trait Resolve {
    /// A plugin as written: a path relative to `dir`, or an installed name. With a problem, the
    /// reference as far as it resolved and `(message, help)`.
    fn plugin(&mut self, spec: &str, dir: &Path) -> (Arc<PluginRef>, Option<(String, String)>);
    /// Whether a granted host directory exists.
    fn is_dir(&mut self, path: &Path) -> bool;
    /// Checks an input template's syntax and what it refers to; errors are `(message, help)`.
    fn template(&mut self, template: &str, scope: &Scope<'_>) -> Result<(), (String, String)>;
    /// The project (the folder of `phasegate.lock`) a pipeline in `dir` belongs to.
    fn project(&mut self, dir: &Path) -> Option<PathBuf>;
    /// One that answers the same on another thread (with caches of its own), so that a large
    /// phase's tasks are checked on every core; `None` (the default): they are checked here.
    fn fork(&self) -> Option<Box<dyn Resolve + Send>> {
        None
    }
}

/// What a template may refer to: used to reject references to later phases at validate time.
pub struct Scope<'a> {
    /// Phases listed before the template's phase.
    pub earlier_phases: &'a [&'a str],
    /// Every phase of the pipeline (to tell a later phase from a misspelt one).
    pub all_phases: &'a [&'a str],
    /// The template's own phase.
    pub current_phase: &'a str,
    /// Tasks listed before the template's task in its phase, in order (sequential phases only:
    /// empty in a parallel one).
    pub earlier_tasks: &'a [&'a str],
    /// Whether the template's phase is parallel.
    pub parallel: bool,
    /// The task ids of each phase that could be read.
    pub tasks: &'a HashMap<&'a str, &'a TaskIds<'a>>,
    /// The names `[vars]` declares.
    pub vars: &'a [&'a str],
}

impl Scope<'_> {
    /// Whether `task` is listed before the template's task in its phase.
    pub fn is_earlier_task(&self, task: &str) -> bool {
        self.tasks
            .get(self.current_phase)
            .and_then(|ids| ids.position(task))
            .is_some_and(|at| at < self.earlier_tasks.len())
    }
}

/// The task ids of one phase, in order, with an index: a template check looks a name up in
/// constant time (a pipeline of 100,000 tasks checks 100,000 templates).
#[derive(Default)]
pub struct TaskIds<'a> {
    /// The ids in the phase's order (for messages).
    pub order: Vec<&'a str>,
    /// Each id's first position in `order`. The ids are copied in (inline up to 23 bytes): a
    /// lookup then compares with what it has just found in the table, not with text elsewhere
    /// in memory (a cache miss per template of a 40,000-task pipeline).
    index: HashMap<smol_str::SmolStr, usize>,
    /// Each id that repeats an earlier one: its position, and the first's (by position). Found
    /// while indexing, so that checking a task for a duplicate id is no second lookup.
    repeats: Vec<(usize, usize)>,
}

impl<'a> TaskIds<'a> {
    /// The ids in `order`, indexed.
    pub fn new(order: Vec<&'a str>) -> Self {
        let mut index = HashMap::with_capacity(order.len());
        let mut repeats = Vec::new();
        for (at, id) in order.iter().enumerate() {
            match index.entry(smol_str::SmolStr::new(id)) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(at);
                }
                std::collections::hash_map::Entry::Occupied(e) => repeats.push((at, *e.get())),
            }
        }
        TaskIds {
            order,
            index,
            repeats,
        }
    }

    /// When the id at position `at` repeats an earlier one, where that one is.
    pub fn repeated(&self, at: usize) -> Option<usize> {
        self.repeats
            .binary_search_by_key(&at, |&(repeat, _)| repeat)
            .ok()
            .map(|i| self.repeats[i].1)
    }

    /// Whether the phase has a task `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// Where the phase's first task `id` is in its order.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }
}

/// From this size on, a pipeline file is hashed on a thread of its own.
const DIGEST_APART: usize = 1 << 20;

impl Pipeline {
    /// Validates pipeline text read from `path`, asking `resolve` what the text cannot tell.
    pub fn parse(
        path: &Path,
        source: &str,
        resolve: &mut dyn Resolve,
    ) -> Result<Pipeline, PipelineErrors> {
        Self::parse_with(path, source, resolve, raw::read)
    }

    /// [`Pipeline::parse`], with the text always read as one TOML document rather than table by
    /// table where it can be: the reference the table-by-table reading is compared with (by the
    /// fuzz target `pipeline`), which must give the same answer for every text.
    #[doc(hidden)]
    pub fn parse_as_one_document(
        path: &Path,
        source: &str,
        resolve: &mut dyn Resolve,
    ) -> Result<Pipeline, PipelineErrors> {
        Self::parse_with(path, source, resolve, raw::read_whole)
    }

    fn parse_with(
        path: &Path,
        source: &str,
        resolve: &mut dyn Resolve,
        read: fn(&str, &mut dyn FnMut(raw::Problem)) -> Option<raw::RawPipeline>,
    ) -> Result<Pipeline, PipelineErrors> {
        let mut errs = Errors {
            file: path,
            source,
            lines: Arc::default(),
            last_line: 0,
            list: Vec::new(),
            resolve,
        };
        let mut problems = Vec::new();
        let raw = read(source, &mut |p| problems.push(p));
        for p in problems {
            errs.unreadable(p);
        }
        let Some(raw) = raw else {
            return Err(errs.finish());
        };
        // The file's digest, on a core of its own while the pipeline is built when the file is
        // large (8 MB take ~5 ms to hash).
        std::thread::scope(|scope| {
            // A thread the system refuses: hashed here instead.
            let hashing = (source.len() >= DIGEST_APART)
                .then(|| {
                    std::thread::Builder::new()
                        .spawn_scoped(scope, || crate::digest::sha256_bytes(source.as_bytes()))
                        .ok()
                })
                .flatten();
            let digest = || {
                hashing
                    .and_then(|h| h.join().ok())
                    .unwrap_or_else(|| crate::digest::sha256_bytes(source.as_bytes()))
            };
            Self::build(errs, raw, path, digest)
        })
    }

    /// Checks what was read and builds the pipeline; `digest` gives the file's digest.
    fn build(
        mut errs: Errors<'_>,
        mut raw: raw::RawPipeline,
        path: &Path,
        digest: impl FnOnce() -> String,
    ) -> Result<Pipeline, PipelineErrors> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

        if raw.name.get_ref().trim().is_empty() {
            errs.push(
                Some(raw.name.span()),
                "the pipeline `name` is empty",
                Some("write a short name, e.g. `name = \"release-check\"`".into()),
            );
        }
        if raw.phases.is_empty() {
            errs.push(
                None,
                "the pipeline has no phases",
                Some(
                    "add at least one `[[phase]]` table with an `id` and a `[[phase.task]]`".into(),
                ),
            );
        }

        let d = &raw.defaults;
        errs.check_limits(&d.limits, false);
        let default_limits = merge_limits(Limits::default(), &d.limits);
        let max_stack = d
            .limits
            .max_stack
            .as_ref()
            .map(|s| *s.get_ref())
            .unwrap_or(DEFAULT_MAX_STACK);
        let default_retry_on: Arc<[FailureKind]> = match &d.retry_on {
            Some(kinds) => kinds.as_slice().into(),
            None => DEFAULT_RETRY_ON.into(),
        };
        let default_retries = d.retries.unwrap_or(0);
        let default_reuse = d.reuse.as_ref().map_or(1, |r| errs.reuse(r));
        let backoff = d
            .retry_backoff
            .map(|b| b.0)
            .unwrap_or(DEFAULT_RETRY_BACKOFF);
        let default_conc = match &d.concurrency {
            Some(c) => errs.positive(c).unwrap_or(1),
            None => default_concurrency(),
        };

        let task_defaults = TaskDefaults {
            limits: default_limits,
            retries: default_retries,
            reuse: default_reuse,
            retry_on: default_retry_on,
            backoff,
            grants: Arc::new(errs.grants(&RawGrants::default(), &dir)),
        };
        // Every phase id, unreadable phases' included, so a template that reads one is not
        // told it does not exist.
        let ids: Vec<Option<&str>> = raw
            .phases
            .iter()
            .map(|p| p.id().map(|id| id.get_ref().as_str()))
            .collect();
        let all_phases: Vec<&str> = ids.iter().flatten().copied().collect();
        // Each readable phase's task ids, in order and indexed, once: by the phase's place in
        // the file (what its own tasks read) and by its id (what later templates read).
        let ids_of: Vec<Option<TaskIds>> = raw
            .phases
            .iter()
            .map(|p| match p {
                Part::Read(p) => Some(TaskIds::new(
                    p.tasks
                        .iter()
                        .filter_map(|t| t.id().map(|id| id.get_ref().as_str()))
                        .collect(),
                )),
                Part::Unreadable { .. } => None,
            })
            .collect();
        let tasks_of: HashMap<&str, &TaskIds> = raw
            .phases
            .iter()
            .zip(&ids_of)
            .filter_map(|(p, ids)| match (p, ids) {
                (Part::Read(p), Some(ids)) => Some((p.id.get_ref().as_str(), ids)),
                _ => None,
            })
            .collect();
        let var_names: Vec<&str> = raw
            .vars
            .iter()
            .flat_map(|v| v.keys().map(String::as_str))
            .collect();
        let mut phase_ids: HashMap<String, std::ops::Range<usize>> = HashMap::new();
        let mut phases = Vec::new();
        for (index, part) in raw.phases.iter().enumerate() {
            if let Some(id) = part.id() {
                let pid = id.get_ref();
                errs.check_id(id, "phase");
                if let Some(first) = phase_ids.get(pid) {
                    let line = errs.line_col(first.start).0;
                    errs.push(Some(id.span()), format!("duplicate phase id `{pid}`"), Some(format!("phase ids must be unique; the first `{pid}` is at line {line}, rename one of them")));
                } else {
                    phase_ids.insert(pid.clone(), id.span());
                }
            }
            let Part::Read(rp) = part else { continue };
            let pid = rp.id.get_ref().clone();
            let earlier_phases: Vec<&str> = ids[..index].iter().flatten().copied().collect();
            let parallel = rp.parallel.unwrap_or(true);
            let concurrency = match &rp.concurrency {
                Some(c) => errs.positive(c).unwrap_or(1),
                None => default_conc,
            };
            if rp.tasks.is_empty() {
                errs.push(
                    Some(rp.id.span()),
                    format!("phase `{pid}` has no tasks"),
                    Some("add a `[[phase.task]]` table after this phase".into()),
                );
            }

            // This phase's ids in order, indexed: a task of a sequential phase reads those before
            // it, and a task whose id is first found elsewhere is a duplicate.
            let no_ids = TaskIds::default();
            let ids = ids_of[index].as_ref().unwrap_or(&no_ids);
            let checks = TaskChecks {
                phase: rp,
                pid: &pid,
                parallel,
                ids,
                id_starts: std::sync::OnceLock::new(),
                earlier_phases: &earlier_phases,
                all_phases: &all_phases,
                tasks_of: &tasks_of,
                vars: &var_names,
                dir: &dir,
                defaults: &task_defaults,
            };
            let tasks = checks.all(&mut errs);
            if let (Some(_), Some(list)) = (&rp.gate, &rp.gates) {
                errs.push(
                    Some(list.span()),
                    format!("phase `{pid}` has both `gate` and `gates`"),
                    Some("write one gate as `gate = {…}`, several as `gates = [{…}, {…}]`; move the `gate` into the list".into()),
                );
            }
            let raw_gates: Vec<&RawGate> = match (&rp.gate, &rp.gates) {
                (_, Some(list)) => list.get_ref().iter().collect(),
                (Some(g), None) => vec![g],
                (None, None) => Vec::new(),
            };
            let gates: Vec<GateSpec> = raw_gates
                .into_iter()
                .map(|g| {
                    let mut limits = merge_limits(default_limits, &g.limits);
                    if let Some(t) = g.timeout {
                        limits.timeout = t.0;
                    }
                    errs.check_limits(&g.limits, true);
                    GateSpec {
                        plugin: Arc::unwrap_or_clone(errs.plugin(&g.plugin, &dir)),
                        config: table_to_json(g.config.as_ref().map(|c| c.get_ref())),
                        config_line: errs.line_of(
                            g.config
                                .as_ref()
                                .map_or(g.plugin.span().start, |c| c.span().start),
                        ),
                        limits,
                        grants: errs.grants(&g.grants, &dir),
                        policy: g.policy.unwrap_or_default(),
                    }
                })
                .collect();
            let voters = gates
                .iter()
                .filter(|g| g.policy == GatePolicy::Quorum)
                .count();
            let quorum = match &rp.quorum {
                Some(q) => {
                    let n = *q.get_ref() as usize;
                    if n == 0 {
                        errs.push(
                            Some(q.span()),
                            "`quorum` must be at least 1",
                            Some("say how many `quorum` gates must pass, e.g. `quorum = 2`".into()),
                        );
                    } else if n > voters {
                        errs.push(
                            Some(q.span()),
                            format!("phase `{pid}` has `quorum = {n}` but {voters} gate(s) with `policy = \"quorum\"`"),
                            Some(format!("give at least {n} gates `policy = \"quorum\"`, or lower `quorum`")),
                        );
                    }
                    n
                }
                None if voters > 0 => {
                    errs.push(
                        Some(rp.id.span()),
                        format!("phase `{pid}` has {voters} gate(s) with `policy = \"quorum\"` but no `quorum`"),
                        Some(format!("say how many of them must pass, e.g. `quorum = {}` after the phase's `id`", voters / 2 + 1)),
                    );
                    0
                }
                None => 0,
            };
            phases.push(Phase {
                id: pid.into(),
                description: rp.description.clone(),
                parallel,
                concurrency,
                gates,
                quorum,
                tasks,
            });
        }

        free_apart(std::mem::take(&mut raw.phases));
        if errs.list.is_empty() {
            Ok(Pipeline {
                name: raw.name.into_inner(),
                description: raw.description,
                vars: table_to_json(raw.vars.as_ref()),
                path: path.to_owned(),
                digest: digest(),
                engine: EngineLimits {
                    bounds_checks: raw.engine.bounds_checks.unwrap_or_default(),
                    ..engine_limits(max_stack, &phases)
                },
                phases,
                project: errs.resolve.project(&dir),
            })
        } else {
            Err(errs.finish())
        }
    }
}

/// What a task takes from `[defaults]` when it does not say.
struct TaskDefaults {
    limits: Limits,
    retries: u32,
    reuse: u32,
    retry_on: Arc<[FailureKind]>,
    backoff: Duration,
    /// What a task without a `grants` table has: nothing.
    grants: Arc<Grants>,
}

/// From this many tasks on, a phase's tasks are checked and built on every core.
const PARALLEL_CHECKS: usize = 2_000;

/// What checking and building one phase's tasks reads, the same for all of them: shared by the
/// threads that check a large phase's tasks, each a run of them.
struct TaskChecks<'r> {
    phase: &'r raw::RawPhase,
    pid: &'r str,
    parallel: bool,
    /// The phase's task ids, in order and indexed.
    ids: &'r TaskIds<'r>,
    /// Where each id is, gathered at the first duplicate only.
    id_starts: std::sync::OnceLock<Vec<usize>>,
    earlier_phases: &'r [&'r str],
    all_phases: &'r [&'r str],
    tasks_of: &'r HashMap<&'r str, &'r TaskIds<'r>>,
    vars: &'r [&'r str],
    dir: &'r Path,
    defaults: &'r TaskDefaults,
}

impl TaskChecks<'_> {
    /// The phase's tasks that could be read, built, in order; their problems to `errs`.
    fn all(&self, errs: &mut Errors<'_>) -> Vec<TaskSpec> {
        // Tasks with an id, each with its place among them (a sequential phase's task reads
        // those before it).
        let with_ids: Vec<&Part<raw::RawTask>> = self
            .phase
            .tasks
            .iter()
            .filter(|t| t.id().is_some())
            .collect();
        let threads = if with_ids.len() >= PARALLEL_CHECKS {
            super::loading_threads()
        } else {
            1
        };
        if threads > 1 {
            let forks: Option<Vec<_>> = (1..threads).map(|_| errs.resolve.fork()).collect();
            if let Some(forks) = forks {
                return self.on_threads(errs, &with_ids, forks);
            }
        }
        let mut tasks = Vec::with_capacity(with_ids.len());
        self.run(errs, 0, &with_ids, &mut tasks);
        tasks
    }

    /// Checks `run`, the tasks with an id from place `from` on, into `tasks`.
    fn run(
        &self,
        errs: &mut Errors<'_>,
        from: usize,
        run: &[&Part<raw::RawTask>],
        tasks: &mut Vec<TaskSpec>,
    ) {
        tasks.extend(
            run.iter()
                .enumerate()
                .filter_map(|(at, task)| self.task(errs, from + at, task)),
        );
    }

    /// [`TaskChecks::all`] with a run of the tasks on this thread and one on a thread of its
    /// own per resolver in `forks`; the problems found in the order a single thread finds them.
    /// A run whose thread the system refuses is checked here, in its turn.
    fn on_threads(
        &self,
        errs: &mut Errors<'_>,
        with_ids: &[&Part<raw::RawTask>],
        forks: Vec<Box<dyn Resolve + Send>>,
    ) -> Vec<TaskSpec> {
        let chunk = with_ids.len().div_ceil(forks.len() + 1);
        let (file, source, lines) = (errs.file, errs.source, Arc::clone(&errs.lines));
        std::thread::scope(|scope| {
            let others: Vec<_> = with_ids
                .chunks(chunk)
                .enumerate()
                .skip(1)
                .zip(forks)
                .map(|((n, run), mut fork)| {
                    let lines = Arc::clone(&lines);
                    let thread = std::thread::Builder::new().spawn_scoped(scope, move || {
                        let mut mine = Errors {
                            file,
                            source,
                            lines,
                            last_line: 0,
                            list: Vec::new(),
                            resolve: &mut *fork,
                        };
                        let mut tasks = Vec::with_capacity(run.len());
                        self.run(&mut mine, n * chunk, run, &mut tasks);
                        (tasks, mine.list)
                    });
                    (n, run, thread.ok())
                })
                .collect();
            let mut tasks = Vec::with_capacity(with_ids.len());
            self.run(errs, 0, &with_ids[..chunk.min(with_ids.len())], &mut tasks);
            for (n, run, thread) in others {
                match thread.map(|t| t.join()) {
                    Some(Ok((mut theirs, problems))) => {
                        tasks.append(&mut theirs);
                        errs.list.extend(problems);
                    }
                    Some(Err(panic)) => std::panic::resume_unwind(panic),
                    None => self.run(errs, n * chunk, run, &mut tasks),
                }
            }
            tasks
        })
    }

    /// Checks the task at `at` among those with an id, and builds it if it could be read.
    fn task(
        &self,
        errs: &mut Errors<'_>,
        at: usize,
        task: &Part<raw::RawTask>,
    ) -> Option<TaskSpec> {
        let d = self.defaults;
        let (pid, parallel) = (self.pid, self.parallel);
        let id = task.id()?;
        let tid = id.get_ref();
        errs.check_id(id, "task");
        if let Some(first) = self.ids.repeated(at) {
            let starts = self.id_starts.get_or_init(|| {
                self.phase
                    .tasks
                    .iter()
                    .filter_map(|t| t.id())
                    .map(|id| id.span().start)
                    .collect()
            });
            let line = errs.line_col(starts[first]).0;
            errs.push(Some(id.span()), format!("duplicate task id `{tid}` in phase `{pid}`"), Some(format!("task ids must be unique within a phase; the first `{tid}` is at line {line}, rename one of them")));
        }
        let Part::Read(rt) = task else { return None };
        let input = rt
            .input
            .as_ref()
            .map(|i| i.get_ref().clone())
            .unwrap_or_default();
        if let Some(spanned) = &rt.input {
            let earlier_tasks = if parallel {
                &[][..]
            } else {
                &self.ids.order[..at]
            };
            let scope = Scope {
                earlier_phases: self.earlier_phases,
                all_phases: self.all_phases,
                current_phase: pid,
                earlier_tasks,
                parallel,
                tasks: self.tasks_of,
                vars: self.vars,
            };
            if let Err((message, help)) = errs.resolve.template(&input, &scope) {
                errs.push(
                    Some(spanned.span()),
                    format!("in the `input` of task `{tid}`: {message}"),
                    Some(help),
                );
            }
        }
        let plugin = errs.plugin(&rt.plugin, self.dir);
        let mut limits = match rt.limits.as_deref() {
            Some(written) => {
                errs.check_limits(written, true);
                merge_limits(d.limits, written)
            }
            None => d.limits,
        };
        if let Some(t) = rt.timeout {
            limits.timeout = t.0;
        }
        let grants = match rt.grants.as_deref() {
            Some(written) => Arc::new(errs.grants(written, self.dir)),
            None => Arc::clone(&d.grants),
        };
        let source = errs.source;
        Some(TaskSpec {
            id: tid.as_str().into(),
            plugin,
            input,
            input_line: rt.input.as_ref().map_or(0, |i| {
                // A `"""` string's first newline is not part of it.
                let at = i.span().start;
                let opens_a_block = ["\"\"\"\n", "\"\"\"\r\n", "'''\n", "'''\r\n"]
                    .iter()
                    .any(|q| source[at..].starts_with(q));
                errs.line_of(at) + usize::from(opens_a_block)
            }),
            config: std::mem::take(&mut *rt.config_json.lock().unwrap_or_else(|e| e.into_inner())),
            config_line: errs.line_of(
                rt.config
                    .as_ref()
                    .map_or(rt.id.span().start, |c| c.span().start),
            ),
            retries: rt.retries.unwrap_or(d.retries),
            reuse: rt.reuse.as_ref().map_or(d.reuse, |r| errs.reuse(r)),
            retry_on: rt
                .retry_on
                .as_deref()
                .map_or_else(|| d.retry_on.clone(), Into::into),
            retry_backoff: d.backoff,
            limits,
            grants,
            cache: rt.cache.or(self.phase.cache).unwrap_or(true),
        })
    }
}

/// From this many tasks on, the phases as read are freed on a thread of their own.
const FREE_APART: usize = 2_000;

/// Frees the phases as read, once built: on a thread of its own when they are many (40,000
/// tasks as read are ~120,000 allocations, freed while the run starts), else here.
fn free_apart(phases: Vec<Part<raw::RawPhase>>) {
    let tasks: usize = phases
        .iter()
        .map(|p| match p {
            Part::Read(p) => p.tasks.len(),
            Part::Unreadable { .. } => 0,
        })
        .sum();
    if tasks >= FREE_APART {
        // When no thread can be made, they are freed here with the closure that held them.
        let _ = std::thread::Builder::new()
            .name("phasegate-free".into())
            .spawn(move || drop(phases));
    }
}

/// Validates the `limits` and `grants` tables of one plugin outside a pipeline (a fixture
/// file): the same checks, defaults and errors as for a pipeline task, with positions in
/// `source`. Directories are relative to `path`'s folder.
pub fn sandbox(
    path: &Path,
    source: &str,
    limits: &RawLimits,
    grants: &RawGrants,
    resolve: &mut dyn Resolve,
) -> Result<(Limits, Grants, EngineLimits), PipelineErrors> {
    let mut errs = Errors {
        file: path,
        source,
        lines: Arc::default(),
        last_line: 0,
        list: Vec::new(),
        resolve,
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    errs.check_limits(limits, false);
    let resolved = merge_limits(Limits::default(), limits);
    let grants = errs.grants(grants, &dir);
    let max_stack = limits
        .max_stack
        .as_ref()
        .map(|s| *s.get_ref())
        .unwrap_or(DEFAULT_MAX_STACK);
    let engine = EngineLimits {
        max_stack,
        fuel: resolved.fuel.is_some(),
        max_instances: 1,
        bounds_checks: BoundsChecks::GuardPages,
    };
    if errs.list.is_empty() {
        Ok((resolved, grants, engine))
    } else {
        Err(errs.finish())
    }
}

fn engine_limits(max_stack: ByteSize, phases: &[Phase]) -> EngineLimits {
    let all_limits = || {
        phases.iter().flat_map(|p| {
            p.tasks
                .iter()
                .map(|t| &t.limits)
                .chain(p.gates.iter().map(|g| &g.limits))
        })
    };
    EngineLimits {
        max_stack,
        fuel: all_limits().any(|l| l.fuel.is_some()),
        max_instances: phases.iter().map(|p| if p.parallel { p.concurrency.min(p.tasks.len()) } else { 1 } + 1).max().unwrap_or(1),
        bounds_checks: BoundsChecks::default(),
    }
}

fn merge_limits(base: Limits, raw: &RawLimits) -> Limits {
    Limits {
        memory: raw.memory.unwrap_or(base.memory),
        timeout: raw.timeout.map(|t| t.0).unwrap_or(base.timeout),
        max_output: raw.max_output.unwrap_or(base.max_output),
        fuel: raw.fuel.or(base.fuel),
        table_elements: raw
            .table_elements
            .as_ref()
            .map(|t| *t.get_ref())
            .unwrap_or(base.table_elements),
        instances: raw.instances.unwrap_or(base.instances),
        max_log: raw.max_log.unwrap_or(base.max_log),
        log_records: raw.log_records.unwrap_or(base.log_records),
        descriptors: raw
            .descriptors
            .as_ref()
            .map_or(base.descriptors, |d| *d.get_ref()),
        max_written: raw.max_written.unwrap_or(base.max_written),
    }
}

pub(super) fn table_to_json(table: Option<&toml::Table>) -> Json {
    match table {
        Some(t) => serde_json::to_value(t).unwrap_or(Json::Object(Default::default())),
        None => Json::Object(Default::default()),
    }
}

/// Says a reading problem in the user's terms: the key it is about, what a value should look
/// like (a whole number, not "u32"), and the fix.
fn in_user_terms(
    source: &str,
    message: &str,
    span: Option<&std::ops::Range<usize>>,
) -> (String, Option<String>) {
    if message.starts_with("unknown field") {
        return (
            message.to_owned(),
            Some(
                "remove this key or correct its spelling; the keys allowed here are listed above"
                    .into(),
            ),
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        return (
            message.to_owned(),
            Some(format!("add `{field} = ...` to this table")),
        );
    }
    let key = span.and_then(|s| key_before(source, s.start));
    let value = span
        .and_then(|s| source.get(s.clone()))
        .map(str::trim)
        .unwrap_or_default();
    let mut text = message.to_owned();
    for int in ["u8", "u16", "u32", "u64", "usize"] {
        text = text.replace(
            &format!("expected {int}"),
            "expected a whole number (0 or more)",
        );
    }
    text = text.replace("expected i64", "expected a whole number");
    let help = if text.contains("expected a whole number") {
        let unquoted = value.trim_matches('"');
        match (unquoted.parse::<i64>(), &key) {
            (Ok(n), Some(key)) if value.starts_with('"') => {
                Some(format!("write `{key} = {n}`, without quotes"))
            }
            _ => Some(format!(
                "write a number such as `{} = 2`",
                key.as_deref().unwrap_or("retries")
            )),
        }
    } else if text.contains("expected a boolean") {
        key.as_ref()
            .map(|k| format!("write `{k} = true` or `{k} = false`"))
    } else if text.contains("expected a string") {
        key.as_ref().map(|k| {
            format!(
                "write the value in quotes, e.g. `{k} = \"{}\"`",
                value.trim_matches('"')
            )
        })
    } else if text.starts_with("invalid type") {
        Some("check the value's type against the pipeline format in docs/pipeline.md".into())
    } else {
        None
    };
    let text = match key {
        Some(key) if !text.contains(&format!("`{key}`")) => format!("`{key}`: {text}"),
        _ => text,
    };
    (text, help)
}

/// The key a value at `offset` is assigned to, read back from the text (`key = value`, also
/// inside an inline table): `None` when the value is not right after `key =` on its line.
fn key_before(source: &str, offset: usize) -> Option<String> {
    let before = source.get(..offset)?;
    let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
    let line = line.trim_end().strip_suffix('=')?.trim_end();
    let key = line.rsplit(['{', ',']).next()?.trim();
    let key = key.rsplit('.').next()?.trim().trim_matches('"');
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| key.to_owned())
}

struct Errors<'a> {
    file: &'a Path,
    source: &'a str,
    /// The source's lines, indexed when first needed (the line of each task's `input`); shared
    /// with the threads that check a large phase's tasks.
    lines: Arc<std::sync::OnceLock<LineIndex>>,
    /// Where the last line looked up is in `lines` ([`LineIndex::line_after`]).
    last_line: usize,
    list: Vec<PipelineError>,
    /// Answers what the text cannot tell.
    resolve: &'a mut dyn Resolve,
}

impl Check for Errors<'_> {
    fn problem(&mut self, span: std::ops::Range<usize>, message: String, help: String) {
        self.push(Some(span), message, Some(help));
    }

    fn is_dir(&mut self, path: &Path) -> bool {
        self.resolve.is_dir(path)
    }
}

impl Errors<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.source, offset)
    }

    /// The line of an offset, for many offsets (see [`LineIndex`]); looked up from the line
    /// found last, as the tasks are checked in the order they are written.
    fn line_of(&mut self, offset: usize) -> usize {
        self.lines
            .get_or_init(|| LineIndex::new(self.source))
            .line_after(offset, &mut self.last_line)
    }

    fn push(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let (line, column) = span.map(|s| self.line_col(s.start)).unwrap_or((0, 0));
        self.list.push(PipelineError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
            help,
        });
    }

    /// A part of the text that could not be read (see [`raw::read`]).
    fn unreadable(&mut self, problem: raw::Problem) {
        let (message, help) = in_user_terms(self.source, &problem.message, problem.span.as_ref());
        self.push(problem.span, message, help);
    }

    fn finish(mut self) -> PipelineErrors {
        self.list.sort_by_key(|e| (e.line, e.column));
        PipelineErrors(self.list)
    }

    fn positive(&mut self, value: &Spanned<u32>) -> Option<usize> {
        if *value.get_ref() == 0 {
            self.push(Some(value.span()), "`concurrency` must be at least 1", Some("write `concurrency = 1` to run one task at a time, or remove the key for the default (the number of CPUs)".into()));
            None
        } else {
            Some(*value.get_ref() as usize)
        }
    }

    /// A `reuse` count: at least 1.
    fn reuse(&mut self, value: &Spanned<u32>) -> u32 {
        if *value.get_ref() == 0 {
            self.push(
                Some(value.span()),
                "`reuse` must be at least 1",
                Some("write `reuse = 1` (or remove the key) for a fresh instance per task, or the number of tasks one instance may serve in a row".into()),
            );
            1
        } else {
            *value.get_ref()
        }
    }

    fn check_id(&mut self, id: &Spanned<String>, what: &str) {
        let s = id.get_ref();
        let ok = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !ok {
            self.push(Some(id.span()), format!("invalid {what} id `{s}`"), Some("ids start with a letter and contain only letters, digits, `-` and `_`, e.g. `find-components`".into()));
        }
    }

    /// Checks a `limits` table: values in range, and engine-wide keys only where allowed.
    fn check_limits(&mut self, limits: &RawLimits, per_plugin: bool) {
        if let Some(t) = limits
            .table_elements
            .as_ref()
            .filter(|t| *t.get_ref() > MAX_TABLE_ELEMENTS)
        {
            self.push(
                Some(t.span()),
                format!("`table-elements` of {} is over the largest supported value, {MAX_TABLE_ELEMENTS}", t.get_ref()),
                Some(format!("write at most `table-elements = {MAX_TABLE_ELEMENTS}`")),
            );
        }
        if let Some(d) = limits.descriptors.as_ref().filter(|d| *d.get_ref() == 0) {
            self.push(
                Some(d.span()),
                "`descriptors = 0` leaves the plugin no stdio, files or sockets at all",
                Some(format!("write at least `descriptors = 16`, or remove the key for the default ({DEFAULT_DESCRIPTORS})")),
            );
        }
        if !per_plugin {
            return;
        }
        if let Some(stack) = &limits.max_stack {
            self.push(
                Some(stack.span()),
                "`max-stack` applies to the whole engine and cannot be set per task or gate",
                Some("set it once in `[defaults.limits]`".into()),
            );
        }
    }

    fn grants(&mut self, raw: &RawGrants, dir: &Path) -> Grants {
        Grants::check(raw, dir, self)
    }

    fn plugin(&mut self, spec: &Spanned<String>, dir: &Path) -> Arc<PluginRef> {
        let (plugin, problem) = self.resolve.plugin(spec.get_ref(), dir);
        if let Some((message, help)) = problem {
            self.push(Some(spec.span()), message, Some(help));
        }
        plugin
    }
}
