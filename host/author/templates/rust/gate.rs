//! `{{name}}`: a phasegate gate. Passes a phase when at most `max-failures` tasks failed.
//!
//! Config: `max-failures` (default 0).

use phasegate_plugin_sdk::{Gate, Report, Verdict};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    max_failures: usize,
}

struct Plugin;

impl Gate for Plugin {
    type Config = Config;

    fn check(report: Report<Config>) -> Verdict {
        let total = report.outcomes.len();
        let failed: Vec<&str> = report.failed().map(|o| o.task.as_str()).collect();
        let ok = total - failed.len();
        let evidence = json!({"succeeded": ok, "failed": failed});
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
