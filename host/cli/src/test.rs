//! `phasegate test`: run a plugin against fixtures, or record a fixture from a real run.

use std::path::{Path, PathBuf};

use clap::Args;
use phasegate_author::fixture::{self, Loaded};
use phasegate_author::project::Project;
use phasegate_engine::plugin::wit;
use phasegate_engine::{LoadedPlugin, PluginHost, World};
use phasegate_model::context::Context;
use phasegate_model::events::Emitter;
use phasegate_model::pipeline::{EngineLimits, Grants, Limits, PluginRef};
use phasegate_model::progress::{
    Failure, FailureKind, PhaseStatus, TaskState, TaskStatus, VerdictRecord,
};
use phasegate_model::units::HumanDuration;
use serde_json::{Value, json};

use super::{Exit, bad_input};

/// Run a plugin against fixtures (request or phase report + expected result), or record one.
///
/// PLUGIN is a project folder (built first, fixtures from its plugin.toml) or a `.wasm` file
/// (fixtures from `--fixtures`). Fixtures run under the same limits and grants as a pipeline's
/// tasks: the defaults, or the fixture's own `[limits]` and `[grants]`. Exit 1 when a fixture
/// fails, 2 on bad input.
#[derive(Args)]
pub struct TestArgs {
    /// Project folder, plugin.toml or component file. Default: the current folder.
    #[arg(default_value = ".")]
    plugin: PathBuf,
    /// Fixtures folder (default: the project's `[test] fixtures`, or ./fixtures).
    #[arg(long)]
    fixtures: Option<PathBuf>,
    /// Do not run the project's build first.
    #[arg(long)]
    no_build: bool,
    /// Record a fixture from this progress file instead of testing: the request a task got (or
    /// the report its gate got, without `--task`) and what came back.
    #[arg(long, value_name = "STATE")]
    record: Option<PathBuf>,
    /// With `--record`: the phase.
    #[arg(long, requires = "record")]
    phase: Option<String>,
    /// With `--record`: the task (omit it to record the phase's gate).
    #[arg(long, requires = "record")]
    task: Option<String>,
    /// With `--record`: the fixture's file name (default PHASE-TASK or PHASE-gate).
    #[arg(long, requires = "record")]
    name: Option<String>,
}

impl TestArgs {
    pub fn run(self) -> anyhow::Result<Exit> {
        let is_component = self.plugin.extension().is_some_and(|e| e == "wasm");
        let project = if is_component {
            None
        } else {
            Some(Project::load(&self.plugin).map_err(bad_input)?)
        };
        let fixtures_dir = match (&self.fixtures, &project) {
            (Some(dir), _) => dir.clone(),
            (None, Some(project)) => project.fixtures(),
            (None, None) => PathBuf::from("fixtures"),
        };
        if let Some(state) = &self.record {
            let phase = self.phase.as_deref().ok_or_else(|| {
                bad_input("`--record` needs `--phase ID` (and `--task ID` for a task)")
            })?;
            return record(
                state,
                phase,
                self.task.as_deref(),
                self.name.as_deref(),
                &fixtures_dir,
            );
        }
        let component = match &project {
            None => self.plugin.clone(),
            Some(project) if self.no_build => project.output(),
            Some(project) => super::build::build(project)?,
        };
        let fixtures = fixture::load_dir(&fixtures_dir).map_err(bad_input)?;
        run_fixtures(&component, &fixtures)
    }
}

/// A fixture, checked and resolved.
struct Case<'a> {
    loaded: &'a Loaded,
    limits: Limits,
    grants: Grants,
}

