//! The context: results that accumulate phase by phase, and the `input` templates over it.
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

use minijinja::{Environment, UndefinedBehavior};
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

    /// Renders an `input` template against the context.
    pub fn render(&self, template: &str) -> Result<String, String> {
        if !is_template(template) {
            return Ok(template.to_owned());
        }
        render(template, &Arc::new(self.to_value()))
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

/// Renders an `input` template against a context's JSON ([`Context::to_value`]).
///
/// The template reads the JSON where it lies ([`Lazy`]): rendering costs what the template
/// looks at, not the size of the context (after a phase of 10,000 tasks, converting the whole
/// context for every task's template would cost milliseconds per task).
pub fn render(template: &str, context: &Arc<Value>) -> Result<String, String> {
    if !is_template(template) {
        return Ok(template.to_owned());
    }
    let root = minijinja::Value::from_object(Lazy {
        root: context.clone(),
        path: Vec::new(),
    });
    environment()
        .render_str(template, root)
        .map_err(|e| format!("cannot render the input template: {}", describe(&e)))
}

/// A place in a JSON document, as a template sees it: maps and lists are looked into where a
/// template reads them, scalars converted when reached.
#[derive(Debug)]
struct Lazy {
    root: Arc<Value>,
    /// From the root to this place (every step was found when this was made).
    path: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

impl Lazy {
    fn node(&self) -> Option<&Value> {
        self.path
            .iter()
            .try_fold(&*self.root, |v, step| match step {
                Step::Key(k) => v.get(k.as_str()),
                Step::Index(i) => v.get(*i),
            })
    }

    fn child(&self, step: Step, value: &Value) -> minijinja::Value {
        match value {
            Value::Object(_) | Value::Array(_) => {
                let mut path = Vec::with_capacity(self.path.len() + 1);
                path.extend(self.path.iter().cloned());
                path.push(step);
                minijinja::Value::from_object(Lazy {
                    root: self.root.clone(),
                    path,
                })
            }
            // Scalars as minijinja converts them from serde.
            scalar => minijinja::Value::from_serialize(scalar),
        }
    }
}

impl minijinja::value::Object for Lazy {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        match self.node() {
            Some(Value::Array(_)) => minijinja::value::ObjectRepr::Seq,
            _ => minijinja::value::ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        match self.node()? {
            Value::Object(map) => {
                let key = key.as_str()?;
                let value = map.get(key)?;
                Some(self.child(Step::Key(key.to_owned()), value))
            }
            Value::Array(items) => {
                let i = usize::try_from(key.as_i64()?).ok()?;
                Some(self.child(Step::Index(i), items.get(i)?))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        use minijinja::value::Enumerator;
        match self.node() {
            Some(Value::Object(map)) => Enumerator::Values(
                map.keys()
                    .map(|k| minijinja::Value::from(k.as_str()))
                    .collect(),
            ),
            Some(Value::Array(items)) => Enumerator::Seq(items.len()),
            _ => Enumerator::Empty,
        }
    }
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

/// The template environment, set up once (a phase renders a template per task).
fn environment() -> &'static Environment<'static> {
    static ENV: std::sync::OnceLock<Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // A typo in a template is an error, not a silently empty string.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env
    })
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}

/// What a template may refer to: used to reject references to later phases at validate time.
pub struct Scope<'a> {
    /// Phases listed before the template's phase.
    pub earlier_phases: &'a [&'a str],
    /// Every phase of the pipeline (to tell a later phase from a misspelt one).
    pub all_phases: &'a [&'a str],
    /// The template's own phase.
    pub current_phase: &'a str,
    /// Tasks listed before the template's task in its phase (sequential phases only).
    pub earlier_tasks: &'a [&'a str],
    /// Whether the template's phase is parallel.
    pub parallel: bool,
}

const TOP_LEVEL: [&str; 4] = ["run", "pipeline", "vars", "phases"];
const GLOBALS: [&str; 5] = ["range", "dict", "namespace", "debug", "loop"];

