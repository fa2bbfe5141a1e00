//! `phasegate.lock`: what a project installed, and what each of its pipelines was reviewed with.
//! Plain data, no wasmtime.
//!
//! ```toml
//! version = 1
//!
//! [[plugin]]
//! name = "text-stats"                      # the installed name pipelines use
//! plugin-name = "text-stats"               # the name the plugin reports
//! version = "0.1.0"                        # the version the plugin reports
//! description = "Counts words"
//! source = "oci://127.0.0.1:5000/acme/text-stats:0.1.0"
//! resolved = "oci://127.0.0.1:5000/acme/text-stats@sha256:…"   # the manifest it came from
//! digest = "sha256:…"                      # of the component's bytes; the store's file name
//! size = 61234
//! world = "phasegate:plugin/task@0.1.0"
//! capabilities = ["filesystem"]            # what its imports could use, if granted
//! imports = ["wasi:filesystem/preopens@0.2.6", …]
//! signature = { status = "verified", key-id = "…", signer = "acme" }
//! installed-at = "2026-11-25T08:00:00Z"
//!
//! [[pipeline]]
//! file = "pipelines/release.toml"          # relative to the project root
//! [[pipeline.use]]                          # one per task and gate, in file order
//! phase = "discovery"
//! task = "stats"                            # absent for the phase's gate
//! plugin = "text-stats"                     # as written in the pipeline
//! digest = "sha256:…"
//! capabilities = ["filesystem"]
//! grants = ["dir data -> /data (ro)"]
//! ```
//!
//! `run --locked` and `validate --locked` refuse when the pipeline's uses as they are now differ
//! from the recorded ones: another plugin digest, a wider capability surface, a wider grant.
//! Credentials never appear here.

use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use phasegate_model::error::Problem;
use phasegate_model::pipeline::{BoundsChecks, Grants, Pipeline};

/// File name of the lock.
pub const LOCK_FILE: &str = "phasegate.lock";
/// Format version of the lock.
pub const LOCK_VERSION: u32 = 1;

/// The whole lock file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lock {
    /// Format version ([`LOCK_VERSION`]).
    pub version: u32,
    /// Installed plugins, by name.
    #[serde(default, rename = "plugin", skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<LockedPlugin>,
    /// Pipelines and the plugin uses they were reviewed with.
    #[serde(default, rename = "pipeline", skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<LockedPipeline>,
}

impl Default for Lock {
    fn default() -> Self {
        Lock {
            version: LOCK_VERSION,
            plugins: Vec::new(),
            pipelines: Vec::new(),
        }
    }
}

/// One installed plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedPlugin {
    /// The installed name (what pipelines write in `plugin = "…"`).
    pub name: String,
    /// The name the plugin reports in its metadata.
    pub plugin_name: String,
    /// The version the plugin reports.
    pub version: String,
    /// The plugin's one-line description.
    pub description: String,
    /// Where it was fetched from, as given to `plugin add` (`update` fetches from here again).
    pub source: String,
    /// What the source resolved to (an OCI manifest digest, an absolute path), when different.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// `sha256:` of the component's bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The world it implements.
    pub world: String,
    /// Capability names its imports could use (`filesystem`, `environment`, `sockets`, `http`).
    pub capabilities: Vec<String>,
    /// Every interface it imports.
    pub imports: Vec<String>,
    /// Whether it was signed, and by whom.
    pub signature: SignatureRecord,
    /// When it was added or last updated (RFC 3339).
    pub installed_at: String,
}

/// A signature as checked when the plugin was installed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SignatureRecord {
    /// What the check found.
    pub status: SignatureStatus,
    /// The minisign key id of the signature (16 hex digits), when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The trust policy's name for the key, when trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

/// What a signature check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureStatus {
    /// No signature came with the plugin.
    Unsigned,
    /// Signed by a key the trust policy trusts for this plugin; the signature verifies.
    Verified,
    /// Signed by a key the trust policy does not list.
    UntrustedKey,
    /// Signed by a listed key that the policy does not allow for this plugin.
    KeyNotAllowed,
}

