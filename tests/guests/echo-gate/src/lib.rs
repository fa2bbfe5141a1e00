//! Test gate: passes, and shows what it was given as evidence:
//! `{"context": <the report's context>, "outcomes": <how many>}`.

use phasegate_plugin_sdk::{Gate, Report, Verdict};
use serde_json::{Value, json};

struct EchoGate;

impl Gate for EchoGate {
    type Config = Value;

    fn check(report: Report<Value>) -> Verdict {
        let evidence = json!({"context": report.context, "outcomes": report.outcomes.len()});
        Verdict::pass("echoed the report").with_evidence(evidence)
    }
}

phasegate_plugin_sdk::export_gate!(EchoGate);
