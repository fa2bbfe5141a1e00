//! phasegate's data: the pipeline (as written and as validated), the progress state, the
//! context, events, the executor seam's jobs and outcomes, units and digests.
//!
//! The bottom layer: serde types and pure checks only. No wasmtime, no tokio, no filesystem
//! (a test in the `phasegate` crate holds this crate to it); what validation needs from the
//! outside world is asked through [`pipeline::Resolve`].

pub mod context;
pub mod digest;
pub mod error;
pub mod events;
pub mod grants;
pub mod job;
pub mod outcome;
pub mod pipeline;
pub mod progress;
pub mod suggest;
pub mod text;
pub mod units;
