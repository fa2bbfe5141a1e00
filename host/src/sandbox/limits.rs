//! Resource limits enforced on one plugin instance.

use wasmtime::ResourceLimiter;

/// Which limit an instance hit (recorded so the error names it precisely).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    /// Linear memory would grow past the limit.
    Memory { limit: u64, requested: u64 },
    /// A table would grow past [`MAX_TABLE_ELEMENTS`].
    TableElements { limit: u64, requested: u64 },
}

/// Table elements per table. Generous for real programs (function tables are a few thousand
/// entries), small enough that a table bomb costs at most a few MiB.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The error that traps the guest when a limit is hit.
#[derive(Debug, thiserror::Error)]
#[error("resource limit exceeded: {0:?}")]
pub struct LimitExceeded(pub LimitHit);

/// A [`ResourceLimiter`] that remembers what it refused.
#[derive(Debug)]
pub struct Limiter {
    memory: usize,
    /// The first limit hit, if any.
    pub hit: Option<LimitHit>,
}

impl Limiter {
    /// A limiter allowing `memory` bytes of linear memory per memory.
    pub fn new(memory: u64) -> Self {
        Limiter {
            memory: usize::try_from(memory).unwrap_or(usize::MAX),
            hit: None,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            let hit = LimitHit::Memory {
                limit: self.memory as u64,
                requested: desired as u64,
            };
            self.hit.get_or_insert(hit);
            return Err(LimitExceeded(hit).into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            let hit = LimitHit::TableElements {
                limit: MAX_TABLE_ELEMENTS as u64,
                requested: desired as u64,
            };
            self.hit.get_or_insert(hit);
            return Err(LimitExceeded(hit).into());
        }
        Ok(true)
    }
}
