//! `phasegate plugin verify`.

use clap::Args;
use phasegate_model::error::Problem;

use super::{ProjectArg, policy};
use crate::{Exit, bad_input};

/// Re-hash every stored plugin against phasegate.lock, and re-check stored signatures against
/// the current trust policy. Exits 2 when anything is missing, modified or no longer trusted.
#[derive(Args)]
pub struct VerifyArgs {
    /// Also fail on plugins that are not signed by a trusted key.
    #[arg(long)]
    require_signed: bool,
    #[command(flatten)]
    project: ProjectArg,
}

impl VerifyArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let project = self.project.existing()?;
        let lock = project.lock().map_err(|e| bad_input(format!("{e:#}")))?;
        let policy = policy(&project)?;
        let mut problems = Vec::new();
        for p in &lock.plugins {
            let (bytes, sig) = match project.read_stored(&p.digest) {
                Ok(stored) => stored,
                Err(e) => {
                    problems.push(Problem::new(format!("`{}`: {e}", p.name)).help(format!("reinstall it: `phasegate plugin remove {}` then `phasegate plugin add {} --name {}`", p.name, p.source, p.name)).to_string());
                    continue;
                }
            };
            match policy.judge(
                &bytes,
                sig.as_deref(),
                &p.name,
                &p.source,
                self.require_signed,
            ) {
                Err(why) => problems.push(format!("`{}`: {why}", p.name)),
                Ok(record) => println!("ok  {}  {}  {record}", p.name, p.digest),
            }
        }
        let known: std::collections::HashSet<String> =
            lock.plugins.iter().map(|p| p.digest.clone()).collect();
        if let Ok(entries) = std::fs::read_dir(project.store_dir()) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                let Some(hex) = file.strip_suffix(".wasm") else {
                    continue;
                };
                if !known.contains(&format!("sha256:{hex}")) {
                    eprintln!(
                        "note: {} is in the store but not in the lock (left over; safe to delete)",
                        e.path().display()
                    );
                }
            }
        }
        if problems.is_empty() {
            println!(
                "{} plugin(s) verified against {}",
                lock.plugins.len(),
                project.lock_path().display()
            );
            Ok(Exit::Success)
        } else {
            Err(bad_input(format!(
                "the plugin store does not match {}:\n{}",
                project.lock_path().display(),
                problems
                    .iter()
                    .map(|p| format!("  - {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )))
        }
    }
}
