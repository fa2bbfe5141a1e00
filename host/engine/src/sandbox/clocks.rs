//! Clocks and randomness: the host's by default; fixed and seeded when `deterministic = true`,
//! so that a plugin that reads the time or draws random numbers gives the same output each run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// The wall-clock time a deterministic plugin sees: 2000-01-01T00:00:00Z.
pub const FIXED_WALL_CLOCK: Duration = Duration::from_secs(946_684_800);

struct FixedWall;

impl HostWallClock for FixedWall {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        FIXED_WALL_CLOCK
    }
}

/// Advances by one microsecond per reading: time still moves forward (loops that wait for it
/// end) but the same program sees the same values.
#[derive(Default)]
struct CountingMonotonic(AtomicU64);

impl HostMonotonicClock for CountingMonotonic {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

/// Makes clocks and random deterministic.
pub fn deterministic(builder: &mut WasiCtxBuilder, seed: u64) {
    builder.wall_clock(FixedWall);
    builder.monotonic_clock(CountingMonotonic::default());
    builder.secure_random(rand::rngs::StdRng::seed_from_u64(seed));
    builder.insecure_random(rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(1)));
    builder.insecure_random_seed(u128::from(seed));
}
