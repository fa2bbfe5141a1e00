//! Input templates (minijinja) over the context's JSON: rendering them for a task, and checking
//! at validate time what they refer to.

use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use phasegate_model::context::Context;
pub use phasegate_model::context::is_template;
use phasegate_model::pipeline::Scope;
use phasegate_model::suggest::{self, did_you_mean};

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
        .map_err(|e| explain(&e, template))
}

/// `line N of the template: ` for a template of several lines.
fn at_line(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) if line > 1 => format!("line {line} of the template: "),
        _ => String::new(),
    }
}

/// A rendering error in the template's terms: the expression that failed, then why.
fn explain(e: &minijinja::Error, template: &str) -> String {
    // The range may cover only the last step of a chain (`.output.m`): widen it back to the
    // start of the reference.
    let expression = e
        .range()
        .map(|r| {
            let start = template[..r.start]
                .trim_end_matches(|c: char| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '_' | '.' | '[' | ']' | '\'' | '"' | '-')
                })
                .len();
            start..r.end
        })
        .and_then(|r| template.get(r))
        .map(str::trim)
        .filter(|x| !x.is_empty());
    let why = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_owned);
    match (expression, e.kind()) {
        (Some(x), minijinja::ErrorKind::UndefinedError) => format!(
            "{}`{x}` is undefined: the value it reads is not in the context (a key missing from a task's output, or the output of a task that failed)",
            at_line(e)
        ),
        (Some(x), _) => format!("{}`{x}`: {why}", at_line(e)),
        (None, _) => describe(e),
    }
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
/// What the context holds for a phase, and for a task ([`Context::to_value`]).
const PHASE_KEYS: [&str; 3] = ["status", "tasks", "verdict"];
const TASK_KEYS: [&str; 5] = ["status", "output", "attempts", "duration_ms", "error"];

/// Checks a template's syntax and what it refers to: top-level names, and in every
/// `phases…` and `vars…` reference (dotted or `["…"]`), the phase, the task and the var named.
/// What a plugin's output holds is not known before it runs, so paths inside `output` are not
/// checked. Errors are `(message, help)`.
pub fn check_template(template: &str, scope: &Scope<'_>) -> Result<(), (String, String)> {
    // Every tag, expression and comment opens with `{`: without one, the text is literal.
    if !template.contains('{') {
        return Ok(());
    }
    let mut found = Vec::new();
    if plain_references(template, &mut found) {
        // Valid syntax reading only the context's names, by construction: only what it refers
        // to is left to check (a 100,000-task pipeline checks 100,000 templates).
        for reference in &found {
            check_reference(reference, scope)?;
        }
        return Ok(());
    }
    check_with_minijinja(template, scope)
}

/// [`check_template`] with minijinja parsing the template, whatever it is.
fn check_with_minijinja(template: &str, scope: &Scope<'_>) -> Result<(), (String, String)> {
    let env = environment();
    let tmpl = env.template_from_str(template).map_err(|e| {
        (
            describe(&e),
            "fix the template syntax (minijinja, like Jinja2): `{{ expr }}`, `{% if .. %}`"
                .to_owned(),
        )
    })?;
    for reference in references(template) {
        check_reference(&reference, scope)?;
    }
    let mut vars: Vec<String> = tmpl.undeclared_variables(false).into_iter().collect();
    vars.sort();
    for top in vars {
        if !GLOBALS.contains(&top.as_str()) && !TOP_LEVEL.contains(&top.as_str()) {
            return Err((
                format!("unknown variable `{top}`"),
                "the context has `run`, `pipeline`, `vars` and `phases`, e.g. `{{ phases.discovery.tasks.scan.output }}`".into(),
            ));
        }
    }
    Ok(())
}

/// Whether `template` is text with `{{ … }}` blocks that each hold one reference and nothing
/// else: a context name (`run`, `pipeline`, `vars`, `phases`) followed by `.name`, `["key"]`,
/// `['key']` or `[0]` steps, spaces only around it. Such a template is valid minijinja that
/// reads nothing but the context (a test checks minijinja agrees); anything else (tags,
/// comments, filters, whitespace control, keywords as names) is left to minijinja. Its
/// `phases…` and `vars…` references go to `found` as [`references`] finds them (a test checks
/// that too), so that a plain template is read once.
fn plain_references<'t>(template: &'t str, found: &mut Vec<Reference<'t>>) -> bool {
    if find_pair(template, b"{%").is_some() || find_pair(template, b"{#").is_some() {
        return false;
    }
    let mut rest = template;
    while let Some(open) = find_pair(rest, b"{{") {
        let after = &rest[open + 2..];
        let Some(close) = find_pair(after, b"}}") else {
            return false;
        };
        if !plain_reference(&after[..close], found) {
            return false;
        }
        rest = &after[close + 2..];
    }
    true
}

