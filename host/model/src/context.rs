//! The context: results that accumulate phase by phase, as templates and plugins see them
//! (the templates themselves are the runner's `template`).
//!
//! Shape (JSON), as templates and plugins see it:
//!
//! ```json
//! {
//!   "run": {"id": "20261123T204512Z-3f9a1c"},
//!   "pipeline": {"name": "release-check"},
//!   "vars": {"notes": "..."},
//!   "phases": {
//!     "discovery": {
//!       "status": "complete",
//!       "verdict": {"kind": "pass", "reason": "..."},
//!       "tasks": {
//!         "scan": {"status": "succeeded", "output": {"files": ["a.rs"]}, "attempts": 1}
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! Task outputs are stored parsed, so templates address their fields:
//! `{{ phases.discovery.tasks.scan.output.files | length }}`. Ids with `-` need the subscript
//! form: `{{ phases["find-components"] }}`. `| tojson` renders any value as JSON.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::progress::{PhaseState, PhaseStatus, TaskState, TaskStatus, VerdictRecord};

/// The accumulated results of a run.
///
/// It keeps the records it was given, not their JSON: a finished phase's entry shares the
/// progress state's tasks, so adding a phase of 10,000 tasks costs nothing, and the JSON (task
/// outputs parsed) is built only when something reads it ([`to_value`](Self::to_value)): a
/// later phase's requests, a gate's report, the run's summary.
#[derive(Clone, Debug)]
pub struct Context {
    run_id: String,
    pipeline: String,
    vars: Value,
    /// In the order they were added (the pipeline's).
    phases: Vec<PhaseEntry>,
}

#[derive(Clone, Debug)]
struct PhaseEntry {
    id: String,
    /// `None` while its tasks are being added one by one.
    status: Option<PhaseStatus>,
    verdict: Option<VerdictRecord>,
    tasks: Tasks,
}

#[derive(Clone, Debug)]
enum Tasks {
    /// A finished phase's tasks, shared with the progress state; pending ones are not shown.
    Phase(Arc<Vec<TaskState>>),
    /// Tasks added one by one ([`Context::add_task`]), every one shown.
    Added(Added),
}

/// Tasks added one by one, in the order they were first added, with an index by id (a
/// sequential phase of 10,000 tasks adds each once: no scan per task).
#[derive(Clone, Debug, Default)]
struct Added {
    tasks: Vec<TaskState>,
    at: HashMap<String, usize>,
}

impl Added {
    fn of(tasks: impl IntoIterator<Item = TaskState>) -> Self {
        let mut added = Added::default();
        for t in tasks {
            added.put(t);
        }
        added
    }

    /// Adds a task, or replaces the one of the same id in its place.
    fn put(&mut self, task: TaskState) {
        match self.at.get(&*task.id) {
            Some(&i) => self.tasks[i] = task,
            None => {
                self.at.insert(task.id.to_string(), self.tasks.len());
                self.tasks.push(task);
            }
        }
    }
}

impl Tasks {
    fn shown(&self) -> impl Iterator<Item = &TaskState> {
        let (all, phase) = match self {
            Tasks::Phase(tasks) => (tasks.as_slice(), true),
            Tasks::Added(added) => (added.tasks.as_slice(), false),
        };
        all.iter()
            .filter(move |t| !phase || t.status != TaskStatus::Pending)
    }
}

/// What the context shows of a phase's tasks: the finished ones.
fn finished(tasks: &[TaskState]) -> impl Iterator<Item = &TaskState> {
    tasks.iter().filter(|t| t.status != TaskStatus::Pending)
}

impl Context {
    /// An empty context for a run.
    pub fn new(run_id: &str, pipeline: &str, vars: &Value) -> Self {
        Context {
            run_id: run_id.to_owned(),
            pipeline: pipeline.to_owned(),
            vars: vars.clone(),
            phases: Vec::new(),
        }
    }

    /// The context as JSON (built now, task outputs parsed): [`ungranted_value`]'s names, the
    /// pipeline's `vars` and the phases.
    ///
    /// [`ungranted_value`]: Self::ungranted_value
    pub fn to_value(&self) -> Value {
        let mut phases = Map::new();
        for entry in &self.phases {
            phases.insert(entry.id.clone(), entry.to_value());
        }
        let mut value = self.ungranted_value();
        value["vars"] = self.vars.clone();
        value["phases"] = Value::Object(phases);
        value
    }

    /// What a plugin without the `context` grant is given: the run id and the pipeline's name
    /// (`{"run": {"id"}, "pipeline": {"name"}}`), nothing that another plugin produced.
    pub fn ungranted_value(&self) -> Value {
        json!({"run": {"id": self.run_id}, "pipeline": {"name": self.pipeline}})
    }

    /// What a plugin is given: the whole context with the `context` grant, else
    /// [`ungranted_value`](Self::ungranted_value).
    pub fn value_for(&self, granted: bool) -> Value {
        if granted {
            self.to_value()
        } else {
            self.ungranted_value()
        }
    }

