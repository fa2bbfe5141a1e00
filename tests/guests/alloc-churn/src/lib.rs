//! Exercises the SDK's allocator (its bump region, then the standard allocator) the way real
//! plugins do: blocks of random sizes are allocated, grown, shrunk and freed in random order,
//! each filled with its own byte and checked before it goes. Any block that reads back wrong
//! fails the task. The output says how much of the region was used and whether the instance's
//! memory grew, so a test can tell a task that stayed in the region from one that left it.

use phasegate_plugin_sdk::{Error, Request, Result, Task};
use serde::Deserialize;
use serde_json::{Value, json};

struct Churn;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Operations to perform.
    rounds: u32,
    /// Largest block, in bytes.
    max: usize,
    /// Seed of the operations' random sequence.
    #[serde(default = "seed")]
    seed: u64,
}

fn seed() -> u64 {
    0x9E37_79B9_7F4A_7C15
}

/// A block and the byte every one of its bytes must hold.
struct Block {
    bytes: Vec<u8>,
    fill: u8,
}

impl Block {
    fn check(&self) -> std::result::Result<(), String> {
        match self.bytes.iter().position(|&b| b != self.fill) {
            None => Ok(()),
            Some(at) => Err(format!(
                "byte {at} of a {}-byte block reads {} instead of {}",
                self.bytes.len(),
                self.bytes[at],
                self.fill
            )),
        }
    }
}

fn memory_pages() -> usize {
    #[cfg(target_family = "wasm")]
    return core::arch::wasm32::memory_size(0);
    #[allow(unreachable_code)]
    0
}

impl Task for Churn {
    type Input = Value;
    type Config = Config;
    type Output = Value;

    fn run(req: Request<Value, Config>) -> Result<Value> {
        let pages_before = memory_pages();
        let Config { rounds, max, seed } = req.config;
        if max == 0 {
            return Err(Error::InvalidConfig("`max` must be at least 1".into()));
        }
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut live: Vec<Block> = Vec::new();
        let (mut checked, mut peak_region) = (0usize, 0usize);
        for round in 0..rounds {
            let fill = (round % 251) as u8 + 1;
            let size = 1 + (next() as usize) % max;
            match next() % 5 {
                // New blocks, twice as often as anything else.
                0 | 1 => live.push(Block {
                    bytes: vec![fill; size],
                    fill,
                }),
                // Grow a block (in place when it is the region's last one).
                2 if !live.is_empty() => {
                    let i = (next() as usize) % live.len();
                    let block = &mut live[i];
                    block.check().map_err(Error::Failed)?;
                    block.bytes.iter_mut().for_each(|b| *b = fill);
                    block.bytes.resize(block.bytes.len() + size, fill);
                    block.fill = fill;
                }
                // Shrink a block.
                3 if !live.is_empty() => {
                    let i = (next() as usize) % live.len();
                    let block = &mut live[i];
                    block.check().map_err(Error::Failed)?;
                    let keep = block.bytes.len() / 2;
                    block.bytes.truncate(keep);
                    block.bytes.shrink_to_fit();
                }
                // Free a block, not necessarily the newest.
                _ if !live.is_empty() => {
                    let i = (next() as usize) % live.len();
                    let block = live.swap_remove(i);
                    block.check().map_err(Error::Failed)?;
                    checked += block.bytes.len();
                }
                _ => {}
            }
            peak_region = peak_region.max(phasegate_plugin_sdk::arena::region_used().unwrap_or(0));
        }
        for block in &live {
            block.check().map_err(Error::Failed)?;
            checked += block.bytes.len();
        }
        Ok(json!({
            "checked": checked,
            "live": live.len(),
            "peak-region": peak_region,
            "region-size": phasegate_plugin_sdk::arena::SIZE,
            "memory-grew": memory_pages() > pages_before,
        }))
    }
}

phasegate_plugin_sdk::export_task!(Churn);
