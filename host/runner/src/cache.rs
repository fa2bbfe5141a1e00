//! The result cache: outcomes of observably pure tasks, filed under their keys ([`crate::key`])
//! in the project's `.phasegate/cache`.
//!
//! The cache is 256 append-only files, `00.log` to `ff.log`, a key going to the one named by its
//! first two hex digits. Each line is one record; a process gathers the records it makes for a
//! file and writes them with one `write` to the file opened for appending (so runs filling the
//! cache at once never interleave their lines):
//!
//! - `E <key> <at> <digest> <json>`: an outcome filed at `at` (Unix seconds); `digest` is the
//!   SHA-256 of `<key> <at> <json>`, so a damaged line is never taken for an outcome;
//! - `U <key> <at>`: the outcome was used at `at` (written at most once a minute per entry), for
//!   `prune --older-than`;
//! - `R <key> <at>`: the outcome was found damaged and is no longer one.
//!
//! Every record is written as `\n<line>\n`: a line torn by a crash or a full disk is ended by the
//! next record's first byte instead of swallowing it. A file is read once per process, at the
//! first lookup of one of its keys, into an index (key → its last outcome); a lookup that misses
//! reads only what others appended since. Filing an outcome the index already has writes nothing.
//!
//! Not a file per outcome: creating a file costs 13–98 µs on ext4, several times a trivial task's
//! run (BENCHMARKS.md). `prune` rewrites a file with what it keeps (temporary file, rename): an
//! outcome another run files into it meanwhile may be lost, which costs that task one run later.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use phasegate_model::outcome::Usage;
use phasegate_model::progress::{Failure, TaskState, TaskStatus};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How precisely an entry's last use is kept: a hit within this long of the last recorded one
/// writes nothing.
const USED_GRAIN: Duration = Duration::from_secs(60);

/// How many files the cache is spread over (one per value of a key's first byte).
const SHARDS: usize = 256;

/// A lookup that misses reads what others appended to its file since, at most this often: a
/// phase of thousands of misses (a first run) does not read its files back thousands of times,
/// and an outcome another run filed is seen within this long.
const REFRESH_EVERY: Duration = Duration::from_millis(50);

/// Records are gathered per file and written when this many bytes are waiting, when the first
/// has waited [`WRITE_EVERY`] at the next record, at the end of each phase
/// ([`ResultCache::flush`]) and when the cache is dropped: a `write` per outcome was half of
/// what filing cost.
const WRITE_BYTES: usize = 16 * 1024;
const WRITE_EVERY: Duration = Duration::from_millis(250);

/// What an outcome's JSON holds: a task's outcome, without its id (tasks with the same key share
/// it) or its key (the line names it).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Entry {
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

/// Why a lookup found no usable outcome.
#[derive(Debug)]
pub enum Unusable {
    /// The outcome's line does not hold (the caller forgets it with [`ResultCache::remove`]).
    Damaged(Corrupt),
    /// The file cannot be read (its folder is not one, permissions): the lookup is a miss.
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// An outcome that does not hold, and why.
#[derive(Debug)]
pub struct Corrupt {
    /// The file that holds it.
    pub path: PathBuf,
    pub key: String,
    pub why: String,
}

/// How much the cache holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    /// The cache's files, on disk.
    pub bytes: u64,
    /// When the least and the most recently used entry was last used.
    pub oldest: Option<SystemTime>,
    pub newest: Option<SystemTime>,
    /// Outcomes in the first format (a file each), no longer read: what `prune` would remove.
    pub old_format: Pruned,
}

/// What `prune` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub entries: u64,
    pub bytes: u64,
}

