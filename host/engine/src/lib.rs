//! phasegate's wasmtime side: the engine's configuration ([`config`]), loading and
//! type-checking components ([`load`], through the [`compile_cache`]), the sandbox every
//! instance runs in ([`sandbox`], one file per capability), running one task attempt or gate
//! ([`call`]), and the [`LocalExecutor`] that offers all of it to the runner through the
//! executor seam. [`install`] is where the plugin store meets the engine.

pub mod call;
pub mod compile_cache;
pub mod config;
pub mod error;
pub mod guest_fault;
pub mod host_state;
pub mod install;
pub mod load;
pub mod local;
pub mod plugin;
pub mod sandbox;

pub use config::{EPOCH_TICK, MAX_POOLED_INSTANCES, MemoryReset, bounds_checks, config, pool};
pub use error::chain;
pub use host_state::HostState;
pub use load::{
    LoadError, LoadedPlugin, LoadedPlugins, Metadata, PluginHost, World, check_roles, digests,
    load_all,
};
pub use local::{LocalExecutor, LocalLane};
pub use phasegate_model::job::Attempt;
