//! The noop task built for `wasm32-wasip2`: returns `{}` and imports what Rust's standard
//! library imports there (`wasi:cli`, `wasi:io`, `wasi:clocks`, `wasi:random`, `wasi:filesystem`),
//! as every Rust, Python, JavaScript and C plugin does. The benchmark measures what those imports
//! cost a task against `noop`, which imports none.

use phasegate_plugin_sdk::{Request, Result, Task};
use serde_json::Value;

struct NoopWasi;

impl Task for NoopWasi {
    type Input = Value;
    type Config = Value;
    type Output = Value;

    fn run(_: Request<Value, Value>) -> Result<Value> {
        Ok(Value::Object(Default::default()))
    }
}

phasegate_plugin_sdk::export_task!(NoopWasi);
