//! The wasmtime engine's configuration: epochs, fuel, the stack, bounds checks, and the
//! instance pool with its memory reset strategy.

use std::time::Duration;

use phasegate_model::pipeline::{BoundsChecks, EngineLimits, MAX_TABLE_ELEMENTS};
use wasmtime::{Config, Engine};

/// How often the epoch advances: the granularity of timeouts and of yielding to other tasks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Pipelines with more live instances than this use on-demand allocation instead of a pool.
pub const MAX_POOLED_INSTANCES: usize = 2_000;

/// How the instance pool gives a finished instance's linear memory back for the next one.
///
/// Every instance starts from its component's pristine memory image whatever the strategy:
/// nothing a task wrote is ever seen by another task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryReset {
    /// Bytes at the start of each memory slot that stay resident between instances and are
    /// restored in place (copied back from the image, or zeroed) instead of being returned to
    /// the kernel and faulted in again by the next instance.
    pub keep_resident: usize,
    /// Find the pages an instance actually dirtied with Linux's `PAGEMAP_SCAN` (6.7+) and restore
    /// only those, so a large `keep_resident` costs nothing for instances that touch little. (The
    /// scan is wasmtime 50's, vendored into 48: it finds every dirty page up to `keep_resident`,
    /// swapped out or not, however scattered; see vendor/README.md.)
    /// Without it wasmtime would restore the whole resident prefix after every instance, so
    /// where the kernel is older [`MemoryReset::effective`] falls back to [`MemoryReset::DECOMMIT`].
    pub pagemap_scan: bool,
}

impl MemoryReset {
    /// phasegate's default: up to 32 MiB of each slot stays resident and only dirtied pages are
    /// restored. Interpreter-based plugins (Python, JavaScript) write to tens of MiB of their
    /// pre-initialised heap on every call; returning those pages to the kernel and faulting them
    /// back in dominated their per-task cost. 32 MiB covers the templates' working sets while
    /// bounding what an idle pool slot can hold.
    pub const RESIDENT: MemoryReset = MemoryReset {
        keep_resident: 32 << 20,
        pagemap_scan: true,
    };
    /// Keep 64 KiB resident and return the rest to the kernel with `madvise` after every
    /// instance: the fallback where the kernel lacks `PAGEMAP_SCAN`, and the benchmark's
    /// baseline for [`MemoryReset::RESIDENT`].
    pub const DECOMMIT: MemoryReset = MemoryReset {
        keep_resident: 1 << 16,
        pagemap_scan: false,
    };

    /// Sets this strategy (or, where the kernel lacks `PAGEMAP_SCAN`, [`MemoryReset::DECOMMIT`])
    /// on a pool configuration.
    pub fn apply(self, pool: &mut wasmtime::PoolingAllocationConfig) {
        let reset = self.effective();
        pool.linear_memory_keep_resident(reset.keep_resident)
            .pagemap_scan(if reset.pagemap_scan {
                wasmtime::Enabled::Auto
            } else {
                wasmtime::Enabled::No
            });
    }

    /// This strategy where the kernel supports it, else [`MemoryReset::DECOMMIT`].
    pub fn effective(self) -> MemoryReset {
        if self.pagemap_scan && !pagemap_scan_available() {
            MemoryReset::DECOMMIT
        } else {
            self
        }
    }
}

/// Whether the running kernel has `PAGEMAP_SCAN` (Linux 6.7 and later).
fn pagemap_scan_available() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// The engine configuration for `limits`: epoch interruption (always: every task has a
/// timeout), fuel metering when some plugin has a budget, the stack, the bounds-check mode, and
/// the instance pool with its memory `reset` strategy.
pub fn config(limits: &EngineLimits, reset: MemoryReset) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(limits.fuel);
    let stack = usize::try_from(limits.max_stack.0).unwrap_or(usize::MAX);
    config.max_wasm_stack(stack);
    // The fiber running the guest must hold the whole Wasm stack plus host frames.
    config.async_stack_size(stack.saturating_add(1 << 20));
    bounds_checks(&mut config, limits.bounds_checks);
    // Beyond a few thousand live instances the pool's address-space reservation gets large;
    // such pipelines use on-demand allocation.
    if limits.max_instances <= MAX_POOLED_INSTANCES {
        config.allocation_strategy(pool(limits, reset));
    }
    config
}

/// Sets how compiled code confines memory accesses (see [`BoundsChecks`]).
pub fn bounds_checks(config: &mut Config, mode: BoundsChecks) {
    if mode == BoundsChecks::Explicit {
        // Bounds checked in code and no guard region, so no page protection changes between
        // instances (wasmtime then also turns its Spectre mitigations off).
        config.signals_based_traps(false);
        config.memory_guard_size(0);
    }
}

/// The instance pool: slots for every instance that can be alive at once (twice over, so freed
/// slots need not be reused at once). Pooling makes instantiation a few microseconds (no mmap per
/// instance). Memory slots reserve (not commit) the whole 4 GiB a 32-bit memory can address, so
/// the pool itself never refuses a plugin: per-plugin `memory` limits are the store limiter's
/// job, which names the limit and the key to raise.
pub fn pool(limits: &EngineLimits, reset: MemoryReset) -> wasmtime::PoolingAllocationConfig {
    let instances =
        u32::try_from(limits.max_instances.saturating_mul(2).saturating_add(8)).unwrap_or(u32::MAX);
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_stacks(instances)
        .total_core_instances(instances.saturating_mul(20))
        .total_memories(instances.saturating_mul(4))
        .total_tables(instances.saturating_mul(4))
        .max_core_instances_per_component(200)
        .max_memories_per_component(20)
        .max_tables_per_component(40)
        .table_elements(usize::try_from(MAX_TABLE_ELEMENTS).unwrap_or(usize::MAX))
        .max_memory_size(1 << 32)
        // Return memory to the OS in batches, and keep the first pages of each slot resident:
        // fewer madvise calls (and cross-core TLB shootdowns) per instantiation.
        .decommit_batch_size(64)
        .table_keep_resident(1 << 16)
        .async_stack_keep_resident(1 << 16);
    reset.apply(&mut pool);
    pool
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own, until the engine
/// is dropped.
pub(crate) fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("phasegate-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .ok();
}
