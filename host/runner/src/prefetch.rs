//! A cache prefetch hint for the runner's task loop.
//!
//! A phase's task specs are read once each, a few microseconds apart, with a whole Wasm
//! instantiation and call in between that pushes them out of cache: reaching each task's spec
//! was a cache miss of its own (`perf annotate` put a quarter of the runner's per-task time on
//! that one load). Asking for the next task's spec while the current one runs takes it off the
//! critical path.

/// Asks the CPU to bring `value`'s bytes into its caches ahead of use. A hint only: it reads
/// nothing the program sees, changes no memory and cannot fault. A no-op on architectures other
/// than x86-64 (stable Rust has no portable prefetch).
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = std::ptr::from_ref(value).cast::<i8>();
        for offset in (0..std::mem::size_of::<T>()).step_by(64) {
            // SAFETY: PREFETCHT0 is a hint: it never faults (not even for an invalid address)
            // and has no architectural effect; the address is within `value` anyway. SSE, which
            // the intrinsic requires, is part of the x86-64 baseline.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
