//! The pipeline file: TOML types, loading and validation. No wasmtime here.
//!
//! ```toml
//! name = "release-check"
//!
//! [vars]                      # free values for templates: `{{ vars.notes }}`
//! notes = "..."
//!
//! [defaults]
//! retries = 0                 # extra attempts after a failed one
//! retry-backoff = "200ms"     # first retry delay; doubles each time, capped at 30s
//! concurrency = 4             # tasks at once in a parallel phase
//!
//! [defaults.limits]
//! memory = "64MiB"            # linear memory per plugin instance
//! timeout = "30s"             # wall clock per attempt
//! max-output = "1MiB"         # size of the JSON a task returns
//!
//! [[phase]]
//! id = "discovery"
//! parallel = true             # default; false runs the tasks in file order
//! gate = { plugin = "gates/all_succeeded.wasm", config = { } }
//!
//! [[phase.task]]
//! id = "scan"
//! plugin = "plugins/text_stats.wasm"   # path relative to this file
//! input = "{{ pipeline.name }}"        # minijinja over the context
//! config = { top = 3 }
//! retries = 2
//! timeout = "5s"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;
use toml::Spanned;

use crate::context;
use crate::progress::FailureKind;
use crate::units::{ByteSize, HumanDuration};

/// Default memory limit per plugin instance: enough for typical Rust/C plugins and small
/// interpreters, small enough that 64 concurrent tasks fit in a few GiB.
pub const DEFAULT_MEMORY: ByteSize = ByteSize(64 << 20);
/// Default wall-clock timeout per attempt: generous for real work, short enough that a hung
/// plugin does not hold a run hostage.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default maximum size of a task's output: outputs live in the context and the progress file.
pub const DEFAULT_MAX_OUTPUT: ByteSize = ByteSize(1 << 20);
/// Default concurrency cap of a parallel phase: the number of CPUs.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
/// Default maximum Wasm stack: wasmtime's own default, enough for deep but sane recursion.
pub const DEFAULT_MAX_STACK: ByteSize = ByteSize(512 << 10);
/// Default maximum table elements: real programs use a few thousand function-table slots.
pub const DEFAULT_TABLE_ELEMENTS: u64 = 100_000;
/// The largest `table-elements` limit: every instance-pool table slot is sized for it.
pub const MAX_TABLE_ELEMENTS: u64 = 1 << 20;
/// Default maximum core instances: a component built by any of the supported toolchains
/// instantiates fewer than 20.
pub const DEFAULT_INSTANCES: u64 = 100;
/// Default bytes kept of stdout, stderr and log text per attempt.
pub const DEFAULT_MAX_LOG: ByteSize = ByteSize(256 << 10);
/// Default host log calls kept per attempt.
pub const DEFAULT_LOG_RECORDS: u32 = 1_000;
/// Failure kinds retried by default: a task's own retryable error, and a timeout (the machine
/// may just have been busy). Traps and limits would fail the same way again.
pub const DEFAULT_RETRY_ON: [FailureKind; 2] = [FailureKind::Failed, FailureKind::Timeout];
/// Default first retry delay; doubles after each attempt.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Retry delays never exceed this.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Raw file format (what serde reads)

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPipeline {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    vars: Option<toml::Table>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    engine: RawEngine,
    #[serde(default, rename = "phase")]
    phases: Vec<RawPhase>,
}

/// The `[engine]` table: settings of the one wasmtime engine a run uses.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawEngine {
    bounds_checks: Option<BoundsChecks>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDefaults {
    retries: Option<u32>,
    retry_on: Option<Vec<FailureKind>>,
    retry_backoff: Option<HumanDuration>,
    concurrency: Option<Spanned<u32>>,
    #[serde(default)]
    limits: RawLimits,
}

