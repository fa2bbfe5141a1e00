//! Installed plugins: the project's content-addressed plugin store and its lockfile. No wasmtime
//! here; fetching ([`fetch`], [`oci`]) and signatures ([`trust`]) each have their own file.
//!
//! A **project** is the directory holding `phasegate.lock`. Its store lives beside it:
//!
//! ```text
//! phasegate.lock                     what is installed, and what each pipeline was reviewed with
//! phasegate-trust.toml               (optional) trusted signing keys; see `trust`
//! .phasegate/plugins/sha256/<hex>.wasm      a component, named by the sha256 of its bytes
//! .phasegate/plugins/sha256/<hex>.minisig   its signature, when it came with one
//! .phasegate/compiled/                      compiled components (see `compile_cache`)
//! ```
//!
//! A pipeline names an installed plugin by its name (`plugin = "text-stats"`): a `plugin` value
//! with no `/` that does not end in `.wasm` is a name, anything else a path.

pub mod fetch;
pub mod lock;
pub mod oci;
pub mod trust;

use std::fs;
use std::path::{Path, PathBuf};

use std::fs::File;
use std::io::Write;

use anyhow::Context as _;
use phasegate_model::error::toml_problem;

pub use lock::{LOCK_FILE, Lock};

/// The trust policy's file name, beside the lock.
pub const TRUST_FILE: &str = "phasegate-trust.toml";

/// How to repair the store when an installed plugin's stored file is missing or modified
/// (`source`: where it was installed from, when known).
pub fn reinstall_help(name: &str, source: Option<&str>) -> String {
    let add = match source {
        Some(source) => format!("`phasegate plugin add {source} --name {name}`"),
        None => format!(
            "`phasegate plugin add SOURCE --name {name}` (its source is in `phasegate plugin inspect {name}`)"
        ),
    };
    format!(
        "help: `phasegate plugin verify` checks the whole store; reinstall with `phasegate plugin remove {name}` and {add}"
    )
}

/// The project's lock held for editing ([`Project::edit_lock`]): other editors wait until it
/// is dropped (the operating system releases it if the process dies).
#[derive(Debug)]
pub struct LockEdit {
    _held: fs::File,
}

/// A project: the folder of `phasegate.lock` and its plugin store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    /// The folder holding `phasegate.lock`.
    pub root: PathBuf,
}

impl Project {
    /// The nearest folder from `start` upwards that holds a `phasegate.lock`.
    pub fn find(start: &Path) -> Option<Project> {
        let start = if start.as_os_str().is_empty() {
            Path::new(".")
        } else {
            start
        };
        let start = fs::canonicalize(start).ok()?;
        start
            .ancestors()
            .find(|d| d.join(LOCK_FILE).is_file())
            .map(|d| Project { root: d.to_owned() })
    }

    /// The project a validated pipeline belongs to, if any.
    pub fn of(pipeline: &phasegate_model::pipeline::Pipeline) -> Option<Project> {
        pipeline
            .project
            .as_ref()
            .map(|root| Project { root: root.clone() })
    }

    /// The project at `root` (its lock need not exist yet).
    pub fn at(root: &Path) -> Project {
        Project {
            root: fs::canonicalize(root).unwrap_or_else(|_| root.to_owned()),
        }
    }

    /// `phasegate.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// `phasegate-trust.toml`.
    pub fn trust_path(&self) -> PathBuf {
        self.root.join(TRUST_FILE)
    }

    /// Where compiled components are cached for this project.
    pub fn compiled_dir(&self) -> PathBuf {
        self.root.join(".phasegate/compiled")
    }

    /// The folder of stored components.
    pub fn store_dir(&self) -> PathBuf {
        self.root.join(".phasegate/plugins/sha256")
    }

    /// The stored file of a digest (`sha256:<hex>`).
    pub fn stored(&self, digest: &str) -> PathBuf {
        self.store_dir()
            .join(format!("{}.wasm", digest.trim_start_matches("sha256:")))
    }

    /// The stored signature of a digest.
    pub fn stored_signature(&self, digest: &str) -> PathBuf {
        self.store_dir()
            .join(format!("{}.minisig", digest.trim_start_matches("sha256:")))
    }

    /// Reads the lock (an empty one when the file does not exist).
    pub fn lock(&self) -> anyhow::Result<Lock> {
        Lock::load(&self.lock_path())
    }

