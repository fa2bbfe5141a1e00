//! Directory grants: host directories preopened at a guest path, read-only or read-write.
//!
//! wasmtime-wasi resolves every guest path inside the preopened directory with cap-std, which
//! refuses `..` past the root, absolute paths, and symlinks that lead outside it.

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use phasegate_model::pipeline::{DirGrant, DirMode};

/// Preopens each granted directory.
pub fn grant(builder: &mut WasiCtxBuilder, dirs: &[DirGrant]) -> Result<(), String> {
    for d in dirs {
        let perms = match d.mode {
            DirMode::Ro => FsPerms::ReadOnly,
            DirMode::Rw => FsPerms::ReadWrite,
        };
        builder
            .preopened_dir(&d.host, &d.guest, perms)
            .map_err(|e| format!("cannot open granted directory {}: {e}", d.host.display()))?;
    }
    Ok(())
}
