//! The compiled-component cache: Cranelift output kept on disk, keyed by the component's digest
//! and the engine's configuration, so a second run skips compilation.
//!
//! Loading machine code from disk means trusting whoever could write it, so the cache never
//! deserializes a file that someone else could have written:
//! - the cache directory is created `0700` and must be owned by the current user and not
//!   writable by group or others; otherwise the cache is not used at all;
//! - each entry is a regular file (not a symlink) owned by the current user, mode `0600`;
//! - each entry has a sidecar with the sha256 of its bytes, checked before deserializing, so a
//!   truncated or corrupted entry is recompiled instead of loaded.
//!
//! Location: `$PHASEGATE_CACHE_DIR`; else, for a pipeline or plugin command in a project (a
//! folder with `phasegate.lock`), `.phasegate/compiled` beside the project's plugin store; else
//! `$XDG_CACHE_HOME/phasegate`, else `~/.cache/phasegate`. `PHASEGATE_CACHE_DIR=off` disables it.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Compiled now (and stored, when the cache is usable).
    Compiled,
    /// Loaded from the cache.
    Cached,
}

/// An open, verified cache directory for one engine configuration.
pub struct CompileCache {
    dir: PathBuf,
    uid: u32,
}

impl CompileCache {
    /// The default cache root, or `None` when disabled or no home is known.
    pub fn default_root() -> Option<PathBuf> {
        match std::env::var_os("PHASEGATE_CACHE_DIR") {
            Some(v) if v == "off" => None,
            Some(v) => Some(PathBuf::from(v)),
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|d| d.join("phasegate")),
        }
    }

    /// The cache root for a pipeline or plugin command: `$PHASEGATE_CACHE_DIR` when set (`off`
    /// disables), else beside the project's plugin store (`.phasegate/compiled`), else the
    /// user's cache ([`default_root`](Self::default_root)).
    pub fn root_for(project: Option<&phasegate_store::Project>) -> Option<PathBuf> {
        match (std::env::var_os("PHASEGATE_CACHE_DIR"), project) {
            (None, Some(project)) => Some(project.compiled_dir()),
            _ => Self::default_root(),
        }
    }

    /// Opens (creating) the cache for `engine` under `root`. Errors say why it cannot be trusted.
    pub fn open(root: &Path, engine: &Engine) -> Result<Self, String> {
        let uid = fs::metadata("/proc/self")
            .map(|m| m.uid())
            .map_err(|e| format!("cannot tell the current user: {e}"))?;
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!(
            "wasmtime-{}-{:016x}",
            env!("CARGO_PKG_VERSION"),
            hasher.finish()
        ));
        for d in [root, dir.as_path()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            let m = fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
            if !m.is_dir() || m.uid() != uid || m.permissions().mode() & 0o022 != 0 {
                return Err(format!(
                    "{} is not a directory owned by you and closed to others (mode {:o}); not using the compile cache",
                    d.display(),
                    m.permissions().mode() & 0o777
                ));
            }
        }
        Ok(CompileCache { dir, uid })
    }

    /// The compiled form of `bytes` (whose digest is `digest`): from the cache when a verified
    /// entry exists, else compiled and stored.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, Source)> {
        let key = digest.trim_start_matches("sha256:");
        let entry = self.dir.join(format!("{key}.cwasm"));
        let sidecar = self.dir.join(format!("{key}.cwasm.sha256"));
        if let Some(compiled) = self.verified(&entry, &sidecar) {
            // SAFETY: `compiled` was written by this user into a directory only this user can
            // write (both checked in `open` and `verified`), produced by `precompile_component`
            // for an engine with the same compatibility hash (the directory name), and its bytes
            // match the sha256 recorded beside it.
            #[expect(
                unsafe_code,
                reason = "deserializing our own verified precompiled component"
            )]
            let loaded = unsafe { Component::deserialize(engine, &compiled) };
            if let Ok(component) = loaded {
                return Ok((component, Source::Cached));
            }
        }
        let compiled = engine.precompile_component(bytes)?;
        // SAFETY: the bytes were produced just now by this engine.
        #[expect(unsafe_code, reason = "deserializing what this engine just compiled")]
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        // A cache that cannot be written is only a slower run.
        let _ = write_private(&entry, &compiled).and_then(|()| {
            write_private(
                &sidecar,
                phasegate_model::digest::sha256_bytes(&compiled).as_bytes(),
            )
        });
        Ok((component, Source::Compiled))
    }

    fn verified(&self, entry: &Path, sidecar: &Path) -> Option<Vec<u8>> {
        for f in [entry, sidecar] {
            let m = fs::symlink_metadata(f).ok()?;
            if !m.is_file() || m.uid() != self.uid || m.permissions().mode() & 0o022 != 0 {
                return None;
            }
        }
        let expected = fs::read_to_string(sidecar).ok()?;
        let bytes = fs::read(entry).ok()?;
        (phasegate_model::digest::sha256_bytes(&bytes) == expected.trim()).then_some(bytes)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}
