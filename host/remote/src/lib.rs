//! phasegate on many machines, over NATS JetStream.
//!
//! The controller (`phasegate run --nats URL`) hands each task attempt to a [`NatsExecutor`]:
//! the job goes to the work-queue stream [`wire::JOBS_STREAM`], any [`worker`] pulls it, runs it
//! in the same sandbox as a local run, publishes the attempt to [`wire::RESULTS_STREAM`] and only
//! then acknowledges the job. Components travel by digest through the object store bucket
//! [`wire::BUCKET`]; a worker checks the bytes it fetched against the digest before compiling
//! them. Gates run at the controller, and the progress file stays there.

pub mod ceilings;
pub mod connect;
pub mod controller;
pub mod policy;
mod recent;
pub mod shelf;
pub mod wire;
pub mod worker;

pub use controller::NatsExecutor;
pub use policy::WorkerPolicy;
pub use worker::{WorkerEvent, WorkerOptions};