    /// A phase's finished tasks, in the pipeline's order once the phase has finished.
    pub fn phase_tasks(&self, phase: &str) -> Vec<&TaskState> {
        self.phases
            .iter()
            .find(|e| e.id == phase)
            .map(|e| e.tasks.shown().collect())
            .unwrap_or_default()
    }

    /// One phase's entry as JSON (`{"status", "verdict", "tasks"}`), if it has one.
    pub fn phase_value(&self, phase: &str) -> Option<Value> {
        self.phases
            .iter()
            .find(|e| e.id == phase)
            .map(PhaseEntry::to_value)
    }

    fn entry(&mut self, phase: &str) -> &mut PhaseEntry {
        let at = match self.phases.iter().position(|e| e.id == phase) {
            Some(at) => at,
            None => {
                self.phases.push(PhaseEntry::running(phase));
                self.phases.len() - 1
            }
        };
        &mut self.phases[at]
    }

    /// Adds one finished task of a phase (replacing an earlier entry of the same task).
    pub fn add_task(&mut self, phase: &str, task: &TaskState) {
        let entry = self.entry(phase);
        if let Tasks::Phase(shared) = &entry.tasks {
            entry.tasks = Tasks::Added(Added::of(finished(shared).cloned()));
        }
        if let Tasks::Added(added) = &mut entry.tasks {
            added.put(task.clone());
        }
    }

    /// Adds a finished phase: its status, verdict and every finished task (sharing them, not
    /// copying them). Tasks added earlier one by one that the phase no longer shows as finished
    /// stay.
    pub fn add_phase(&mut self, phase: &PhaseState) {
        let entry = self.entry(&phase.id);
        entry.status = Some(phase.status);
        entry.verdict = phase.verdict.clone();
        let earlier: Vec<TaskState> = match &mut entry.tasks {
            // A phase that ran in parallel added none one by one: no index of its tasks needed.
            Tasks::Added(added) if added.tasks.is_empty() => Vec::new(),
            Tasks::Added(added) => {
                let now: HashSet<&str> = finished(&phase.tasks).map(|t| &*t.id).collect();
                std::mem::take(added)
                    .tasks
                    .into_iter()
                    .filter(|t| !now.contains(&*t.id))
                    .collect()
            }
            Tasks::Phase(_) => Vec::new(),
        };
        entry.tasks = if earlier.is_empty() {
            Tasks::Phase(phase.tasks.clone())
        } else {
            Tasks::Added(Added::of(finished(&phase.tasks).cloned().chain(earlier)))
        };
    }
}

impl PhaseEntry {
    /// A phase whose tasks are being added one by one (shown as `running`).
    fn running(id: &str) -> Self {
        PhaseEntry {
            id: id.to_owned(),
            status: None,
            verdict: None,
            tasks: Tasks::Added(Added::default()),
        }
    }

    fn to_value(&self) -> Value {
        let tasks: Map<String, Value> = self
            .tasks
            .shown()
            .map(|t| (t.id.to_string(), task_json(t)))
            .collect();
        let mut v = Map::new();
        v.insert(
            "status".into(),
            match self.status {
                Some(status) => serde_json::to_value(status).unwrap_or(Value::Null),
                None => Value::String("running".into()),
            },
        );
        v.insert("tasks".into(), Value::Object(tasks));
        if let Some(verdict) = &self.verdict {
            v.insert("verdict".into(), verdict.to_json());
        }
        Value::Object(v)
    }
}

