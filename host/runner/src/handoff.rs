//! How the workers of a parallel phase share its tasks: they claim pending tasks from
//! [`Claims`] and leave finished ones in [`Finished`] for the recorder.
//!
//! Both are built so that, on several cores, workers rarely write to the same cache line. With
//! one queue lock and one batch lock shared by every worker, those two lines moved between the
//! cores for every task: on two cores the pop and the push took four times their one-core share
//! of the profile. Now a worker claims a run of tasks at a time (one atomic operation per run,
//! not per task), and hands finished tasks over in a slot of its own, which only the recorder
//! also touches, about once a millisecond.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use phasegate_model::progress::TaskState;

/// A finished task on its way to the recorder: its index, its record, when it finished.
pub type Done = (usize, TaskState, Instant);

/// The most tasks one claim takes.
const MAX_CLAIM: usize = 16;

/// The pending tasks of a parallel phase, in order, claimed by its workers a run at a time.
///
/// A claim takes a run of about 1/4 of a fair share of what is left (`left / (4 × workers)`,
/// between 1 and [`MAX_CLAIM`]): while many tasks are left a worker comes back for more every
/// few tasks instead of every task, and near the end claims shrink to one task each, so no
/// worker is left holding several while the others are idle (for tasks that take long, as much
/// as for short ones). A phase with fewer than `4 × workers` tasks is claimed one by one.
pub struct Claims {
    tasks: Vec<usize>,
    workers: usize,
    next: Padded<AtomicUsize>,
}

impl Claims {
    /// `tasks` (indices into the phase's tasks) for up to `workers` workers.
    pub fn new(tasks: Vec<usize>, workers: usize) -> Self {
        Claims {
            tasks,
            workers: workers.max(1),
            next: Padded(AtomicUsize::new(0)),
        }
    }

    /// Whether every task has been claimed.
    pub fn is_empty(&self) -> bool {
        self.next.0.load(Ordering::Relaxed) >= self.tasks.len()
    }

    /// Claims the next run of tasks: their indices, in order (empty once none is left).
    pub fn claim(&self) -> &[usize] {
        let len = self.tasks.len();
        let mut at = self.next.0.load(Ordering::Relaxed);
        loop {
            if at >= len {
                return &[];
            }
            let run = ((len - at) / (4 * self.workers)).clamp(1, MAX_CLAIM);
            // Relaxed: the tasks themselves are immutable; only the count is shared.
            match self.next.0.compare_exchange_weak(
                at,
                at + run,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return &self.tasks[Range {
                        start: at,
                        end: at + run,
                    }];
                }
                Err(now) => at = now,
            }
        }
    }
}

/// Where the workers of a parallel phase leave finished tasks for the recorder: each worker has
/// a slot of its own (an uncontended lock), and the recorder is woken by the first push after it
/// last took them.
pub struct Finished {
    slots: Box<[Padded<Mutex<Vec<Done>>>]>,
    /// Set by the push that wakes the recorder, cleared when the recorder takes the slots: most
    /// pushes only read it.
    pending: Padded<AtomicBool>,
    /// Signalled when tasks are waiting and when a worker stops.
    ready: tokio::sync::Notify,
    /// Workers still running.
    running: AtomicUsize,
}

impl Finished {
    /// Slots for up to `workers` workers, numbered from 0; each one is counted as running from
    /// its [`enlist`](Self::enlist) until its [`WorkerGuard`] drops.
    pub fn new(workers: usize) -> Self {
        Finished {
            slots: (0..workers).map(|_| Padded(Mutex::default())).collect(),
            pending: Padded(AtomicBool::new(false)),
            ready: tokio::sync::Notify::new(),
            running: AtomicUsize::new(0),
        }
    }

    /// Counts one more worker as running (before it is spawned).
    pub fn enlist(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    /// Hands over a task finished by worker `worker`.
    pub fn push(&self, worker: usize, done: Done) {
        self.slots[worker]
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(done);
        // SeqCst, with the store in `take`: if this reads `true` from before the recorder
        // cleared it, the recorder's visit to this slot comes after the push and takes it.
        if !self.pending.0.load(Ordering::SeqCst) && !self.pending.0.swap(true, Ordering::SeqCst) {
            self.ready.notify_one();
        }
    }

    /// Waits for finished tasks and moves them into `batch` (empty, its capacity reused), in
    /// the order they finished; `false` once every worker has stopped and none is left.
    pub async fn next_batch(&self, batch: &mut Vec<Done>) -> bool {
        loop {
            self.take(batch);
            if !batch.is_empty() {
                return true;
            }
            if self.all_stopped() {
                // Every push happened before its worker stopped: take what is left.
                self.take(batch);
                return !batch.is_empty();
            }
            self.ready.notified().await;
        }
    }

    fn take(&self, into: &mut Vec<Done>) {
        self.pending.0.store(false, Ordering::SeqCst);
        for slot in &self.slots {
            into.append(&mut slot.0.lock().unwrap_or_else(|e| e.into_inner()));
        }
        // Slots are taken one worker after another; events and journal lines go by time.
        into.sort_unstable_by_key(|(_, _, at)| *at);
    }

    /// Whether every worker has stopped.
    pub fn all_stopped(&self) -> bool {
        self.running.load(Ordering::Acquire) == 0
    }
}

/// Lets finished tasks gather for `interval` before the recorder takes them again.
///
/// On a multi-thread runtime the recorder has a thread of its own (the one blocked on the run,
/// or a worker that [`block_in_place`](tokio::task::block_in_place) hands its other tasks away
/// from), and it sleeps on it. Not on tokio's timer: a timer fires only when some worker thread
/// gets back to its scheduler, which workers running tasks that never wait (a phase of small
/// CPU-bound tasks) may not do until the phase ends; `tokio::time::sleep` here held nearly every
/// record of such a phase until its last task had finished, so a run killed mid-phase lost them.
///
/// On a current-thread runtime the recorder shares the thread with the tasks and runs only
/// when one of them waits: batches gather by themselves, and there is nothing to sleep for.
pub async fn gather(interval: std::time::Duration) {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        return;
    }
    tokio::task::block_in_place(|| std::thread::sleep(interval));
}

