//! The progress state: what a run has done so far (run, phases, tasks, verdicts), as the
//! progress file records it. Plain data: how it is kept on disk is the runner's `persist`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use crate::outcome::{Failure, FailureKind, VerdictKind, VerdictRecord};
use crate::pipeline::{Id, Pipeline, PluginDigests};

/// Format version of the progress file.
pub const STATE_VERSION: u32 = 1;

/// Status of a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Started and not finished (or interrupted).
    Running,
    /// Every phase passed (or warned).
    Completed,
    /// A gate failed.
    Failed,
}

/// Status of a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseStatus {
    /// Not started.
    Pending,
    /// Tasks running or interrupted.
    Running,
    /// Gate passed or warned.
    Complete,
    /// Gate failed.
    Failed,
}

/// Status of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    /// Not finished.
    Pending,
    /// Returned valid output.
    Succeeded,
    /// Failed after its retries.
    Failed,
}

impl TaskStatus {
    /// The status as written in the progress file and the context.
    pub fn name(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
        }
    }
}

/// One task's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TaskState {
    /// Task id.
    pub id: Id,
    /// Status.
    pub status: TaskStatus,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// Duration of the last attempt.
    #[serde(default)]
    pub duration_ms: u64,
    /// When the first attempt started and the last one ended (Unix time, µs): the run
    /// report's timeline. Absent for a task that has not run (and in older progress files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_us: Option<u64>,
    /// Output JSON text when succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Failure when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// Log lines of the last attempt (`level: message`; bounded by the log limits).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    /// The worker that ran the last attempt, when it ran on one (`phasegate worker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// What the last attempt used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::outcome::Usage>,
    /// The task's key (`sha256:`) when it ran: a digest of everything its outcome can depend
    /// on. `resume` keeps the record while the key stays the same; the result cache files the
    /// outcome under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Whether the outcome came from the result cache (filed under `key`) instead of a run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

impl TaskState {
    /// A task that has not run yet.
    pub fn pending(id: impl Into<Id>) -> Self {
        TaskState {
            id: id.into(),
            status: TaskStatus::Pending,
            attempts: 0,
            duration_ms: 0,
            started_us: None,
            ended_us: None,
            usage: None,
            output: None,
            error: None,
            log: Vec::new(),
            worker: None,
            key: None,
            cached: false,
        }
    }
}

/// One phase's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PhaseState {
    /// Phase id.
    pub id: Id,
    /// Status.
    pub status: PhaseStatus,
    /// The gate's verdict once given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<VerdictRecord>,
    /// The key (`sha256:`) of the gate that gave the verdict: its plugin, config, limits and
    /// grants, and the keys and statuses of the outcomes it judged. `resume` asks the gate
    /// again when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_key: Option<String>,
    /// Each gate's verdict, in the pipeline's order, when the phase's verdict is combined from
    /// several by their policies (`verdict` is then the combined one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateVerdict>,
    /// Tasks in pipeline order. Shared (copied on write): a finished phase's tasks are also the
    /// run's context, and thousands of them are not copied for it.
    #[serde(default, rename = "task")]
    pub tasks: Arc<Vec<TaskState>>,
}

/// One gate's verdict in a phase judged by policies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GateVerdict {
    /// What its verdict does to the phase.
    pub policy: crate::pipeline::GatePolicy,
    /// Its key when it judged (plugin, config, limits, grants, what it judged): `resume` keeps
    /// a passing verdict while the key holds and asks the gate again otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What it said.
    pub verdict: VerdictRecord,
}

/// The whole progress file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct State {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Identifier of the run.
    pub run_id: String,
    /// The pipeline file (absolute once written by the runner's `ProgressStore::create`).
    pub pipeline: PathBuf,
    /// `sha256:` of the pipeline file when the run started.
    pub pipeline_digest: String,
    /// Run status.
    pub status: RunStatus,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// When this file was last written (RFC 3339).
    pub updated_at: String,
    /// Why the run failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Plugin spec (as written in the pipeline) → `sha256:` of the component.
    #[serde(default)]
    pub plugins: PluginDigests,
    /// The values given with `run --var` (a file's contents for `KEY=@FILE`): `resume` uses
    /// the same.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
    /// Phases in pipeline order.
    #[serde(default, rename = "phase")]
    pub phases: Vec<PhaseState>,
}

impl State {
    /// A fresh state for a pipeline: every phase and task pending.
    pub fn new(run_id: String, pipeline: &Pipeline, plugins: PluginDigests) -> Self {
        let now = crate::units::rfc3339(std::time::SystemTime::now());
        State {
            version: STATE_VERSION,
            run_id,
            pipeline: pipeline.path.clone(),
            pipeline_digest: pipeline.digest.clone(),
            status: RunStatus::Running,
            started_at: now.clone(),
            updated_at: now,
            reason: None,
            plugins,
            vars: BTreeMap::new(),
            phases: pipeline
                .phases
                .iter()
                .map(|p| PhaseState {
                    id: p.id.clone(),
                    status: PhaseStatus::Pending,
                    verdict: None,
                    gate_key: None,
                    gates: Vec::new(),
                    tasks: Arc::new(
                        p.tasks
                            .iter()
                            .map(|t| TaskState::pending(t.id.clone()))
                            .collect(),
                    ),
                })
                .collect(),
        }
    }

    /// Marks phase `pi` as running, and the run with it. Resuming after a failed gate gives the
    /// phase's failed tasks another chance: they become pending and the verdict is dropped.
    pub fn start_phase(&mut self, pi: usize) {
        let ps = &mut self.phases[pi];
        if ps.status == PhaseStatus::Failed {
            for t in Arc::make_mut(&mut ps.tasks)
                .iter_mut()
                .filter(|t| t.status == TaskStatus::Failed)
            {
                t.status = TaskStatus::Pending;
            }
            ps.verdict = None;
            ps.gate_key = None;
        }
        ps.status = PhaseStatus::Running;
        self.status = RunStatus::Running;
        self.reason = None;
    }
}
