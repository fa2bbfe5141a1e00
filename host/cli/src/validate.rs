//! `phasegate validate`.

use std::path::PathBuf;

use clap::Args;
use phasegate_engine::LoadedPlugin;
use phasegate_engine::sandbox::surface;
use phasegate_model::pipeline::{BoundsChecks, Grants, Limits};

use super::locking::load_pipeline;
use super::locking::{LockArgs, check_configs, load_checked, metadata_of};
use super::{Exit, bad_input};

/// Check a pipeline without running it.
///
/// Parses the file, checks ids, templates and what they refer to, loads every component and
/// type-checks it against its world, says which world each implements, and reviews each task's
/// and gate's effective limits and grants against what its component imports. Tasks of a phase
/// that share a plugin and a sandbox (limits and grants) are listed on one line; each distinct
/// sandbox is printed once, at the end. In a project
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
        let metadata = metadata_of(&runtime, &host, &pipeline, &plugins);
        let schemas = check_configs(&pipeline, &metadata)?;
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
        for (r, meta) in &metadata {
            let loaded = &plugins[*r];
            let meta = meta
                .as_ref()
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
            if let Some(schema) = schemas.get(&r.spec) {
                println!("    config (checked against its schema): {}", schema.keys());
            }
        }
        let mut sandboxes = Sandboxes::default();
        let mut reviewed = std::collections::HashSet::new();
        let mut warnings = 0;
        let (mut cacheable, mut tasks) = (0, 0);
        let purity =
            phasegate_runner::key::Purity::of(&pipeline, &super::run::clock_free(&plugins));
        for (pi, p) in pipeline.phases.iter().enumerate() {
            let mode = if p.tasks.len() < 2 {
                String::new()
            } else if p.parallel {
                format!(", parallel ×{}", p.concurrency.min(p.tasks.len()))
            } else {
                ", sequential".into()
            };
            println!("phase {}: {} task(s){mode}", p.id, p.tasks.len());
            // Tasks that share a plugin, a sandbox and whether they are cached are one line, in
            // first-appearance order.
            let mut groups: Vec<Group<'_>> = Vec::new();
            let mut group_of = std::collections::HashMap::new();
            for (ti, t) in p.tasks.iter().enumerate() {
                let sandbox = sandboxes.number(&t.limits, &t.grants, Use::Task);
                let uncached = purity.uncacheable(&pipeline, pi, ti);
                tasks += 1;
                cacheable += usize::from(uncached.is_empty());
                let at = *group_of
                    .entry((t.plugin.spec.as_str(), sandbox, uncached.join("; ")))
                    .or_insert_with(|| {
                        groups.push(Group {
                            plugin: &plugins[&t.plugin],
                            grants: &t.grants,
                            sandbox,
                            uncached,
                            ids: Vec::new(),
                        });
                        groups.len() - 1
                    });
                groups[at].ids.push(&t.id);
            }
            for g in groups {
                let what = match g.ids.len() {
                    1 => format!("task {}", g.ids[0]),
                    _ => format!("tasks {}", listed(&g.ids)),
                };
                println!("  {what}: {}, sandbox {}", g.plugin.plugin.spec, g.sandbox);
                if g.uncached.is_empty() {
                    println!(
                        "    result cached (its sandbox lets it read nothing outside its key)"
                    );
                } else {
                    println!("    not cached: {}", g.uncached.join("; "));
                }
                warnings += review(&mut reviewed, g.plugin, g.grants);
            }
            for g in &p.gates {
                let plugin = &plugins[&g.plugin];
                let sandbox = sandboxes.number(&g.limits, &g.grants, Use::Gate);
                let policy = if p.has_policies() {
                    format!(" ({})", g.policy.name())
                } else {
                    String::new()
                };
                println!("  gate{policy}: {}, sandbox {sandbox}", plugin.plugin.spec);
                warnings += review(&mut reviewed, plugin, &g.grants);
            }
            if p.has_policies() {
                println!("  {}", policies(p));
            }
            if p.gates.is_empty() {
                println!(
                    "  gate: {} (every task must succeed)",
                    phasegate_runner::BUILTIN_GATE
                );
            }
        }
        sandboxes.print();
        println!(
            "result cache: {cacheable} of {tasks} task(s) cacheable, in {}",
            super::cache::of_pipeline(&pipeline).dir().display()
        );
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

/// How a phase's gates decide, in a line.
fn policies(phase: &phasegate_model::pipeline::Phase) -> String {
    use phasegate_model::pipeline::GatePolicy;
    let count = |policy| phase.gates.iter().filter(|g| g.policy == policy).count();
    let mut parts = Vec::new();
    match count(GatePolicy::Required) {
        0 => {}
        n => parts.push(format!("{n} required gate(s) must not fail")),
    }
    match count(GatePolicy::Quorum) {
        0 => {}
        n => parts.push(format!("{} of {n} quorum gates must pass", phase.quorum)),
    }
    match count(GatePolicy::Advisory) {
        0 => {}
        n => parts.push(format!("{n} advisory gate(s) only warn")),
    }
    format!("policies: {}", parts.join("; "))
}

/// Tasks of a phase shown as one line.
struct Group<'a> {
    plugin: &'a LoadedPlugin,
    grants: &'a Grants,
    sandbox: usize,
    /// Why they are not cached (empty: they are).
    uncached: Vec<String>,
    ids: Vec<&'a str>,
}

/// Ids in a line: the first few, then how many more.
fn listed(ids: &[&str]) -> String {
    const SHOWN: usize = 8;
    match ids.len().checked_sub(SHOWN) {
        Some(more) if more > 0 => format!("{}, … and {more} more", ids[..SHOWN].join(", ")),
        _ => ids.join(", "),
    }
}

#[derive(Clone, Copy)]
enum Use {
    Task,
    Gate,
}

/// The distinct sets of limits and grants, numbered in first-appearance order, with how many
/// tasks and gates use each.
#[derive(Default)]
struct Sandboxes {
    numbers: std::collections::HashMap<String, usize>,
    /// Limits and grants as printed, tasks and gates using them.
    listed: Vec<(String, String, usize, usize)>,
}

impl Sandboxes {
    fn number(&mut self, limits: &Limits, grants: &Grants, used_by: Use) -> usize {
        let (limits, grants) = (limits.to_string(), grants.to_string());
        let key = format!("{limits}\n{grants}");
        let listed = &mut self.listed;
        let n = *self.numbers.entry(key).or_insert_with(|| {
            listed.push((limits, grants, 0, 0));
            listed.len()
        });
        match used_by {
            Use::Task => self.listed[n - 1].2 += 1,
            Use::Gate => self.listed[n - 1].3 += 1,
        }
        n
    }

    fn print(&self) {
        if self.listed.is_empty() {
            return;
        }
        println!("sandboxes (all a plugin may use; nothing else is granted):");
        for (i, (limits, grants, tasks, gates)) in self.listed.iter().enumerate() {
            println!("  sandbox {}: {tasks} task(s), {gates} gate(s)", i + 1);
            println!("    limits: {limits}");
            println!("    grants: {grants}");
        }
    }
}

/// What a plugin's imports say about the grants it is given, once per plugin and grants.
fn review<'a>(
    reviewed: &mut std::collections::HashSet<(&'a str, String)>,
    plugin: &'a LoadedPlugin,
    grants: &Grants,
) -> usize {
    if !reviewed.insert((plugin.plugin.spec.as_str(), grants.to_string())) {
        return 0;
    }
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