/// Counts a worker as stopped when it ends, even by panicking (so the recorder never waits for
/// a worker that is gone).
pub struct WorkerGuard<'a>(pub &'a Finished);

impl Drop for WorkerGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Release);
        self.0.ready.notify_one();
    }
}

/// A value on cache lines of its own (128 bytes: adjacent-line prefetchers fetch lines in
/// pairs), so that writing it does not take a neighbour's line away from another core.
#[repr(align(128))]
struct Padded<T>(T);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use phasegate_model::progress::TaskStatus;

    #[test]
    fn claims_cover_every_task_once_in_order_and_shrink_to_one_at_the_end() {
        let claims = Claims::new((100..1_100).collect(), 4);
        let mut runs = Vec::new();
        loop {
            let run = claims.claim();
            if run.is_empty() {
                break;
            }
            runs.push(run.to_vec());
        }
        let all: Vec<usize> = runs.concat();
        assert_eq!(all, (100..1_100).collect::<Vec<_>>());
        assert_eq!(runs[0].len(), MAX_CLAIM, "1000 left / 16 = 62, capped");
        assert!(runs.iter().all(|r| r.len() <= MAX_CLAIM));
        // The last 16 tasks (= 4 × workers) are claimed one at a time.
        assert!(runs.iter().rev().take(16).all(|r| r.len() == 1), "{runs:?}");
        assert!(claims.claim().is_empty(), "stays empty");
        assert!(claims.is_empty());
    }

    #[test]
    fn few_tasks_are_claimed_one_by_one() {
        let claims = Claims::new(vec![3, 1, 2], 64);
        assert_eq!(claims.claim(), &[3]);
        assert_eq!(claims.claim(), &[1]);
        assert_eq!(claims.claim(), &[2]);
        assert!(claims.claim().is_empty());
    }

    #[test]
    fn claims_from_many_threads_take_each_task_exactly_once() {
        let claims = Claims::new((0..20_000).collect(), 8);
        let mut taken: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let run = claims.claim();
                            if run.is_empty() {
                                return mine;
                            }
                            mine.extend_from_slice(run);
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("claimer"))
                .collect()
        });
        taken.sort_unstable();
        assert_eq!(taken, (0..20_000).collect::<Vec<_>>());
    }

    #[test]
    fn finished_tasks_all_reach_the_recorder_in_time_order_even_when_a_worker_panics() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        let (workers, each) = (8, 500);
        let finished = Arc::new(Finished::new(workers));
        for _ in 0..workers {
            finished.enlist();
        }
        let record = |i: usize| {
            let state = TaskState {
                id: format!("t{i}").into(),
                status: TaskStatus::Succeeded,
                attempts: 1,
                duration_ms: 0,
                started_us: None,
                ended_us: None,
                usage: None,
                output: None,
                error: None,
                log: Vec::new(),
                worker: None,
                key: None,
                cached: false,
            };
            (i, state, Instant::now())
        };
        let (received, in_order) = rt.block_on(async {
            for w in 0..workers {
                let finished = finished.clone();
                tokio::spawn(async move {
                    let _running = WorkerGuard(&finished);
                    for k in 0..each {
                        // Worker 0 dies half-way; what it handed over is still recorded.
                        assert!(w != 0 || k < each / 2, "worker 0 panics");
                        finished.push(w, record(w * each + k));
                        if k % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                });
            }
            let (mut batch, mut received, mut in_order) = (Vec::new(), Vec::new(), true);
            while finished.next_batch(&mut batch).await {
                in_order &= batch.is_sorted_by_key(|(_, _, at)| *at);
                received.extend(batch.drain(..).map(|(i, _, _)| i));
            }
            (received, in_order)
        });
        assert!(in_order, "a batch was not in the order its tasks finished");
        let mut received = received;
        received.sort_unstable();
        let expected: Vec<usize> = (0..each / 2).chain(each..workers * each).collect();
        assert_eq!(received, expected);
    }
}