/// The cache in one folder. Clones share what has been read of it.
#[derive(Clone)]
pub struct ResultCache {
    dir: PathBuf,
    shards: Arc<[Mutex<Shard>]>,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

type Key = [u8; 32];

/// A key's last outcome: where its line is in the file (empty: filed by this process and not
/// read back yet), and when it was last filed or used. Lines are read again on a hit, not kept:
/// what a process holds of a large cache is its index (~60 bytes an entry).
#[derive(Clone)]
struct Rec {
    line: Range<u64>,
    at: u64,
}

/// What a process knows of one file, and what it has still to write there.
struct Shard {
    path: PathBuf,
    /// How far the file has been read (the end of its last complete line), and when (`None`:
    /// not yet).
    read: u64,
    refreshed: Option<std::time::Instant>,
    reader: Option<File>,
    writer: Option<File>,
    index: HashMap<Key, Rec>,
    /// Records not written yet, since when, and the task the first is of (named if writing
    /// them fails).
    pending: Vec<u8>,
    pending_since: Option<std::time::Instant>,
    pending_task: Option<String>,
}

impl Drop for Shard {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

/// Records that could not be written (the first task they were of, and why).
#[derive(Debug)]
pub struct Unwritten {
    pub task: String,
    pub error: std::io::Error,
}

fn shard_file(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{n:02x}.log"))
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `sha256:<64 hex digits>` as bytes; anything else is not a key (and never names a file).
fn parse_key(key: &str) -> Option<Key> {
    let hex = key.strip_prefix("sha256:")?;
    let mut bytes = [0; 32];
    hex::decode_to_slice(hex, &mut bytes).ok()?;
    Some(bytes)
}

/// An outcome's line: `E <key> <at> <digest> <json>`, the digest over `<key> <at> <json>`.
fn outcome_line(key_hex: &[u8], at: u64, json: &[u8]) -> Vec<u8> {
    let at = at.to_string();
    let digest = Sha256::new()
        .chain_update(key_hex)
        .chain_update(b" ")
        .chain_update(at.as_bytes())
        .chain_update(b" ")
        .chain_update(json)
        .finalize();
    let mut line = Vec::with_capacity(json.len() + 150);
    line.extend_from_slice(b"E ");
    line.extend_from_slice(key_hex);
    line.push(b' ');
    line.extend_from_slice(at.as_bytes());
    line.push(b' ');
    line.extend_from_slice(hex::encode(digest).as_bytes());
    line.push(b' ');
    line.extend_from_slice(json);
    line
}

/// A line's kind, key and time: `<kind> <64 hex digits> <at>[ …]`.
fn head(line: &[u8]) -> Option<(u8, Key, u64)> {
    if line.len() < 68 || line[1] != b' ' || line[66] != b' ' {
        return None;
    }
    let mut key = [0; 32];
    hex::decode_to_slice(&line[2..66], &mut key).ok()?;
    let rest = &line[67..];
    let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let at = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((line[0], key, at))
}

/// The parts of an outcome's line (`E <key> <at> <digest> <json>`) if its digest holds.
fn checked(line: &[u8]) -> Result<(&[u8], u64, &[u8]), String> {
    let damaged = || "its contents do not match their digest".to_owned();
    let (_, _, at) = head(line).ok_or_else(damaged)?;
    let key_hex = &line[2..66];
    let at_len = at.to_string().len();
    let digest_at = 67 + at_len + 1;
    let json_at = digest_at + 65;
    if line.len() <= json_at || line[json_at - 1] != b' ' {
        return Err(damaged());
    }
    let digest = Sha256::new()
        .chain_update(&line[2..digest_at])
        .chain_update(&line[json_at..])
        .finalize();
    if hex::encode(digest).as_bytes() != &line[digest_at..json_at - 1] {
        return Err(damaged());
    }
    Ok((key_hex, at, &line[json_at..]))
}

fn read_outcome(line: &[u8]) -> Result<Entry, String> {
    let (_, _, json) = checked(line)?;
    serde_json::from_slice(json).map_err(|e| format!("its outcome cannot be read: {e}"))
}

impl Shard {
    fn new(path: PathBuf) -> Self {
        Shard {
            path,
            read: 0,
            refreshed: None,
            reader: None,
            writer: None,
            index: HashMap::new(),
            pending: Vec::new(),
            pending_since: None,
            pending_task: None,
        }
    }

    /// Reads what was appended to the file since the last call, and indexes it.
    fn refresh(&mut self) -> std::io::Result<()> {
        // A read that fails does not count as one: the next lookup tries again and says why
        // (each phase says once that the cache cannot be read, whichever files its tasks use).
        let started = std::time::Instant::now();
        if self.reader.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.reader = Some(file),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.refreshed = Some(started);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(());
        };
        reader.seek(std::io::SeekFrom::Start(self.read))?;
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail)?;
        // Complete lines only: one being written is read the next time.
        let end = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut at = 0;
        while at < end {
            let stop = tail[at..end]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(end, |i| at + i);
            let offset = self.read + at as u64;
            self.index_line(&tail[at..stop], offset..offset + (stop - at) as u64);
            at = stop + 1;
        }
        self.read += end as u64;
        self.refreshed = Some(started);
        Ok(())
    }

