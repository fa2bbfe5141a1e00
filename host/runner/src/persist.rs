//! The progress file on disk: what a run has done so far, in TOML, and how it is kept safe.
//!
//! The snapshot (`STATE.toml`) is rewritten atomically — temp file in the same directory, fsync,
//! rename, fsync of the directory — when a run starts and when it ends. Between them, each
//! finished task, each phase that starts and each phase judged is appended as one JSON line to
//! the journal beside it (`STATE.toml.journal`), so persisting any of them costs O(1) however
//! large the run (fsyncs of the journal are grouped, see [`JOURNAL_SYNC_INTERVAL`]). When a
//! phase is judged and the journal has grown past the snapshot, the journal is folded into a new
//! snapshot: rewriting costs at most what was appended since the last one, so a run of many
//! phases does not rewrite its whole file after each. Loading folds the journal into the
//! snapshot in order; a torn last line (a crash mid-append) is ignored and that task simply runs
//! again.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use phasegate_model::pipeline::Id;
use phasegate_model::progress::{
    GateVerdict, PhaseStatus, RunStatus, STATE_VERSION, State, TaskState, VerdictRecord,
};
pub use phasegate_store::write_atomically;

mod lock;
mod snapshot;
mod task_line;

pub use lock::RunLock;

/// Finished tasks are appended to the journal with one `write` each (enough to survive the
/// process being killed) and fsynced at most this often (group commit): a power cut can cost the
/// last 50 ms of finished tasks, which then run again on resume. Snapshots are always fsynced.
pub const JOURNAL_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Applies journal records to `state` in order, finding each phase and task through an index
/// (folding is O(records)).
fn fold(
    state: &mut State,
    records: impl IntoIterator<Item = anyhow::Result<JournalRecord>>,
) -> anyhow::Result<()> {
    let mut phases: HashMap<Id, usize> = HashMap::new();
    let mut tasks: HashMap<(Id, Id), (usize, usize)> = HashMap::new();
    for (pi, p) in state.phases.iter().enumerate() {
        phases.insert(p.id.clone(), pi);
        for (ti, t) in p.tasks.iter().enumerate() {
            tasks.insert((p.id.clone(), t.id.clone()), (pi, ti));
        }
    }
    for (n, record) in records.into_iter().enumerate() {
        match record? {
            JournalRecord::Task { phase, task } => {
                let &(pi, ti) = tasks.get(&(phase, task.id.clone())).with_context(|| {
                    format!(
                        "record {}: task `{}` is not in the progress file",
                        n + 1,
                        task.id
                    )
                })?;
                Arc::make_mut(&mut state.phases[pi].tasks)[ti] = *task;
            }
            JournalRecord::Started { started } => {
                let &pi = phases.get(&started).with_context(|| {
                    format!(
                        "record {}: phase `{started}` is not in the progress file",
                        n + 1
                    )
                })?;
                state.start_phase(pi);
            }
            JournalRecord::Judged(judged) => {
                let Judged {
                    judged,
                    status,
                    verdict,
                    gate_key,
                    gates,
                    run,
                    reason,
                    at,
                } = *judged;
                let &pi = phases.get(&judged).with_context(|| {
                    format!(
                        "record {}: phase `{judged}` is not in the progress file",
                        n + 1
                    )
                })?;
                let ps = &mut state.phases[pi];
                ps.status = status;
                ps.verdict = Some(verdict);
                ps.gate_key = gate_key;
                ps.gates = gates;
                state.status = run;
                state.reason = reason;
                state.updated_at = at;
            }
        }
    }
    Ok(())
}

/// One journal line: a finished task, a phase that started, or a phase judged.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum JournalRecord {
    Task { phase: Id, task: Box<TaskState> },
    Started { started: Id },
    Judged(Box<Judged>),
}

/// A phase judged: its status, verdict and gates, and the run's status after it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Judged {
    judged: Id,
    status: PhaseStatus,
    verdict: VerdictRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gate_key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gates: Vec<GateVerdict>,
    run: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// When (the snapshot's `updated-at`).
    at: String,
}

