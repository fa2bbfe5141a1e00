//! `dirs`: host directories the plugin sees, read-only or read-write.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use toml::Spanned;

use super::{Capability, Check, Grants, RawGrants, ShowPath};

/// How a directory is granted.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum DirMode {
    /// Read only (the default).
    #[default]
    Ro,
    /// Read and write.
    Rw,
}

impl DirMode {
    /// The name as written.
    pub fn name(self) -> &'static str {
        match self {
            DirMode::Ro => "ro",
            DirMode::Rw => "rw",
        }
    }
}

/// A host directory visible to the plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirGrant {
    /// Host path (relative paths are relative to the pipeline file).
    pub host: PathBuf,
    /// Path the plugin sees (absolute).
    pub guest: String,
    /// Read-only or read-write.
    pub mode: DirMode,
}

/// One `dirs` entry as written.
#[derive(Deserialize, Clone, Debug, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDir {
    /// The host directory, relative to the pipeline file.
    #[schemars(with = "String")]
    host: Spanned<String>,
    /// Where the plugin sees it: an absolute path without `..`, e.g. `/data`.
    #[schemars(with = "String", regex(pattern = r"^/"))]
    guest: Spanned<String>,
    #[serde(default)]
    mode: DirMode,
}

pub(super) const CAPABILITY: Capability = Capability {
    check,
    describe,
    lock_lines,
    table,
};

fn check(raw: &RawGrants, dir: &Path, c: &mut dyn Check, grants: &mut Grants) {
    for d in &raw.dirs {
        let host = dir.join(d.host.get_ref());
        if !c.is_dir(&host) {
            c.problem(
                d.host.span(),
                format!(
                    "granted directory `{}` does not exist (looked for {})",
                    d.host.get_ref(),
                    host.display()
                ),
                "create it or correct the path; relative paths are relative to the pipeline file"
                    .into(),
            );
        }
        let guest = d.guest.get_ref();
        if !guest.starts_with('/') || guest.split('/').any(|c| c == "..") {
            c.problem(
                d.guest.span(),
                format!("guest path `{guest}` must be absolute and must not contain `..`"),
                "write where the plugin sees the directory, e.g. `guest = \"/data\"`".into(),
            );
        }
        grants.dirs.push(DirGrant {
            host,
            guest: guest.clone(),
            mode: d.mode,
        });
    }
}

fn describe(grants: &Grants, out: &mut Vec<String>) {
    for d in &grants.dirs {
        out.push(format!(
            "dir {} -> {} ({})",
            d.host.display(),
            d.guest,
            d.mode.name()
        ));
    }
}

fn lock_lines(grants: &Grants, path: ShowPath<'_>, out: &mut Vec<String>) {
    for d in &grants.dirs {
        out.push(format!(
            "dir {} -> {} ({})",
            path(&d.host),
            d.guest,
            d.mode.name()
        ));
    }
}

fn table(grants: &Grants, out: &mut Map<String, Value>) {
    out.insert(
        "dirs".into(),
        grants
            .dirs
            .iter()
            .map(|d| {
                json!({
                    "host": d.host.display().to_string(),
                    "guest": d.guest,
                    "mode": d.mode,
                })
            })
            .collect(),
    );
}
