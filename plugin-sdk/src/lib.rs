//! Write phasegate plugins in Rust.
//!
//! A plugin is a Wasm component implementing one of the two worlds of `wit/plugin.wit`: a
//! **task** does a unit of work and returns JSON; a **gate** judges a finished phase. This crate
//! generates the bindings (plugin crates need no `wit-bindgen` dependency of their own), parses
//! the JSON the host sends into your serde types and serialises what you return.
//!
//! # A task
//!
//! ```ignore
//! use phasegate_plugin_sdk::{Request, Result, Task};
//!
//! struct Shout;
//!
//! impl Task for Shout {
//!     type Input = String;                 // the rendered `input` template, as text
//!     type Config = serde_json::Value;     // the task's `config` table
//!     type Output = String;                // serialised to JSON for the host
//!
//!     fn run(req: Request<String, serde_json::Value>) -> Result<String> {
//!         Ok(req.input.to_uppercase())
//!     }
//! }
//!
//! phasegate_plugin_sdk::export_task!(Shout);
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2` (crate type `cdylib`); the result is
//! already a component. For `wasm32-unknown-unknown` the same source builds a core module with
//! no WASI imports at all; `phasegate build` (or `wasm-tools component new`) turns it into a
//! component. `phasegate new task NAME --lang rust` writes a project that does all this.
//!
//! # A gate
//!
//! ```ignore
//! use phasegate_plugin_sdk::{Gate, Report, Verdict};
//!
//! struct NoFailures;
//!
//! impl Gate for NoFailures {
//!     type Config = serde_json::Value;
//!     fn check(report: Report<serde_json::Value>) -> Verdict {
//!         match report.failed().count() {
//!             0 => Verdict::pass("every task succeeded"),
//!             n => Verdict::fail(format!("{n} task(s) failed")),
//!         }
//!     }
//! }
//!
//! phasegate_plugin_sdk::export_gate!(NoFailures);
//! ```

extern crate self as phasegate_plugin_sdk;

use serde::de::DeserializeOwned;
use serde_json::Value;

mod context;
mod gate;
mod macros;
mod task;

pub use context::Context;
#[doc(hidden)]
pub use gate::{__check_gate, __gate_metadata};
pub use gate::{Gate, Outcome, Report, Usage, Verdict};
#[doc(hidden)]
pub use task::{__run_task, __task_metadata};
pub use task::{Error, Request, Result, Task};

#[doc(hidden)]
pub use serde_json;
#[doc(hidden)]
pub use wit_bindgen;

/// Raw bindings generated from `wit/plugin.wit`. Most plugins never need them.
pub mod bindings {
    /// Bindings of the `task` world.
    // Generated code: its host-call wrappers take one argument per flattened field.
    #[allow(missing_docs, clippy::too_many_arguments)]
    pub mod task {
        wit_bindgen::generate!({
            path: "../wit",
            world: "task",
            pub_export_macro: true,
            export_macro_name: "__export_task_world",
            default_bindings_module: "::phasegate_plugin_sdk::bindings::task",
            runtime_path: "::phasegate_plugin_sdk::wit_bindgen::rt",
        });
    }

    /// Bindings of the `gate` world. Shares the `types` and `host` interfaces with `task`.
    #[allow(missing_docs, clippy::too_many_arguments)]
    pub mod gate {
        wit_bindgen::generate!({
            path: "../wit",
            world: "gate",
            pub_export_macro: true,
            export_macro_name: "__export_gate_world",
            default_bindings_module: "::phasegate_plugin_sdk::bindings::gate",
            runtime_path: "::phasegate_plugin_sdk::wit_bindgen::rt",
            with: {
                "phasegate:plugin/types@0.1.0": crate::bindings::task::phasegate::plugin::types,
                "phasegate:plugin/host@0.1.0": crate::bindings::task::phasegate::plugin::host,
            },
        });
    }
}

use bindings::task::phasegate::plugin::{host, types};

/// Structured logging to the host; lines are attached to the task's events.
pub mod log {
    use super::host::{self, Level};

    /// Logs at trace level.
    pub fn trace(message: &str) {
        host::log(Level::Trace, message);
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        host::log(Level::Debug, message);
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        host::log(Level::Info, message);
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        host::log(Level::Warn, message);
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        host::log(Level::Error, message);
    }
}

/// Reports progress of long work: `done` of `total` units.
pub fn progress(done: u32, total: u32, message: &str) {
    host::progress(done, total, message);
}

pub(crate) fn parse_input<I: DeserializeOwned>(raw: &str) -> std::result::Result<I, String> {
    if let Ok(value) = serde_json::from_str::<Value>(raw)
        && let Ok(parsed) = I::deserialize(&value)
    {
        return Ok(parsed);
    }
    I::deserialize(Value::String(raw.to_owned())).map_err(|e| e.to_string())
}

pub(crate) fn parse_json<T: DeserializeOwned>(raw: &str) -> std::result::Result<T, String> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| e.to_string())
}

pub(crate) fn metadata(
    kind: types::PluginKind,
    name: &str,
    version: &str,
    description: &str,
    config_schema: Option<String>,
) -> types::PluginMetadata {
    types::PluginMetadata {
        name: name.to_owned(),
        version: version.to_owned(),
        description: description.to_owned(),
        kind,
        config_schema,
    }
}

/// The plugin's first heap: a fixed region inside the module's initial memory, used before
/// the standard allocator is asked for more.
///
/// Why: a Rust plugin's allocator (`dlmalloc`) gets every byte of heap with `memory.grow`, even
/// the first one. The host runs each task in a fresh instance from a pool whose memory slots are
/// reused, so every task of a plugin that allocates at all would grow its memory once, and the
/// pool shrink the slot again for the next instance. Growing and shrinking are page-protection
/// changes (`mprotect`): two system calls per task, each flushing the TLBs of every core that
/// runs the process, a large share of a small task's cost and a limit on scaling across cores
/// (BENCHMARKS.md, section [1]). With this region in the module's
/// initial memory (it is zero-initialised, so it adds nothing to the module's data), a task
/// that allocates less than [`arena::SIZE`] never grows its memory at all.
///
/// How: a bump allocator. Freeing or shrinking the most recent allocation gives its bytes back
/// (so a growing `Vec` or `String` grows in place); any other free leaves its bytes unused
/// until the instance ends, which is soon: every task runs in a fresh instance. When the region
/// is full, allocations go to the standard allocator as before.
///
/// Installed for `wasm32-unknown-unknown` plugins (no WASI, no libc), where Rust's allocator is
/// the only one. Not for `wasm32-wasip2`: there the C library's `malloc` and Rust's allocator
/// must be one and the same, since the C library frees with `free` what the component model
/// allocated through Rust's `cabi_realloc` (a WASI call that returns a list, for example).
///
/// On by default (cargo feature `arena`). A plugin that brings its own `#[global_allocator]`
/// turns the feature off: `phasegate-plugin-sdk = { ..., default-features = false }`.
#[cfg(feature = "arena")]
#[allow(unsafe_code)]
pub mod arena;
