//! Building a plugin project: check the toolchain, refresh the contract (and C bindings), run
//! `[build] command`, turn a core module into a component, then load the result, type-check it
//! against the declared world and call its `metadata`. Progress goes to a `note` callback; the
//! CLI prints it.

use std::path::{Path, PathBuf};
use std::process::Command;

use phasegate_engine::{Metadata, PluginHost, World};
use phasegate_model::error::Problem;
use phasegate_model::events::Emitter;
use phasegate_model::pipeline::{EngineLimits, PluginRef};

use crate::project::Project;
use crate::{Kind, Language, WIT, codegen, toolchain};

/// A built and checked component.
pub struct Built {
    /// The component file.
    pub output: PathBuf,
    /// What it says about itself.
    pub metadata: Metadata,
    /// The world it implements.
    pub world: World,
    /// Its size in bytes.
    pub size: u64,
    /// `sha256:` of its bytes.
    pub digest: String,
    /// What it imports.
    pub imports: Vec<String>,
}

/// Builds `project` and checks the component. The build command's own output goes to stderr;
/// `note` receives what phasegate does around it.
pub async fn build(project: &Project, note: &mut dyn FnMut(String)) -> anyhow::Result<Built> {
    let name = &project.plugin.name;
    let language = project.plugin.language;
    let tools = toolchain::detect(language, &project.dir).map_err(|message| {
        Problem::new(format!(
            "cannot build `{name}` ({language}): {message}\n  (nothing was built; {} is unchanged)",
            project.dir.display()
        ))
    })?;
    note(format!(
        "build {name} ({language}) with {}",
        tools.description
    ));
    refresh(&project.dir, "wit/plugin.wit", WIT.as_bytes(), note)?;
    if language == Language::C {
        for (file, bytes) in codegen::c_bindings(project.plugin.kind)? {
            refresh(&project.dir, &format!("bindings/{file}"), &bytes, note)?;
        }
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(&project.build.command)
        .current_dir(&project.dir)
        .envs(tools.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| Problem::new(format!("cannot start `sh` to run the build command: {e}")))?;
    if !status.success() {
        return Err(Problem::new(format!(
            "the build command of `{name}` failed ({status}): {}",
            project.build.command
        ))
        .help(format!(
            "its output is above; the command is `[build] command` in {}",
            project.dir.join("plugin.toml").display()
        ))
        .into());
    }
    let output = project.output();
    let bytes = std::fs::read(&output).map_err(|e| {
        Problem::new(format!(
            "the build command succeeded but {} cannot be read: {e}",
            output.display()
        ))
        .help("`[build] output` must name the file the command writes")
    })?;
    if codegen::is_core_module(&bytes) {
        let component = codegen::componentize(&bytes).map_err(|e| {
            Problem::new(format!(
                "{} is a core module that cannot be made a component: {e:#}",
                output.display()
            ))
        })?;
        write_atomic(&output, &component)?;
        note(format!(
            "  made a component of the core module ({} -> {} bytes)",
            bytes.len(),
            component.len()
        ));
    }
    check(project, output).await
}

/// Loads the component and checks its world and metadata.
async fn check(project: &Project, output: PathBuf) -> anyhow::Result<Built> {
    let host = PluginHost::new(EngineLimits::SINGLE)?;
    let plugin = PluginRef::file(&output);
    let loaded = host
        .load(&plugin)
        .map_err(|e| Problem::new(e.to_string()))?;
    let expected = match project.plugin.kind {
        Kind::Task => World::Task,
        Kind::Gate => World::Gate,
    };
    if loaded.world != expected {
        return Err(Problem::new(format!(
            "{} implements {}, but plugin.toml says `kind = \"{}\"`",
            output.display(),
            loaded.world,
            project.plugin.kind
        ))
        .help("fix `kind` or the source")
        .into());
    }
    let metadata = host
        .metadata(&loaded, Emitter::discard())
        .await
        .map_err(|e| Problem::new(format!("{}: {e:#}", output.display())))?;
    Ok(Built {
        metadata,
        world: loaded.world,
        size: loaded.size,
        digest: loaded.digest.clone(),
        imports: loaded.imports.clone(),
        output,
    })
}

/// Writes `dir/rel` when its contents differ (generated files: the contract, C bindings).
fn refresh(
    dir: &Path,
    rel: &str,
    bytes: &[u8],
    note: &mut dyn FnMut(String),
) -> anyhow::Result<()> {
    let path = dir.join(rel);
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Problem::new(format!("cannot create {}: {e}", parent.display())))?;
    }
    write_atomic(&path, bytes)?;
    note(format!("  wrote {rel}"));
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    phasegate_store::write_atomically(path, bytes)
        .map_err(|e| Problem::new(format!("cannot write {}: {e}", path.display())).into())
}
