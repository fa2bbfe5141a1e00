//! Renders runner events as readable lines (stderr) or JSON lines (stdout).

use std::io::Write;
use std::path::Path;

use phasegate_model::events::RunOutcome;
use phasegate_model::events::{Event, EventKind, LogLevel};
use phasegate_model::progress::{RunStatus, TaskStatus, VerdictKind};

use std::io::IsTerminal;

use clap::ValueEnum;

use super::Format;
use super::lines::{Lines, Stream};
use super::live::Bars;

/// A read-only tree digested for a phase's keys is said (without `--verbose`) when this much of
/// it had to be read: enough to have made the phase's start wait.
const TREE_READ_WORTH_SAYING: u64 = 64 << 20;

pub struct Renderer {
    format: Format,
    verbose: bool,
    /// The live bars (`Progress::Bars`).
    bars: Option<Bars>,
    /// The event lines: JSON on stdout, or the human log on stderr (`Progress::Lines`).
    lines: Option<Lines>,
}

/// How a human-format run shows its progress (`--progress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// Bars when stderr is a terminal, else lines.
    Auto,
    /// A bar per running phase, and the lines that matter above them (ANSI, even when stderr
    /// is not a terminal).
    Bars,
    /// A line per event, as a log.
    Lines,
    /// Nothing while it runs; the summary at the end.
    None,
}

impl Renderer {
    pub fn new(format: Format, verbose: bool, progress: Progress) -> Self {
        let progress = match progress {
            Progress::Auto if std::io::stderr().is_terminal() => Progress::Bars,
            Progress::Auto => Progress::Lines,
            other => other,
        };
        let bars = (format == Format::Human && progress == Progress::Bars)
            .then(|| Bars::new(!std::io::stderr().is_terminal()));
        let lines = match (format, progress) {
            (Format::Json, _) => Some(Lines::new(Stream::Stdout)),
            (Format::Human, Progress::Lines) => Some(Lines::new(Stream::Stderr)),
            _ => None,
        };
        Renderer {
            format,
            verbose,
            bars,
            lines,
        }
    }

    pub fn event(&self, event: &Event) {
        match self.format {
            Format::Json => {
                if let (Ok(line), Some(lines)) = (serde_json::to_string(event), &self.lines) {
                    lines.line(&line);
                }
            }
            Format::Human => match (&self.bars, &self.lines) {
                (Some(bars), _) => self.live(bars, event),
                (None, Some(lines)) => {
                    if let Some(line) = self.human(event) {
                        lines.line(&stamped(event, &line));
                    }
                }
                (None, None) => {}
            },
        }
    }

    /// Bars mode: moves the bars, and prints the lines that matter above them.
    fn live(&self, bars: &Bars, event: &Event) {
        let matters = match &event.kind {
            EventKind::PhaseStarted { phase, to_run, .. } => {
                bars.start(phase, *to_run as u64);
                true
            }
            EventKind::TaskFinished { phase, status, .. } => {
                let failed = *status != TaskStatus::Succeeded;
                bars.finished(phase, failed);
                failed || self.verbose
            }
            EventKind::TaskRetry { phase, .. } => {
                bars.retry(phase);
                true
            }
            EventKind::TaskLog { level, .. } => {
                self.verbose || matches!(level, LogLevel::Warn | LogLevel::Error)
            }
            EventKind::GateStarted { phase, gate } => {
                bars.gate(phase, short_name(gate));
                self.verbose
            }
            EventKind::PhaseFinished { phase, .. } => {
                bars.end(phase);
                false
            }
            EventKind::RunFinished { .. } => {
                bars.clear();
                false
            }
            EventKind::TaskStarted { .. } | EventKind::TaskSkipped { .. } => self.verbose,
            EventKind::TaskProgress { .. } => false,
            // Worth a line when reading it took noticeable time.
            EventKind::TreeDigested { read_bytes, .. } => {
                self.verbose || *read_bytes >= TREE_READ_WORTH_SAYING
            }
            EventKind::TaskOutdated { .. }
            | EventKind::CacheProblem { .. }
            | EventKind::GateVerdict { .. }
            | EventKind::RunStarted { .. }
            | EventKind::PhaseSkipped { .. }
            | EventKind::Verdict { .. } => true,
        };
        if matters && let Some(line) = self.human(event) {
            bars.println(&stamped(event, &line));
        }
    }

