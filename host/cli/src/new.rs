//! `phasegate new`: a plugin project from a template.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use phasegate_author::{Kind, Language, templates};
use phasegate_model::error::Problem;

use super::{Exit, bad_input};

/// Start a plugin project: source, helper layer, contract, `plugin.toml`, one passing fixture.
///
/// The project builds as written with `phasegate build` and passes `phasegate test`.
#[derive(Args)]
pub struct NewArgs {
    /// Task or gate.
    kind: KindArg,
    /// The plugin's name (lowercase letters, digits and `-`); also the folder's default name.
    name: String,
    /// The language.
    #[arg(long, value_enum)]
    lang: LangArg,
    /// Where to create the project (default: ./NAME). Must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Task,
    Gate,
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    Rust,
    Python,
    Js,
    C,
}

impl NewArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        if !templates::valid_name(&self.name) {
            return Err(bad_input(Problem::new(format!("`{}` cannot name a plugin", self.name))
                .help("use lowercase letters, digits and `-`, starting with a letter (e.g. `word-count`)")));
        }
        let kind = match self.kind {
            KindArg::Task => Kind::Task,
            KindArg::Gate => Kind::Gate,
        };
        let language = match self.lang {
            LangArg::Rust => Language::Rust,
            LangArg::Python => Language::Python,
            LangArg::Js => Language::Js,
            LangArg::C => Language::C,
        };
        let dir = self.dir.unwrap_or_else(|| PathBuf::from(&self.name));
        if dir.exists()
            && std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(bad_input(
                Problem::new(format!(
                    "{} already exists and is not empty; nothing was written",
                    dir.display()
                ))
                .help("choose another name or pass `--dir`"),
            ));
        }
        let files = templates::project(&self.name, kind, language);
        for file in &files {
            let path = dir.join(&file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| bad_input(format!("cannot create {}: {e}", parent.display())))?;
            }
            std::fs::write(&path, &file.contents)
                .map_err(|e| bad_input(format!("cannot write {}: {e}", path.display())))?;
        }
        println!(
            "created {kind} plugin `{}` ({language}) in {}: {} files",
            self.name,
            dir.display(),
            files.len()
        );
        println!(
            "next: cd {} && phasegate build && phasegate test",
            dir.display()
        );
        Ok(Exit::Success)
    }
}
