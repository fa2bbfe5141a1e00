//! `phasegate run` and `phasegate resume`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use phasegate::engine::{self, LoadedPlugins, PluginHost};
use phasegate::pipeline::{Pipeline, PluginDigests};
use phasegate::progress::{ProgressStore, RunStatus, State};
use phasegate::runner::Runner;

use super::locking::{LockArgs, load_checked};
use super::{Exit, Format, bad_input, render::Renderer, state_path};

/// Run a pipeline from the start.
#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    /// Progress file to write [default: .phasegate/state.toml].
    #[arg(long)]
    state: Option<PathBuf>,
    /// Start over even if the progress file holds an unfinished run.
    #[arg(long)]
    fresh: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Also show plugins' debug and trace log lines.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    lock: LockArgs,
}

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
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Also show plugins' debug and trace log lines.
    #[arg(long, short)]
    verbose: bool,
    #[command(flatten)]
    lock: LockArgs,
}

impl RunArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let pipeline = load_pipeline(&self.pipeline)?;
        let state_path = state_path(self.state);
        if !self.fresh
            && state_path.exists()
            && let Ok(existing) = ProgressStore::open(&state_path)
            && existing.state.status == RunStatus::Running
        {
            return Err(bad_input(format!(
                "{} holds the unfinished run `{}` of {}\n  help: continue it with `phasegate resume --state {}`, or pass `--fresh` to start over",
                state_path.display(),
                existing.state.run_id,
                existing.state.pipeline.display(),
                state_path.display()
            )));
        }
        let runtime = super::runtime()?;
        let (host, plugins) = load_checked(&pipeline, self.lock)?;
        let state = State::new(new_run_id(), &pipeline, digests(&plugins));
        let mut store =
            ProgressStore::create(&state_path, state).map_err(|e| bad_input(format!("{e:#}")))?;
        execute(
            &runtime,
            host,
            pipeline,
            plugins,
            &mut store,
            false,
            self.format,
            self.verbose,
        )
    }
}

impl ResumeArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let state_path = state_path(self.state);
        if !state_path.exists() {
            return Err(bad_input(format!(
                "no progress file at {}\n  help: start a run with `phasegate run PIPELINE`, or point to its file with `--state FILE`",
                state_path.display()
            )));
        }
        let mut store =
            ProgressStore::open(&state_path).map_err(|e| bad_input(format!("{e:#}")))?;
        if store.state.status == RunStatus::Completed {
            eprintln!(
                "run `{}` already completed; nothing to resume",
                store.state.run_id
            );
            return Ok(Exit::Success);
        }
        let pipeline = load_pipeline(&store.state.pipeline.clone())?;
        let runtime = super::runtime()?;
        let (host, plugins) = load_checked(&pipeline, self.lock)?;
        let now = digests(&plugins);
        let changes = changes(&store.state, &pipeline, &now);
        if !changes.is_empty() {
            if !self.force {
                return Err(bad_input(format!(
                    "cannot resume run `{}`: {} changed since it started:\n{}\n  help: restore them, start over with `phasegate run {} --fresh`, or pass `--force` to resume with the changes",
                    store.state.run_id,
                    if changes.len() == 1 { "this" } else { "these" },
                    changes
                        .iter()
                        .map(|c| format!("  - {c}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    pipeline.path.display()
                )));
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
            self.format,
            self.verbose,
        )
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site each for run and resume"
)]
fn execute(
    runtime: &tokio::runtime::Runtime,
    host: Arc<PluginHost>,
    pipeline: Pipeline,
    plugins: LoadedPlugins,
    store: &mut ProgressStore,
    resumed: bool,
    format: Format,
    verbose: bool,
) -> anyhow::Result<Exit> {
    let renderer = Arc::new(Renderer::new(format, verbose));
    let sink = renderer.clone();
    let emitter = phasegate::events::Emitter::new(move |e| sink.event(&e));
    let runner = Runner::new(host, pipeline, plugins, emitter);
    let outcome = runtime
        .block_on(runner.run(store, resumed))
        .map_err(|e| bad_input(format!("{e:#}\n  help: the progress file keeps everything recorded so far; fix the problem and run `phasegate resume --state {}`", store.path().display())))?;
    renderer.summary(&outcome, store.path());
    Ok(match outcome.status {
        RunStatus::Failed => Exit::RunFailed,
        _ => Exit::Success,
    })
}

/// Loads a pipeline, turning its errors into exit-2 errors.
pub fn load_pipeline(path: &Path) -> anyhow::Result<Pipeline> {
    Pipeline::load(path).map_err(|errors| bad_input(errors.to_string()))
}

/// Loads and type-checks every plugin of a pipeline, and checks each is used in its role.
pub fn load_plugins(host: &PluginHost, pipeline: &Pipeline) -> anyhow::Result<LoadedPlugins> {
    let loaded = engine::load_all(host, &pipeline.plugins()).map_err(|errors| {
        bad_input(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let problems = engine::check_roles(pipeline, &loaded);
    if !problems.is_empty() {
        return Err(bad_input(problems.join("\n")));
    }
    Ok(loaded)
}

fn digests(plugins: &LoadedPlugins) -> PluginDigests {
    plugins
        .iter()
        .map(|(r, p)| (r.spec.clone(), p.digest.clone()))
        .collect::<BTreeMap<_, _>>()
}

fn changes(state: &State, pipeline: &Pipeline, now: &PluginDigests) -> Vec<String> {
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

fn short(digest: &str) -> &str {
    &digest[..digest.len().min("sha256:".len() + 12)]
}

/// Accepts a changed pipeline: keeps the records of phases and tasks that still exist (by id).
fn reconcile(state: &mut State, pipeline: &Pipeline, plugins: PluginDigests) {
    let mut fresh = State::new(state.run_id.clone(), pipeline, plugins);
    fresh.started_at = state.started_at.clone();
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
            }
        }
    }
    *state = fresh;
}

fn new_run_id() -> String {
    let now: time::OffsetDateTime = std::time::SystemTime::now().into();
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    format!(
        "{}-{:06x}",
        now.format(&fmt).unwrap_or_default(),
        rand::random::<u32>() & 0xff_ffff
    )
}
