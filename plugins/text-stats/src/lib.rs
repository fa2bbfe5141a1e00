//! `text-stats`: counts lines, words and characters of the input text and lists the most
//! frequent words.
//!
//! Config: `top = 5` (how many frequent words to list), `min-length = 4` (ignore shorter words).

use std::collections::BTreeMap;

use phasegate_plugin_sdk::{Request, Result, Task};
use serde::{Deserialize, Serialize};

struct TextStats;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    #[serde(default = "default_top")]
    top: usize,
    #[serde(default = "default_min_length")]
    min_length: usize,
}

fn default_top() -> usize {
    5
}
fn default_min_length() -> usize {
    4
}

#[derive(Serialize)]
struct Stats {
    lines: usize,
    words: usize,
    chars: usize,
    top_words: Vec<WordCount>,
}

#[derive(Serialize)]
struct WordCount {
    word: String,
    count: usize,
}

impl Task for TextStats {
    type Input = String;
    type Config = Config;
    type Output = Stats;

    fn run(req: Request<String, Config>) -> Result<Stats> {
        let text = req.input;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut words = 0;
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            words += 1;
            if word.chars().count() >= req.config.min_length {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
        }
        let mut ranked: Vec<_> = counts.into_iter().collect();
        // Most frequent first; ties alphabetically so the output is deterministic.
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(req.config.top);
        phasegate_plugin_sdk::log::debug(&format!("{words} words counted"));
        Ok(Stats {
            lines: text.lines().count(),
            words,
            chars: text.chars().count(),
            top_words: ranked
                .into_iter()
                .map(|(word, count)| WordCount { word, count })
                .collect(),
        })
    }
}

phasegate_plugin_sdk::export_task!(TextStats);
