//! phasegate's runner: a pipeline's phases in order, their tasks in parallel (under a cap) or
//! in sequence, then the gate. It persists progress after every finished task and verdict
//! ([`persist`]), renders input templates ([`template`]), loads and resolves pipeline files
//! ([`load`]), and hands every task attempt and gate to an [`Executor`] (the engine in this
//! process, or workers elsewhere): no wasmtime here. It emits events and never prints.

pub mod cache;
pub mod config_check;
mod crew;
pub mod explain;
mod fields;
mod handoff;
pub mod key;
pub mod load;
pub mod persist;
pub mod policy;
mod prefetch;
pub mod resume;
pub mod template;
pub mod tree;

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::borrow::Cow;
use std::fmt::Write as _;

use phasegate_model::context::{Context, add_task_to_value, is_template};
use phasegate_model::events::{Emitter, EventKind, PhaseWarning, RunOutcome};
use phasegate_model::job::{Executor, GateJob, Lane, PhaseReport, TaskJob, TaskOutcome};
use phasegate_model::pipeline::{
    GateSpec, MAX_RETRY_BACKOFF, Phase, Pipeline, PluginDigests, TaskSpec,
};
use phasegate_model::progress::{
    Failure, FailureKind, GateVerdict, PhaseState, PhaseStatus, RunStatus, TaskState, TaskStatus,
    VerdictKind, VerdictRecord,
};
use serde_json::Value;

use self::cache::ResultCache;
use self::crew::{AbortOnDrop, Crew};
use self::handoff::Done;
use self::key::Keys;
use self::persist::ProgressStore;
use self::tree::TreeDigests;

/// Runs one pipeline through an executor.
pub struct Runner<E: Executor> {
    executor: Arc<E>,
    pipeline: Arc<Pipeline>,
    emitter: Emitter,
    cache: Option<ResultCache>,
    recorded: Recorded,
    clock_free: key::ClockFree,
    trees: Arc<TreeDigests>,
}

/// How the records of an earlier session are judged when a run resumes.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// The plugins' digests when the records were made (to say which plugin changed).
    pub plugins: PluginDigests,
    /// Keep the record of every task that still exists even when its key changed (`resume
    /// --force`): for a change the user knows does not matter, which no key can tell.
    pub keep_changed: bool,
}

/// While the tasks of a parallel phase finish faster than this, their records are written in
/// batches at most this often (rather than waking the recorder for each one).
pub const RECORD_INTERVAL: Duration = Duration::from_millis(1);

/// The builtin rule for a phase without a gate.
pub const BUILTIN_GATE: &str = "builtin:all-succeeded";

impl<E: Executor> Runner<E> {
    /// A runner whose task attempts and gates run on `executor` (which must be able to run
    /// every plugin of the pipeline).
    pub fn new(executor: E, pipeline: Pipeline, emitter: Emitter) -> Self {
        Runner {
            executor: Arc::new(executor),
            pipeline: Arc::new(pipeline),
            emitter,
            cache: None,
            recorded: Recorded::default(),
            clock_free: key::ClockFree::new(),
            trees: Arc::new(TreeDigests::in_memory()),
        }
    }

    /// Keeps what digesting read-only trees learnt in `file` (the project's `.phasegate/trees`),
    /// so that a later run reads only the files that changed ([`tree`]).
    pub fn with_tree_memo(mut self, file: std::path::PathBuf) -> Self {
        self.trees = Arc::new(TreeDigests::kept_in(file));
        self
    }

    /// Names the plugins that cannot read a clock or a random source (their tasks may be
    /// cached without `deterministic`).
    pub fn with_clock_free(mut self, clock_free: key::ClockFree) -> Self {
        self.clock_free = clock_free;
        self
    }

    /// Takes the outcomes of cacheable tasks from `cache` when it has them, and files them
    /// there when it has not.
    pub fn with_cache(mut self, cache: Option<ResultCache>) -> Self {
        self.cache = cache;
        self
    }

    /// Judges the records of an earlier session as `recorded` says (by default: a record is
    /// kept while its key stays the same).
    pub fn with_recorded(mut self, recorded: Recorded) -> Self {
        self.recorded = recorded;
        self
    }

