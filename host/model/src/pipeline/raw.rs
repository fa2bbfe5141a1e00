//! The pipeline file as written: what serde reads, before any check. Every table denies unknown
//! keys; spans are kept where a later check needs to point at a value.
//!
//! The document, each phase and each task are read separately ([`read`]), so that a wrong value
//! in one task does not hide the problems of the others: a part that cannot be read is kept as
//! [`Part::Unreadable`] with its id when it has one, and its problem reported.

use schemars::JsonSchema;
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::BoundsChecks;
use crate::grants::RawGrants;
use crate::outcome::FailureKind;
use crate::units::{ByteSize, HumanDuration};

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPipeline {
    /// The pipeline's name, shown in events and the progress file.
    #[schemars(with = "String", length(min = 1))]
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    /// Free values templates read as `vars.*`; `run --var KEY=VALUE` replaces declared ones.
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub(super) vars: Option<toml::Table>,
    #[serde(default)]
    pub(super) defaults: RawDefaults,
    #[serde(default)]
    pub(super) engine: RawEngine,
    /// Read separately from the `[[phase]]` tables.
    #[serde(skip)]
    pub(super) phases: Vec<Part<RawPhase>>,
    /// The phases, run in file order (`[[phase]]` tables). Named here so that serde lists
    /// `phase` among the keys allowed; the tables are read one by one ([`read`]).
    #[serde(default, rename = "phase")]
    #[schemars(with = "Vec<RawPhase>", length(min = 1))]
    _phase: Option<serde::de::IgnoredAny>,
}

/// The `[engine]` table: settings of the one wasmtime engine a run uses.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawEngine {
    pub(super) bounds_checks: Option<BoundsChecks>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDefaults {
    pub(super) retries: Option<u32>,
    /// How many tasks one plugin instance may serve in a row (default 1: a fresh instance for
    /// every task); see `reuse` on a task.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub(super) reuse: Option<Spanned<u32>>,
    pub(super) retry_on: Option<Vec<FailureKind>>,
    pub(super) retry_backoff: Option<HumanDuration>,
    /// At most this many tasks at once (default: the number of CPUs).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub(super) concurrency: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) limits: RawLimits,
}

