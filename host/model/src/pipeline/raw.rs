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

use super::{BoundsChecks, split};
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
    /// `config` as JSON, made as the task is read ([`task`]; on the thread that reads it), its
    /// TOML then emptied: a pipeline of 40,000 tasks does not hold every config twice. Taken
    /// (not copied) by the task built from it, on whichever thread builds it.
    #[serde(skip)]
    #[schemars(skip)]
    pub(super) config_json: std::sync::Mutex<serde_json::Value>,
    pub(super) retries: Option<u32>,
    /// How many tasks one plugin instance may serve in a row, for tasks of the same plugin,
    /// limits and grants (default 1: a fresh instance for every task). Above 1, tasks share the
    /// instance's memory: opt-in, for plugins whose instances are slow to make.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub(super) reuse: Option<Spanned<u32>>,
    pub(super) retry_on: Option<Vec<FailureKind>>,
    pub(super) timeout: Option<HumanDuration>,
    // Boxed, and only when written: most tasks have neither table, and a task as read is moved
    // several times (a pipeline of 40,000 tasks is 40,000 of them). Not a doc comment: those
    // go into the schema.
    #[serde(default)]
    #[schemars(with = "RawLimits")]
    pub(super) limits: Option<Box<RawLimits>>,
    #[serde(default)]
    #[schemars(with = "RawGrants")]
    pub(super) grants: Option<Box<RawGrants>>,
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
///
/// A text whose task tables can be found ([`split`]) is read table by table; anything that
/// does not read cleanly that way is read again as one document, which reports its problems.
pub(super) fn read(source: &str, problem: &mut dyn FnMut(Problem)) -> Option<RawPipeline> {
    read_split(source).or_else(|| read_whole(source, problem))
}

/// Reads pipeline text as one TOML document (see [`read`]).
pub(super) fn read_whole(source: &str, problem: &mut dyn FnMut(Problem)) -> Option<RawPipeline> {
    let doc = match DeTable::parse(source) {
        Ok(doc) => doc,
        Err(e) => {
            problem(Problem::of(&e));
            return None;
        }
    };
    Some(read_document(
        doc,
        problem,
        &mut |_, tasks, problem| match tasks {
            Some(tasks) => each(tasks, problem, |t, problem| {
                task(
                    Spanned::new(t.span(), DeValue::Table(t.into_inner())),
                    problem,
                )
            }),
            None => Vec::new(),
        },
    ))
}

/// Reads pipeline text table by table: the text without its task tables as one document, then
/// each task table on its own (as the text is scanned for them, [`split`]). `None` when the
/// text's tables cannot be found or anything does not read cleanly.
fn read_split(source: &str) -> Option<RawPipeline> {
    let mut split = split::split(source, |source, table| {
        toml_table(source, table, &mut |_| {})
    })?;
    let mut runs = std::mem::take(&mut split.runs).into_iter().peekable();
    let doc = DeTable::parse(&split.rest).ok()?;
    // The rest's spans, as they are in the text.
    let doc = {
        let span = split.in_source(doc.span());
        let mut top = doc.into_inner();
        for (_, value) in top.iter_mut() {
            relocate(value, &|s| split.in_source(s));
        }
        Spanned::new(span, top)
    };
    let clean = std::cell::Cell::new(true);
    let mut phases = 0usize;
    let raw = read_document(doc, &mut |_| clean.set(false), &mut |index, written, _| {
        phases += 1;
        // Tasks written inside the phase's table (`task = [...]`): read as one document.
        if written.is_some() {
            clean.set(false);
        }
        // A phase read by one thread is its run, as it is; one shared by threads, their runs
        // joined.
        let mut tasks = Vec::new();
        while let Some(run) = runs.next_if(|r| r.phase == index) {
            if tasks.is_empty() {
                tasks = run.tasks;
            } else {
                tasks.extend(run.tasks);
            }
        }
        tasks
    });
    (clean.get() && phases == split.phases && runs.next().is_none()).then_some(raw)
}

