//! A worker's kept instances: what a task allowing `reuse` left for the next job like it.
//!
//! A local run keeps one instance per lane of a phase, for the next task that lane runs. A
//! worker runs jobs of many runs at once, so its instances wait on a shelf, each labelled with
//! the run and phase it served: a job takes one only if it is of the same run, phase and engine,
//! and it may serve the job (the same plugin, limits and grants, fewer tasks served than the
//! task's `reuse`). Tasks of different runs, or of different phases of one run, never share an
//! instance, as locally.
//!
//! Every job that finds nothing to take lets one kept instance of its engine go, so instances
//! kept plus instances running never outnumber the worker's concurrency: the engine's pool has
//! room for every job the worker takes. An instance left on the shelf longer than [`SHELF_LIFE`]
//! is let go at the next job (its run has most likely ended).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phasegate_engine::LoadedPlugin;
use phasegate_engine::call::KeptInstance;
use phasegate_model::pipeline::{EngineLimits, Grants, Limits};

/// How long an instance waits on the shelf for a job of its run and phase.
pub const SHELF_LIFE: Duration = Duration::from_secs(30);

/// Instances kept between jobs.
#[derive(Default)]
pub struct Shelf(Mutex<Vec<Kept>>);

struct Kept {
    engine: EngineLimits,
    run: String,
    phase: String,
    since: Instant,
    instance: KeptInstance,
}

/// Which job is asking, and what its task may share.
pub struct Asking<'a> {
    pub engine: EngineLimits,
    pub run: &'a str,
    pub phase: &'a str,
    pub plugin: &'a Arc<LoadedPlugin>,
    pub limits: &'a Limits,
    pub grants: &'a Grants,
    /// The task's `reuse` (1 or less: it takes nothing).
    pub reuse: u32,
}

impl Shelf {
    /// The kept instance that may serve this job, if any; when there is none, one instance of
    /// the job's engine is let go (the oldest), to make room for the one the job will make.
    pub fn take(&self, job: &Asking<'_>) -> Option<KeptInstance> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // What is let go is dropped after the lock is released: dropping an instance resets
        // its memory.
        let mut gone: Vec<Kept> = Vec::new();
        let mut i = 0;
        while i < kept.len() {
            if now.duration_since(kept[i].since) >= SHELF_LIFE {
                gone.push(kept.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let fits = |k: &Kept| {
            k.engine == job.engine
                && k.run == job.run
                && k.phase == job.phase
                && k.instance
                    .serves(job.plugin, job.limits, job.grants, job.reuse)
        };
        let found = if job.reuse > 1 {
            kept.iter().position(fits)
        } else {
            None
        };
        let taken = match found {
            Some(i) => Some(kept.swap_remove(i).instance),
            None => {
                let oldest = kept
                    .iter()
                    .enumerate()
                    .filter(|(_, k)| k.engine == job.engine)
                    .min_by_key(|(_, k)| k.since)
                    .map(|(i, _)| i);
                if let Some(i) = oldest {
                    gone.push(kept.swap_remove(i));
                }
                None
            }
        };
        drop(kept);
        drop(gone);
        taken
    }

    /// Shelves what a job of `run` and `phase` on `engine` left.
    pub fn put(&self, engine: EngineLimits, run: &str, phase: &str, instance: KeptInstance) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(Kept {
            engine,
            run: run.to_owned(),
            phase: phase.to_owned(),
            since: Instant::now(),
            instance,
        });
    }
}
