//! Installing and trusting plugins: where the plugin store ([`store`], plain data) meets the
//! engine. Fetch a source, examine the component (world, exports, imports, metadata), check
//! its signature against the trust policy, and review a pipeline's plugin uses against the lock.
//! Returns data; the CLI renders it and decides what to write.

use std::path::Path;

use crate::plugin::wit::PluginKind;
use crate::sandbox::surface;
use crate::{LoadedPlugins, Metadata, PluginHost, World};
use phasegate_model::error::Problem;
use phasegate_model::events::Emitter;
use phasegate_model::pipeline::{Pipeline, PluginRef};
use phasegate_store::fetch::{Fetched, Source};
use phasegate_store::lock::{self, Change, LockedPlugin, LockedUse, SignatureRecord};
use phasegate_store::trust::Policy;
use phasegate_store::{Lock, Project};

/// What a component is, as the engine sees it.
pub struct Examined {
    /// `sha256:` of its bytes.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Its world.
    pub world: World,
    /// What it exports.
    pub exports: Vec<String>,
    /// What it imports.
    pub imports: Vec<String>,
    /// Capability names its imports could use.
    pub capabilities: Vec<String>,
    /// What it says about itself.
    pub metadata: Metadata,
}

/// Compiles and type-checks a component against the task and gate worlds of this host's
/// contract, and calls its `metadata`. `label` names it in errors.
pub async fn examine(host: &PluginHost, label: &str, bytes: &[u8]) -> anyhow::Result<Examined> {
    let plugin = PluginRef::file(Path::new(label));
    let loaded = host
        .load_bytes(&plugin, bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let metadata = host.metadata(&loaded, Emitter::discard()).await?;
    let claimed = match metadata.kind {
        PluginKind::Task => World::Task,
        PluginKind::Gate => World::Gate,
    };
    if claimed != loaded.world {
        anyhow::bail!(
            "{label}: its metadata says it is a {} plugin, but it implements {}",
            match claimed {
                World::Task => "task",
                World::Gate => "gate",
            },
            loaded.world
        );
    }
    Ok(Examined {
        digest: loaded.digest.clone(),
        size: loaded.size,
        world: loaded.world,
        exports: loaded.exports.clone(),
        capabilities: capability_names(&loaded.imports),
        imports: loaded.imports.clone(),
        metadata,
    })
}

/// The capability names of a list of imports.
pub fn capability_names(imports: &[String]) -> Vec<String> {
    surface::surface(imports)
        .iter()
        .map(|(c, _)| c.name().to_owned())
        .collect()
}

/// A fetched, examined and signature-checked plugin, not yet stored.
pub struct Candidate {
    /// The source as it will be recorded (paths relative to the project root when inside it).
    pub source: String,
    /// What was fetched.
    pub fetched: Fetched,
    /// What it is.
    pub examined: Examined,
    /// Its signature, checked against the policy.
    pub signature: SignatureRecord,
}

/// Fetches `source` (relative paths from `base`), examines it and checks its signature for the
/// installed name `name` (default: the name it reports). A signature that does not verify is
/// an error; whether an unsigned or untrusted one may be installed is for the caller to
/// [`Policy::enforce`].
pub async fn fetch_candidate(
    host: &PluginHost,
    project: &Project,
    policy: &Policy,
    source: &str,
    base: &Path,
    name: Option<&str>,
) -> anyhow::Result<(String, Candidate)> {
    let parsed = Source::parse(source, base)?;
    let recorded = match &parsed {
        Source::Path(p) => project.relative(p),
        _ => source.to_owned(),
    };
    let fetched = parsed.fetch().await?;
    let examined = examine(host, source, &fetched.bytes).await?;
    let name = name
        .map(str::to_owned)
        .unwrap_or_else(|| examined.metadata.name.clone());
    if !phasegate_store::valid_name(&name) {
        return Err(Problem::new(format!("`{name}` cannot be an installed name: use lowercase letters, digits, `-`, `_` and `.` (at most 64)"))
            .help("pass `--name NAME`").into());
    }
    let signature = policy
        .check(
            &fetched.bytes,
            fetched.signature.as_deref(),
            &name,
            &recorded,
        )
        .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
    Ok((
        name,
        Candidate {
            source: recorded,
            fetched,
            examined,
            signature,
        },
    ))
}

impl Candidate {
    /// The lock entry for this candidate under `name`.
    pub fn locked(&self, name: &str) -> LockedPlugin {
        let e = &self.examined;
        LockedPlugin {
            name: name.to_owned(),
            plugin_name: e.metadata.name.clone(),
            version: e.metadata.version.clone(),
            description: e.metadata.description.clone(),
            source: self.source.clone(),
            resolved: self.fetched.resolved.clone().filter(|r| *r != self.source),
            digest: e.digest.clone(),
            size: e.size,
            world: e.world.to_string(),
            capabilities: e.capabilities.clone(),
            imports: e.imports.clone(),
            signature: self.signature.clone(),
            installed_at: lock::now_rfc3339(),
        }
    }
}

/// Checks, before anything is compiled, that every installed plugin a pipeline uses is in the
/// lock, and — when signatures are required by the policy or `require_signed` — that each
/// plugin is in the store as the lock records it and its signature verifies with a key trusted
/// for it (installed plugins: the signature kept in the store; files: `FILE.minisig`).
/// Returns one message per problem. (Without signatures, a stored file's digest is checked by
/// [`PluginHost::load`](crate::PluginHost::load), on the bytes it compiles.)
pub fn check_store(pipeline: &Pipeline, require_signed: bool) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    let project = Project::of(pipeline);
    let (lock, policy) = match &project {
        Some(p) => (p.lock()?, Policy::load(&p.trust_path())?),
        None => (Lock::default(), Policy::default()),
    };
    let required = require_signed || policy.require_signed;
    for plugin in pipeline.plugins() {
        let (bytes, signature, source) = match (&plugin.installed, &project) {
            (Some(name), Some(project)) => {
                let Some(entry) = lock.plugin(name) else {
                    problems.push(format!(
                        "plugin `{name}` is not in {}",
                        project.lock_path().display()
                    ));
                    continue;
                };
                // Without signatures to check, the stored file's hash is checked by the load,
                // on the bytes it compiles (the pipeline carries the lock's digest).
                if !required {
                    continue;
                }
                match project.read_stored(&entry.digest) {
                    Err(e) => {
                        problems.push(format!(
                            "plugin `{name}`: {e}\n  {}",
                            phasegate_store::reinstall_help(name, Some(&entry.source))
                        ));
                        continue;
                    }
                    Ok((bytes, sig)) => (bytes, sig, entry.source.clone()),
                }
            }
            _ if required => {
                let bytes = std::fs::read(&plugin.path)?;
                let sig =
                    std::fs::read_to_string(phasegate_store::fetch::signature_path(&plugin.path))
                        .ok();
                (bytes, sig, plugin.path.display().to_string())
            }
            _ => continue,
        };
        if let Err(why) = policy.judge(
            &bytes,
            signature.as_deref(),
            &plugin.spec,
            &source,
            require_signed,
        ) {
            problems.push(format!("plugin `{}`: {why}", plugin.spec));
        }
    }
    Ok(problems)
}