    /// Runs (or resumes) the pipeline recorded in `store`. Finished phases and tasks are not run
    /// again. Errors are host problems (e.g. the progress file cannot be written); a failed gate
    /// is an `Ok` outcome with status `failed`.
    pub async fn run(
        &self,
        store: &mut ProgressStore,
        resumed: bool,
    ) -> anyhow::Result<RunOutcome> {
        let run_id = store.state.run_id.clone();
        self.emitter.emit(EventKind::RunStarted {
            run_id: run_id.clone(),
            pipeline: self.pipeline.name.clone(),
            phases: self.pipeline.phases.len(),
            resumed,
        });
        let mut ctx = Context::new(&run_id, &self.pipeline.name, &self.pipeline.vars);
        let mut completed = Vec::new();
        let mut warnings = Vec::new();
        let keys = Arc::new(Keys::new(
            &self.pipeline,
            store.state.plugins.clone(),
            self.trees.clone(),
        ));
        let purity = self
            .cache
            .as_ref()
            .map(|_| key::Purity::of(&self.pipeline, &self.clock_free));

        for (pi, phase) in self.pipeline.phases.iter().enumerate() {
            // A phase's tasks may change a directory a later phase reads.
            keys.forget_trees();
            self.digested(phase, keys.prepare(phase));
            let run = self.phase_run(pi, &ctx, &run_id, &keys, purity.as_ref());
            // Records of an earlier session that no longer hold: their tasks run again.
            let outdated = run.outdated(&store.state.phases[pi]);
            let ps = &mut store.state.phases[pi];
            if ps.status == PhaseStatus::Complete && outdated.is_empty() && run.gate_holds(ps, &ctx)
            {
                ctx.add_phase(ps);
                completed.push(phase.id.to_string());
                if let Some(v) = ps.verdict.as_ref().filter(|v| v.kind == VerdictKind::Warn) {
                    warnings.push(PhaseWarning {
                        phase: phase.id.to_string(),
                        reason: v.reason.clone(),
                    });
                }
                self.emitter.emit(EventKind::PhaseSkipped {
                    phase: phase.id.clone(),
                    reason: "completed in an earlier session".into(),
                });
                continue;
            }
            if phase.parallel {
                // A sequential phase finds its outdated tasks as it goes: an earlier task that
                // runs again may change what a later one reads.
                let tasks = Arc::make_mut(&mut ps.tasks);
                for (ti, reason) in outdated {
                    tasks[ti].status = TaskStatus::Pending;
                    self.emitter.emit(EventKind::TaskOutdated {
                        phase: phase.id.clone(),
                        task: tasks[ti].id.clone(),
                        reason,
                    });
                }
            }
            // One journal line (not a rewrite of the whole progress file); resuming after a
            // failed gate gives the phase's failed tasks another chance.
            store.start_phase(pi)?;

            self.run_tasks(run, phase, store).await?;

            let judged = self.judge(pi, phase, store, &ctx, &run_id, &keys).await?;
            let verdict = judged.verdict;
            let failed = verdict.kind == VerdictKind::Fail;
            let ps = &mut store.state.phases[pi];
            ps.status = if failed {
                PhaseStatus::Failed
            } else {
                PhaseStatus::Complete
            };
            ps.verdict = Some(verdict.clone());
            ps.gate_key = judged.key;
            ps.gates = judged.gates;
            if failed {
                store.state.status = RunStatus::Failed;
                store.state.reason = Some(verdict.reason.clone());
            } else if pi + 1 == self.pipeline.phases.len() {
                // The last verdict completes the run: one snapshot records both.
                store.state.status = RunStatus::Completed;
            }
            store.record_judged(pi)?;
            ctx.add_phase(&store.state.phases[pi]);
            self.emitter.emit(EventKind::Verdict {
                phase: phase.id.clone(),
                gate: verdict.gate.clone(),
                verdict: verdict.clone(),
            });
            self.emitter.emit(EventKind::PhaseFinished {
                phase: phase.id.clone(),
                status: store.state.phases[pi].status,
            });
            if failed {
                return Ok(self.finish(RunOutcome {
                    status: RunStatus::Failed,
                    completed,
                    failed: Some(phase.id.to_string()),
                    reason: Some(verdict.reason),
                    warnings,
                    context: Arc::new(ctx),
                }));
            }
            if verdict.kind == VerdictKind::Warn {
                warnings.push(PhaseWarning {
                    phase: phase.id.to_string(),
                    reason: verdict.reason,
                });
            }
            completed.push(phase.id.to_string());
        }

        if store.state.status != RunStatus::Completed {
            // Every phase was complete before this session began.
            store.state.status = RunStatus::Completed;
            store.checkpoint()?;
        }
        Ok(self.finish(RunOutcome {
            status: RunStatus::Completed,
            completed,
            failed: None,
            reason: None,
            warnings,
            context: Arc::new(ctx),
        }))
    }

