//! `resume --explain`: what resuming a run would do, phase by phase and task by task, and why —
//! decided as the run decides it ([`crate::Runner::run`]), without running anything.

use std::collections::HashSet;
use std::fmt;

use phasegate_model::context::{Context, is_template};
use phasegate_model::job::Executor;
use phasegate_model::pipeline::Id;
use phasegate_model::progress::{PhaseStatus, State, TaskStatus};

use crate::Runner;
use crate::key::Keys;

/// What resuming would do.
#[derive(Debug)]
pub struct Plan {
    pub phases: Vec<PhasePlan>,
}

/// What resuming would do with one phase.
#[derive(Debug)]
pub struct PhasePlan {
    pub id: Id,
    pub tasks: Vec<TaskPlan>,
    /// Why the gate is asked again; `None` when the recorded verdict is kept.
    pub gate: Option<String>,
}

/// What resuming would do with one task.
#[derive(Debug)]
pub struct TaskPlan {
    pub id: Id,
    pub runs: Runs,
    pub why: String,
}

/// Whether a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runs {
    /// Its record is kept.
    No,
    /// It runs.
    Yes,
    /// Its record is kept unless what it reads of results that are made again changes.
    IfInputChanges,
}

impl<E: Executor> Runner<E> {
    /// What resuming the run in `state` would do. `recorded` lists the (phase, task) ids the
    /// progress file had before it was fitted to the pipeline (the others are new).
    pub fn explain(&self, state: &State, recorded: &HashSet<(Id, Id)>) -> Plan {
        let keys = std::sync::Arc::new(Keys::new(
            &self.pipeline,
            state.plugins.clone(),
            self.trees.clone(),
        ));
        let mut ctx = Context::new(&state.run_id, &self.pipeline.name, &self.pipeline.vars);
        let mut phases = Vec::new();
        // Whether an earlier phase makes results again (then what later tasks read may change).
        let mut upstream = false;
        let mut stopped_at: Option<Id> = None;
        for (pi, phase) in self.pipeline.phases.iter().enumerate() {
            keys.forget_trees();
            self.digested(phase, keys.prepare(phase));
            let ps = &state.phases[pi];
            let run = self.phase_run(pi, &ctx, &state.run_id, &keys, None);
            let mut tasks = Vec::new();
            // Whether a task of this phase makes its result again.
            let mut remade = false;
            for (ti, (t, record)) in ps.tasks.iter().zip(run.records(ps)).enumerate() {
                let spec = &phase.tasks[ti];
                let reads = is_template(&spec.input) || spec.grants.context;
                let (runs, why) = match record {
                    _ if !recorded.contains(&(phase.id.clone(), t.id.clone())) => {
                        (Runs::Yes, "new in the pipeline".to_owned())
                    }
                    None if t.status == TaskStatus::Pending => {
                        let why = match &stopped_at {
                            Some(at) => format!(
                                "not run yet (the run stopped at the failed gate of `{at}`)"
                            ),
                            None => "not run yet".into(),
                        };
                        (Runs::Yes, why)
                    }
                    None => (
                        Runs::Yes,
                        "failed before, in the phase whose gate failed".into(),
                    ),
                    Some(Err(reason)) => (Runs::Yes, reason),
                    Some(Ok(())) if reads && (upstream || (!phase.parallel && remade)) => (
                        Runs::IfInputChanges,
                        "runs if what it reads of the results made again changes".into(),
                    ),
                    Some(Ok(())) if self.recorded.keep_changed => {
                        (Runs::No, "--force keeps every record".into())
                    }
                    Some(Ok(())) if t.key.is_none() => (
                        Runs::No,
                        "recorded without a key (by an older phasegate)".into(),
                    ),
                    Some(Ok(())) => (Runs::No, "its key is unchanged".into()),
                };
                remade |= runs != Runs::No;
                tasks.push(TaskPlan {
                    id: t.id.clone(),
                    runs,
                    why,
                });
            }
            let gate = if ps.verdict.is_none() {
                Some("not asked yet".to_owned())
            } else if ps.status == PhaseStatus::Failed {
                Some("asked again: its verdict was fail".to_owned())
            } else if tasks.iter().any(|t| t.runs == Runs::Yes) {
                Some("asked again: tasks of the phase run".to_owned())
            } else if !run.gate_holds(ps, &ctx) {
                Some("asked again: the gate, or what it reads, changed".to_owned())
            } else if remade || (upstream && phase.gates.iter().any(|g| g.grants.context)) {
                Some("asked again if what it judges changes".to_owned())
            } else {
                None
            };
            upstream |= remade || gate.is_some();
            if ps.status == PhaseStatus::Failed && stopped_at.is_none() {
                stopped_at = Some(phase.id.clone());
            }
            ctx.add_phase(ps);
            phases.push(PhasePlan {
                id: phase.id.clone(),
                tasks,
                gate,
            });
        }
        Plan { phases }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for phase in &self.phases {
            let runs = phase.gate.is_some() || phase.tasks.iter().any(|t| t.runs != Runs::No);
            writeln!(
                f,
                "phase {}: {}",
                phase.id,
                if runs { "runs" } else { "kept" }
            )?;
            let width = phase.tasks.iter().map(|t| t.id.len()).max().unwrap_or(0);
            for t in &phase.tasks {
                let word = match t.runs {
                    Runs::No => "keep ",
                    Runs::Yes => "run  ",
                    Runs::IfInputChanges => "maybe",
                };
                writeln!(f, "  {word} {:<width$}  {}", t.id, t.why)?;
            }
            match &phase.gate {
                Some(why) => writeln!(f, "  gate  {why}")?,
                None => writeln!(f, "  gate  verdict kept")?,
            }
        }
        Ok(())
    }
}
