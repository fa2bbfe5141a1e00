//! Resource limits enforced on one plugin instance: linear memory, table elements, and the
//! number of core instances, tables and memories.

use wasmtime::ResourceLimiter;

use phasegate_model::pipeline::Limits;

/// Which limit an instance hit (recorded so the error names it precisely).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitHit {
    /// Linear memory would grow past `limits.memory`.
    Memory { limit: u64, requested: u64 },
    /// A table would grow past `limits.table-elements`.
    TableElements { limit: u64, requested: u64 },
}

/// The error that traps the guest when a limit is hit.
#[derive(Debug, thiserror::Error)]
#[error("resource limit exceeded: {0:?}")]
pub struct LimitExceeded(pub LimitHit);

/// A [`ResourceLimiter`] that remembers what it refused.
#[derive(Debug)]
pub struct Limiter {
    memory: usize,
    table_elements: usize,
    instances: usize,
    /// The first limit hit, if any.
    pub hit: Option<LimitHit>,
    /// Linear memory granted so far, bytes, over all memories (they never shrink): the
    /// instance's peak.
    pub memory_bytes: u64,
}

impl Limiter {
    /// A limiter enforcing `limits`' memory, table and instance caps.
    pub fn new(limits: &Limits) -> Self {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Limiter {
            memory: size(limits.memory.0),
            table_elements: size(limits.table_elements),
            instances: size(limits.instances),
            hit: None,
            memory_bytes: 0,
        }
    }

    fn refuse(&mut self, hit: LimitHit) -> wasmtime::Result<bool> {
        self.hit.get_or_insert(hit);
        Err(LimitExceeded(hit).into())
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            return self.refuse(LimitHit::Memory {
                limit: self.memory as u64,
                requested: desired as u64,
            });
        }
        self.memory_bytes = self
            .memory_bytes
            .saturating_add(desired.saturating_sub(current) as u64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return self.refuse(LimitHit::TableElements {
                limit: self.table_elements as u64,
                requested: desired as u64,
            });
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    // A component's core instances each bring a few tables and memories at most.
    fn tables(&self) -> usize {
        self.instances.saturating_mul(10)
    }

    fn memories(&self) -> usize {
        self.instances.saturating_mul(10)
    }
}
