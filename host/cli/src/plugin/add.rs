//! `phasegate plugin add SOURCE [--name NAME]`.

use clap::Args;
use phasegate_engine::install;
use phasegate_model::error::Problem;
use phasegate_store::lock::SignatureStatus;

use super::{ProjectArg, host, list_or_none, policy};
use crate::{Exit, bad_input};

/// Fetch a plugin, check it, store it and record it in phasegate.lock.
///
/// SOURCE is a component file, an https:// URL (http:// on loopback only) or an OCI reference
/// (oci://registry/repository:tag or …@sha256:…). The component must implement the task or gate
/// world of this phasegate's contract. It is stored under its sha256 in .phasegate/plugins and
/// recorded with its version, world, capability surface and signature status. A signature that
/// does not verify is always refused; unsigned plugins and untrusted keys are refused with
/// --require-signed or when phasegate-trust.toml has `require-signed = true`.
#[derive(Args)]
pub struct AddArgs {
    /// A path, an https:// URL, or an oci:// reference.
    source: String,
    /// The name pipelines will use [default: the name the plugin reports].
    #[arg(long)]
    name: Option<String>,
    /// Refuse the plugin unless it is signed by a key the trust policy trusts for it.
    #[arg(long)]
    require_signed: bool,
    #[command(flatten)]
    project: ProjectArg,
}

impl AddArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let project = self.project.resolve();
        let (_editing, mut lock) = crate::edit_lock(&project)?;
        let policy = policy(&project)?;
        let runtime = crate::runtime()?;
        let host = host(Some(&project))?;
        let cwd = std::env::current_dir()?;
        let (name, candidate) = runtime
            .block_on(install::fetch_candidate(
                &host,
                &project,
                &policy,
                &self.source,
                &cwd,
                self.name.as_deref(),
            ))
            .map_err(|e| bad_input(format!("cannot add {}: {e:#}", self.source)))?;
        policy
            .enforce(&candidate.signature, self.require_signed)
            .map_err(|why| bad_input(format!("refusing {}: {why}", self.source)))?;
        if let Some(existing) = lock.plugin(&name) {
            if existing.digest == candidate.examined.digest {
                println!(
                    "`{name}` is already installed with this digest ({}); nothing to do",
                    existing.digest
                );
                return Ok(Exit::Success);
            }
            return Err(bad_input(Problem::new(format!("`{name}` is already installed ({} {}, {} from {})", existing.plugin_name, existing.version, existing.digest, existing.source)).help(format!("`phasegate plugin update {name}` reviews and installs a new version from its source; or choose another name with --name"))));
        }
        project
            .put(
                &candidate.fetched.bytes,
                candidate.fetched.signature.as_deref(),
            )
            .map_err(|e| bad_input(format!("{e:#}")))?;
        let entry = candidate.locked(&name);
        lock.upsert_plugin(entry.clone());
        lock.save(&project.lock_path())
            .map_err(|e| bad_input(format!("{e:#}")))?;
        println!(
            "installed `{name}`: {} {} ({})",
            entry.plugin_name, entry.version, entry.world
        );
        println!("  source:      {}", entry.source);
        if let Some(r) = &entry.resolved {
            println!("  resolved:    {r}");
        }
        println!("  digest:      {} ({} bytes)", entry.digest, entry.size);
        println!(
            "  could use:   {} (only what a pipeline grants it)",
            list_or_none(&entry.capabilities)
        );
        println!("  signature:   {}", entry.signature);
        if entry.signature.status != SignatureStatus::Verified {
            eprintln!(
                "warning: `{name}` is {}; use --require-signed (or `require-signed = true` in phasegate-trust.toml) to refuse such plugins",
                entry.signature
            );
        }
        println!("  recorded in {}", project.lock_path().display());
        Ok(Exit::Success)
    }
}
