//! What a plugin may reach beyond its input: one file per capability, each owning its part of
//! the `grants` table (as written and as checked), its checks, and how it is described — in
//! `validate` and `plugin inspect` ([`Grants`]'s `Display`), in `phasegate.lock`
//! ([`Grants::lock_lines`]) and in fixtures recorded from a run ([`Grants::to_table`]).
//! Applying a grant to an instance is the engine's (`engine/src/sandbox/`, one file each).
//!
//! Adding a capability: its file here, its field in [`RawGrants`] and [`Grants`], its line in
//! [`CAPABILITIES`], and, when the engine must apply it, its file in the engine's sandbox.
//! (The fields stay in one table because serde cannot deny unknown keys across flattened
//! parts, and every misspelt grant must be an error.)

mod clocks;
mod context;
mod dirs;
mod env;
mod http;
mod net;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use toml::Spanned;

pub use dirs::{DirGrant, DirMode};

/// A `grants` table as written (a task, a gate, a fixture).
#[derive(Deserialize, Default, Clone, Debug, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawGrants {
    /// Host directories the plugin sees, each at a guest path, read-only unless `mode = "rw"`.
    #[serde(default)]
    dirs: Vec<dirs::RawDir>,
    /// Host environment variables passed through by name.
    #[serde(default)]
    #[schemars(with = "Vec<EnvName>")]
    env: Vec<Spanned<String>>,
    /// Environment variables set to fixed values.
    #[serde(default)]
    env_set: BTreeMap<String, String>,
    /// `host:port` the plugin may open TCP/UDP connections to.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    net: Vec<Spanned<String>>,
    /// Hosts (optionally `host:port`) the plugin may send HTTP requests to.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    http: Vec<Spanned<String>>,
    /// Fixed clocks and a seeded random source.
    #[serde(default)]
    deterministic: bool,
    /// The random seed with `deterministic`.
    seed: Option<u64>,
    /// The whole context (every earlier phase's results).
    #[serde(default)]
    context: bool,
}

/// An environment variable's name, for the schema: `validate` checks the same.
#[derive(schemars::JsonSchema)]
#[schemars(transparent)]
#[allow(dead_code, reason = "a schema type only")]
struct EnvName(#[schemars(regex(pattern = r"^[^=]+$"))] String);

/// Capabilities granted to one plugin. Everything is denied unless listed here.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Grants {
    /// Preopened directories.
    pub dirs: Vec<DirGrant>,
    /// Host environment variables passed through by name (absent ones are skipped).
    pub env: Vec<String>,
    /// Environment variables set to fixed values.
    pub env_set: BTreeMap<String, String>,
    /// `host:port` pairs the plugin may open TCP/UDP connections to.
    pub net: Vec<String>,
    /// Hosts (optionally `host:port`) the plugin may send HTTP requests to.
    pub http: Vec<String>,
    /// Fixed wall clock, counting monotonic clock and seeded random, for reproducible runs.
    pub deterministic: bool,
    /// Seed of the random generators when `deterministic`.
    pub seed: u64,
    /// Whether the plugin's requests (a gate's reports) carry the whole context: the pipeline's
    /// `vars` and every earlier result. Without it they carry only the run id and the pipeline's
    /// name. Input templates are rendered by the host and always see the whole context, so a
    /// task is given exactly what its template selects.
    pub context: bool,
}

/// Where a capability's checks report problems and ask about the world (the pipeline's
/// validation implements it, with positions in the file).
pub(crate) trait Check {
    /// A problem at `span` of the file, with its fix.
    fn problem(&mut self, span: Range<usize>, message: String, help: String);
    /// Whether a host directory exists.
    fn is_dir(&mut self, path: &Path) -> bool;
}

/// Shows a host path (in the lock: relative to the project).
pub type ShowPath<'a> = &'a dyn Fn(&Path) -> String;