    fn index_line(&mut self, text: &[u8], line: Range<u64>) {
        let Some((kind, key, at)) = head(text) else {
            return;
        };
        match kind {
            b'E' => {
                self.index.insert(key, Rec { line, at });
            }
            b'U' => {
                if let Some(rec) = self.index.get_mut(&key) {
                    rec.at = rec.at.max(at);
                }
            }
            b'R' => {
                self.index.remove(&key);
            }
            _ => {}
        }
    }

    /// An outcome's line, read from the file it was indexed from.
    fn line(&self, rec: &Rec) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt as _;
        let reader = self
            .reader
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the file is not open"))?;
        let mut line = vec![0; usize::try_from(rec.line.end - rec.line.start).unwrap_or(0)];
        reader.read_exact_at(&mut line, rec.line.start)?;
        Ok(line)
    }

    /// Adds a record for `task` to those waiting, and writes them if they have waited enough.
    fn append(&mut self, task: &str, line: &[u8]) -> std::io::Result<()> {
        self.pending.push(b'\n');
        self.pending.extend_from_slice(line);
        self.pending.push(b'\n');
        let since = *self
            .pending_since
            .get_or_insert_with(std::time::Instant::now);
        if self.pending_task.is_none() {
            self.pending_task = Some(task.to_owned());
        }
        if self.pending.len() >= WRITE_BYTES || since.elapsed() >= WRITE_EVERY {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Writes the waiting records with one `write` to the file opened for appending (so that
    /// records of runs writing at once never interleave). On failure they are dropped: an
    /// outcome not filed only costs its task a run later.
    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        let written = self
            .open_writer()
            .and_then(|writer| writer.write_all(&pending));
        pending.clear();
        self.pending = pending;
        self.pending_since = None;
        self.pending_task = None;
        written
    }

    fn open_writer(&mut self) -> std::io::Result<&mut File> {
        let file = match self.writer.take() {
            Some(file) => file,
            None => {
                let open = || File::options().append(true).create(true).open(&self.path);
                match open() {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if let Some(dir) = self.path.parent() {
                            std::fs::create_dir_all(dir)?;
                        }
                        open()
                    }
                    file => file,
                }?
            }
        };
        Ok(self.writer.insert(file))
    }
}

impl ResultCache {
    /// The cache of the project rooted at `root` (`root/.phasegate/cache`).
    pub fn of_project(root: &Path) -> Self {
        let dir = root.join(".phasegate").join("cache");
        let shards = (0..SHARDS)
            .map(|n| Mutex::new(Shard::new(shard_file(&dir, n))))
            .collect();
        ResultCache { dir, shards }
    }

    /// The cache's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, shard: usize) -> PathBuf {
        shard_file(&self.dir, shard)
    }

