//! The digest of a read-only directory a task is granted, as its key sees it ([`crate::key`]),
//! and what keeps taking it again cheap: a file whose identity, size and times have not changed
//! since its contents were last read is not read again.
//!
//! A tree's digest covers, for every entry in name order, its path, kind, permissions, size,
//! modification time, and a file's contents or a link's target. Reading every file's contents
//! is what costs: without a memo, a gigabyte granted to the tasks of five phases would be read
//! five times a run, and again by every run. Each file's contents digest is therefore
//! remembered with the file's *stamp* — device, inode, size, modification time and
//! status-change time, to the nanosecond — and used again while the stamp is the same. Writing a file changes its
//! status-change time (ctime), which no unprivileged process can set back (`touch -d`,
//! `cp -p` and `rsync -t` set the modification time only), so an edit that keeps the size and
//! restores the modification time is still seen (except on file systems with no ctime of their
//! own, such as FAT, which report the modification time for it).
//!
//! The files a walk must read are read after it, on several threads when they add up to
//! [`READ_ON_THREADS_FROM`] or more, each digest put where the walk met its file.
//!
//! A file changed less than [`SETTLE`] ago is read but not remembered: file systems keep times
//! in ticks of a few milliseconds, and two writes in one tick would leave the same stamp (git's
//! "racy" files, solved the same way). Neither is a file whose stamp changed while it was read.
//!
//! The memo is kept between runs in the project's `.phasegate/trees` (a line per file:
//! digest, stamp, path), rewritten atomically after a phase's trees are digested when it
//! learnt something; a walk drops what it no longer finds under its root, and a rewrite drops
//! files that no longer exist (of trees that are gone). It is only ever an
//! accelerator: a memo that cannot be read (or is in another format) is started afresh, one
//! that cannot be written leaves the next run reading files in full, and removing it is always
//! safe. It is trusted as `.phasegate/` is: whoever can write there can also edit the progress
//! file and the result cache.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::fields::Fields;

/// How long ago a file must have last changed for its contents digest to be remembered.
pub const SETTLE: Duration = Duration::from_secs(2);

/// The first line of a memo file: a memo in another format is not read.
const HEADER: &str = "phasegate tree digests 1";

/// Tree digests, with the memo of file contents digests they share.
pub struct TreeDigests {
    memo: Mutex<Memo>,
    /// Where the memo is kept between processes, when anywhere.
    file: Option<PathBuf>,
    settle: Duration,
    /// Files to read together at least this large are read on several threads.
    threads_from: u64,
}

#[derive(Default)]
struct Memo {
    /// Whether the memo file was read (it is, at the first walk).
    loaded: bool,
    /// By the file's path under its root's canonical path.
    files: HashMap<PathBuf, Entry>,
    /// Whether `files` differs from the memo file.
    changed: bool,
}

#[derive(Clone, Copy)]
struct Entry {
    stamp: Stamp,
    digest: [u8; 32],
}

/// What says a file is the one whose contents were read: its identity, size and times.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    ctime: i64,
    ctime_ns: i64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_ns: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_ns: meta.ctime_nsec(),
        }
    }

    /// Whether the file last changed at least `settle` before `now`.
    fn settled(&self, now: SystemTime, settle: Duration) -> bool {
        let nanos = |s: i64, ns: i64| i128::from(s) * 1_000_000_000 + i128::from(ns);
        let last = nanos(self.mtime, self.mtime_ns).max(nanos(self.ctime, self.ctime_ns));
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        last + settle.as_nanos() as i128 <= now
    }
}

/// One walk of a tree: its digest, and how much of it had to be read.
#[derive(Debug)]
pub struct Walk {
    /// `sha256:` and hex, or why the tree cannot be read.
    pub digest: Result<String, String>,
    /// Regular files in the tree.
    pub files: u64,
    /// Of those, the ones read (their contents digest was not remembered, or no longer held).
    pub read: u64,
    /// The bytes read.
    pub read_bytes: u64,
}

