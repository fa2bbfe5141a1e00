//! `phasegate lock PIPELINE…`.

use std::path::{Path, PathBuf};

use clap::Args;
use phasegate_store::Project;

use super::locking::load_pipeline;
use super::locking::{self, LockArgs as Strictness};
use super::{Exit, bad_input};

/// Review pipelines and record their plugin uses in phasegate.lock (creating it when there is
/// none), so that `run --locked` can refuse anything that changed since.
///
/// For each task and gate the lock records the plugin's digest, its capability surface and the
/// pipeline's grants. A new lock is created in the current folder when it holds the pipeline,
/// else in the pipeline's folder. `validate` and `run` (without --locked) update an existing
/// lock the same way.
#[derive(Args)]
pub struct LockArgs {
    /// Pipeline files (TOML).
    #[arg(required = true)]
    pipelines: Vec<PathBuf>,
}

impl LockArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        for path in &self.pipelines {
            let mut pipeline = load_pipeline(path)?;
            if pipeline.project.is_none() {
                let project = new_project_for(path);
                // Under the edit lock: another `phasegate lock` may have created it meanwhile.
                let (_editing, lock) = super::edit_lock(&project)?;
                if !project.lock_path().exists() {
                    lock.save(&project.lock_path())
                        .map_err(|e| bad_input(format!("{e:#}")))?;
                    eprintln!("created {}", project.lock_path().display());
                }
                pipeline.project = Some(project.root);
            }
            locking::load_checked(&pipeline, Strictness::default())?;
        }
        Ok(Exit::Success)
    }
}

fn new_project_for(pipeline: &Path) -> Project {
    let dir = pipeline
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    match std::env::current_dir() {
        Ok(cwd) if dir.starts_with(&cwd) => Project::at(&cwd),
        _ => Project::at(&dir),
    }
}