/// A finished task's journal line as `serde_json` writes it: what [`task_line`] writes by hand.
#[cfg(test)]
#[derive(Serialize)]
struct TaskLine<'a> {
    phase: &'a str,
    task: &'a TaskState,
}

/// The progress file on disk plus its journal.
pub struct ProgressStore {
    path: PathBuf,
    journal_path: PathBuf,
    journal: Option<File>,
    last_sync: std::time::Instant,
    /// Bytes in the journal, and in the snapshot: when the first outgrows the second, the
    /// next judged phase folds the journal into a new snapshot.
    journal_len: u64,
    snapshot_len: u64,
    /// The current state (snapshot with the journal folded in).
    pub state: State,
}

impl ProgressStore {
    /// The journal's path for a progress file.
    pub fn journal_path(path: &Path) -> PathBuf {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".journal");
        path.with_file_name(name)
    }

    /// Starts a new progress file (replacing any previous one and its journal).
    /// Writes a new progress file for `state` (its pipeline path made absolute, so the file
    /// names its pipeline wherever it is read from).
    pub fn create(path: &Path, mut state: State) -> anyhow::Result<Self> {
        if let Ok(absolute) = fs::canonicalize(&state.pipeline) {
            state.pipeline = absolute;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut store = ProgressStore {
            path: path.into(),
            journal_path: Self::journal_path(path),
            journal: None,
            last_sync: std::time::Instant::now(),
            journal_len: 0,
            snapshot_len: 0,
            state,
        };
        store.checkpoint()?;
        Ok(store)
    }

    /// Loads a progress file and folds its journal in.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let journal_path = Self::journal_path(path);
        // A running writer may checkpoint (replace the snapshot, drop the journal) while we read.
        // Re-read until the snapshot is the same before and after reading the journal, so the
        // pair is consistent.
        let mut attempts = 0;
        let (state, journal_len, snapshot_len) = loop {
            let text = fs::read_to_string(path)
                .with_context(|| format!("cannot read progress file {}", path.display()))?;
            let journal = match fs::read(&journal_path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot read {}", journal_path.display()));
                }
            };
            attempts += 1;
            if attempts < 20 && fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                continue;
            }
            let state = parse_state(path, &text, &journal_path, &journal)?;
            break (state, journal.len() as u64, text.len() as u64);
        };
        Ok(ProgressStore {
            path: path.into(),
            journal_path,
            journal: None,
            last_sync: std::time::Instant::now(),
            journal_len,
            snapshot_len,
            state,
        })
    }

    /// The progress file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a finished task: one journal line, O(1) whatever the phase size.
    pub fn record_task(
        &mut self,
        phase_index: usize,
        task_index: usize,
        task: TaskState,
    ) -> anyhow::Result<()> {
        self.record_tasks(phase_index, vec![(task_index, task)])
    }

    /// Records tasks that finished together with a single append (one `write`): the cost per
    /// task does not depend on the phase size, and falls as more tasks finish at once.
    pub fn record_tasks(
        &mut self,
        phase_index: usize,
        tasks: Vec<(usize, TaskState)>,
    ) -> anyhow::Result<()> {
        let phase = &self.state.phases[phase_index];
        let mut lines = Vec::with_capacity(tasks.len() * 128);
        for (task_index, task) in &tasks {
            anyhow::ensure!(
                phase.tasks[*task_index].id == task.id,
                "task {} recorded at the wrong place",
                task.id
            );
            task_line::write(&mut lines, &phase.id, task);
            lines.push(b'\n');
        }
        self.append(&lines)?;
        let recorded = Arc::make_mut(&mut self.state.phases[phase_index].tasks);
        for (task_index, task) in tasks {
            recorded[task_index] = task;
        }
        Ok(())
    }

    /// Marks phase `pi` as running (see [`State::start_phase`]) with one journal line, O(1)
    /// whatever the size of the progress file.
    pub fn start_phase(&mut self, pi: usize) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(&JournalRecord::Started {
            started: self.state.phases[pi].id.clone(),
        })?;
        line.push(b'\n');
        self.append(&line)?;
        self.state.start_phase(pi);
        Ok(())
    }

    /// Records phase `pi` judged, as the state now says (its status, verdict, gates, and the
    /// run's status). A run that ended, or a journal grown past the snapshot, is folded into a
    /// new snapshot; otherwise it is one journal line.
    pub fn record_judged(&mut self, pi: usize) -> anyhow::Result<()> {
        let ended = self.state.status != RunStatus::Running;
        if ended || self.journal_len > self.snapshot_len {
            return self.checkpoint();
        }
        let ps = &self.state.phases[pi];
        let verdict = ps
            .verdict
            .clone()
            .with_context(|| format!("phase `{}` has no verdict to record", ps.id))?;
        let at = phasegate_model::events::rfc3339(std::time::SystemTime::now());
        let mut line = serde_json::to_vec(&JournalRecord::Judged(Box::new(Judged {
            judged: ps.id.clone(),
            status: ps.status,
            verdict,
            gate_key: ps.gate_key.clone(),
            gates: ps.gates.clone(),
            run: self.state.status,
            reason: self.state.reason.clone(),
            at: at.clone(),
        })))?;
        line.push(b'\n');
        self.append(&line)?;
        self.state.updated_at = at;
        Ok(())
    }

    /// Appends complete lines to the journal with one `write`.
    fn append(&mut self, lines: &[u8]) -> anyhow::Result<()> {
        if self.journal.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_path)
                .with_context(|| format!("cannot open journal {}", self.journal_path.display()))?;
            self.journal = Some(file);
        }
        let journal = self.journal.as_mut().expect("journal opened above");
        // Once the write returns, the records survive the process being killed. fsync
        // (surviving a power cut) is grouped: at most one per JOURNAL_SYNC_INTERVAL.
        journal
            .write_all(lines)
            .with_context(|| format!("cannot append to journal {}", self.journal_path.display()))?;
        self.journal_len += lines.len() as u64;
        if self.last_sync.elapsed() >= JOURNAL_SYNC_INTERVAL {
            journal
                .sync_data()
                .with_context(|| format!("cannot sync journal {}", self.journal_path.display()))?;
            self.last_sync = std::time::Instant::now();
        }
        Ok(())
    }

    /// Writes the whole state atomically and empties the journal.
    pub fn checkpoint(&mut self) -> anyhow::Result<()> {
        self.state.updated_at = phasegate_model::events::rfc3339(std::time::SystemTime::now());
        let text = snapshot::to_toml(&self.state).context("cannot serialise the progress file")?;
        // The journal is emptied below (or the write fails and it still holds the records):
        // either way the next record opens it again.
        self.journal = None;
        write_atomically(&self.path, text.as_bytes())
            .with_context(|| format!("cannot write progress file {}", self.path.display()))?;
        self.snapshot_len = text.len() as u64;
        self.journal_len = 0;
        // The snapshot now holds every journal record; a crash before this removal only leaves
        // records that fold to the same values.
        match fs::remove_file(&self.journal_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot remove {}", self.journal_path.display()))
            }
        }
    }
}