/// Reads one task table of `source` with the TOML crate, with its spans in `source`.
pub(super) fn toml_table(
    source: &str,
    table: &split::TaskTable,
    problem: &mut dyn FnMut(Problem),
) -> Option<RawTask> {
    let (mut task, start) = match table.keys {
        // Only keys after the header: they are a document whose top table is the task.
        Some(keys) => {
            let doc = DeTable::parse(source.get(keys..table.range.end)?).ok()?;
            let span = doc.span();
            (Spanned::new(span, DeValue::Table(doc.into_inner())), keys)
        }
        // With its sub-tables: the header too, and the task is `phase.task[0]`.
        None => {
            let text = source.get(table.range.clone())?;
            let mut top = DeTable::parse(text).ok()?.into_inner();
            let DeValue::Table(mut phase) = top.remove("phase")?.into_inner() else {
                return None;
            };
            let DeValue::Array(tasks) = phase.remove("task")?.into_inner() else {
                return None;
            };
            if !top.is_empty() || !phase.is_empty() || tasks.len() != 1 {
                return None;
            }
            (tasks.into_iter().next()?, table.range.start)
        }
    };
    shift(&mut task, start);
    if !matches!(task.get_ref(), DeValue::Table(_)) {
        return None;
    }
    self::task(task, problem)
}

/// Deserialises one task, its config made JSON.
fn task(value: Spanned<DeValue<'_>>, problem: &mut dyn FnMut(Problem)) -> Option<RawTask> {
    let mut task: RawTask = one(value, problem)?;
    let table = task.config.as_mut().map(|c| std::mem::take(c.get_mut()));
    task.config_json = super::parse::table_to_json(table.as_ref()).into();
    Some(task)
}

/// Moves every value's span in `value` by `by` bytes: a table read on its own has spans from
/// its own start.
fn shift(value: &mut Spanned<DeValue<'_>>, by: usize) {
    relocate(value, &|span| span.start + by..span.end + by);
}

/// Gives every value's span in `value` its place in the text. (Keys keep theirs: only a problem
/// names a key, and a text with a problem is read again as one document.)
fn relocate(
    value: &mut Spanned<DeValue<'_>>,
    place: &dyn Fn(std::ops::Range<usize>) -> std::ops::Range<usize>,
) {
    let span = value.span();
    let inner = std::mem::replace(value.get_mut(), DeValue::Boolean(false));
    *value = Spanned::new(place(span), inner);
    match value.get_mut() {
        DeValue::Table(table) => table.iter_mut().for_each(|(_, v)| relocate(v, place)),
        DeValue::Array(items) => items.iter_mut().for_each(|v| relocate(v, place)),
        _ => {}
    }
}

