//! `--locked` and `--require-signed` for `run`, `resume` and `validate`: the checks between
//! loading a pipeline and running its plugins.

use std::path::Path;
use std::sync::Arc;

use clap::Args;
use phasegate_engine::compile_cache::CompileCache;
use phasegate_engine::install;
use phasegate_engine::{LoadedPlugins, Metadata, PluginHost};
use phasegate_model::error::Problem;
use phasegate_model::pipeline::{Pipeline, PluginRef};
use phasegate_store::Project;
use phasegate_store::lock::LockedPipeline;

use super::bad_input;

/// How strictly plugins are checked before a run.
#[derive(Args, Clone, Copy, Debug, Default)]
pub struct LockArgs {
    /// Refuse to start unless phasegate.lock already records this pipeline exactly as it is:
    /// the same plugin digests, no wider capability surface, no wider grant.
    #[arg(long)]
    pub locked: bool,
    /// Refuse any plugin that is not signed by a key the trust policy (phasegate-trust.toml)
    /// trusts for it.
    #[arg(long)]
    pub require_signed: bool,
}

/// Checks the store and signatures, loads the plugins, then checks (`--locked`) or records the
/// pipeline's plugin uses in the project's lock. Nothing runs before all of it passed.
pub fn load_checked(
    pipeline: &Pipeline,
    args: LockArgs,
) -> anyhow::Result<(Arc<PluginHost>, LoadedPlugins)> {
    let problems = install::check_store(pipeline, args.require_signed)
        .map_err(|e| bad_input(format!("{e:#}")))?;
    if !problems.is_empty() {
        return Err(bad_input(format!(
            "{}: refusing to run these plugins:\n{}",
            pipeline.path.display(),
            problems
                .iter()
                .map(|p| format!("  - {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )));
    }
    if args.locked && pipeline.project.is_none() {
        return Err(bad_input(
            Problem::new(format!(
                "{}: --locked, but there is no {} in its folder or above, so nothing is locked",
                pipeline.path.display(),
                phasegate_store::LOCK_FILE
            ))
            .help(format!(
                "create one with `phasegate lock {}`, review it and commit it",
                pipeline.path.display()
            )),
        ));
    }
    let host = PluginHost::with_cache(
        pipeline.engine,
        CompileCache::root_for(Project::of(pipeline).as_ref()),
    )?;
    let plugins = load_plugins(&host, pipeline)?;
    if let Some(project) = Project::of(pipeline) {
        record_or_refuse(pipeline, &project, &plugins, args.locked)?;
    }
    Ok((host, plugins))
}

/// `--locked`: refuses when the lock's record of the pipeline differs from the pipeline now.
/// Otherwise records the pipeline's uses in the lock when they changed, saying what changed.
pub fn record_or_refuse(
    pipeline: &Pipeline,
    project: &Project,
    plugins: &LoadedPlugins,
    locked: bool,
) -> anyhow::Result<()> {
    let lock_path = project.lock_path();
    let lock = project.lock().map_err(|e| bad_input(format!("{e:#}")))?;
    let review = install::review_uses(pipeline, project, &lock, plugins);
    if locked {
        if !review.recorded {
            let path = pipeline.path.display();
            return Err(bad_input(
                Problem::new(format!(
                    "{path}: --locked, but {} has no record of this pipeline",
                    lock_path.display()
                ))
                .help(format!(
                    "review it with `phasegate validate {path}` (which records it in the lock), commit the lock, then use --locked"
                )),
            ));
        }
        if !review.changes.is_empty() {
            let path = pipeline.path.display();
            let changes: Vec<String> = review
                .changes
                .iter()
                .map(|c| {
                    format!(
                        "  - {}{c}",
                        if c.widens { "[wider] " } else { "[changed] " }
                    )
                })
                .collect();
            return Err(bad_input(
                Problem::new(format!(
                    "{path}: --locked, but the pipeline's plugins differ from what {} recorded:\n{}",
                    lock_path.display(),
                    changes.join("\n")
                ))
                .help(format!(
                    "review the changes (`phasegate plugin inspect NAME`), then accept them with `phasegate validate {path}`, which records them in the lock"
                )),
            ));
        }
        return Ok(());
    }
    if review.recorded && review.changes.is_empty() {
        return Ok(());
    }
    // A change to record: read the lock again, held against other editors until it is saved
    // (what another command saved meanwhile is kept, and reviewed against).
    let (_editing, mut lock) = super::edit_lock(project)?;
    let review = install::review_uses(pipeline, project, &lock, plugins);
    if review.recorded && review.changes.is_empty() {
        return Ok(());
    }
    for c in &review.changes {
        eprintln!(
            "{}: {} {c}",
            lock_path.display(),
            if c.widens {
                "warning: wider:"
            } else {
                "changed:"
            }
        );
    }
    let uses = review.now.len();
    lock.upsert_pipeline(LockedPipeline {
        file: review.file.clone(),
        bounds_checks: pipeline.engine.bounds_checks,
        uses: review.now,
    });
    lock.save(&lock_path)
        .map_err(|e| bad_input(format!("{e:#}")))?;
    eprintln!(
        "{}: recorded {uses} plugin use(s) of {}",
        lock_path.display(),
        review.file
    );
    Ok(())
}

/// Loads a pipeline, turning its errors into exit-2 errors.
pub fn load_pipeline(path: &Path) -> anyhow::Result<Pipeline> {
    phasegate_runner::load::load(path).map_err(|errors| bad_input(errors.to_string()))
}

/// Loads and type-checks every plugin of a pipeline, and checks each is used in its role.
pub fn load_plugins(host: &PluginHost, pipeline: &Pipeline) -> anyhow::Result<LoadedPlugins> {
    let loaded = phasegate_engine::load_all(host, &pipeline.plugins()).map_err(|errors| {
        bad_input(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let problems = phasegate_engine::check_roles(pipeline, &loaded);
    if !problems.is_empty() {
        return Err(bad_input(problems.join("\n")));
    }
    Ok(loaded)
}

/// The config schemas the pipeline's plugins publish, by plugin reference as written.
pub type Schemas = std::collections::HashMap<String, phasegate_runner::config_check::ConfigSchema>;

/// Each distinct plugin of the pipeline with what its `metadata` call returned, in first-use
/// order (one instantiation each: callers share it rather than call again).
pub fn metadata_of<'p>(
    runtime: &tokio::runtime::Runtime,
    host: &PluginHost,
    pipeline: &'p Pipeline,
    plugins: &LoadedPlugins,
) -> Vec<(&'p PluginRef, anyhow::Result<Metadata>)> {
    pipeline
        .plugins()
        .into_iter()
        .map(|r| {
            let meta = runtime
                .block_on(host.metadata(&plugins[r], phasegate_model::events::Emitter::discard()));
            (r, meta)
        })
        .collect()
}

/// Checks every task's and gate's `config` against the JSON Schema its plugin publishes, and
/// refuses the pipeline, naming each place, when one does not match. A plugin whose published
/// schema is broken is said so on stderr and not checked (its author has to mend it); one whose
/// `metadata` cannot be read (it traps or hits a limit as it starts) is not checked either: its
/// tasks fail at run time, each with that failure classified, as they would have without the
/// check.
pub fn check_configs(
    pipeline: &Pipeline,
    metadata: &[(&PluginRef, anyhow::Result<Metadata>)],
) -> anyhow::Result<Schemas> {
    use phasegate_runner::config_check::{ConfigSchema, check};
    let mut schemas = Schemas::new();
    for (r, meta) in metadata {
        let Some(text) = meta.as_ref().ok().and_then(|m| m.config_schema.as_deref()) else {
            continue;
        };
        match ConfigSchema::compile(text) {
            Ok(schema) => {
                schemas.insert(r.spec.clone(), schema);
            }
            Err(why) => eprintln!(
                "warning: plugin `{}`: {why}; its `config` tables are not checked (the plugin's author can fix its schema)",
                r.spec
            ),
        }
    }
    let problems = check(pipeline, |p| schemas.get(&p.spec));
    if problems.is_empty() {
        return Ok(schemas);
    }
    Err(bad_input(
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    ))
}
