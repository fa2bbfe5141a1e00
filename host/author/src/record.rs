//! Recording a fixture from a real run: the request a task was sent (or the report its gate
//! was sent) and what came back, with the effective limits and grants, so `phasegate test`
//! replays it.

use std::path::{Path, PathBuf};

use phasegate_model::context::Context;
use phasegate_model::error::Problem;
use phasegate_model::pipeline::{Grants, Limits};
use phasegate_model::progress::{Failure, PhaseStatus, TaskState, TaskStatus, VerdictRecord};
use phasegate_model::units::HumanDuration;
use serde_json::{Value, json};

use crate::check::{kind_name, verdict_name};

fn problem(message: String) -> anyhow::Error {
    Problem::new(message).into()
}
use crate::fixture;

/// A fixture written by [`record`].
pub struct Recorded {
    /// The file written.
    pub path: PathBuf,
    /// What it records, e.g. "task `stats` of phase `scan`".
    pub about: String,
}

/// Records the task `task_id` of phase `phase_id` (its gate, without a task) from the run in
/// `state_path` into `dir` (as `name`, default PHASE-TASK or PHASE-gate). Never overwrites.
pub fn record(
    state_path: &Path,
    phase_id: &str,
    task_id: Option<&str>,
    name: Option<&str>,
    dir: &Path,
) -> anyhow::Result<Recorded> {
    let store = phasegate_runner::persist::ProgressStore::open(state_path)
        .map_err(|e| problem(format!("{e:#}")))?;
    let state = &store.state;
    let pipeline = phasegate_runner::load::load(&state.pipeline).map_err(|e| {
        problem(format!(
            "the progress file {} names the pipeline {}, which does not load:\n{e}",
            state_path.display(),
            state.pipeline.display()
        ))
    })?;
    let Some(pi) = pipeline.phases.iter().position(|p| *p.id == *phase_id) else {
        return Err(Problem::new(format!(
            "the pipeline {} has no phase `{phase_id}`",
            pipeline.path.display()
        ))
        .help(format!(
            "its phases: {}",
            pipeline
                .phases
                .iter()
                .map(|p| &*p.id)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    };
    let phase = &pipeline.phases[pi];
    let Some(phase_state) = state.phases.iter().find(|p| *p.id == *phase_id) else {
        return Err(problem(format!(
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
                return Err(
                    Problem::new(format!("phase `{phase_id}` has no task `{task_id}`"))
                        .help(format!(
                            "its tasks: {}",
                            phase
                                .tasks
                                .iter()
                                .map(|t| &*t.id)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                        .into(),
                );
            };
            let Some(ts) = phase_state.tasks.iter().find(|t| *t.id == *task_id) else {
                return Err(problem(format!(
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
                    problem(format!("cannot render the input of task `{task_id}`: {e}"))
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
            // A phase with several gates: its first one, with its own verdict.
            let Some(gate) = phase.gates.first() else {
                return Err(Problem::new(format!(
                    "phase `{phase_id}` has no gate plugin (it uses the built-in all-succeeded)"
                ))
                .help("pass `--task ID` to record a task")
                .into());
            };
            let own = phase_state.gates.first().map(|g| &g.verdict);
            let Some(verdict) = own.or(phase_state.verdict.as_ref()) else {
                return Err(problem(format!(
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
        return Err(
            Problem::new(format!("{} exists; nothing was written", path.display()))
                .help("remove it, or pass `--name` for another file")
                .into(),
        );
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
        .map_err(|e| problem(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::write(&path, text)
        .map_err(|e| problem(format!("cannot write {}: {e}", path.display())))?;
    Ok(Recorded { path, about })
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
    if let Some(usage) = t.usage.and_then(|u| toml::Value::try_from(u).ok()) {
        o.insert("usage".into(), usage);
    }
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
        "descriptors": limits.descriptors,
        "max-written": limits.max_written,
    });
    if let Some(fuel) = limits.fuel {
        l["fuel"] = json!(fuel);
    }
    table.insert("limits".into(), fixture::from_json(&l));
    if grants.is_empty() {
        return;
    }
    let g = grants.to_table();
    table.insert("grants".into(), fixture::from_json(&g));
}
