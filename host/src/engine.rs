//! The wasmtime side: engine configuration, loading and type-checking components, and running
//! one task or gate call in its own Store.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, Trap};

use crate::compile_cache::{CompileCache, Source};
use crate::events::Emitter;
use crate::pipeline::{BoundsChecks, EngineLimits, Grants, Limits, PluginRef};
use crate::plugin::gate_world::{Gate, GatePre};
use crate::plugin::task_world::{Task, TaskPre};
use crate::plugin::{HostState, Origin, host_iface, wit};
use crate::progress::{Failure, FailureKind, VerdictKind, VerdictRecord};
use crate::sandbox::deadline::within;
use crate::sandbox::limits::LimitHit;

/// How often the epoch advances: the granularity of timeouts and of yielding to other tasks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Pipelines with more live instances than this use on-demand allocation instead of a pool.
pub const MAX_POOLED_INSTANCES: usize = 2_000;

/// Which world a component implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    /// `phasegate:plugin/task`.
    Task,
    /// `phasegate:plugin/gate`.
    Gate,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::Task => "phasegate:plugin/task@0.1.0",
            World::Gate => "phasegate:plugin/gate@0.1.0",
        })
    }
}

enum Pre {
    Task(TaskPre<HostState>),
    Gate(GatePre<HostState>),
}

/// A compiled, linked, type-checked plugin, ready to instantiate many times.
pub struct LoadedPlugin {
    /// The reference it was loaded from.
    pub plugin: PluginRef,
    /// `sha256:` of its bytes.
    pub digest: String,
    /// Its world.
    pub world: World,
    /// Names of the interfaces it imports (e.g. `wasi:filesystem/preopens@0.2.6`).
    pub imports: Vec<String>,
    /// Names it exports (`metadata`, `run` or `check`).
    pub exports: Vec<String>,
    /// Whether it imports any `wasi:` interface. A plugin that does not cannot reach WASI, so its
    /// instances skip building a WASI context (a measurable share of a trivial task's cost).
    pub uses_wasi: bool,
    /// Size of the component file in bytes.
    pub size: u64,
    /// Whether it was compiled now or loaded from the compile cache.
    pub source: Source,
    pre: Pre,
}

/// How the instance pool gives a finished instance's linear memory back for the next one.
///
/// Every instance starts from its component's pristine memory image whatever the strategy:
/// nothing a task wrote is ever seen by another task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReset {
    /// Bytes at the start of each memory slot that stay resident between instances and are
    /// restored in place (copied back from the image, or zeroed) instead of being returned to
    /// the kernel and faulted in again by the next instance.
    pub keep_resident: usize,
    /// Find the pages an instance actually dirtied with Linux's `PAGEMAP_SCAN` (6.7+) and restore
    /// only those, so a large `keep_resident` costs nothing for instances that touch little.
    /// Without it wasmtime would restore the whole resident prefix after every instance, so
    /// where the kernel is older [`MemoryReset::effective`] falls back to [`MemoryReset::DECOMMIT`].
    pub pagemap_scan: bool,
}

impl MemoryReset {
    /// phasegate's default: up to 32 MiB of each slot stays resident and only dirtied pages are
    /// restored. Interpreter-based plugins (Python, JavaScript) write to tens of MiB of their
    /// pre-initialised heap on every call; returning those pages to the kernel and faulting them
    /// back in dominated their per-task cost. 32 MiB covers the templates' working sets while
    /// bounding what an idle pool slot can hold.
    pub const RESIDENT: MemoryReset = MemoryReset {
        keep_resident: 32 << 20,
        pagemap_scan: true,
    };
    /// The earlier strategy (the benchmark's baseline): keep 64 KiB resident, return the rest to
    /// the kernel with `madvise` after every instance.
    pub const DECOMMIT: MemoryReset = MemoryReset {
        keep_resident: 1 << 16,
        pagemap_scan: false,
    };