    /// The outcome filed under `key` as task `id`'s record, if there is one; why not, when that
    /// is worth saying.
    pub fn get(&self, key: &str, id: &str) -> Result<Option<TaskState>, Unusable> {
        let Some(k) = parse_key(key) else {
            return Ok(None);
        };
        let mut shard = lock(&self.shards[usize::from(k[0])]);
        let unreadable = |shard: &Shard, error| Unusable::Unreadable {
            path: shard.path.clone(),
            error,
        };
        // Read again when the key is missing, or when this process filed it (its line is on
        // disk, not in memory: written first).
        let ours = shard.index.get(&k).map(|rec| rec.line.is_empty());
        if ours == Some(true) {
            let _ = shard.write_pending();
        }
        let read = ours.unwrap_or_else(|| {
            shard
                .refreshed
                .is_none_or(|at| at.elapsed() >= REFRESH_EVERY)
        });
        if read && let Err(error) = shard.refresh() {
            return Err(unreadable(&shard, error));
        }
        let Some(rec) = shard.index.get(&k).filter(|r| !r.line.is_empty()).cloned() else {
            return Ok(None);
        };
        let line = match shard.line(&rec) {
            Ok(line) => line,
            Err(error) => return Err(unreadable(&shard, error)),
        };
        let entry = match read_outcome(&line) {
            Ok(entry) => entry,
            Err(why) => {
                return Err(Unusable::Damaged(Corrupt {
                    path: shard.path.clone(),
                    key: key.to_owned(),
                    why,
                }));
            }
        };
        // Last used now (for `prune --older-than`), to the minute: a phase of thousands of hits
        // marks each entry once. A cache on a read-only disk still serves.
        let now = unix_now();
        if now.saturating_sub(rec.at) > USED_GRAIN.as_secs()
            && shard
                .append(id, format!("U {} {now}", &key[7..]).as_bytes())
                .is_ok()
            && let Some(rec) = shard.index.get_mut(&k)
        {
            rec.at = now;
        }
        let mut task = TaskState::pending(id);
        task.status = entry.status;
        task.attempts = entry.attempts;
        task.duration_ms = entry.duration_ms;
        task.output = entry.output;
        task.error = entry.error;
        task.log = entry.log;
        task.usage = entry.usage;
        task.key = Some(key.to_owned());
        task.cached = true;
        Ok(Some(task))
    }

    /// Files `task`'s outcome under its key, unless it is filed already. Errors are the caller's
    /// to report: a run does not fail because its cache cannot be written.
    pub fn put(&self, task: &TaskState) -> std::io::Result<()> {
        self.put_at(task, unix_now())
    }

    fn put_at(&self, task: &TaskState, at: u64) -> std::io::Result<()> {
        let Some(key) = task.key.as_deref() else {
            return Ok(());
        };
        let Some(k) = parse_key(key) else {
            return Ok(());
        };
        let mut shard = lock(&self.shards[usize::from(k[0])]);
        // What others filed, once (a file that cannot be read is only a duplicate risk here).
        if shard.refreshed.is_none() {
            let _ = shard.refresh();
        }
        if shard.index.contains_key(&k) {
            return Ok(());
        }
        let entry = Entry {
            status: task.status,
            attempts: task.attempts,
            duration_ms: task.duration_ms,
            output: task.output.clone(),
            error: task.error.clone(),
            log: task.log.clone(),
            usage: task.usage,
        };
        let json = serde_json::to_vec(&entry).map_err(std::io::Error::other)?;
        let line = outcome_line(&key.as_bytes()[7..], at, &json);
        shard.append(&task.id, &line)?;
        // Read back when looked up (rarely: another task with the same key), not kept twice.
        shard.index.insert(k, Rec { line: 0..0, at });
        Ok(())
    }

    /// Forgets an outcome found corrupt, in this process and for later ones.
    pub fn remove(&self, corrupt: &Corrupt) {
        let Some(k) = parse_key(&corrupt.key) else {
            return;
        };
        let n = usize::from(k[0]);
        let mut shard = lock(&self.shards[n]);
        shard.index.remove(&k);
        let line = format!("R {} {}", &corrupt.key[7..], unix_now());
        let _ = shard.append("", line.as_bytes());
        let _ = shard.write_pending();
    }

