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

/// A failure's message and a verdict's reason are kept up to this many bytes (in the progress
/// file, the events, the terminal): a plugin that fails with megabytes of text does not carry
/// them into every record and summary.
pub const MESSAGE_MAX: usize = 4 << 10;
/// A verdict's evidence (JSON) is kept up to this many bytes; longer evidence is replaced by a
/// JSON string saying so (cutting JSON would make it unreadable).
pub const EVIDENCE_MAX: usize = 64 << 10;

/// `text` cut to at most [`MESSAGE_MAX`] bytes (at a character boundary), saying where and why.
pub fn bounded(text: String) -> String {
    if text.len() <= MESSAGE_MAX {
        return text;
    }
    let cut = (0..=MESSAGE_MAX)
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    format!(
        "{}… [cut: {} bytes in all; messages and reasons are kept up to {MESSAGE_MAX} bytes]",
        &text[..cut],
        text.len()
    )
}

/// Evidence kept whole up to [`EVIDENCE_MAX`] bytes, else a JSON string that says it was
/// dropped and how long it was.
pub fn bounded_evidence(evidence: String) -> String {
    if evidence.len() <= EVIDENCE_MAX {
        return evidence;
    }
    serde_json::Value::String(format!(
        "evidence of {} bytes dropped: evidence is kept up to {EVIDENCE_MAX} bytes",
        evidence.len()
    ))
    .to_string()
}

/// What one task attempt used of its budgets, as the host measured it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Usage {
    /// Wall time the executor spent on the attempt (instantiation and call), µs. Unlike the
    /// task's `duration-ms`, measured where it ran: on a worker it leaves out the trip through
    /// NATS.
    #[serde(default)]
    pub wall_us: u64,
    /// Wasm fuel consumed, when the task had a fuel budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Linear memory at its largest, bytes, over all the instance's memories.
    #[serde(default)]
    pub memory: u64,
    /// Bytes of log text, stdout and stderr the plugin produced (kept or dropped).
    #[serde(default)]
    pub log_bytes: u64,
    /// Bytes written into read-write directory grants (what `limits.max-written` bounds).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub written: u64,
    /// Files and directories opened, and sockets created or accepted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub opened: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// Set when the gate did not judge the phase because it crashed: how (a trap, a timeout, a
    /// limit, or the host could not run it), with `reason` as the message. The verdict is then
    /// `fail`: a phase no gate approved does not go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crashed: Option<FailureKind>,
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