impl TreeDigests {
    /// Digests that remember file contents digests for as long as this value lives.
    pub fn in_memory() -> Self {
        Self::with(None, SETTLE, READ_ON_THREADS_FROM)
    }

    /// Digests whose memo is also kept in `file` (the project's `.phasegate/trees`).
    pub fn kept_in(file: PathBuf) -> Self {
        Self::with(Some(file), SETTLE, READ_ON_THREADS_FROM)
    }

    fn with(file: Option<PathBuf>, settle: Duration, threads_from: u64) -> Self {
        TreeDigests {
            memo: Mutex::new(Memo::default()),
            file,
            settle,
            threads_from,
        }
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if !memo.loaded {
            memo.loaded = true;
            if let Some(files) = self.file.as_deref().and_then(read_memo) {
                memo.files = files;
            }
        }
        memo
    }

    /// The digest of the tree at `root` as a plugin granted it can see it, reading only the
    /// files whose contents digest is not remembered.
    pub fn digest(&self, root: &Path) -> Walk {
        let mut walk = Walker {
            digests: self,
            root,
            base: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_owned()),
            seen: HashSet::new(),
            learnt: Vec::new(),
            unread: Vec::new(),
            files: 0,
            read: 0,
            read_bytes: 0,
        };
        let mut f = Fields::new("tree");
        let digest = walk
            .dir(root, &mut f)
            .and_then(|()| walk.read_unread(&mut f))
            .map(|()| f.finish())
            .map_err(|e| format!("cannot read granted directory {}: {e}", root.display()));
        let mut memo = self.memo();
        if digest.is_ok() {
            // What is no longer under the root is forgotten.
            let before = memo.files.len();
            memo.files
                .retain(|path, _| walk.seen.contains(path) || !path.starts_with(&walk.base));
            memo.changed |= memo.files.len() != before;
        }
        memo.changed |= !walk.learnt.is_empty();
        memo.files.extend(walk.learnt.drain(..));
        Walk {
            digest,
            files: walk.files,
            read: walk.read,
            read_bytes: walk.read_bytes,
        }
    }

    /// Writes the memo to its file when it has one and learnt something since it was read.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut memo = self.memo();
        if !memo.changed {
            return Ok(());
        }
        // Files of trees no walk here went through (another pipeline's, or a folder made for
        // one run) are kept while they exist: the memo does not grow with trees that are gone.
        memo.files
            .retain(|path, _| std::fs::symlink_metadata(path).is_ok());
        let mut entries: Vec<_> = memo.files.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut text = String::with_capacity(64 + entries.len() * 160);
        text.push_str(HEADER);
        text.push('\n');
        for (path, e) in entries {
            let s = &e.stamp;
            text.push_str(&hex::encode(e.digest));
            for n in [s.dev, s.ino, s.size] {
                text.push(' ');
                text.push_str(itoa::Buffer::new().format(n));
            }
            for n in [s.mtime, s.mtime_ns, s.ctime, s.ctime_ns] {
                text.push(' ');
                text.push_str(itoa::Buffer::new().format(n));
            }
            text.push(' ');
            escape(path.as_os_str().as_bytes(), &mut text);
            text.push('\n');
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        phasegate_store::write_atomically(file, text.as_bytes())?;
        memo.changed = false;
        Ok(())
    }
}

/// One walk's state: what it saw and learnt, merged into the memo when it ends (the memo is
/// not locked while files are read).
struct Walker<'a> {
    digests: &'a TreeDigests,
    root: &'a Path,
    /// The root's canonical path: what the memo's paths start with.
    base: PathBuf,
    seen: HashSet<PathBuf>,
    learnt: Vec<(PathBuf, Entry)>,
    /// Files whose contents must be read, in walk order, each with where its digest goes.
    unread: Vec<Unread>,
    files: u64,
    read: u64,
    read_bytes: u64,
}

/// A file the walk found no remembered digest for.
struct Unread {
    /// Where its 32 bytes go in the walk's fields.
    at: usize,
    /// Its path under the root's canonical path (as the memo knows it).
    known: PathBuf,
    stamp: Stamp,
}

