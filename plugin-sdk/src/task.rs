//! Tasks: the [`Task`] trait, the request a task is given, its errors, and the glue the
//! `export_task!` macro calls.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Context, metadata, parse_input, parse_json, types};

/// The result type of a task.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a task did not produce output.
///
/// Any `std::error::Error` converts into [`Error::Failed`], so `?` works on I/O and parse
/// errors. The host retries `Failed` (up to the task's `retries`) and never retries the others.
#[derive(Debug)]
pub enum Error {
    /// The work failed; worth retrying.
    Failed(String),
    /// The input is not acceptable; retrying cannot help.
    InvalidInput(String),
    /// The config is not acceptable; retrying cannot help.
    InvalidConfig(String),
}

impl Error {
    /// A retryable failure with a message.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }
    /// An input the task cannot accept.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }
    /// A config the task cannot accept.
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Error::InvalidConfig(message.into())
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::Failed(error.to_string())
    }
}

impl From<Error> for types::TaskError {
    fn from(error: Error) -> Self {
        match error {
            Error::Failed(m) => types::TaskError::Failed(m),
            Error::InvalidInput(m) => types::TaskError::InvalidInput(m),
            Error::InvalidConfig(m) => types::TaskError::InvalidConfig(m),
        }
    }
}

/// One attempt of a task, with its input and config parsed into the plugin's types.
#[derive(Debug, Clone)]
pub struct Request<I, C> {
    /// Identifier of the run (stable across resume).
    pub run_id: String,
    /// Phase id.
    pub phase: String,
    /// Task id.
    pub task: String,
    /// 1 for the first attempt, 2 for the first retry...
    pub attempt: u32,
    /// The rendered input, parsed (see [`Task::Input`]).
    pub input: I,
    /// The rendered input exactly as the host sent it.
    pub raw_input: String,
    /// The context: `{"run": .., "pipeline": .., "vars": .., "phases": {id: {"tasks": {..}}}}`
    /// when the pipeline grants this task `grants = { context = true }`; otherwise only
    /// `{"run": {"id"}, "pipeline": {"name"}}` (pass what the task needs through its `input`
    /// template instead). Parsed when first read (see [`Context`]).
    pub context: Context,
    /// The task's config table.
    pub config: C,
}

/// A task plugin. Implement it and call [`export_task!`].
pub trait Task {
    /// The rendered input. Parsed as JSON when the text is JSON of this type; otherwise the raw
    /// text is offered as a JSON string, so `String` receives any input verbatim.
    type Input: DeserializeOwned;
    /// The `config` table (an empty table when the pipeline gives none).
    type Config: DeserializeOwned;
    /// What the task returns; serialised to JSON.
    type Output: Serialize;

    /// JSON Schema of `Config`, shown by `phasegate validate`. None by default.
    fn config_schema() -> Option<String> {
        None
    }

    /// Runs one attempt.
    fn run(request: Request<Self::Input, Self::Config>) -> Result<Self::Output>;
}
#[doc(hidden)]
pub fn __task_metadata<T: Task>(
    name: &str,
    version: &str,
    description: &str,
) -> types::PluginMetadata {
    metadata(
        types::PluginKind::Task,
        name,
        version,
        description,
        T::config_schema(),
    )
}

#[doc(hidden)]
pub fn __run_task<T: Task>(
    req: types::TaskRequest,
) -> std::result::Result<String, types::TaskError> {
    let input = parse_input::<T::Input>(&req.input)
        .map_err(|e| types::TaskError::InvalidInput(format!("cannot read input: {e}")))?;
    let config = parse_json::<T::Config>(&req.config)
        .map_err(|e| types::TaskError::InvalidConfig(format!("cannot read config: {e}")))?;
    let context = Context::new(req.context);
    let request = Request {
        run_id: req.run_id,
        phase: req.phase,
        task: req.task,
        attempt: req.attempt,
        input,
        raw_input: req.input,
        context,
        config,
    };
    let output = T::run(request).map_err(types::TaskError::from)?;
    serde_json::to_string(&output)
        .map_err(|e| types::TaskError::Failed(format!("cannot serialise output: {e}")))
}
