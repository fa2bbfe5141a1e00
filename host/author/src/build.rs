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
/// `note` receives what phasegate does around it. Unless `rebuild`, an output built from the
/// same sources, command and toolchain is kept as it is ([`stamp`](crate::stamp)).
pub async fn build(
    project: &Project,
    rebuild: bool,
    note: &mut dyn FnMut(String),
) -> anyhow::Result<Built> {
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
    let inputs = crate::stamp::inputs(project, &tools.description).ok();
    if !rebuild
        && let Some(inputs) = &inputs
        && crate::stamp::up_to_date(project, inputs)
    {
        note(format!(
            "{name} is up to date: same sources, command and toolchain as the build of {} (`phasegate build --rebuild` builds anyway)",
            project.output().display()
        ));
        return check(project, project.output()).await;
    }
    let built = run_build(project, &tools, note).await?;
    if let Some(inputs) = &inputs {
        crate::stamp::record(project, inputs);
    }
    Ok(built)
}

/// Runs the build command and makes a component of what it wrote.
async fn run_build(
    project: &Project,
    tools: &toolchain::Toolchain,
    note: &mut dyn FnMut(String),
) -> anyhow::Result<Built> {
    let name = &project.plugin.name;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&project.build.command)
        .current_dir(&project.dir)
        .envs(tools.env.iter().map(|(k, v)| (k, v)));
    let (status, said) = run_shown(command)
        .map_err(|e| Problem::new(format!("cannot start `sh` to run the build command: {e}")))?;
    if !status.success() {
        let mut help = format!(
            "its output is above; the command is `[build] command` in {}",
            project.dir.join("plugin.toml").display()
        );
        if let Some(cause) = known_cause(&said) {
            help = format!("{cause}\n  {help}");
        }
        return Err(Problem::new(format!(
            "the build command of `{name}` failed ({status}): {}",
            project.build.command
        ))
        .help(help)
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

/// Loads the component and checks its world and metadata. Loading compiles it into the compile
/// cache the runs will read — the cache of the phasegate project the plugin project sits in, if
/// any, else the user's — so the first run of a pipeline using it is warm (for the engine most
/// pipelines use: one with fuel metering or explicit bounds checks compiles its own).
async fn check(project: &Project, output: PathBuf) -> anyhow::Result<Built> {
    let cache = phasegate_engine::compile_cache::CompileCache::root_for(
        phasegate_store::Project::find(&project.dir).as_ref(),
    );
    let host = PluginHost::with_cache(EngineLimits::SINGLE, cache)?;
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

/// How much of the build command's output is kept for [`known_cause`] (its end).
const OUTPUT_KEPT: usize = 64 << 10;

/// Runs `command` with its stdout and stderr passed through to this process's stderr, keeping
/// the end of what it printed.
fn run_shown(mut command: Command) -> std::io::Result<(std::process::ExitStatus, String)> {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let copies: Vec<_> = pipes
        .into_iter()
        .flatten()
        .map(|mut pipe| {
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    let _ = std::io::stderr().write_all(&chunk[..n]);
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    kept.extend_from_slice(&chunk[..n]);
                    let over = kept.len().saturating_sub(OUTPUT_KEPT);
                    kept.drain(..over);
                }
            })
        })
        .collect();
    let status = child.wait()?;
    for copy in copies {
        let _ = copy.join();
    }
    let kept = kept.lock().unwrap_or_else(|e| e.into_inner());
    Ok((status, String::from_utf8_lossy(&kept).into_owned()))
}

/// A hint for a build failure whose output shows a cause seen before.
fn known_cause(output: &str) -> Option<String> {
    let causes: [(&[&str], &str); 4] = [
        (
            &["has no attribute 'WitWorld'"],
            "componentize-py looks for a class named `WitWorld` in the app module: keep `from phasegate_plugin import WitWorld` in app.py (the SDK defines it; the import only looks unused)",
        ),
        (
            &["can't find crate for `core`", "wasm32-wasip2"],
            "the Rust target is missing: run `rustup target add wasm32-wasip2` (or `scripts/setup-guest-toolchain`)",
        ),
        (
            &["phasegate.h", "file not found"],
            "phasegate.h belongs next to plugin.c (`phasegate new` writes it): copy it from another project or from sdk/c/",
        ),
        (
            &["Cannot find module", "phasegate-plugin.js"],
            "phasegate-plugin.js belongs next to app.js (`phasegate new` writes it): copy it from another project or from sdk/js/",
        ),
    ];
    causes
        .iter()
        .find(|(needles, _)| needles.iter().all(|n| output.contains(n)))
        .map(|(_, hint)| (*hint).to_owned())
}

#[cfg(test)]
mod hint_tests {
    use super::known_cause;

    #[test]
    fn known_build_failures_get_a_hint_and_others_none() {
        let python = "AssertionError: AttributeError: module 'app' has no attribute 'WitWorld'";
        assert!(
            known_cause(python)
                .unwrap()
                .contains("from phasegate_plugin import WitWorld")
        );
        let rust = "error[E0463]: can't find crate for `core`\n  = note: the `wasm32-wasip2` target may not be installed";
        assert!(
            known_cause(rust)
                .unwrap()
                .contains("rustup target add wasm32-wasip2")
        );
        assert_eq!(known_cause("error: expected `;`"), None);
    }
}
