//! `phasegate run`, and the execution `run` and `resume` share.

use std::collections::BTreeMap;
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
use phasegate_runner::cache::ResultCache;
use phasegate_runner::key::{self, ClockFree};
use phasegate_runner::persist::{ProgressStore, RunLock};
use phasegate_runner::{Recorded, Runner};

use super::locking::{LockArgs, check_configs, load_checked, load_pipeline, metadata_of};
use super::render::{Progress, Renderer};
use super::{Exit, Format, bad_input, relative_to_cwd, state_path};

/// How a run is shown (`run` and `resume`).
#[derive(Args, Clone, Copy)]
pub struct Output {
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Also show every task's lines and plugins' debug and trace log lines.
    #[arg(long, short)]
    verbose: bool,
    /// How progress is shown in the human format: bars when stderr is a terminal (auto),
    /// bars, a line per event, or nothing until the summary.
    #[arg(long, value_enum, default_value = "auto")]
    progress: Progress,
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

/// Whether the result cache is used (`run` and `resume`).
#[derive(Args, Clone, Copy)]
pub struct CacheUse {
    /// Run every task: take no result from the result cache and file none there.
    #[arg(long)]
    no_cache: bool,
}

impl CacheUse {
    /// The cache a run of `pipeline` uses, if any.
    pub fn of(self, pipeline: &Pipeline) -> Option<ResultCache> {
        (!self.no_cache).then(|| super::cache::of_pipeline(pipeline))
    }
}

/// How a session of a run goes: whether it resumes, its cache, how it judges earlier records.
pub struct Session {
    pub resumed: bool,
    /// The plugins that cannot read clocks or random ([`clock_free`]).
    pub clock_free: ClockFree,
    pub cache: Option<ResultCache>,
    pub recorded: Recorded,
}

/// The plugins whose components import neither clocks nor random.
pub fn clock_free(plugins: &LoadedPlugins) -> ClockFree {
    plugins
        .iter()
        .filter(|(_, p)| !key::reads_clocks(&p.imports))
        .map(|(r, _)| r.spec.clone())
        .collect()
}

/// Values for the pipeline's `[vars]` (`run` and `resume`).
#[derive(Args, Clone, Default)]
pub struct VarArgs {
    /// Set a var the pipeline declares in `[vars]` for this run: `KEY=VALUE`, or `KEY=@FILE`
    /// for a file's contents (`KEY=@@…` for a value starting with `@`). Repeatable. The run
    /// records the values and `resume` uses the same.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    vars: Vec<String>,
}

impl VarArgs {
    /// The values given, files read.
    pub fn read(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut given = BTreeMap::new();
        for arg in &self.vars {
            let Some((key, value)) = arg.split_once('=') else {
                return Err(bad_input(
                    Problem::new(format!("--var `{arg}` has no `=`")).help(
                        "write `--var KEY=VALUE`, or `--var KEY=@FILE` for a file's contents",
                    ),
                ));
            };
            let key = key.trim();
            let value = if let Some(literal) = value.strip_prefix("@@") {
                format!("@{literal}")
            } else if let Some(file) = value.strip_prefix('@') {
                let bytes = std::fs::read(file).map_err(|e| {
                    bad_input(
                        Problem::new(format!("--var {key}=@{file}: cannot read {file}: {e}"))
                            .help("give the path of a readable file (relative to the current folder), or `@@` for a value that starts with `@`"),
                    )
                })?;
                String::from_utf8(bytes).map_err(|e| {
                    bad_input(
                        Problem::new(format!(
                            "--var {key}=@{file}: {file} is not UTF-8 text (invalid byte at offset {})",
                            e.utf8_error().valid_up_to()
                        ))
                        .help("a var holds text; grant the task a read-only directory (`grants.dirs`) for binary or large inputs"),
                    )
                })?
            } else {
                value.to_owned()
            };
            if given.insert(key.to_owned(), value).is_some() {
                return Err(bad_input(
                    Problem::new(format!("--var `{key}` is given twice"))
                        .help("give each var once"),
                ));
            }
        }
        Ok(given)
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

impl RunArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let mut pipeline = load_pipeline(&self.pipeline)?;
        let vars = self.vars.read()?;
        pipeline.set_vars(&vars).map_err(bad_input)?;
        let state_path = state_path(self.state);
        // Held until the run ends: a second `run` or `resume` on this file refuses at once.
        let _lock = RunLock::acquire(&state_path, "phasegate run").map_err(bad_input)?;
        if !self.fresh {
            refuse_to_replace(&state_path)?;
        }
        let runtime = super::runtime()?;
        let (host, plugins) = load_checked(&pipeline, self.lock)?;
        check_configs(
            &pipeline,
            &metadata_of(&runtime, &host, &pipeline, &plugins),
        )?;
        let nats = self.dispatch.connect(&runtime)?;
        let mut state = State::new(
            phasegate_runner::resume::new_run_id(),
            &pipeline,
            phasegate_engine::digests(&plugins),
        );
        state.vars = vars;
        let mut store =
            ProgressStore::create(&state_path, state).map_err(|e| bad_input(format!("{e:#}")))?;
        let session = Session {
            resumed: false,
            clock_free: clock_free(&plugins),
            cache: self.cache.of(&pipeline),
            recorded: Recorded::default(),
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
    session: Session,
    output: Output,
    nats: Option<Server>,
) -> anyhow::Result<Exit> {
    let renderer = Arc::new(Renderer::new(
        output.format,
        output.verbose,
        output.progress,
    ));
    let pipeline_path = relative_to_cwd(&pipeline.path);
    let sink = renderer.clone();
    let emitter = phasegate_model::events::Emitter::new(move |e| sink.event(&e));
    let outcome = match nats {
        None => {
            let executor = LocalExecutor::new(host, plugins);
            run_with(runtime, executor, pipeline, store, session, emitter)
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
            run_with(runtime, executor, pipeline, store, session, emitter)
        }
    }?;
    renderer.summary(&outcome, store.path(), &pipeline_path);
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
    session: Session,
    emitter: phasegate_model::events::Emitter,
) -> anyhow::Result<RunOutcome> {
    let trees = super::cache::tree_memo_of(&pipeline);
    let runner = Runner::new(executor, pipeline, emitter)
        .with_tree_memo(trees)
        .with_clock_free(session.clock_free)
        .with_cache(session.cache)
        .with_recorded(session.recorded);
    runtime.block_on(runner.run(store, session.resumed)).map_err(|e| {
        bad_input(Problem::new(format!("{e:#}")).help(format!(
            "the progress file keeps everything recorded so far; fix the problem and run `phasegate resume --state {}`",
            store.path().display()
        )))
    })
}