/// The context serialises as its JSON ([`Context::to_value`]).
impl serde::Serialize for Context {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

/// Adds one finished task of a phase to a context's JSON ([`Context::to_value`]), as
/// [`Context::add_task`] followed by `to_value` would show it, in O(1) instead of rebuilding
/// the whole value: a sequential phase adds its tasks one by one.
pub fn add_task_to_value(context: &mut Value, phase: &str, task: &TaskState) {
    let Some(phases) = context.get_mut("phases").and_then(Value::as_object_mut) else {
        return;
    };
    let entry = phases
        .entry(phase.to_owned())
        .or_insert_with(|| PhaseEntry::running(phase).to_value());
    if let Some(tasks) = entry.get_mut("tasks").and_then(Value::as_object_mut) {
        tasks.insert(task.id.to_string(), task_json(task));
    }
}

/// Whether `input` is a template (else it is sent as it is).
pub fn is_template(input: &str) -> bool {
    input.contains("{{") || input.contains("{%")
}

/// A task as the context shows it (built field by field: a phase adds thousands of these).
fn task_json(task: &TaskState) -> Value {
    let output = task
        .output
        .as_deref()
        .map(|o| serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.to_owned())))
        .unwrap_or(Value::Null);
    let mut v = Map::new();
    v.insert("status".into(), Value::String(task.status.name().into()));
    v.insert("output".into(), output);
    v.insert("attempts".into(), task.attempts.into());
    v.insert("duration_ms".into(), task.duration_ms.into());
    if let Some(e) = &task.error {
        v.insert(
            "error".into(),
            json!({"kind": e.kind, "message": e.message}),
        );
    }
    Value::Object(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Failure, FailureKind, VerdictKind};

    fn task(id: &str, status: TaskStatus, output: Option<&str>) -> TaskState {
        TaskState {
            id: id.into(),
            status,
            attempts: 1,
            duration_ms: 7,
            started_us: None,
            ended_us: None,
            usage: None,
            output: output.map(str::to_owned),
            error: (status == TaskStatus::Failed).then(|| Failure {
                kind: FailureKind::Failed,
                message: "no".into(),
            }),
            log: Vec::new(),
            worker: None,
            key: None,
            cached: false,
        }
    }

    fn phase() -> PhaseState {
        PhaseState {
            id: "scan".into(),
            status: PhaseStatus::Complete,
            verdict: Some(VerdictRecord {
                kind: VerdictKind::Pass,
                gate: "g".into(),
                reason: "fine".into(),
                evidence: Some(r#"{"n":1}"#.into()),
                crashed: None,
            }),
            gate_key: None,
            gates: Vec::new(),
            tasks: Arc::new(vec![
                task("b", TaskStatus::Succeeded, Some(r#"{"files": ["a.rs"]}"#)),
                task("a", TaskStatus::Failed, None),
                task("later", TaskStatus::Pending, None),
            ]),
        }
    }

    #[test]
    fn a_finished_phase_shares_its_tasks_and_shows_the_finished_ones_as_json() {
        let phase = phase();
        let mut ctx = Context::new("r1", "p", &json!({"k": "v"}));
        ctx.add_phase(&phase);
        // Shared, not copied: the progress state and the context hold the same tasks.
        assert_eq!(Arc::strong_count(&phase.tasks), 2);
        assert_eq!(
            ctx.to_value(),
            json!({
                "run": {"id": "r1"},
                "pipeline": {"name": "p"},
                "vars": {"k": "v"},
                "phases": {"scan": {
                    "status": "complete",
                    "verdict": {"kind": "pass", "gate": "g", "reason": "fine", "evidence": {"n": 1}},
                    "tasks": {
                        "a": {"status": "failed", "output": null, "attempts": 1, "duration_ms": 7,
                              "error": {"kind": "failed", "message": "no"}},
                        "b": {"status": "succeeded", "output": {"files": ["a.rs"]}, "attempts": 1,
                              "duration_ms": 7},
                    },
                }},
            })
        );
        assert_eq!(
            ctx.phase_value("scan"),
            Some(ctx.to_value()["phases"]["scan"].clone())
        );
        assert_eq!(ctx.phase_value("other"), None);
        assert_eq!(serde_json::to_value(&ctx).unwrap(), ctx.to_value());
    }

    #[test]
    fn tasks_added_one_by_one_show_as_running_then_as_the_finished_phase() {
        let finished = phase();
        let mut ctx = Context::new("r1", "p", &json!({}));
        ctx.add_task("scan", &finished.tasks[0]);
        ctx.add_task("scan", &finished.tasks[0]);
        let running = ctx.phase_value("scan").unwrap();
        assert_eq!(running["status"], "running");
        assert_eq!(running["tasks"].as_object().unwrap().len(), 1);
        // Added one by one, a pending task is shown too (as `phasegate test --record` adds
        // the tasks a gate saw).
        ctx.add_task("scan", &finished.tasks[2]);
        assert_eq!(
            ctx.phase_value("scan").unwrap()["tasks"]["later"]["status"],
            "pending"
        );

        let mut whole = Context::new("r1", "p", &json!({}));
        whole.add_phase(&finished);
        let mut both = Context::new("r1", "p", &json!({}));
        both.add_task("scan", &finished.tasks[0]);
        both.add_task("scan", &finished.tasks[1]);
        both.add_phase(&finished);
        assert_eq!(both.to_value(), whole.to_value());

        // A task added earlier that the phase does not show as finished stays.
        ctx.add_phase(&finished);
        let tasks = ctx.phase_value("scan").unwrap()["tasks"].clone();
        assert_eq!(
            tasks.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["a", "b", "later"]
        );
    }

    #[test]
    fn tasks_added_to_the_json_match_the_context_rebuilt() {
        let finished = phase();
        let mut ctx = Context::new("r1", "p", &json!({"k": 1}));
        ctx.add_phase(&PhaseState {
            id: "before".into(),
            ..phase()
        });
        let mut value = ctx.to_value();
        // A new phase's first task, a second one, the first one again (replaced), and a task
        // of a phase that already has an entry.
        for (phase_id, t) in [
            ("scan", &finished.tasks[0]),
            ("scan", &finished.tasks[1]),
            ("scan", &finished.tasks[0]),
            ("before", &finished.tasks[2]),
        ] {
            ctx.add_task(phase_id, t);
            add_task_to_value(&mut value, phase_id, t);
            assert_eq!(value, ctx.to_value());
        }

        // Without the grant a plugin sees who runs it, nothing any plugin produced.
        assert_eq!(
            ctx.ungranted_value(),
            json!({"run": {"id": "r1"}, "pipeline": {"name": "p"}})
        );
    }
}