/// Checks a template's syntax and what it refers to. Errors are `(message, help)`.
pub fn check_template(template: &str, scope: &Scope<'_>) -> Result<(), (String, String)> {
    let env = environment();
    let tmpl = env.template_from_str(template).map_err(|e| {
        (
            describe(&e),
            "fix the template syntax (minijinja, like Jinja2): `{{ expr }}`, `{% if .. %}`"
                .to_owned(),
        )
    })?;
    let mut vars: Vec<String> = tmpl.undeclared_variables(true).into_iter().collect();
    vars.sort();
    for var in vars {
        let parts: Vec<&str> = var.split('.').collect();
        let top = parts[0];
        if GLOBALS.contains(&top) {
            continue;
        }
        if !TOP_LEVEL.contains(&top) {
            return Err((
                format!("unknown variable `{top}`"),
                "the context has `run`, `pipeline`, `vars` and `phases`, e.g. `{{ phases.discovery.tasks.scan.output }}`".into(),
            ));
        }
        if top != "phases" || parts.len() < 2 {
            continue;
        }
        let phase = parts[1];
        if phase == scope.current_phase {
            if scope.parallel {
                return Err((
                    format!("`{var}` reads phase `{phase}` itself, whose tasks run in parallel"),
                    format!(
                        "tasks of a parallel phase cannot see each other's outputs; set `parallel = false` on phase `{phase}`, or read it from a later phase"
                    ),
                ));
            }
            if parts.len() >= 4 && parts[2] == "tasks" && !scope.earlier_tasks.contains(&parts[3]) {
                return Err((
                    format!(
                        "`{var}` reads task `{}`, which does not come before this task in phase `{phase}`",
                        parts[3]
                    ),
                    format!(
                        "a task of a sequential phase can read only the tasks listed before it: {}",
                        list(scope.earlier_tasks)
                    ),
                ));
            }
        } else if !scope.all_phases.contains(&phase) {
            return Err((
                format!("`{var}` reads phase `{phase}`, which the pipeline does not have"),
                format!(
                    "check the spelling; the phases before `{}` are: {}",
                    scope.current_phase,
                    list(scope.earlier_phases)
                ),
            ));
        } else if !scope.earlier_phases.contains(&phase) {
            return Err((
                format!(
                    "`{var}` reads phase `{phase}`, which does not come before phase `{}`",
                    scope.current_phase
                ),
                format!(
                    "phases run in file order, so a task can read only earlier phases; move phase `{phase}` above phase `{}`",
                    scope.current_phase
                ),
            ));
        }
    }
    Ok(())
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
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
            output: output.map(str::to_owned),
            error: (status == TaskStatus::Failed).then(|| Failure {
                kind: FailureKind::Failed,
                message: "no".into(),
            }),
            log: Vec::new(),
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
            }),
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
        assert_eq!(
            ctx.render("{{ phases.scan.tasks.b.output.files[0] }}")
                .unwrap(),
            "a.rs"
        );
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

    #[test]
    fn templates_read_the_json_where_it_lies_as_if_it_were_converted() {
        let value = Arc::new(json!({
            "run": {"id": "r1"},
            "vars": {"n": 3, "big": u64::MAX, "f": 1.5, "flag": true, "none": null, "s": "x"},
            "phases": {"find-it": {"tasks": {"a": {"output": {"list": [1, {"k": "v"}, [2, 3]]}}}}},
        }));
        let env = environment();
        for template in [
            "{{ run.id }} {{ vars.n + 1 }} {{ vars.big }} {{ vars.f }} {{ vars.flag }} {{ vars.none }}",
            "{{ phases['find-it'].tasks.a.output.list[1].k }} {{ phases['find-it'].tasks.a.output.list[-1][0] }}",
            "{{ phases | tojson }}|{{ vars | tojson }}|{{ phases['find-it'].tasks.a.output.list | length }}",
            "{% for k in vars %}{{ k }},{% endfor %} {% for k, v in vars | items %}{{ k }}={{ v }};{% endfor %}",
            "{{ vars }} {{ phases['find-it'].tasks.a.output.list }} {{ vars.s is string }} {{ vars.n is number }}",
            "{% if vars.none %}y{% else %}n{% endif %}{% if vars %}m{% endif %}{{ vars.missing is defined }}",
            "{{ phases['find-it'].tasks.a.output.list[:2] | tojson }} {{ vars | dictsort | first }}",
        ] {
            let eager = env.render_str(template, &*value).unwrap();
            assert_eq!(render(template, &value).unwrap(), eager, "{template}");
        }
        // Undefined names are still errors.
        assert!(render("{{ vars.missing.deeper }}", &value).is_err());
        assert!(render("{{ phases.nope.tasks }}", &value).is_err());
    }
}