/// A `limits` table as written (pipeline defaults, a task, a gate, a fixture).
#[derive(Deserialize, Default, Clone, Debug, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawLimits {
    pub(super) memory: Option<ByteSize>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) max_output: Option<ByteSize>,
    pub(super) fuel: Option<u64>,
    #[schemars(with = "Option<u64>", range(max = super::MAX_TABLE_ELEMENTS))]
    pub(super) table_elements: Option<Spanned<u64>>,
    pub(super) instances: Option<u64>,
    pub(super) max_log: Option<ByteSize>,
    pub(super) log_records: Option<u32>,
    /// Resources (files, directories, sockets, streams) the plugin may hold at once.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub(super) descriptors: Option<Spanned<u32>>,
    /// Bytes the plugin may write into its read-write directory grants per attempt.
    pub(super) max_written: Option<ByteSize>,
    #[schemars(with = "Option<ByteSize>")]
    pub(super) max_stack: Option<Spanned<ByteSize>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPhase {
    /// Starts with a letter; letters, digits, `-` and `_`.
    #[schemars(with = "String", regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"))]
    pub(super) id: Spanned<String>,
    #[serde(default)]
    pub(super) description: Option<String>,
    pub(super) parallel: Option<bool>,
    /// At most this many tasks at once (default: the number of CPUs).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub(super) concurrency: Option<Spanned<u32>>,
    pub(super) gate: Option<RawGate>,
    /// Several gates, each with its `policy` (instead of `gate`).
    #[schemars(with = "Option<Vec<RawGate>>", length(min = 1))]
    pub(super) gates: Option<Spanned<Vec<RawGate>>>,
    /// How many of the gates with `policy = "quorum"` must pass (or warn).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub(super) quorum: Option<Spanned<u32>>,
    /// `false`: no task of the phase takes its result from the result cache or stores one
    /// there (a task's own `cache` overrides it).
    pub(super) cache: Option<bool>,
    /// Read separately from the `[[phase.task]]` tables.
    #[serde(skip)]
    pub(super) tasks: Vec<Part<RawTask>>,
    /// The phase's tasks (`[[phase.task]]` tables). Named here so that serde lists `task`
    /// among the keys allowed; the tables are read one by one ([`read`]).
    #[serde(default, rename = "task")]
    #[schemars(with = "Vec<RawTask>", length(min = 1))]
    _task: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawGate {
    /// A component file (relative to the pipeline file) or an installed plugin's name.
    #[schemars(with = "String", length(min = 1))]
    pub(super) plugin: Spanned<String>,
    #[serde(default)]
    /// The plugin's configuration (checked by the plugin).
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub(super) config: Option<Spanned<toml::Table>>,
    pub(super) timeout: Option<HumanDuration>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) grants: RawGrants,
    /// What the gate's verdict does to the phase (default `required`).
    pub(super) policy: Option<super::GatePolicy>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawTask {
    /// Starts with a letter; letters, digits, `-` and `_`.
    #[schemars(with = "String", regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"))]
    pub(super) id: Spanned<String>,
    /// A component file (relative to the pipeline file) or an installed plugin's name.
    #[schemars(with = "String", length(min = 1))]
    pub(super) plugin: Spanned<String>,
    #[serde(default)]
    /// The task's input: text, or a minijinja template over the context.
    #[schemars(with = "Option<String>")]
    pub(super) input: Option<Spanned<String>>,
    #[serde(default)]
    /// The plugin's configuration (checked by the plugin).
    #[schemars(with = "Option<serde_json::Map<String, serde_json::Value>>")]
    pub(super) config: Option<Spanned<toml::Table>>,
    pub(super) retries: Option<u32>,
    /// How many tasks one plugin instance may serve in a row, for tasks of the same plugin,
    /// limits and grants (default 1: a fresh instance for every task). Above 1, tasks share the
    /// instance's memory: opt-in, for plugins whose instances are slow to make.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub(super) reuse: Option<Spanned<u32>>,
    pub(super) retry_on: Option<Vec<FailureKind>>,
    pub(super) timeout: Option<HumanDuration>,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) grants: RawGrants,
    /// `false`: the task never takes its result from the result cache nor stores one there
    /// (default: cached when its sandbox makes it observably pure).
    pub(super) cache: Option<bool>,
}

/// A phase or task as read: whole, or unreadable (its problem already reported) with the id it
/// was given, so that the checks of the rest do not report it missing.
pub(super) enum Part<T> {
    Read(T),
    Unreadable { id: Option<Spanned<String>> },
}

impl<T> Part<T> {
    /// The id a part was given.
    pub(super) fn id(&self) -> Option<&Spanned<String>>
    where
        T: HasId,
    {
        match self {
            Part::Read(t) => Some(t.id()),
            Part::Unreadable { id } => id.as_ref(),
        }
    }
}

pub(super) trait HasId {
    fn id(&self) -> &Spanned<String>;
}

impl HasId for RawPhase {
    fn id(&self) -> &Spanned<String> {
        &self.id
    }
}

impl HasId for RawTask {
    fn id(&self) -> &Spanned<String> {
        &self.id
    }
}

