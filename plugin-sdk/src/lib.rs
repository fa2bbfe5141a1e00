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

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

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

/// The result type of a task.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a task did not produce output.
///
/// Any `std::error::Error` converts into [`Error::Failed`], so `?` works on I/O and parse
/// errors. The host retries `Failed` (up to the task's `retries`) and never retries the others.
#[derive(Debug)]
pub enum Error {
    /// The work failed; worth retrying.
    Failed(String),
    /// The input is not acceptable; retrying cannot help.
    InvalidInput(String),
    /// The config is not acceptable; retrying cannot help.
    InvalidConfig(String),
}

impl Error {
    /// A retryable failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }
    /// An input the task cannot accept.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }
    /// A config the task cannot accept.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error::InvalidConfig(message.into())
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::Failed(error.to_string())
    }
}

impl From<Error> for types::TaskError {
    fn from(error: Error) -> Self {
        match error {
            Error::Failed(m) => types::TaskError::Failed(m),
            Error::InvalidInput(m) => types::TaskError::InvalidInput(m),
            Error::InvalidConfig(m) => types::TaskError::InvalidConfig(m),
        }
    }
}

/// One attempt of a task, with its input and config parsed into the plugin's types.
#[derive(Debug, Clone)]
pub struct Request<I, C> {
    /// Identifier of the run (stable across resume).
    pub run_id: String,
    /// Phase id.
    pub phase: String,
    /// Task id.
    pub task: String,
    /// 1 for the first attempt, 2 for the first retry...
    pub attempt: u32,
    /// The rendered input, parsed (see [`Task::Input`]).
    pub input: I,
    /// The rendered input exactly as the host sent it.
    pub raw_input: String,
    /// The context: `{"run": .., "pipeline": .., "vars": .., "phases": {id: {"tasks": {..}}}}`
    /// when the pipeline grants this task `grants = { context = true }`; otherwise only
    /// `{"run": {"id"}, "pipeline": {"name"}}` (pass what the task needs through its `input`
    /// template instead). Parsed when first read (see [`Context`]).
    pub context: Context,
    /// The task's config table.
    pub config: C,
}

/// The context a task or gate is sent, parsed from its JSON text the first time it is read.
///
/// It reads as a [`serde_json::Value`] (`req.context["run"]["id"]`,
/// `req.context.get("phases")`, `&req.context` where a `&Value` is expected) and serialises as
/// one. Most tasks never look at the context, and parsing it for every call was a third of a
/// trivial task's time in the guest (0.33 µs of the benchmark's noop task, for the small context
/// a task without the `context` grant is sent), so it is parsed only on demand. Text that is not
/// JSON reads as `null`.
#[derive(Clone, Default)]
pub struct Context {
    text: String,
    value: std::cell::OnceCell<Value>,
}

impl Context {
    /// A context from its JSON text (parsed when first read).
    pub fn new(text: impl Into<String>) -> Self {
        Context {
            text: text.into(),
            value: std::cell::OnceCell::new(),
        }
    }

    /// The JSON text exactly as the host sent it.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The parsed context.
    pub fn value(&self) -> &Value {
        self.value
            .get_or_init(|| serde_json::from_str(&self.text).unwrap_or(Value::Null))
    }

    /// The parsed context, owned.
    pub fn into_value(self) -> Value {
        self.value();
        self.value.into_inner().unwrap_or_default()
    }
}

impl std::ops::Deref for Context {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value()
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value().fmt(f)
    }
}

impl PartialEq<Value> for Context {
    fn eq(&self, other: &Value) -> bool {
        self.value() == other
    }
}

impl From<Context> for Value {
    fn from(context: Context) -> Value {
        context.into_value()
    }
}

impl Serialize for Context {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        self.value().serialize(serializer)
    }
}

/// A task plugin. Implement it and call [`export_task!`].
pub trait Task {
    /// The rendered input. Parsed as JSON when the text is JSON of this type; otherwise the raw
    /// text is offered as a JSON string, so `String` receives any input verbatim.
    type Input: DeserializeOwned;
    /// The `config` table (an empty table when the pipeline gives none).
    type Config: DeserializeOwned;
    /// What the task returns; serialised to JSON.
    type Output: Serialize;

    /// JSON Schema of `Config`, shown by `phasegate validate`. None by default.
    fn config_schema() -> Option<String> {
        None
    }

    /// Runs one attempt.
    fn run(request: Request<Self::Input, Self::Config>) -> Result<Self::Output>;
}

