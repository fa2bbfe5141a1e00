//! `phasegate resume`.

use std::path::PathBuf;

use clap::Args;
use phasegate_model::error::Problem;
use phasegate_model::progress::RunStatus;
use phasegate_runner::persist::{ProgressStore, RunLock};
use phasegate_runner::resume::{changes, reconcile};

use super::locking::{LockArgs, check_configs, load_checked, load_pipeline, metadata_of};
use super::run::{Dispatch, Output, VarArgs, execute};
use super::{Exit, bad_input, state_path};

/// Continue an interrupted or failed run where it stopped.
///
/// Finished phases and finished tasks are not run again. After a failed gate, the failed phase's
/// failed tasks run again, then its gate. Refuses when the pipeline file or a plugin changed since
/// the run started (--force accepts the change).
#[derive(Args)]
pub struct ResumeArgs {
    /// Progress file of the run [default: .phasegate/state.toml].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Resume even though the pipeline or a plugin changed.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    vars: VarArgs,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    dispatch: Dispatch,
    #[command(flatten)]
    lock: LockArgs,
}

impl ResumeArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let state_path = state_path(self.state);
        super::require_progress(&state_path)?;
        let _lock = RunLock::acquire(&state_path, "phasegate resume").map_err(bad_input)?;
        let mut store =
            ProgressStore::open(&state_path).map_err(|e| bad_input(format!("{e:#}")))?;
        if store.state.status == RunStatus::Completed {
            eprintln!(
                "run `{}` already completed; nothing to resume",
                store.state.run_id
            );
            return Ok(Exit::Success);
        }
        let given = self.vars.read()?;
        let differ: Vec<String> = given
            .iter()
            .filter_map(|(k, v)| match store.state.vars.get(k) {
                Some(recorded) if recorded == v => None,
                Some(_) => Some(format!("`{k}` (the run started with another value)")),
                None => Some(format!("`{k}` (the run started without it)")),
            })
            .collect();
        if !differ.is_empty() {
            return Err(bad_input(
                Problem::new(format!(
                    "cannot resume run `{}` with other vars than it started with: {}",
                    store.state.run_id,
                    differ.join(", ")
                ))
                .help(format!(
                    "resume without `--var` to use the recorded values, or start over with `phasegate run {} --fresh --var ...`",
                    store.state.pipeline.display()
                )),
            ));
        }
        let mut pipeline = load_pipeline(&store.state.pipeline.clone())?;
        if !store.state.vars.is_empty() {
            pipeline.set_vars(&store.state.vars).map_err(|p| {
                bad_input(Problem::new(format!(
                    "the vars run `{}` started with no longer fit its pipeline: {}",
                    store.state.run_id, p.message
                )).help(format!(
                    "restore the var in the pipeline's `[vars]`, or start over with `phasegate run {} --fresh`",
                    store.state.pipeline.display()
                )))
            })?;
            let keys: Vec<&str> = store.state.vars.keys().map(String::as_str).collect();
            eprintln!(
                "using the vars run `{}` started with: {}",
                store.state.run_id,
                keys.join(", ")
            );
        }
        let runtime = super::runtime()?;
        let (host, plugins) = load_checked(&pipeline, self.lock)?;
        check_configs(
            &pipeline,
            &metadata_of(&runtime, &host, &pipeline, &plugins),
        )?;
        let nats = self.dispatch.connect(&runtime)?;
        let now = phasegate_engine::digests(&plugins);
        let changes = changes(&store.state, &pipeline, &now);
        if !changes.is_empty() {
            if !self.force {
                let listed: Vec<String> = changes.iter().map(|c| format!("  - {c}")).collect();
                return Err(bad_input(
                    Problem::new(format!(
                        "cannot resume run `{}`: {} changed since it started:\n{}",
                        store.state.run_id,
                        if changes.len() == 1 { "this" } else { "these" },
                        listed.join("\n")
                    ))
                    .help(format!(
                        "restore them, start over with `phasegate run {} --fresh`, or pass `--force` to resume with the changes",
                        pipeline.path.display()
                    )),
                ));
            }
            for c in &changes {
                eprintln!("warning: resuming despite a change: {c}");
            }
            reconcile(&mut store.state, &pipeline, now);
        }
        execute(
            &runtime,
            host,
            pipeline,
            plugins,
            &mut store,
            true,
            self.output,
            nats,
        )
    }
}
