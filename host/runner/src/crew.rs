//! The workers of a parallel phase: one per runtime thread to begin with, and one more each
//! time a task has to wait, up to the phase's concurrency.
//!
//! A phase of tasks that never wait then runs on as many workers as there are threads, each
//! keeping its request and its hand-over slot warm; tasks that wait (sleeps, network, a
//! CPU-bound guest yielding at an epoch tick) bring in more workers at once, so the concurrency
//! cap is reached as soon as it is needed, and no more workers than are useful compete for the
//! scheduler (BENCHMARKS.md has the measurements behind this).

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use phasegate_model::job::Executor;

use super::PhaseRun;
use super::handoff::{Claims, Done, Finished, WorkerGuard};

/// How long a worker runs tasks that never wait before it lets the scheduler run others (and
/// look at its timers and sockets, which it does once every few dozen of these turns).
const YIELD_INTERVAL: Duration = Duration::from_millis(1);

/// A parallel phase's workers, the tasks they claim and the tasks they finish.
pub struct Crew<E: Executor> {
    run: Arc<PhaseRun<E>>,
    claims: Claims,
    finished: Finished,
    /// The most workers: the phase's concurrency, or fewer if it has fewer tasks to run.
    cap: usize,
    started: AtomicUsize,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Set by [`abort`](Self::abort): no worker starts after it.
    aborted: AtomicBool,
}

/// Aborts a crew's workers when dropped, so that a phase that ends early (an error while
/// recording, or the run's future dropped) leaves none running. Harmless once they have ended.
pub struct AbortOnDrop<'a, E: Executor>(pub &'a Crew<E>);

impl<E: Executor> Drop for AbortOnDrop<'_, E> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<E: Executor> Crew<E> {
    /// Starts the first workers on `pending` (indices of the phase's tasks to run).
    pub fn start(run: Arc<PhaseRun<E>>, pending: Vec<usize>, concurrency: usize) -> Arc<Self> {
        let cap = concurrency.min(pending.len());
        let crew = Arc::new(Crew {
            run,
            claims: Claims::new(pending, cap),
            finished: Finished::new(cap),
            cap,
            started: AtomicUsize::new(0),
            handles: Mutex::new(Vec::new()),
            aborted: AtomicBool::new(false),
        });
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        for _ in 0..threads.max(1) {
            crew.grow();
        }
        crew
    }

    /// What the phase's tasks share.
    pub fn run(&self) -> &PhaseRun<E> {
        &self.run
    }

    /// Waits for finished tasks (see [`Finished::next_batch`]).
    pub async fn next_batch(&self, batch: &mut Vec<Done>) -> bool {
        self.finished.next_batch(batch).await
    }

    /// Whether every worker has stopped.
    pub fn all_stopped(&self) -> bool {
        self.finished.all_stopped()
    }

    /// Waits for every worker to end; an error if one panicked (a phasegate bug: the tasks it
    /// finished before are recorded, the one it was running is not).
    pub async fn join(&self) -> anyhow::Result<()> {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        for handle in handles {
            if let Err(e) = handle.await {
                anyhow::bail!(
                    "a task worker panicked (a phasegate bug); finished tasks are recorded: {e}"
                );
            }
        }
        Ok(())
    }

    /// Stops every worker at its next await (what it was running is not recorded).
    fn abort(&self) {
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        // Under the lock that `grow` pushes under: no worker is added after this.
        self.aborted.store(true, Ordering::Relaxed);
        for handle in handles.iter() {
            handle.abort();
        }
    }

    /// Starts one more worker, unless the cap is reached or no task is left to claim.
    fn grow(self: &Arc<Self>) {
        if self.claims.is_empty() {
            return;
        }
        let Ok(worker) = self
            .started
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.cap).then_some(n + 1)
            })
        else {
            return;
        };
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        if self.aborted.load(Ordering::Relaxed) {
            return;
        }
        // Counted before it is spawned, by a worker still running (or before the recorder
        // waits): the recorder never sees every worker stopped while one is on its way.
        self.finished.enlist();
        let crew = self.clone();
        handles.push(tokio::spawn(async move { crew.work(worker).await }));
    }

    async fn work(self: Arc<Self>, worker: usize) {
        let _running = WorkerGuard(&self.finished);
        let mut slot = self.run.slot();
        let mut last_yield = Instant::now();
        loop {
            let claimed = self.claims.claim();
            if claimed.is_empty() {
                break;
            }
            for (k, &i) in claimed.iter().enumerate() {
                // The spec of this worker's next task, read once this one has run.
                if let Some(&after) = claimed.get(k + 1) {
                    crate::prefetch::prefetch(self.run.spec(after));
                }
                let (state, at) = self.on_first_wait(self.run.execute(i, &mut slot)).await;
                self.finished.push(worker, (i, state, at));
                // Tasks that never wait never hand the thread back to the scheduler, which then
                // neither runs other tasks nor looks at its timers and sockets: a waiting
                // sibling's timeout would fire only when the busy tasks ran out.
                if at.saturating_duration_since(last_yield) >= YIELD_INTERVAL {
                    tokio::task::yield_now().await;
                    last_yield = Instant::now();
                }
            }
        }
    }

    /// Runs `task`, starting another worker the first time it has to wait (so that the thread
    /// goes on with other tasks meanwhile).
    async fn on_first_wait<T>(self: &Arc<Self>, task: impl Future<Output = T>) -> T {
        let mut task = pin!(task);
        let mut waited = false;
        std::future::poll_fn(|cx| {
            let poll = task.as_mut().poll(cx);
            if poll.is_pending() && !waited {
                waited = true;
                self.grow();
            }
            poll
        })
        .await
    }
}
