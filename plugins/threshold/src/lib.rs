//! `threshold` gate: checks a numeric field of the task outputs against bounds.
//!
//! Config:
//! - `field` (required): JSON pointer into each task's output, e.g. `"/count"`
//! - `min`, `max` (at least one): inclusive bounds
//! - `aggregate = "each"`: check every task (`each`), or their `sum`, `max` or `min`
//! - `tasks = [..]`: only these tasks (default: all that succeeded)
//! - `on-violation = "fail"`: or `"warn"` to let the run go on

use phasegate_plugin_sdk::{Gate, Report, Verdict};
use serde::Deserialize;
use serde_json::json;

struct Threshold;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    field: String,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default)]
    aggregate: Aggregate,
    tasks: Option<Vec<String>>,
    #[serde(default)]
    on_violation: OnViolation,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum Aggregate {
    #[default]
    Each,
    Sum,
    Max,
    Min,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
enum OnViolation {
    #[default]
    Fail,
    Warn,
}

impl Gate for Threshold {
    type Config = Config;

    fn check(report: Report<Config>) -> Verdict {
        let cfg = &report.config;
        if cfg.min.is_none() && cfg.max.is_none() {
            return Verdict::fail(
                "gate config sets neither `min` nor `max`; add at least one bound",
            );
        }
        let mut values = Vec::new();
        for o in &report.outcomes {
            if cfg.tasks.as_ref().is_some_and(|t| !t.contains(&o.task)) {
                continue;
            }
            let Some(output) = &o.output else { continue };
            match output.pointer(&cfg.field).and_then(|v| v.as_f64()) {
                Some(v) => values.push((o.task.clone(), v)),
                None => {
                    return Verdict::fail(format!(
                        "task `{}` has no number at `{}` in its output",
                        o.task, cfg.field
                    ));
                }
            }
        }
        if values.is_empty() {
            return Verdict::fail(format!("no task output has a number at `{}`", cfg.field));
        }
        let checked: Vec<(String, f64)> = match cfg.aggregate {
            Aggregate::Each => values.clone(),
            Aggregate::Sum => vec![("sum".into(), values.iter().map(|v| v.1).sum())],
            Aggregate::Max => vec![(
                "max".into(),
                values.iter().map(|v| v.1).fold(f64::MIN, f64::max),
            )],
            Aggregate::Min => vec![(
                "min".into(),
                values.iter().map(|v| v.1).fold(f64::MAX, f64::min),
            )],
        };
        let out_of_bounds: Vec<String> = checked
            .iter()
            .filter(|(_, v)| cfg.min.is_some_and(|m| *v < m) || cfg.max.is_some_and(|m| *v > m))
            .map(|(name, v)| format!("{name} = {v}"))
            .collect();
        let bounds = match (cfg.min, cfg.max) {
            (Some(a), Some(b)) => format!("between {a} and {b}"),
            (Some(a), None) => format!("at least {a}"),
            (None, Some(b)) => format!("at most {b}"),
            (None, None) => unreachable!("checked above"),
        };
        let evidence = json!({"field": cfg.field, "values": values.iter().map(|(t, v)| json!({"task": t, "value": v})).collect::<Vec<_>>()});
        if out_of_bounds.is_empty() {
            return Verdict::pass(format!(
                "`{}` is {bounds} ({})",
                cfg.field,
                checked
                    .iter()
                    .map(|(n, v)| format!("{n} = {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .with_evidence(evidence);
        }
        let reason = format!(
            "`{}` must be {bounds}: {}",
            cfg.field,
            out_of_bounds.join(", ")
        );
        match cfg.on_violation {
            OnViolation::Fail => Verdict::fail(reason),
            OnViolation::Warn => Verdict::warn(reason),
        }
        .with_evidence(evidence)
    }
}

phasegate_plugin_sdk::export_gate!(Threshold);
