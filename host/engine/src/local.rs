//! The local executor: runs jobs in this process, on this engine.

use std::sync::Arc;

use phasegate_model::events::Emitter;
use phasegate_model::job::{Attempt, Executor, GateJob, Lane, PhaseReport, TaskJob};
use phasegate_model::pipeline::PluginRef;
use phasegate_model::progress::{VerdictKind, VerdictRecord};

use crate::call::{KeptInstance, Reuse};
use crate::load::{LoadedPlugin, LoadedPlugins, PluginHost};
use crate::plugin::{wit, wit_failure_kind};

/// Runs every job in this process with a pipeline's loaded plugins.
pub struct LocalExecutor {
    host: Arc<PluginHost>,
    plugins: Arc<LoadedPlugins>,
}

impl LocalExecutor {
    /// An executor over loaded plugins (every plugin a job names must be among them).
    pub fn new(host: Arc<PluginHost>, plugins: LoadedPlugins) -> Self {
        LocalExecutor {
            host,
            plugins: Arc::new(plugins),
        }
    }

    /// The engine it runs on.
    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    fn plugin(
        &self,
        job_plugin: &phasegate_model::pipeline::PluginRef,
    ) -> Option<Arc<LoadedPlugin>> {
        self.plugins.get(job_plugin).cloned()
    }
}

impl Executor for LocalExecutor {
    type Lane = LocalLane;

    fn lane(&self, emitter: Emitter) -> LocalLane {
        LocalLane {
            host: self.host.clone(),
            plugins: self.plugins.clone(),
            emitter,
            request: Arc::new(wit::TaskRequest {
                run_id: String::new(),
                phase: String::new(),
                task: String::new(),
                attempt: 0,
                input: String::new(),
                context: String::new(),
                config: String::new(),
            }),
            context: None,
            plugin: None,
            kept: None,
        }
    }

    async fn run_gate(&self, job: GateJob<'_>, emitter: Emitter) -> VerdictRecord {
        let Some(plugin) = self.plugin(&job.plugin) else {
            return not_loaded(&job.plugin.spec);
        };
        let usage = job
            .report
            .outcomes
            .iter()
            .filter_map(|o| Some((o.task.clone(), o.usage?)))
            .collect();
        self.host
            .run_gate(
                &plugin,
                wit_report(job.report),
                usage,
                &job.limits,
                &job.grants,
                emitter,
            )
            .await
    }
}

/// One worker's lane: a request reused from attempt to attempt (the strings are overwritten in
/// place, and the context copied only when a job brings a different one), the last plugin
/// used (neighbouring tasks mostly share one), and the instance the last task left for the next
/// when tasks allow `reuse`.
pub struct LocalLane {
    host: Arc<PluginHost>,
    plugins: Arc<LoadedPlugins>,
    emitter: Emitter,
    /// Shared with the attempt's instance (which names its events after it); between attempts
    /// nothing else holds it, so it is updated without a copy.
    request: Arc<wit::TaskRequest>,
    /// The context `request.context` holds a copy of (kept, so a pointer comparison is sound).
    context: Option<Arc<str>>,
    plugin: Option<Arc<LoadedPlugin>>,
    kept: Option<KeptInstance>,
}

impl Lane for LocalLane {
    async fn run(&mut self, job: &TaskJob<'_>) -> Attempt {
        // Neighbouring tasks mostly share a plugin: the last one is kept (borrowed for the call,
        // not cloned: its count is shared by every worker's lane).
        if !self
            .plugin
            .as_ref()
            .is_some_and(|p| same_plugin(&p.plugin, &job.plugin))
        {
            self.plugin = self.plugins.get(&*job.plugin).cloned();
        }
        let Some(plugin) = &self.plugin else {
            return Attempt::host_failure(format!("plugin `{}` was not loaded", job.plugin.spec));
        };
        {
            let request = Arc::make_mut(&mut self.request);
            overwrite(&mut request.run_id, &job.run_id);
            overwrite(&mut request.phase, &job.phase);
            overwrite(&mut request.task, &job.task);
            overwrite(&mut request.input, &job.input);
            overwrite(&mut request.config, &job.config);
            request.attempt = job.attempt;
            if !self
                .context
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, &job.context))
            {
                overwrite(&mut request.context, &job.context);
                self.context = Some(job.context.clone());
            }
        }
        // A task that wants a fresh instance (`reuse` 1) lets go of one kept for others.
        let reuse = Reuse {
            tasks: job.reuse,
            plugin,
            kept: &mut self.kept,
        };
        self.host
            .run_task_reusing(
                &self.request,
                &job.limits,
                &job.grants,
                self.emitter.clone(),
                reuse,
            )
            .await
    }
}

/// Whether two references name the same plugin, compared as bytes (a `Path`'s own equality
/// parses both paths into components, a measurable share of a trivial task).
fn same_plugin(a: &PluginRef, b: &PluginRef) -> bool {
    a.spec == b.spec
        && a.path.as_os_str() == b.path.as_os_str()
        && a.digest == b.digest
        && a.installed == b.installed
}

/// Replaces a string's contents, reusing its allocation (copied without comparing first: as
/// cheap as the comparison for these short strings).
fn overwrite(target: &mut String, value: &str) {
    target.clear();
    target.push_str(value);
}

fn wit_report(report: PhaseReport) -> wit::PhaseReport {
    wit::PhaseReport {
        run_id: report.run_id,
        phase: report.phase,
        outcomes: report
            .outcomes
            .into_iter()
            .map(|o| wit::TaskOutcome {
                task: o.task,
                output: o.output,
                error: o.error.map(|e| wit::TaskFailure {
                    kind: wit_failure_kind(e.kind),
                    message: e.message,
                }),
                attempts: o.attempts,
                duration_ms: o.duration_ms,
            })
            .collect(),
        context: report.context,
        config: report.config,
    }
}

fn not_loaded(spec: &str) -> VerdictRecord {
    VerdictRecord {
        kind: VerdictKind::Fail,
        gate: spec.to_owned(),
        reason: format!("plugin `{spec}` was not loaded"),
        evidence: None,
        crashed: Some(phasegate_model::progress::FailureKind::Host),
    }
}