/// One capability: how its part of a raw table is checked into [`Grants`], and how what it
/// grants is described.
pub(crate) struct Capability {
    /// Checks the capability's keys of `raw` (host paths relative to `dir`) into `grants`.
    check: fn(raw: &RawGrants, dir: &Path, check: &mut dyn Check, grants: &mut Grants),
    /// What it grants, for a person (`validate`, `plugin inspect`).
    describe: fn(grants: &Grants, out: &mut Vec<String>),
    /// What it grants as stable lines for `phasegate.lock`, host paths shown by `path`.
    lock_lines: fn(grants: &Grants, path: ShowPath<'_>, out: &mut Vec<String>),
    /// Its keys as a pipeline writes them.
    table: fn(grants: &Grants, out: &mut Map<String, Value>),
}

/// Every capability, in the order descriptions list them.
const CAPABILITIES: [Capability; 6] = [
    dirs::CAPABILITY,
    env::CAPABILITY,
    net::CAPABILITY,
    http::CAPABILITY,
    clocks::CAPABILITY,
    context::CAPABILITY,
];

impl Grants {
    /// Checks a raw `grants` table (host paths relative to `dir`), every capability's problems
    /// reported through `check`.
    pub(crate) fn check(raw: &RawGrants, dir: &Path, check: &mut dyn Check) -> Grants {
        let mut grants = Grants::default();
        for c in &CAPABILITIES {
            (c.check)(raw, dir, check, &mut grants);
        }
        grants
    }

    /// Whether nothing at all is granted (clocks and random are the host's).
    pub fn is_empty(&self) -> bool {
        self.lock_lines(&|p| p.display().to_string()).is_empty()
    }

    /// What is granted, one stable line each, sorted (as `phasegate.lock` records a use's
    /// grants); `path` shows a host path (relative to the project, in the lock).
    pub fn lock_lines(&self, path: ShowPath<'_>) -> Vec<String> {
        let mut lines = Vec::new();
        for c in &CAPABILITIES {
            (c.lock_lines)(self, path, &mut lines);
        }
        lines
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The grants as a pipeline's `grants` table would write them (JSON), every key present.
    pub fn to_table(&self) -> Value {
        let mut table = Map::new();
        for c in &CAPABILITIES {
            (c.table)(self, &mut table);
        }
        Value::Object(table)
    }
}

impl fmt::Display for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for c in &CAPABILITIES {
            (c.describe)(self, &mut parts);
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Check for Recorder {
        fn problem(&mut self, _span: Range<usize>, message: String, _help: String) {
            self.0.push(message);
        }
        fn is_dir(&mut self, _path: &Path) -> bool {
            true
        }
    }

    fn check(text: &str) -> (Grants, Vec<String>) {
        let raw: RawGrants = toml::from_str(text).unwrap();
        let mut problems = Recorder::default();
        let grants = Grants::check(&raw, Path::new("/p"), &mut problems);
        (grants, problems.0)
    }

    #[test]
    fn every_capability_is_checked_described_locked_and_tabled() {
        let (grants, problems) = check(
            r#"
            dirs = [{ host = "data", guest = "/data", mode = "rw" }]
            env = ["LANG"]
            env-set = { MODE = "fast" }
            net = ["127.0.0.1:5432"]
            http = ["api.example.com"]
            deterministic = true
            seed = 7
            context = true
            "#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!grants.is_empty());
        assert_eq!(
            grants.to_string(),
            "dir /p/data -> /data (rw); env LANG; env-set MODE; net 127.0.0.1:5432; http api.example.com; deterministic clocks and random (seed 7); the whole context"
        );
        assert_eq!(
            grants.lock_lines(&|p| p.strip_prefix("/p").unwrap().display().to_string()),
            [
                "context",
                "deterministic",
                "dir data -> /data (rw)",
                "env LANG",
                "env-set MODE",
                "http api.example.com",
                "net 127.0.0.1:5432",
            ]
        );
        let table = grants.to_table();
        assert_eq!(table["dirs"][0]["mode"], "rw");
        assert_eq!(table["seed"], 7);
        assert_eq!(table["context"], true);
        assert_eq!(Grants::default().to_string(), "none");
        assert!(Grants::default().is_empty());
        assert_eq!(Grants::default().to_table()["seed"], Value::Null);
    }

    #[test]
    fn each_capability_reports_its_own_problems() {
        let (_, problems) = check(
            r#"
            dirs = [{ host = "data", guest = "../up" }]
            env = ["A=B"]
            net = ["nohost"]
            http = ["https://x/"]
            "#,
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("guest path `../up`"));
        assert!(problems[1].contains("not an environment variable name"));
        assert!(problems[2].contains("not `host:port`"));
        assert!(problems[3].contains("not a host name"));
    }
}
