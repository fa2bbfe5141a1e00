//! Loading plugins: reading, compiling (through the compile cache), linking and type-checking a
//! component against the task or gate world, and checking each is used in its role.

use std::sync::Arc;

use phasegate_model::pipeline::{EngineLimits, Pipeline, PluginDigests, PluginRef};
use wasmtime::Engine;
use wasmtime::component::{Component, HasSelf, Linker};

use crate::compile_cache::{CompileCache, Source};
use crate::config::{MemoryReset, config, spawn_epoch_ticker};
use crate::error::chain;
use crate::host_state::HostState;
use crate::plugin::gate_world::GatePre;
use crate::plugin::task_world::TaskPre;
use crate::plugin::{host_iface, usage_iface, wit};

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

pub(crate) enum Pre {
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
    pub(crate) pre: Pre,
}

/// A pipeline's loaded plugins, by reference.
pub type LoadedPlugins = std::collections::HashMap<PluginRef, Arc<LoadedPlugin>>;

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
    pub(crate) engine: Engine,
    linker: Linker<HostState>,
    pub(crate) limits: EngineLimits,
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
        usage_iface::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        crate::sandbox::writes::add_to_linker(&mut linker)?;
        crate::sandbox::descriptors::add_to_linker(&mut linker)?;
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
        let digest = phasegate_model::digest::sha256_bytes(bytes);
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
        prepare_memory_image(&component)
            .map_err(|e| err(format!("cannot prepare its memory image: {}", chain(&e))))?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        // Imports first: a component that cannot link is refused whatever it exports.
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            err(format!(
                "imports an interface phasegate does not provide (plugins may import `phasegate:plugin/host`, gates also `phasegate:plugin/usage`, WASI 0.2 and `wasi:http`): {}",
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
}

/// For an installed plugin whose stored file is missing or modified: how to repair the store.
fn reinstall_help(plugin: &PluginRef) -> Option<String> {
    let name = plugin.installed.as_ref()?;
    Some(format!(
        "\n  {}",
        phasegate_store::reinstall_help(name, None)
    ))
}

fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    // A core module's preamble is `\0asm` + version 1 + layer 0; a component's layer is 1.
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}

/// Each loaded plugin's digest by its spec (for the progress file).
pub fn digests(plugins: &LoadedPlugins) -> PluginDigests {
    plugins
        .iter()
        .map(|(r, p)| (r.spec.clone(), p.digest.clone()))
        .collect()
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
pub fn check_roles(pipeline: &Pipeline, loaded: &LoadedPlugins) -> Vec<String> {
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
        for p in phase
            .gates
            .iter()
            .filter_map(|g| loaded.get(&g.plugin).filter(|p| p.world != World::Gate))
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

/// Builds the memory image new instances of `component` start from now, once, rather than at
/// its first instantiation (where a failure would fail a task), retrying what the kernel reports
/// as transient: sealing the image's memfd fails with EBUSY while pages of it are briefly pinned
/// (seen once in CI on a loaded 2-core machine, as "cannot add seals to the memfd").
fn prepare_memory_image(component: &Component) -> wasmtime::Result<()> {
    const ATTEMPTS: u32 = 6;
    let mut delay = std::time::Duration::from_millis(10);
    let mut attempt = 1;
    loop {
        match component.initialize_copy_on_write_image() {
            Err(e) if attempt < ATTEMPTS && chain(&e).contains("(os error 16)") => {
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
            }
            done => return done,
        }
    }
}