    /// Writes every record still waiting (see [`WRITE_BYTES`]); on failure, says the first task
    /// whose outcome was not filed.
    pub fn flush(&self) -> Result<(), Unwritten> {
        let mut failed = None;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let task = shard.pending_task.clone().unwrap_or_default();
            if let Err(error) = shard.write_pending() {
                failed.get_or_insert(Unwritten { task, error });
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Reads file `n` whole (a process's own view, not the shared one), with its size; `None`
    /// when there is no such file.
    fn read_whole(&self, n: usize) -> std::io::Result<Option<(Shard, u64)>> {
        let path = self.file(n);
        let len = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut shard = Shard::new(path);
        shard.refresh()?;
        Ok(Some((shard, len)))
    }

    /// How many entries the cache holds, its size, and when they were used.
    pub fn stats(&self) -> std::io::Result<Stats> {
        let _ = self.flush();
        let mut stats = Stats::default();
        for n in 0..SHARDS {
            let Some((shard, len)) = self.read_whole(n)? else {
                continue;
            };
            stats.bytes += len;
            for rec in shard.index.values() {
                stats.entries += 1;
                let used = SystemTime::UNIX_EPOCH + Duration::from_secs(rec.at);
                stats.oldest = Some(stats.oldest.map_or(used, |o| o.min(used)));
                stats.newest = Some(stats.newest.map_or(used, |n| n.max(used)));
            }
        }
        stats.old_format = old_format(&self.dir, false)?;
        Ok(stats)
    }

    /// Removes the entries not used for `older_than` (every entry when `None`), and damaged
    /// ones; each file is rewritten with what it keeps, one line per entry.
    pub fn prune(&self, older_than: Option<Duration>) -> std::io::Result<Pruned> {
        let mut pruned = Pruned::default();
        let lock_file = match File::create(self.dir.join("prune.lock")) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pruned),
            Err(e) => return Err(e),
        };
        // One prune at a time; runs go on filling the cache meanwhile.
        lock_file.lock()?;
        // What this process has still to file is pruned like the rest, and what it read is
        // read again.
        let _ = self.flush();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            let path = std::mem::take(&mut shard.path);
            *shard = Shard::new(path);
        }
        let now = unix_now();
        for n in 0..SHARDS {
            let Some((shard, len)) = self.read_whole(n)? else {
                continue;
            };
            let mut kept = Vec::new();
            for rec in shard.index.values() {
                let recent =
                    older_than.is_some_and(|age| now.saturating_sub(rec.at) < age.as_secs());
                let line = shard.line(rec)?;
                match checked(&line) {
                    Ok((key_hex, _, json)) if recent => {
                        kept.push(b'\n');
                        kept.extend_from_slice(&outcome_line(key_hex, rec.at, json));
                        kept.push(b'\n');
                    }
                    _ => pruned.entries += 1,
                }
            }
            let path = self.file(n);
            if kept.is_empty() {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            } else {
                phasegate_store::write_atomically(&path, &kept)?;
            }
            pruned.bytes += len.saturating_sub(kept.len() as u64);
        }
        pruned.add(old_format(&self.dir, true)?);
        Ok(pruned)
    }
}

impl Pruned {
    fn add(&mut self, other: Pruned) {
        self.entries += other.entries;
        self.bytes += other.bytes;
    }
}