    /// Reads the lock in order to change and save it: waits while another phasegate command is
    /// editing it (calling `waiting` first), and keeps others waiting until the returned
    /// [`LockEdit`] is dropped, after the save. Without it, two commands that each read the
    /// lock, changed it and saved it kept only the last one's change (six `plugin add` run at
    /// once left one plugin recorded).
    ///
    /// The advisory lock is on `.phasegate/lock.edit`, not on the lock file itself: every save
    /// replaces that file, and a lock held on a replaced file excludes no one. It is not
    /// re-entrant: a second `edit_lock` while this process holds one waits forever.
    pub fn edit_lock(&self, waiting: impl FnOnce()) -> anyhow::Result<(LockEdit, Lock)> {
        let dir = self.root.join(".phasegate");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("lock.edit");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                waiting();
                file.lock()
                    .with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        Ok((LockEdit { _held: file }, self.lock()?))
    }

    /// Stores a component (and its signature) under its digest; returns the digest.
    pub fn put(&self, bytes: &[u8], signature: Option<&str>) -> anyhow::Result<String> {
        let digest = phasegate_model::digest::sha256_bytes(bytes);
        let dir = self.store_dir();
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = self.stored(&digest);
        write_atomically(&path, bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let sig_path = self.stored_signature(&digest);
        match signature {
            Some(sig) => write_atomically(&sig_path, sig.as_bytes())
                .with_context(|| format!("cannot write {}", sig_path.display()))?,
            None => {
                let _ = fs::remove_file(&sig_path);
            }
        }
        Ok(digest)
    }

    /// Reads the stored component of `digest` — checking that it exists and still hashes to
    /// it — and its stored signature, if any.
    pub fn read_stored(&self, digest: &str) -> Result<(Vec<u8>, Option<String>), StoreProblem> {
        let path = self.stored(digest);
        let bytes = fs::read(&path).map_err(|e| StoreProblem::Missing {
            path: path.clone(),
            error: e.to_string(),
        })?;
        let actual = phasegate_model::digest::sha256_bytes(&bytes);
        if actual != digest {
            return Err(StoreProblem::Tampered {
                path,
                expected: digest.to_owned(),
                actual,
            });
        }
        let signature = fs::read_to_string(self.stored_signature(digest)).ok();
        Ok((bytes, signature))
    }

    /// Deletes the stored files of `digest` unless another installed plugin of `lock` uses it.
    pub fn release(&self, lock: &Lock, digest: &str) {
        if lock.plugins.iter().all(|p| p.digest != digest) {
            let _ = fs::remove_file(self.stored(digest));
            let _ = fs::remove_file(self.stored_signature(digest));
        }
    }

    /// A path shown relative to the project root when it is inside it.
    pub fn relative(&self, path: &Path) -> String {
        let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        match abs.strip_prefix(&self.root) {
            Ok(rel) => rel.to_string_lossy().replace('\\', "/"),
            Err(_) => abs.display().to_string(),
        }
    }
}

/// An error and its causes on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Replaces `path` with `bytes` so that a reader sees the old or the new file, never a mix,
/// even across a crash: temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(&dir)?.sync_all()
}

/// Reads a TOML file of the project (the lock, the trust policy): a missing file is the
/// default value; a malformed one is an error naming the file, line and column, and `help`.
pub fn read_toml<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    help: &str,
) -> anyhow::Result<T> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    toml::from_str(&text).map_err(|e| toml_problem(path, &text, &e, help).into())
}

/// What is wrong with a stored component.
#[derive(Debug, thiserror::Error)]
pub enum StoreProblem {
    /// The file is gone or unreadable.
    #[error("the stored file {path} cannot be read ({error})")]
    Missing {
        /// The file.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// The file's bytes no longer match the digest it is stored under.
    #[error(
        "the stored file {path} was modified: it should hash to {expected} but hashes to {actual}"
    )]
    Tampered {
        /// The file.
        path: PathBuf,
        /// Its digest in the lock.
        expected: String,
        /// What it hashes to now.
        actual: String,
    },
}

/// Whether a pipeline's `plugin` value names an installed plugin (rather than a file).
pub fn is_installed_name(spec: &str) -> bool {
    !spec.contains('/') && !spec.contains('\\') && !spec.ends_with(".wasm") && valid_name(spec)
}

/// Installed names: lowercase letters, digits, `-`, `_` and `.`, starting with a letter or
/// digit, at most 64 characters.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(is_installed_name("text-stats"));
        assert!(is_installed_name("gate.v2"));
        assert!(!is_installed_name("plugins/text_stats.wasm"));
        assert!(!is_installed_name("text_stats.wasm"));
        assert!(!is_installed_name("Text"));
        assert!(!is_installed_name(""));
    }

    #[test]
    fn tampered_store_file_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let project = Project::at(dir.path());
        let digest = project.put(b"component bytes", None).unwrap();
        assert_eq!(
            project.read_stored(&digest).unwrap(),
            (b"component bytes".to_vec(), None)
        );
        fs::write(project.stored(&digest), b"other bytes").unwrap();
        assert!(matches!(
            project.read_stored(&digest),
            Err(StoreProblem::Tampered { .. })
        ));
    }
}
