//! Resuming a run: what changed since it started, and how a changed pipeline's records are
//! carried over when the user accepts the change.

use phasegate_model::pipeline::{Pipeline, PluginDigests};
use phasegate_model::progress::{PhaseStatus, State};

/// What changed since a run started: the pipeline file, its plugins (by digest), or the
/// phases and tasks the progress file records. Empty when the run can resume as it is.
pub fn changes(state: &State, pipeline: &Pipeline, now: &PluginDigests) -> Vec<String> {
    let mut out = Vec::new();
    if state.pipeline_digest != pipeline.digest {
        out.push(format!(
            "the pipeline file {} (was {}, now {})",
            pipeline.path.display(),
            short(&state.pipeline_digest),
            short(&pipeline.digest)
        ));
    }
    for (spec, digest) in now {
        match state.plugins.get(spec) {
            Some(old) if old != digest => out.push(format!(
                "plugin `{spec}` (was {}, now {})",
                short(old),
                short(digest)
            )),
            None => out.push(format!("plugin `{spec}` is new in the pipeline")),
            _ => {}
        }
    }
    for spec in state.plugins.keys().filter(|s| !now.contains_key(*s)) {
        out.push(format!("plugin `{spec}` is no longer in the pipeline"));
    }
    // The runner indexes the state by the pipeline's phases and tasks: they must line up.
    let lines_up = state.phases.len() == pipeline.phases.len()
        && state.phases.iter().zip(&pipeline.phases).all(|(s, p)| {
            s.id == p.id
                && s.tasks.len() == p.tasks.len()
                && s.tasks.iter().zip(&p.tasks).all(|(a, b)| a.id == b.id)
        });
    if !lines_up {
        out.push(
            "the phases and tasks recorded in the progress file differ from the pipeline's".into(),
        );
    }
    out
}

pub(crate) fn short(digest: &str) -> &str {
    &digest[..digest.len().min("sha256:".len() + 12)]
}

/// Accepts a changed pipeline: keeps the records of phases and tasks that still exist (by id).
pub fn reconcile(state: &mut State, pipeline: &Pipeline, plugins: PluginDigests) {
    let mut fresh = State::new(state.run_id.clone(), pipeline, plugins);
    fresh.started_at = state.started_at.clone();
    fresh.pipeline = state.pipeline.clone();
    fresh.vars = std::mem::take(&mut state.vars);
    for phase in &mut fresh.phases {
        if let Some(old) = state.phases.iter().find(|p| p.id == phase.id) {
            let all_kept = phase
                .tasks
                .iter()
                .all(|t| old.tasks.iter().any(|o| o.id == t.id));
            for task in std::sync::Arc::make_mut(&mut phase.tasks) {
                if let Some(o) = old.tasks.iter().find(|o| o.id == task.id) {
                    *task = o.clone();
                }
            }
            if all_kept && phase.tasks.len() == old.tasks.len() {
                phase.status = old.status;
                phase.verdict = old.verdict.clone();
                phase.gate_key = old.gate_key.clone();
                phase.gates = old.gates.clone();
            } else {
                // Tasks came or went: the gate judges again. A phase whose gate failed stays
                // failed until then, so that its failed tasks run again.
                phase.status = match old.status {
                    PhaseStatus::Complete => PhaseStatus::Running,
                    status => status,
                };
            }
        }
    }
    *state = fresh;
}

/// A new run's id: its UTC start time and 24 random bits, e.g. `20261206T014500Z-3f9a1c`.
pub fn new_run_id() -> String {
    let now: time::OffsetDateTime = std::time::SystemTime::now().into();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    format!(
        "{}-{:06x}",
        now.format(&fmt).unwrap_or_default(),
        rand::random::<u32>() & 0xff_ffff
    )
}
