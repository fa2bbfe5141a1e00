//! `phasegate plugin list`.

use clap::Args;

use super::{ProjectArg, list_or_none};
use crate::{Exit, bad_input};

/// List the installed plugins.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    project: ProjectArg,
}

impl ListArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let project = self.project.existing()?;
        let lock = project.lock().map_err(|e| bad_input(format!("{e:#}")))?;
        if lock.plugins.is_empty() {
            println!("no plugins installed ({})", project.lock_path().display());
        }
        for p in &lock.plugins {
            let kind = if p.world.contains("/gate") {
                "gate"
            } else {
                "task"
            };
            println!(
                "{}  {} {}  {kind}  could use: {}  {}",
                p.name,
                p.plugin_name,
                p.version,
                list_or_none(&p.capabilities),
                p.signature
            );
            println!("    {}  from {}", p.digest, p.source);
        }
        Ok(Exit::Success)
    }
}