/// Outcome of one task, as a gate sees it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Task id.
    pub task: String,
    /// Parsed output when the task succeeded.
    pub output: Option<Value>,
    /// Failure kind (`failed`, `timeout`, `trap`...) and message when it did not.
    pub error: Option<(String, String)>,
    /// Attempts made.
    pub attempts: u32,
    /// Duration of the last attempt in milliseconds.
    pub duration_ms: u64,
}

impl Outcome {
    /// Whether the task produced output.
    pub fn succeeded(&self) -> bool {
        self.output.is_some()
    }
}

/// The phase a gate judges.
#[derive(Debug, Clone)]
pub struct Report<C> {
    /// Identifier of the run.
    pub run_id: String,
    /// Phase id.
    pub phase: String,
    /// Every task's outcome, in pipeline order.
    pub outcomes: Vec<Outcome>,
    /// Context of the earlier phases, with the gate's `grants = { context = true }`; otherwise
    /// only the run id and the pipeline's name. Parsed when first read (see [`Context`]).
    pub context: Context,
    /// The gate's config table.
    pub config: C,
}

impl<C> Report<C> {
    /// The tasks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| !o.succeeded())
    }
}

/// A gate's decision: pass, warn or fail, with a reason and optional evidence.
#[derive(Debug, Clone)]
pub struct Verdict {
    kind: types::VerdictKind,
    reason: String,
    evidence: Option<Value>,
}

impl Verdict {
    /// The phase is good.
    pub fn pass(reason: impl Into<String>) -> Self {
        Self::new(types::VerdictKind::Pass, reason)
    }
    /// Go on, but record a warning.
    pub fn warn(reason: impl Into<String>) -> Self {
        Self::new(types::VerdictKind::Warn, reason)
    }
    /// Stop the run.
    pub fn fail(reason: impl Into<String>) -> Self {
        Self::new(types::VerdictKind::Fail, reason)
    }
    fn new(kind: types::VerdictKind, reason: impl Into<String>) -> Self {
        Verdict {
            kind,
            reason: reason.into(),
            evidence: None,
        }
    }
    /// Attaches supporting data (recorded in the progress file and the context).
    pub fn with_evidence(mut self, evidence: impl Serialize) -> Self {
        self.evidence = serde_json::to_value(evidence).ok();
        self
    }
}

/// A gate plugin. Implement it and call [`export_gate!`].
pub trait Gate {
    /// The gate's `config` table. When it does not parse, the gate fails with the reason.
    type Config: DeserializeOwned;

    /// JSON Schema of `Config`, shown by `phasegate validate`. None by default.
    fn config_schema() -> Option<String> {
        None
    }

    /// Judges the phase.
    fn check(report: Report<Self::Config>) -> Verdict;
}

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

fn parse_input<I: DeserializeOwned>(raw: &str) -> std::result::Result<I, String> {
    if let Ok(value) = serde_json::from_str::<Value>(raw)
        && let Ok(parsed) = I::deserialize(&value)
    {
        return Ok(parsed);
    }
    I::deserialize(Value::String(raw.to_owned())).map_err(|e| e.to_string())
}

fn parse_json<T: DeserializeOwned>(raw: &str) -> std::result::Result<T, String> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    serde_json::from_str(raw).map_err(|e| e.to_string())
}

fn metadata(
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

#[doc(hidden)]
pub fn __task_metadata<T: Task>(
    name: &str,
    version: &str,
    description: &str,
) -> types::PluginMetadata {
    metadata(
        types::PluginKind::Task,
        name,
        version,
        description,
        T::config_schema(),
    )
}

#[doc(hidden)]
pub fn __gate_metadata<G: Gate>(
    name: &str,
    version: &str,
    description: &str,
) -> types::PluginMetadata {
    metadata(
        types::PluginKind::Gate,
        name,
        version,
        description,
        G::config_schema(),
    )
}

#[doc(hidden)]
pub fn __run_task<T: Task>(
    req: types::TaskRequest,
) -> std::result::Result<String, types::TaskError> {
    let input = parse_input::<T::Input>(&req.input)
        .map_err(|e| types::TaskError::InvalidInput(format!("cannot read input: {e}")))?;
    let config = parse_json::<T::Config>(&req.config)
        .map_err(|e| types::TaskError::InvalidConfig(format!("cannot read config: {e}")))?;
    let context = Context::new(req.context);
    let request = Request {
        run_id: req.run_id,
        phase: req.phase,
        task: req.task,
        attempt: req.attempt,
        input,
        raw_input: req.input,
        context,
        config,
    };
    let output = T::run(request).map_err(types::TaskError::from)?;
    serde_json::to_string(&output)
        .map_err(|e| types::TaskError::Failed(format!("cannot serialise output: {e}")))
}

#[doc(hidden)]
pub fn __check_gate<G: Gate>(report: types::PhaseReport) -> types::Verdict {
    let config = match parse_json::<G::Config>(&report.config) {
        Ok(config) => config,
        Err(e) => {
            return types::Verdict {
                kind: types::VerdictKind::Fail,
                reason: format!("gate config is invalid: {e}"),
                evidence: None,
            };
        }
    };
    let outcomes = report
        .outcomes
        .into_iter()
        .map(|o| Outcome {
            task: o.task,
            output: o.output.and_then(|s| serde_json::from_str(&s).ok()),
            error: o
                .error
                .map(|e| (failure_kind_name(e.kind).to_owned(), e.message)),
            attempts: o.attempts,
            duration_ms: o.duration_ms,
        })
        .collect();
    let verdict = G::check(Report {
        run_id: report.run_id,
        phase: report.phase,
        outcomes,
        context: Context::new(report.context),
        config,
    });
    types::Verdict {
        kind: verdict.kind,
        reason: verdict.reason,
        evidence: verdict.evidence.map(|v| v.to_string()),
    }
}

fn failure_kind_name(kind: types::FailureKind) -> &'static str {
    use types::FailureKind as K;
    match kind {
        K::Failed => "failed",
        K::InvalidInput => "invalid-input",
        K::InvalidConfig => "invalid-config",
        K::InvalidOutput => "invalid-output",
        K::Trap => "trap",
        K::Timeout => "timeout",
        K::Limit => "limit",
        K::Host => "host",
    }
}

