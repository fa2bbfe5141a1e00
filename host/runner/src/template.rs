//! Input templates (minijinja) over the context's JSON: rendering them for a task, and checking
//! at validate time what they refer to.

use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use phasegate_model::context::Context;
pub use phasegate_model::context::is_template;
use phasegate_model::pipeline::Scope;

/// Renders an `input` template against a context (its JSON built for this one template).
pub fn render_context(ctx: &Context, template: &str) -> Result<String, String> {
    if !is_template(template) {
        return Ok(template.to_owned());
    }
    render(template, &Arc::new(ctx.to_value()))
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
    use phasegate_model::progress::{
        Failure, FailureKind, PhaseState, PhaseStatus, TaskState, TaskStatus,
    };
    use serde_json::json;

    #[test]
    fn a_finished_phase_renders_into_a_template() {
        let task = |id: &str, status, output: Option<&str>| TaskState {
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
            worker: None,
        };
        let phase = PhaseState {
            id: "scan".into(),
            status: PhaseStatus::Complete,
            verdict: None,
            tasks: Arc::new(vec![
                task("b", TaskStatus::Succeeded, Some(r#"{"files": ["a.rs"]}"#)),
                task("a", TaskStatus::Failed, None),
            ]),
        };
        let mut ctx = Context::new("r1", "p", &json!({"k": "v"}));
        ctx.add_phase(&phase);
        assert_eq!(
            render_context(&ctx, "{{ phases.scan.tasks.b.output.files[0] }}").unwrap(),
            "a.rs"
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