/// Counts the folders of the first cache format (a file per entry, `ab/cdef…`), which no lookup
/// reads any more, and removes them when `remove`.
fn old_format(dir: &Path, remove: bool) -> std::io::Result<Pruned> {
    let mut pruned = Pruned::default();
    let shards = match std::fs::read_dir(dir) {
        Ok(shards) => shards,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pruned),
        Err(e) => return Err(e),
    };
    for shard in shards {
        let shard = shard?;
        let name = shard.file_name();
        let name = name.to_string_lossy();
        if !shard.file_type()?.is_dir()
            || name.len() != 2
            || !name.bytes().all(|b| b.is_ascii_hexdigit())
        {
            continue;
        }
        for file in std::fs::read_dir(shard.path())? {
            if let Ok(meta) = file?.metadata() {
                pruned.entries += 1;
                pruned.bytes += meta.len();
            }
        }
        if remove {
            std::fs::remove_dir_all(shard.path())?;
        }
    }
    Ok(pruned)
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

    fn damaged(got: Result<Option<TaskState>, Unusable>) -> Corrupt {
        match got {
            Err(Unusable::Damaged(corrupt)) => corrupt,
            other => panic!("not damaged: {other:?}"),
        }
    }

    /// Another process's view of the same cache.
    fn again(cache: &ResultCache) -> ResultCache {
        ResultCache::of_project(cache.dir.parent().unwrap().parent().unwrap())
    }

    fn file_of(cache: &ResultCache, n: u8) -> PathBuf {
        cache.file(usize::from(n))
    }

    fn append_raw(path: &Path, bytes: &[u8]) {
        std::fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
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
        assert_eq!(back.key.as_deref(), Some(key(1).as_str()));
        assert_eq!(back.output.as_deref(), Some(r#"{"n":1}"#));
        assert_eq!(back.log, ["info: hi"]);
        assert!(cache.get(&key(2), "a").unwrap().is_none());
        // Not a key: never a path.
        assert!(cache.get("sha256:../../etc", "a").unwrap().is_none());

        // Outcomes wait to be written together; another process sees them once they are, and
        // what this one files after it first looked.
        let other = again(&cache);
        assert!(other.get(&key(1), "c").unwrap().is_some());
        assert!(other.get(&key(2), "c").unwrap().is_none());
        cache.put(&done(&key(2))).unwrap();
        cache.flush().unwrap();
        // Another run's outcomes are seen once a miss reads the file again.
        std::thread::sleep(REFRESH_EVERY);
        assert!(other.get(&key(2), "c").unwrap().is_some());
        // Filing a key filed already writes nothing.
        let len = std::fs::metadata(file_of(&cache, 2)).unwrap().len();
        cache.put(&done(&key(2))).unwrap();
        other.put(&done(&key(2))).unwrap();
        cache.flush().unwrap();
        other.flush().unwrap();
        assert_eq!(std::fs::metadata(file_of(&cache, 2)).unwrap().len(), len);
        // Dropping the cache writes what waits.
        cache.put(&done(&key(6))).unwrap();
        assert!(!file_of(&cache, 6).exists());
        drop(cache);
        assert!(again(&other).get(&key(6), "d").unwrap().is_some());
    }

    #[test]
    fn many_outcomes_are_written_together_and_a_failed_write_names_a_task() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::of_project(dir.path());
        let path = file_of(&cache, 7);
        let mut writes = 0;
        let mut len = 0;
        for i in 0..200u8 {
            let mut task = done(&format!("sha256:07{}", hex::encode([i; 31])));
            task.id = format!("t{i}").into();
            cache.put(&task).unwrap();
            let now = std::fs::metadata(&path).map_or(0, |m| m.len());
            if now != len {
                writes += 1;
                len = now;
            }
        }
        cache.flush().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > len);
        assert!((1..10).contains(&writes), "{writes} writes");
        assert_eq!(cache.stats().unwrap().entries, 200);

        // The cache's folder is a file: nothing can be written, and the first task is named.
        let blocked = tempfile::tempdir().unwrap();
        std::fs::create_dir(blocked.path().join(".phasegate")).unwrap();
        std::fs::write(blocked.path().join(".phasegate/cache"), "").unwrap();
        let cache = ResultCache::of_project(blocked.path());
        assert!(matches!(
            cache.get(&key(8), "first"),
            Err(Unusable::Unreadable { .. })
        ));
        // Looked up again at once, in the same file: still unreadable, and said so (a later
        // phase whose tasks use only files tried before says it too).
        assert!(matches!(
            cache.get(&format!("sha256:08{}", "ab".repeat(31)), "again"),
            Err(Unusable::Unreadable { .. })
        ));
        let mut first = done(&key(8));
        first.id = "first".into();
        cache.put(&first).unwrap();
        cache.put(&done(&key(9))).unwrap();
        let unwritten = cache.flush().unwrap_err();
        assert_eq!(unwritten.task, "first");
    }

    #[test]
    fn a_damaged_entry_is_reported_not_used_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::of_project(dir.path());
        cache.put(&done(&key(1))).unwrap();
        cache.flush().unwrap();
        let path = file_of(&cache, 1);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let reader = again(&cache);
        let corrupt = damaged(reader.get(&key(1), "a"));
        assert!(corrupt.why.contains("do not match"), "{}", corrupt.why);
        assert_eq!(corrupt.path, path);
        reader.remove(&corrupt);
        assert!(reader.get(&key(1), "a").unwrap().is_none());
        // Forgotten for later processes too, until it is filed again.
        assert!(again(&cache).get(&key(1), "a").unwrap().is_none());
        reader.put(&done(&key(1))).unwrap();
        reader.flush().unwrap();
        assert!(again(&cache).get(&key(1), "a").unwrap().is_some());

        // A line moved under another key does not match its digest either.
        cache.put(&done(&key(2))).unwrap();
        cache.flush().unwrap();
        let text = std::fs::read_to_string(file_of(&cache, 2)).unwrap();
        let moved = text.replace(&key(2)[7..], &key(3)[7..]);
        std::fs::write(file_of(&cache, 3), moved).unwrap();
        let corrupt = damaged(again(&cache).get(&key(3), "a"));
        assert!(corrupt.why.contains("do not match"), "{}", corrupt.why);
    }

    #[test]
    fn a_line_being_written_is_a_miss_and_a_torn_one_takes_nothing_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::of_project(dir.path());
        let writer = again(&cache);
        writer.put(&done(&key(4))).unwrap();
        writer.flush().unwrap();
        let path = file_of(&cache, 4);
        let whole = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // Half of it written: a miss; the rest arrives: a hit.
        append_raw_new(&path, &whole[..whole.len() - 10]);
        assert!(cache.get(&key(4), "a").unwrap().is_none());
        append_raw(&path, &whole[whole.len() - 10..]);
        std::thread::sleep(REFRESH_EVERY);
        assert!(cache.get(&key(4), "a").unwrap().is_some());

        // A write torn for good (a crash), then another run's record: the torn line is damaged,
        // the next record is whole.
        let mut other = done(&key(5));
        other.key = Some(format!("sha256:04{}", &key(5)[9..]));
        append_raw(&path, &whole[..whole.len() / 2]);
        again(&cache).put(&other).unwrap();
        let reader = again(&cache);
        assert!(
            reader
                .get(other.key.as_deref().unwrap(), "a")
                .unwrap()
                .is_some()
        );
        damaged(reader.get(&key(4), "a"));
    }

    fn append_raw_new(path: &Path, bytes: &[u8]) {
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn prune_removes_what_was_not_used_lately_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::of_project(dir.path());
        let old = unix_now() - 10 * 86_400;
        cache.put_at(&done(&key(1)), old).unwrap();
        cache.put(&done(&key(2))).unwrap();
        cache.put_at(&done(&key(3)), old).unwrap();
        cache.flush().unwrap();
        // A hit marks an entry used now (once a minute).
        let reader = again(&cache);
        assert!(reader.get(&key(3), "a").unwrap().is_some());
        assert!(reader.get(&key(3), "a").unwrap().is_some());
        reader.flush().unwrap();
        let text = std::fs::read_to_string(file_of(&cache, 3)).unwrap();
        assert_eq!(text.matches("\nU ").count(), 1, "{text}");

        let stats = cache.stats().unwrap();
        assert_eq!(stats.entries, 3);
        assert_eq!(
            stats.oldest,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(old))
        );
        assert!(stats.newest.unwrap().elapsed().unwrap() < Duration::from_secs(60));
        let pruned = cache.prune(Some(Duration::from_secs(86_400))).unwrap();
        assert_eq!(pruned.entries, 1);
        assert!(!file_of(&cache, 1).exists());
        let fresh = again(&cache);
        assert!(fresh.get(&key(1), "a").unwrap().is_none());
        assert!(fresh.get(&key(2), "a").unwrap().is_some());
        assert!(fresh.get(&key(3), "a").unwrap().is_some());
        // What was kept is one line per entry, its last use kept.
        let text = std::fs::read_to_string(file_of(&cache, 3)).unwrap();
        assert_eq!(text.matches("\nE ").count(), 1, "{text}");
        assert_eq!(text.matches("\nU ").count(), 0, "{text}");
        assert_eq!(cache.stats().unwrap().entries, 2);
        assert_eq!(
            cache
                .prune(Some(Duration::from_secs(86_400)))
                .unwrap()
                .entries,
            0
        );

        // The first format's folders go with the first prune of everything.
        std::fs::create_dir_all(cache.dir().join("ab")).unwrap();
        std::fs::write(cache.dir().join("ab").join("cdef"), "x").unwrap();
        let stats = cache.stats().unwrap();
        assert_eq!((stats.entries, stats.old_format.entries), (2, 1));
        assert!(cache.get(&key(2), "a").unwrap().is_some());
        let pruned = cache.prune(None).unwrap();
        assert_eq!(pruned.entries, 3);
        // The pruning process forgets what it had read, too.
        assert!(cache.get(&key(2), "a").unwrap().is_none());
        assert_eq!(cache.stats().unwrap(), Stats::default());
        assert!(!cache.dir().join("ab").exists());
    }
}