/// A pipeline's plugin uses now, compared with what the lock recorded.
pub struct UseReview {
    /// The pipeline file, relative to the project root.
    pub file: String,
    /// Its uses now.
    pub now: Vec<LockedUse>,
    /// Whether the lock had a record of it.
    pub recorded: bool,
    /// Differences from the record (empty when it matches).
    pub changes: Vec<Change>,
}

/// Reviews a pipeline's uses (its loaded plugins' digests and capability surfaces, its grants)
/// against the lock of `project`.
pub fn review_uses(
    pipeline: &Pipeline,
    project: &Project,
    lock: &Lock,
    loaded: &LoadedPlugins,
) -> UseReview {
    let file = project.relative(&pipeline.path);
    let now = lock::uses_of(pipeline, project, &|p| match loaded.get(p) {
        Some(l) => (l.digest.clone(), capability_names(&l.imports)),
        None => (String::new(), Vec::new()),
    });
    let (recorded, changes) = match lock.pipeline(&file) {
        Some(r) => {
            let mut changes = lock::compare(&r.uses, &now);
            changes.extend(lock::compare_engine(
                r.bounds_checks,
                pipeline.engine.bounds_checks,
            ));
            (true, changes)
        }
        None => (false, Vec::new()),
    };
    UseReview {
        file,
        now,
        recorded,
        changes,
    }
}