/// A `limits` table as written (pipeline defaults, a task, a gate, a fixture).
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLimits {
    memory: Option<ByteSize>,
    timeout: Option<HumanDuration>,
    max_output: Option<ByteSize>,
    fuel: Option<u64>,
    table_elements: Option<Spanned<u64>>,
    instances: Option<u64>,
    max_log: Option<ByteSize>,
    log_records: Option<u32>,
    max_stack: Option<Spanned<ByteSize>>,
}

/// A `grants` table as written (a task, a gate, a fixture).
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawGrants {
    #[serde(default)]
    dirs: Vec<RawDir>,
    #[serde(default)]
    env: Vec<Spanned<String>>,
    #[serde(default)]
    env_set: BTreeMap<String, String>,
    #[serde(default)]
    net: Vec<Spanned<String>>,
    #[serde(default)]
    http: Vec<Spanned<String>>,
    #[serde(default)]
    deterministic: bool,
    seed: Option<u64>,
    #[serde(default)]
    context: bool,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDir {
    host: Spanned<String>,
    guest: Spanned<String>,
    #[serde(default)]
    mode: DirMode,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPhase {
    id: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    parallel: Option<bool>,
    concurrency: Option<Spanned<u32>>,
    gate: Option<RawGate>,
    #[serde(default, rename = "task")]
    tasks: Vec<RawTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawGate {
    plugin: Spanned<String>,
    #[serde(default)]
    config: Option<toml::Table>,
    timeout: Option<HumanDuration>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    grants: RawGrants,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTask {
    id: Spanned<String>,
    plugin: Spanned<String>,
    #[serde(default)]
    input: Option<Spanned<String>>,
    #[serde(default)]
    config: Option<toml::Table>,
    retries: Option<u32>,
    retry_on: Option<Vec<FailureKind>>,
    timeout: Option<HumanDuration>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    grants: RawGrants,
}

// ---------------------------------------------------------------------------------------------
// Validated pipeline

/// A loaded, validated pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// `name` from the file.
    pub name: String,
    /// `description` from the file.
    pub description: Option<String>,
    /// The `[vars]` table as JSON: free values templates read as `vars.*`.
    pub vars: Json,
    /// The file it was read from.
    pub path: PathBuf,
    /// `sha256:<hex>` of the file's bytes; resume refuses a changed pipeline.
    pub digest: String,
    /// Phases in file order.
    pub phases: Vec<Phase>,
    /// Engine-wide limits.
    pub engine: EngineLimits,
    /// The project (folder of `phasegate.lock`) the pipeline belongs to, if any: the nearest
    /// folder from the pipeline's upwards that holds a lock.
    pub project: Option<crate::store::Project>,
}

/// The id of a phase or a task. Ids up to 23 bytes (nearly all) are held inline, longer ones
/// are shared: either way a copy allocates nothing, and reading one touches no other memory
/// (the progress record and the events of a task each name it, thousands of tasks per phase;
/// with a shared `Arc<str>`, reaching each task's id was a cache miss of its own).
pub type Id = smol_str::SmolStr;

/// One phase.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Unique id.
    pub id: Id,
    /// Free text.
    pub description: Option<String>,
    /// Run tasks concurrently (true) or in file order (false).
    pub parallel: bool,
    /// At most this many tasks at once.
    pub concurrency: usize,
    /// The gate; `None` means "all tasks succeeded".
    pub gate: Option<GateSpec>,
    /// Tasks in file order.
    pub tasks: Vec<TaskSpec>,
}

/// A plugin reference: as written, and resolved to a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PluginRef {
    /// As written in the pipeline.
    pub spec: String,
    /// Resolved path (relative specs are relative to the pipeline file; installed plugins
    /// resolve to their file in the project's store).
    pub path: PathBuf,
    /// The installed name, when the spec names an installed plugin rather than a file.
    pub installed: Option<String>,
    /// For an installed plugin, the digest (`sha256:…`) the lock records: loading refuses a
    /// stored file that hashes otherwise, checking the very bytes it compiles.
    pub digest: Option<String>,
}

impl PluginRef {
    /// A component file used outside a pipeline (by `build`, `test` and `plugin`).
    pub fn file(path: &Path) -> PluginRef {
        PluginRef {
            spec: path.display().to_string(),
            path: path.to_owned(),
            installed: None,
            digest: None,
        }
    }
}

/// Per-instance resource limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory (bytes) of each memory of the instance.
    pub memory: ByteSize,
    /// Wall-clock limit per attempt.
    pub timeout: Duration,
    /// Maximum size of a task's output.
    pub max_output: ByteSize,
    /// Deterministic CPU budget (Wasm fuel units) per attempt; `None` = unlimited.
    pub fuel: Option<u64>,
    /// Maximum elements per table.
    pub table_elements: u64,
    /// Maximum core instances (a component instantiates several).
    pub instances: u64,
    /// Bytes kept of stdout, of stderr, and of host log text per attempt; the rest is dropped.
    pub max_log: ByteSize,
    /// Host `log` calls kept per attempt.
    pub log_records: u32,
}

