//! Test task whose behaviour is set by its config, so one small real component covers the
//! runner's cases. Every invocation logs `invoked <phase>/<task> attempt <n>` at info level,
//! which the tests count.
//!
//! Config keys (all optional):
//! - `sleep-ms`: sleep this long (through WASI clocks, so the host can run others meanwhile)
//! - `fail-until-attempt`: fail with a retryable error while `attempt` is below this number
//! - `fail`: always fail with this message
//! - `invalid-input`: always return an invalid-input error with this message
//! - `output`: return this JSON value instead of the default echo
//! - `echo-context`: return `{"context": <the context it was given>}`
//! - `context-digest`: return `{"outputs-bytes": <length>, "outputs-fnv": <FNV-1a 64>}` of the
//!   JSON texts of every task output in the context, in order (what a large context holds, the
//!   same in every run, without sending it back)
//! - `trap`: panic (a trap in the host's eyes)
//! - `spin`: burn this many iterations of pure arithmetic first (a CPU-bound guest) and
//!   return `{"spin": <checksum>}`
//! - `churn`: this many pseudo-random read-modify-writes over a 4 MiB table in linear memory
//!   (a memory-bound guest: every access is a bounds-checked load or store), returning
//!   `{"churn": <checksum>}`
//! - `count`: return `{"served": <calls this instance has had, this one included>}` (1 on a
//!   fresh instance; more when a pipeline lets instances serve several tasks, `reuse`)
//!
//! Default output: `{"task": .., "phase": .., "attempt": .., "input": <input>}` where input is
//! parsed JSON when it is JSON, else the text.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use phasegate_plugin_sdk::bindings::task::phasegate::plugin::host;
use phasegate_plugin_sdk::{Error, Request, Result, Task, log};
use serde::Deserialize;
use serde_json::{Value, json};

struct Probe;

/// Calls this instance has had (kept in its memory: one instance, one count).
static SERVED: AtomicU32 = AtomicU32::new(0);

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct Config {
    sleep_ms: u64,
    fail_until_attempt: u32,
    fail: Option<String>,
    invalid_input: Option<String>,
    output: Option<Value>,
    echo_context: bool,
    context_digest: bool,
    trap: bool,
    spin: u64,
    churn: u64,
    count: bool,
}

impl Task for Probe {
    type Input = Value;
    type Config = Config;
    type Output = Value;

    fn run(req: Request<Value, Config>) -> Result<Value> {
        log::info(&format!(
            "invoked {}/{} attempt {}",
            req.phase, req.task, req.attempt
        ));
        host::progress(0, 1, "starting");
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        let cfg = req.config;
        if cfg.spin > 0 {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..cfg.spin {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            return Ok(json!({ "spin": x }));
        }
        if cfg.churn > 0 {
            let mut table = vec![0u32; 1 << 20];
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            for _ in 0..cfg.churn {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) & (table.len() - 1);
                let j = ((x >> 32) as usize) & (table.len() - 1);
                table[i] = table[i].wrapping_add(table[j]).wrapping_add(x as u32);
            }
            let sum = table.iter().fold(0u32, |a, b| a.wrapping_add(*b));
            return Ok(json!({ "churn": sum }));
        }
        if cfg.sleep_ms > 0 {
            std::thread::sleep(Duration::from_millis(cfg.sleep_ms));
        }
        if cfg.trap {
            panic!("probe was told to trap");
        }
        if let Some(message) = cfg.invalid_input {
            return Err(Error::invalid_input(message));
        }
        if let Some(message) = cfg.fail {
            return Err(Error::failed(message));
        }
        if req.attempt < cfg.fail_until_attempt {
            return Err(Error::failed(format!(
                "attempt {} fails on purpose",
                req.attempt
            )));
        }
        host::progress(1, 1, "done");
        if cfg.count {
            return Ok(json!({ "served": served }));
        }
        if cfg.echo_context {
            return Ok(json!({ "context": req.context }));
        }
        if cfg.context_digest {
            let mut text = String::new();
            for phase in req.context["phases"]
                .as_object()
                .into_iter()
                .flat_map(|p| p.values())
            {
                for task in phase["tasks"]
                    .as_object()
                    .into_iter()
                    .flat_map(|t| t.values())
                {
                    text.push_str(&task["output"].to_string());
                }
            }
            let fnv = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            return Ok(json!({ "outputs-bytes": text.len(), "outputs-fnv": fnv.to_string() }));
        }
        Ok(cfg.output.unwrap_or_else(|| {
            json!({"phase": req.phase, "task": req.task, "attempt": req.attempt, "input": req.input})
        }))
    }
}

phasegate_plugin_sdk::export_task!(Probe);
