//! The result cache: outcomes of observably pure tasks, filed under their keys ([`crate::key`])
//! in the project's `.phasegate/cache`.
//!
//! One file per key, `ab/cdef…` under the cache folder (the key's hex digits), holding a
//! header line with the digest of the rest, then the outcome as JSON. A file is written beside
//! its place and renamed into it, so runs filling the cache at once (or reading while another
//! writes) see a whole entry or none; two runs that file the same key write the same outcome,
//! and whichever rename comes last stays. A file whose digest or key does not match is reported,
//! removed and its task run. Reading an entry sets its modification time, so that `prune
//! --older-than` removes what was not used for that long.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use phasegate_model::outcome::Usage;
use phasegate_model::progress::{Failure, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first word of every entry, and its format's version.
const MAGIC: &str = "phasegate-cache 1";

/// The cache in one folder.
#[derive(Clone, Debug)]
pub struct ResultCache {
    dir: PathBuf,
}

/// What an entry holds: a task's outcome, without its id (tasks with the same key share it).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Entry {
    key: String,
    status: TaskStatus,
    attempts: u32,
    duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Failure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    log: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// An entry that could not be used, and why.
#[derive(Debug)]
pub struct Corrupt {
    pub path: PathBuf,
    pub why: String,
}

/// How much the cache holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub bytes: u64,
    /// When the least and the most recently used entry was last used.
    pub oldest: Option<SystemTime>,
    pub newest: Option<SystemTime>,
}

/// What `prune` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub entries: u64,
    pub bytes: u64,
}

impl ResultCache {
    /// The cache of the project rooted at `root` (`root/.phasegate/cache`).
    pub fn of_project(root: &Path) -> Self {
        ResultCache {
            dir: root.join(".phasegate").join("cache"),
        }
    }

