//! `{{name}}`: a phasegate task. Counts the words of its input text.
//!
//! Config: `min-words` (default 1) — fewer words than that is an invalid input.

use phasegate_plugin_sdk::{Error, Request, Result, Task, log};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    min_words: Option<usize>,
}

#[derive(Serialize)]
struct Output {
    words: usize,
    chars: usize,
    language: &'static str,
}

struct Plugin;

impl Task for Plugin {
    type Input = String;
    type Config = Config;
    type Output = Output;

    /// JSON Schema of `Config`: `phasegate validate` checks the pipeline's `config` against it.
    fn config_schema() -> Option<String> {
        Some(r#"{"type": "object", "properties": {"min-words": {"type": "integer", "minimum": 0}}, "additionalProperties": false}"#.into())
    }

    fn run(req: Request<String, Config>) -> Result<Output> {
        let words = req.input.split_whitespace().count();
        let min = req.config.min_words.unwrap_or(1);
        if words < min {
            return Err(Error::invalid_input(format!(
                "the input has {words} word(s), fewer than min-words = {min}"
            )));
        }
        log::info(&format!("{words} word(s) in task `{}`", req.task));
        Ok(Output {
            words,
            chars: req.input.chars().count(),
            language: "rust",
        })
    }
}

phasegate_plugin_sdk::export_task!(Plugin);
