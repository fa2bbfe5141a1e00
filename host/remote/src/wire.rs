//! What crosses NATS: the stream, subject and bucket names, and the two messages.

use phasegate_model::job::{Attempt, TaskJob};
use phasegate_model::pipeline::EngineLimits;
use serde::{Deserialize, Serialize};

/// The work queue of task attempts (work-queue retention: a job is gone once acknowledged).
pub const JOBS_STREAM: &str = "PHASEGATE_JOBS";
/// Attempts' results, kept so that a controller started again finds what finished meanwhile.
pub const RESULTS_STREAM: &str = "PHASEGATE_RESULTS";
/// The durable pull consumer every worker shares.
pub const WORKERS: &str = "phasegate-workers";
/// Components, each named by the digest of its bytes.
pub const BUCKET: &str = "phasegate-components";
/// Contexts too large to travel inside a job ([`CONTEXT_INLINE`]), each named by the digest of
/// its JSON text; kept as long as results are.
pub const CONTEXTS: &str = "phasegate-contexts";
/// The largest context a job carries itself. A larger one (a phase granted the context of
/// earlier phases with large outputs) is put once into [`CONTEXTS`] and named by digest: it
/// would otherwise be copied into every job of the phase, and could exceed the server's
/// `max_payload`.
pub const CONTEXT_INLINE: usize = 64 << 10;

/// The subject a run's jobs are published on.
pub fn jobs_subject(run_id: &str) -> String {
    format!("phasegate.jobs.{run_id}")
}

/// The subject a run's results are published on.
pub fn results_subject(run_id: &str) -> String {
    format!("phasegate.results.{run_id}")
}

/// One attempt's identity: `run/phase/task/attempt`. It is the job's `Nats-Msg-Id` (a job
/// published again, after a controller restart, is dropped by the stream as a duplicate) and it
/// pairs a result with its job.
pub fn key(run_id: &str, phase: &str, task: &str, attempt: u32) -> String {
    format!("{run_id}/{phase}/{task}/{attempt}")
}

/// A task attempt for a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobMessage<'a> {
    /// See [`key`].
    pub key: String,
    /// The attempt.
    #[serde(borrow)]
    pub job: TaskJob<'a>,
    /// `sha256:` of the component: its object's name in [`BUCKET`].
    pub digest: String,
    /// The engine settings of the run (stack, fuel metering, bounds checks).
    pub engine: EngineLimits,
    /// When the context is in [`CONTEXTS`] rather than in `job` (whose context is then
    /// empty): the `sha256:` of its text, the object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// What a worker reports for a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// The job's [`key`].
    pub key: String,
    /// The worker that ran it.
    pub worker: String,
    /// What came of it.
    pub attempt: Attempt,
}