    /// The cache's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let hex = key.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(self.dir.join(&hex[..2]).join(&hex[2..]))
    }

    /// The outcome filed under `key` as task `id`'s record, if there is one. An entry that is
    /// not whole or not this key's is an error (the caller removes it with [`Self::remove`]).
    pub fn get(&self, key: &str, id: &str) -> Result<Option<TaskState>, Corrupt> {
        let Some(path) = self.path(key) else {
            return Ok(None);
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Corrupt {
                    path,
                    why: format!("cannot read it: {e}"),
                });
            }
        };
        let entry = match read_entry(&bytes, key) {
            Ok(entry) => entry,
            Err(why) => return Err(Corrupt { path, why }),
        };
        // Last used now (for `prune --older-than`); a cache on a read-only disk still serves.
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        let mut task = TaskState::pending(id);
        task.status = entry.status;
        task.attempts = entry.attempts;
        task.duration_ms = entry.duration_ms;
        task.output = entry.output;
        task.error = entry.error;
        task.log = entry.log;
        task.usage = entry.usage;
        task.key = Some(entry.key);
        task.cached = true;
        Ok(Some(task))
    }

    /// Files `task`'s outcome under its key. Errors are the caller's to report: a run does not
    /// fail because its cache cannot be written.
    pub fn put(&self, task: &TaskState) -> std::io::Result<()> {
        let Some(key) = task.key.as_deref() else {
            return Ok(());
        };
        let Some(path) = self.path(key) else {
            return Ok(());
        };
        let entry = Entry {
            key: key.to_owned(),
            status: task.status,
            attempts: task.attempts,
            duration_ms: task.duration_ms,
            output: task.output.clone(),
            error: task.error.clone(),
            log: task.log.clone(),
            usage: task.usage,
        };
        let body = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        let dir = path.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(dir)?;
        let temp = dir.join(format!(
            ".tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            writeln!(
                file,
                "{MAGIC} sha256:{}",
                hex::encode(Sha256::digest(&body))
            )?;
            file.write_all(&body)?;
            drop(file);
            std::fs::rename(&temp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// Removes an entry found corrupt.
    pub fn remove(&self, corrupt: &Corrupt) {
        let _ = std::fs::remove_file(&corrupt.path);
    }

    /// How many entries the cache holds, their size, and when they were used.
    pub fn stats(&self) -> std::io::Result<Stats> {
        let mut stats = Stats::default();
        self.each(|_, meta| {
            stats.entries += 1;
            stats.bytes += meta.len();
            if let Ok(used) = meta.modified() {
                stats.oldest = Some(stats.oldest.map_or(used, |o| o.min(used)));
                stats.newest = Some(stats.newest.map_or(used, |n| n.max(used)));
            }
            false
        })?;
        Ok(stats)
    }

    /// Removes the entries not used for `older_than` (every entry when `None`), and files left
    /// by writes that did not finish.
    pub fn prune(&self, older_than: Option<Duration>) -> std::io::Result<Pruned> {
        let now = SystemTime::now();
        let mut pruned = Pruned::default();
        self.each(|_, meta| {
            let unused = meta
                .modified()
                .ok()
                .and_then(|used| now.duration_since(used).ok())
                .unwrap_or_default();
            let remove = older_than.is_none_or(|age| unused >= age);
            if remove {
                pruned.entries += 1;
                pruned.bytes += meta.len();
            }
            remove
        })?;
        Ok(pruned)
    }

    /// Calls `visit` for every entry (removing it when `visit` says so); a file left by a write
    /// that did not finish is removed once it is an hour old.
    fn each(
        &self,
        mut visit: impl FnMut(&Path, &std::fs::Metadata) -> bool,
    ) -> std::io::Result<()> {
        let shards = match std::fs::read_dir(&self.dir) {
            Ok(shards) => shards,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for shard in shards {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(shard.path())? {
                let file = file?;
                let path = file.path();
                // Removed by another prune in the meantime: nothing to count.
                let Ok(meta) = file.metadata() else { continue };
                let temporary = file.file_name().to_string_lossy().starts_with(".tmp-");
                let remove = if temporary {
                    meta.modified()
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(3600))
                } else {
                    visit(&path, &meta)
                };
                if remove {
                    match std::fs::remove_file(&path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

fn read_entry(bytes: &[u8], key: &str) -> Result<Entry, String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("it has no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "its header is not text")?;
    let digest = header
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_prefix(" sha256:"))
        .ok_or_else(|| format!("its header is not `{MAGIC} sha256:…`"))?;
    let body = &bytes[newline + 1..];
    if hex::encode(Sha256::digest(body)) != digest {
        return Err("its contents do not match their digest".into());
    }
    let entry: Entry =
        serde_json::from_slice(body).map_err(|e| format!("its outcome cannot be read: {e}"))?;
    if entry.key != key {
        return Err(format!(
            "it holds the outcome of another key ({})",
            entry.key
        ));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    fn done(key: &str) -> TaskState {
        let mut t = TaskState::pending("a");
        t.status = TaskStatus::Succeeded;
        t.attempts = 1;
        t.output = Some(r#"{"n":1}"#.into());
        t.log = vec!["info: hi".into()];
        t.key = Some(key.into());
        t
    }

    #[test]
    fn an_entry_reads_back_under_its_key_for_any_task() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::of_project(dir.path());
        assert!(cache.get(&key(1), "a").unwrap().is_none());
        cache.put(&done(&key(1))).unwrap();
        let back = cache.get(&key(1), "b").unwrap().unwrap();
        assert_eq!(back.id, "b");
        assert!(back.cached);
        assert_eq!(back.output.as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(back.log, ["info: hi"]);
        assert!(cache.get(&key(2), "a").unwrap().is_none());
        // Not a key: never a path.
        assert!(cache.get("sha256:../../etc", "a").unwrap().is_none());
    }

    #[test]
    fn a_damaged_entry_is_reported_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::of_project(dir.path());
        cache.put(&done(&key(1))).unwrap();
        let path = cache.path(&key(1)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let corrupt = cache.get(&key(1), "a").unwrap_err();
        assert!(corrupt.why.contains("do not match"), "{}", corrupt.why);
        cache.remove(&corrupt);
        assert!(cache.get(&key(1), "a").unwrap().is_none());
        // Another key's entry in this key's place.
        cache.put(&done(&key(2))).unwrap();
        std::fs::rename(cache.path(&key(2)).unwrap(), &path).unwrap();
        let corrupt = cache.get(&key(1), "a").unwrap_err();
        assert!(corrupt.why.contains("another key"), "{}", corrupt.why);
    }

    #[test]
    fn prune_removes_what_was_not_used_lately() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::of_project(dir.path());
        cache.put(&done(&key(1))).unwrap();
        cache.put(&done(&key(2))).unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        std::fs::File::options()
            .append(true)
            .open(cache.path(&key(1)).unwrap())
            .unwrap()
            .set_modified(old)
            .unwrap();
        let stats = cache.stats().unwrap();
        assert_eq!(stats.entries, 2);
        assert_eq!(stats.oldest, Some(old));
        let pruned = cache.prune(Some(Duration::from_secs(86_400))).unwrap();
        assert_eq!(pruned.entries, 1);
        assert!(cache.get(&key(1), "a").unwrap().is_none());
        assert!(cache.get(&key(2), "a").unwrap().is_some());
        assert_eq!(cache.prune(None).unwrap().entries, 1);
        assert_eq!(cache.stats().unwrap(), Stats::default());
    }
}