/// A file read: its contents digest, its size as read, and whether the digest may be
/// remembered (its stamp held while it was read, and it had settled).
type Read = std::io::Result<([u8; 32], u64, bool)>;

/// Files to read together at least this large are read on several threads (below, starting
/// threads costs more than it saves).
pub const READ_ON_THREADS_FROM: u64 = 8 << 20;

impl Walker<'_> {
    fn dir(&mut self, dir: &Path, f: &mut Fields) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let relative = path.strip_prefix(self.root).unwrap_or(&path);
            f.text("entry", &relative.to_string_lossy())
                .add(&meta.mode().to_le_bytes())
                .add(&meta.size().to_le_bytes())
                .add(&meta.mtime().to_le_bytes())
                .add(&meta.mtime_nsec().to_le_bytes());
            let kind = meta.file_type();
            if kind.is_dir() {
                self.dir(&path, f)?;
            } else if kind.is_symlink() {
                f.text("target", &std::fs::read_link(&path)?.to_string_lossy());
            } else if kind.is_file() {
                self.contents(self.base.join(relative), &meta, f);
            }
        }
        Ok(())
    }

    /// The contents digest of the file at `known` (under the root's canonical path), whose
    /// metadata is `meta`, into `f`: the remembered one, or a place for it that
    /// [`Self::read_unread`] fills.
    fn contents(&mut self, known: PathBuf, meta: &std::fs::Metadata, f: &mut Fields) {
        self.files += 1;
        let stamp = Stamp::of(meta);
        let remembered = self
            .digests
            .memo()
            .files
            .get(&known)
            .filter(|e| e.stamp == stamp)
            .map(|e| e.digest);
        f.add(&remembered.unwrap_or_default());
        match remembered {
            Some(_) => {
                self.seen.insert(known);
            }
            None => self.unread.push(Unread {
                at: f.0.len() - 32,
                known,
                stamp,
            }),
        }
    }

    /// Reads the files the walk found no digest for (on several threads when there is much to
    /// read) and puts their digests in place.
    fn read_unread(&mut self, f: &mut Fields) -> std::io::Result<()> {
        let unread = std::mem::take(&mut self.unread);
        let total: u64 = unread.iter().map(|u| u.stamp.size).sum();
        let threads = if total >= self.digests.threads_from {
            phasegate_model::pipeline::loading_threads().min(unread.len())
        } else {
            1
        };
        let settle = self.digests.settle;
        let results: Vec<std::sync::OnceLock<Read>> =
            unread.iter().map(|_| std::sync::OnceLock::new()).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Each thread takes the next file until none is left; a file whose thread panicked or
        // could not start is read below.
        let workers: Vec<usize> = (0..threads).collect();
        phasegate_model::pipeline::on_threads(&workers, |_| {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(u) = unread.get(i) else { break };
                let _ = results[i].set(read_file(&u.known, u.stamp, settle));
            }
        });
        for (u, result) in unread.into_iter().zip(results) {
            let (digest, bytes, lasting) = match result.into_inner() {
                Some(read) => read?,
                None => read_file(&u.known, u.stamp, settle)?,
            };
            self.read += 1;
            self.read_bytes += bytes;
            f.0[u.at..u.at + 32].copy_from_slice(&digest);
            if lasting {
                self.learnt.push((
                    u.known.clone(),
                    Entry {
                        stamp: u.stamp,
                        digest,
                    },
                ));
            }
            self.seen.insert(u.known);
        }
        Ok(())
    }
}

/// Reads the file at `path`, whose stamp was `stamp` when the walk met it.
fn read_file(path: &Path, stamp: Stamp, settle: Duration) -> Read {
    let now = SystemTime::now();
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    let digest: [u8; 32] = hasher.finalize().into();
    let unchanged = file.metadata().is_ok_and(|m| Stamp::of(&m) == stamp);
    Ok((digest, bytes, unchanged && stamp.settled(now, settle)))
}

