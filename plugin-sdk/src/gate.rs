//! Gates: the [`Gate`] trait, the report a gate judges, its verdict, and the glue the
//! `export_gate!` macro calls.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Context, metadata, parse_json, types};

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

    /// What the task's last attempt used (wall time, fuel, memory, log bytes, bytes written
    /// into read-write grants, files and sockets opened), asked of the host when called; none
    /// for a task that never ran.
    pub fn usage(&self) -> Option<Usage> {
        crate::bindings::gate::phasegate::plugin::usage::of_task(&self.task)
    }
}

/// What a task's last attempt used, as the host measured it (the contract's `task-usage`).
pub use crate::bindings::gate::phasegate::plugin::usage::TaskUsage as Usage;

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
    /// The evidence as JSON, or why it could not be serialised.
    evidence: Option<std::result::Result<Value, String>>,
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
    /// Attaches supporting data (recorded in the progress file and the context). Data that
    /// cannot be serialised as JSON turns the verdict into a `fail` that says why.
    pub fn with_evidence(mut self, evidence: impl Serialize) -> Self {
        self.evidence = Some(serde_json::to_value(evidence).map_err(|e| e.to_string()));
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
    match verdict.evidence {
        Some(Err(e)) => types::Verdict {
            kind: types::VerdictKind::Fail,
            reason: format!(
                "cannot serialise evidence: {e} (the verdict was {}: {})",
                verdict_kind_name(verdict.kind),
                verdict.reason
            ),
            evidence: None,
        },
        evidence => types::Verdict {
            kind: verdict.kind,
            reason: verdict.reason,
            evidence: evidence.and_then(|v| v.ok()).map(|v| v.to_string()),
        },
    }
}

fn verdict_kind_name(kind: types::VerdictKind) -> &'static str {
    match kind {
        types::VerdictKind::Pass => "pass",
        types::VerdictKind::Warn => "warn",
        types::VerdictKind::Fail => "fail",
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
