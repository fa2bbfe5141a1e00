//! The executor seam: one attempt of one task, or one gate, as the runner hands it to whatever
//! runs it, and what comes back. The engine runs jobs in this process; a remote executor sends
//! the same types over a wire (they serialise unchanged, borrowed on the way out and owned on
//! the way in).

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::events::Emitter;
use crate::pipeline::{Grants, Id, Limits, PluginRef};
use crate::progress::{Failure, VerdictRecord};

/// One attempt of one task: everything needed to run it anywhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskJob<'a> {
    /// The run it belongs to.
    #[serde(borrow)]
    pub run_id: Cow<'a, str>,
    /// Its phase.
    pub phase: Id,
    /// Its id within the phase.
    pub task: Id,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The input, templates already rendered.
    #[serde(borrow)]
    pub input: Cow<'a, str>,
    /// The context as JSON text: the whole context when the task is granted it, else only the
    /// run id and the pipeline's name. Shared, because it is the same for many jobs (an
    /// executor may keep the last one it copied and compare by pointer).
    pub context: Arc<str>,
    /// The task's `config` table as JSON text.
    #[serde(borrow)]
    pub config: Cow<'a, str>,
    /// The component to run (an installed one carries its digest).
    pub plugin: Cow<'a, PluginRef>,
    /// The instance's limits.
    pub limits: Limits,
    /// What the instance is granted.
    pub grants: Cow<'a, Grants>,
    /// How many tasks in a row the instance that runs this one may serve (the task's `reuse`;
    /// 1: a fresh instance).
    #[serde(default = "one")]
    pub reuse: u32,
}

fn one() -> u32 {
    1
}

/// What one attempt of a task came to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// Output JSON text, or why there is none.
    pub result: Result<String, Failure>,
    /// Log lines (`level: message`), including captured stdout/stderr.
    pub log: Vec<String>,
    /// The worker that ran it, when a remote executor did (`None`: this process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// What it used (zero where it never ran).
    #[serde(default)]
    pub usage: crate::outcome::Usage,
}

impl Attempt {
    /// An attempt that could not run on the host's side (a plugin not loaded, a job not
    /// delivered, a worker's refusal): no output, no log.
    pub fn host_failure(message: impl Into<String>) -> Attempt {
        Attempt::failed(crate::outcome::FailureKind::Host, message)
    }

    /// An attempt that failed with `kind` before or after it ran: no output, no log.
    pub fn failed(kind: crate::outcome::FailureKind, message: impl Into<String>) -> Attempt {
        Attempt {
            result: Err(Failure {
                kind,
                message: message.into(),
            }),
            log: Vec::new(),
            worker: None,
            usage: crate::outcome::Usage::default(),
        }
    }
}

/// A phase's gate, with the report it judges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateJob<'a> {
    /// The gate's component.
    pub plugin: Cow<'a, PluginRef>,
    /// What it judges.
    pub report: PhaseReport,
    /// The instance's limits.
    pub limits: Limits,
    /// What the instance is granted.
    pub grants: Cow<'a, Grants>,
}

/// A finished phase as its gate sees it (the contract's `phase-report`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    /// The run.
    pub run_id: String,
    /// The phase judged.
    pub phase: String,
    /// Every task of the phase, in file order.
    pub outcomes: Vec<TaskOutcome>,
    /// The earlier phases' context as JSON text (the whole context if the gate is granted it).
    pub context: String,
    /// The gate's `config` table as JSON text.
    pub config: String,
}

/// One task of a judged phase (the contract's `task-outcome`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskOutcome {
    /// Task id.
    pub task: String,
    /// Output JSON text, when it succeeded.
    pub output: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<Failure>,
    /// Attempts made.
    pub attempts: u32,
    /// Duration of the last attempt.
    pub duration_ms: u64,
    /// What the last attempt used (the contract's `usage.of-task`), when the task ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::outcome::Usage>,
}

/// Runs task attempts and gates: in this process (the engine's `LocalExecutor`) or elsewhere.
pub trait Executor: Send + Sync + 'static {
    /// What one worker of a phase runs its attempts through.
    type Lane: Lane;

    /// A lane for one worker: it runs that worker's attempts one after another. `emitter`
    /// receives the attempts' log and progress events.
    fn lane(&self, emitter: Emitter) -> Self::Lane;

    /// Runs a phase's gate. A gate that cannot run yields a `fail` verdict saying why.
    fn run_gate(
        &self,
        job: GateJob<'_>,
        emitter: Emitter,
    ) -> impl Future<Output = VerdictRecord> + Send;
}

/// One worker's way to an executor: runs one attempt at a time, reusing what it can.
pub trait Lane: Send + 'static {
    /// Runs one attempt of a task.
    fn run(&mut self, job: &TaskJob<'_>) -> impl Future<Output = Attempt> + Send;
}