fn run_fixtures(component: &Path, fixtures: &[Loaded]) -> anyhow::Result<Exit> {
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
    if !errors.is_empty() {
        return Err(bad_input(errors.join("\n")));
    }
    let host = PluginHost::new(engine)?;
    let plugin = host
        .load(&PluginRef::file(component))
        .map_err(|e| bad_input(e.to_string()))?;
    for case in &cases {
        let f = &case.loaded.fixture;
        let wrong = match plugin.world {
            World::Task if f.request.is_none() => Some("a task fixture needs a `[request]` table"),
            World::Gate if f.report.is_none() => Some("a gate fixture needs a `[report]` table"),
            World::Task if f.report.is_some() || f.expect.verdict.is_some() => {
                Some("the plugin is a task: `[report]` and `expect.verdict` are for gates")
            }
            World::Gate if f.request.is_some() || f.expect.error.is_some() => {
                Some("the plugin is a gate: `[request]` and `expect.error` are for tasks")
            }
            World::Task
                if f.expect.output.is_none()
                    && f.expect.output_subset.is_none()
                    && f.expect.error.is_none() =>
            {
                Some("`[expect]` needs `output`, `output-subset` or `error`")
            }
            World::Gate if f.expect.verdict.is_none() => Some("`[expect]` needs `verdict`"),
            _ => None,
        };
        if let Some(why) = wrong {
            errors.push(format!(
                "{}: {why}\n  help: see docs/plugin-guide.md#fixtures",
                case.loaded.path.display()
            ));
        }
    }
    if !errors.is_empty() {
        return Err(bad_input(errors.join("\n")));
    }
    let runtime = super::runtime()?;
    println!(
        "testing {} ({}) with {} fixture(s)",
        component.display(),
        plugin.world,
        cases.len()
    );
    let mut failed = 0;
    for case in &cases {
        let problems = runtime.block_on(run_case(&host, &plugin, case));
        let name = &case.loaded.name;
        let about = case
            .loaded
            .fixture
            .description
            .as_deref()
            .map(|d| format!(" — {d}"))
            .unwrap_or_default();
        if problems.is_empty() {
            println!("  PASS {name}{about}");
        } else {
            failed += 1;
            println!("  FAIL {name}{about} ({})", case.loaded.path.display());
            for p in problems {
                for line in p.lines() {
                    println!("       {line}");
                }
            }
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    Ok(if failed == 0 {
        Exit::Success
    } else {
        Exit::RunFailed
    })
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

async fn run_case(host: &PluginHost, plugin: &LoadedPlugin, case: &Case<'_>) -> Vec<String> {
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
    if let Some(r) = &f.request {
        let input = r.input.as_ref().map(fixture::sent_text).unwrap_or_default();
        let request = std::sync::Arc::new(wit::TaskRequest {
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
                if let Some(needle) = &e.message_contains
                    && !failure.message.contains(needle.as_str())
                {
                    problems.push(format!(
                        "the error message does not contain {needle:?}: {:?}",
                        failure.message
                    ));
                }
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
                    kind: phasegate_engine::plugin::wit_failure_kind(e.kind),
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
        let verdict = host
            .run_gate(
                plugin,
                report,
                &case.limits,
                &case.grants,
                Emitter::discard(),
            )
            .await;
        let e = &f.expect;
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
    problems
}

fn kind_name(kind: FailureKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn verdict_name(kind: phasegate_model::progress::VerdictKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Recording

fn record(
    state_path: &Path,
    phase_id: &str,
    task_id: Option<&str>,
    name: Option<&str>,
    dir: &Path,
) -> anyhow::Result<Exit> {
    let store = phasegate_runner::persist::ProgressStore::open(state_path)
        .map_err(|e| bad_input(format!("{e:#}")))?;
    let state = &store.state;
    let pipeline = phasegate_runner::load::load(&state.pipeline).map_err(|e| {
        bad_input(format!(
            "the progress file {} names the pipeline {}, which does not load:\n{e}",
            state_path.display(),
            state.pipeline.display()
        ))
    })?;
    let Some(pi) = pipeline.phases.iter().position(|p| *p.id == *phase_id) else {
        return Err(bad_input(format!(
            "the pipeline {} has no phase `{phase_id}`\n  help: its phases: {}",
            pipeline.path.display(),
            pipeline
                .phases
                .iter()
                .map(|p| &*p.id)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let phase = &pipeline.phases[pi];
    let Some(phase_state) = state.phases.iter().find(|p| *p.id == *phase_id) else {
        return Err(bad_input(format!(
            "phase `{phase_id}` has not run in {} yet; nothing to record",
            state_path.display()
        )));
    };
    // The context as the runner built it: every earlier finished phase (recorded as the plugin
    // was given it).
    let mut ctx = Context::new(&state.run_id, &pipeline.name, &pipeline.vars);
    for p in &state.phases {
        if *p.id == *phase_id {
            break;
        }
        if p.status != PhaseStatus::Pending {
            ctx.add_phase(p);
        }
    }
    let mut table = toml::Table::new();
    let (file_name, about) = match task_id {
        Some(task_id) => {
            let Some(spec) = phase.tasks.iter().find(|t| *t.id == *task_id) else {
                return Err(bad_input(format!(
                    "phase `{phase_id}` has no task `{task_id}`\n  help: its tasks: {}",
                    phase
                        .tasks
                        .iter()
                        .map(|t| &*t.id)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            let Some(ts) = phase_state.tasks.iter().find(|t| *t.id == *task_id) else {
                return Err(bad_input(format!(
                    "task `{task_id}` of phase `{phase_id}` has not finished in {}; nothing to record",
                    state_path.display()
                )));
            };
            if !phase.parallel {
                // A sequential task sees the tasks before it.
                for earlier in phase_state.tasks.iter().take_while(|t| *t.id != *task_id) {
                    ctx.add_task(phase_id, earlier);
                }
            }
            let input =
                phasegate_runner::template::render_context(&ctx, &spec.input).map_err(|e| {
                    bad_input(format!("cannot render the input of task `{task_id}`: {e}"))
                })?;
            let mut request = toml::Table::new();
            request.insert("input".into(), toml::Value::String(input));
            request.insert("config".into(), fixture::from_json(&spec.config));
            request.insert(
                "context".into(),
                fixture::from_json(&ctx.value_for(spec.grants.context)),
            );
            request.insert("phase".into(), phase_id.into());
            request.insert("task".into(), task_id.into());
            table.insert("request".into(), request.into());
            table.insert("expect".into(), expect_task(ts).into());
            insert_sandbox(&mut table, &spec.limits, &spec.grants);
            (
                format!("{phase_id}-{task_id}"),
                format!("task `{task_id}` of phase `{phase_id}`"),
            )
        }
        None => {
            let Some(gate) = &phase.gate else {
                return Err(bad_input(format!(
                    "phase `{phase_id}` has no gate plugin (it uses the built-in all-succeeded)\n  help: pass `--task ID` to record a task"
                )));
            };
            let Some(verdict) = &phase_state.verdict else {
                return Err(bad_input(format!(
                    "the gate of phase `{phase_id}` has not given a verdict in {}; nothing to record",
                    state_path.display()
                )));
            };
            let mut report = toml::Table::new();
            report.insert("phase".into(), phase_id.into());
            report.insert("config".into(), fixture::from_json(&gate.config));
            report.insert(
                "context".into(),
                fixture::from_json(&ctx.value_for(gate.grants.context)),
            );
            let outcomes: Vec<toml::Value> = phase_state
                .tasks
                .iter()
                .map(|t| outcome(t).into())
                .collect();
            report.insert("outcome".into(), outcomes.into());
            table.insert("report".into(), report.into());
            table.insert("expect".into(), expect_gate(verdict).into());
            insert_sandbox(&mut table, &gate.limits, &gate.grants);
            (
                format!("{phase_id}-gate"),
                format!("the gate of phase `{phase_id}`"),
            )
        }
    };
    let file_name = name.map(str::to_owned).unwrap_or(file_name);
    let path = dir.join(format!("{}.toml", file_name.trim_end_matches(".toml")));
    if path.exists() {
        return Err(bad_input(format!(
            "{} exists; nothing was written\n  help: remove it, or pass `--name` for another file",
            path.display()
        )));
    }
    let text = format!(
        "# Recorded by `phasegate test --record` from run {} ({}), {about}.\n\
         # Replay it with `phasegate test`. Limits and grants are the pipeline's effective ones.\n\
         description = {}\n\n{}",
        state.run_id,
        state_path.display(),
        toml::Value::String(format!("recorded: {about} of run {}", state.run_id)),
        toml::to_string(&table)?
    );
    std::fs::create_dir_all(dir)
        .map_err(|e| bad_input(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::write(&path, text)
        .map_err(|e| bad_input(format!("cannot write {}: {e}", path.display())))?;
    println!("recorded {about} into {}", path.display());
    Ok(Exit::Success)
}

fn expect_task(ts: &TaskState) -> toml::Table {
    let mut expect = toml::Table::new();
    match (&ts.status, &ts.output, &ts.error) {
        (TaskStatus::Succeeded, Some(output), _) => {
            let value: Value = serde_json::from_str(output).unwrap_or(Value::Null);
            expect.insert("output".into(), fixture::from_json(&value));
        }
        (_, _, Some(Failure { kind, message })) => {
            expect.insert("error".into(), kind_name(*kind).into());
            let first = message.lines().next().unwrap_or_default();
            if !first.is_empty() {
                expect.insert("message-contains".into(), first.into());
            }
        }
        _ => {}
    }
    expect
}

fn expect_gate(verdict: &VerdictRecord) -> toml::Table {
    let mut expect = toml::Table::new();
    expect.insert("verdict".into(), verdict_name(verdict.kind).into());
    expect.insert("reason-contains".into(), verdict.reason.clone().into());
    if let Some(evidence) = verdict
        .evidence
        .as_deref()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        expect.insert("evidence-subset".into(), fixture::from_json(&evidence));
    }
    expect
}

fn outcome(t: &TaskState) -> toml::Table {
    let mut o = toml::Table::new();
    o.insert("task".into(), (&*t.id).into());
    if let Some(output) = &t.output {
        o.insert("output".into(), output.clone().into());
    }
    if let Some(e) = &t.error {
        let mut error = toml::Table::new();
        error.insert("kind".into(), kind_name(e.kind).into());
        error.insert("message".into(), e.message.clone().into());
        o.insert("error".into(), error.into());
    }
    o.insert("attempts".into(), i64::from(t.attempts).into());
    o.insert(
        "duration-ms".into(),
        i64::try_from(t.duration_ms).unwrap_or(i64::MAX).into(),
    );
    o
}

/// The effective limits and grants, in the pipeline's own keys, so a replay runs as the task did.
fn insert_sandbox(table: &mut toml::Table, limits: &Limits, grants: &Grants) {
    let mut l = json!({
        "memory": limits.memory,
        "timeout": HumanDuration(limits.timeout),
        "max-output": limits.max_output,
        "table-elements": limits.table_elements,
        "instances": limits.instances,
        "max-log": limits.max_log,
        "log-records": limits.log_records,
    });
    if let Some(fuel) = limits.fuel {
        l["fuel"] = json!(fuel);
    }
    table.insert("limits".into(), fixture::from_json(&l));
    if grants.is_empty() {
        return;
    }
    let g = json!({
        "dirs": grants.dirs.iter().map(|d| json!({
            "host": d.host.display().to_string(),
            "guest": d.guest,
            "mode": d.mode,
        })).collect::<Vec<_>>(),
        "env": grants.env,
        "env-set": grants.env_set,
        "net": grants.net,
        "http": grants.http,
        "deterministic": grants.deterministic,
        "seed": if grants.deterministic { json!(grants.seed) } else { Value::Null },
        "context": grants.context,
    });
    table.insert("grants".into(), fixture::from_json(&g));
}