/// Reads a progress file's text and its journal's bytes (as [`ProgressStore::open`] does
/// from disk): the state with the journal folded in, or what is wrong, naming `path`.
pub fn parse(path: &Path, text: &str, journal: &[u8]) -> anyhow::Result<State> {
    parse_state(path, text, &ProgressStore::journal_path(path), journal)
}

fn parse_state(
    path: &Path,
    text: &str,
    journal_path: &Path,
    journal: &[u8],
) -> anyhow::Result<State> {
    let mut state: State = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid progress file: {}",
            path.display(),
            e.message().trim()
        )
    })?;
    if state.version != STATE_VERSION {
        bail!(
            "{}: progress file version {} is not supported (this phasegate writes version {STATE_VERSION})",
            path.display(),
            state.version
        );
    }
    // Only complete lines count: a torn final append means that task was not durably recorded,
    // and it runs again.
    let complete = match journal.iter().rposition(|&b| b == b'\n') {
        Some(end) => &journal[..=end],
        None => &journal[..0],
    };
    let records = complete
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_slice::<JournalRecord>(line).with_context(|| {
                format!(
                    "{}:{}: corrupt journal record",
                    journal_path.display(),
                    n + 1
                )
            })
        });
    fold(&mut state, records).with_context(|| format!("{}", journal_path.display()))?;
    Ok(state)
}

