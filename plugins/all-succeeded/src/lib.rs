//! `all-succeeded` gate: passes when every task succeeded.
//!
//! Config: `allow-failures = 0` (that many failed tasks only warn), `warn-on-retries = false`
//! (warn when a task needed more than one attempt).

use phasegate_plugin_sdk::{Gate, Report, Verdict};
use serde::Deserialize;
use serde_json::json;

struct AllSucceeded;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    allow_failures: usize,
    warn_on_retries: bool,
}

impl Gate for AllSucceeded {
    type Config = Config;

    fn check(report: Report<Config>) -> Verdict {
        let total = report.outcomes.len();
        let failed: Vec<_> = report.failed().collect();
        let names: Vec<&str> = failed.iter().map(|o| o.task.as_str()).collect();
        let evidence = json!({
            "failed": failed.iter().map(|o| json!({"task": o.task, "error": o.error.as_ref().map(|e| &e.1), "kind": o.error.as_ref().map(|e| &e.0)})).collect::<Vec<_>>(),
        });
        if failed.len() > report.config.allow_failures {
            return Verdict::fail(format!(
                "{} of {total} task(s) failed: {}",
                failed.len(),
                names.join(", ")
            ))
            .with_evidence(evidence);
        }
        if !failed.is_empty() {
            return Verdict::warn(format!(
                "{} of {total} task(s) failed ({}), within `allow-failures = {}`",
                failed.len(),
                names.join(", "),
                report.config.allow_failures
            ))
            .with_evidence(evidence);
        }
        let retried: Vec<&str> = report
            .outcomes
            .iter()
            .filter(|o| o.attempts > 1)
            .map(|o| o.task.as_str())
            .collect();
        if report.config.warn_on_retries && !retried.is_empty() {
            return Verdict::warn(format!(
                "all {total} task(s) succeeded, but {} needed retries",
                retried.join(", ")
            ));
        }
        Verdict::pass(format!("all {total} task(s) succeeded"))
    }
}

phasegate_plugin_sdk::export_gate!(AllSucceeded);
