//! The smallest useful task: returns `{}`. Built for `wasm32-unknown-unknown`, so the component
//! imports nothing but `phasegate:plugin/host` — the benchmark's unit of orchestration cost.

use phasegate_plugin_sdk::{Request, Result, Task};
use serde_json::Value;

struct Noop;

impl Task for Noop {
    type Input = Value;
    type Config = Value;
    type Output = Value;

    fn run(_: Request<Value, Value>) -> Result<Value> {
        Ok(Value::Object(Default::default()))
    }
}

phasegate_plugin_sdk::export_task!(Noop);
