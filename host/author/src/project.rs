//! `plugin.toml`: a plugin project's name, kind, language, build command and fixtures — what
//! `phasegate build` and `phasegate test` read (as `spin.toml`'s `[component.build]` does).
//!
//! ```toml
//! [plugin]
//! name = "shout"
//! kind = "task"               # task | gate
//! language = "python"         # rust | python | js | c
//!
//! [build]
//! command = "componentize-py -d wit -w task componentize app -o build/shout.wasm"
//! output = "build/shout.wasm" # relative to this file
//!
//! [test]
//! fixtures = "fixtures"       # default
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use phasegate_model::error::{Problem, toml_problem};

use super::{Kind, Language};

/// The name of a project file.
pub const FILE: &str = "plugin.toml";

/// A parsed `plugin.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Project {
    /// What the plugin is.
    pub plugin: PluginSection,
    /// How to build it.
    pub build: BuildSection,
    /// How to test it.
    #[serde(default)]
    pub test: TestSection,
    /// The folder `plugin.toml` is in (set after parsing).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// `[plugin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginSection {
    /// The plugin's name (also what its `metadata` reports).
    pub name: String,
    /// Task or gate: the world the build output must implement.
    pub kind: Kind,
    /// The language, which decides the toolchain check and generated bindings.
    pub language: Language,
}

/// `[build]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BuildSection {
    /// A shell command (`sh -c`), run in the project folder.
    pub command: String,
    /// The file the command writes, relative to the project folder. A core module is turned into
    /// a component by `phasegate build`.
    pub output: PathBuf,
}

/// `[test]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TestSection {
    /// The fixtures folder, relative to the project folder. Default `fixtures`.
    #[serde(default = "default_fixtures")]
    pub fixtures: PathBuf,
}

impl Default for TestSection {
    fn default() -> Self {
        TestSection {
            fixtures: default_fixtures(),
        }
    }
}

fn default_fixtures() -> PathBuf {
    PathBuf::from("fixtures")
}

impl Project {
    /// Reads `DIR/plugin.toml` (or the file itself when `path` is one).
    pub fn load(path: &Path) -> Result<Project, Problem> {
        let file = if path.is_dir() {
            path.join(FILE)
        } else {
            path.to_owned()
        };
        let source = std::fs::read_to_string(&file).map_err(|e| {
            Problem::new(format!("cannot read {}: {e}", file.display()))
                .help("run this in a plugin project (made by `phasegate new`), or pass its folder")
        })?;
        let mut project: Project = toml::from_str(&source).map_err(|e| {
            toml_problem(&file, &source, &e, "`[plugin]` needs name, kind (task|gate), language (rust|python|js|c); `[build]` needs command and output")
        })?;
        project.dir = file
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(project)
    }

    /// Where the build writes the component.
    pub fn output(&self) -> PathBuf {
        self.dir.join(&self.build.output)
    }

    /// The fixtures folder.
    pub fn fixtures(&self) -> PathBuf {
        self.dir.join(&self.test.fixtures)
    }
}
