//! Test gate: passes, and shows what it was given as evidence:
//! `{"context": <the report's context>, "outcomes": <how many>, "written": {<task>: <bytes
//! written, from the host's usage; null when it has none>}}`. With `config = { max-written = N
//! }` it fails when a task wrote more than N bytes into its read-write grants; with `config = {
//! panic = true }` it crashes instead of judging.

use phasegate_plugin_sdk::{Gate, Report, Verdict};
use serde_json::{Value, json};

struct EchoGate;

impl Gate for EchoGate {
    type Config = Value;

    fn check(report: Report<Value>) -> Verdict {
        if report.config["panic"] == true {
            panic!("echo gate told to crash");
        }
        let written: serde_json::Map<String, Value> = report
            .outcomes
            .iter()
            .map(|o| (o.task.clone(), json!(o.usage().map(|u| u.written))))
            .collect();
        let over: Vec<&str> = match report.config["max-written"].as_u64() {
            Some(max) => report
                .outcomes
                .iter()
                .filter(|o| o.usage().is_some_and(|u| u.written > max))
                .map(|o| o.task.as_str())
                .collect(),
            None => Vec::new(),
        };
        let evidence = json!({"context": report.context, "outcomes": report.outcomes.len(), "written": written});
        if over.is_empty() {
            Verdict::pass("echoed the report").with_evidence(evidence)
        } else {
            Verdict::fail(format!("wrote more than allowed: {}", over.join(", ")))
                .with_evidence(evidence)
        }
    }
}

phasegate_plugin_sdk::export_gate!(EchoGate);
