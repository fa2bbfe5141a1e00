//! `phasegate build`: run a plugin project's build command and check what it produced.

use std::path::PathBuf;

use clap::Args;
use phasegate_author::project::Project;
use phasegate_engine::sandbox::surface;

use super::{Exit, bad_input};

/// Build a plugin project (`plugin.toml`) and check that the result implements its world.
///
/// Checks the language's toolchain first (and says what to install), refreshes `wit/` (and
/// C bindings), runs `[build] command`, turns a core module into a component, then loads the
/// component, type-checks it against the declared world and calls its `metadata`. When the
/// sources, the build command and the toolchain are those of the last build and its output is
/// untouched, the output is kept as it is (so its digest stays what a lock recorded).
#[derive(Args)]
pub struct BuildArgs {
    /// The project folder (or its plugin.toml). Default: the current folder.
    #[arg(default_value = ".")]
    project: PathBuf,
    /// Run the build command even when the output is up to date.
    #[arg(long)]
    rebuild: bool,
}

impl BuildArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let project = Project::load(&self.project).map_err(bad_input)?;
        build(&project, self.rebuild)?;
        Ok(Exit::Success)
    }
}

/// Builds `project` (printing what is done around its build command), prints what was built,
/// and returns the component's path.
pub fn build(project: &Project, rebuild: bool) -> anyhow::Result<PathBuf> {
    let runtime = super::runtime()?;
    let built = runtime.block_on(phasegate_author::build::build(
        project,
        rebuild,
        &mut |note| eprintln!("{note}"),
    ))?;
    println!(
        "built {} {} ({}, {}): {}",
        built.metadata.name,
        built.metadata.version,
        project.plugin.kind,
        project.plugin.language,
        built.output.display()
    );
    println!(
        "  implements {}; {} bytes; {}; capability surface: {}",
        built.world,
        built.size,
        built.digest,
        surface::summary(&built.imports)
    );
    if built.metadata.name != project.plugin.name {
        eprintln!(
            "warning: the component calls itself `{}`, plugin.toml says `{}`",
            built.metadata.name, project.plugin.name
        );
    }
    Ok(built.output)
}
