//! Running fixtures: each fixture's limits and grants resolved as a pipeline task's would be,
//! its shape checked against the plugin's world, and the plugin run against it in the same
//! sandbox as a pipeline; what differs from the expectation comes back as readable problems.

use std::sync::Arc;

use phasegate_engine::plugin::{wit, wit_failure_kind};
use phasegate_engine::{LoadedPlugin, PluginHost, World};
use phasegate_model::context::Context;
use phasegate_model::error::Problem;
use phasegate_model::events::Emitter;
use phasegate_model::pipeline::{EngineLimits, Grants, Limits};
use phasegate_model::progress::{FailureKind, VerdictKind};
use serde_json::{Value, json};

use crate::fixture::{self, Loaded};

/// A fixture, checked and resolved.
pub struct Case<'a> {
    /// The fixture as read.
    pub loaded: &'a Loaded,
    /// Its effective limits.
    pub limits: Limits,
    /// Its grants.
    pub grants: Grants,
}

/// Resolves every fixture's limits and grants (with the same checks, defaults and errors as a
/// pipeline task's), and the engine limits they need together. Every problem is reported.
pub fn prepare(fixtures: &[Loaded]) -> Result<(Vec<Case<'_>>, EngineLimits), Problem> {
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    let mut engine = EngineLimits::SINGLE;
    for loaded in fixtures {
        let f = &loaded.fixture;
        match phasegate_runner::load::sandbox(&loaded.path, &loaded.source, &f.limits, &f.grants) {
            Ok((limits, grants, e)) => {
                engine.max_stack = engine.max_stack.max(e.max_stack);
                engine.fuel |= e.fuel;
                cases.push(Case {
                    loaded,
                    limits,
                    grants,
                });
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.is_empty() {
        Ok((cases, engine))
    } else {
        Err(Problem::new(errors.join("\n")))
    }
}

/// Checks that every fixture has the shape the plugin's world needs (a request and an output or
/// error for a task, a report and a verdict for a gate).
pub fn check_shapes(world: World, cases: &[Case<'_>]) -> Result<(), Problem> {
    let mut errors = Vec::new();
    for case in cases {
        let f = &case.loaded.fixture;
        let wrong = match world {
            World::Task if f.request.is_none() => Some("a task fixture needs a `[request]` table"),
            World::Gate if f.report.is_none() => Some("a gate fixture needs a `[report]` table"),
            World::Task if f.report.is_some() || f.expect.verdict.is_some() => {
                Some("the plugin is a task: `[report]` and `expect.verdict` are for gates")
            }
            World::Gate if f.request.is_some() => {
                Some("the plugin is a gate: `[request]` is for tasks")
            }
            World::Gate if f.expect.error.is_some() && f.expect.verdict.is_some() => Some(
                "a gate either judges (`verdict`) or crashes (`error`): `[expect]` takes one of them",
            ),
            World::Task
                if f.expect.output.is_none()
                    && f.expect.output_subset.is_none()
                    && f.expect.error.is_none() =>
            {
                Some("`[expect]` needs `output`, `output-subset` or `error`")
            }
            World::Gate if f.expect.verdict.is_none() && f.expect.error.is_none() => {
                Some("`[expect]` needs `verdict` (or `error`, for a gate expected to crash)")
            }
            _ => None,
        };
        if let Some(why) = wrong {
            errors.push(
                Problem::new(format!("{}: {why}", case.loaded.path.display()))
                    .help("see docs/plugin-guide.md#fixtures")
                    .to_string(),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Problem::new(errors.join("\n")))
    }
}

fn json_text(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// `actual` restricted to what `expected` names, so a subset's diff shows only what matters.
fn project_onto(expected: &Value, actual: &Value) -> Value {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => Value::Object(
            e.keys()
                .filter_map(|k| a.get(k).map(|v| (k.clone(), project_onto(&e[k], v))))
                .collect(),
        ),
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            Value::Array(e.iter().zip(a).map(|(x, y)| project_onto(x, y)).collect())
        }
        _ => actual.clone(),
    }
}

fn compare(what: &str, expected: &Value, actual: &Value, subset: bool) -> Option<String> {
    let ok = if subset {
        fixture::json_subset(expected, actual)
    } else {
        fixture::json_eq(expected, actual)
    };
    if ok {
        return None;
    }
    let shown = if subset {
        project_onto(expected, actual)
    } else {
        actual.clone()
    };
    Some(format!(
        "{what} differs{} (- expected, + actual):\n{}",
        if subset {
            " (keys the fixture names)"
        } else {
            ""
        },
        fixture::diff(&json_text(expected), &json_text(&shown))
    ))
}

/// What one fixture came to.
pub struct Checked {
    /// Each way the result differs from the expectation (none: the fixture passes).
    pub problems: Vec<String>,
    /// What passes but looks like a mistake.
    pub warnings: Vec<String>,
}

/// An output that is a JSON string holding JSON: the task most likely encoded its result itself
/// (`json.dumps`, `JSON.stringify`, `serde_json::to_string`) before the SDK encoded it again.
fn encoded_twice(output: &Value) -> Option<String> {
    let text = output.as_str()?.trim();
    let inner: Value = serde_json::from_str(text).ok()?;
    (inner.is_object() || inner.is_array()).then(|| {
        "the output is a string that holds JSON: did the task encode its result itself (`json.dumps(...)`, `JSON.stringify(...)`)? Return the value; the SDK encodes it".to_owned()
    })
}

/// Runs one fixture; each way the result differs from the expectation is one problem.
pub async fn run_case(host: &PluginHost, plugin: &LoadedPlugin, case: &Case<'_>) -> Checked {
    let f = &case.loaded.fixture;
    // What the fixture gives, or what a plugin is given at the start of a run (the whole
    // context with the `context` grant, the run and pipeline names without it).
    let context = |given: Option<&toml::Table>| match given {
        Some(c) => fixture::table_json(Some(c)).to_string(),
        None => Context::new("fixture", "fixture", &json!({}))
            .value_for(case.grants.context)
            .to_string(),
    };
    let phase = |given: &Option<String>| given.clone().unwrap_or_else(|| "fixture".into());
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    if let Some(r) = &f.request {
        let input = r.input.as_ref().map(fixture::sent_text).unwrap_or_default();
        let request = Arc::new(wit::TaskRequest {
            run_id: "fixture".into(),
            phase: phase(&r.phase),
            task: r.task.clone().unwrap_or_else(|| case.loaded.name.clone()),
            attempt: r.attempt.unwrap_or(1),
            input,
            context: context(r.context.as_ref()),
            config: fixture::table_json(r.config.as_ref()).to_string(),
        });
        let attempt = host
            .run_task(
                plugin,
                &request,
                &case.limits,
                &case.grants,
                Emitter::discard(),
            )
            .await;
        let e = &f.expect;
        match (&attempt.result, e.error) {
            (Ok(output), None) => {
                let actual: Value = serde_json::from_str(output).unwrap_or(Value::Null);
                warnings.extend(encoded_twice(&actual));
                if let Some(expected) = &e.output {
                    problems.extend(compare(
                        "output",
                        &fixture::to_json(expected),
                        &actual,
                        false,
                    ));
                }
                if let Some(expected) = &e.output_subset {
                    problems.extend(compare(
                        "output",
                        &fixture::to_json(expected),
                        &actual,
                        true,
                    ));
                }
            }
            (Ok(output), Some(kind)) => problems.push(format!(
                "expected a `{}` error, got output: {output}",
                kind_name(kind)
            )),
            (Err(failure), None) => problems.push(format!(
                "expected output, got a `{}` error: {}",
                kind_name(failure.kind),
                failure.message
            )),
            (Err(failure), Some(kind)) => {
                if failure.kind != kind {
                    problems.push(format!(
                        "expected a `{}` error, got `{}`: {}",
                        kind_name(kind),
                        kind_name(failure.kind),
                        failure.message
                    ));
                }
                problems.extend(lacks(
                    "error",
                    e.message_contains.as_deref(),
                    &failure.message,
                ));
            }
        }
        if !problems.is_empty() && !attempt.log.is_empty() {
            problems.push(format!("log:\n  {}", attempt.log.join("\n  ")));
        }
    } else if let Some(r) = &f.report {
        let outcomes = r
            .outcomes
            .iter()
            .map(|o| wit::TaskOutcome {
                task: o.task.clone(),
                output: o.output.as_ref().map(fixture::sent_text),
                error: o.error.as_ref().map(|e| wit::TaskFailure {
                    kind: wit_failure_kind(e.kind),
                    message: e.message.clone(),
                }),
                attempts: o.attempts.unwrap_or(1),
                duration_ms: o.duration_ms.unwrap_or(0),
            })
            .collect();
        let report = wit::PhaseReport {
            run_id: "fixture".into(),
            phase: phase(&r.phase),
            outcomes,
            context: context(r.context.as_ref()),
            config: fixture::table_json(r.config.as_ref()).to_string(),
        };
        let usage = r
            .outcomes
            .iter()
            .filter_map(|o| Some((o.task.clone(), o.usage?)))
            .collect();
        let verdict = host
            .run_gate(
                plugin,
                report,
                usage,
                &case.limits,
                &case.grants,
                Emitter::discard(),
            )
            .await;
        let e = &f.expect;
        match (verdict.crashed, e.error) {
            (None, None) => {}
            (Some(crash), Some(kind)) => {
                if crash != kind {
                    problems.push(format!(
                        "expected the gate to crash with `{}`, it crashed with `{}`: {}",
                        kind_name(kind),
                        kind_name(crash),
                        verdict.reason
                    ));
                }
                problems.extend(lacks(
                    "crash",
                    e.message_contains.as_deref(),
                    &verdict.reason,
                ));
                return Checked { problems, warnings };
            }
            (None, Some(kind)) => {
                problems.push(format!(
                    "expected the gate to crash with `{}`, it judged: `{}`: {}",
                    kind_name(kind),
                    verdict_name(verdict.kind),
                    verdict.reason
                ));
                return Checked { problems, warnings };
            }
            (Some(crash), None) => {
                // Its `fail` is no judgement: a fixture expecting `fail` must not pass on it.
                problems.push(format!(
                    "the gate crashed (`{}`) instead of judging the phase: {}; a fixture that expects this writes `error = \"{}\"` in `[expect]`",
                    kind_name(crash),
                    verdict.reason,
                    kind_name(crash)
                ));
                return Checked { problems, warnings };
            }
        }
        if let Some(kind) = e.verdict
            && verdict.kind != kind
        {
            problems.push(format!(
                "expected verdict `{}`, got `{}`: {}",
                verdict_name(kind),
                verdict_name(verdict.kind),
                verdict.reason
            ));
        }
        if let Some(needle) = &e.reason_contains
            && !verdict.reason.contains(needle.as_str())
        {
            problems.push(format!(
                "the reason does not contain {needle:?}: {:?}",
                verdict.reason
            ));
        }
        if let Some(expected) = &e.evidence_subset {
            let actual = verdict
                .evidence
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or(Value::Null);
            problems.extend(compare(
                "evidence",
                &fixture::to_json(expected),
                &actual,
                true,
            ));
        }
    }
    Checked { problems, warnings }
}

/// When a fixture's `message-contains` is not in the message of the task's error or the gate's
/// crash (`what`): the problem saying so.
fn lacks(what: &str, needle: Option<&str>, message: &str) -> Option<String> {
    let needle = needle.filter(|n| !message.contains(n))?;
    Some(format!(
        "the {what} message does not contain {needle:?}: {message:?}"
    ))
}

/// A failure kind's name as fixtures write it.
pub fn kind_name(kind: FailureKind) -> String {
    phasegate_model::text::serde_name(&kind)
}

/// A verdict kind's name as fixtures write it.
pub fn verdict_name(kind: VerdictKind) -> String {
    phasegate_model::text::serde_name(&kind)
}
