//! The result cache: outcomes of observably pure tasks, filed under their keys ([`crate::key`])
//! in the project's `.phasegate/cache`.
//!
//! One file per key, `ab/cdef…` under the cache folder (the key's hex digits), holding a
//! header line with the digest and the length of the rest, then the outcome as JSON. A file is
//! created only if it does not exist (`O_EXCL`) and written at once: of runs filling the cache
//! at once, the first to file a key writes it and the others leave it (the same key gives the
//! same outcome). A reader that finds an entry shorter than its header says is reading one being
//! written, and treats it as a miss; one that stays short for a minute was left by a write that
//! did not finish and is damaged. (Writing beside the place and renaming into it would spare
//! readers half-written entries too, but costs a rename per entry: it made filling the cache
//! twice as costly, BENCHMARKS.md.) A damaged entry — a digest, a length or a key that does not
//! match — is reported, removed, and its task runs. Reading an entry sets its modification time
//! (to the minute), so that `prune --older-than` removes what was not used for that long.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use phasegate_model::outcome::Usage;
use phasegate_model::progress::{Failure, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long an entry may stay shorter than its header says (being written) before it counts as
/// left incomplete by a write that did not finish.
const WRITE_GRACE: Duration = Duration::from_secs(60);

/// How precisely an entry's last use is kept: a hit within this long of the last recorded one
/// does not write it again.
const USED_GRAIN: Duration = Duration::from_secs(60);

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
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Corrupt {
                    path,
                    why: format!("cannot read it: {e}"),
                });
            }
        };
        let mut bytes = Vec::new();
        let used = std::io::Read::read_to_end(&mut file, &mut bytes)
            .and_then(|_| file.metadata())
            .and_then(|meta| meta.modified());
        let used = match used {
            Ok(used) => used,
            Err(e) => {
                return Err(Corrupt {
                    path,
                    why: format!("cannot read it: {e}"),
                });
            }
        };
        let entry = match read_entry(&bytes, key) {
            Ok(entry) => entry,
            Err(Unusable::Damaged(why)) => return Err(Corrupt { path, why }),
            // Being written by another run, unless that was long ago.
            Err(Unusable::Short) => match used.elapsed() {
                Ok(age) if age > WRITE_GRACE => {
                    return Err(Corrupt {
                        path,
                        why: "a write that did not finish left it incomplete".into(),
                    });
                }
                _ => return Ok(None),
            },
        };
        // Last used now (for `prune --older-than`), to the minute: a phase of thousands of hits
        // touches each entry once. A cache on a read-only disk still serves.
        let now = SystemTime::now();
        if now.duration_since(used).is_ok_and(|age| age > USED_GRAIN) {
            let _ = file.set_modified(now);
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
        let mut bytes = format!(
            "{MAGIC} sha256:{} {}\n",
            hex::encode(Sha256::digest(&body)),
            body.len()
        )
        .into_bytes();
        bytes.extend_from_slice(&body);
        let create = || {
            std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&path)
        };
        // The shard's folder is made once, when the first entry of it is written.
        let file = match create() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path.parent().unwrap_or(&self.dir))?;
                create()
            }
            file => file,
        };
        let mut file = match file {
            Ok(file) => file,
            // Filed already (by another run, or a task with the same key).
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        };
        let written = file.write_all(&bytes);
        if written.is_err() {
            let _ = std::fs::remove_file(&path);
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

    /// Removes the entries not used for `older_than` (every entry when `None`).
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

    /// Calls `visit` for every entry (removing it when `visit` says so).
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
                if visit(&path, &meta) {
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

/// Why an entry cannot be used.
enum Unusable {
    /// Shorter than its header says (or without a whole header yet): being written.
    Short,
    /// Not what it says it is.
    Damaged(String),
}

impl From<&str> for Unusable {
    fn from(why: &str) -> Self {
        Unusable::Damaged(why.to_owned())
    }
}

fn read_entry(bytes: &[u8], key: &str) -> Result<Entry, Unusable> {
    let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
        // A header is ~100 bytes: a longer first line is not one being written.
        return Err(if bytes.len() < 256 {
            Unusable::Short
        } else {
            "it has no header line".into()
        });
    };
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "its header is not text")?;
    let (digest, len) = header
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.strip_prefix(" sha256:"))
        .and_then(|rest| rest.split_once(' '))
        .and_then(|(digest, len)| Some((digest, len.parse::<usize>().ok()?)))
        .ok_or_else(|| Unusable::Damaged(format!("its header is not `{MAGIC} sha256:… LENGTH`")))?;
    let body = &bytes[newline + 1..];
    if body.len() < len {
        return Err(Unusable::Short);
    }
    if body.len() > len || hex::encode(Sha256::digest(body)) != digest {
        return Err("its contents do not match their digest".into());
    }
    let entry: Entry = serde_json::from_slice(body)
        .map_err(|e| Unusable::Damaged(format!("its outcome cannot be read: {e}")))?;
    if entry.key != key {
        return Err(Unusable::Damaged(format!(
            "it holds the outcome of another key ({})",
            entry.key
        )));
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
        cache.remove(&corrupt);

        // Half an entry: being written (a miss, and a second writer leaves it) until it has
        // stayed so for a minute.
        cache.put(&done(&key(3))).unwrap();
        let path = cache.path(&key(3)).unwrap();
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        assert!(cache.get(&key(3), "a").unwrap().is_none());
        cache.put(&done(&key(3))).unwrap();
        assert!(cache.get(&key(3), "a").unwrap().is_none());
        std::fs::File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(120))
            .unwrap();
        let corrupt = cache.get(&key(3), "a").unwrap_err();
        assert!(corrupt.why.contains("did not finish"), "{}", corrupt.why);
        cache.remove(&corrupt);
        cache.put(&done(&key(3))).unwrap();
        assert!(cache.get(&key(3), "a").unwrap().is_some());
    }

    #[test]
    fn prune_removes_what_was_not_used_lately() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::of_project(dir.path());
        cache.put(&done(&key(1))).unwrap();
        cache.put(&done(&key(2))).unwrap();
        let old = SystemTime::now() - Duration::from_secs(10 * 86_400);
        let age = |n: u8| {
            std::fs::metadata(cache.path(&key(n)).unwrap())
                .unwrap()
                .modified()
                .unwrap()
                .elapsed()
                .unwrap_or_default()
        };
        let make_old = |n: u8| {
            std::fs::File::options()
                .append(true)
                .open(cache.path(&key(n)).unwrap())
                .unwrap()
                .set_modified(old)
                .unwrap();
        };
        // A hit marks the entry used now.
        make_old(1);
        assert!(cache.get(&key(1), "a").unwrap().is_some());
        assert!(age(1) < Duration::from_secs(60), "{:?}", age(1));
        make_old(1);
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
