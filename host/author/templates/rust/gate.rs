//! `{{name}}`: a phasegate gate. Passes a phase when at most `max-failures` tasks failed and
//! none wrote more than `max-written` bytes into its read-write grants.
//!
//! Config: `max-failures` (default 0), `max-written` (bytes; default: no bound).

use phasegate_plugin_sdk::{Gate, Report, Verdict};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    max_failures: usize,
    max_written: Option<u64>,
}

struct Plugin;

impl Gate for Plugin {
    type Config = Config;

    /// JSON Schema of `Config`: `phasegate validate` checks the pipeline's `config` against it.
    fn config_schema() -> Option<String> {
        Some(r#"{"type": "object", "properties": {"max-failures": {"type": "integer", "minimum": 0}, "max-written": {"type": "integer", "minimum": 0}}, "additionalProperties": false}"#.into())
    }

    fn check(report: Report<Config>) -> Verdict {
        let total = report.outcomes.len();
        let failed: Vec<&str> = report.failed().map(|o| o.task.as_str()).collect();
        let ok = total - failed.len();
        let evidence = json!({"succeeded": ok, "failed": failed});
        if let Some(max) = report.config.max_written {
            // What each task used, as the host measured it.
            let heavy: Vec<&str> = report
                .outcomes
                .iter()
                .filter(|o| o.usage().is_some_and(|u| u.written > max))
                .map(|o| o.task.as_str())
                .collect();
            if !heavy.is_empty() {
                return Verdict::fail(format!(
                    "{} task(s) wrote more than max-written ({max} bytes) into read-write grants: {}",
                    heavy.len(),
                    heavy.join(", ")
                ))
                .with_evidence(evidence);
            }
        }
        if failed.len() > report.config.max_failures {
            Verdict::fail(format!(
                "{ok} of {total} task(s) succeeded; failed: {}",
                failed.join(", ")
            ))
            .with_evidence(evidence)
        } else {
            Verdict::pass(format!("{ok} of {total} task(s) succeeded")).with_evidence(evidence)
        }
    }
}

phasegate_plugin_sdk::export_gate!(Plugin);
