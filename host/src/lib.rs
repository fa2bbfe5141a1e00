//! phasegate: a WebAssembly plugin-host orchestrator.
//!
//! A pipeline (TOML) is a list of phases run in order; each phase runs its tasks (Wasm
//! components of the `task` world, in parallel under a cap or in sequence) and then its
//! validation gate (a `gate` component), which decides whether the run goes on. Results
//! accumulate into a context that later phases read; progress is persisted so a killed run
//! resumes where it stopped.
//!
//! Layering: [`pipeline`], [`progress`], [`context`] and [`events`] are plain data (no wasmtime);
//! [`engine`], [`plugin`] and [`sandbox`] hold everything wasmtime; [`runner`] ties them
//! together and emits events; the binary's `cli` renders them.

pub mod author;
pub mod compile_cache;
pub mod context;
pub mod digest;
pub mod engine;
pub mod events;
pub mod install;
pub mod pipeline;
pub mod plugin;
pub mod prefetch;
pub mod progress;
pub mod runner;
pub mod sandbox;
pub mod store;
pub mod units;