    /// Sets this strategy (or, where the kernel lacks `PAGEMAP_SCAN`, [`MemoryReset::DECOMMIT`])
    /// on a pool configuration.
    pub fn apply(self, pool: &mut wasmtime::PoolingAllocationConfig) {
        let reset = self.effective();
        pool.linear_memory_keep_resident(reset.keep_resident)
            .pagemap_scan(if reset.pagemap_scan {
                wasmtime::Enabled::Auto
            } else {
                wasmtime::Enabled::No
            });
    }

    /// This strategy where the kernel supports it, else [`MemoryReset::DECOMMIT`].
    pub fn effective(self) -> MemoryReset {
        if self.pagemap_scan && !pagemap_scan_available() {
            MemoryReset::DECOMMIT
        } else {
            self
        }
    }
}

/// Whether the running kernel has `PAGEMAP_SCAN` (Linux 6.7 and later).
fn pagemap_scan_available() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// A pipeline's loaded plugins, by reference.
pub type LoadedPlugins = std::collections::HashMap<PluginRef, Arc<LoadedPlugin>>;

/// One attempt of a task.
pub struct Attempt {
    /// Output JSON text, or why there is none.
    pub result: Result<String, Failure>,
    /// Log lines (`level: message`), including captured stdout/stderr.
    pub log: Vec<String>,
}

