//! What a task attempt or a gate came to: typed failures and verdicts, as recorded and as
//! events and gates see them.

use serde::{Deserialize, Serialize};

/// Why a task failed (mirrors the WIT `failure-kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    Failed,
    InvalidInput,
    InvalidConfig,
    InvalidOutput,
    Trap,
    Timeout,
    Limit,
    Host,
}

/// A typed failure with a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    /// Classification.
    pub kind: FailureKind,
    /// Explanation, naming the limit and the key to change where there is one.
    pub message: String,
}

/// Kind of a gate's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    Pass,
    Warn,
    Fail,
}

/// A gate's verdict as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VerdictRecord {
    /// pass, warn or fail.
    pub kind: VerdictKind,
    /// Which gate decided (`builtin:all-succeeded` when the phase has none).
    pub gate: String,
    /// The gate's reason.
    pub reason: String,
    /// Evidence as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

impl VerdictRecord {
    /// As context JSON (evidence parsed).
    pub fn to_json(&self) -> serde_json::Value {
        let evidence = self
            .evidence
            .as_deref()
            .map(|e| {
                serde_json::from_str(e).unwrap_or_else(|_| serde_json::Value::String(e.into()))
            })
            .unwrap_or(serde_json::Value::Null);
        serde_json::json!({"kind": self.kind, "gate": self.gate, "reason": self.reason, "evidence": evidence})
    }
}