/// Settings that apply to the whole engine (one per run): `max-stack` from
/// `[defaults.limits]`, `bounds-checks` from `[engine]`, the rest derived from the phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    /// Maximum Wasm stack per call.
    pub max_stack: ByteSize,
    /// Whether any plugin has a fuel budget (fuel metering costs speed, so it is off otherwise).
    pub fuel: bool,
    /// The largest number of instances alive at once: the widest phase, plus its gate.
    pub max_instances: usize,
    /// How guest memory accesses are confined.
    pub bounds_checks: BoundsChecks,
}

impl EngineLimits {
    /// The engine for one plugin at a time outside a pipeline (`build`, `test`, `plugin`):
    /// the default stack, no fuel metering, one instance alive, guard pages.
    pub const SINGLE: EngineLimits = EngineLimits {
        max_stack: DEFAULT_MAX_STACK,
        fuel: false,
        max_instances: 1,
        bounds_checks: BoundsChecks::GuardPages,
    };
}

/// How the engine keeps a guest's loads and stores inside its linear memory (`[engine]
/// bounds-checks`). Both confine every access exactly; they differ in cost and hardening.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoundsChecks {
    /// The default. Each memory sits in a large reservation whose unused part is unmapped, so
    /// an out-of-bounds access faults and becomes a trap; wasmtime also applies its Spectre
    /// mitigations. The price: when an instance grows its memory and its slot is reused, the
    /// kernel must change page protections (`mprotect`) — a TLB flush on every core and a lock
    /// on the process's address space — so creating many short instances is slower and does
    /// not scale across cores.
    #[default]
    GuardPages,
    /// Every load and store is checked against the memory's current size in compiled code, and
    /// no page protections change between instances: creating instances is about twice as fast
    /// and scales with cores. Guest code that is memory-heavy runs slower, and wasmtime cannot
    /// apply its Spectre mitigations to memory accesses in this mode, so a plugin could try to
    /// read host memory through a speculative side channel. For trusted plugins with many short
    /// tasks; not for untrusted ones.
    Explicit,
}

impl BoundsChecks {
    /// The name as written in a pipeline.
    pub fn name(self) -> &'static str {
        match self {
            BoundsChecks::GuardPages => "guard-pages",
            BoundsChecks::Explicit => "explicit",
        }
    }
}

/// How a directory is granted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DirMode {
    /// Read only (the default).
    #[default]
    Ro,
    /// Read and write.
    Rw,
}

/// A host directory visible to the plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirGrant {
    /// Host path (relative paths are relative to the pipeline file).
    pub host: PathBuf,
    /// Path the plugin sees (absolute).
    pub guest: String,
    /// Read-only or read-write.
    pub mode: DirMode,
}

