//! `phasegate run`, and the execution `run` and `resume` share.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use phasegate_engine::{LoadedPlugins, LocalExecutor, PluginHost};
use phasegate_model::error::Problem;
use phasegate_model::events::RunOutcome;
use phasegate_model::job::Executor;
use phasegate_model::pipeline::Pipeline;
use phasegate_model::progress::{RunStatus, State};
use phasegate_remote::NatsExecutor;
use phasegate_remote::connect::{Server, connect};
use phasegate_runner::Runner;
use phasegate_runner::persist::{ProgressStore, RunLock};

use super::locking::{LockArgs, load_checked, load_pipeline};
use super::{Exit, Format, bad_input, render::Renderer, state_path};

/// How a run is shown (`run` and `resume`).
#[derive(Args, Clone, Copy)]
pub struct Output {
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Also show plugins' debug and trace log lines.
    #[arg(long, short)]
    verbose: bool,
}

/// Where tasks run (`run` and `resume`).
#[derive(Args, Clone)]
pub struct Dispatch {
    /// Run every task on `phasegate worker`s through this NATS server (JetStream), instead of
    /// in this process. Gates run here; the progress file stays here.
    #[arg(long, env = "PHASEGATE_NATS", value_name = "URL")]
    nats: Option<String>,
}

impl Dispatch {
    /// With `--nats`, the connected server (an unreachable one is an error before anything is
    /// written); `None` runs tasks in this process.
    pub fn connect(&self, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Option<Server>> {
        Ok(match &self.nats {
            Some(url) => Some(runtime.block_on(connect(url, "phasegate controller"))?),
            None => None,
        })
    }
}

/// Run a pipeline from the start.
#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Progress file to write [default: .phasegate/state.toml].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Start over, replacing the progress file even when it holds a run that did not complete
    /// (failed, stopped or unreadable).
    #[arg(long)]
    fresh: bool,
    #[command(flatten)]
    output: Output,
    #[command(flatten)]
    dispatch: Dispatch,
    #[command(flatten)]
    lock: LockArgs,
}

impl RunArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let pipeline = load_pipeline(&self.pipeline)?;
        let state_path = state_path(self.state);
        // Held until the run ends: a second `run` or `resume` on this file refuses at once.
        let _lock = RunLock::acquire(&state_path, "phasegate run").map_err(bad_input)?;
        if !self.fresh {
            refuse_to_replace(&state_path)?;
        }
        let runtime = super::runtime()?;
        let (host, plugins) = load_checked(&pipeline, self.lock)?;
        let nats = self.dispatch.connect(&runtime)?;
        let state = State::new(
            phasegate_runner::resume::new_run_id(),
            &pipeline,
            phasegate_engine::digests(&plugins),
        );
        let mut store =
            ProgressStore::create(&state_path, state).map_err(|e| bad_input(format!("{e:#}")))?;
        execute(
            &runtime,
            host,
            pipeline,
            plugins,
            &mut store,
            false,
            self.output,
            nats,
        )
    }
}

/// Refuses to start a run over a progress file that holds a run's resume point: a run that
/// failed or stopped before it finished, or a file that cannot be read. A completed run is
/// replaced (its results are final; starting a new run is what was asked).
fn refuse_to_replace(state_path: &std::path::Path) -> anyhow::Result<()> {
    if !state_path.exists() {
        return Ok(());
    }
    let fresh = format!(
        "`--fresh` starts over and replaces it (copy {} elsewhere first to keep it)",
        state_path.display()
    );
    let existing = match ProgressStore::open(state_path) {
        Ok(existing) => existing.state,
        Err(e) => {
            return Err(bad_input(
                Problem::new(format!(
                    "{} exists but cannot be read, so starting a run would overwrite it: {e:#}",
                    state_path.display()
                ))
                .help(format!(
                    "give this run another progress file with `--state FILE`, or {fresh}"
                )),
            ));
        }
    };
    let what = match existing.status {
        RunStatus::Completed => return Ok(()),
        RunStatus::Running => "stopped before it finished".to_owned(),
        RunStatus::Failed => format!(
            "failed{}",
            existing
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
    };
    Err(bad_input(
        Problem::new(format!(
            "{} holds run `{}` of {}, which {what}; starting a new run would lose its resume point",
            state_path.display(),
            existing.run_id,
            existing.pipeline.display()
        ))
        .help(format!(
            "continue it with `phasegate resume --state {}`, or {fresh}",
            state_path.display()
        )),
    ))
}

/// Runs (or resumes) the run recorded in `store`, its tasks on the `nats` server's workers or
/// in this process, rendering its events.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site each for run and resume"
)]
pub fn execute(
    runtime: &tokio::runtime::Runtime,
    host: Arc<PluginHost>,
    pipeline: Pipeline,
    plugins: LoadedPlugins,
    store: &mut ProgressStore,
    resumed: bool,
    output: Output,
    nats: Option<Server>,
) -> anyhow::Result<Exit> {
    let renderer = Arc::new(Renderer::new(output.format, output.verbose));
    let sink = renderer.clone();
    let emitter = phasegate_model::events::Emitter::new(move |e| sink.event(&e));
    let outcome = match nats {
        None => {
            let executor = LocalExecutor::new(host, plugins);
            run_with(runtime, executor, pipeline, store, resumed, emitter)
        }
        Some(server) => {
            let gates = LocalExecutor::new(host, plugins.clone());
            let executor = runtime.block_on(NatsExecutor::start(
                server,
                &store.state.run_id,
                pipeline.engine,
                &plugins,
                gates,
                emitter.clone(),
            ))?;
            run_with(runtime, executor, pipeline, store, resumed, emitter)
        }
    }?;
    renderer.summary(&outcome, store.path());
    Ok(match outcome.status {
        RunStatus::Failed => Exit::RunFailed,
        _ => Exit::Success,
    })
}

fn run_with<E: Executor>(
    runtime: &tokio::runtime::Runtime,
    executor: E,
    pipeline: Pipeline,
    store: &mut ProgressStore,
    resumed: bool,
    emitter: phasegate_model::events::Emitter,
) -> anyhow::Result<RunOutcome> {
    let runner = Runner::new(executor, pipeline, emitter);
    runtime.block_on(runner.run(store, resumed)).map_err(|e| {
        bad_input(Problem::new(format!("{e:#}")).help(format!(
            "the progress file keeps everything recorded so far; fix the problem and run `phasegate resume --state {}`",
            store.path().display()
        )))
    })
}
