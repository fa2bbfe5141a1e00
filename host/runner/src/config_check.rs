//! Each task's and gate's `config` checked against the JSON Schema its plugin publishes
//! (`config-schema` in its metadata), at `validate` and before a run: a misspelt key or a
//! string where a number belongs is found before anything runs, named at its line of the
//! pipeline file, with the keys the plugin takes.

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;

use phasegate_model::error::Problem;
use phasegate_model::pipeline::{Pipeline, PluginRef};
use phasegate_model::suggest::did_you_mean;

/// A plugin's published config schema, compiled.
pub struct ConfigSchema {
    validator: jsonschema::Validator,
    /// The top-level keys the schema names, with their types where it says (`key (type)`).
    keys: Vec<(String, Option<String>)>,
}

impl ConfigSchema {
    /// Compiles the schema a plugin publishes; an error says what is wrong with it.
    pub fn compile(text: &str) -> Result<Self, String> {
        let schema: Value = serde_json::from_str(text)
            .map_err(|e| format!("its config-schema is not JSON: {e}"))?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("its config-schema is not a valid JSON Schema: {e}"))?;
        let keys = schema["properties"]
            .as_object()
            .map(|props| props.iter().map(|(k, v)| (k.clone(), type_of(v))).collect())
            .unwrap_or_default();
        Ok(ConfigSchema { validator, keys })
    }

    /// The keys the schema names, as a person reads them: `` `threshold` (number), `field` ``.
    pub fn keys(&self) -> String {
        if self.keys.is_empty() {
            return "(the schema names no keys)".into();
        }
        self.keys
            .iter()
            .map(|(k, t)| match t {
                Some(t) => format!("`{k}` ({t})"),
                None => format!("`{k}`"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What is wrong with `config`, one line each (none: it matches).
    fn problems(&self, config: &Value) -> Vec<String> {
        let names: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        self.validator
            .iter_errors(config)
            .map(|e| {
                let at = e.instance_path().as_str();
                let place = if at.is_empty() {
                    String::new()
                } else {
                    format!("at `{}`: ", at.trim_start_matches('/'))
                };
                match e.kind() {
                    ValidationErrorKind::AdditionalProperties { unexpected } if at.is_empty() => {
                        unexpected
                            .iter()
                            .map(|k| {
                                format!(
                                    "unknown key `{k}`{}",
                                    did_you_mean(k, names.iter().copied())
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    }
                    _ => format!("{place}{e}"),
                }
            })
            .collect()
    }
}

fn type_of(schema: &Value) -> Option<String> {
    match &schema["type"] {
        Value::String(t) => Some(t.clone()),
        Value::Array(ts) => Some(
            ts.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
        ),
        _ => None,
    }
}

/// Checks every task's and gate's `config` against its plugin's schema (`schema_of`: none for a
/// plugin that publishes none, whose config is the plugin's own to check). Each problem names
/// the file, the line, the task or gate and the plugin, and lists the keys the plugin takes.
pub fn check<'a>(
    pipeline: &Pipeline,
    schema_of: impl Fn(&PluginRef) -> Option<&'a ConfigSchema>,
) -> Vec<Problem> {
    let file = pipeline.path.display();
    let mut problems = Vec::new();
    let mut check_one = |who: String, plugin: &PluginRef, config: &Value, line: usize| {
        let Some(schema) = schema_of(plugin) else {
            return;
        };
        let found = schema.problems(config);
        if found.is_empty() {
            return;
        }
        let names: Vec<&str> = found.iter().map(String::as_str).collect();
        problems.push(
            Problem::new(format!(
                "{file}:{line}: the `config` of {who} does not match what plugin `{}` accepts: {}",
                plugin.spec,
                names.join("; ")
            ))
            .help(format!(
                "it takes {}; `phasegate plugin inspect` shows its schema",
                schema.keys()
            )),
        );
    };
    for phase in &pipeline.phases {
        for t in &phase.tasks {
            check_one(
                format!("task `{}` in phase `{}`", t.id, phase.id),
                &t.plugin,
                &t.config,
                t.config_line,
            );
        }
        for g in &phase.gates {
            check_one(
                if phase.gates.len() > 1 {
                    format!("gate `{}` of phase `{}`", g.plugin.spec, phase.id)
                } else {
                    format!("the gate of phase `{}`", phase.id)
                },
                &g.plugin,
                &g.config,
                g.config_line,
            );
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::ConfigSchema;
    use serde_json::json;

    #[test]
    fn a_config_is_checked_with_keys_suggested_and_places_named() {
        let schema = ConfigSchema::compile(
            r#"{"type": "object", "additionalProperties": false,
                "properties": {"threshold": {"type": "number"}, "field": {"type": "string"}},
                "required": ["field"]}"#,
        )
        .unwrap();
        assert_eq!(schema.keys(), "`field` (string), `threshold` (number)");
        assert!(
            schema
                .problems(&json!({"field": "/n", "threshold": 3}))
                .is_empty()
        );
        let found = schema.problems(&json!({"field": "/n", "treshold": 3}));
        assert_eq!(
            found,
            ["unknown key `treshold` (did you mean `threshold`?)"]
        );
        let found = schema.problems(&json!({"field": "/n", "threshold": "3"}));
        assert_eq!(found.len(), 1);
        assert!(found[0].starts_with("at `threshold`: "), "{found:?}");
        assert!(
            found[0].contains("\"3\" is not of type \"number\""),
            "{found:?}"
        );
        assert!(ConfigSchema::compile("{").is_err());
        assert!(ConfigSchema::compile(r#"{"type": 12}"#).is_err());
    }
}