/// Replaces `path` with `bytes` so that a reader sees the old or the new file, never a mix,
#[cfg(test)]
mod tests {
    use super::*;
    use phasegate_model::progress::{
        PhaseState, PhaseStatus, RunStatus, TaskStatus, VerdictKind, VerdictRecord,
    };

    fn sample() -> State {
        let pipeline = phasegate_model::pipeline::Pipeline {
            name: "t".into(),
            description: None,
            vars: serde_json::json!({}),
            path: "p.toml".into(),
            digest: "sha256:00".into(),
            phases: vec![],
            engine: phasegate_model::pipeline::EngineLimits::SINGLE,
            project: None,
        };
        let mut s = State::new("r".into(), &pipeline, Default::default());
        s.phases.push(PhaseState {
            id: "one".into(),
            status: PhaseStatus::Running,
            verdict: None,
            gate_key: None,
            gates: Vec::new(),
            tasks: Arc::new(vec![TaskState::pending("a"), TaskState::pending("b")]),
        });
        s
    }

    fn done(id: &str) -> TaskState {
        TaskState {
            id: id.into(),
            status: TaskStatus::Succeeded,
            attempts: 1,
            duration_ms: 3,
            started_us: None,
            ended_us: None,
            usage: None,
            output: Some("{}".into()),
            error: None,
            log: Vec::new(),
            worker: None,
            key: None,
            cached: false,
        }
    }

    #[test]
    fn status_names_are_the_serialised_names() {
        for status in [
            TaskStatus::Pending,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
        ] {
            assert_eq!(serde_json::json!(status), status.name());
        }
    }

    #[test]
    fn journal_folds_and_ignores_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        let mut store = ProgressStore::create(&path, sample()).unwrap();
        store.record_task(0, 0, done("a")).unwrap();
        // A crash in the middle of appending b's record.
        let journal = ProgressStore::journal_path(&path);
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(br#"{"phase":"one","task":{"id":"b","sta"#)
            .unwrap();
        let reopened = ProgressStore::open(&path).unwrap();
        assert_eq!(reopened.state.phases[0].tasks[0], done("a"));
        assert_eq!(
            reopened.state.phases[0].tasks[1].status,
            TaskStatus::Pending
        );
    }