/// Capabilities granted to one plugin. Everything is denied unless listed here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Host environment variables passed through by name (absent ones are skipped).
    pub env: Vec<String>,
    /// Environment variables set to fixed values.
    pub env_set: BTreeMap<String, String>,
    /// `host:port` pairs the plugin may open TCP/UDP connections to.
    pub net: Vec<String>,
    /// Hosts (optionally `host:port`) the plugin may send HTTP requests to.
    pub http: Vec<String>,
    /// Fixed wall clock, counting monotonic clock and seeded random, for reproducible runs.
    pub deterministic: bool,
    /// Seed of the random generators when `deterministic`.
    pub seed: u64,
    /// Whether the plugin's requests (a gate's reports) carry the whole context: the pipeline's
    /// `vars` and every earlier result. Without it they carry only the run id and the pipeline's
    /// name. Input templates are rendered by the host and always see the whole context, so a
    /// task is given exactly what its template selects.
    pub context: bool,
}

impl Grants {
    /// Whether nothing at all is granted (clocks and random are the host's).
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
            && self.env.is_empty()
            && self.env_set.is_empty()
            && self.net.is_empty()
            && self.http.is_empty()
            && !self.deterministic
            && !self.context
    }
}

/// One task.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// Unique id within the phase.
    pub id: Id,
    /// The component to run.
    pub plugin: PluginRef,
    /// The `input` minijinja template (empty when absent).
    pub input: String,
    /// The `config` table as JSON (`{}` when absent).
    pub config: Json,
    /// Extra attempts after a retryable failure.
    pub retries: u32,
    /// Which failure kinds are retried (default `failed` and `timeout`).
    pub retry_on: Vec<FailureKind>,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Effective limits.
    pub limits: Limits,
    /// Capabilities.
    pub grants: Grants,
}

/// A phase's gate.
#[derive(Clone, Debug)]
pub struct GateSpec {
    /// The component to run.
    pub plugin: PluginRef,
    /// The `config` table as JSON (`{}` when absent).
    pub config: Json,
    /// Effective limits.
    pub limits: Limits,
    /// Capabilities.
    pub grants: Grants,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY,
            timeout: DEFAULT_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
            fuel: None,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            instances: DEFAULT_INSTANCES,
            max_log: DEFAULT_MAX_LOG,
            log_records: DEFAULT_LOG_RECORDS,
        }
    }
}

