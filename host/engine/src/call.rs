//! Running one call of a loaded plugin in a fresh Store: a task attempt, a gate, or its
//! `metadata`; and telling its failures apart (limits, traps, timeouts, the host).

use std::sync::Arc;
use std::time::Duration;

use phasegate_model::events::Emitter;
use phasegate_model::job::Attempt;
use phasegate_model::outcome::{Usage, bounded, bounded_evidence};
use phasegate_model::pipeline::{EngineLimits, Grants, Limits};
use phasegate_model::progress::{Failure, FailureKind, VerdictKind, VerdictRecord};
use phasegate_model::units::ByteSize;
use wasmtime::{Store, Trap, WasmBacktrace};

use crate::error::chain;
use crate::guest_fault::GuestFault;
use crate::host_state::HostState;
use crate::load::{LoadedPlugin, Metadata, PluginHost, Pre};
use crate::plugin::gate_world::Gate;
use crate::plugin::task_world::Task;
use crate::plugin::{Origin, wit};
use crate::sandbox::deadline::within;
use crate::sandbox::limits::LimitHit;

/// What an attempt leaves besides its result: its log lines and what it used.
#[derive(Default)]
struct Seen {
    log: Vec<String>,
    usage: Usage,
}

/// A task instance kept after a task to serve the next ones (a task's `reuse`), with what it
/// was made for: it serves only tasks of the same plugin, limits and grants.
pub struct KeptInstance {
    store: Store<HostState>,
    task: Task,
    plugin: Arc<LoadedPlugin>,
    limits: Limits,
    grants: Grants,
    /// Tasks it served so far.
    served: u32,
}

/// Where a caller keeps an instance between tasks, and how many tasks one may serve.
pub struct Reuse<'a> {
    /// Tasks in a row one instance may serve (1 or less: none is kept).
    pub tasks: u32,
    /// The plugin of this task (an instance of another is not reused).
    pub plugin: &'a Arc<LoadedPlugin>,
    /// The instance kept by the last task, if any; this task's, if it may serve more.
    pub kept: &'a mut Option<KeptInstance>,
}

impl KeptInstance {
    /// Whether it may serve a task of `plugin`, `limits` and `grants` that lets one instance
    /// serve `tasks` in a row.
    pub fn serves(
        &self,
        plugin: &Arc<LoadedPlugin>,
        limits: &Limits,
        grants: &Grants,
        tasks: u32,
    ) -> bool {
        Arc::ptr_eq(&self.plugin, plugin)
            && self.limits == *limits
            && self.grants == *grants
            && self.served < tasks
    }
}

impl Reuse<'_> {
    /// The kept instance, if it may serve a task of these limits and grants.
    fn take_for(&mut self, limits: &Limits, grants: &Grants) -> Option<KeptInstance> {
        self.kept
            .take()
            .filter(|k| k.serves(self.plugin, limits, grants, self.tasks))
    }
}

