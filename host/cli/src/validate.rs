//! `phasegate validate`.

use std::path::PathBuf;

use clap::Args;
use phasegate_engine::LoadedPlugin;
use phasegate_engine::sandbox::surface;
use phasegate_model::events::Emitter;
use phasegate_model::pipeline::{BoundsChecks, Grants, Limits};

use super::locking::load_pipeline;
use super::locking::{LockArgs, load_checked};
use super::{Exit, bad_input};

/// Check a pipeline without running it.
///
/// Parses the file, checks ids, templates and what they refer to, loads every component and
/// type-checks it against its world, says which world each implements, and reviews each task's
/// and gate's effective limits and grants against what its component imports. In a project
/// (a folder with phasegate.lock) it records the reviewed plugin uses in the lock, which is what
/// `run --locked` later holds the pipeline to; with --locked it only compares.
#[derive(Args)]
pub struct ValidateArgs {
    /// The pipeline file (TOML).
    pipeline: PathBuf,
    #[command(flatten)]
    lock: LockArgs,
}

impl ValidateArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let pipeline = load_pipeline(&self.pipeline)?;
        let runtime = super::runtime()?;
        let (host, plugins) = load_checked(&pipeline, self.lock)?;
        let tasks: usize = pipeline.phases.iter().map(|p| p.tasks.len()).sum();
        println!(
            "pipeline `{}` ({}): {} phase(s), {tasks} task(s); engine: max-stack {}, fuel metering {}, bounds checks {}",
            pipeline.name,
            pipeline.path.display(),
            pipeline.phases.len(),
            pipeline.engine.max_stack,
            if pipeline.engine.fuel { "on" } else { "off" },
            pipeline.engine.bounds_checks.name()
        );
        if pipeline.engine.bounds_checks == BoundsChecks::Explicit {
            println!(
                "warning: `[engine] bounds-checks = \"explicit\"`: wasmtime's Spectre mitigations are off for every plugin of this pipeline; use it only with plugins you trust"
            );
        }
        println!("{}", host.cache_status);
        println!("plugins:");
        for r in pipeline.plugins() {
            let loaded = &plugins[r];
            let meta = runtime
                .block_on(host.metadata(loaded, Emitter::discard()))
                .map_err(|e| bad_input(format!("plugin `{}`: {e:#}", r.spec)))?;
            println!("  {} implements {}", r.spec, loaded.world);
            println!("    {} {}: {}", meta.name, meta.version, meta.description);
            let source = match loaded.source {
                phasegate_engine::compile_cache::Source::Compiled => "compiled",
                phasegate_engine::compile_cache::Source::Cached => "loaded from the compile cache",
            };
            println!("    {} ({} bytes, {source})", loaded.digest, loaded.size);
            println!(
                "    capability surface: {}",
                surface::summary(&loaded.imports)
            );
        }
        let mut warnings = 0;
        for p in &pipeline.phases {
            let mode = if p.tasks.len() < 2 {
                String::new()
            } else if p.parallel {
                format!(", parallel ×{}", p.concurrency.min(p.tasks.len()))
            } else {
                ", sequential".into()
            };
            println!("phase {}: {} task(s){mode}", p.id, p.tasks.len());
            for t in &p.tasks {
                warnings += review(
                    &format!("task {}", t.id),
                    &plugins[&t.plugin],
                    &t.limits,
                    &t.grants,
                );
            }
            match &p.gate {
                Some(g) => warnings += review("gate", &plugins[&g.plugin], &g.limits, &g.grants),
                None => println!(
                    "  gate: {} (every task must succeed)",
                    phasegate_runner::BUILTIN_GATE
                ),
            }
        }
        println!(
            "ok{}",
            if warnings > 0 {
                format!(" ({warnings} warning(s))")
            } else {
                String::new()
            }
        );
        Ok(Exit::Success)
    }
}

/// Prints one plugin use's limits and grants, and what its imports say about them.
fn review(what: &str, plugin: &LoadedPlugin, limits: &Limits, grants: &Grants) -> usize {
    println!("  {what}: {} ({})", plugin.plugin.spec, plugin.world);
    println!("    limits: {limits}");
    println!("    grants: {grants}");
    let r = surface::review(&plugin.imports, grants);
    for cap in &r.unused {
        println!(
            "    warning: `{}` is granted but the component does not import any {} interface; the grant is unused",
            cap.grant_key(),
            cap.name()
        );
    }
    for (cap, imports) in &r.ungranted {
        println!(
            "    not granted: {} ({}): the plugin sees none and its calls are refused (allow with `{}`)",
            cap.name(),
            imports.join(", "),
            cap.grant_key()
        );
    }
    r.unused.len()
}