/// What a plugin says about itself.
pub type Metadata = wit::PluginMetadata;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{spec}` ({path}): {message}")]
pub struct LoadError {
    /// As written in the pipeline.
    pub spec: String,
    /// Where it was looked for.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// The engine, the linker, and the epoch ticker, shared by every plugin of a run.
pub struct PluginHost {
    engine: Engine,
    linker: Linker<HostState>,
    limits: EngineLimits,
    cache: Option<CompileCache>,
    /// Where compiled components are cached, or why they are not.
    pub cache_status: String,
}

impl PluginHost {
    /// Creates the engine (epoch interruption on, async; fuel metering only when a plugin has a
    /// fuel budget) and links WASI, `wasi:http` and the host interface. Compiled components
    /// are cached under [`CompileCache::default_root`].
    pub fn new(limits: EngineLimits) -> anyhow::Result<Arc<Self>> {
        Self::with_cache(limits, CompileCache::default_root())
    }

    /// As [`new`](Self::new), with compiled components cached under `cache_root` (`None`: no
    /// cache).
    pub fn with_cache(
        limits: EngineLimits,
        cache_root: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Arc<Self>> {
        Self::with_options(limits, cache_root, MemoryReset::RESIDENT)
    }

    /// As [`with_cache`](Self::with_cache), with the pool's memory reset strategy chosen (the
    /// benchmark compares them).
    pub fn with_options(
        limits: EngineLimits,
        cache_root: Option<std::path::PathBuf>,
        reset: MemoryReset,
    ) -> anyhow::Result<Arc<Self>> {
        let engine = Engine::new(&config(&limits, reset))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        host_iface::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        spawn_epoch_ticker(&engine);
        let (cache, cache_status) = match cache_root {
            None => (None, "compile cache off".to_owned()),
            Some(root) => match CompileCache::open(&root, &engine) {
                Ok(cache) => (Some(cache), format!("compile cache {}", root.display())),
                Err(why) => (None, format!("compile cache not used: {why}")),
            },
        };
        Ok(Arc::new(PluginHost {
            engine,
            linker,
            limits,
            cache,
            cache_status,
        }))
    }

    /// Reads, compiles and type-checks a plugin against the world it claims by its exports.
    pub fn load(&self, plugin: &PluginRef) -> Result<LoadedPlugin, LoadError> {
        let bytes = std::fs::read(&plugin.path).map_err(|e| LoadError {
            spec: plugin.spec.clone(),
            path: plugin.path.display().to_string(),
            message: format!(
                "cannot read the file: {e}{}",
                reinstall_help(plugin).unwrap_or_default()
            ),
        })?;
        self.load_bytes(plugin, &bytes)
    }

    /// As [`load`](Self::load), from bytes already read (a download, a registry pull).
    pub fn load_bytes(&self, plugin: &PluginRef, bytes: &[u8]) -> Result<LoadedPlugin, LoadError> {
        let err = |message: String| LoadError {
            spec: plugin.spec.clone(),
            path: plugin.path.display().to_string(),
            message,
        };
        let digest = crate::digest::sha256_bytes(bytes);
        if let Some(expected) = plugin.digest.as_ref().filter(|d| **d != digest) {
            // The bytes about to be compiled are the ones checked: nothing can swap the file
            // between a check and the load.
            return Err(err(format!(
                "the stored file was modified: it should hash to {expected} but hashes to {digest}{}",
                reinstall_help(plugin).unwrap_or_default()
            )));
        }
        if wasmparser_is_core_module(bytes) {
            return Err(err("this is a core Wasm module, not a component; turn it into one with `wasm-tools component new` (or build for wasm32-wasip2)".into()));
        }
        let compiled = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, bytes, &digest),
            None => Component::new(&self.engine, bytes).map(|c| (c, Source::Compiled)),
        };
        let (component, source) =
            compiled.map_err(|e| err(format!("not a valid Wasm component: {}", chain(&e))))?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        // Imports first: a component that cannot link is refused whatever it exports.
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            err(format!(
                "imports an interface phasegate does not provide (plugins may import `phasegate:plugin/host`, WASI 0.2 and `wasi:http`): {}",
                chain(&e)
            ))
        })?;
        let world = if exports.iter().any(|e| e == "run") {
            World::Task
        } else if exports.iter().any(|e| e == "check") {
            World::Gate
        } else {
            return Err(err(format!(
                "implements neither the task world (export `run`) nor the gate world (export `check`); it exports: {}",
                if exports.is_empty() {
                    "nothing".to_owned()
                } else {
                    exports.join(", ")
                }
            )));
        };
        let pre = match world {
            World::Task => TaskPre::new(instance_pre).map(Pre::Task),
            World::Gate => GatePre::new(instance_pre).map(Pre::Gate),
        }
        .map_err(|e| err(format!("does not match {world}: {}", chain(&e))))?;
        let mut imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        imports.sort();
        let uses_wasi = imports.iter().any(|i| i.starts_with("wasi:"));
        Ok(LoadedPlugin {
            plugin: plugin.clone(),
            digest,
            world,
            uses_wasi,
            imports,
            exports,
            size: bytes.len() as u64,
            source,
            pre,
        })
    }

    fn store(
        &self,
        plugin: &LoadedPlugin,
        limits: &Limits,
        grants: &Grants,
        origin: Origin,
        emitter: Emitter,
    ) -> Result<Store<HostState>, String> {
        let state = if plugin.uses_wasi {
            HostState::new(limits, grants, origin, emitter)?
        } else {
            HostState::without_wasi(limits, origin, emitter)
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.limits.fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| e.to_string())?;
        }
        // Yield to the executor at every tick so other tasks run; the wall-clock deadline is
        // enforced around the call (it also covers time spent blocked in host calls).
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }

    /// Calls a plugin's `metadata` export in a fresh instance.
    pub async fn metadata(
        &self,
        plugin: &LoadedPlugin,
        emitter: Emitter,
    ) -> anyhow::Result<Metadata> {
        let limits = Limits {
            timeout: Duration::from_secs(10),
            ..Limits::default()
        };
        let origin = Origin::Named {
            phase: String::new(),
            task: "metadata".into(),
        };
        let mut store = self
            .store(plugin, &limits, &Grants::default(), origin, emitter)
            .map_err(anyhow::Error::msg)?;
        let call = async {
            match &plugin.pre {
                Pre::Task(pre) => {
                    let i: Task = pre.instantiate_async(&mut store).await?;
                    i.call_metadata(&mut store).await
                }
                Pre::Gate(pre) => {
                    let i: Gate = pre.instantiate_async(&mut store).await?;
                    i.call_metadata(&mut store).await
                }
            }
        };
        match within(limits.timeout, call).await {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("`metadata` failed: {}", chain(&e))),
            Err(_) => anyhow::bail!("`metadata` did not return within {:?}", limits.timeout),
        }
    }

    /// Runs one attempt of a task: the output JSON text or a typed failure, and the log lines
    /// the attempt produced (bounded by the log limits).
    pub async fn run_task(
        &self,
        plugin: &LoadedPlugin,
        request: &Arc<wit::TaskRequest>,
        limits: &Limits,
        grants: &Grants,
        emitter: Emitter,
    ) -> Attempt {
        let mut log = Vec::new();
        let result = self
            .attempt(plugin, request, limits, grants, emitter, &mut log)
            .await;
        Attempt { result, log }
    }

    async fn attempt(
        &self,
        plugin: &LoadedPlugin,
        request: &Arc<wit::TaskRequest>,
        limits: &Limits,
        grants: &Grants,
        emitter: Emitter,
        log: &mut Vec<String>,
    ) -> Result<String, Failure> {
        // Named only when something goes wrong (formatting it for every task costs).
        let who = || {
            format!(
                "task `{}` in phase `{}` (plugin `{}`)",
                request.task, request.phase, plugin.plugin.spec
            )
        };
        let Pre::Task(pre) = &plugin.pre else {
            return Err(failure(
                FailureKind::Host,
                format!(
                    "{}: the plugin is a gate, not a task; use it as a phase's `gate`",
                    who()
                ),
            ));
        };
        let origin = Origin::Task(request.clone());
        let mut store = self
            .store(plugin, limits, grants, origin, emitter)
            .map_err(|e| failure(FailureKind::Host, format!("{}: {e}", who())))?;
        let result = within(limits.timeout, async {
            let instance: Task = pre.instantiate_async(&mut store).await?;
            instance.call_run(&mut store, request).await
        })
        .await;
        store.data_mut().flush_stdio();
        *log = store.data_mut().take_log();
        let output = match result {
            Err(_) => return Err(timeout_failure(&who(), limits)),
            Ok(Err(e)) => return Err(classify(&who(), &e, store.data(), limits, &self.limits)),
            Ok(Ok(Err(e))) => {
                return Err(match e {
                    wit::TaskError::Failed(m) => failure(FailureKind::Failed, m),
                    wit::TaskError::InvalidInput(m) => failure(FailureKind::InvalidInput, m),
                    wit::TaskError::InvalidConfig(m) => failure(FailureKind::InvalidConfig, m),
                });
            }
            Ok(Ok(Ok(output))) => output,
        };
        if output.len() as u64 > limits.max_output.0 {
            return Err(failure(
                FailureKind::InvalidOutput,
                format!(
                    "{} returned {} bytes of output, over its limit of {}; raise `limits.max-output`",
                    who(),
                    output.len(),
                    limits.max_output
                ),
            ));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
            return Err(failure(
                FailureKind::InvalidOutput,
                format!("{} returned output that is not JSON ({e})", who()),
            ));
        }
        Ok(output)
    }

    /// Runs a gate. A gate that cannot run yields a `fail` verdict explaining why.
    pub async fn run_gate(
        &self,
        plugin: &LoadedPlugin,
        report: wit::PhaseReport,
        limits: &Limits,
        grants: &Grants,
        emitter: Emitter,
    ) -> VerdictRecord {
        let gate = plugin.plugin.spec.clone();
        let who = format!("gate `{gate}` of phase `{}`", report.phase);
        let fail = |reason: String| VerdictRecord {
            kind: VerdictKind::Fail,
            gate: gate.clone(),
            reason,
            evidence: None,
        };
        let Pre::Gate(pre) = &plugin.pre else {
            return fail(format!(
                "{who}: the plugin is a task, not a gate; use a gate plugin"
            ));
        };
        let origin = Origin::Named {
            phase: report.phase.clone(),
            task: "gate".into(),
        };
        let mut store = match self.store(plugin, limits, grants, origin, emitter) {
            Ok(store) => store,
            Err(e) => return fail(format!("{who}: {e}")),
        };
        let result = within(limits.timeout, async {
            let instance: Gate = pre.instantiate_async(&mut store).await?;
            instance.call_check(&mut store, &report).await
        })
        .await;
        store.data_mut().flush_stdio();
        match result {
            Err(_) => fail(timeout_failure(&who, limits).message),
            Ok(Err(e)) => fail(classify(&who, &e, store.data(), limits, &self.limits).message),
            Ok(Ok(v)) => VerdictRecord {
                kind: match v.kind {
                    wit::VerdictKind::Pass => VerdictKind::Pass,
                    wit::VerdictKind::Warn => VerdictKind::Warn,
                    wit::VerdictKind::Fail => VerdictKind::Fail,
                },
                gate,
                reason: v.reason,
                evidence: v.evidence,
            },
        }
    }
}

/// The engine configuration for `limits`: epoch interruption (always: every task has a
/// timeout), fuel metering when some plugin has a budget, the stack, the bounds-check mode, and
/// the instance pool with its memory `reset` strategy.
pub fn config(limits: &EngineLimits, reset: MemoryReset) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(limits.fuel);
    let stack = usize::try_from(limits.max_stack.0).unwrap_or(usize::MAX);
    config.max_wasm_stack(stack);
    // The fiber running the guest must hold the whole Wasm stack plus host frames.
    config.async_stack_size(stack.saturating_add(1 << 20));
    bounds_checks(&mut config, limits.bounds_checks);
    // Beyond a few thousand live instances the pool's address-space reservation gets large;
    // such pipelines use on-demand allocation.
    if limits.max_instances <= MAX_POOLED_INSTANCES {
        config.allocation_strategy(pool(limits, reset));
    }
    config
}

/// Sets how compiled code confines memory accesses (see [`BoundsChecks`]).
pub fn bounds_checks(config: &mut Config, mode: BoundsChecks) {
    if mode == BoundsChecks::Explicit {
        // Bounds checked in code and no guard region, so no page protection changes between
        // instances (wasmtime then also turns its Spectre mitigations off).
        config.signals_based_traps(false);
        config.memory_guard_size(0);
    }
}

/// The instance pool: slots for every instance that can be alive at once (twice over, so freed
/// slots need not be reused at once). Pooling makes instantiation a few microseconds (no mmap per
/// instance). Memory slots reserve (not commit) the whole 4 GiB a 32-bit memory can address, so
/// the pool itself never refuses a plugin: per-plugin `memory` limits are the store limiter's
/// job, which names the limit and the key to raise.
pub fn pool(limits: &EngineLimits, reset: MemoryReset) -> wasmtime::PoolingAllocationConfig {
    let instances =
        u32::try_from(limits.max_instances.saturating_mul(2).saturating_add(8)).unwrap_or(u32::MAX);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_stacks(instances)
        .total_core_instances(instances.saturating_mul(20))
        .total_memories(instances.saturating_mul(4))
        .total_tables(instances.saturating_mul(4))
        .max_core_instances_per_component(200)
        .max_memories_per_component(20)
        .max_tables_per_component(40)
        .table_elements(usize::try_from(crate::pipeline::MAX_TABLE_ELEMENTS).unwrap_or(usize::MAX))
        .max_memory_size(1 << 32)
        // Return memory to the OS in batches, and keep the first pages of each slot resident:
        // fewer madvise calls (and cross-core TLB shootdowns) per instantiation.
        .decommit_batch_size(64)
        .table_keep_resident(1 << 16)
        .async_stack_keep_resident(1 << 16);
    reset.apply(&mut pool);
    pool
}

fn failure(kind: FailureKind, message: String) -> Failure {
    Failure { kind, message }
}

fn timeout_failure(who: &str, limits: &Limits) -> Failure {
    failure(
        FailureKind::Timeout,
        format!(
            "{who} exceeded its timeout of {}; raise `timeout`",
            humantime::format_duration(limits.timeout)
        ),
    )
}

fn classify(
    who: &str,
    error: &wasmtime::Error,
    state: &HostState,
    limits: &Limits,
    engine: &EngineLimits,
) -> Failure {
    if let Some(hit) = state.limiter.hit {
        return match hit {
            LimitHit::Memory { requested, .. } => failure(
                FailureKind::Limit,
                format!(
                    "{who} exceeded its memory limit of {} (asked for {}); raise `limits.memory`",
                    limits.memory,
                    crate::units::ByteSize(requested)
                ),
            ),
            LimitHit::TableElements { limit, requested } => failure(
                FailureKind::Limit,
                format!("{who} grew a table to {requested} elements, over the limit of {limit}"),
            ),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => {
            return failure(
                FailureKind::Limit,
                format!(
                    "{who} exceeded its stack limit of {} (deep recursion?); raise `max-stack` in `[defaults.limits]`",
                    engine.max_stack
                ),
            );
        }
        Some(Trap::OutOfFuel) => {
            return failure(
                FailureKind::Limit,
                format!(
                    "{who} ran out of fuel: its budget of {} units is spent; raise `limits.fuel`",
                    limits.fuel.unwrap_or(0)
                ),
            );
        }
        _ => {}
    }
    let text = chain(error);
    if text.contains("instance count too high")
        || text.contains("table count too high")
        || text.contains("memory count too high")
    {
        return failure(
            FailureKind::Limit,
            format!(
                "{who} instantiates more core instances, tables or memories than its limit of {} instances allows; raise `limits.instances` ({text})",
                limits.instances
            ),
        );
    }
    if error.downcast_ref::<Trap>().is_some() {
        let stderr = state.stderr_text();
        let detail = if stderr.is_empty() {
            String::new()
        } else {
            format!("; stderr: {}", last_lines(&stderr, 5))
        };
        return failure(
            FailureKind::Trap,
            format!("{who} trapped: {}{detail}", chain(error)),
        );
    }
    failure(
        FailureKind::Host,
        format!("{who} could not run: {}", chain(error)),
    )
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Formats an error with its causes on one line.
pub fn chain(e: &wasmtime::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// For an installed plugin whose stored file is missing or modified: how to repair the store.
fn reinstall_help(plugin: &PluginRef) -> Option<String> {
    let name = plugin.installed.as_ref()?;
    Some(format!("\n  {}", crate::store::reinstall_help(name, None)))
}

fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    // A core module's preamble is `\0asm` + version 1 + layer 0; a component's layer is 1.
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("phasegate-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .ok();
}

/// Loads every plugin of a pipeline, collecting all errors.
pub fn load_all(
    host: &PluginHost,
    plugins: &[&PluginRef],
) -> Result<LoadedPlugins, Vec<LoadError>> {
    let mut loaded = std::collections::HashMap::new();
    let mut errors = Vec::new();
    for p in plugins {
        match host.load(p) {
            Ok(l) => {
                loaded.insert((*p).clone(), Arc::new(l));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// Checks that every plugin is used in the role its world allows (a task as a task, a gate as a
/// gate). Returns one message per misuse.
pub fn check_roles(pipeline: &crate::pipeline::Pipeline, loaded: &LoadedPlugins) -> Vec<String> {
    let mut problems = Vec::new();
    for phase in &pipeline.phases {
        for task in &phase.tasks {
            if let Some(p) = loaded.get(&task.plugin).filter(|p| p.world != World::Task) {
                problems.push(format!(
                    "{}: task `{}` in phase `{}` uses plugin `{}`, which implements {}; a task needs {}",
                    pipeline.path.display(), task.id, phase.id, p.plugin.spec, p.world, World::Task
                ));
            }
        }
        if let Some(gate) = &phase.gate
            && let Some(p) = loaded.get(&gate.plugin).filter(|p| p.world != World::Gate)
        {
            problems.push(format!(
                "{}: the gate of phase `{}` uses plugin `{}`, which implements {}; a gate needs {}",
                pipeline.path.display(),
                phase.id,
                p.plugin.spec,
                p.world,
                World::Gate
            ));
        }
    }
    problems
}