    fn finish(&self, outcome: RunOutcome) -> RunOutcome {
        self.emitter.emit(EventKind::RunFinished {
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Says how much of each read-only tree `phase` reads was read to digest it, and keeps what
    /// was learnt.
    fn digested(&self, phase: &Phase, walked: Vec<(std::path::PathBuf, tree::Walk)>) {
        if walked.is_empty() {
            return;
        }
        for (dir, walk) in walked {
            if walk.digest.is_ok() {
                self.emitter.emit(EventKind::TreeDigested {
                    phase: phase.id.clone(),
                    dir: dir.display().to_string(),
                    files: walk.files,
                    read: walk.read,
                    read_bytes: walk.read_bytes,
                });
            }
        }
        // Only an accelerator: a memo that cannot be written is read in full next time.
        let _ = self.trees.save();
    }

    /// What the tasks of phase `pi` share, for the context `ctx` as the phase begins; `purity`
    /// decides which may use the cache (none without it).
    fn phase_run(
        &self,
        pi: usize,
        ctx: &Context,
        run_id: &str,
        keys: &Arc<Keys>,
        purity: Option<&key::Purity>,
    ) -> PhaseRun<E> {
        let phase = &self.pipeline.phases[pi];
        // Only phases with a task that may be cached pay for the check of each.
        let purity = purity.filter(|_| phase.tasks.iter().any(|t| t.cache));
        let cache = self.cache.clone().filter(|_| purity.is_some());
        let cacheable = match purity {
            Some(purity) => (0..phase.tasks.len())
                .map(|ti| purity.uncacheable(&self.pipeline, pi, ti).is_empty())
                .collect(),
            None => Vec::new(),
        };
        PhaseRun {
            executor: self.executor.clone(),
            pipeline: self.pipeline.clone(),
            pi,
            run_id: run_id.to_owned(),
            // Tasks of a parallel phase all see the context as it was when the phase began.
            ctx: Snapshot::of(ctx, Needs::of(phase)),
            emitter: self.emitter.clone(),
            keys: keys.clone(),
            cache,
            cacheable,
            recorded: self.recorded.clone(),
            cache_unwritable: std::sync::atomic::AtomicBool::new(false),
            cache_unreadable: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn run_tasks(
        &self,
        mut run: PhaseRun<E>,
        phase: &Phase,
        store: &mut ProgressStore,
    ) -> anyhow::Result<()> {
        let pi = run.pi;
        let pending: Vec<usize> = store.state.phases[pi]
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.status == TaskStatus::Pending)
            .map(|(i, _)| i)
            .collect();
        self.emitter.emit(EventKind::PhaseStarted {
            phase: phase.id.clone(),
            tasks: phase.tasks.len(),
            to_run: pending.len(),
            parallel: phase.parallel,
            concurrency: if phase.parallel { phase.concurrency } else { 1 },
        });
        // A sequential phase says which records it keeps as it reaches them.
        for t in store.state.phases[pi]
            .tasks
            .iter()
            .filter(|t| phase.parallel && t.status != TaskStatus::Pending)
        {
            self.emitter.emit(EventKind::TaskSkipped {
                phase: phase.id.clone(),
                task: t.id.clone(),
                status: t.status,
            });
        }

        if phase.parallel {
            // Up to `concurrency` workers (see `crew`) claim tasks from one list, each reusing
            // one request (the context is copied once per worker, not per task); finished tasks
            // are handed back through `Finished` and recorded in batches (one journal append
            // for all that are ready). See `handoff` for how they keep out of each other's way.
            let crew = Crew::start(Arc::new(run), pending, phase.concurrency);
            let _abort = AbortOnDrop(&crew);
            let mut batch = Vec::new();
            let mut last_batch: Option<Instant> = None;
            while crew.next_batch(&mut batch).await {
                self.finish_tasks(pi, phase, batch.drain(..), store)?;
                // While tasks finish in a stream, let them gather for a moment instead of waking
                // up for each one: every wake costs the sending worker a syscall, and every
                // batch a journal write. Records lag by at most RECORD_INTERVAL; tasks never
                // wait for them.
                let streaming = last_batch.is_some_and(|t| t.elapsed() < RECORD_INTERVAL);
                if streaming && !crew.all_stopped() {
                    handoff::gather(RECORD_INTERVAL).await;
                }
                // Measured from here, so that a stream keeps one batch per interval.
                last_batch = Some(Instant::now());
            }
            crew.join().await?;
            crew.run().flush_cache();
        } else {
            let (mut input, mut config) = (String::new(), String::new());
            let mut keys = key::TaskKeyCache::default();
            // One lane for the phase (an instance a task leaves for the next, with `reuse`,
            // is kept there), the context granted made again for each task.
            let mut slot = run.slot();
            for i in 0..phase.tasks.len() {
                // Later tasks of a sequential phase see the results of earlier ones.
                if phase.tasks[i].grants.context {
                    run.ctx.refresh();
                }
                let existing = &store.state.phases[pi].tasks[i];
                let mut pending = existing.status == TaskStatus::Pending;
                if !pending
                    && let Err(reason) =
                        run.holds(&run.ctx, i, existing, &mut input, &mut config, &mut keys)
                {
                    self.emitter.emit(EventKind::TaskOutdated {
                        phase: phase.id.clone(),
                        task: existing.id.clone(),
                        reason,
                    });
                    pending = true;
                }
                if !pending {
                    self.emitter.emit(EventKind::TaskSkipped {
                        phase: phase.id.clone(),
                        task: existing.id.clone(),
                        status: existing.status,
                    });
                } else {
                    slot.granted = None;
                    let (state, finished) = run.execute(i, &mut slot).await;
                    self.finish_tasks(pi, phase, std::iter::once((i, state, finished)), store)?;
                }
                // For the tasks after it; the run's context gets the phase once it is judged
                // (its gate is given the earlier phases, and this one's results as outcomes).
                run.ctx
                    .add_task(&phase.id, &store.state.phases[pi].tasks[i]);
            }
            run.flush_cache();
        }
        Ok(())
    }

    /// Records finished tasks of phase `pi` (one journal append), then announces them, each
    /// stamped with when it finished.
    fn finish_tasks(
        &self,
        pi: usize,
        phase: &Phase,
        done: impl ExactSizeIterator<Item = Done>,
        store: &mut ProgressStore,
    ) -> anyhow::Result<()> {
        // Record first: whoever sees the event can rely on the record being in the journal.
        let mut events = Vec::with_capacity(done.len());
        let mut records = Vec::with_capacity(done.len());
        for (i, state, finished) in done {
            let event = EventKind::TaskFinished {
                phase: phase.id.clone(),
                task: state.id.clone(),
                status: state.status,
                attempts: state.attempts,
                duration_ms: state.duration_ms,
                error: state.error.clone(),
                worker: state.worker.clone(),
                usage: state.usage,
                cached: if state.cached {
                    state.key.clone()
                } else {
                    None
                },
            };
            events.push((finished, event));
            records.push((i, state));
        }
        store.record_tasks(pi, records)?;
        for (finished, event) in events {
            self.emitter.emit_at(finished, event);
        }
        Ok(())
    }

    /// The phase's verdict, the key of its gates (over what they judged), and each gate's
    /// verdict when its policies combine them. A passing gate whose key is the same as when it
    /// passed (resuming) is not asked again.
    async fn judge(
        &self,
        pi: usize,
        phase: &Phase,
        store: &ProgressStore,
        ctx: &Context,
        run_id: &str,
        keys: &Keys,
    ) -> anyhow::Result<Judged> {
        let ps = &store.state.phases[pi];
        let tasks = &ps.tasks;
        let whole = phase
            .gates
            .iter()
            .any(|g| g.grants.context)
            .then(|| ctx.to_value());
        let digest = whole.as_ref().map(key::context_digest);
        let (key, each) = match keys.gates(phase, tasks, digest.as_deref()) {
            Ok((key, each)) => (Some(key), each.into_iter().map(Some).collect()),
            Err(_) => (None, vec![None; phase.gates.len()]),
        };
        if phase.gates.is_empty() {
            return Ok(Judged {
                verdict: all_succeeded(tasks),
                key,
                gates: Vec::new(),
            });
        }
        let policies = phase.has_policies();
        let mut gates = Vec::with_capacity(phase.gates.len());
        for (gi, (gate, key)) in phase.gates.iter().zip(each).enumerate() {
            let kept = ps
                .gates
                .get(gi)
                .filter(|r| {
                    policies
                        && r.policy == gate.policy
                        && r.verdict.gate == gate.plugin.spec
                        && r.verdict.kind != VerdictKind::Fail
                        && (self.recorded.keep_changed || (r.key.is_some() && r.key == key))
                })
                .map(|r| r.verdict.clone());
            let verdict = match kept.clone() {
                Some(verdict) => verdict,
                None => {
                    let context = match (&whole, gate.grants.context) {
                        (Some(whole), true) => whole.to_string(),
                        _ => ctx.ungranted_value().to_string(),
                    };
                    self.ask(phase, gate, tasks, context, run_id).await
                }
            };
            if policies {
                self.emitter.emit(EventKind::GateVerdict {
                    phase: phase.id.clone(),
                    gate: gate.plugin.spec.clone(),
                    policy: gate.policy,
                    verdict: verdict.clone(),
                    kept: kept.is_some(),
                });
            }
            gates.push(GateVerdict {
                policy: gate.policy,
                key,
                verdict,
            });
        }
        Ok(if policies {
            Judged {
                verdict: policy::combine(phase, &gates),
                key,
                gates,
            }
        } else {
            Judged {
                verdict: gates
                    .pop()
                    .map(|g| g.verdict)
                    .unwrap_or_else(|| all_succeeded(tasks)),
                key,
                gates: Vec::new(),
            }
        })
    }

    /// Asks one gate for its verdict on the phase's `tasks`, given `context` (the earlier
    /// phases, or only the run's names without the grant).
    async fn ask(
        &self,
        phase: &Phase,
        gate: &GateSpec,
        tasks: &[TaskState],
        context: String,
        run_id: &str,
    ) -> VerdictRecord {
        self.emitter.emit(EventKind::GateStarted {
            phase: phase.id.clone(),
            gate: gate.plugin.spec.clone(),
        });
        let report = PhaseReport {
            run_id: run_id.to_owned(),
            phase: phase.id.to_string(),
            outcomes: tasks.iter().map(to_outcome).collect(),
            // The earlier phases only (the contract's `phase-report`): this phase is added to
            // the context once judged.
            context,
            config: gate.config.to_string(),
        };
        let job = GateJob {
            plugin: Cow::Borrowed(&gate.plugin),
            report,
            limits: gate.limits,
            grants: Cow::Borrowed(&gate.grants),
        };
        self.executor.run_gate(job, self.emitter.clone()).await
    }
}

/// A phase's verdict, as [`Runner::judge`] gives it.
struct Judged {
    verdict: VerdictRecord,
    /// The key of the phase's gates.
    key: Option<String>,
    /// Each gate's verdict, when the phase's policies combine them.
    gates: Vec<GateVerdict>,
}

/// What the tasks of one phase share: built once per phase, not per task.
struct PhaseRun<E: Executor> {
    executor: Arc<E>,
    /// The phase is `pipeline.phases[pi]`.
    pipeline: Arc<Pipeline>,
    pi: usize,
    run_id: String,
    ctx: Snapshot,
    emitter: Emitter,
    keys: Arc<Keys>,
    /// The result cache, when the phase has a task that may use it.
    cache: Option<ResultCache>,
    /// Per task, whether its result may be cached (with `cache`).
    cacheable: Vec<bool>,
    recorded: Recorded,
    /// Whether a failed write to the cache, and a failed read, was reported (once per phase is
    /// enough).
    cache_unwritable: std::sync::atomic::AtomicBool,
    cache_unreadable: std::sync::atomic::AtomicBool,
}

/// The context the tasks of a phase see, built once for all the tasks that share it.
///
/// A task without the `context` grant is sent only the run id and the pipeline's name, so a
/// phase that follows a phase of 10,000 tasks does not copy 10,000 outputs into each of its
/// instances; the whole context is kept (as a JSON value) only when a task of the phase renders
/// an input template or is granted it, and its text only when a task is granted it.
#[derive(Clone)]
struct Snapshot {
    /// The whole context, when a task renders a template or is granted the context (shared
    /// with the templates being rendered; between tasks nothing else holds it).
    value: Option<Arc<Value>>,
    /// `value`'s JSON text, when a task of the phase is granted the context (rebuilt after a
    /// sequential phase's task only when a later granted task needs it), and its digest for
    /// the keys of granted tasks ([`key::context_digest`]).
    granted: Option<Arc<str>>,
    granted_digest: Option<Arc<str>>,
    /// What a task without the grant is sent ([`Context::ungranted_value`]).
    ungranted: Arc<str>,
}

impl Snapshot {
    fn of(ctx: &Context, needs: Needs) -> Self {
        let value = (needs.templates || needs.granted).then(|| Arc::new(ctx.to_value()));
        Snapshot {
            granted: match &value {
                Some(value) if needs.granted => Some(value.to_string().into()),
                _ => None,
            },
            granted_digest: match &value {
                Some(value) if needs.granted => Some(key::context_digest(value).into()),
                _ => None,
            },
            value,
            ungranted: ctx.ungranted_value().to_string().into(),
        }
    }

    /// Adds a task a sequential phase just finished, for the tasks after it.
    fn add_task(&mut self, phase: &str, task: &TaskState) {
        if let Some(value) = &mut self.value {
            add_task_to_value(Arc::make_mut(value), phase, task);
            self.granted = None;
            self.granted_digest = None;
        }
    }

    /// Builds the whole context's text again if a task added since made it stale (a sequential
    /// phase, before a task granted the context).
    fn refresh(&mut self) {
        if let (Some(value), None) = (&self.value, &self.granted) {
            self.granted = Some(value.to_string().into());
            self.granted_digest = Some(key::context_digest(value).into());
        }
    }

    /// The digest of the whole context, for the key of a task granted it.
    fn digest(&self, granted: bool) -> Option<&str> {
        self.granted_digest.as_deref().filter(|_| granted)
    }

    /// The context text for a task with or without the grant.
    fn text(&self, granted: bool) -> &Arc<str> {
        match (&self.granted, granted) {
            (Some(whole), true) => whole,
            _ => {
                debug_assert!(
                    !granted,
                    "the whole context was not built for a granted task"
                );
                &self.ungranted
            }
        }
    }

    /// Renders a task's input template into `out` (a reused buffer: an input that is not a
    /// template, in a phase without templates, is copied without allocating).
    fn render_into(&self, input: &str, out: &mut String) -> Result<(), String> {
        match &self.value {
            Some(value) => *out = template::render(input, value)?,
            None => {
                out.clear();
                out.push_str(input);
            }
        }
        Ok(())
    }
}

/// A worker's way to the executor and its buffers, reused from task to task.
struct TaskSlot<L> {
    lane: L,
    /// The task's rendered input.
    input: String,
    /// The task's config as JSON text.
    config: String,
    /// What the worker keeps from one task's key to the next.
    keys: key::TaskKeyCache,
    /// The worker's own copies of the context texts (without and, once a task needs it, with
    /// the grant): every job carries one, and a count shared between workers would move
    /// between their cores for every task.
    ungranted: Arc<str>,
    granted: Option<Arc<str>>,
    /// The worker's own handle on the phase's emitter ([`Emitter::local`]).
    emitter: Emitter,
}

/// What the tasks of a phase need of the context: decided once per phase.
#[derive(Clone, Copy)]
struct Needs {
    /// Some task has an input template.
    templates: bool,
    /// Some task is granted the whole context.
    granted: bool,
}

impl Needs {
    fn of(phase: &Phase) -> Self {
        // One pass: each task's spec is a cache miss of its own in a large phase.
        let mut needs = Needs {
            templates: false,
            granted: false,
        };
        for t in &phase.tasks {
            needs.templates |= is_template(&t.input);
            needs.granted |= t.grants.context;
            if needs.templates && needs.granted {
                break;
            }
        }
        needs
    }
}

impl<E: Executor> PhaseRun<E> {
    fn spec(&self, ti: usize) -> &TaskSpec {
        &self.pipeline.phases[self.pi].tasks[ti]
    }

    /// A worker's slot: a lane to the executor and the buffers its tasks reuse.
    fn slot(&self) -> TaskSlot<E::Lane> {
        let emitter = self.emitter.local();
        TaskSlot {
            lane: self.executor.lane(emitter.clone()),
            input: String::new(),
            config: String::new(),
            keys: key::TaskKeyCache::default(),
            ungranted: Arc::from(&**self.ctx.text(false)),
            granted: None,
            emitter,
        }
    }

    /// The tasks whose records (from an earlier session) no longer hold, with why. (In a
    /// sequential phase only the first counts: the run judges the ones after it as it reaches
    /// them, on what the tasks before them then made.)
    fn outdated(&self, ps: &PhaseState) -> Vec<(usize, String)> {
        if self.recorded.keep_changed {
            return Vec::new();
        }
        self.records(ps)
            .into_iter()
            .enumerate()
            .filter_map(|(ti, record)| match record {
                Some(Err(why)) => Some((ti, why)),
                _ => None,
            })
            .collect()
    }

    /// For each task of the phase (`ps` its records), in order, whether its record from an
    /// earlier session still holds ([`Self::holds`]); `None` for a task that runs regardless: not
    /// finished, or failed in a phase whose gate failed. A sequential phase's tasks are judged
    /// with the records before them in the context, as they would see them.
    fn records(&self, ps: &PhaseState) -> Vec<Option<Result<(), String>>> {
        let phase = &self.pipeline.phases[self.pi];
        let (mut input, mut config) = (String::new(), String::new());
        let mut keys = key::TaskKeyCache::default();
        let mut seen = (!phase.parallel).then(|| self.ctx.clone());
        let mut out = Vec::with_capacity(ps.tasks.len());
        for (ti, t) in ps.tasks.iter().enumerate() {
            let rerun = t.status == TaskStatus::Pending
                || (ps.status == PhaseStatus::Failed && t.status == TaskStatus::Failed);
            let ctx = match &mut seen {
                Some(seen) => {
                    if phase.tasks[ti].grants.context {
                        seen.refresh();
                    }
                    &*seen
                }
                None => &self.ctx,
            };
            out.push((!rerun).then(|| self.holds(ctx, ti, t, &mut input, &mut config, &mut keys)));
            if let Some(seen) = &mut seen {
                seen.add_task(&phase.id, t);
            }
        }
        out
    }

    /// Whether task `ti`'s `record` from an earlier session still holds in context `ctx`: its
    /// key is the same now (a record without a key was made before keys, and is kept). `input`
    /// and `config` are buffers, `keys` what is kept from one key to the next.
    fn holds(
        &self,
        ctx: &Snapshot,
        ti: usize,
        record: &TaskState,
        input: &mut String,
        config: &mut String,
        keys: &mut key::TaskKeyCache,
    ) -> Result<(), String> {
        if self.recorded.keep_changed {
            return Ok(());
        }
        let Some(before) = record.key.as_deref() else {
            return Ok(());
        };
        let spec = self.spec(ti);
        ctx.render_into(&spec.input, input)
            .map_err(|e| format!("its input cannot be rendered now: {e}"))?;
        config.clear();
        let _ = write!(config, "{}", spec.config);
        let now = self.keys.task(
            &self.pipeline.phases[self.pi].id,
            spec,
            input,
            config,
            ctx.digest(spec.grants.context),
            keys,
        )?;
        if now == before {
            return Ok(());
        }
        let plugin = &spec.plugin.spec;
        Err(match self.recorded.plugins.get(plugin) {
            Some(was) if was != self.keys.plugin_digest(plugin) => format!(
                "plugin `{plugin}` changed ({} → {})",
                resume::short(was),
                resume::short(self.keys.plugin_digest(plugin))
            ),
            _ => "its input, config, limits or grants changed, or a file it reads".into(),
        })
    }

    /// Whether the verdict recorded for the phase (`ps`) still holds: its gate's key is the same
    /// over the tasks as they are now, in the run's context `ctx`.
    fn gate_holds(&self, ps: &PhaseState, ctx: &Context) -> bool {
        let Some(before) = ps.gate_key.as_deref() else {
            return true;
        };
        if self.recorded.keep_changed {
            return true;
        }
        let phase = &self.pipeline.phases[self.pi];
        let digest = phase
            .gates
            .iter()
            .any(|g| g.grants.context)
            .then(|| key::context_digest(&ctx.to_value()));
        self.keys
            .gates(phase, &ps.tasks, digest.as_deref())
            .is_ok_and(|(now, _)| now == before)
    }

    /// Runs task `ti` (with its retries) through the slot's lane, or takes its outcome from the
    /// result cache; returns its record and when it finished.
    async fn execute(&self, ti: usize, slot: &mut TaskSlot<E::Lane>) -> (TaskState, Instant) {
        let phase = &self.pipeline.phases[self.pi];
        let spec = self.spec(ti);
        let mut state = TaskState {
            id: spec.id.clone(),
            status: TaskStatus::Failed,
            attempts: 0,
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
        if let Err(message) = self.ctx.render_into(&spec.input, &mut slot.input) {
            state.error = Some(Failure {
                kind: FailureKind::InvalidInput,
                message: format!(
                    "cannot render the `input` of task `{}` in phase `{}` ({}:{}): {message}",
                    spec.id,
                    phase.id,
                    self.pipeline.path.display(),
                    spec.input_line
                ),
            });
            return (state, Instant::now());
        }
        slot.config.clear();
        let _ = write!(slot.config, "{}", spec.config);
        let key = self.keys.task(
            &phase.id,
            spec,
            &slot.input,
            &slot.config,
            self.ctx.digest(spec.grants.context),
            &mut slot.keys,
        );
        let cache = match (&self.cache, &key) {
            (Some(cache), Ok(_)) if self.cacheable[ti] => Some(cache),
            _ => None,
        };
        state.key = key.ok();
        if let (Some(cache), Some(key)) = (cache, &state.key) {
            match cache.get(key, &spec.id) {
                Ok(Some(mut hit)) => {
                    let now = Instant::now();
                    hit.started_us = Some(slot.emitter.unix_us(now));
                    hit.ended_us = hit.started_us;
                    return (hit, now);
                }
                Ok(None) => {}
                Err(cache::Unusable::Unreadable { path, error }) => {
                    self.cache_problem_once(
                        &self.cache_unreadable,
                        &slot.emitter,
                        &spec.id,
                        || {
                            format!(
                                "cannot read {} ({error}); the tasks of this phase run instead",
                                path.display()
                            )
                        },
                    );
                }
                Err(cache::Unusable::Damaged(corrupt)) => {
                    slot.emitter.emit(EventKind::CacheProblem {
                        phase: phase.id.clone(),
                        task: spec.id.clone(),
                        message: format!(
                            "the entry for {} in {} is damaged ({}); it was removed and the task runs",
                            corrupt.key,
                            corrupt.path.display(),
                            corrupt.why
                        ),
                    });
                    cache.remove(&corrupt);
                }
            }
        }
        let context = if spec.grants.context {
            slot.granted
                .get_or_insert_with(|| Arc::from(&**self.ctx.text(true)))
                .clone()
        } else {
            slot.ungranted.clone()
        };
        let ended = self.attempts(spec, slot, &mut state, context).await;
        // Only outcomes the same key always gives: a success, or input or config refused.
        let lasting = match &state.error {
            None => state.status == TaskStatus::Succeeded,
            Some(e) => matches!(
                e.kind,
                FailureKind::InvalidInput | FailureKind::InvalidConfig
            ),
        };
        if let Some(cache) = cache.filter(|_| lasting)
            && let Err(error) = cache.put(&state)
        {
            self.cache_unwritable(
                &slot.emitter,
                cache::Unwritten {
                    task: spec.id.to_string(),
                    error,
                },
            );
        }
        (state, ended)
    }

    /// Writes what the phase's tasks filed in the cache and is still waiting (see
    /// [`ResultCache::flush`]).
    fn flush_cache(&self) {
        if let Some(cache) = &self.cache
            && let Err(unwritten) = cache.flush()
        {
            self.cache_unwritable(&self.emitter, unwritten);
        }
    }

    /// Says once per phase that outcomes could not be filed.
    fn cache_unwritable(&self, emitter: &Emitter, unwritten: cache::Unwritten) {
        let Some(cache) = &self.cache else { return };
        self.cache_problem_once(&self.cache_unwritable, emitter, &unwritten.task, || {
            format!(
                "cannot write to {} ({}); results of this phase are not cached",
                cache.dir().display(),
                unwritten.error
            )
        });
    }

    /// Says a cache problem of task `task`, unless `said` says one of its kind was said in
    /// this phase already.
    fn cache_problem_once(
        &self,
        said: &std::sync::atomic::AtomicBool,
        emitter: &Emitter,
        task: &str,
        message: impl FnOnce() -> String,
    ) {
        if !said.swap(true, std::sync::atomic::Ordering::Relaxed) {
            emitter.emit(EventKind::CacheProblem {
                phase: self.pipeline.phases[self.pi].id.clone(),
                task: task.into(),
                message: message(),
            });
        }
    }

    /// The attempts of a task (its retries) through the slot's lane, into `state`; returns when
    /// the last one ended.
    async fn attempts(
        &self,
        spec: &TaskSpec,
        slot: &mut TaskSlot<E::Lane>,
        state: &mut TaskState,
        context: Arc<str>,
    ) -> Instant {
        let phase = &self.pipeline.phases[self.pi];
        loop {
            state.attempts += 1;
            let started = Instant::now();
            if state.attempts == 1 {
                state.started_us = Some(slot.emitter.unix_us(started));
            }
            slot.emitter.emit_at(
                started,
                EventKind::TaskStarted {
                    phase: phase.id.clone(),
                    task: spec.id.clone(),
                    attempt: state.attempts,
                },
            );
            let job = TaskJob {
                run_id: Cow::Borrowed(&self.run_id),
                phase: phase.id.clone(),
                task: spec.id.clone(),
                attempt: state.attempts,
                input: Cow::Borrowed(&slot.input),
                context: context.clone(),
                config: Cow::Borrowed(&slot.config),
                plugin: Cow::Borrowed(&spec.plugin),
                limits: spec.limits,
                grants: Cow::Borrowed(&spec.grants),
                reuse: spec.reuse,
            };
            let attempt = slot.lane.run(&job).await;
            let ended = Instant::now();
            state.duration_ms = u64::try_from((ended - started).as_millis()).unwrap_or(u64::MAX);
            state.ended_us = Some(slot.emitter.unix_us(ended));
            state.log = attempt.log;
            state.worker = attempt.worker;
            state.usage = Some(attempt.usage);
            match attempt.result {
                Ok(output) => {
                    state.status = TaskStatus::Succeeded;
                    state.output = Some(output);
                    return ended;
                }
                Err(failure)
                    if spec.retry_on.contains(&failure.kind) && state.attempts <= spec.retries =>
                {
                    let delay = backoff(spec.retry_backoff, state.attempts);
                    slot.emitter.emit(EventKind::TaskRetry {
                        phase: phase.id.clone(),
                        task: spec.id.clone(),
                        attempt: state.attempts,
                        delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error: failure,
                    });
                    tokio::time::sleep(delay).await;
                }
                Err(failure) => {
                    state.error = Some(failure);
                    return ended;
                }
            }
        }
    }
}

/// Delay before the retry that follows attempt `attempt` (1-based): base × 2^(attempt-1).
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_RETRY_BACKOFF)
}

fn to_outcome(t: &TaskState) -> TaskOutcome {
    TaskOutcome {
        task: t.id.to_string(),
        output: t.output.clone(),
        error: t.error.clone(),
        attempts: t.attempts,
        duration_ms: t.duration_ms,
        usage: t.usage,
    }
}

/// The built-in gate's reason names this many failed tasks; the rest are counted (the progress
/// file has them all: `phasegate status --failed`).
pub const REASON_FAILURES: usize = 3;
/// A failed task's message in the built-in gate's reason is cut to this many characters.
pub const REASON_MESSAGE_CHARS: usize = 200;

fn all_succeeded(tasks: &[TaskState]) -> VerdictRecord {
    let failures = tasks.iter().filter(|t| t.status != TaskStatus::Succeeded);
    let count = failures.clone().count();
    let mut failed: Vec<String> = failures
        .take(REASON_FAILURES)
        .map(|t| match &t.error {
            Some(e) => format!(
                "`{}` ({})",
                t.id,
                phasegate_model::text::cut(&e.message, REASON_MESSAGE_CHARS)
            ),
            None => format!("`{}`", t.id),
        })
        .collect();
    if count > REASON_FAILURES {
        failed.push(format!(
            "… and {} more (`phasegate status --failed` lists them all)",
            count - REASON_FAILURES
        ));
    }
    let (kind, reason) = if failed.is_empty() {
        (
            VerdictKind::Pass,
            format!("all {} task(s) succeeded", tasks.len()),
        )
    } else {
        (
            VerdictKind::Fail,
            format!(
                "{} of {} task(s) failed: {}",
                count,
                tasks.len(),
                failed.join("; ")
            ),
        )
    };
    VerdictRecord {
        kind,
        gate: BUILTIN_GATE.into(),
        reason,
        evidence: None,
        crashed: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use phasegate_model::job::Attempt;
    use phasegate_model::pipeline::{PluginRef, Resolve, Scope};
    use phasegate_model::progress::State;

    /// Every plugin "exists"; templates are checked as the loader would.
    struct Anything;

    impl Resolve for Anything {
        fn plugin(&mut self, spec: &str, dir: &Path) -> (Arc<PluginRef>, Option<(String, String)>) {
            (Arc::new(PluginRef::file(&dir.join(spec))), None)
        }
        fn is_dir(&mut self, _: &Path) -> bool {
            true
        }
        fn template(&mut self, t: &str, scope: &Scope<'_>) -> Result<(), (String, String)> {
            template::check_template(t, scope)
        }
        fn project(&mut self, _: &Path) -> Option<PathBuf> {
            None
        }
    }

    /// An executor with no engine: a task's output is its input upper-cased (as a JSON
    /// string), `fail` fails once then succeeds; a gate passes when every task succeeded.
    #[derive(Default)]
    struct Fake {
        jobs: Arc<Mutex<Vec<String>>>,
    }

    struct FakeLane(Arc<Mutex<Vec<String>>>);

    impl Executor for Fake {
        type Lane = FakeLane;
        fn lane(&self, _: Emitter) -> FakeLane {
            FakeLane(self.jobs.clone())
        }
        async fn run_gate(&self, job: GateJob<'_>, _: Emitter) -> VerdictRecord {
            let failed = job
                .report
                .outcomes
                .iter()
                .filter(|o| o.error.is_some())
                .count();
            VerdictRecord {
                kind: if failed == 0 {
                    VerdictKind::Pass
                } else {
                    VerdictKind::Fail
                },
                gate: job.plugin.spec.clone(),
                reason: format!("{failed} failed; context {}", job.report.context),
                evidence: None,
                crashed: None,
            }
        }
    }

    impl Lane for FakeLane {
        async fn run(&mut self, job: &TaskJob<'_>) -> Attempt {
            // What crosses the seam serialises and comes back the same.
            let wire = serde_json::to_string(job).unwrap_or_default();
            let back: TaskJob<'_> = serde_json::from_str(&wire).expect("a job reads back");
            assert_eq!(&back, job);
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{}/{}#{}", job.phase, job.task, job.attempt));
            let result = if job.task == "fail" && job.attempt == 1 {
                Err(Failure {
                    kind: FailureKind::Failed,
                    message: "first try".into(),
                })
            } else {
                Ok(Value::String(job.input.to_uppercase()).to_string())
            };
            Attempt {
                result,
                log: Vec::new(),
                worker: None,
                usage: Default::default(),
            }
        }
    }

    #[test]
    fn the_runner_needs_only_an_executor() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("p.toml");
        let text = r#"
name = "seam"
[defaults]
retries = 1
retry-backoff = "1ms"
[[phase]]
id = "one"
[[phase.task]]
id = "a"
plugin = "a.wasm"
input = "hello"
[[phase.task]]
id = "fail"
plugin = "a.wasm"
input = "again"
[[phase]]
id = "two"
gate = { plugin = "g.wasm", grants = { context = true } }
[[phase.task]]
id = "b"
plugin = "b.wasm"
input = "{{ phases.one.tasks.a.output }} world"
"#;
        let pipeline = Pipeline::parse(&path, text, &mut Anything).expect("valid");
        let state = State::new("r1".into(), &pipeline, Default::default());
        let mut store =
            ProgressStore::create(&dir.path().join("state.toml"), state).expect("store");
        let fake = Fake::default();
        let jobs = fake.jobs.clone();
        let runner = Runner::new(fake, pipeline, Emitter::discard());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let outcome = rt.block_on(runner.run(&mut store, false)).expect("run");
        assert_eq!(outcome.status, RunStatus::Completed, "{:?}", outcome.reason);
        let mut ran = jobs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ran.sort();
        assert_eq!(ran, ["one/a#1", "one/fail#1", "one/fail#2", "two/b#1"]);
        let two = &store.state.phases[1];
        assert_eq!(two.tasks[0].output.as_deref(), Some(r#""HELLO WORLD""#));
        let verdict = two.verdict.as_ref().expect("judged");
        assert!(verdict.reason.contains(r#""one""#), "{}", verdict.reason);
        // Persisted as it went: the progress file reads back the same.
        let reopened = ProgressStore::open(&dir.path().join("state.toml")).expect("reopen");
        assert_eq!(reopened.state, store.state);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, 3), Duration::from_millis(400));
        assert_eq!(backoff(base, 40), MAX_RETRY_BACKOFF);
    }
}