/// A path's bytes on one line: `%`, controls, space and bytes above 0x7e as `%XX`.
fn escape(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b == b'%' || b <= b' ' || b > b'~' {
            out.push('%');
            out.push_str(&format!("{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
}

fn unescape(text: &str) -> Option<PathBuf> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(PathBuf::from(OsString::from_vec(out)))
}

/// The memo in `file`, or `None` when there is none, it cannot be read, it does not end a line
/// (cut short), or any line of it is not one [`TreeDigests::save`] writes (then it is started
/// afresh).
fn read_memo(file: &Path) -> Option<HashMap<PathBuf, Entry>> {
    let text = std::fs::read_to_string(file).ok()?;
    if !text.ends_with('\n') {
        return None;
    }
    let mut lines = text.lines();
    if lines.next()? != HEADER {
        return None;
    }
    let mut files = HashMap::new();
    for line in lines {
        let mut parts = line.splitn(9, ' ');
        let mut digest = [0u8; 32];
        hex::decode_to_slice(parts.next()?, &mut digest).ok()?;
        let mut u = || parts.next()?.parse::<u64>().ok();
        let (dev, ino, size) = (u()?, u()?, u()?);
        let mut i = || parts.next()?.parse::<i64>().ok();
        let stamp = Stamp {
            dev,
            ino,
            size,
            mtime: i()?,
            mtime_ns: i()?,
            ctime: i()?,
            ctime_ns: i()?,
        };
        files.insert(unescape(parts.next()?)?, Entry { stamp, digest });
    }
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tree of two files and a link, and digests that remember files changed at any time.
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "alpha").unwrap();
        std::fs::write(root.join("sub/b.txt"), "bravo").unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
        (dir, root)
    }

    fn counts(w: &Walk) -> (u64, u64) {
        (w.files, w.read)
    }

    #[test]
    fn a_tree_digest_follows_contents_names_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let digest = |root: &Path| TreeDigests::in_memory().digest(root).digest;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.txt"), "one").unwrap();
        let first = digest(dir.path()).unwrap();
        assert_eq!(digest(dir.path()).unwrap(), first);
        let file = dir.path().join("sub/a.txt");
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        // The same size and time, one byte changed.
        std::fs::write(&file, "onE").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        let edited = digest(dir.path()).unwrap();
        assert_ne!(edited, first);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(digest(dir.path()).unwrap(), edited);
        std::fs::rename(&file, dir.path().join("sub/b.txt")).unwrap();
        assert_ne!(digest(dir.path()).unwrap(), edited);
        assert!(digest(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn unchanged_files_are_not_read_again_and_the_digest_is_the_same() {
        let (_dir, root) = tree();
        let digests = TreeDigests::with(None, Duration::ZERO, READ_ON_THREADS_FROM);
        let first = digests.digest(&root);
        assert_eq!(counts(&first), (2, 2));
        let again = digests.digest(&root);
        assert_eq!(counts(&again), (2, 0));
        assert_eq!(again.digest, first.digest);
        // What a walk that reads every file makes.
        assert_eq!(TreeDigests::in_memory().digest(&root).digest, first.digest);
    }

    /// The edit no stamp but the status-change time shows: the same size, the modification
    /// time set back (as `touch -d` or `cp -p` would).
    #[test]
    fn an_edit_that_keeps_size_and_modification_time_is_read() {
        let (_dir, root) = tree();
        let digests = TreeDigests::with(None, Duration::ZERO, READ_ON_THREADS_FROM);
        let first = digests.digest(&root);
        let file = root.join("sub/b.txt");
        let before = std::fs::metadata(&file).unwrap();
        // The next status change must fall in another tick of the file system's clock.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, "braVo").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(before.modified().unwrap())
            .unwrap();
        let after = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (after.len(), after.modified().unwrap()),
            (before.len(), before.modified().unwrap())
        );
        let edited = digests.digest(&root);
        assert_eq!(counts(&edited), (2, 1));
        assert_ne!(edited.digest, first.digest);
        assert_eq!(edited.digest, TreeDigests::in_memory().digest(&root).digest);
    }

    /// Files read on several threads (each taking the next) land in the digest where the walk
    /// met them: the digest is the one a single thread makes, and so are the counts.
    #[test]
    fn reading_on_threads_makes_the_digest_one_thread_makes() {
        let (_dir, root) = tree();
        for i in 0..40 {
            let sub = root.join(format!("d{}", i % 7));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i}")), vec![i as u8; 1 + i * 997]).unwrap();
        }
        let one = TreeDigests::with(None, Duration::ZERO, u64::MAX).digest(&root);
        let many = TreeDigests::with(None, Duration::ZERO, 0).digest(&root);
        assert_eq!(many.digest, one.digest);
        assert_eq!(
            (many.files, many.read, many.read_bytes),
            (one.files, one.read, one.read_bytes)
        );
        assert_eq!(one.read, 42);
    }

    #[test]
    fn files_changed_less_than_the_settle_time_ago_are_read_every_time() {
        let (_dir, root) = tree();
        let digests = TreeDigests::with(None, Duration::from_secs(3600), READ_ON_THREADS_FROM);
        assert_eq!(counts(&digests.digest(&root)), (2, 2));
        assert_eq!(counts(&digests.digest(&root)), (2, 2));
    }

    #[test]
    fn the_memo_is_kept_in_its_file_and_a_damaged_one_is_started_afresh() {
        let (dir, root) = tree();
        let file = dir.path().join(".phasegate/trees");
        let first = TreeDigests::with(Some(file.clone()), Duration::ZERO, READ_ON_THREADS_FROM);
        let digest = first.digest(&root).digest;
        first.save().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");

        // Another process: nothing read.
        let second = TreeDigests::with(Some(file.clone()), Duration::ZERO, READ_ON_THREADS_FROM);
        let walk = second.digest(&root);
        assert_eq!((counts(&walk), &walk.digest), ((2, 0), &digest));

        // A removed file is forgotten; the memo is written again.
        std::fs::remove_file(root.join("a.txt")).unwrap();
        let walk = second.digest(&root);
        assert_eq!(counts(&walk), (1, 0));
        second.save().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);

        // A tree that is gone (another pipeline's, a folder made for one run) leaves the memo
        // at the next rewrite.
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("c.txt"), "charlie").unwrap();
        second.digest(&other);
        second.save().unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
        std::fs::remove_dir_all(&other).unwrap();
        std::fs::write(root.join("new.txt"), "new").unwrap();
        second.digest(&root);
        second.save().unwrap();
        let kept = std::fs::read_to_string(&file).unwrap();
        assert_eq!(kept.lines().count(), 3, "{kept}");
        assert!(!kept.contains("c.txt"), "{kept}");
        std::fs::remove_file(root.join("new.txt")).unwrap();

        // Damaged (cut short, a digest that is not hex), or another format: every file is read,
        // the digest holds.
        std::fs::write(root.join("a.txt"), "alpha").unwrap();
        let fresh = TreeDigests::in_memory().digest(&root).digest;
        let bad_digest = text.replacen(&text.lines().nth(1).unwrap()[..4], "zzzz", 1);
        for damaged in [
            &text[..text.len() - 30],
            &bad_digest,
            "phasegate tree digests 0\n",
        ] {
            std::fs::write(&file, damaged).unwrap();
            let third = TreeDigests::with(Some(file.clone()), Duration::ZERO, READ_ON_THREADS_FROM);
            let walk = third.digest(&root);
            assert_eq!((counts(&walk), &walk.digest), ((2, 2), &fresh));
            third.save().unwrap();
            assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
        }
    }

    #[test]
    fn paths_with_any_bytes_survive_the_memo_file() {
        for name in [
            &b"plain.txt"[..],
            b"with space",
            b"100%",
            b"new\nline",
            b"\xffnot utf-8",
        ] {
            let mut text = String::new();
            escape(name, &mut text);
            assert!(!text.contains([' ', '\n']), "{text}");
            assert_eq!(
                unescape(&text).unwrap().as_os_str().as_bytes(),
                name,
                "{text}"
            );
        }
        assert!(unescape("%4").is_none());
        assert!(unescape("%zz").is_none());
    }
}