/// The document's own keys and its phases, each phase's tasks read by `tasks_of` from the
/// phase's index, its `task` value if it has one, and where problems go.
#[allow(clippy::type_complexity)]
fn read_document(
    doc: Spanned<DeTable<'_>>,
    problem: &mut dyn FnMut(Problem),
    tasks_of: &mut dyn FnMut(
        usize,
        Option<Spanned<DeValue<'_>>>,
        &mut dyn FnMut(Problem),
    ) -> Vec<Part<RawTask>>,
) -> RawPipeline {
    let span = doc.span();
    let mut top = doc.into_inner();
    let phases = top.remove("phase");
    let raw: Option<RawPipeline> = one(Spanned::new(span, DeValue::Table(top)), problem);
    let mut index = 0;
    let phases = match phases {
        Some(list) => each(list, problem, |phase, problem| {
            let span = phase.span();
            let mut table = phase.into_inner();
            // A phase's tasks are read even when the phase's own keys cannot be.
            let tasks = tasks_of(index, table.remove("task"), problem);
            index += 1;
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
    raw
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each task's id, plugin and input with their spans, and its config and limits, as read.
    fn tasks(raw: &RawPipeline) -> Vec<String> {
        raw.phases
            .iter()
            .flat_map(|p| match p {
                Part::Read(p) => &p.tasks[..],
                Part::Unreadable { .. } => &[],
            })
            .map(|t| match t {
                Part::Read(t) => format!(
                    "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                    t.id.span(),
                    t.id.get_ref(),
                    t.plugin.span(),
                    t.input.as_ref().map(|i| (i.span(), i.get_ref().clone())),
                    t.config.as_ref().map(|c| c.span()),
                    t.config_json.lock().map(|c| c.clone()).ok(),
                    t.limits,
                    t.reuse.as_ref().map(|r| (r.span(), *r.get_ref())),
                    t.grants,
                ),
                Part::Unreadable { .. } => "unreadable".into(),
            })
            .collect()
    }

    #[test]
    fn a_plain_pipeline_is_read_table_by_table_with_the_spans_of_the_whole_document() {
        let source = r#"name = "p"
[[phase]]
id = "a"
[[phase.task]]
id = "x"
plugin = "x.wasm"
input = "{{ vars.who }}"
config = { n = 1, label = "task", when = 1979-05-27T07:32:00Z }
[[phase.task]]
id = "y"
plugin = "y.wasm"
reuse = 4
[phase.task.limits]
memory = "1MiB"
[phase.task.grants]
env = ["HOME"]
[phase.gate]
plugin = "g.wasm"
[[phase]]
id = "b"
[[phase.task]]
id = "z"
plugin = "z.wasm"
input = """
{{ phases.a.tasks.x.output }}"""
"#;
        let split = read_split(source).expect("read table by table");
        let mut problems = Vec::new();
        let whole = read_whole(source, &mut |p| problems.push(p.message)).expect("read");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(tasks(&split).len(), 3);
        assert_eq!(tasks(&split), tasks(&whole));
        let phases = |raw: &RawPipeline| -> Vec<String> {
            raw.phases
                .iter()
                .map(|p| match p {
                    Part::Read(p) => format!("{:?} {:?}", p.id, p.gate.as_ref().map(|g| &g.plugin)),
                    Part::Unreadable { .. } => "unreadable".into(),
                })
                .collect()
        };
        assert_eq!(phases(&split), phases(&whole));
    }

    #[test]
    fn many_tables_read_on_several_threads_keep_their_order_and_spans() {
        let mut source = String::from("name = \"p\"\n");
        // Large enough to be scanned in parts, one per core (each reading its tables); a phase
        // twice the first's and a few tasks at the end: the parts then cut the second phase,
        // whose runs are joined.
        let (a, b) = (3_000, 6_000);
        for (phase, count) in [("a", a), ("b", b), ("c", 7)] {
            source.push_str(&format!("[[phase]]\nid = \"{phase}\"\n"));
            for i in 0..count {
                source.push_str(&format!(
                    "[[phase.task]]\nid = \"{phase}{i}\"\nplugin = \"x.wasm\"\nconfig = {{ n = {i} }}\n"
                ));
                if i % 97 == 0 {
                    source.push_str("[phase.task.limits]\nmemory = \"1MiB\"\n");
                }
            }
        }
        assert!(source.len() >= split::PARALLEL_SCAN);
        let split = read_split(&source).expect("read table by table");
        let whole = read_whole(&source, &mut |p| panic!("{}", p.message)).expect("read");
        let counts = |raw: &RawPipeline| -> Vec<usize> {
            raw.phases
                .iter()
                .map(|p| match p {
                    Part::Read(p) => p.tasks.len(),
                    Part::Unreadable { .. } => 0,
                })
                .collect()
        };
        assert_eq!(counts(&split), [a, b, 7]);
        assert_eq!(counts(&split), counts(&whole));
        let (split, whole) = (tasks(&split), tasks(&whole));
        assert_eq!(split.len(), a + b + 7);
        assert_eq!(split, whole);
        // A problem in the last table, read by another thread: the whole document says it.
        source.push_str("memroy = 1\n");
        assert!(read_split(&source).is_none());
    }

    #[test]
    fn a_task_that_does_not_read_cleanly_is_read_again_with_the_whole_document() {
        let source = "name = \"p\"\n[[phase]]\nid = \"a\"\n[[phase.task]]\nid = \"x\"\nplugin = \"x.wasm\"\nmemroy = 1\n";
        assert!(read_split(source).is_none());
        let mut problems = Vec::new();
        read(source, &mut |p| problems.push((p.message, p.span)));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].0.contains("unknown field `memroy`"),
            "{problems:?}"
        );
        let at = source.find("memroy").unwrap();
        assert_eq!(problems[0].1, Some(at..at + "memroy".len()));
    }
}
