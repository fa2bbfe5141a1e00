//! One process per progress file: `run` and `resume` hold an exclusive advisory lock for the
//! whole run, so two of them never append to the same journal.
//!
//! The lock is taken on a file beside the progress file (`STATE.toml.lock`), not on the progress
//! file itself, which checkpoints replace by rename (a lock on the old inode would guard
//! nothing). The file stays after the run: removing it would let a process that opened it just
//! before lock an inode nobody else sees. The kernel releases the lock when the holder exits,
//! however it exits (SIGKILL included), so a killed run never leaves a stale lock. Readers
//! (`status`, `report`) take no lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use phasegate_model::error::Problem;

/// Held for as long as a run writes a progress file; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// The lock file's path for a progress file.
    pub fn path_for(progress: &Path) -> PathBuf {
        let mut name = progress.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        progress.with_file_name(name)
    }

    /// Takes the lock for the progress file at `progress` (creating its folder if needed), or
    /// says which process holds it. `command` (e.g. `phasegate run`) is recorded for that
    /// message.
    pub fn acquire(progress: &Path, command: &str) -> Result<RunLock, Problem> {
        let path = Self::path_for(progress);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Problem::new(format!("cannot create {}: {e}", dir.display()))
                    .help("check the folder's permissions, or choose another with `--state FILE`")
            })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Problem::new(format!("cannot open the run lock {}: {e}", path.display()))
                    .help("check the folder's permissions, or choose another with `--state FILE`")
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                // The holder writes who it is right after it locks: give it that moment.
                std::thread::sleep(std::time::Duration::from_millis(50));
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let who = if holder.is_empty() {
                    "another phasegate process".to_owned()
                } else {
                    format!("process {holder}")
                };
                return Err(Problem::new(format!(
                    "{} is in use: {who} is running this run (lock {})",
                    progress.display(),
                    path.display()
                ))
                .help(format!(
                    "wait for it to finish, watch it with `phasegate status --state {}`, or give this run its own progress file with `--state FILE`",
                    progress.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Problem::new(format!(
                    "cannot lock {}: {e}",
                    path.display()
                ))
                .help("the progress file's folder must be on a filesystem that supports file locks; choose another with `--state FILE`"));
            }
        }
        // Who holds it, for the message a second process prints. Best effort: the lock itself
        // is what excludes.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{} ({command})", std::process::id());
        let _ = file.flush();
        Ok(RunLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_progress_file_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let progress = dir.path().join("sub/state.toml");
        let held = RunLock::acquire(&progress, "phasegate run").unwrap();
        let refused = RunLock::acquire(&progress, "phasegate resume").unwrap_err();
        let text = refused.to_string();
        assert!(
            text.contains(&format!("process {} (phasegate run)", std::process::id())),
            "{text}"
        );
        assert!(text.contains("state.toml is in use"), "{text}");
        // Another progress file is another lock.
        RunLock::acquire(&dir.path().join("other.toml"), "phasegate run").unwrap();
        drop(held);
        RunLock::acquire(&progress, "phasegate resume").unwrap();
    }
}
