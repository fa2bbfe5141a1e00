//! `phasegate test`: run a plugin against fixtures, or record a fixture from a real run.

use std::path::{Path, PathBuf};

use clap::Args;
use phasegate_author::check::{self, Case};
use phasegate_author::fixture::{self, Loaded};
use phasegate_author::project::Project;
use phasegate_author::record;
use phasegate_engine::PluginHost;
use phasegate_model::pipeline::PluginRef;

use super::{Exit, bad_input};

/// Run a plugin against fixtures (request or phase report + expected result), or record one.
///
/// PLUGIN is a project folder (built first, fixtures from its plugin.toml) or a `.wasm` file
/// (fixtures from `--fixtures`). Fixtures run under the same limits and grants as a pipeline's
/// tasks: the defaults, or the fixture's own `[limits]` and `[grants]`. Exit 1 when a fixture
/// fails, 2 on bad input.
#[derive(Args)]
pub struct TestArgs {
    /// Project folder, plugin.toml or component file. Default: the current folder.
    #[arg(default_value = ".")]
    plugin: PathBuf,
    /// Fixtures folder (default: the project's `[test] fixtures`, or ./fixtures).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Do not run the project's build first.
    #[arg(long)]
    no_build: bool,
    /// Record a fixture from this progress file instead of testing: the request a task got (or
    /// the report its gate got, without `--task`) and what came back.
    #[arg(long, value_name = "STATE")]
    record: Option<PathBuf>,
    /// With `--record`: the phase.
    #[arg(long, requires = "record")]
    phase: Option<String>,
    /// With `--record`: the task (omit it to record the phase's gate).
    #[arg(long, requires = "record")]
    task: Option<String>,
    /// With `--record`: the fixture's file name (default PHASE-TASK or PHASE-gate).
    #[arg(long, requires = "record")]
    name: Option<String>,
}

impl TestArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let is_component = self.plugin.extension().is_some_and(|e| e == "wasm");
        let project = if is_component {
            None
        } else {
            Some(Project::load(&self.plugin).map_err(bad_input)?)
        };
        let fixtures_dir = match (&self.fixtures, &project) {
            (Some(dir), _) => dir.clone(),
            (None, Some(project)) => project.fixtures(),
            (None, None) => PathBuf::from("fixtures"),
        };
        if let Some(state) = &self.record {
            let phase = self.phase.as_deref().ok_or_else(|| {
                bad_input("`--record` needs `--phase ID` (and `--task ID` for a task)")
            })?;
            let recorded = record::record(
                state,
                phase,
                self.task.as_deref(),
                self.name.as_deref(),
                &fixtures_dir,
            )?;
            println!(
                "recorded {} into {}",
                recorded.about,
                recorded.path.display()
            );
            return Ok(Exit::Success);
        }
        let component = match &project {
            None => self.plugin.clone(),
            Some(project) if self.no_build => project.output(),
            Some(project) => super::build::build(project, false)?,
        };
        let fixtures = fixture::load_dir(&fixtures_dir).map_err(bad_input)?;
        run_fixtures(&component, &fixtures)
    }
}

fn run_fixtures(component: &Path, fixtures: &[Loaded]) -> anyhow::Result<Exit> {
    let (cases, engine) = check::prepare(fixtures)?;
    let host = PluginHost::new(engine)?;
    let plugin = host
        .load(&PluginRef::file(component))
        .map_err(|e| bad_input(e.to_string()))?;
    check::check_shapes(plugin.world, &cases)?;
    let runtime = super::runtime()?;
    println!(
        "testing {} ({}) with {} fixture(s)",
        component.display(),
        plugin.world,
        cases.len()
    );
    let mut failed = 0;
    for case in &cases {
        let checked = runtime.block_on(check::run_case(&host, &plugin, case));
        print_case(case, &checked.problems);
        for warning in &checked.warnings {
            println!("       warning: {warning}");
        }
        if !checked.problems.is_empty() {
            failed += 1;
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    Ok(if failed == 0 {
        Exit::Success
    } else {
        Exit::RunFailed
    })
}

fn print_case(case: &Case<'_>, problems: &[String]) {
    let name = &case.loaded.name;
    let about = case
        .loaded
        .fixture
        .description
        .as_deref()
        .map(|d| format!(" — {d}"))
        .unwrap_or_default();
    if problems.is_empty() {
        println!("  PASS {name}{about}");
    } else {
        println!("  FAIL {name}{about} ({})", case.loaded.path.display());
        for p in problems {
            for line in p.lines() {
                println!("       {line}");
            }
        }
    }
}
