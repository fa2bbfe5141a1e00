//! `phasegate plugin inspect NAME|PATH|URL|REF`.

use clap::Args;
use phasegate_engine::install::{self, Examined};
use phasegate_engine::sandbox::surface;
use phasegate_store::fetch::Source;
use phasegate_store::lock::SignatureRecord;

use super::{ProjectArg, host, list_or_none, policy};
use crate::{Exit, bad_input};

/// Show what a plugin is and what it could do, before installing or running it.
///
/// Prints its metadata, world, exports, imports, capability surface (the grants it could use),
/// size, digest and signature. TARGET is an installed name, a component file, an https:// URL
/// or an oci:// reference; nothing is installed.
#[derive(Args)]
pub struct InspectArgs {
    /// An installed name, a path, an https:// URL or an oci:// reference.
    target: String,
    #[command(flatten)]
    project: ProjectArg,
}

impl InspectArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let project = self.project.resolve();
        let lock = project.lock().map_err(|e| bad_input(format!("{e:#}")))?;
        let policy = policy(&project)?;
        let runtime = crate::runtime()?;
        let host = host(Some(&project))?;
        let installed = lock.plugin(&self.target).cloned();
        let (bytes, signature_text, source) = match &installed {
            Some(entry) => {
                let (bytes, sig) = project
                    .read_stored(&entry.digest)
                    .map_err(|e| bad_input(format!("`{}`: {e}", self.target)))?;
                (bytes, sig, entry.source.clone())
            }
            None => {
                let cwd = std::env::current_dir()?;
                let source =
                    Source::parse(&self.target, &cwd).map_err(|e| bad_input(format!("{e:#}")))?;
                let fetched = runtime
                    .block_on(source.fetch())
                    .map_err(|e| bad_input(format!("cannot inspect {}: {e:#}", self.target)))?;
                if let Some(r) = &fetched.resolved {
                    println!("resolved:     {r}");
                }
                let source = match &source {
                    Source::Path(p) => project.relative(p),
                    _ => self.target.clone(),
                };
                (fetched.bytes, fetched.signature, source)
            }
        };
        let examined = runtime
            .block_on(install::examine(&host, &self.target, &bytes))
            .map_err(|e| bad_input(format!("{e:#}")))?;
        let name = installed
            .as_ref()
            .map(|e| e.name.clone())
            .unwrap_or_else(|| examined.metadata.name.clone());
        let signature = policy
            .check(&bytes, signature_text.as_deref(), &name, &source)
            .map_err(|e| bad_input(format!("{}: {e}", self.target)))?;
        print_examined(&examined, &signature);
        if let Some(entry) = installed {
            println!("installed as: `{}` from {}", entry.name, entry.source);
            println!("              at {}", entry.installed_at);
        }
        Ok(Exit::Success)
    }
}

fn print_examined(e: &Examined, signature: &SignatureRecord) {
    let m = &e.metadata;
    println!("name:         {}", m.name);
    println!("version:      {}", m.version);
    println!("description:  {}", m.description);
    println!("world:        {}", e.world);
    println!("exports:      {}", list_or_none(&e.exports));
    println!("imports:");
    for i in &e.imports {
        println!("  {i}");
    }
    let caps = surface::surface(&e.imports);
    if caps.is_empty() {
        println!(
            "capability surface: none (it can use no file, environment variable or network even if granted)"
        );
    } else {
        println!("capability surface (what it could use, only where a pipeline grants it):");
        for (cap, imports) in caps {
            println!(
                "  {:<12} via {} — granted by `{}`",
                cap.name(),
                imports.join(", "),
                cap.grant_key()
            );
        }
    }
    let config = match m
        .config_schema
        .as_deref()
        .map(phasegate_runner::config_check::ConfigSchema::compile)
    {
        Some(Ok(schema)) => format!("{} (checked against its JSON Schema)", schema.keys()),
        Some(Err(why)) => format!("not checked: {why}"),
        None => "no schema published (the plugin checks its config itself)".to_owned(),
    };
    println!("config:       {config}");
    println!("size:         {} bytes", e.size);
    println!("digest:       {}", e.digest);
    println!("signature:    {signature}");
}