    #[test]
    fn a_phase_start_is_one_journal_line_that_folds_like_the_live_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        // A run whose gate failed: one task failed, the phase and the run are failed.
        let mut state = sample();
        state.status = RunStatus::Failed;
        state.reason = Some("gate said no".into());
        let phase = &mut state.phases[0];
        phase.status = PhaseStatus::Failed;
        let tasks = Arc::make_mut(&mut phase.tasks);
        tasks[0] = done("a");
        tasks[1].status = TaskStatus::Failed;
        phase.verdict = Some(VerdictRecord {
            kind: VerdictKind::Fail,
            gate: "g".into(),
            reason: "gate said no".into(),
            evidence: None,
            crashed: None,
        });
        let mut store = ProgressStore::create(&path, state).unwrap();
        let snapshot = fs::read_to_string(&path).unwrap();
        store.start_phase(0).unwrap();
        // The snapshot is untouched: the start is one journal line.
        assert_eq!(fs::read_to_string(&path).unwrap(), snapshot);
        let journal = fs::read_to_string(ProgressStore::journal_path(&path)).unwrap();
        assert_eq!(journal, "{\"started\":\"one\"}\n");
        let live = &store.state;
        assert_eq!(live.status, RunStatus::Running);
        assert_eq!(live.reason, None);
        assert_eq!(live.phases[0].status, PhaseStatus::Running);
        assert_eq!(live.phases[0].verdict, None);
        assert_eq!(live.phases[0].tasks[0], done("a"));
        assert_eq!(live.phases[0].tasks[1].status, TaskStatus::Pending);
        // A task finishing after the start folds on top of it, in order.
        store.record_task(0, 1, done("b")).unwrap();
        assert_eq!(ProgressStore::open(&path).unwrap().state, store.state);
    }

    /// `sample()` with a second phase `two` (one pending task `c`).
    fn two_phases() -> State {
        let mut state = sample();
        state.phases.push(PhaseState {
            id: "two".into(),
            status: PhaseStatus::Pending,
            verdict: None,
            gate_key: None,
            gates: Vec::new(),
            tasks: Arc::new(vec![TaskState::pending("c")]),
        });
        state
    }

    fn judge(store: &mut ProgressStore, pi: usize, kind: VerdictKind) {
        let ps = &mut store.state.phases[pi];
        ps.status = if kind == VerdictKind::Fail {
            PhaseStatus::Failed
        } else {
            PhaseStatus::Complete
        };
        ps.verdict = Some(VerdictRecord {
            kind,
            gate: "g".into(),
            reason: format!("judged {kind:?}"),
            evidence: Some("{\"n\": 1}".into()),
            crashed: None,
        });
        ps.gate_key = Some("sha256:ab".into());
        ps.gates = vec![GateVerdict {
            policy: phasegate_model::pipeline::GatePolicy::Required,
            key: Some("sha256:ab".into()),
            verdict: ps.verdict.clone().unwrap(),
        }];
    }

    #[test]
    fn a_judged_phase_is_one_journal_line_until_the_journal_outgrows_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        let journal = ProgressStore::journal_path(&path);
        let mut store = ProgressStore::create(&path, two_phases()).unwrap();
        let snapshot = fs::read_to_string(&path).unwrap();
        store.record_task(0, 0, done("a")).unwrap();
        store.record_task(0, 1, done("b")).unwrap();
        judge(&mut store, 0, VerdictKind::Pass);
        store.record_judged(0).unwrap();
        // A run that goes on: the snapshot is untouched, the verdict is a journal line that
        // folds to the live state.
        assert_eq!(fs::read_to_string(&path).unwrap(), snapshot);
        let lines = fs::read_to_string(&journal).unwrap();
        assert!(
            lines
                .lines()
                .last()
                .unwrap()
                .starts_with("{\"judged\":\"one\""),
            "{lines}"
        );
        assert_eq!(ProgressStore::open(&path).unwrap().state, store.state);
        // Once the journal holds more than the snapshot, the next verdict folds it in.
        for _ in 0..20 {
            store.record_task(0, 0, done("a")).unwrap();
        }
        store.start_phase(1).unwrap();
        judge(&mut store, 1, VerdictKind::Warn);
        store.record_judged(1).unwrap();
        assert!(!journal.exists());
        assert_ne!(fs::read_to_string(&path).unwrap(), snapshot);
        assert_eq!(ProgressStore::open(&path).unwrap().state, store.state);
    }

    #[test]
    fn the_verdict_that_ends_a_run_is_in_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        let mut store = ProgressStore::create(&path, two_phases()).unwrap();
        store.record_task(0, 0, done("a")).unwrap();
        judge(&mut store, 0, VerdictKind::Fail);
        store.state.status = RunStatus::Failed;
        store.state.reason = Some("judged Fail".into());
        store.record_judged(0).unwrap();
        assert!(!ProgressStore::journal_path(&path).exists());
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("status = \"failed\""), "{text}");
        assert_eq!(ProgressStore::open(&path).unwrap().state, store.state);
    }

    #[test]
    fn checkpoint_folds_the_journal_into_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        let mut store = ProgressStore::create(&path, sample()).unwrap();
        store.record_task(0, 1, done("b")).unwrap();
        store.checkpoint().unwrap();
        assert!(!ProgressStore::journal_path(&path).exists());
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("id = \"b\"\nstatus = \"succeeded\""),
            "{text}"
        );
        assert_eq!(ProgressStore::open(&path).unwrap().state, store.state);
    }

    #[test]
    fn a_corrupt_complete_record_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        ProgressStore::create(&path, sample()).unwrap();
        fs::write(ProgressStore::journal_path(&path), "garbage\n").unwrap();
        let err = format!("{:#}", ProgressStore::open(&path).err().unwrap());
        assert!(
            err.contains("state.toml.journal:1: corrupt journal record"),
            "{err}"
        );
    }
}
