//! `phasegate plugin remove NAME`.

use clap::Args;

use super::ProjectArg;
use crate::{Exit, bad_input};

/// Uninstall a plugin: remove it from phasegate.lock, and its file from the store when no other
/// installed name shares it.
#[derive(Args)]
pub struct RemoveArgs {
    /// The installed name.
    name: String,
    #[command(flatten)]
    project: ProjectArg,
}

impl RemoveArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let project = self.project.existing()?;
        let (_editing, mut lock) = crate::edit_lock(&project)?;
        let Some(entry) = lock.plugin(&self.name).cloned() else {
            return Err(bad_input(format!(
                "`{}` is not installed (see `phasegate plugin list`)",
                self.name
            )));
        };
        lock.plugins.retain(|p| p.name != self.name);
        lock.save(&project.lock_path())
            .map_err(|e| bad_input(format!("{e:#}")))?;
        project.release(&lock, &entry.digest);
        println!(
            "removed `{}` ({} {})",
            self.name, entry.plugin_name, entry.version
        );
        let users = lock.pipelines_using(&self.name);
        if !users.is_empty() {
            eprintln!(
                "warning: these pipelines use `{}` and will not load until it is installed again: {}",
                self.name,
                users.join(", ")
            );
        }
        Ok(Exit::Success)
    }
}