/// The plugin's first heap: a fixed region inside the module's initial memory, used before
/// the standard allocator is asked for more.
///
/// Why: a Rust plugin's allocator (`dlmalloc`) gets every byte of heap with `memory.grow`, even
/// the first one. The host runs each task in a fresh instance from a pool whose memory slots are
/// reused, so every task of a plugin that allocates at all grew its memory once, and the pool
/// then shrank the slot again for the next instance. Growing and shrinking are page-protection
/// changes (`mprotect`): two system calls per task, each flushing the TLBs of every core that
/// runs the process. For a small task that was half of its cost, and it kept tasks from scaling
/// across cores (measured in BENCHMARKS.md, section [1]). With this region in the module's
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
pub mod arena {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::UnsafeCell;

    /// Bytes in the region: 256 KiB, enough for a small task's request, parsed input and
    /// output. It adds 256 KiB to the plugin's initial memory (counted against its `memory`
    /// limit; the default limit is far above it).
    pub const SIZE: usize = 256 << 10;

    /// A bump region of `N` bytes in front of the system allocator.
    pub struct Arena<const N: usize> {
        bytes: UnsafeCell<[u8; N]>,
        /// Offset of the first free byte.
        next: UnsafeCell<usize>,
    }

    // SAFETY: a Wasm component instance runs on one thread (the region is installed only for
    // targets without threads); natively (tests) each `Arena` is used by one thread.
    unsafe impl<const N: usize> Sync for Arena<N> {}

    impl<const N: usize> Arena<N> {
        /// An empty region.
        pub const fn new() -> Self {
            Arena {
                bytes: UnsafeCell::new([0; N]),
                next: UnsafeCell::new(0),
            }
        }

        fn base(&self) -> usize {
            self.bytes.get() as usize
        }

        /// Whether `ptr` was handed out by the region (rather than the system allocator).
        pub fn owns(&self, ptr: *mut u8) -> bool {
            let p = ptr as usize;
            p >= self.base() && p < self.base() + N
        }

        /// Bytes of the region in use (up to the end of the most recent allocation).
        pub fn used(&self) -> usize {
            // SAFETY: single-threaded, and no reference to `next` outlives a call.
            unsafe { *self.next.get() }
        }

        /// A block from the region, or `None` when it does not fit.
        fn bump(&self, layout: Layout) -> Option<*mut u8> {
            let next = self.used();
            // Align the address, not the offset: the region itself is only byte-aligned.
            let addr = (self.base() + next).checked_next_multiple_of(layout.align())?;
            let start = addr - self.base();
            let end = start.checked_add(layout.size())?;
            if end > N {
                return None;
            }
            // SAFETY: as in `used`.
            unsafe { *self.next.get() = end };
            Some(addr as *mut u8)
        }

        /// Whether `ptr` (of `size` bytes) is the most recent allocation.
        fn is_last(&self, ptr: *mut u8, size: usize) -> bool {
            ptr as usize + size == self.base() + self.used()
        }
    }

    impl<const N: usize> Default for Arena<N> {
        fn default() -> Self {
            Self::new()
        }
    }

