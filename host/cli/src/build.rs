//! `phasegate build`: run a plugin project's build command and check what it produced.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Args;
use phasegate_author::project::Project;
use phasegate_author::{Kind, Language, WIT, codegen, toolchain};
use phasegate_engine::sandbox::surface;
use phasegate_engine::{PluginHost, World};
use phasegate_model::events::Emitter;
use phasegate_model::pipeline::{EngineLimits, PluginRef};

use super::{Exit, bad_input};

/// Build a plugin project (`plugin.toml`) and check that the result implements its world.
///
/// Checks the language's toolchain first (and says what to install), refreshes `wit/` (and
/// C bindings), runs `[build] command`, turns a core module into a component, then loads the
/// component, type-checks it against the declared world and calls its `metadata`.
#[derive(Args)]
pub struct BuildArgs {
    /// The project folder (or its plugin.toml). Default: the current folder.
    #[arg(default_value = ".")]
    project: PathBuf,
}

impl BuildArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let project = Project::load(&self.project).map_err(bad_input)?;
        build(&project)?;
        Ok(Exit::Success)
    }
}

/// Builds `project` and returns the component's path.
pub fn build(project: &Project) -> anyhow::Result<PathBuf> {
    let name = &project.plugin.name;
    let language = project.plugin.language;
    let tools = toolchain::detect(language, &project.dir).map_err(|message| {
        bad_input(format!(
            "cannot build `{name}` ({language}): {message}\n  (nothing was built; {} is unchanged)",
            project.dir.display()
        ))
    })?;
    eprintln!("build {name} ({language}) with {}", tools.description);
    refresh(&project.dir, "wit/plugin.wit", WIT.as_bytes())?;
    if language == Language::C {
        for (file, bytes) in codegen::c_bindings(project.plugin.kind)? {
            refresh(&project.dir, &format!("bindings/{file}"), &bytes)?;
        }
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(&project.build.command)
        .current_dir(&project.dir)
        .envs(tools.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| bad_input(format!("cannot start `sh` to run the build command: {e}")))?;
    if !status.success() {
        return Err(bad_input(format!(
            "the build command of `{name}` failed ({status}): {}\n  help: its output is above; the command is `[build] command` in {}",
            project.build.command,
            project.dir.join("plugin.toml").display()
        )));
    }
    let output = project.output();
    let bytes = std::fs::read(&output).map_err(|e| {
        bad_input(format!(
            "the build command succeeded but {} cannot be read: {e}\n  help: `[build] output` must name the file the command writes",
            output.display()
        ))
    })?;
    if codegen::is_core_module(&bytes) {
        let component = codegen::componentize(&bytes).map_err(|e| {
            bad_input(format!(
                "{} is a core module that cannot be made a component: {e:#}",
                output.display()
            ))
        })?;
        write_atomic(&output, &component)?;
        eprintln!(
            "  made a component of the core module ({} -> {} bytes)",
            bytes.len(),
            component.len()
        );
    }
    check(project, &output)?;
    Ok(output)
}

/// Loads the component, checks its world and metadata, and prints a summary.
fn check(project: &Project, output: &Path) -> anyhow::Result<()> {
    let host = PluginHost::new(EngineLimits::SINGLE)?;
    let plugin = PluginRef::file(output);
    let loaded = host.load(&plugin).map_err(|e| bad_input(e.to_string()))?;
    let expected = match project.plugin.kind {
        Kind::Task => World::Task,
        Kind::Gate => World::Gate,
    };
    if loaded.world != expected {
        return Err(bad_input(format!(
            "{} implements {}, but plugin.toml says `kind = \"{}\"`\n  help: fix `kind` or the source",
            output.display(),
            loaded.world,
            project.plugin.kind
        )));
    }
    let runtime = super::runtime()?;
    let meta = runtime
        .block_on(host.metadata(&loaded, Emitter::discard()))
        .map_err(|e| bad_input(format!("{}: {e:#}", output.display())))?;
    println!(
        "built {} {} ({}, {}): {}",
        meta.name,
        meta.version,
        project.plugin.kind,
        project.plugin.language,
        output.display()
    );
    println!(
        "  implements {}; {} bytes; {}; capability surface: {}",
        loaded.world,
        loaded.size,
        loaded.digest,
        surface::summary(&loaded.imports)
    );
    if meta.name != project.plugin.name {
        eprintln!(
            "warning: the component calls itself `{}`, plugin.toml says `{}`",
            meta.name, project.plugin.name
        );
    }
    Ok(())
}

/// Writes `dir/rel` when its contents differ (generated files: the contract, C bindings).
fn refresh(dir: &Path, rel: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let path = dir.join(rel);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| bad_input(format!("cannot create {}: {e}", parent.display())))?;
    }
    write_atomic(&path, bytes)?;
    eprintln!("  wrote {rel}");
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    phasegate_store::write_atomically(path, bytes)
        .map_err(|e| bad_input(format!("cannot write {}: {e}", path.display())))
}