impl fmt::Display for SignatureRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key_id.as_deref().unwrap_or("?");
        match self.status {
            SignatureStatus::Unsigned => f.write_str("unsigned"),
            SignatureStatus::Verified => write!(
                f,
                "signed by {} (key {key}), verified",
                self.signer.as_deref().unwrap_or("?")
            ),
            SignatureStatus::UntrustedKey => {
                write!(
                    f,
                    "signed by key {key}, which the trust policy does not list"
                )
            }
            SignatureStatus::KeyNotAllowed => write!(
                f,
                "signed by {} (key {key}), which the trust policy does not allow for this plugin",
                self.signer.as_deref().unwrap_or("?")
            ),
        }
    }
}

/// One pipeline's reviewed uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedPipeline {
    /// The pipeline file, relative to the project root (`/`-separated).
    pub file: String,
    /// How the engine confines memory accesses (written only when not the default): switching
    /// to `explicit` drops wasmtime's Spectre mitigations, so it is part of the review.
    #[serde(default, skip_serializing_if = "is_guard_pages")]
    pub bounds_checks: BoundsChecks,
    /// Each task and gate, in file order.
    #[serde(default, rename = "use")]
    pub uses: Vec<LockedUse>,
}

fn is_guard_pages(b: &BoundsChecks) -> bool {
    *b == BoundsChecks::GuardPages
}

/// The change of a pipeline's `[engine] bounds-checks` since it was reviewed, if any.
pub fn compare_engine(recorded: BoundsChecks, now: BoundsChecks) -> Option<Change> {
    (recorded != now).then(|| Change {
        what: format!(
            "`[engine] bounds-checks` is now `{}` instead of `{}`",
            now.name(),
            recorded.name()
        ),
        // Explicit checks run without wasmtime's Spectre mitigations.
        widens: now == BoundsChecks::Explicit,
    })
}

/// One task's or gate's plugin, as reviewed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedUse {
    /// The phase id.
    pub phase: String,
    /// The task id; absent for the phase's gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The `plugin` value as written.
    pub plugin: String,
    /// `sha256:` of the component.
    pub digest: String,
    /// Its capability surface.
    pub capabilities: Vec<String>,
    /// What the pipeline grants it, one line per grant (see [`grant_lines`]).
    pub grants: Vec<String>,
}

impl LockedUse {
    fn place(&self) -> String {
        match &self.task {
            Some(t) => format!("task `{t}` in phase `{}`", self.phase),
            None => format!("the gate of phase `{}`", self.phase),
        }
    }
}

const LOCK_HELP: &str = "the lock is written by `phasegate plugin`, `phasegate lock` and `phasegate validate`; restore it from version control, or remove it and add the plugins again";

impl Lock {
    /// Reads a lock; a missing file is an empty lock.
    pub fn load(path: &Path) -> anyhow::Result<Lock> {
        let lock: Lock = super::read_toml(path, LOCK_HELP)?;
        Self::check_version(lock, path)
    }

    /// Reads a lock's text (`path` names it in errors).
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Lock> {
        let lock: Lock = toml::from_str(text)
            .map_err(|e| phasegate_model::error::toml_problem(path, text, &e, LOCK_HELP))?;
        Self::check_version(lock, path)
    }

    fn check_version(lock: Lock, path: &Path) -> anyhow::Result<Lock> {
        if lock.version != LOCK_VERSION {
            return Err(Problem::new(format!("{}: lock format version {} is not supported (this phasegate reads version {LOCK_VERSION})", path.display(), lock.version)).help("use the phasegate that wrote it").into());
        }
        Ok(lock)
    }

