//! Fixtures for `phasegate test`: a request (task) or a phase report (gate), the expected
//! result, and optional `limits` / `grants` tables with the same keys as in a pipeline.
//!
//! ```toml
//! # a task fixture
//! [request]
//! input = "hello"              # a string is sent as is; any other value as its JSON text
//! config = { loud = true }     # optional, default {}
//! [expect]
//! output = { text = "HELLO" }  # exact JSON equality; or `output-subset`, or `error`
//! ```
//!
//! ```toml
//! # a gate fixture
//! [report]
//! config = { min = 1 }
//! [[report.outcome]]
//! task = "a"
//! output = { count = 3 }
//! [[report.outcome]]
//! task = "b"
//! error = { kind = "failed", message = "boom" }
//! [expect]
//! verdict = "fail"
//! reason-contains = "1 of 2"
//! ```
//!
//! Plain data: running a fixture is the CLI's job, through the engine.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use phasegate_model::error::Problem;
use phasegate_model::error::toml_problem;
use phasegate_model::pipeline::{RawGrants, RawLimits};
use phasegate_model::progress::FailureKind;
use phasegate_model::progress::VerdictKind;

/// One fixture file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Fixture {
    /// What the fixture checks, shown next to its name.
    #[serde(default)]
    pub description: Option<String>,
    /// A task request (task fixtures).
    #[serde(default)]
    pub request: Option<RequestSpec>,
    /// A phase report (gate fixtures).
    #[serde(default)]
    pub report: Option<ReportSpec>,
    /// What must come back.
    pub expect: Expect,
    /// Limits, as in a pipeline task (`memory`, `timeout`, `fuel`...). Defaults as in a pipeline.
    #[serde(default)]
    pub limits: RawLimits,
    /// Grants, as in a pipeline task. None by default, as in a pipeline.
    #[serde(default)]
    pub grants: RawGrants,
}

/// The task request of a fixture. Everything but `input` has a default.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RequestSpec {
    /// The rendered input: a string is sent as is, any other value as its JSON text.
    #[serde(default)]
    pub input: Option<toml::Value>,
    /// The config table (sent as JSON).
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// The context (sent as JSON); default: an empty context of a run `fixture`.
    #[serde(default)]
    pub context: Option<toml::Table>,
    /// Phase id; default `fixture`.
    #[serde(default)]
    pub phase: Option<String>,
    /// Task id; default: the fixture's file name.
    #[serde(default)]
    pub task: Option<String>,
    /// Attempt number; default 1.
    #[serde(default)]
    pub attempt: Option<u32>,
}

/// The phase report of a gate fixture.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReportSpec {
    /// Phase id; default `fixture`.
    #[serde(default)]
    pub phase: Option<String>,
    /// The gate's config table.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// The context (sent as JSON).
    #[serde(default)]
    pub context: Option<toml::Table>,
    /// The tasks' outcomes, in order.
    #[serde(default, rename = "outcome")]
    pub outcomes: Vec<OutcomeSpec>,
}

/// One task's outcome in a gate fixture: `output` or `error`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutcomeSpec {
    /// Task id.
    pub task: String,
    /// The output (any value; sent as its JSON text). Omit for a failed task.
    #[serde(default)]
    pub output: Option<toml::Value>,
    /// Why the task failed. Omit for a task that succeeded.
    #[serde(default)]
    pub error: Option<ErrorSpec>,
    /// Attempts made; default 1.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Duration of the last attempt; default 0.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// What the task used, as `usage.of-task` answers it (`{ memory = 1048576, written =
    /// 5000 }`; keys as in the progress file's `[phase.task.usage]`, each 0 when omitted).
    /// Without it, `of-task` answers none for the task.
    #[serde(default)]
    pub usage: Option<phasegate_model::outcome::Usage>,
}

/// A failure in a gate fixture's outcome.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ErrorSpec {
    /// `failed`, `invalid-input`, `timeout`...
    pub kind: FailureKind,
    /// The failure's message.
    #[serde(default)]
    pub message: String,
}