impl Pipeline {
    /// Every distinct plugin the pipeline uses, in first-use order.
    pub fn plugins(&self) -> Vec<&PluginRef> {
        let mut seen = Vec::<&PluginRef>::new();
        for phase in &self.phases {
            for p in phase
                .tasks
                .iter()
                .map(|t| &t.plugin)
                .chain(phase.gate.iter().map(|g| &g.plugin))
            {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
        }
        seen
    }

    /// Reads and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline, PipelineErrors> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            PipelineErrors::single(PipelineError {
                file: path.to_owned(),
                line: 0,
                column: 0,
                message: format!("cannot read the pipeline file: {e}"),
                help: Some("check the path passed to phasegate".into()),
            })
        })?;
        Self::parse(path, &source)
    }

    /// Validates pipeline text read from `path`.
    pub fn parse(path: &Path, source: &str) -> Result<Pipeline, PipelineErrors> {
        let mut errs = Errors {
            file: path,
            source,
            list: Vec::new(),
            lock: None,
        };
        let raw: RawPipeline = match toml::from_str(source) {
            Ok(raw) => raw,
            Err(e) => {
                let message = e.message().trim().to_owned();
                let help = help_for_serde(&message);
                errs.push(e.span(), message, help);
                return Err(errs.finish());
            }
        };
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let digest = crate::digest::sha256_bytes(source.as_bytes());

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
        let default_retry_on = d
            .retry_on
            .clone()
            .unwrap_or_else(|| DEFAULT_RETRY_ON.to_vec());
        let default_retries = d.retries.unwrap_or(0);
        let backoff = d
            .retry_backoff
            .map(|b| b.0)
            .unwrap_or(DEFAULT_RETRY_BACKOFF);
        let default_conc = match &d.concurrency {
            Some(c) => errs.positive(c).unwrap_or(1),
            None => default_concurrency(),
        };

        let all_phases: Vec<&str> = raw.phases.iter().map(|p| p.id.get_ref().as_str()).collect();
        let mut phase_ids: HashMap<String, std::ops::Range<usize>> = HashMap::new();
        let mut phases = Vec::new();
        for rp in &raw.phases {
            let pid = rp.id.get_ref().clone();
            errs.check_id(&rp.id, "phase");
            if let Some(first) = phase_ids.get(&pid) {
                let line = errs.line_col(first.start).0;
                errs.push(Some(rp.id.span()), format!("duplicate phase id `{pid}`"), Some(format!("phase ids must be unique; the first `{pid}` is at line {line}, rename one of them")));
            } else {
                phase_ids.insert(pid.clone(), rp.id.span());
            }
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

            let mut task_ids: HashMap<&str, std::ops::Range<usize>> = HashMap::new();
            let mut tasks = Vec::new();
            for rt in &rp.tasks {
                let tid = rt.id.get_ref();
                errs.check_id(&rt.id, "task");
                if let Some(first) = task_ids.get(tid.as_str()) {
                    let line = errs.line_col(first.start).0;
                    errs.push(Some(rt.id.span()), format!("duplicate task id `{tid}` in phase `{pid}`"), Some(format!("task ids must be unique within a phase; the first `{tid}` is at line {line}, rename one of them")));
                }
                let input = rt
                    .input
                    .as_ref()
                    .map(|i| i.get_ref().clone())
                    .unwrap_or_default();
                if let Some(spanned) = &rt.input {
                    let earlier_tasks: Vec<&str> = if parallel {
                        Vec::new()
                    } else {
                        task_ids.keys().copied().collect()
                    };
                    let earlier_phases: Vec<&str> = phases.iter().map(|p: &Phase| &*p.id).collect();
                    let scope = context::Scope {
                        earlier_phases: &earlier_phases,
                        all_phases: &all_phases,
                        current_phase: &pid,
                        earlier_tasks: &earlier_tasks,
                        parallel,
                    };
                    if let Err((message, help)) = context::check_template(&input, &scope) {
                        errs.push(
                            Some(spanned.span()),
                            format!("in the `input` of task `{tid}`: {message}"),
                            Some(help),
                        );
                    }
                }
                task_ids.insert(tid.as_str(), rt.id.span());
                let plugin = errs.plugin(&rt.plugin, &dir);
                let mut limits = merge_limits(default_limits, &rt.limits);
                if let Some(t) = rt.timeout {
                    limits.timeout = t.0;
                }
                errs.check_limits(&rt.limits, true);
                let grants = errs.grants(&rt.grants, &dir);
                tasks.push(TaskSpec {
                    id: tid.as_str().into(),
                    plugin,
                    input,
                    config: table_to_json(rt.config.as_ref()),
                    retries: rt.retries.unwrap_or(default_retries),
                    retry_on: rt
                        .retry_on
                        .clone()
                        .unwrap_or_else(|| default_retry_on.clone()),
                    retry_backoff: backoff,
                    limits,
                    grants,
                });
            }

            let gate = rp.gate.as_ref().map(|g| {
                let mut limits = merge_limits(default_limits, &g.limits);
                if let Some(t) = g.timeout {
                    limits.timeout = t.0;
                }
                errs.check_limits(&g.limits, true);
                GateSpec {
                    plugin: errs.plugin(&g.plugin, &dir),
                    config: table_to_json(g.config.as_ref()),
                    limits,
                    grants: errs.grants(&g.grants, &dir),
                }
            });
            phases.push(Phase {
                id: pid.into(),
                description: rp.description.clone(),
                parallel,
                concurrency,
                gate,
                tasks,
            });
        }

        if errs.list.is_empty() {
            Ok(Pipeline {
                name: raw.name.into_inner(),
                description: raw.description,
                vars: table_to_json(raw.vars.as_ref()),
                path: path.to_owned(),
                digest,
                engine: EngineLimits {
                    bounds_checks: raw.engine.bounds_checks.unwrap_or_default(),
                    ..engine_limits(max_stack, &phases)
                },
                phases,
                project: match errs.lock {
                    Some(Ok((project, _))) => Some(project),
                    _ => crate::store::Project::find(&dir),
                },
            })
        } else {
            Err(errs.finish())
        }
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
) -> Result<(Limits, Grants, EngineLimits), PipelineErrors> {
    let mut errs = Errors {
        file: path,
        source,
        list: Vec::new(),
        lock: None,
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
                .chain(p.gate.iter().map(|g| &g.limits))
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
    }
}

