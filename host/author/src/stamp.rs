//! Up-to-date builds. A build records what it was made from (every source file of the project,
//! the build command and the toolchain) beside its output; the next build with the same inputs
//! and the output untouched keeps that output instead of running the command again.
//!
//! This is what keeps a plugin's digest stable while its source is: componentize-py and
//! componentize-js snapshot an initialised interpreter, and the snapshot holds build-time
//! randomness (Python's hash seed, the random temporary folder componentize-js works in), so
//! rebuilding unchanged source gives other bytes — which a lock would then report as a change.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::project::Project;

/// Folders that hold no build input: what builds write, version control, fixtures.
const NOT_INPUTS: [&str; 6] = [
    ".git",
    "node_modules",
    "__pycache__",
    "fixtures",
    ".phasegate",
    "target",
];

/// The stamp file of a project's output.
fn path(project: &Project) -> PathBuf {
    let mut name = project.output().into_os_string();
    name.push(".stamp");
    PathBuf::from(name)
}

/// A digest of everything the build is made from: the build command, the toolchain, and each
/// source file (path and contents), outside the output's own folder and [`NOT_INPUTS`].
pub fn inputs(project: &Project, toolchain: &str) -> io::Result<String> {
    let mut files = Vec::new();
    // The folder the output is written in (`build/`, `target/`) is the build's, not the source's.
    let output_dir = project
        .output()
        .strip_prefix(&project.dir)
        .ok()
        .and_then(|rel| rel.components().next())
        .filter(|_| project.output().parent() != Some(project.dir.as_path()))
        .map(|c| c.as_os_str().to_owned());
    collect(
        &project.dir,
        &project.dir,
        output_dir.as_deref(),
        &mut files,
    )?;
    // An output written beside the sources is no input of its own build.
    let own = [project.output(), path(project)];
    files.retain(|rel| !own.contains(&project.dir.join(rel)));
    files.sort();
    let mut hash = Sha256::new();
    for part in [project.build.command.as_str(), toolchain] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    for rel in files {
        let bytes = fs::read(project.dir.join(&rel))?;
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update(Sha256::digest(&bytes));
    }
    Ok(hex::encode(hash.finalize()))
}

fn collect(
    root: &Path,
    dir: &Path,
    skip: Option<&std::ffi::OsStr>,
    files: &mut Vec<PathBuf>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let mut kind = entry.file_type()?;
        if kind.is_symlink() {
            // A link to a file is an input like the file; links to folders are not followed
            // (they could lead in a circle).
            match fs::metadata(entry.path()) {
                Ok(target) if target.is_file() => kind = target.file_type(),
                _ => continue,
            }
        }
        if dir == root && (Some(name.as_os_str()) == skip) {
            continue;
        }
        if kind.is_dir() {
            if !NOT_INPUTS.iter().any(|n| name == *n) {
                collect(root, &entry.path(), skip, files)?;
            }
        } else if kind.is_file() {
            let path = entry.path();
            if let Ok(rel) = path.strip_prefix(root) {
                files.push(rel.to_owned());
            }
        }
    }
    Ok(())
}

/// Whether the output was built from `inputs` and is still the file that build wrote.
pub fn up_to_date(project: &Project, inputs: &str) -> bool {
    let Ok(stamp) = fs::read_to_string(path(project)) else {
        return false;
    };
    let Some((recorded, output_digest)) = stamp.trim().split_once(' ') else {
        return false;
    };
    recorded == inputs
        && fs::read(project.output())
            .is_ok_and(|bytes| hex::encode(Sha256::digest(&bytes)) == output_digest)
}

/// Records that the output was built from `inputs` (a stamp that cannot be written only costs
/// the next build its shortcut).
pub fn record(project: &Project, inputs: &str) {
    if let Ok(bytes) = fs::read(project.output()) {
        let _ = fs::write(
            path(project),
            format!("{inputs} {}\n", hex::encode(Sha256::digest(&bytes))),
        );
    }
}
