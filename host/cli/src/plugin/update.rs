//! `phasegate plugin update [NAME…]`.

use clap::Args;
use phasegate_engine::install::{self, Candidate};
use phasegate_model::error::Problem;
use phasegate_store::lock::LockedPlugin;

use super::{ProjectArg, host, list_or_none, policy};
use crate::{Exit, bad_input};

/// Fetch installed plugins again from their sources and install what changed.
///
/// Shows, for each plugin, the difference in version, digest, capability surface and signature
/// before writing anything. Refuses (and writes nothing) when a version goes down
/// (--allow-downgrade accepts), when the source serves different bytes under the same version —
/// a moved tag or a replaced file (--allow-replaced accepts) — or when the signature check fails.
/// Pipelines recorded in the lock keep their reviewed record: `run --locked` refuses them until
/// `phasegate validate PIPELINE` accepts the new version.
#[derive(Args)]
pub struct UpdateArgs {
    /// Installed names to update [default: all].
    names: Vec<String>,
    /// Show the differences only; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Accept a lower version than the installed one.
    #[arg(long)]
    allow_downgrade: bool,
    /// Accept different bytes under the same version.
    #[arg(long)]
    allow_replaced: bool,
    /// Refuse updates that are not signed by a trusted key.
    #[arg(long)]
    require_signed: bool,
    #[command(flatten)]
    project: ProjectArg,
}

impl UpdateArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let project = self.project.existing()?;
        let (_editing, mut lock) = crate::edit_lock(&project)?;
        let policy = policy(&project)?;
        for n in &self.names {
            if lock.plugin(n).is_none() {
                return Err(bad_input(format!(
                    "`{n}` is not installed (see `phasegate plugin list`)"
                )));
            }
        }
        let selected: Vec<LockedPlugin> = lock
            .plugins
            .iter()
            .filter(|p| self.names.is_empty() || self.names.contains(&p.name))
            .cloned()
            .collect();
        let runtime = crate::runtime()?;
        let host = host(Some(&project))?;
        let mut refusals = Vec::new();
        let mut accepted: Vec<(String, Candidate)> = Vec::new();
        for old in &selected {
            let fetched = runtime.block_on(install::fetch_candidate(
                &host,
                &project,
                &policy,
                &old.source,
                &project.root,
                Some(&old.name),
            ));
            let (_, new) = match fetched {
                Ok(c) => c,
                Err(e) => {
                    refusals.push(format!(
                        "`{}`: cannot fetch {}: {e:#}",
                        old.name, old.source
                    ));
                    continue;
                }
            };
            let n = &new.examined;
            if n.digest == old.digest {
                println!(
                    "`{}` is up to date ({} {})",
                    old.name, old.version, old.digest
                );
                continue;
            }
            println!("`{}` from {}:", old.name, old.source);
            println!("  version:    {} -> {}", old.version, n.metadata.version);
            println!("  digest:     {} -> {}", old.digest, n.digest);
            let wider: Vec<String> = n
                .capabilities
                .iter()
                .filter(|c| !old.capabilities.contains(c))
                .cloned()
                .collect();
            println!(
                "  could use:  {} -> {}{}",
                list_or_none(&old.capabilities),
                list_or_none(&n.capabilities),
                if wider.is_empty() {
                    String::new()
                } else {
                    format!("  WIDER: +{}", wider.join(", +"))
                }
            );
            if old.world != n.world.to_string() {
                println!("  world:      {} -> {}", old.world, n.world);
            }
            println!("  signature:  {} -> {}", old.signature, new.signature);
            if let Err(why) = policy.enforce(&new.signature, self.require_signed) {
                refusals.push(format!("`{}`: {why}", old.name));
                continue;
            }
            if old.world != n.world.to_string() {
                refusals.push(format!(
                    "`{}`: the new version implements {}, the installed one {}; pipelines use it as the other kind",
                    old.name, n.world, old.world
                ));
                continue;
            }
            match compare_versions(&old.version, &n.metadata.version) {
                std::cmp::Ordering::Greater if !self.allow_downgrade => {
                    refusals.push(
                        Problem::new(format!(
                            "`{}`: {} -> {} is a downgrade",
                            old.name, old.version, n.metadata.version
                        ))
                        .help("pass --allow-downgrade if you mean it")
                        .to_string(),
                    );
                    continue;
                }
                std::cmp::Ordering::Equal if !self.allow_replaced => {
                    refusals.push(Problem::new(format!("`{}`: {} now serves different bytes under the same version {} (the tag was moved or the file replaced)", old.name, old.source, old.version)).help(format!("inspect it with `phasegate plugin inspect {}`; pass --allow-replaced to accept it", old.source)).to_string());
                    continue;
                }
                _ => {}
            }
            accepted.push((old.name.clone(), new));
        }
        if !refusals.is_empty() {
            return Err(bad_input(format!(
                "nothing was updated:\n{}",
                refusals
                    .iter()
                    .map(|r| format!("  - {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            )));
        }
        if self.dry_run || accepted.is_empty() {
            if self.dry_run && !accepted.is_empty() {
                println!("dry run: nothing written");
            }
            return Ok(Exit::Success);
        }
        let mut replaced = Vec::new();
        for (name, new) in &accepted {
            project
                .put(&new.fetched.bytes, new.fetched.signature.as_deref())
                .map_err(|e| bad_input(format!("{e:#}")))?;
            if let Some(old) = lock.plugin(name) {
                replaced.push(old.digest.clone());
            }
            lock.upsert_plugin(new.locked(name));
        }
        lock.save(&project.lock_path())
            .map_err(|e| bad_input(format!("{e:#}")))?;
        for digest in replaced {
            project.release(&lock, &digest);
        }
        for (name, _) in &accepted {
            println!("updated `{name}`");
            let users = lock.pipelines_using(name);
            if !users.is_empty() {
                println!(
                    "  pipelines reviewed with the old version (run --locked refuses them until `phasegate validate` records the new one): {}",
                    users.join(", ")
                );
            }
        }
        Ok(Exit::Success)
    }
}

/// Semver order when both parse; otherwise equal only when identical (and then any other
/// text counts as newer, so that a non-semver plugin can still be updated).
fn compare_versions(old: &str, new: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(old), semver::Version::parse(new)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        _ if old == new => std::cmp::Ordering::Equal,
        _ => std::cmp::Ordering::Less,
    }
}
