//! A test task whose module declares 96 MiB of initial linear memory (a zeroed static array):
//! instantiating it must fail against a smaller memory limit.

use std::hint::black_box;

use phasegate_plugin_sdk::{Request, Result, Task};
use serde_json::{Value, json};

struct BigMemory;

static mut BIG: [u8; 96 << 20] = [0; 96 << 20];

impl Task for BigMemory {
    type Input = Value;
    type Config = Value;
    type Output = Value;

    fn run(_: Request<Value, Value>) -> Result<Value> {
        #[allow(
            static_mut_refs,
            unsafe_code,
            reason = "a test program that wants a huge static"
        )]
        let big = unsafe { black_box(&mut BIG) };
        big[black_box(12345)] = 1;
        Ok(json!(big[12345]))
    }
}

phasegate_plugin_sdk::export_task!(BigMemory);