fn table_to_json(table: Option<&toml::Table>) -> Json {
    match table {
        Some(t) => serde_json::to_value(t).unwrap_or(Json::Object(Default::default())),
        None => Json::Object(Default::default()),
    }
}

fn help_for_serde(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        Some(
            "remove this key or correct its spelling; the keys allowed here are listed above"
                .into(),
        )
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        Some(format!("add `{field} = ...` to this table"))
    } else if message.starts_with("invalid type") {
        Some("check the value's type against the pipeline format in README.md".into())
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// One problem in a pipeline file, with where it is and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PipelineError {
    /// The pipeline file.
    pub file: PathBuf,
    /// 1-based line (0 when the problem has no place, e.g. an unreadable file).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: Option<String>,
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// All problems found in a pipeline file, in file order.
#[derive(Clone, Debug, thiserror::Error)]
pub struct PipelineErrors(pub Vec<PipelineError>);

impl PipelineErrors {
    fn single(e: PipelineError) -> Self {
        PipelineErrors(vec![e])
    }
}

impl fmt::Display for PipelineErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

struct Errors<'a> {
    file: &'a Path,
    source: &'a str,
    list: Vec<PipelineError>,
    /// The project and its lock, read on the first installed-plugin name.
    lock: Option<Result<(crate::store::Project, crate::store::Lock), String>>,
}

