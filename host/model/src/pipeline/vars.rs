//! Values for `[vars]` given on the command line (`run --var KEY=VALUE`, `--var KEY=@FILE`):
//! they replace the declared values for one run, and the run records them so that `resume`
//! renders the same inputs.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::Pipeline;
use crate::error::Problem;
use crate::suggest::did_you_mean;

impl Pipeline {
    /// Replaces declared vars with the values given for a run. A var must be declared in
    /// `[vars]` (a misspelt `--var` is an error, not an unused value); the given text takes the
    /// declared value's type: text for a string, a number for a number, `true`/`false` for a
    /// boolean.
    pub fn set_vars(&mut self, given: &BTreeMap<String, String>) -> Result<(), Problem> {
        let declared: Vec<String> = self
            .vars
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        for (key, text) in given {
            let Some(current) = self.vars.get(key.as_str()) else {
                return Err(Problem::new(format!(
                    "--var `{key}`: {} declares no var `{key}`{}",
                    self.path.display(),
                    did_you_mean(key, declared.iter().map(String::as_str))
                ))
                .help(format!(
                    "a run sets only vars the pipeline declares; add `{key} = \"\"` to its `[vars]` table (declared now: {})",
                    crate::suggest::list(&declared.iter().map(String::as_str).collect::<Vec<_>>(), 10)
                )));
            };
            let value = typed(text, current).ok_or_else(|| {
                Problem::new(format!(
                    "--var `{key}`: `{}` is not a {}, as `{key}` is declared in {}",
                    text.chars().take(40).collect::<String>(),
                    type_name(current),
                    self.path.display()
                ))
                .help(format!(
                    "give a {} (the declared value is {current})",
                    type_name(current)
                ))
            })?;
            if let Some(map) = self.vars.as_object_mut() {
                map.insert(key.clone(), value);
            }
        }
        Ok(())
    }
}

fn typed(text: &str, declared: &Json) -> Option<Json> {
    Some(match declared {
        Json::Bool(_) => Json::Bool(text.trim().parse().ok()?),
        Json::Number(n) if n.is_f64() => {
            serde_json::Number::from_f64(text.trim().parse().ok()?)?.into()
        }
        Json::Number(_) => Json::Number(text.trim().parse::<i64>().ok()?.into()),
        _ => Json::String(text.to_owned()),
    })
}

fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Bool(_) => "boolean (true or false)",
        Json::Number(n) if n.is_f64() => "number",
        Json::Number(_) => "whole number",
        _ => "text",
    }
}
