//! Event lines written in batches: a run's log (`--progress lines`) or JSON stream
//! (`--format json`) is a line per event, and a phase of quick tasks makes two events per task.
//! Written one `write` per line, that was ~2.7 µs a task (more than running a trivial task):
//! lines are gathered here and written together by a thread of their own, at most
//! [`WRITE_EVERY`] after they were made, so a person or a pipe still sees them as they happen.
//! Everything is written when the writer is dropped (before the run's summary is printed).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest a line waits to be written.
pub const WRITE_EVERY: Duration = Duration::from_millis(20);

/// Where the lines go.
#[derive(Clone)]
pub enum Stream {
    Stdout,
    Stderr,
    #[cfg(test)]
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl Stream {
    fn write(&self, bytes: &[u8]) {
        // A closed pipe (`| head`) is the reader's choice, not the run's failure.
        let _ = match self {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
            #[cfg(test)]
            Stream::Memory(memory) => {
                memory.lock().unwrap().extend_from_slice(bytes);
                Ok(())
            }
        };
    }
}

/// Lines waiting, and whether the writer is done.
#[derive(Default)]
struct Waiting {
    bytes: Vec<u8>,
    done: bool,
}

#[derive(Default)]
struct Shared {
    waiting: Mutex<Waiting>,
    wake: Condvar,
    /// Held while a batch is taken and written, so batches reach the stream in order.
    writing: Mutex<()>,
}

impl Shared {
    /// Writes what is waiting.
    fn write_waiting(&self, stream: &Stream, batch: &mut Vec<u8>) {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut w.bytes, batch);
        }
        if !batch.is_empty() {
            stream.write(batch);
            batch.clear();
        }
    }
}

pub struct Lines {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    stream: Stream,
}

impl Lines {
    pub fn new(stream: Stream) -> Self {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let to = stream.clone();
        // Without the thread (it could not be started) every line is written at once.
        let thread = std::thread::Builder::new()
            .name("phasegate-lines".into())
            .spawn(move || write_batches(&theirs, &to))
            .ok();
        Lines {
            shared,
            thread,
            stream,
        }
    }

    /// Adds one line (without its newline).
    pub fn line(&self, line: &str) {
        if self.thread.is_none() {
            self.stream.write(format!("{line}\n").as_bytes());
            return;
        }
        let mut waiting = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let first = waiting.bytes.is_empty();
        waiting.bytes.extend_from_slice(line.as_bytes());
        waiting.bytes.push(b'\n');
        if first {
            self.shared.wake.notify_one();
        }
    }

    /// Writes every line added so far, now (before something else is printed after them).
    pub fn flush(&self) {
        self.shared.write_waiting(&self.stream, &mut Vec::new());
    }
}

/// The writing thread: waits for a first line, lets more gather for [`WRITE_EVERY`], writes
/// them all; until the writer is dropped.
fn write_batches(shared: &Shared, stream: &Stream) {
    let mut batch = Vec::new();
    loop {
        let done = {
            let mut w = shared.waiting.lock().unwrap_or_else(|e| e.into_inner());
            while w.bytes.is_empty() && !w.done {
                w = shared.wake.wait(w).unwrap_or_else(|e| e.into_inner());
            }
            w.done
        };
        if !done {
            std::thread::sleep(WRITE_EVERY);
        }
        shared.write_waiting(stream, &mut batch);
        let w = shared.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if w.done && w.bytes.is_empty() {
            return;
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .done = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_written_in_order_while_the_run_goes_on_and_the_rest_when_dropped() {
        let memory = Arc::new(Mutex::new(Vec::new()));
        let text = || String::from_utf8(memory.lock().unwrap().clone()).unwrap();
        let lines = Lines::new(Stream::Memory(memory.clone()));
        // A line is written without waiting for more (a task that starts and runs for long).
        lines.line("started");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while text().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(text(), "started\n");
        // Many lines from several threads: each whole, each thread's in its order.
        std::thread::scope(|s| {
            for t in 0..4 {
                let lines = &lines;
                s.spawn(move || {
                    for i in 0..5_000 {
                        lines.line(&format!("{t} {i}"));
                    }
                });
            }
        });
        lines.line("last");
        drop(lines);
        let text = text();
        let mut next = [0; 4];
        for line in text.lines().skip(1) {
            if line == "last" {
                continue;
            }
            let (t, i) = line.split_once(' ').unwrap();
            let t: usize = t.parse().unwrap();
            assert_eq!(i.parse::<usize>().unwrap(), next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [5_000; 4]);
        assert!(text.ends_with("last\n"));
    }
}