    fn human(&self, event: &Event) -> Option<String> {
        Some(match &event.kind {
            EventKind::RunStarted {
                run_id,
                pipeline,
                phases,
                resumed,
            } => {
                format!(
                    "{} run {run_id} of `{pipeline}` ({phases} phases)",
                    if *resumed { "resuming" } else { "starting" }
                )
            }
            EventKind::PhaseSkipped { phase, reason } => {
                format!("phase {phase}: skipped, {reason}")
            }
            EventKind::PhaseStarted {
                phase,
                tasks,
                to_run,
                parallel,
                concurrency,
            } => {
                let mode = if *to_run < 2 {
                    String::new()
                } else if *parallel {
                    format!(", parallel, up to {} at once", concurrency.min(to_run))
                } else {
                    ", in order".into()
                };
                let todo = if to_run == tasks {
                    String::new()
                } else {
                    format!(", {to_run} left to run")
                };
                format!("phase {phase}: {tasks} task(s){mode}{todo}")
            }
            EventKind::TaskSkipped { task, status, .. } => {
                format!("  = {task} already {}", status_word(*status))
            }
            EventKind::TaskStarted { task, attempt, .. } => {
                if *attempt == 1 {
                    format!("  > {task} started")
                } else {
                    format!("  > {task} attempt {attempt}")
                }
            }
            EventKind::TaskLog {
                task,
                level,
                message,
                ..
            } => {
                let show = self.verbose || !matches!(level, LogLevel::Trace | LogLevel::Debug);
                if !show {
                    return None;
                }
                format!(
                    "    [{task} {}] {message}",
                    serde_json::to_value(level).ok()?.as_str()?
                )
            }
            EventKind::TaskProgress { .. } => return None,
            EventKind::TaskRetry {
                task,
                attempt,
                delay_ms,
                error,
                ..
            } => {
                format!(
                    "  ! {task} attempt {attempt} failed ({}), retrying in {delay_ms} ms",
                    error.message
                )
            }
            EventKind::TaskOutdated { task, reason, .. } => {
                format!("  ~ {task} runs again: {reason}")
            }
            EventKind::CacheProblem { task, message, .. } => {
                format!("  ! {task}: result cache: {message}")
            }
            EventKind::TreeDigested {
                phase,
                dir,
                files,
                read,
                read_bytes,
            } => {
                let size = phasegate_model::units::ByteSize(*read_bytes).approx();
                let what = match (*read, *files) {
                    (0, _) => "none changed since last read".to_owned(),
                    (r, f) if r == f => format!("all read ({size})"),
                    (r, _) => format!("{r} read ({size}), the others unchanged since last read"),
                };
                format!(
                    "phase {phase}: read-only {dir} digested for the keys: {files} file(s), {what}"
                )
            }
            EventKind::TaskFinished {
                task,
                status,
                attempts,
                duration_ms,
                error,
                cached,
                ..
            } => {
                // An outcome from the result cache says so, and when it was made.
                let (took, from) = match cached {
                    Some(_) => (
                        format!(" (cached, ran in {duration_ms} ms before)"),
                        " (cached)",
                    ),
                    None => (format!(" in {duration_ms} ms"), ""),
                };
                match (status, error) {
                    (TaskStatus::Succeeded, _) => {
                        format!("  ✓ {task} ok{took}{}", attempts_note(*attempts))
                    }
                    (_, Some(e)) => format!(
                        "  ✗ {task} {}{}{from}: {}",
                        serde_json::to_value(e.kind).ok()?.as_str()?,
                        attempts_note(*attempts),
                        e.message
                    ),
                    _ => format!("  ✗ {task} failed{from}"),
                }
            }
            EventKind::GateStarted { gate, .. } => format!("  ? gate {}", short_name(gate)),
            EventKind::GateVerdict {
                gate,
                policy,
                verdict,
                kept,
                ..
            } => {
                let word = match (verdict.crashed, verdict.kind) {
                    (Some(_), _) => "CRASH",
                    (None, VerdictKind::Pass) => "pass",
                    (None, VerdictKind::Warn) => "warn",
                    (None, VerdictKind::Fail) => "fail",
                };
                format!(
                    "    {word} ({} gate {}{}): {}",
                    policy.name(),
                    short_name(gate),
                    if *kept { ", kept from before" } else { "" },
                    verdict.reason
                )
            }
            EventKind::Verdict { verdict, gate, .. } => {
                if let Some(kind) = verdict.crashed {
                    return Some(format!(
                        "  CRASH ({}): the gate did not judge the phase ({}): {}",
                        short_name(gate),
                        phasegate_model::text::serde_name(&kind),
                        verdict.reason
                    ));
                }
                let word = match verdict.kind {
                    VerdictKind::Pass => "PASS",
                    VerdictKind::Warn => "WARN",
                    VerdictKind::Fail => "FAIL",
                };
                format!("  {word} ({}): {}", short_name(gate), verdict.reason)
            }
            EventKind::PhaseFinished { .. } => return None,
            EventKind::RunFinished { .. } => return None,
        })
    }