/// What a fixture expects. A task fixture sets `output`, `output-subset` or `error`; a gate
/// fixture sets `verdict`, or `error` for a gate expected to crash (a trap, a timeout, a
/// limit). The `*-contains` keys check a substring of the message or reason.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Expect {
    /// The exact output (JSON equality; `3` equals `3.0`).
    #[serde(default)]
    pub output: Option<toml::Value>,
    /// A part of the output: every key given must be there with a matching value; arrays match
    /// element by element and must have the same length.
    #[serde(default)]
    pub output_subset: Option<toml::Value>,
    /// The failure kind the task must return, or how the gate must crash.
    #[serde(default)]
    pub error: Option<FailureKind>,
    /// A substring of the failure's (or the gate's crash) message.
    #[serde(default)]
    pub message_contains: Option<String>,
    /// The gate's verdict.
    #[serde(default)]
    pub verdict: Option<VerdictKind>,
    /// A substring of the verdict's reason.
    #[serde(default)]
    pub reason_contains: Option<String>,
    /// A part of the verdict's evidence (as `output-subset`).
    #[serde(default)]
    pub evidence_subset: Option<toml::Value>,
}

/// A fixture read from disk, with the text it was parsed from (for error positions).
#[derive(Debug)]
pub struct Loaded {
    /// Its file.
    pub path: PathBuf,
    /// Its name: the file stem.
    pub name: String,
    /// Its text.
    pub source: String,
    /// Parsed.
    pub fixture: Fixture,
}

/// Reads every `*.toml` in `dir`, sorted by name. Errors name the file, line and column.
pub fn load_dir(dir: &Path) -> Result<Vec<Loaded>, Problem> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Problem::new(format!(
            "cannot read the fixtures folder {}: {e}",
            dir.display()
        ))
        .help("create it with one `*.toml` fixture, or pass `--fixtures DIR`")
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Problem::new(format!("{}: no `*.toml` fixtures", dir.display()))
            .help("write one (see docs/plugin-guide.md#fixtures), or record one from a run with `phasegate test --record`"));
    }
    paths.iter().map(|p| load(p)).collect()
}

/// Reads one fixture file.
pub fn load(path: &Path) -> Result<Loaded, Problem> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read fixture {}: {e}", path.display()))?;
    parse(path, source)
}

/// Reads a fixture's text (`path` names it in errors).
pub fn parse(path: &Path, source: String) -> Result<Loaded, Problem> {
    let fixture: Fixture = toml::from_str(&source).map_err(|e| {
        toml_problem(
            path,
            &source,
            &e,
            "see the fixture format in docs/plugin-guide.md#fixtures",
        )
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Loaded {
        path: path.to_owned(),
        name,
        source,
        fixture,
    })
}

/// A TOML value as JSON.
pub fn to_json(value: &toml::Value) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// A value as the host sends it: a string as is, anything else as its JSON text.
pub fn sent_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => to_json(other).to_string(),
    }
}

/// A TOML table as JSON.
pub fn table_json(table: Option<&toml::Table>) -> Value {
    table.map_or_else(
        || Value::Object(Default::default()),
        |t| serde_json::to_value(t).unwrap_or(Value::Null),
    )
}

/// JSON as a TOML value, for recording fixtures. TOML has no null: nulls are dropped from
/// tables and arrays, and a top-level null becomes the string `"null"`.
pub fn from_json(value: &Value) -> toml::Value {
    match value {
        Value::Null => toml::Value::String("null".into()),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map(toml::Value::Integer)
            .unwrap_or_else(|| toml::Value::Float(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .filter(|v| !v.is_null())
                .map(from_json)
                .collect(),
        ),
        Value::Object(map) => toml::Value::Table(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect(),
        ),
    }
}

/// Whether two JSON values are equal, numbers compared by value (`3` == `3.0`).
pub fn json_eq(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => expected == actual,
    }
}

/// Whether `actual` contains `expected`: objects by the keys `expected` names, arrays element
/// by element (same length), everything else by [`json_eq`].
pub fn json_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| json_subset(v, w))),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_subset(x, y))
        }
        _ => json_eq(expected, actual),
    }
}

/// A line diff of two texts: ` ` common, `-` only in `expected`, `+` only in `actual`.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // Longest common subsequence table, from the end.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("   {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("  -{}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("  +{}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_and_equality() {
        let actual = json!({"a": 1.0, "b": [1, {"c": 2, "d": 3}], "e": "x"});
        assert!(json_subset(&json!({"a": 1, "b": [1, {"c": 2}]}), &actual));
        assert!(!json_subset(&json!({"b": [1]}), &actual));
        assert!(!json_subset(&json!({"z": 1}), &actual));
        assert!(!json_eq(&json!({"a": 1}), &actual));
        assert!(json_eq(
            &json!({"a": 1, "b": [1, {"c": 2, "d": 3}], "e": "x"}),
            &actual
        ));
    }

    #[test]
    fn diff_marks_changed_lines() {
        let d = diff("a\nb\nc", "a\nx\nc");
        assert_eq!(d, "   a\n  -b\n  +x\n   c\n");
    }
}
