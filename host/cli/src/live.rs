//! The live display of `run` and `resume` on a terminal: one progress bar per running phase
//! (done / total, failed, retries, rate, ETA), and above the bars the lines that matter — phase
//! starts, failures, retries, warnings, gate verdicts. Per-task lines only with `-v`.
//!
//! Bars are redrawn at most [`REFRESH_HZ`] times a second whatever the task rate, so a phase of
//! 10,000 short tasks costs an atomic increment per task, not a terminal write (BENCHMARKS.md).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

/// Redraws per second.
pub const REFRESH_HZ: u8 = 10;

/// The bars of the running phases.
pub struct Bars {
    multi: MultiProgress,
    phases: Mutex<HashMap<String, Phase>>,
    style: ProgressStyle,
}

struct Phase {
    bar: ProgressBar,
    failed: AtomicU64,
    retries: AtomicU64,
}

impl Bars {
    /// Bars on stderr. `forced` draws them even when stderr is not a terminal (`--progress
    /// bars`), as ANSI sequences.
    pub fn new(forced: bool) -> Bars {
        let target = if forced {
            ProgressDrawTarget::term_like_with_hz(Box::new(AnsiStderr), REFRESH_HZ)
        } else {
            ProgressDrawTarget::stderr_with_hz(REFRESH_HZ)
        };
        let style = ProgressStyle::with_template(
            "{prefix:>14.bold} [{bar:28.cyan/blue}] {pos}/{len} {msg} {rate} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
        Bars {
            multi: MultiProgress::with_draw_target(target),
            phases: Mutex::new(HashMap::new()),
            style,
        }
    }

    /// A line above the bars.
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }

    /// A phase started with `tasks` to run.
    pub fn start(&self, phase: &str, tasks: u64) {
        let bar = self.multi.add(ProgressBar::new(tasks));
        bar.set_style(self.style.clone());
        bar.set_prefix(phase.to_owned());
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = phases.insert(
            phase.to_owned(),
            Phase {
                bar,
                failed: AtomicU64::new(0),
                retries: AtomicU64::new(0),
            },
        ) {
            self.multi.remove(&old.bar);
        }
    }

    /// A task of `phase` finished.
    pub fn finished(&self, phase: &str, failed: bool) {
        self.with(phase, |p| {
            if failed {
                p.failed.fetch_add(1, Ordering::Relaxed);
                p.message();
            }
            p.bar.inc(1);
        });
    }

    /// A task of `phase` is retried.
    pub fn retry(&self, phase: &str) {
        self.with(phase, |p| {
            p.retries.fetch_add(1, Ordering::Relaxed);
            p.message();
        });
    }

    /// The phase's tasks are done and its gate runs.
    pub fn gate(&self, phase: &str, gate: &str) {
        self.with(phase, |p| p.bar.set_message(format!("gate {gate}…")));
    }

    /// The phase finished: its bar goes (its verdict line stays above).
    pub fn end(&self, phase: &str) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = phases.remove(phase) {
            p.bar.finish_and_clear();
            self.multi.remove(&p.bar);
        }
    }

    /// Clears every bar (the run ended).
    pub fn clear(&self) {
        let mut phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        for (_, p) in phases.drain() {
            p.bar.finish_and_clear();
            self.multi.remove(&p.bar);
        }
        let _ = self.multi.clear();
    }

    fn with(&self, phase: &str, f: impl FnOnce(&Phase)) {
        let phases = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = phases.get(phase) {
            f(p);
        }
    }
}

impl Phase {
    fn message(&self) {
        let failed = self.failed.load(Ordering::Relaxed);
        let retries = self.retries.load(Ordering::Relaxed);
        let mut parts = Vec::new();
        if failed > 0 {
            parts.push(format!("{failed} failed"));
        }
        if retries > 0 {
            parts.push(format!("{retries} retries"));
        }
        self.bar.set_message(parts.join(", "));
    }
}

/// stderr as a terminal whether or not it is one (`--progress bars` into a file or a pipe).
#[derive(Debug)]
struct AnsiStderr;

impl AnsiStderr {
    fn out(&self, s: &str) -> std::io::Result<()> {
        std::io::stderr().lock().write_all(s.as_bytes())
    }
}

impl TermLike for AnsiStderr {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.out(&format!("\x1b[{n}A"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.out(&format!("\x1b[{n}B"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.out(&format!("\x1b[{n}C"))
        } else {
            Ok(())
        }
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.out(&format!("\x1b[{n}D"))
        } else {
            Ok(())
        }
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.out(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.out(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.out("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
