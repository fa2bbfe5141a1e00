//! `json-reshape`: builds a new JSON object from fields of the JSON input.
//!
//! Config: `fields`, a table of output name → selector. A selector is a JSON pointer
//! (`"/stats/words"`), optionally followed by `| length`, `| sum`, `| keys` or `| count`:
//!
//! ```toml
//! config = { fields = { words = "/stats/words", files = "/found/matches | length" } }
//! ```
//!
//! A pointer that selects nothing is an error (`invalid-input`) unless `missing = "null"`.

use std::collections::BTreeMap;

use phasegate_plugin_sdk::{Error, Request, Result, Task};
use serde::Deserialize;
use serde_json::{Map, Value};

struct JsonReshape;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    fields: BTreeMap<String, String>,
    #[serde(default)]
    missing: Missing,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Missing {
    #[default]
    Error,
    Null,
}

impl Task for JsonReshape {
    type Input = Value;
    type Config = Config;
    type Output = Value;

    fn run(req: Request<Value, Config>) -> Result<Value> {
        let mut out = Map::new();
        for (name, selector) in &req.config.fields {
            let (pointer, op) = match selector.split_once('|') {
                Some((p, op)) => (p.trim(), Some(op.trim())),
                None => (selector.trim(), None),
            };
            let Some(value) = req.input.pointer(pointer) else {
                if req.config.missing == Missing::Null {
                    out.insert(name.clone(), Value::Null);
                    continue;
                }
                return Err(Error::invalid_input(format!(
                    "field `{name}`: `{pointer}` selects nothing in the input"
                )));
            };
            let value = match op {
                None => value.clone(),
                Some(op) => apply(op, value)
                    .map_err(|e| Error::invalid_input(format!("field `{name}`: {e}")))?,
            };
            out.insert(name.clone(), value);
        }
        Ok(Value::Object(out))
    }
}

fn apply(op: &str, value: &Value) -> std::result::Result<Value, String> {
    match (op, value) {
        ("length" | "count", Value::Array(a)) => Ok(a.len().into()),
        ("length" | "count", Value::Object(o)) => Ok(o.len().into()),
        ("length", Value::String(s)) => Ok(s.chars().count().into()),
        ("keys", Value::Object(o)) => Ok(o.keys().cloned().collect::<Vec<_>>().into()),
        ("sum", Value::Array(a)) => {
            let nums: Option<Vec<f64>> = a.iter().map(Value::as_f64).collect();
            let total: f64 = nums.ok_or("`sum` needs an array of numbers")?.iter().sum();
            Ok(serde_json::Number::from_f64(total)
                .map(Value::Number)
                .unwrap_or(Value::Null))
        }
        (op, v) => Err(format!("cannot apply `{op}` to {}", kind(v))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

phasegate_plugin_sdk::export_task!(JsonReshape);
