//! `phasegate plugin …`: install, inspect, update, verify, publish and sign plugins. One file
//! per subcommand; the library's `store` and `install` modules do the work.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use phasegate_engine::PluginHost;
use phasegate_engine::compile_cache::CompileCache;
use phasegate_model::error::Problem;
use phasegate_model::pipeline::EngineLimits;
use phasegate_store::Project;
use phasegate_store::trust::Policy;

use super::{Exit, bad_input};

mod add;
mod inspect;
mod list;
mod publish;
mod remove;
mod sign;

mod update;
mod verify;

/// Install and manage third-party plugins (the project's store and phasegate.lock).
///
/// The project is the nearest folder from the current one upwards that holds phasegate.lock
/// (`plugin add` creates it in the current folder when there is none); --project names it.
#[derive(Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    Add(add::AddArgs),
    List(list::ListArgs),
    Inspect(inspect::InspectArgs),
    Remove(remove::RemoveArgs),
    Update(update::UpdateArgs),
    Verify(verify::VerifyArgs),
    Publish(publish::PublishArgs),
    Sign(sign::SignArgs),
}

impl PluginArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        match self.command {
            PluginCommand::Add(a) => a.run(),
            PluginCommand::List(a) => a.run(),
            PluginCommand::Inspect(a) => a.run(),
            PluginCommand::Remove(a) => a.run(),
            PluginCommand::Update(a) => a.run(),
            PluginCommand::Verify(a) => a.run(),
            PluginCommand::Publish(a) => a.run(),
            PluginCommand::Sign(a) => a.run(),
        }
    }
}

/// `--project DIR`, shared by the subcommands that work on a project.
#[derive(Args, Clone, Debug)]
pub struct ProjectArg {
    /// The project folder (holding phasegate.lock) [default: the nearest one from here upwards,
    /// else the current folder].
    #[arg(long)]
    project: Option<PathBuf>,
}

impl ProjectArg {
    /// The project: `--project`, else the nearest with a lock, else the current folder.
    pub fn resolve(&self) -> Project {
        match &self.project {
            Some(dir) => Project::at(dir),
            None => Project::find(Path::new(".")).unwrap_or_else(|| Project::at(Path::new("."))),
        }
    }

    /// The project, which must already have a lock.
    pub fn existing(&self) -> anyhow::Result<Project> {
        let project = self.resolve();
        if !project.lock_path().is_file() {
            return Err(bad_input(
                Problem::new(format!(
                    "no {} in {} (or above): no plugins are installed here",
                    phasegate_store::LOCK_FILE,
                    project.root.display()
                ))
                .help("install one with `phasegate plugin add SOURCE`, or pass --project DIR"),
            ));
        }
        Ok(project)
    }
}

/// The engine used to examine plugins, caching compiled components beside the project's store.
pub fn host(project: Option<&Project>) -> anyhow::Result<Arc<PluginHost>> {
    PluginHost::with_cache(EngineLimits::SINGLE, CompileCache::root_for(project))
}

/// The project's trust policy.
pub fn policy(project: &Project) -> anyhow::Result<Policy> {
    Policy::load(&project.trust_path()).map_err(|e| bad_input(format!("{e:#}")))
}

/// A list, or `none`.
pub fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Reads a password from the environment variable `var`, if one is named.
pub fn password(var: &Option<String>) -> anyhow::Result<Option<String>> {
    match var {
        None => Ok(None),
        Some(v) => std::env::var(v).map(Some).map_err(|_| {
            bad_input(format!(
                "--password-env {v}: the environment variable `{v}` is not set"
            ))
        }),
    }
}