impl Errors<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.source[..offset.min(self.source.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map(|l| l.chars().count())
            .unwrap_or(0)
            + 1;
        (line, column)
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
        let mut dirs = Vec::new();
        for d in &raw.dirs {
            let host = dir.join(d.host.get_ref());
            if !host.is_dir() {
                self.push(
                    Some(d.host.span()),
                    format!("granted directory `{}` does not exist (looked for {})", d.host.get_ref(), host.display()),
                    Some("create it or correct the path; relative paths are relative to the pipeline file".into()),
                );
            }
            let guest = d.guest.get_ref();
            if !guest.starts_with('/') || guest.split('/').any(|c| c == "..") {
                self.push(
                    Some(d.guest.span()),
                    format!("guest path `{guest}` must be absolute and must not contain `..`"),
                    Some(
                        "write where the plugin sees the directory, e.g. `guest = \"/data\"`"
                            .into(),
                    ),
                );
            }
            dirs.push(DirGrant {
                host,
                guest: guest.clone(),
                mode: d.mode,
            });
        }
        for e in &raw.env {
            if e.get_ref().is_empty() || e.get_ref().contains('=') {
                self.push(
                    Some(e.span()),
                    format!("`{}` is not an environment variable name", e.get_ref()),
                    Some("list names to pass through in `env`; set values with `env-set = { NAME = \"value\" }`".into()),
                );
            }
        }
        for n in &raw.net {
            let ok = n
                .get_ref()
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                self.push(
                    Some(n.span()),
                    format!("network grant `{}` is not `host:port`", n.get_ref()),
                    Some("write e.g. `net = [\"127.0.0.1:5432\", \"db.internal:5432\"]`".into()),
                );
            }
        }
        for h in &raw.http {
            if h.get_ref().contains("://") || h.get_ref().contains('/') || h.get_ref().is_empty() {
                self.push(
                    Some(h.span()),
                    format!("HTTP grant `{}` is not a host name", h.get_ref()),
                    Some("write the host only, optionally with a port: `http = [\"api.example.com\", \"127.0.0.1:8080\"]`".into()),
                );
            }
        }
        Grants {
            dirs,
            env: raw.env.iter().map(|e| e.get_ref().clone()).collect(),
            env_set: raw.env_set.clone(),
            net: raw.net.iter().map(|n| n.get_ref().clone()).collect(),
            http: raw.http.iter().map(|h| h.get_ref().clone()).collect(),
            deterministic: raw.deterministic,
            seed: raw.seed.unwrap_or(0),
            context: raw.context,
        }
    }

    fn plugin(&mut self, spec: &Spanned<String>, dir: &Path) -> PluginRef {
        let s = spec.get_ref();
        if crate::store::is_installed_name(s) {
            return self.installed_plugin(spec, dir);
        }
        let path = dir.join(s);
        if s.trim().is_empty() {
            self.push(Some(spec.span()), "empty `plugin`", Some("write the path of a component file, e.g. `plugin = \"plugins/text_stats.wasm\"`, or the name of an installed plugin".into()));
        } else if !path.is_file() {
            self.push(Some(spec.span()), format!("plugin file `{s}` not found (looked for {})", path.display()), Some("build the plugin first (scripts/build-guests) or correct the path; relative paths are relative to the pipeline file".into()));
        }
        PluginRef {
            spec: s.clone(),
            path,
            installed: None,
            digest: None,
        }
    }

    /// Resolves an installed plugin's name through the project's lock to its stored file.
    fn installed_plugin(&mut self, spec: &Spanned<String>, dir: &Path) -> PluginRef {
        let name = spec.get_ref();
        let lock = self.lock.get_or_insert_with(|| {
            let project = crate::store::Project::find(dir).ok_or_else(|| {
                format!(
                    "`{name}` names an installed plugin, but no {} was found in the pipeline's folder ({}) or any folder above it",
                    crate::store::LOCK_FILE,
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
        let (path, digest) = match resolved {
            Ok((path, digest)) => (path, Some(digest)),
            Err((message, help)) => {
                self.push(Some(spec.span()), message, Some(help));
                (PathBuf::new(), None)
            }
        };
        PluginRef {
            spec: name.clone(),
            path,
            installed: Some(name.clone()),
            digest,
        }
    }
}

/// Maps the pipeline's plugin specs to their digests (for the progress file).
pub type PluginDigests = BTreeMap<String, String>;

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory {}, timeout {}, max-output {}, fuel {}, table-elements {}, instances {}, max-log {}, log-records {}",
            self.memory,
            humantime::format_duration(self.timeout),
            self.max_output,
            self.fuel
                .map(|f| f.to_string())
                .unwrap_or_else(|| "unlimited".into()),
            self.table_elements,
            self.instances,
            self.max_log,
            self.log_records
        )
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for d in &self.dirs {
            let mode = match d.mode {
                DirMode::Ro => "ro",
                DirMode::Rw => "rw",
            };
            parts.push(format!("dir {} -> {} ({mode})", d.host.display(), d.guest));
        }
        if !self.env.is_empty() {
            parts.push(format!("env {}", self.env.join(", ")));
        }
        if !self.env_set.is_empty() {
            parts.push(format!(
                "env-set {}",
                self.env_set.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if !self.net.is_empty() {
            parts.push(format!("net {}", self.net.join(", ")));
        }
        if !self.http.is_empty() {
            parts.push(format!("http {}", self.http.join(", ")));
        }
        if self.deterministic {
            parts.push(format!(
                "deterministic clocks and random (seed {})",
                self.seed
            ));
        }
        if self.context {
            parts.push("the whole context".into());
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}
