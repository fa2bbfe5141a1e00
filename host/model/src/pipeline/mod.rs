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

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::outcome::FailureKind;
use crate::units::ByteSize;

mod parse;
mod plain;
mod raw;
mod split;
mod vars;

pub use crate::error::{PipelineError, PipelineErrors};
pub use crate::grants::{DirGrant, DirMode, Grants, RawGrants};
pub use parse::{Resolve, Scope, TaskIds, sandbox};
pub use raw::{RawLimits, schema};

pub const DEFAULT_MEMORY: ByteSize = ByteSize(64 << 20);
/// Default wall-clock timeout per attempt: generous for real work, short enough that a hung
/// plugin does not hold a run hostage.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default maximum size of a task's output: outputs live in the context and the progress file.
pub const DEFAULT_MAX_OUTPUT: ByteSize = ByteSize(1 << 20);

/// The number of CPUs this process may use, asked of the system once (on Linux that reads the
/// cgroup's CPU quota: tens of microseconds, and every pipeline load asked).
fn cpus() -> Option<usize> {
    static CPUS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).ok())
}

/// How many threads loading a large pipeline uses: one per CPU, at most 4.
pub fn loading_threads() -> usize {
    cpus().map_or(1, |n| n.min(4))
}

/// `work` done on each of `parts`, the answers in their order: the first part on this thread,
/// each other on a thread of its own, and one whose thread the system refuses here, in its
/// turn. A part whose thread panicked answers `None` (the caller does that part another way).
pub fn on_threads<P, R>(parts: &[P], work: impl Fn(P) -> R + Sync) -> Vec<Option<R>>
where
    P: Copy + Send + Sync,
    R: Send,
{
    let Some((&first, others)) = parts.split_first() else {
        return Vec::new();
    };
    if others.is_empty() {
        return vec![Some(work(first))];
    }
    let work = &work;
    std::thread::scope(|scope| {
        let others: Vec<_> = others
            .iter()
            .map(|&part| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || work(part))
                    .map_err(|_| part)
            })
            .collect();
        let mine = work(first);
        std::iter::once(Some(mine))
            .chain(others.into_iter().map(|other| match other {
                Ok(thread) => thread.join().ok(),
                Err(part) => Some(work(part)),
            }))
            .collect()
    })
}

/// Default concurrency cap of a parallel phase: the number of CPUs.
pub fn default_concurrency() -> usize {
    cpus().unwrap_or(2)
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
/// Default resources an instance may hold at once: open files and directories, sockets,
/// streams, pollables (wasmtime's resource table of the instance). A program that is not
/// hoarding holds a few dozen (a Python guest starts with ~10); 256 leaves room, and 64 such
/// instances at once stay far below the descriptor limit the CLI raises itself to (the hard
/// limit, typically 524,288 or more on Linux).
pub const DEFAULT_DESCRIPTORS: u32 = 256;
/// Default bytes an instance may write into its read-write grants per attempt: as much as it
/// may hold in memory by default. It bounds what a phase leaves on disk per attempt to
/// tasks × 64 MiB; a plugin that writes more (build outputs, archives) says so with its own
/// `max-written`. Only tasks with a read-write grant can write at all.
pub const DEFAULT_MAX_WRITTEN: ByteSize = ByteSize(64 << 20);
/// Failure kinds retried by default: a task's own retryable error, and a timeout (the machine
/// may just have been busy). Traps and limits would fail the same way again.
pub const DEFAULT_RETRY_ON: [FailureKind; 2] = [FailureKind::Failed, FailureKind::Timeout];
/// Default first retry delay; doubles after each attempt.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Retry delays never exceed this.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);

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
    /// The root of the project (folder of `phasegate.lock`) the pipeline belongs to, if any:
    /// the nearest folder from the pipeline's upwards that holds a lock.
    pub project: Option<PathBuf>,
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
    /// The gates, in file order (`gate = {…}` is one `required` gate); none means "all tasks
    /// succeeded".
    pub gates: Vec<GateSpec>,
    /// How many `quorum` gates must pass (or warn); 0 when the phase has none.
    pub quorum: usize,
    /// Tasks in file order.
    pub tasks: Vec<TaskSpec>,
}