impl PluginHost {
    fn store(
        &self,
        plugin: &LoadedPlugin,
        limits: &Limits,
        grants: &Grants,
        origin: Origin,
        emitter: Emitter,
    ) -> Result<Store<HostState>, String> {
        let state = if plugin.uses_wasi {
            HostState::new(limits, grants, origin, emitter)?
        } else {
            HostState::without_wasi(limits, origin, emitter)
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        self.arm(&mut store, limits)?;
        Ok(store)
    }

    /// Gives a store its call's budgets: fuel when metered, and the epoch deadline.
    fn arm(&self, store: &mut Store<HostState>, limits: &Limits) -> Result<(), String> {
        if self.limits.fuel {
            store
                .set_fuel(limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| e.to_string())?;
        }
        // Yield to the executor at every tick so other tasks run; the wall-clock deadline is
        // enforced around the call (it also covers time spent blocked in host calls).
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        Ok(())
    }

    /// Calls a plugin's `metadata` export in a fresh instance.
    pub async fn metadata(
        &self,
        plugin: &LoadedPlugin,
        emitter: Emitter,
    ) -> anyhow::Result<Metadata> {
        let limits = Limits {
            timeout: Duration::from_secs(10),
            ..Limits::default()
        };
        let origin = Origin::Named {
            phase: String::new(),
            task: "metadata".into(),
        };
        let mut store = self
            .store(plugin, &limits, &Grants::default(), origin, emitter)
            .map_err(anyhow::Error::msg)?;
        let call = async {
            match &plugin.pre {
                Pre::Task(pre) => {
                    let i: Task = pre.instantiate_async(&mut store).await?;
                    i.call_metadata(&mut store).await
                }
                Pre::Gate(pre) => {
                    let i: Gate = pre.instantiate_async(&mut store).await?;
                    i.call_metadata(&mut store).await
                }
            }
        };
        match within(limits.timeout, call).await {
            Ok(r) => r.map_err(|e| anyhow::anyhow!("`metadata` failed: {}", chain(&e))),
            Err(_) => anyhow::bail!("`metadata` did not return within {:?}", limits.timeout),
        }
    }

    /// Runs one attempt of a task: the output JSON text or a typed failure, and the log lines
    /// the attempt produced (bounded by the log limits).
    pub async fn run_task(
        &self,
        plugin: &LoadedPlugin,
        request: &Arc<wit::TaskRequest>,
        limits: &Limits,
        grants: &Grants,
        emitter: Emitter,
    ) -> Attempt {
        self.run(plugin, request, limits, grants, emitter, None)
            .await
    }

    /// As [`run_task`](Self::run_task), on the instance `reuse` kept from the task before when
    /// it may serve this one (same plugin, limits and grants, fewer than `reuse.tasks` served);
    /// afterwards the instance is kept there if it may serve another. An instance that trapped
    /// or timed out is never kept. With `reuse.tasks` of 1 it is [`run_task`](Self::run_task)
    /// that also lets go of any instance kept there.
    pub async fn run_task_reusing(
        &self,
        request: &Arc<wit::TaskRequest>,
        limits: &Limits,
        grants: &Grants,
        emitter: Emitter,
        reuse: Reuse<'_>,
    ) -> Attempt {
        let plugin = reuse.plugin;
        self.run(plugin, request, limits, grants, emitter, Some(reuse))
            .await
    }

    /// One attempt, its log lines and what it used.
    async fn run(
        &self,
        plugin: &LoadedPlugin,
        request: &Arc<wit::TaskRequest>,
        limits: &Limits,
        grants: &Grants,
        emitter: Emitter,
        reuse: Option<Reuse<'_>>,
    ) -> Attempt {
        let mut seen = Seen::default();
        let result = self
            .attempt(plugin, request, limits, grants, emitter, &mut seen, reuse)
            .await;
        Attempt {
            result,
            log: seen.log,
            worker: None,
            usage: seen.usage,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        plugin: &LoadedPlugin,
        request: &Arc<wit::TaskRequest>,
        limits: &Limits,
        grants: &Grants,
        emitter: Emitter,
        seen: &mut Seen,
        mut reuse: Option<Reuse<'_>>,
    ) -> Result<String, Failure> {
        // Named only when something goes wrong (formatting it for every task costs).
        let who = || {
            format!(
                "task `{}` in phase `{}` (plugin `{}`)",
                request.task, request.phase, plugin.plugin.spec
            )
        };
        let Pre::Task(pre) = &plugin.pre else {
            return Err(failure(
                FailureKind::Host,
                format!(
                    "{}: the plugin is a gate, not a task; use it as a phase's `gate`",
                    who()
                ),
            ));
        };
        let origin = Origin::Task(request.clone());
        let host_failure = |e: String| failure(FailureKind::Host, format!("{}: {e}", who()));
        let kept = reuse.as_mut().and_then(|r| r.take_for(limits, grants));
        let (mut store, instance, served) = match kept {
            Some(KeptInstance {
                mut store,
                task,
                served,
                ..
            }) => {
                store.data_mut().next_task(origin, emitter);
                self.arm(&mut store, limits).map_err(host_failure)?;
                (store, Some(task), served)
            }
            None => {
                let store = self
                    .store(plugin, limits, grants, origin, emitter)
                    .map_err(host_failure)?;
                (store, None, 0)
            }
        };
        let started = std::time::Instant::now();
        let result = within(limits.timeout, async {
            let instance: Task = match instance {
                Some(instance) => instance,
                None => pre.instantiate_async(&mut store).await?,
            };
            let output = instance.call_run(&mut store, request).await?;
            wasmtime::Result::Ok((instance, output))
        })
        .await;
        seen.usage = Usage {
            wall_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            fuel: limits
                .fuel
                .and_then(|budget| Some(budget.saturating_sub(store.get_fuel().ok()?))),
            memory: store.data().limiter.memory_bytes,
            log_bytes: store.data().produced_bytes(),
            written: store.data().written().0,
            opened: store.data().opened(),
        };
        store.data_mut().flush_stdio();
        seen.log = store.data_mut().take_log();
        let (instance, returned) = match result {
            Err(_) => return Err(timeout_failure(&who(), limits)),
            Ok(Err(e)) => {
                // The backtrace is for whoever digs: the log, not the message.
                if let Some(backtrace) = crate::guest_fault::backtrace(&e) {
                    seen.log.push(format!("debug: wasm backtrace: {backtrace}"));
                }
                return Err(classify(&who(), &e, store.data(), limits, &self.limits));
            }
            Ok(Ok(returned)) => returned,
        };
        let result = self.task_result(&who, returned, store.data(), limits);
        // The call returned: the instance is whole, and may serve the next task.
        if let Some(reuse) = reuse
            && served + 1 < reuse.tasks
        {
            store.data_mut().release();
            *reuse.kept = Some(KeptInstance {
                store,
                task: instance,
                plugin: reuse.plugin.clone(),
                limits: *limits,
                grants: grants.clone(),
                served: served + 1,
            });
        }
        result
    }

    /// What a task's returned value comes to: its output, or its error typed; output over its
    /// limit or not JSON is `invalid-output`.
    fn task_result(
        &self,
        who: &dyn Fn() -> String,
        returned: Result<String, wit::TaskError>,
        state: &HostState,
        limits: &Limits,
    ) -> Result<String, Failure> {
        let output = match returned {
            Err(e) => {
                return Err(match e {
                    // A write the quota refused explains the failure that followed it.
                    wit::TaskError::Failed(m) => {
                        write_quota_failure(&who(), state, limits, m.clone())
                            .unwrap_or_else(|| failure(FailureKind::Failed, m))
                    }
                    wit::TaskError::InvalidInput(m) => failure(FailureKind::InvalidInput, m),
                    wit::TaskError::InvalidConfig(m) => failure(FailureKind::InvalidConfig, m),
                });
            }
            Ok(output) => output,
        };
        if output.len() as u64 > limits.max_output.0 {
            return Err(failure(
                FailureKind::InvalidOutput,
                format!(
                    "{} returned {} bytes of output, over its limit of {}; raise `limits.max-output`",
                    who(),
                    output.len(),
                    limits.max_output
                ),
            ));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&output) {
            return Err(failure(
                FailureKind::InvalidOutput,
                format!(
                    "{} returned output that is not JSON ({e}); it begins: {:?}",
                    who(),
                    phasegate_model::text::cut(&output, 120)
                ),
            ));
        }
        Ok(output)
    }

    /// Runs a gate. A gate that cannot run yields a `fail` verdict explaining why.
    pub async fn run_gate(
        &self,
        plugin: &LoadedPlugin,
        report: wit::PhaseReport,
        usage: Vec<(String, Usage)>,
        limits: &Limits,
        grants: &Grants,
        emitter: Emitter,
    ) -> VerdictRecord {
        let gate = plugin.plugin.spec.clone();
        let who = format!("gate `{gate}` of phase `{}`", report.phase);
        // The gate could not judge: a `fail` that says how it crashed.
        let crashed = |failure: Failure| VerdictRecord {
            kind: VerdictKind::Fail,
            gate: gate.clone(),
            reason: bounded(failure.message),
            evidence: None,
            crashed: Some(failure.kind),
        };
        let Pre::Gate(pre) = &plugin.pre else {
            return crashed(failure(
                FailureKind::Host,
                format!("{who}: the plugin is a task, not a gate; use a gate plugin"),
            ));
        };
        let origin = Origin::Named {
            phase: report.phase.clone(),
            task: "gate".into(),
        };
        let mut store = match self.store(plugin, limits, grants, origin, emitter) {
            Ok(store) => store,
            Err(e) => return crashed(failure(FailureKind::Host, format!("{who}: {e}"))),
        };
        store.data_mut().set_phase_usage(usage);
        let result = within(limits.timeout, async {
            let instance: Gate = pre.instantiate_async(&mut store).await?;
            instance.call_check(&mut store, &report).await
        })
        .await;
        store.data_mut().flush_stdio();
        match result {
            Err(_) => crashed(timeout_failure(&who, limits)),
            Ok(Err(e)) => crashed(classify(&who, &e, store.data(), limits, &self.limits)),
            Ok(Ok(v)) => VerdictRecord {
                kind: match v.kind {
                    wit::VerdictKind::Pass => VerdictKind::Pass,
                    wit::VerdictKind::Warn => VerdictKind::Warn,
                    wit::VerdictKind::Fail => VerdictKind::Fail,
                },
                gate,
                reason: bounded(v.reason),
                evidence: v.evidence.map(bounded_evidence),
                crashed: None,
            },
        }
    }
}

/// A failure, its message bounded ([`bounded`]): a plugin's own message can be any size.
fn failure(kind: FailureKind, message: String) -> Failure {
    Failure {
        kind,
        message: bounded(message),
    }
}

/// When the write quota refused a write: a `limit` failure that names it, with what the plugin
/// or the engine said of the failure that followed.
fn write_quota_failure(
    who: &str,
    state: &HostState,
    limits: &Limits,
    then: String,
) -> Option<Failure> {
    let (written, refused) = state.written();
    let refused = refused?;
    Some(failure(
        FailureKind::Limit,
        format!(
            "{who} reached its write limit of {} into read-write grants ({} written; a write of {} more was refused with `quota`, \"disk quota exceeded\"); write less, or raise `limits.max-written`. Then: {then}",
            limits.max_written,
            ByteSize(written),
            ByteSize(refused),
        ),
    ))
}

fn timeout_failure(who: &str, limits: &Limits) -> Failure {
    failure(
        FailureKind::Timeout,
        format!(
            "{who} exceeded its timeout of {}; if it needs longer, raise `timeout`",
            humantime::format_duration(limits.timeout)
        ),
    )
}

/// Why a call failed; a write the quota refused before comes first, as what explains it.
fn classify(
    who: &str,
    error: &wasmtime::Error,
    state: &HostState,
    limits: &Limits,
    engine: &EngineLimits,
) -> Failure {
    let failure = classify_error(who, error, state, limits, engine);
    write_quota_failure(who, state, limits, failure.message.clone()).unwrap_or(failure)
}

fn classify_error(
    who: &str,
    error: &wasmtime::Error,
    state: &HostState,
    limits: &Limits,
    engine: &EngineLimits,
) -> Failure {
    if let Some(hit) = state.limiter.hit {
        return match hit {
            LimitHit::Memory { requested, .. } => failure(
                FailureKind::Limit,
                format!(
                    "{who} exceeded its memory limit of {} (asked for {}); raise `limits.memory`",
                    limits.memory,
                    ByteSize(requested)
                ),
            ),
            LimitHit::TableElements { limit, requested } => failure(
                FailureKind::Limit,
                format!("{who} grew a table to {requested} elements, over the limit of {limit}"),
            ),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => {
            return failure(
                FailureKind::Limit,
                format!(
                    "{who} exceeded its stack limit of {} (deep recursion?); raise `max-stack` in `[defaults.limits]`",
                    engine.max_stack
                ),
            );
        }
        Some(Trap::OutOfFuel) => {
            return failure(
                FailureKind::Limit,
                format!(
                    "{who} ran out of fuel: its budget of {} units is spent; raise `limits.fuel`",
                    limits.fuel.unwrap_or(0)
                ),
            );
        }
        _ => {}
    }
    let text = chain(error);
    if text.contains("instance count too high")
        || text.contains("table count too high")
        || text.contains("memory count too high")
    {
        return failure(
            FailureKind::Limit,
            format!(
                "{who} instantiates more core instances, tables or memories than its limit of {} instances allows; raise `limits.instances` ({text})",
                limits.instances
            ),
        );
    }
    if text.contains("resource table has no free keys") {
        return failure(
            FailureKind::Limit,
            format!(
                "{who} held more than {} files, directories, sockets or streams at once, its limit; close what it no longer needs, or raise `limits.descriptors`",
                limits.descriptors
            ),
        );
    }
    if text.contains("too much data is being copied between the host and the guest") {
        return failure(
            FailureKind::Limit,
            format!(
                "{who} passed more than {} to the host in one call (wasmtime's per-call copy budget, which phasegate keeps at its default); return, log or write less at once",
                ByteSize(HOSTCALL_BUDGET)
            ),
        );
    }
    let fault = GuestFault::of(error, &state.stderr_text());
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        let said = fault
            .said
            .map(|s| format!("; it said: {s}"))
            .unwrap_or_default();
        return failure(
            FailureKind::Trap,
            format!(
                "{who} called exit({}) instead of returning a result{said}",
                exit.0
            ),
        );
    }
    if let Some(e) = error.downcast_ref::<std::str::Utf8Error>() {
        return failure(
            FailureKind::InvalidOutput,
            format!("{who} gave the host a string that is not valid UTF-8 ({e})"),
        );
    }
    // A trap, or any other error raised while the plugin's code was running (a misuse of the
    // component model, such as a bad resource handle): the plugin's fault, not the host's.
    if error.downcast_ref::<Trap>().is_some() || error.downcast_ref::<WasmBacktrace>().is_some() {
        return failure(
            FailureKind::Trap,
            format!("{who} trapped: {}", fault.summary()),
        );
    }
    failure(FailureKind::Host, format!("{who} could not run: {text}"))
}

/// Wasmtime's budget of bytes a guest may pass to the host in one call (its default, 128 MiB).
const HOSTCALL_BUDGET: u64 = 128 << 20;
