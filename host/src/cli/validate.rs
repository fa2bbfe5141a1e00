//! `phasegate validate`.

use std::path::PathBuf;

use clap::Args;
use phasegate::engine::PluginHost;
use phasegate::events::Emitter;

use super::run::{load_pipeline, load_plugins};
use super::{Exit, bad_input};

/// Check a pipeline without running it.
///
/// Parses the file, checks ids, templates and what they refer to, loads every component and
/// type-checks it against its world, and says which world each implements.
#[derive(Args)]
pub struct ValidateArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
}

impl ValidateArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let pipeline = load_pipeline(&self.pipeline)?;
        let runtime = super::runtime()?;
        let host = PluginHost::new(pipeline.engine)?;
        let plugins = load_plugins(&host, &pipeline)?;
        let tasks: usize = pipeline.phases.iter().map(|p| p.tasks.len()).sum();
        println!(
            "pipeline `{}` ({}): {} phase(s), {tasks} task(s)",
            pipeline.name,
            pipeline.path.display(),
            pipeline.phases.len()
        );
        for p in &pipeline.phases {
            let gate = p
                .gate
                .as_ref()
                .map(|g| g.plugin.spec.as_str())
                .unwrap_or(phasegate::runner::BUILTIN_GATE);
            let mode = if p.parallel {
                format!("parallel ×{}", p.concurrency)
            } else {
                "sequential".into()
            };
            println!(
                "  phase {}: {} task(s), {mode}, gate {gate}",
                p.id,
                p.tasks.len()
            );
        }
        println!("plugins:");
        for r in pipeline.plugins() {
            let loaded = &plugins[r];
            let meta = runtime
                .block_on(host.metadata(loaded, Emitter::discard()))
                .map_err(|e| bad_input(format!("plugin `{}`: {e:#}", r.spec)))?;
            println!("  {} implements {}", r.spec, loaded.world);
            println!("    {} {}: {}", meta.name, meta.version, meta.description);
            println!("    {}", loaded.digest);
        }
        println!("ok");
        Ok(Exit::Success)
    }
}