    /// The final summary (human format only: the JSON stream already ended with the outcome).
    pub fn summary(&self, outcome: &RunOutcome, state: &Path, pipeline: &Path) {
        if let Some(lines) = &self.lines {
            lines.flush();
        }
        if self.format == Format::Json {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = match outcome.status {
            RunStatus::Failed => {
                let state_arg = if state == Path::new(super::DEFAULT_STATE) {
                    String::new()
                } else {
                    format!(" --state {}", state.display())
                };
                writeln!(
                    out,
                    "run failed at phase `{}`: {}\ncompleted phases: {}\nprogress: {}\nto go on, fix the cause (an input, a service, the pipeline file, a plugin), then:\n      phasegate resume{state_arg}\n  it keeps what finished unless what it depends on changed, and runs the rest (`--explain` shows what runs and why); to start over instead:\n      phasegate run {}{state_arg} --fresh",
                    outcome.failed.as_deref().unwrap_or("?"),
                    outcome.reason.as_deref().unwrap_or(""),
                    list(&outcome.completed),
                    state.display(),
                    pipeline.display(),
                )
            }
            _ => writeln!(
                out,
                "{}run completed: {} phase(s) passed{}\nprogress: {}",
                last_outputs(outcome),
                outcome.completed.len(),
                match outcome.warnings.len() {
                    0 => String::new(),
                    n => format!(
                        ", {n} with warnings ({})",
                        outcome
                            .warnings
                            .iter()
                            .map(|w| format!("{}: {}", w.phase, w.reason))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                },
                state.display()
            ),
        };
    }
}

/// The outputs of the last completed phase: what a pipeline was run for.
fn last_outputs(outcome: &RunOutcome) -> String {
    const MAX: usize = 600;
    let Some(phase) = outcome.completed.last() else {
        return String::new();
    };
    let tasks = outcome.context.phase_tasks(phase);
    if tasks.is_empty() {
        return String::new();
    }
    /// At most this many outputs, in the pipeline's order; the rest are counted.
    const SHOWN: usize = 10;
    let mut text = format!("outputs of phase `{phase}`:\n");
    for t in tasks.iter().take(SHOWN) {
        let task = &t.id;
        // As compact JSON, whatever spacing the plugin wrote.
        let mut json = match t
            .output
            .as_deref()
            .map(serde_json::from_str::<serde_json::Value>)
        {
            Some(Ok(value)) => value.to_string(),
            Some(Err(_)) => t.output.clone().unwrap_or_default(),
            None => "null".to_owned(),
        };
        if json.len() > MAX {
            let cut = (0..=MAX)
                .rev()
                .find(|i| json.is_char_boundary(*i))
                .unwrap_or(0);
            json.truncate(cut);
            json.push('…');
        }
        text.push_str(&format!("  {task}: {json}\n"));
    }
    if tasks.len() > SHOWN {
        text.push_str(&format!(
            "  … and {} more (`phasegate status --phase {phase}` lists them all)\n",
            tasks.len() - SHOWN
        ));
    }
    text
}

/// A human line with the event's time since the run started in front.
fn stamped(event: &Event, line: &str) -> String {
    format!("{:>8.3}s {line}", event.elapsed_us as f64 / 1e6)
}

/// A plugin as a person names it: an installed plugin's name, a component file's name without
/// its folder and `.wasm` (the events keep the reference as written).
pub fn short_name(spec: &str) -> &str {
    if spec.contains('/') || spec.contains('\\') || spec.ends_with(".wasm") {
        std::path::Path::new(spec)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(spec)
    } else {
        spec
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

fn status_word(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Pending => "pending",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}
