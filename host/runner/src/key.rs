//! A task's key: one digest of everything its outcome can depend on, as far as its sandbox lets
//! it observe anything — and whether that is all it can observe (then its result may be cached).
//!
//! The key covers the contract version, the component's digest, the pipeline's name, the phase
//! and task ids (the request names them), the rendered input, the config, the whole context
//! when granted (without the run id), for each read-only directory grant its guest path and a
//! digest of its tree, the read-write grants' paths, the fixed environment, the clocks mode and
//! seed, and the limits (every one, and the engine's stack size: a limit decides whether an
//! attempt fails).
//!
//! A task's fields are hashed in two parts: first what its phase and spec decide (plugin,
//! limits, grants, reuse), which the tasks of a phase mostly share, then its own (id, input,
//! config, context). A worker keeps the hash state of the first part ([`TaskKeyCache`]) and
//! goes on from a copy of it for each task of the same spec: SHA-256 over ~150 bytes per task
//! instead of ~500 (it was a tenth of a trivial task's cost).
//!
//! Left out, so that a second run can use the first run's results: the run id the request carries
//! (a task whose output names its run must say `cache = false`), and of the files in a read-only
//! grant their access times and inode numbers (reading a file updates the first; copying a tree
//! changes the second). Everything else a plugin can read of a file is in the tree's digest:
//! names, kinds, permissions, sizes, modification times, contents, link targets.
//!
//! The same key tells `resume` whether a recorded result still holds, and a gate has a key of its
//! own ([`Keys::gate`]): its plugin, config, limits and grants, and the keys of what it judged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use phasegate_model::pipeline::{
    DirMode, GateSpec, Limits, Phase, Pipeline, PluginDigests, TaskSpec,
};
use phasegate_model::progress::TaskState;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::fields::{Fields, text};
use crate::tree::{TreeDigests, Walk};

/// The contract every plugin implements: a new version of it may change what a plugin sees.
pub const CONTRACT: &str = "phasegate:plugin@0.1.0";

/// Makes the keys of one pipeline's tasks and gates.
pub struct Keys {
    pipeline: String,
    max_stack: u64,
    digests: PluginDigests,
    /// The tree digests of read-only grants, made once per phase ([`Keys::forget_trees`]): a
    /// directory that many tasks read is walked once.
    trees: Mutex<HashMap<PathBuf, Arc<Result<String, String>>>>,
    /// What walks them, remembering file contents digests from phase to phase (and run to run).
    tree_digests: Arc<TreeDigests>,
}

