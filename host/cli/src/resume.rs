//! `phasegate resume`.

use std::path::PathBuf;

use clap::Args;
use phasegate_model::error::Problem;
use phasegate_model::progress::RunStatus;
use phasegate_runner::persist::{ProgressStore, RunLock};
use phasegate_runner::resume::{changes, reconcile};
use phasegate_runner::{Recorded, Runner};

use super::locking::{LockArgs, check_configs, load_checked, load_pipeline, metadata_of};
use super::run::{CacheUse, Dispatch, Output, Session, VarArgs, clock_free, execute};
use super::{Exit, bad_input, state_path};

/// Continue an interrupted or failed run where it stopped, following edits.
///
/// A recorded result is kept while its task's key is the same: the plugin, the rendered input,
/// the config, the limits and grants, the files of its read-only grants. A task whose key changed
/// runs again, and so do the tasks that read what changed, and the gates of phases whose results
/// changed. After a failed gate, the failed phase's failed tasks run again, then its gate.
/// `--explain` shows all this without running anything.
#[derive(Args)]
pub struct ResumeArgs {
    /// Progress file of the run [default: .phasegate/state.toml].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Keep the record of every task that still exists, even when its key changed: for a change
    /// you know does not matter (a plugin rebuilt with the same behaviour, a config key it
    /// ignores), which no key can tell.
    #[arg(long)]
    force: bool,
    /// Print, for each phase and task, whether it would run and why; run nothing.
    #[arg(long)]
    explain: bool,
    #[command(flatten)]
    vars: VarArgs,
    #[command(flatten)]
    cache: CacheUse,
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
        let now = phasegate_engine::digests(&plugins);
        let changes = changes(&store.state, &pipeline, &now);
        let recorded = Recorded {
            plugins: store.state.plugins.clone(),
            keep_changed: self.force,
        };
        let known = store
            .state
            .phases
            .iter()
            .flat_map(|p| p.tasks.iter().map(|t| (p.id.clone(), t.id.clone())))
            .collect();
        if !changes.is_empty() {
            for c in &changes {
                eprintln!("changed since the run started: {c}");
            }
            reconcile(&mut store.state, &pipeline, now);
        }
        if self.explain {
            let executor = phasegate_engine::LocalExecutor::new(host, plugins);
            let trees = crate::cache::tree_memo_of(&pipeline);
            let runner = Runner::new(
                executor,
                pipeline,
                phasegate_model::events::Emitter::discard(),
            )
            .with_tree_memo(trees)
            .with_recorded(recorded);
            print!("{}", runner.explain(&store.state, &known));
            return Ok(Exit::Success);
        }
        let nats = self.dispatch.connect(&runtime)?;
        let session = Session {
            resumed: true,
            clock_free: clock_free(&plugins),
            cache: self.cache.of(&pipeline),
            recorded,
        };
        execute(
            &runtime,
            host,
            pipeline,
            plugins,
            &mut store,
            session,
            self.output,
            nats,
        )
    }
}