    // SAFETY: blocks from the region are in bounds, aligned, and never handed out twice while
    // live (the bump only moves back over the most recent block when it is freed or shrunk);
    // everything else is the system allocator's.
    unsafe impl<const N: usize> GlobalAlloc for Arena<N> {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            match self.bump(layout) {
                Some(ptr) => ptr,
                // SAFETY: the caller's contract, passed on.
                None => unsafe { System.alloc(layout) },
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if !self.owns(ptr) {
                // SAFETY: the caller's contract, passed on.
                return unsafe { System.dealloc(ptr, layout) };
            }
            if self.is_last(ptr, layout.size()) {
                // SAFETY: as in `used`.
                unsafe { *self.next.get() = ptr as usize - self.base() };
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if !self.owns(ptr) {
                // SAFETY: the caller's contract, passed on.
                return unsafe { System.realloc(ptr, layout, new_size) };
            }
            let start = ptr as usize - self.base();
            if self.is_last(ptr, layout.size()) {
                // The most recent block grows or shrinks in place while it fits.
                if let Some(end) = start.checked_add(new_size).filter(|&end| end <= N) {
                    // SAFETY: as in `used`.
                    unsafe { *self.next.get() = end };
                    return ptr;
                }
            } else if new_size <= layout.size() {
                return ptr;
            }
            // SAFETY: `layout.align()` is a power of two and `new_size`, rounded up to it,
            // does not overflow (the caller's contract).
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: a fresh block of `new_size` bytes, then the old one's bytes copied over.
            unsafe {
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }

    #[cfg(all(
        target_family = "wasm",
        target_os = "unknown",
        not(target_feature = "atomics")
    ))]
    #[global_allocator]
    static HEAP: Arena<SIZE> = Arena::new();

    /// Bytes of the plugin's region in use, or `None` where it is not installed (targets with
    /// a C library, or native builds).
    pub fn region_used() -> Option<usize> {
        #[cfg(all(
            target_family = "wasm",
            target_os = "unknown",
            not(target_feature = "atomics")
        ))]
        return Some(HEAP.used());
        #[allow(unreachable_code)]
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn layout(size: usize, align: usize) -> Layout {
            Layout::from_size_align(size, align).expect("layout")
        }

        #[test]
        fn serves_aligned_blocks_from_the_region_then_from_the_system() {
            let arena: Box<Arena<256>> = Box::default();
            unsafe {
                let a = arena.alloc(layout(3, 1));
                let b = arena.alloc(layout(8, 8));
                assert!(arena.owns(a) && arena.owns(b));
                assert_eq!(b as usize % 8, 0);
                assert!(b as usize >= a as usize + 3);
                b.write_bytes(0xAB, 8);
                // Too big for what is left: the system allocator's.
                let c = arena.alloc(layout(300, 8));
                assert!(!c.is_null() && !arena.owns(c));
                c.write_bytes(1, 300);
                arena.dealloc(c, layout(300, 8));
                assert_eq!(*b.add(7), 0xAB);
            }
        }

        #[test]
        fn the_last_block_grows_shrinks_and_is_freed_in_place() {
            let arena: Box<Arena<256>> = Box::default();
            unsafe {
                let a = arena.alloc(layout(16, 1));
                let b = arena.alloc(layout(16, 1));
                b.write_bytes(7, 16);
                let used = arena.used();
                assert_eq!(arena.realloc(b, layout(16, 1), 64), b);
                assert_eq!(arena.used(), used + 48);
                assert_eq!(*b.add(15), 7);
                assert_eq!(arena.realloc(b, layout(64, 1), 8), b);
                arena.dealloc(b, layout(8, 1));
                // `b`'s bytes are free again: the next block starts there.
                assert_eq!(arena.alloc(layout(4, 1)), b);
                // `a` is not the last block: freeing it leaves the bump where it is.
                let used = arena.used();
                arena.dealloc(a, layout(16, 1));
                assert_eq!(arena.used(), used);
            }
        }

        #[test]
        fn a_block_that_cannot_grow_in_place_moves_with_its_bytes() {
            let arena: Box<Arena<256>> = Box::default();
            unsafe {
                let a = arena.alloc(layout(100, 1));
                for i in 0..100 {
                    *a.add(i) = i as u8;
                }
                let _b = arena.alloc(layout(100, 1));
                // Not the last block: a new one, in the region while it fits...
                let grown = arena.realloc(a, layout(100, 1), 120);
                assert!(!arena.owns(grown), "120 more bytes do not fit in 256");
                assert!((0..100).all(|i| *grown.add(i) == i as u8));
                // ...and a system block grows through the system allocator.
                let again = arena.realloc(grown, layout(120, 1), 4096);
                assert!((0..100).all(|i| *again.add(i) == i as u8));
                arena.dealloc(again, layout(4096, 1));
                // A block that shrinks stays where it is.
                let small = arena.alloc(layout(8, 1));
                let _c = arena.alloc(layout(8, 1));
                assert_eq!(arena.realloc(small, layout(8, 1), 4), small);
            }
        }

        #[test]
        fn the_last_block_that_outgrows_the_region_moves_to_the_system() {
            let arena: Box<Arena<64>> = Box::default();
            unsafe {
                let a = arena.alloc(layout(32, 1));
                a.write_bytes(9, 32);
                let moved = arena.realloc(a, layout(32, 1), 100);
                assert!(!arena.owns(moved));
                assert!((0..32).all(|i| *moved.add(i) == 9));
                // Its bytes in the region are free again.
                assert_eq!(arena.used(), 0);
                arena.dealloc(moved, layout(100, 1));
            }
        }
    }
}