/// A plugin reference: as written, and resolved to a file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
    /// Resources (open files and directories, sockets, streams, pollables) held at once.
    #[serde(default = "default_descriptors")]
    pub descriptors: u32,
    /// Bytes the instance may write into its read-write directory grants (all writes counted,
    /// rewrites included).
    #[serde(default = "default_max_written")]
    pub max_written: ByteSize,
}

fn default_descriptors() -> u32 {
    DEFAULT_DESCRIPTORS
}

fn default_max_written() -> ByteSize {
    DEFAULT_MAX_WRITTEN
}

/// Settings that apply to the whole engine (one per run): `max-stack` from
/// `[defaults.limits]`, `bounds-checks` from `[engine]`, the rest derived from the phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema,
)]
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

/// One task.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// Unique id within the phase.
    pub id: Id,
    /// The component to run (shared: thousands of tasks name the same few plugins).
    pub plugin: Arc<PluginRef>,
    /// The `input` minijinja template (empty when absent).
    pub input: String,
    /// The line of `input` in the pipeline file (0 when absent), for messages.
    pub input_line: usize,
    /// The `config` table as JSON (`{}` when absent).
    pub config: Json,
    /// The line of `config` in the pipeline file (of the task's `id` when it has none).
    pub config_line: usize,
    /// Extra attempts after a retryable failure.
    pub retries: u32,
    /// How many tasks in a row one instance may serve (1: a fresh instance for each task).
    pub reuse: u32,
    /// Which failure kinds are retried (default `failed` and `timeout`).
    pub retry_on: Arc<[FailureKind]>,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Effective limits.
    pub limits: Limits,
    /// Capabilities (shared by the tasks that have no `grants` table).
    pub grants: Arc<Grants>,
    /// Whether the result cache may serve and store its result (`cache = false` on the task or
    /// its phase opts out; the sandbox decides whether it can be cached at all).
    pub cache: bool,
}

/// A phase's gate.
#[derive(Clone, Debug)]
pub struct GateSpec {
    /// The component to run.
    pub plugin: PluginRef,
    /// The `config` table as JSON (`{}` when absent).
    pub config: Json,
    /// The line of `config` in the pipeline file (of the gate's `plugin` when it has none).
    pub config_line: usize,
    /// Effective limits.
    pub limits: Limits,
    /// Capabilities.
    pub grants: Grants,
    /// What its verdict does to the phase.
    pub policy: GatePolicy,
}

/// What a gate's verdict does to its phase.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum GatePolicy {
    /// A `fail` stops the run (the default).
    #[default]
    Required,
    /// A `fail` is recorded and shown as a warning; the run goes on.
    Advisory,
    /// Counts towards the phase's `quorum`: the phase fails when fewer than `quorum` of its
    /// quorum gates pass (or warn).
    Quorum,
}

impl GatePolicy {
    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            GatePolicy::Required => "required",
            GatePolicy::Advisory => "advisory",
            GatePolicy::Quorum => "quorum",
        }
    }
}

impl Phase {
    /// Whether the phase's verdict is combined from its gates' by their policies (several
    /// gates, or one that is not `required`), rather than being its one gate's verdict.
    pub fn has_policies(&self) -> bool {
        self.gates.len() > 1 || self.gates.iter().any(|g| g.policy != GatePolicy::Required)
    }
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
            descriptors: DEFAULT_DESCRIPTORS,
            max_written: DEFAULT_MAX_WRITTEN,
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
                .map(|t| &*t.plugin)
                .chain(phase.gates.iter().map(|g| &g.plugin))
            {
                if !seen.contains(&p) {
                    seen.push(p);
                }
            }
        }
        seen
    }
}

/// Maps the pipeline's plugin specs to their digests (for the progress file).
pub type PluginDigests = BTreeMap<String, String>;

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory {}, timeout {}, max-output {}, fuel {}, table-elements {}, instances {}, max-log {}, log-records {}, descriptors {}, max-written {}",
            self.memory,
            humantime::format_duration(self.timeout),
            self.max_output,
            self.fuel
                .map(|f| f.to_string())
                .unwrap_or_else(|| "unlimited".into()),
            self.table_elements,
            self.instances,
            self.max_log,
            self.log_records,
            self.descriptors,
            self.max_written
        )
    }
}
