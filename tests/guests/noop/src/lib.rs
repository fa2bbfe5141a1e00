//! The smallest useful task: returns `{}`. Built for `wasm32-unknown-unknown`, so the component
//! imports nothing but `phasegate:plugin/host` — the benchmark's unit of orchestration cost.
//! `noop-wasi` builds this same file for `wasm32-wasip2`, where Rust's standard library makes
//! it import `wasi:cli` and `wasi:io`, as every Rust-std plugin does: what those imports cost a
//! task is the difference between the two.

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
