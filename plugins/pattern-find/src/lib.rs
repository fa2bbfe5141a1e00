//! `pattern-find`: lists the lines of the input text that match a regular expression.
//!
//! Config: `pattern` (required, regex-lite syntax), `ignore-case = false`, `max-matches = 100`.
//! Output: `{"pattern": .., "count": N, "matches": [{"line": 3, "text": ".."}]}` where `count`
//! is the number of matching lines (even past `max-matches`).

use phasegate_plugin_sdk::{Error, Request, Result, Task};
use serde::{Deserialize, Serialize};

struct PatternFind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    pattern: String,
    #[serde(default)]
    ignore_case: bool,
    #[serde(default = "default_max")]
    max_matches: usize,
}

fn default_max() -> usize {
    100
}

#[derive(Serialize)]
struct Found {
    pattern: String,
    count: usize,
    matches: Vec<Match>,
}

#[derive(Serialize)]
struct Match {
    line: usize,
    text: String,
}

impl Task for PatternFind {
    type Input = String;
    type Config = Config;
    type Output = Found;

    fn config_schema() -> Option<String> {
        Some(r#"{"type":"object","required":["pattern"],"properties":{"pattern":{"type":"string"},"ignore-case":{"type":"boolean"},"max-matches":{"type":"integer","minimum":0}},"additionalProperties":false}"#.into())
    }

    fn run(req: Request<String, Config>) -> Result<Found> {
        let cfg = req.config;
        let re = regex_lite::RegexBuilder::new(&cfg.pattern)
            .case_insensitive(cfg.ignore_case)
            .build()
            .map_err(|e| {
                Error::invalid_config(format!("`pattern` is not a valid regular expression: {e}"))
            })?;
        let mut count = 0;
        let mut matches = Vec::new();
        for (i, line) in req.input.lines().enumerate() {
            if re.is_match(line) {
                count += 1;
                if matches.len() < cfg.max_matches {
                    matches.push(Match {
                        line: i + 1,
                        text: line.trim().to_owned(),
                    });
                }
            }
        }
        Ok(Found {
            pattern: cfg.pattern,
            count,
            matches,
        })
    }
}

phasegate_plugin_sdk::export_task!(PatternFind);
