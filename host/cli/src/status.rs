//! `phasegate status`.

use std::path::PathBuf;

use clap::Args;
use phasegate_model::error::Problem;
use phasegate_model::progress::{PhaseStatus, TaskStatus};
use phasegate_model::text::{cut, serde_name};
use phasegate_runner::persist::ProgressStore;

use super::{Exit, Format, bad_input, state_path};

/// Show the progress of a run from its progress file.
#[derive(Args)]
pub struct StatusArgs {
    /// Progress file [default: .phasegate/state.toml].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Output format (json prints the whole state, journal folded in).
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// List every failed task with its failure kind and message.
    #[arg(long)]
    failed: bool,
    /// List every task of this phase with its status (with --failed: only its failed tasks).
    #[arg(long, value_name = "ID")]
    phase: Option<String>,
}

impl StatusArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let path = state_path(self.state);
        super::require_progress(&path)?;
        let store = ProgressStore::open(&path).map_err(|e| bad_input(format!("{e:#}")))?;
        let s = &store.state;
        if self.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(s)?);
            return Ok(Exit::Success);
        }
        println!(
            "run {} of {}: {}",
            s.run_id,
            s.pipeline.display(),
            serde_json::to_value(s.status)?.as_str().unwrap_or("?")
        );
        println!("started {}, updated {}", s.started_at, s.updated_at);
        if let Some(reason) = &s.reason {
            println!("reason: {reason}");
        }
        if let Some(id) = &self.phase
            && !s.phases.iter().any(|p| p.id == id.as_str())
        {
            let ids: Vec<&str> = s.phases.iter().map(|p| p.id.as_str()).collect();
            return Err(bad_input(
                Problem::new(format!(
                    "run `{}` has no phase `{id}`{}",
                    s.run_id,
                    phasegate_model::suggest::did_you_mean(id, ids.iter().copied())
                ))
                .help(format!(
                    "its phases are {}",
                    phasegate_model::suggest::list(&ids, 20)
                )),
            ));
        }
        for p in &s.phases {
            if self.phase.as_ref().is_some_and(|id| p.id != id.as_str()) {
                continue;
            }
            let done = p
                .tasks
                .iter()
                .filter(|t| t.status != TaskStatus::Pending)
                .count();
            let failed = p
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Failed)
                .count();
            let status = match p.status {
                PhaseStatus::Pending => "pending",
                PhaseStatus::Running => "running",
                PhaseStatus::Complete => "complete",
                PhaseStatus::Failed => "failed",
            };
            let verdict = p
                .verdict
                .as_ref()
                .map(|v| match v.crashed {
                    Some(kind) => format!(", gate crashed ({}): {}", serde_name(&kind), v.reason),
                    None => format!(", verdict {}: {}", serde_name(&v.kind), v.reason),
                })
                .unwrap_or_default();
            println!(
                "  {:<20} {status:<9} {done}/{} tasks finished, {failed} failed{verdict}",
                p.id,
                p.tasks.len()
            );
            for g in &p.gates {
                let v = &g.verdict;
                let said = match v.crashed {
                    Some(kind) => format!("crashed ({})", serde_name(&kind)),
                    None => serde_name(&v.kind),
                };
                println!(
                    "    {} gate {}: {said}: {}",
                    g.policy.name(),
                    super::render::short_name(&v.gate),
                    v.reason
                );
            }
            // Which workers ran the phase's tasks (`--nats`), with how many each.
            let mut workers = std::collections::BTreeMap::<&str, usize>::new();
            for worker in p.tasks.iter().filter_map(|t| t.worker.as_deref()) {
                *workers.entry(worker).or_default() += 1;
            }
            if !workers.is_empty() {
                let list: Vec<String> = workers.iter().map(|(w, n)| format!("{w} ({n})")).collect();
                println!("  {:<20} ran on {}", "", list.join(", "));
            }
            if self.failed || self.phase.is_some() {
                for t in p
                    .tasks
                    .iter()
                    .filter(|t| !self.failed || t.status == TaskStatus::Failed)
                {
                    print_task(t);
                }
            }
        }
        Ok(Exit::Success)
    }
}

/// One task's line: status, attempts, time, and its failure or the start of its output.
fn print_task(t: &phasegate_model::progress::TaskState) {
    let what = match (&t.error, &t.output) {
        (Some(e), _) => format!("{}: {}", serde_name(&e.kind), e.message),
        (None, Some(output)) => format!("output {}", cut(output, 120)),
        (None, None) => String::new(),
    };
    let used = t
        .usage
        .map(|u| {
            let fuel = u.fuel.map(|f| format!(", fuel {f}")).unwrap_or_default();
            let written = match u.written {
                0 => String::new(),
                n => format!(", wrote {}", phasegate_model::units::ByteSize(n).approx()),
            };
            let opened = match u.opened {
                0 => String::new(),
                n => format!(", opened {n}"),
            };
            format!(
                " (memory {}{fuel}, logs {}{written}{opened})",
                phasegate_model::units::ByteSize(u.memory).approx(),
                phasegate_model::units::ByteSize(u.log_bytes).approx()
            )
        })
        .unwrap_or_default();
    println!(
        "    {:<22} {:<9} {} attempt(s), {} ms{used}  {what}",
        t.id,
        t.status.name(),
        t.attempts,
        t.duration_ms
    );
}
