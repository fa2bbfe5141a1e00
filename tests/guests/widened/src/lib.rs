//! A plugin's "next version" for the plugin-store tests: returns how many bytes `/data/input`
//! holds (0 when it cannot read it). Reading a file makes it import `wasi:filesystem`, so its
//! capability surface is wider than the noop task's.

use phasegate_plugin_sdk::{Request, Result, Task};
use serde_json::{Value, json};

struct Widened;

impl Task for Widened {
    type Input = Value;
    type Config = Value;
    type Output = Value;

    fn run(_: Request<Value, Value>) -> Result<Value> {
        let bytes = std::fs::read("/data/input").map(|b| b.len()).unwrap_or(0);
        Ok(json!({ "bytes": bytes }))
    }
}

phasegate_plugin_sdk::export_task!(Widened);