/// Where two bytes (`{{`, `}}`, `{%`, …) first occur together in `text`: a search for one
/// byte, where a search for a two-character text first builds a searcher (most of a plain
/// template's check went to that).
fn find_pair(text: &str, pair: &[u8; 2]) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = memchr::memchr(pair[0], &bytes[from..]) {
        let at = from + at;
        if bytes.get(at + 1) == Some(&pair[1]) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// One block's text: ` phases.scan.tasks["a-b"].output `; its reference to `found` when it
/// reads `phases` or `vars` (its keys up to the first index, as [`scan_block`] takes them).
fn plain_reference<'t>(block: &'t str, found: &mut Vec<Reference<'t>>) -> bool {
    let is_name = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(is_ident)
            && !RESERVED.contains(&s)
    };
    let text = block.trim_matches(' ');
    let end = text.find(['.', '[']).unwrap_or(text.len());
    let root = &text[..end];
    if !TOP_LEVEL.contains(&root) {
        return false;
    }
    let mut keys = Vec::new();
    // Where the reference's keys end: at the first index (`[0]`), or with the text.
    let (mut read_to, mut indexed) = (end, false);
    let mut rest = &text[end..];
    while !rest.is_empty() {
        let key = if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let name = &after[..end];
            if !is_name(name) {
                return false;
            }
            rest = &after[end..];
            Some(name)
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(close) = after.find(']') else {
                return false;
            };
            let key = &after[..close];
            let quoted = ['"', '\''].into_iter().any(|q| {
                key.len() >= 2
                    && key.starts_with(q)
                    && key.ends_with(q)
                    && !key[1..key.len() - 1].contains([q, '\\'])
            });
            let index = !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit());
            if !quoted && !index {
                return false;
            }
            rest = &after[close + 1..];
            quoted.then(|| &key[1..key.len() - 1])
        } else {
            return false;
        };
        match key {
            Some(key) if !indexed => {
                keys.push(key);
                read_to = text.len() - rest.len();
            }
            Some(_) => {}
            None => indexed = true,
        }
    }
    if root == "phases" || root == "vars" {
        found.push(Reference {
            text: &text[..read_to],
            root,
            keys,
            dash: None,
        });
    }
    true
}

/// Words minijinja gives a meaning of their own: never taken as names by the fast path.
const RESERVED: [&str; 16] = [
    "true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if", "else",
    "loop", "self", "super",
];

/// A `phases…` or `vars…` reference as written in a template.
#[derive(Debug, PartialEq)]
struct Reference<'t> {
    /// The reference's text, e.g. `phases.scan.tasks["open-items"].output`.
    text: &'t str,
    /// `phases` or `vars`.
    root: &'t str,
    /// The keys after the root, in order.
    keys: Vec<&'t str>,
    /// A key directly followed by `-name` (`tasks.open-items`, which reads as `tasks.open`
    /// minus `items`): the index of the key and the name after the `-`.
    dash: Option<(usize, &'t str)>,
}

/// Every `phases…` and `vars…` reference inside the template's `{{ }}` and `{% %}` blocks
/// (string literals skipped).
fn references(template: &str) -> Vec<Reference<'_>> {
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(open) = [
        find_pair(&template[i..], b"{{"),
        find_pair(&template[i..], b"{%"),
    ]
    .into_iter()
    .flatten()
    .min()
    {
        let open = i + open;
        let close = if template[open..].starts_with("{{") {
            b"}}"
        } else {
            b"%}"
        };
        let start = open + 2;
        let end = find_pair(&template[start..], close).map_or(template.len(), |e| start + e);
        scan_block(&template[start..end], &mut found);
        i = (end + 2).min(template.len());
    }
    found
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn scan_block<'t>(block: &'t str, found: &mut Vec<Reference<'t>>) {
    let bytes = block.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' || c == '\'' {
            i = block[i + 1..]
                .find(c)
                .map_or(bytes.len(), |e| i + 1 + e + 1);
            continue;
        }
        let boundary = i == 0 || {
            let p = bytes[i - 1] as char;
            !is_ident(p) && p != '.'
        };
        let root = ["phases", "vars"].into_iter().find(|r| {
            boundary && block[i..].starts_with(r) && !block[i + r.len()..].starts_with(is_ident)
        });
        let Some(root) = root else {
            i += 1;
            continue;
        };
        let start = i;
        i += root.len();
        let mut keys = Vec::new();
        let mut dash = None;
        loop {
            let tail = &block[i..];
            if let Some(after) = tail.strip_prefix('.') {
                let len = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
                if len == 0 {
                    break;
                }
                keys.push(&after[..len]);
                i += 1 + len;
                let next = &block[i..];
                if let Some(name) = next.strip_prefix('-') {
                    let len = name.find(|c: char| !is_ident(c)).unwrap_or(name.len());
                    if len > 0 && name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                        dash = Some((keys.len() - 1, &name[..len]));
                    }
                    break;
                }
            } else if let Some(inner) = tail.strip_prefix('[') {
                let inner_trim = inner.trim_start();
                let Some(quote) = inner_trim
                    .chars()
                    .next()
                    .filter(|q| *q == '"' || *q == '\'')
                else {
                    break;
                };
                let body = &inner_trim[1..];
                let Some(close) = body.find(quote) else { break };
                let after = body[close + 1..].trim_start();
                if !after.starts_with(']') {
                    break;
                }
                keys.push(&body[..close]);
                i = block.len() - after.len() + 1;
            } else {
                break;
            }
        }
        found.push(Reference {
            text: &block[start..i],
            root,
            keys,
            dash,
        });
    }
}