/// Exports a [`Task`] implementation as the component's `task` world.
///
/// The plugin's name, version and description come from its `Cargo.toml`.
#[macro_export]
macro_rules! export_task {
    ($task:ty) => {
        const _: () = {
            struct __PhasegateTask;
            impl $crate::bindings::task::Guest for __PhasegateTask {
                fn metadata() -> $crate::bindings::task::PluginMetadata {
                    $crate::__task_metadata::<$task>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        env!("CARGO_PKG_DESCRIPTION"),
                    )
                }
                fn run(
                    request: $crate::bindings::task::TaskRequest,
                ) -> ::core::result::Result<::std::string::String, $crate::bindings::task::TaskError> {
                    $crate::__run_task::<$task>(request)
                }
            }
            $crate::bindings::task::__export_task_world!(__PhasegateTask with_types_in $crate::bindings::task);
        };
    };
}

/// Exports a [`Gate`] implementation as the component's `gate` world.
///
/// The plugin's name, version and description come from its `Cargo.toml`.
#[macro_export]
macro_rules! export_gate {
    ($gate:ty) => {
        const _: () = {
            struct __PhasegateGate;
            impl $crate::bindings::gate::Guest for __PhasegateGate {
                fn metadata() -> $crate::bindings::gate::PluginMetadata {
                    $crate::__gate_metadata::<$gate>(
                        env!("CARGO_PKG_NAME"),
                        env!("CARGO_PKG_VERSION"),
                        env!("CARGO_PKG_DESCRIPTION"),
                    )
                }
                fn check(report: $crate::bindings::gate::PhaseReport) -> $crate::bindings::gate::Verdict {
                    $crate::__check_gate::<$gate>(report)
                }
            }
            $crate::bindings::gate::__export_gate_world!(__PhasegateGate with_types_in $crate::bindings::gate);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_context_is_parsed_only_when_read_and_then_once() {
        let context = Context::new(r#"{"run": {"id": "r1"}, "pipeline": {"name": "p"}}"#);
        assert!(context.value.get().is_none(), "parsed before being read");
        assert_eq!(
            context.text(),
            r#"{"run": {"id": "r1"}, "pipeline": {"name": "p"}}"#
        );
        assert!(context.value.get().is_none(), "reading the text parsed it");
        assert_eq!(context["run"]["id"], "r1");
        assert!(context.value.get().is_some());
        assert_eq!(context.get("pipeline"), Some(&json!({"name": "p"})));
        let as_value: &Value = &context;
        assert_eq!(as_value["pipeline"]["name"], "p");
    }

    #[test]
    fn the_context_serialises_and_converts_as_its_value() {
        let text = r#"{"phases":{"a":{"tasks":{"t":{"status":"succeeded"}}}}}"#;
        let context = Context::new(text);
        assert_eq!(
            json!({ "context": context.clone() })["context"],
            json!(serde_json::from_str::<Value>(text).unwrap())
        );
        assert_eq!(serde_json::to_string(&context).unwrap(), text);
        assert!(context == serde_json::from_str::<Value>(text).unwrap());
        // Owned, whether or not it was read before.
        assert_eq!(
            Value::from(context.clone())["phases"]["a"]["tasks"]["t"]["status"],
            "succeeded"
        );
        let _ = context.value();
        assert_eq!(
            context.into_value()["phases"]["a"]["tasks"]["t"]["status"],
            "succeeded"
        );
    }

    #[test]
    fn a_context_that_is_not_json_reads_as_null() {
        let context = Context::new("not json");
        assert!(context.is_null());
        assert_eq!(context.text(), "not json");
        assert_eq!(Context::default().into_value(), Value::Null);
    }
}