    /// Writes the lock atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = format!(
            "# Written by phasegate (`phasegate plugin …`, `phasegate validate`). Commit it; do not edit it by hand.\n{}",
            toml::to_string(self).context("cannot serialise the lock")?
        );
        super::write_atomically(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The installed plugin of a name.
    pub fn plugin(&self, name: &str) -> Option<&LockedPlugin> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// The recorded uses of a pipeline file (relative to the project root).
    pub fn pipeline(&self, file: &str) -> Option<&LockedPipeline> {
        self.pipelines.iter().find(|p| p.file == file)
    }

    /// The recorded pipelines that use the installed plugin `name`.
    pub fn pipelines_using(&self, name: &str) -> Vec<&str> {
        self.pipelines
            .iter()
            .filter(|p| p.uses.iter().any(|u| u.plugin == name))
            .map(|p| p.file.as_str())
            .collect()
    }

    /// Adds or replaces an installed plugin (kept sorted by name).
    pub fn upsert_plugin(&mut self, plugin: LockedPlugin) {
        self.plugins.retain(|p| p.name != plugin.name);
        self.plugins.push(plugin);
        self.plugins.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Adds or replaces a pipeline's record (kept sorted by file).
    pub fn upsert_pipeline(&mut self, pipeline: LockedPipeline) {
        self.pipelines.retain(|p| p.file != pipeline.file);
        self.pipelines.push(pipeline);
        self.pipelines.sort_by(|a, b| a.file.cmp(&b.file));
    }
}

/// What a pipeline's plugin uses are now: `facts` gives each plugin spec's digest and
/// capability surface; `project` makes granted directories relative to the project root.
pub fn uses_of(
    pipeline: &Pipeline,
    project: &super::Project,
    facts: &dyn Fn(&phasegate_model::pipeline::PluginRef) -> (String, Vec<String>),
) -> Vec<LockedUse> {
    let mut uses = Vec::new();
    for phase in &pipeline.phases {
        let gate = phase.gates.iter().map(|g| (None, &g.plugin, &g.grants));
        for (task, plugin, grants) in phase
            .tasks
            .iter()
            .map(|t| (Some(t.id.to_string()), &*t.plugin, &*t.grants))
            .chain(gate)
        {
            let (digest, capabilities) = facts(plugin);
            uses.push(LockedUse {
                phase: phase.id.to_string(),
                task,
                plugin: plugin.spec.clone(),
                digest,
                capabilities,
                grants: grant_lines(grants, project),
            });
        }
    }
    uses
}

/// One line per grant, in a stable form: `dir <host> -> <guest> (ro|rw)`, `env NAME`,
/// `env-set NAME`, `net host:port`, `http host`, `deterministic`, `context`. A line that was not
/// there before is a wider grant.
pub fn grant_lines(grants: &Grants, project: &super::Project) -> Vec<String> {
    grants.lock_lines(&|p| project.relative(p))
}

/// One difference between a pipeline's recorded uses and its uses now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What changed, in words.
    pub what: String,
    /// Whether it lets a plugin do more than was reviewed: a wider capability surface or a new
    /// grant (a use not reviewed before widens when it has either). Other bytes or another
    /// plugin with the same surface and grants are a change, not a widening.
    pub widens: bool,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

/// Compares recorded uses with the uses now.
pub fn compare(recorded: &[LockedUse], now: &[LockedUse]) -> Vec<Change> {
    let mut changes = Vec::new();
    let key = |u: &LockedUse| (u.phase.clone(), u.task.clone());
    for u in now {
        let Some(r) = recorded.iter().find(|r| key(r) == key(u)) else {
            changes.push(Change {
                what: format!(
                    "{} (plugin `{}`) was not reviewed: it is new since the pipeline was locked",
                    u.place(),
                    u.plugin
                ),
                widens: !u.capabilities.is_empty() || !u.grants.is_empty(),
            });
            continue;
        };
        if r.plugin != u.plugin {
            changes.push(Change {
                what: format!(
                    "{} now uses plugin `{}` instead of `{}`",
                    u.place(),
                    u.plugin,
                    r.plugin
                ),
                widens: false,
            });
        } else if r.digest != u.digest {
            changes.push(Change {
                what: format!(
                    "{}: plugin `{}` changed: digest {} -> {}",
                    u.place(),
                    u.plugin,
                    r.digest,
                    u.digest
                ),
                widens: false,
            });
        }
        let wider_caps: Vec<&String> = u
            .capabilities
            .iter()
            .filter(|c| !r.capabilities.contains(c))
            .collect();
        if !wider_caps.is_empty() {
            changes.push(Change {
                what: format!(
                    "{}: plugin `{}` has a wider capability surface: {} -> {} (new: {})",
                    u.place(),
                    u.plugin,
                    list(&r.capabilities),
                    list(&u.capabilities),
                    wider_caps
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                widens: true,
            });
        }
        for g in u.grants.iter().filter(|g| !r.grants.contains(g)) {
            changes.push(Change {
                what: format!("{}: new grant `{g}`", u.place()),
                widens: true,
            });
        }
        for g in r.grants.iter().filter(|g| !u.grants.contains(g)) {
            changes.push(Change {
                what: format!("{}: grant `{g}` removed", u.place()),
                widens: false,
            });
        }
    }
    for r in recorded {
        if !now.iter().any(|u| key(u) == key(r)) {
            changes.push(Change {
                what: format!("{} (plugin `{}`) is gone", r.place(), r.plugin),
                widens: false,
            });
        }
    }
    changes
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Now, in RFC 3339.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_(task: &str, digest: &str, caps: &[&str], grants: &[&str]) -> LockedUse {
        LockedUse {
            phase: "p".into(),
            task: Some(task.into()),
            plugin: "tool".into(),
            digest: digest.into(),
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
            grants: grants.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn narrowing_is_a_change_but_not_a_widening() {
        let recorded = vec![use_("a", "d1", &["filesystem"], &["env HOME", "env LANG"])];
        let now = vec![use_("a", "d1", &["filesystem"], &["env LANG"])];
        let changes = compare(&recorded, &now);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].widens);
    }

    #[test]
    fn only_a_wider_surface_or_grant_is_a_widening() {
        let recorded = vec![use_("a", "d1", &[], &["dir data -> /data (ro)"])];
        let now = vec![
            use_("a", "d2", &["http"], &["dir data -> /data (rw)"]),
            use_("b", "d2", &[], &[]),
            use_("c", "d2", &[], &["env HOME"]),
        ];
        let changes = compare(&recorded, &now);
        let widening: Vec<&str> = changes
            .iter()
            .filter(|c| c.widens)
            .map(|c| c.what.as_str())
            .collect();
        assert_eq!(widening.len(), 3, "{changes:?}");
        assert!(widening.iter().any(|w| w.contains("none -> http")));
        assert!(widening.iter().any(|w| w.contains("(rw)")));
        assert!(widening.iter().any(|w| w.contains("task `c`")));
        // Other bytes, and a new use that can do nothing, are changes but not widenings.
        let changed: Vec<&str> = changes
            .iter()
            .filter(|c| !c.widens)
            .map(|c| c.what.as_str())
            .collect();
        assert!(
            changed.iter().any(|w| w.contains("digest d1 -> d2")),
            "{changes:?}"
        );
        assert!(
            changed.iter().any(|w| w.contains("task `b`")),
            "{changes:?}"
        );
        let rebuilt = vec![use_("a", "d9", &[], &["dir data -> /data (ro)"])];
        let digest_only = compare(&recorded, &rebuilt);
        assert_eq!(digest_only.len(), 1);
        assert!(!digest_only[0].widens);
        assert_eq!(compare(&now, &now), vec![]);
    }

    #[test]
    fn round_trips_through_toml() {
        let lock = Lock {
            version: LOCK_VERSION,
            plugins: vec![LockedPlugin {
                name: "tool".into(),
                plugin_name: "noop".into(),
                version: "0.1.0".into(),
                description: "d".into(),
                source: "oci://127.0.0.1:5000/x:1".into(),
                resolved: None,
                digest: "sha256:00".into(),
                size: 1,
                world: "phasegate:plugin/task@0.1.0".into(),
                capabilities: vec![],
                imports: vec!["phasegate:plugin/host@0.1.0".into()],
                signature: SignatureRecord {
                    status: SignatureStatus::Unsigned,
                    key_id: None,
                    signer: None,
                },
                installed_at: now_rfc3339(),
            }],
            pipelines: vec![LockedPipeline {
                file: "p.toml".into(),
                bounds_checks: BoundsChecks::Explicit,
                uses: vec![use_("a", "sha256:00", &[], &[])],
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        lock.save(&path).unwrap();
        assert_eq!(Lock::load(&path).unwrap(), lock);
        std::fs::write(&path, "version = 1\n[[plugin]]\nname = 3\n").unwrap();
        let err = Lock::load(&path).unwrap_err().to_string();
        assert!(err.contains("phasegate.lock:3:"), "{err}");
    }
}
