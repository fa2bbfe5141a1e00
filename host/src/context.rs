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

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value, json};

use crate::progress::{PhaseState, TaskState, TaskStatus};

/// The accumulated results of a run.
#[derive(Clone, Debug)]
pub struct Context {
    value: Value,
}

impl Context {
    /// An empty context for a run.
    pub fn new(run_id: &str, pipeline: &str, vars: &Value) -> Self {
        Context {
            value: json!({"run": {"id": run_id}, "pipeline": {"name": pipeline}, "vars": vars, "phases": {}}),
        }
    }

    /// The context as JSON.
    pub fn as_json(&self) -> &Value {
        &self.value
    }

    /// The context as JSON, taken.
    pub fn into_json(self) -> Value {
        self.value
    }

    fn phase_entry(&mut self, phase: &str) -> &mut Map<String, Value> {
        let phases = self.value["phases"]
            .as_object_mut()
            .expect("context.phases is an object");
        phases
            .entry(phase.to_owned())
            .or_insert_with(|| json!({"status": "running", "tasks": {}}))
            .as_object_mut()
            .expect("phase entry is an object")
    }

    /// Adds one finished task of a phase.
    pub fn add_task(&mut self, phase: &str, task: &TaskState) {
        tasks_of(self.phase_entry(phase)).insert(task.id.clone(), task_json(task));
    }

    /// Adds a finished phase: its status, verdict and every finished task.
    pub fn add_phase(&mut self, phase: &PhaseState) {
        let entry = self.phase_entry(&phase.id);
        let tasks = tasks_of(entry);
        // Built in one go (sorted once, then bulk-loaded) rather than by thousands of inserts;
        // entries already there (tasks of a sequential phase) are the same tasks, replaced.
        let mut fresh: Map<String, Value> = phase
            .tasks
            .iter()
            .filter(|t| t.status != TaskStatus::Pending)
            .map(|t| (t.id.clone(), task_json(t)))
            .collect();
        for (id, earlier) in std::mem::take(tasks) {
            fresh.entry(id).or_insert(earlier);
        }
        *tasks = fresh;
        entry.insert(
            "status".into(),
            serde_json::to_value(phase.status).unwrap_or(Value::Null),
        );
        if let Some(v) = &phase.verdict {
            entry.insert("verdict".into(), v.to_json());
        }
    }

    /// Renders an `input` template against the context.
    pub fn render(&self, template: &str) -> Result<String, String> {
        if !template.contains("{{") && !template.contains("{%") {
            return Ok(template.to_owned());
        }
        environment()
            .render_str(template, &self.value)
            .map_err(|e| format!("cannot render the input template: {}", describe(&e)))
    }
}

/// A phase entry's `tasks` object.
fn tasks_of(entry: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let tasks = entry
        .entry("tasks")
        .or_insert_with(|| Value::Object(Map::new()));
    if !tasks.is_object() {
        *tasks = Value::Object(Map::new());
    }
    tasks.as_object_mut().expect("made an object above")
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

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // A typo in a template is an error, not a silently empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
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