fn check_reference(r: &Reference<'_>, scope: &Scope<'_>) -> Result<(), (String, String)> {
    let text = r.text;
    if let Some((at, name)) = r.dash
        && !TOP_LEVEL.contains(&name)
        && !GLOBALS.contains(&name)
    {
        let key = r.keys[at];
        let before: String = std::iter::once(r.root)
            .chain(r.keys[..at].iter().copied())
            .collect::<Vec<_>>()
            .join(".");
        return Err((
            format!("`{text}-{name}` reads as `{text}` minus `{name}`"),
            format!("a name with `-` is written in brackets: `{before}[\"{key}-{name}\"]`"),
        ));
    }
    if r.root == "vars" {
        if let Some(var) = r.keys.first()
            && !scope.vars.contains(var)
        {
            return Err((
                format!(
                    "`{text}` reads var `{var}`, which `[vars]` does not declare{}",
                    did_you_mean(var, scope.vars.iter().copied())
                ),
                format!(
                    "declare it in the pipeline's `[vars]` (a run can set it with `--var {var}=VALUE`); declared: {}",
                    suggest::list(scope.vars, 10)
                ),
            ));
        }
        return Ok(());
    }
    let Some(&phase) = r.keys.first() else {
        return Ok(());
    };
    if phase == scope.current_phase {
        if scope.parallel {
            return Err((
                format!("`{text}` reads phase `{phase}` itself, whose tasks run in parallel"),
                format!(
                    "tasks of a parallel phase cannot see each other's outputs; set `parallel = false` on phase `{phase}`, or read it from a later phase"
                ),
            ));
        }
        if let ["tasks", task, ..] = r.keys[1..]
            && !scope.is_earlier_task(task)
        {
            return Err((
                format!(
                    "`{text}` reads task `{task}`, which does not come before this task in phase `{phase}`"
                ),
                format!(
                    "a task of a sequential phase can read only the tasks listed before it: {}",
                    suggest::list(scope.earlier_tasks, 10)
                ),
            ));
        }
    } else if !scope.all_phases.contains(&phase) {
        return Err((
            format!(
                "`{text}` reads phase `{phase}`, which the pipeline does not have{}",
                did_you_mean(phase, scope.earlier_phases.iter().copied())
            ),
            format!(
                "check the spelling; the phases before `{}` are: {}",
                scope.current_phase,
                suggest::list(scope.earlier_phases, 10)
            ),
        ));
    } else if !scope.earlier_phases.contains(&phase) {
        return Err((
            format!(
                "`{text}` reads phase `{phase}`, which does not come before phase `{}`",
                scope.current_phase
            ),
            format!(
                "phases run in file order, so a task can read only earlier phases; move phase `{phase}` above phase `{}`",
                scope.current_phase
            ),
        ));
    }
    if let Some(&key) = r.keys.get(1)
        && !PHASE_KEYS.contains(&key)
    {
        return Err((
            format!(
                "`{text}`: a phase has no `{key}`{}",
                did_you_mean(key, PHASE_KEYS)
            ),
            format!(
                "a phase in the context has {}, e.g. `phases.{phase}.tasks`",
                suggest::list(&PHASE_KEYS, 3)
            ),
        ));
    }
    if let ["tasks", task, rest @ ..] = &r.keys[1..] {
        if let Some(ids) = scope.tasks.get(phase)
            && !ids.contains(task)
        {
            return Err((
                format!(
                    "`{text}` reads task `{task}`, which phase `{phase}` does not have{}",
                    did_you_mean(task, ids.order.iter().copied())
                ),
                format!(
                    "check the spelling; the tasks of phase `{phase}` are: {}",
                    suggest::list(&ids.order, 10)
                ),
            ));
        }
        if let Some(&key) = rest.first()
            && !TASK_KEYS.contains(&key)
        {
            return Err((
                format!(
                    "`{text}`: a task has no `{key}`{}",
                    did_you_mean(key, TASK_KEYS)
                ),
                format!(
                    "a task in the context has {}; what a plugin returned is under `output`, e.g. `phases.{phase}.tasks.{task}.output`",
                    suggest::list(&TASK_KEYS, 5)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use phasegate_model::pipeline::TaskIds;
    use phasegate_model::progress::{
        Failure, FailureKind, PhaseState, PhaseStatus, TaskState, TaskStatus,
    };
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn plain_references_are_told_apart_and_check_as_minijinja_checks_them() {
        let ids = |ids: &[&'static str]| TaskIds::new(ids.to_vec());
        let (scan, two) = (ids(&["stats", "open-items"]), ids(&["x"]));
        let tasks: HashMap<&str, &TaskIds> = [("scan", &scan), ("two", &two)].into();
        let scope = Scope {
            earlier_phases: &["scan"],
            all_phases: &["scan", "two"],
            current_phase: "two",
            earlier_tasks: &[],
            parallel: true,
            tasks: &tasks,
            vars: &["who"],
        };
        let plain = [
            "{{ vars.who }}",
            "hello {{vars.who}} and {{ phases.scan.tasks.stats.output }}!",
            r#"{{ phases.scan.tasks["open-items"].output.items[0] }}"#,
            "{{ phases['scan'].tasks['stats'].output }} } {",
            "{{ run.id }}{{ pipeline.name }}",
            "{{ vars.nmae }}",
            "{{ phases.scan.tasks.stat.output }}",
            "{{ phases.two.tasks.x.output }}",
            "{{ phases.scan.tasks.stats.outputs }}",
            "{{ phases.scan.tasks.stats.output[0].x['y'] }} {{vars.who}}",
            "{{ pipeline.name[0] }}{{ phases }}{{ vars }}",
        ];
        let minijinja_only = [
            "{{ vars.who | upper }}",
            "{% if vars.who %}x{% endif %}",
            "{# note #}{{ vars.who }}",
            "{{- vars.who }}",
            "{{ vars.who -}}",
            "{{ vars.true }}",
            "{{ nope }}",
            "{{ vars.who }",
            "{{ vars .who }}",
            r#"{{ vars["a\"b"] }}"#,
            "{{ phases.scan.tasks.open-items.output }}",
            "{{ vars[who] }}",
            "{{ vars.1 }}",
            "{{ }}",
        ];
        for t in plain {
            let mut found = Vec::new();
            assert!(plain_references(t, &mut found), "{t}");
            assert_eq!(found, references(t), "{t}");
            assert_eq!(
                check_template(t, &scope),
                check_with_minijinja(t, &scope),
                "{t}"
            );
        }
        for t in minijinja_only {
            assert!(!plain_references(t, &mut Vec::new()), "{t}");
        }
    }

    #[test]
    fn references_are_found_dotted_and_bracketed_outside_strings() {
        let found = references(
            r#"x phases.no {{ phases.scan.tasks["open-items"].output.n }} {% for v in vars.list %}{{ "phases.skip" }}{{ phases.a.tasks.open-items.output }}{% endfor %}"#,
        );
        assert_eq!(
            found,
            vec![
                Reference {
                    text: r#"phases.scan.tasks["open-items"].output.n"#,
                    root: "phases",
                    keys: vec!["scan", "tasks", "open-items", "output", "n"],
                    dash: None
                },
                Reference {
                    text: "vars.list",
                    root: "vars",
                    keys: vec!["list"],
                    dash: None
                },
                Reference {
                    text: "phases.a.tasks.open",
                    root: "phases",
                    keys: vec!["a", "tasks", "open"],
                    dash: Some((2, "items"))
                },
            ]
        );
    }

    #[test]
    fn a_finished_phase_renders_into_a_template() {
        let task = |id: &str, status, output: Option<&str>| TaskState {
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
        };
        let phase = PhaseState {
            id: "scan".into(),
            status: PhaseStatus::Complete,
            verdict: None,
            gate_key: None,
            gates: Vec::new(),
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
