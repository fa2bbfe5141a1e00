//! Typed, timestamped events. The runner emits them and never prints; the CLI renders them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::context::Context;
use crate::pipeline::Id;
use crate::progress::{Failure, PhaseStatus, RunStatus, TaskStatus, VerdictRecord};
pub use crate::units::rfc3339;

/// One thing that happened during a run.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Wall-clock time: the emitter's wall-clock start plus the monotonic time since, so events
    /// stay ordered even if the system clock is adjusted during a run. Serialised as RFC 3339
    /// with microseconds (formatted only when a sink serialises the event, not on the runner's
    /// hot path).
    #[serde(serialize_with = "serialize_rfc3339")]
    pub at: SystemTime,
    /// Monotonic microseconds since the runner started, when the event happened: use this to
    /// order or overlap events. (Events are sent in the order things are recorded; a
    /// `task-finished` is sent once the task's record is in the progress journal, and carries
    /// the moment the task finished, which may be a little earlier than events sent before it.)
    pub elapsed_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Severity of a plugin log line (mirrors the WIT `level`), plus captured stdio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    /// A line the plugin wrote to stdout.
    Stdout,
    /// A line the plugin wrote to stderr.
    Stderr,
}

impl LogLevel {
    /// Lower-case name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Stdout => "stdout",
            LogLevel::Stderr => "stderr",
        }
    }
}

/// The kinds of events, tagged `"event": "kebab-name"` in JSON.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum EventKind {
    RunStarted {
        run_id: String,
        pipeline: String,
        phases: usize,
        resumed: bool,
    },
    PhaseSkipped {
        phase: Id,
        reason: String,
    },
    PhaseStarted {
        phase: Id,
        tasks: usize,
        to_run: usize,
        parallel: bool,
        concurrency: usize,
    },
    TaskSkipped {
        phase: Id,
        task: Id,
        status: TaskStatus,
    },
    TaskStarted {
        phase: Id,
        task: Id,
        attempt: u32,
    },
    TaskLog {
        phase: Id,
        task: Id,
        level: LogLevel,
        message: String,
    },
    TaskProgress {
        phase: Id,
        task: Id,
        done: u32,
        total: u32,
        message: String,
    },
    TaskRetry {
        phase: Id,
        task: Id,
        attempt: u32,
        delay_ms: u64,
        error: Failure,
    },
    TaskFinished {
        phase: Id,
        task: Id,
        status: TaskStatus,
        attempts: u32,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<Failure>,
        /// The worker that ran it (`phasegate worker`), when one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        worker: Option<String>,
        /// What the last attempt used.
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<crate::outcome::Usage>,
        /// The key its outcome was filed under in the result cache, when it came from there
        /// instead of a run.
        #[serde(skip_serializing_if = "Option::is_none")]
        cached: Option<String>,
    },
    /// A task recorded by an earlier session runs again: what it depends on changed.
    TaskOutdated {
        phase: Id,
        task: Id,
        reason: String,
    },
    /// A read-only directory the tasks or gates of a phase are granted was digested for their
    /// keys: of its `files`, `read` were read in full (`read_bytes`); the others' contents
    /// digests were remembered from an earlier phase or run, their files unchanged.
    TreeDigested {
        phase: Id,
        dir: String,
        files: u64,
        read: u64,
        read_bytes: u64,
    },
    /// The result cache could not be used for a task (an entry was damaged, or could not be
    /// written); the task ran (or its result is kept) regardless.
    CacheProblem {
        phase: Id,
        task: Id,
        message: String,
    },
    GateStarted {
        phase: Id,
        gate: String,
    },
    /// One gate's verdict in a phase whose gates' policies combine their verdicts (the phase's
    /// own follows as `verdict`).
    GateVerdict {
        phase: Id,
        gate: String,
        policy: crate::pipeline::GatePolicy,
        verdict: VerdictRecord,
        /// Whether it is the verdict recorded by an earlier session (the gate and what it judged
        /// unchanged), not asked again.
        kept: bool,
    },
    Verdict {
        phase: Id,
        gate: String,
        verdict: VerdictRecord,
    },
    PhaseFinished {
        phase: Id,
        status: PhaseStatus,
    },
    RunFinished {
        outcome: RunOutcome,
    },
}

/// How a run ended: the phases completed, the one that failed and why, the warnings, and the
/// context at the end.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    /// Completed or failed.
    pub status: RunStatus,
    /// Phases whose gate passed or warned, in order.
    pub completed: Vec<String>,
    /// The phase whose gate failed.
    pub failed: Option<String>,
    /// The failing gate's reason.
    pub reason: Option<String>,
    /// Phases whose gate warned, with the reason.
    pub warnings: Vec<PhaseWarning>,
    /// The context at the end (shared: it holds every task's record, and the outcome is both
    /// returned and sent with the `run-finished` event). It serialises as the context's JSON.
    pub context: Arc<Context>,
}

/// A `warn` verdict.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseWarning {
    /// Phase id.
    pub phase: String,
    /// The gate's reason.
    pub reason: String,
}

/// A sink plus the run's clock; cheap to clone into tasks.
#[derive(Clone)]
pub struct Emitter {
    start: std::time::Instant,
    /// The wall-clock time at `start`: an event's `at` is this plus its monotonic elapsed time
    /// (one clock read per event instead of two; events are emitted for every task).
    start_wall: SystemTime,
    sink: Arc<dyn Fn(Event) + Send + Sync>,
}

impl Emitter {
    /// Wraps a callback.
    pub fn new(sink: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Emitter {
            start: std::time::Instant::now(),
            start_wall: SystemTime::now(),
            sink: Arc::new(sink),
        }
    }

    /// An emitter that drops everything.
    pub fn discard() -> Self {
        Emitter::new(|_| {})
    }

    /// The same sink and clock behind a reference count of its own, for one worker to clone
    /// from task to task: clones of one emitter all count on one cache line, which the cores
    /// running tasks would otherwise pass back and forth for every task.
    #[inline]
    pub fn local(&self) -> Self {
        let sink = self.sink.clone();
        Emitter {
            start: self.start,
            start_wall: self.start_wall,
            sink: Arc::new(move |event| sink(event)),
        }
    }

    /// Stamps and sends an event.
    #[inline]
    pub fn emit(&self, kind: EventKind) {
        self.emit_at(std::time::Instant::now(), kind);
    }

    /// `at` as Unix time in microseconds, on the same clock as the events' `at` (no clock
    /// read: the wall time at the emitter's start plus the monotonic time since).
    #[inline]
    pub fn unix_us(&self, at: std::time::Instant) -> u64 {
        let wall = self.start_wall + at.saturating_duration_since(self.start);
        wall.duration_since(std::time::UNIX_EPOCH).map_or(0, micros)
    }

    /// Sends an event of something that happened at `at` (read once for the event and the
    /// caller's own timing; a task's `task-finished` carries when it finished, not when it
    /// was recorded).
    #[inline]
    pub fn emit_at(&self, at: std::time::Instant, kind: EventKind) {
        let elapsed = at.saturating_duration_since(self.start);
        (self.sink)(Event {
            at: self.start_wall + elapsed,
            elapsed_us: micros(elapsed),
            kind,
        });
    }
}

#[inline]
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn serialize_rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}