impl Fields {
    /// Every limit (each can decide whether an attempt fails), and the engine's stack size.
    fn limits(&mut self, l: &phasegate_model::pipeline::Limits, max_stack: u64) {
        // Destructured, so that a new limit cannot be left out of the key unnoticed.
        let phasegate_model::pipeline::Limits {
            memory,
            timeout,
            max_output,
            fuel,
            table_elements,
            instances,
            max_log,
            log_records,
            descriptors,
            max_written,
        } = *l;
        self.add(b"limits");
        for n in [
            memory.0,
            u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
            max_output.0,
            fuel.map_or(u64::MAX, |f| f.min(u64::MAX - 1)),
            table_elements,
            instances,
            max_log.0,
            log_records.into(),
            descriptors.into(),
            max_written.0,
            max_stack,
        ] {
            self.0.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// What a worker keeps from one task's key to the next ([`Keys::task`]): the hash state of the
/// part of a key that a phase and a spec decide, for the spec it was made for, and a buffer.
#[derive(Default)]
pub struct TaskKeyCache {
    prefix: Option<(SpecShape, Result<Sha256, String>)>,
    fields: Vec<u8>,
}

/// What the first part of a task's key is made of: its phase, and its spec's plugin, limits,
/// grants and reuse. Plugins and grants are compared by address (never followed): the tasks of
/// a phase share one for each plugin and, without a `grants` table, the phase's default grants;
/// two equal ones at different addresses only cost a second hash.
struct SpecShape {
    phase: String,
    plugin: usize,
    grants: usize,
    limits: Limits,
    reuse: u32,
}

impl Keys {
    /// Keys for `pipeline`'s tasks and gates, its plugins' digests as `digests` records them
    /// (spec → `sha256:`), its read-only trees digested by `trees`.
    pub fn new(pipeline: &Pipeline, digests: PluginDigests, trees: Arc<TreeDigests>) -> Self {
        Keys {
            pipeline: pipeline.name.clone(),
            max_stack: pipeline.engine.max_stack.0,
            digests,
            trees: Mutex::new(HashMap::new()),
            tree_digests: trees,
        }
    }

    /// Drops the tree digests made so far: a phase's tasks may have changed a directory the next
    /// phase reads. (Their files' contents digests are kept while their stamps hold.)
    pub fn forget_trees(&self) {
        self.trees.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Digests the read-only trees the tasks and gates of `phase` read, before its workers
    /// start: otherwise each worker that starts at once would walk the same tree. Says, for each
    /// tree walked, how much of it was read.
    pub fn prepare(&self, phase: &Phase) -> Vec<(PathBuf, Walk)> {
        let grants = phase
            .tasks
            .iter()
            .map(|t| &*t.grants)
            .chain(phase.gates.iter().map(|g| &g.grants));
        let mut walked = Vec::new();
        for dir in grants
            .flat_map(|g| &g.dirs)
            .filter(|d| d.mode == DirMode::Ro)
        {
            if !self.walked(&dir.host) {
                walked.push((dir.host.clone(), self.walk(&dir.host)));
            }
        }
        walked
    }

    /// The key of task `spec` of phase `phase` given its rendered `input`, its `config` (JSON
    /// text) and, when it is granted the context, the context's digest ([`context_digest`]);
    /// `cache` is the worker's, kept from task to task. `Err` says why there is none (a
    /// read-only directory that cannot be read): such a task is run and not cached.
    pub fn task(
        &self,
        phase: &str,
        spec: &TaskSpec,
        input: &str,
        config: &str,
        context: Option<&str>,
        cache: &mut TaskKeyCache,
    ) -> Result<String, String> {
        let plugin = std::sync::Arc::as_ptr(&spec.plugin) as usize;
        let grants = std::sync::Arc::as_ptr(&spec.grants) as usize;
        let prefix = match &mut cache.prefix {
            Some((known, prefix))
                if known.plugin == plugin
                    && known.grants == grants
                    && known.limits == spec.limits
                    && known.reuse == spec.reuse
                    && known.phase == phase =>
            {
                prefix
            }
            slot => {
                let shape = SpecShape {
                    phase: phase.to_owned(),
                    plugin,
                    grants,
                    limits: spec.limits,
                    reuse: spec.reuse,
                };
                &mut slot.insert((shape, self.spec_part(phase, spec))).1
            }
        };
        let mut hasher = prefix.clone()?;
        let mut f = Fields(std::mem::take(&mut cache.fields));
        f.0.clear();
        f.text("task", &spec.id)
            .text("input", input)
            .text("config", config)
            .text("context", context.unwrap_or("not granted"));
        hasher.update(&f.0);
        cache.fields = f.0;
        Ok(text(hasher.finalize().into()))
    }

    /// The hash state after the part of a task's key that its phase and spec decide.
    fn spec_part(&self, phase: &str, spec: &TaskSpec) -> Result<Sha256, String> {
        let mut f = Fields::new("task");
        f.text("contract", CONTRACT)
            .text("plugin", self.plugin_digest(&spec.plugin.spec))
            .text("pipeline", &self.pipeline)
            .text("phase", phase);
        f.limits(&spec.limits, self.max_stack);
        self.grants(&mut f, &spec.grants)?;
        // Only when above the default (a fresh instance for every task).
        if spec.reuse > 1 {
            f.text("reuse", &spec.reuse.to_string());
        }
        Ok(Sha256::new_with_prefix(&f.0))
    }

    /// The key of a phase's gate (`None`: the built-in rule) over the phase's `tasks` as it
    /// judges them, given the context's digest when the gate is granted it.
    pub fn gate(
        &self,
        gate: Option<&GateSpec>,
        tasks: &[TaskState],
        context: Option<&str>,
    ) -> Result<String, String> {
        let mut f = Fields::new("gate");
        f.text("contract", CONTRACT);
        if let Some(gate) = gate {
            f.text("plugin", self.plugin_digest(&gate.plugin.spec))
                .text("config", &gate.config.to_string())
                .text("context", context.unwrap_or("not granted"));
            f.limits(&gate.limits, self.max_stack);
            self.grants(&mut f, &gate.grants)?;
        } else {
            f.text("plugin", crate::BUILTIN_GATE);
        }
        // Then how many tasks, and per task its id, status and key without names (the same
        // three each time, after one name that no field above has: where they start is never
        // in doubt): a phase of 10,000 tasks hashes 1.1 MB instead of 1.6, a few kilobytes at a
        // time (not gathered into one buffer of that size first).
        f.text("tasks", &tasks.len().to_string());
        let mut hasher = Sha256::new();
        for t in tasks {
            f.add(t.id.as_bytes())
                .add(t.status.name().as_bytes())
                .add(t.key.as_deref().unwrap_or("none").as_bytes());
            if f.0.len() >= 8 << 10 {
                hasher.update(&f.0);
                f.0.clear();
            }
        }
        hasher.update(&f.0);
        Ok(text(hasher.finalize().into()))
    }

    /// The key of each of `phase`'s gates over its `tasks` as they judge them, given the
    /// context's digest when a gate is granted it; and the phase's own: over all of them and
    /// the quorum (the one gate's key when it has one, the built-in rule's when none).
    pub fn gates(
        &self,
        phase: &Phase,
        tasks: &[TaskState],
        context: Option<&str>,
    ) -> Result<(String, Vec<String>), String> {
        if phase.gates.is_empty() {
            return Ok((self.gate(None, tasks, None)?, Vec::new()));
        }
        let each = phase
            .gates
            .iter()
            .map(|g| self.gate(Some(g), tasks, context.filter(|_| g.grants.context)))
            .collect::<Result<Vec<_>, _>>()?;
        if !phase.has_policies() {
            return Ok((each[0].clone(), each));
        }
        let mut f = Fields::new("gates");
        f.add(&(phase.quorum as u64).to_le_bytes());
        for (g, key) in phase.gates.iter().zip(&each) {
            f.text(g.policy.name(), key);
        }
        Ok((f.finish(), each))
    }

    /// The digest of plugin `spec` now (`unknown` for a spec the pipeline does not use).
    pub fn plugin_digest<'a>(&'a self, spec: &str) -> &'a str {
        self.digests.get(spec).map_or("unknown", String::as_str)
    }

    fn grants(
        &self,
        f: &mut Fields,
        grants: &phasegate_model::pipeline::Grants,
    ) -> Result<(), String> {
        f.text("context-granted", if grants.context { "yes" } else { "no" });
        if grants.deterministic {
            f.text("clocks", "deterministic")
                .add(&grants.seed.to_le_bytes());
        } else {
            f.text("clocks", "host");
        }
        for (name, value) in &grants.env_set {
            f.text("env-set", name).add(value.as_bytes());
        }
        for name in &grants.env {
            f.text("env", name);
        }
        for host in grants.net.iter().chain(&grants.http) {
            f.text("reach", host);
        }
        for dir in &grants.dirs {
            f.text("dir", &dir.guest).text("mode", dir.mode.name());
            match dir.mode {
                DirMode::Ro => {
                    f.text("tree", &self.tree(&dir.host)?);
                }
                DirMode::Rw => {
                    f.text("host", &dir.host.to_string_lossy());
                }
            }
        }
        Ok(())
    }

    fn tree(&self, host: &Path) -> Result<String, String> {
        let known = self
            .trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(host)
            .cloned();
        match known {
            Some(digest) => (*digest).clone(),
            None => self.walk(host).digest,
        }
    }

    /// Whether this phase walked the tree at `host` already.
    fn walked(&self, host: &Path) -> bool {
        self.trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(host)
    }

    /// Walks the tree at `host` and keeps its digest for the phase.
    fn walk(&self, host: &Path) -> Walk {
        let walk = self.tree_digests.digest(host);
        self.trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(host.to_owned(), Arc::new(walk.digest.clone()));
        walk
    }
}

/// The digest of a granted context as a key sees it: the whole of it but the run id.
pub fn context_digest(context: &Value) -> String {
    let mut f = Fields::new("context");
    if let Value::Object(map) = context {
        for (name, value) in map.iter().filter(|(name, _)| *name != "run") {
            f.text(name, &value.to_string());
        }
    }
    f.finish()
}

/// The plugins (by spec) whose components import neither clocks nor random: with the host's
/// clocks they still cannot observe time or chance.
pub type ClockFree = std::collections::HashSet<String>;

/// Whether a component with these imports (`wasi:clocks/wall-clock@0.2.6`, …) can read a clock
/// or a random source.
pub fn reads_clocks(imports: &[String]) -> bool {
    imports
        .iter()
        .any(|i| i.starts_with("wasi:clocks/") || i.starts_with("wasi:random/"))
}

/// What decides whether a pipeline's tasks can be cached, worked out once per pipeline: the
/// plugins that cannot read clocks or random, and the folders its tasks may write.
pub struct Purity {
    clock_free: ClockFree,
    /// Every read-write grant (canonical host path), with the phase and task it belongs to.
    writers: Vec<(PathBuf, usize, usize)>,
}

impl Purity {
    /// For `pipeline`, whose plugins named in `clock_free` cannot read clocks or random.
    pub fn of(pipeline: &Pipeline, clock_free: &ClockFree) -> Self {
        let mut writers = Vec::new();
        for (pi, phase) in pipeline.phases.iter().enumerate() {
            for (ti, task) in phase.tasks.iter().enumerate() {
                for dir in task.grants.dirs.iter().filter(|d| d.mode == DirMode::Rw) {
                    writers.push((normal(&dir.host), pi, ti));
                }
            }
        }
        Purity {
            clock_free: clock_free.clone(),
            writers,
        }
    }

    /// Why task `task` of phase `phase` is not cached (empty: it is). A task can be cached when
    /// nothing outside its key can change its outcome.
    pub fn uncacheable(&self, pipeline: &Pipeline, phase: usize, task: usize) -> Vec<String> {
        let spec = &pipeline.phases[phase].tasks[task];
        let g = &spec.grants;
        let mut why = Vec::new();
        if !spec.cache {
            why.push("`cache = false`".to_owned());
        }
        if spec.reuse > 1 {
            why.push(format!(
                "`reuse = {}`: what an instance left from an earlier task may change its result",
                spec.reuse
            ));
        }
        if !g.env.is_empty() {
            why.push(format!(
                "reads host environment variables ({})",
                g.env.join(", ")
            ));
        }
        if !g.net.is_empty() {
            why.push("may open network connections (`grants.net`)".to_owned());
        }
        if !g.http.is_empty() {
            why.push("may send HTTP requests (`grants.http`)".to_owned());
        }
        for dir in g.dirs.iter().filter(|d| d.mode == DirMode::Rw) {
            why.push(format!(
                "writes into {} (a read-write grant)",
                dir.host.display()
            ));
        }
        if !g.deterministic && !self.clock_free.contains(&spec.plugin.spec) {
            why.push(
                "may read the host's clocks and random (grant `deterministic = true` to fix them)"
                    .to_owned(),
            );
        }
        for dir in g.dirs.iter().filter(|d| d.mode == DirMode::Ro) {
            if let Some(&(_, p, t)) = self.writer_of(&dir.host) {
                why.push(format!(
                    "reads {}, which task `{}` of phase `{}` may write",
                    dir.host.display(),
                    pipeline.phases[p].tasks[t].id,
                    pipeline.phases[p].id
                ));
            }
        }
        why
    }

    /// The first read-write grant of `dir`, a folder inside it or one around it.
    fn writer_of(&self, dir: &Path) -> Option<&(PathBuf, usize, usize)> {
        let dir = normal(dir);
        self.writers
            .iter()
            .find(|(written, _, _)| written.starts_with(&dir) || dir.starts_with(written))
    }
}

fn normal(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task's key made with one cache kept across tasks of different specs and phases, in
    /// an order that goes back and forth between them, is the key made from scratch: all its
    /// fields hashed in one pass.
    #[test]
    fn a_task_key_made_from_a_kept_prefix_is_the_key_made_in_one_pass() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["p.wasm", "q.wasm"] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/f"), "x").unwrap();
        let path = dir.path().join("pipeline.toml");
        let mut text = String::from("name = \"keys\"\n");
        for phase in ["a", "b"] {
            text.push_str(&format!("[[phase]]\nid = \"{phase}\"\n"));
            for (i, extra) in [
                "",
                "",
                "plugin = \"q.wasm\"",
                "limits = { memory = \"1MiB\" }",
                "limits = { memory = \"2MiB\" }",
                "grants = { deterministic = true }",
                "grants = { deterministic = true }",
                "grants = { dirs = [{ host = \"data\", guest = \"/data\" }] }",
                "reuse = 3",
                "",
            ]
            .iter()
            .enumerate()
            {
                let plugin = if extra.starts_with("plugin") {
                    ""
                } else {
                    "plugin = \"p.wasm\""
                };
                text.push_str(&format!(
                    "[[phase.task]]\nid = \"t{i}\"\n{plugin}\n{extra}\n"
                ));
            }
        }
        let pipeline = crate::load::parse(&path, &text).unwrap();
        let digests = PluginDigests::from([
            ("p.wasm".to_owned(), "sha256:p".to_owned()),
            ("q.wasm".to_owned(), "sha256:q".to_owned()),
        ]);
        let keys = Keys::new(&pipeline, digests, Arc::new(TreeDigests::in_memory()));
        let in_one_pass = |phase: &str, spec: &TaskSpec, input: &str| {
            let mut f = Fields::new("task");
            f.text("contract", CONTRACT)
                .text("plugin", keys.plugin_digest(&spec.plugin.spec))
                .text("pipeline", &keys.pipeline)
                .text("phase", phase);
            f.limits(&spec.limits, keys.max_stack);
            keys.grants(&mut f, &spec.grants).unwrap();
            if spec.reuse > 1 {
                f.text("reuse", &spec.reuse.to_string());
            }
            f.text("task", &spec.id)
                .text("input", input)
                .text("config", "{}")
                .text("context", "not granted");
            f.finish()
        };
        let mut cache = TaskKeyCache::default();
        let mut seen = std::collections::HashSet::new();
        // Forwards, then every third task, then backwards: the kept prefix is for another spec
        // or phase at nearly every step.
        let count = 2 * pipeline.phases[0].tasks.len();
        let order = (0..count)
            .chain((0..count).step_by(3))
            .chain((0..count).rev());
        for n in order {
            let phase = &pipeline.phases[n / 10];
            let spec = &phase.tasks[n % 10];
            let input = format!("input {n}");
            let kept = keys
                .task(&phase.id, spec, &input, "{}", None, &mut cache)
                .unwrap();
            assert_eq!(kept, in_one_pass(&phase.id, spec, &input), "{n}");
            assert_eq!(
                kept,
                keys.task(
                    &phase.id,
                    spec,
                    &input,
                    "{}",
                    None,
                    &mut TaskKeyCache::default()
                )
                .unwrap()
            );
            seen.insert(in_one_pass(&phase.id, spec, "the same input"));
        }
        // Every spec's own key: what differs between them (plugin, limits, grants, reuse, phase,
        // id) is in it.
        assert_eq!(seen.len(), count);
    }

    /// A gate's key over many tasks (hashed a few kilobytes at a time) follows each task's id,
    /// status and key, wherever the task is among them.
    #[test]
    fn a_gate_key_follows_every_task_it_judges() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
        let text = "name = \"g\"\n[[phase]]\nid = \"a\"\n[[phase.task]]\nid = \"t\"\nplugin = \"p.wasm\"\n";
        let pipeline = crate::load::parse(&dir.path().join("p.toml"), text).unwrap();
        let keys = Keys::new(
            &pipeline,
            PluginDigests::new(),
            Arc::new(TreeDigests::in_memory()),
        );
        let tasks: Vec<TaskState> = (0..1_000)
            .map(|i| TaskState {
                status: phasegate_model::progress::TaskStatus::Succeeded,
                key: Some(format!("sha256:{i:064x}")),
                ..TaskState::pending(format!("t{i}"))
            })
            .collect();
        let phase = &pipeline.phases[0];
        let key = |tasks: &[TaskState]| keys.gates(phase, tasks, None).unwrap().0;
        let all = key(&tasks);
        assert_eq!(key(&tasks), all);
        for at in [0, 1, 499, 998, 999] {
            let mut changed = tasks.clone();
            changed[at].status = phasegate_model::progress::TaskStatus::Failed;
            assert_ne!(key(&changed), all, "status of {at}");
            let mut changed = tasks.clone();
            changed[at].key = None;
            assert_ne!(key(&changed), all, "key of {at}");
            let mut changed = tasks.clone();
            changed[at].id = "other".into();
            assert_ne!(key(&changed), all, "id of {at}");
        }
        assert_ne!(key(&tasks[..999]), all);
    }

    #[test]
    fn fields_are_length_prefixed() {
        let mut a = Fields::new("t");
        a.text("ab", "c");
        let mut b = Fields::new("t");
        b.text("a", "bc");
        assert_ne!(a.finish(), b.finish());
    }
}