/// Reads pipeline text: the document's own keys, then each `[[phase]]` and each
/// `[[phase.task]]` on its own. Every problem goes to `problem`; `None` when the text is not
/// TOML at all or the document's own keys cannot be read.
pub(super) fn read(source: &str, problem: &mut dyn FnMut(Problem)) -> Option<RawPipeline> {
    let doc = match DeTable::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            problem(Problem::of(&e));
            return None;
        }
    };
    let span = doc.span();
    let mut top = doc.into_inner();
    let phases = top.remove("phase");
    let raw: Option<RawPipeline> = one(Spanned::new(span, DeValue::Table(top)), problem);
    let phases = match phases {
        Some(list) => each(list, problem, |phase, problem| {
            let span = phase.span();
            let mut table = phase.into_inner();
            // A phase's tasks are read even when the phase's own keys cannot be.
            let tasks = match table.remove("task") {
                Some(tasks) => each(tasks, problem, |task, problem| {
                    one(
                        Spanned::new(task.span(), DeValue::Table(task.into_inner())),
                        problem,
                    )
                }),
                None => Vec::new(),
            };
            let mut read: RawPhase = one(Spanned::new(span, DeValue::Table(table)), problem)?;
            read.tasks = tasks;
            Some(read)
        }),
        None => Vec::new(),
    };
    // When the document's own keys cannot be read (their problem is reported), the phases are
    // still checked, under default settings, so that their problems are reported too.
    let mut raw = raw.unwrap_or_else(|| RawPipeline {
        name: Spanned::new(0..0, "(unreadable)".into()),
        description: None,
        vars: None,
        defaults: RawDefaults::default(),
        engine: RawEngine::default(),
        phases: Vec::new(),
        _phase: None,
    });
    raw.phases = phases;
    Some(raw)
}

/// Deserialises one value, reporting its problem.
fn one<T: for<'de> Deserialize<'de>>(
    value: Spanned<DeValue<'_>>,
    problem: &mut dyn FnMut(Problem),
) -> Option<T> {
    T::deserialize(ValueDeserializer::from(value))
        .map_err(|e| problem(Problem::of(&e)))
        .ok()
}

/// Reads an array of tables item by item with `read_item` (which gets each table); anything
/// else is reported as serde reports it.
fn each<T: HasId + for<'de> Deserialize<'de>>(
    list: Spanned<DeValue<'_>>,
    problem: &mut dyn FnMut(Problem),
    mut read_item: impl FnMut(Spanned<DeTable<'_>>, &mut dyn FnMut(Problem)) -> Option<T>,
) -> Vec<Part<T>> {
    let span = list.span();
    let DeValue::Array(items) = list.into_inner() else {
        problem(Problem {
            message: "expected an array of tables: write each as a `[[...]]` table".into(),
            span: Some(span),
        });
        return Vec::new();
    };
    items
        .into_iter()
        .map(|item| {
            let item_span = item.span();
            match item.into_inner() {
                DeValue::Table(table) => {
                    let id = table.get("id").and_then(|v| {
                        v.get_ref()
                            .as_str()
                            .map(|s| Spanned::new(v.span(), s.to_owned()))
                    });
                    match read_item(Spanned::new(item_span, table), problem) {
                        Some(read) => Part::Read(read),
                        None => Part::Unreadable { id },
                    }
                }
                other => {
                    problem(Problem {
                        message: format!(
                            "expected a table, found {}: write it as a `[[...]]` table",
                            other.type_str()
                        ),
                        span: Some(item_span),
                    });
                    Part::Unreadable { id: None }
                }
            }
        })
        .collect()
}

/// A problem reading the text: serde's (or the TOML parser's) message and where.
pub(super) struct Problem {
    pub(super) message: String,
    pub(super) span: Option<std::ops::Range<usize>>,
}

impl Problem {
    fn of(e: &toml::de::Error) -> Problem {
        Problem {
            message: e.message().trim().to_owned(),
            span: e.span(),
        }
    }
}

/// The JSON Schema of the pipeline file, generated from the types serde reads it with: for
/// editors (taplo / Even Better TOML complete and check with it). What a schema cannot say —
/// unique ids, files that exist, what templates refer to — `validate` checks.
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawPipeline>();
    schema.insert("title".into(), "phasegate pipeline".into());
    schema.to_value()
}
