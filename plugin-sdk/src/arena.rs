//! A bump region inside the initial memory, the plugin's first heap (see the module's
//! documentation in lib.rs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Bytes in the region: 256 KiB, enough for a small task's request, parsed input and
/// output. It adds 256 KiB to the plugin's initial memory (counted against its `memory`
/// limit; the default limit is far above it).
pub const SIZE: usize = 256 << 10;

/// A bump region of `N` bytes in front of the system allocator.
pub struct Arena<const N: usize> {
    bytes: UnsafeCell<[u8; N]>,
    /// Offset of the first free byte.
    next: UnsafeCell<usize>,
}

// SAFETY: a Wasm component instance runs on one thread (the region is installed only for
// targets without threads); natively (tests) each `Arena` is used by one thread.
unsafe impl<const N: usize> Sync for Arena<N> {}

impl<const N: usize> Arena<N> {
    /// An empty region.
    pub const fn new() -> Self {
        Arena {
            bytes: UnsafeCell::new([0; N]),
            next: UnsafeCell::new(0),
        }
    }

    fn base(&self) -> usize {
        self.bytes.get() as usize
    }

    /// Whether `ptr` was handed out by the region (rather than the system allocator).
    pub fn owns(&self, ptr: *mut u8) -> bool {
        let p = ptr as usize;
        p >= self.base() && p < self.base() + N
    }

    /// Bytes of the region in use (up to the end of the most recent allocation).
    pub fn used(&self) -> usize {
        // SAFETY: single-threaded, and no reference to `next` outlives a call.
        unsafe { *self.next.get() }
    }

    /// A block from the region, or `None` when it does not fit.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let next = self.used();
        // Align the address, not the offset: the region itself is only byte-aligned.
        let addr = (self.base() + next).checked_next_multiple_of(layout.align())?;
        let start = addr - self.base();
        let end = start.checked_add(layout.size())?;
        if end > N {
            return None;
        }
        // SAFETY: as in `used`.
        unsafe { *self.next.get() = end };
        Some(addr as *mut u8)
    }

    /// Whether `ptr` (of `size` bytes) is the most recent allocation.
    fn is_last(&self, ptr: *mut u8, size: usize) -> bool {
        ptr as usize + size == self.base() + self.used()
    }
}

impl<const N: usize> Default for Arena<N> {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks from the region are in bounds, aligned, and never handed out twice while
// live (the bump only moves back over the most recent block when it is freed or shrunk);
// everything else is the system allocator's.
unsafe impl<const N: usize> GlobalAlloc for Arena<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(ptr) => ptr,
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !self.owns(ptr) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.dealloc(ptr, layout) };
        }
        if self.is_last(ptr, layout.size()) {
            // SAFETY: as in `used`.
            unsafe { *self.next.get() = ptr as usize - self.base() };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(ptr) {
            // SAFETY: the caller's contract, passed on.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let start = ptr as usize - self.base();
        if self.is_last(ptr, layout.size()) {
            // The most recent block grows or shrinks in place while it fits.
            if let Some(end) = start.checked_add(new_size).filter(|&end| end <= N) {
                // SAFETY: as in `used`.
                unsafe { *self.next.get() = end };
                return ptr;
            }
        } else if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: `layout.align()` is a power of two and `new_size`, rounded up to it,
        // does not overflow (the caller's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block of `new_size` bytes, then the old one's bytes copied over.
        unsafe {
            let moved = self.alloc(new_layout);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            moved
        }
    }
}

#[cfg(all(
    target_family = "wasm",
    target_os = "unknown",
    not(target_feature = "atomics")
))]
#[global_allocator]
static HEAP: Arena<SIZE> = Arena::new();

/// Bytes of the plugin's region in use, or `None` where it is not installed (targets with
/// a C library, or native builds).
pub fn region_used() -> Option<usize> {
    #[cfg(all(
        target_family = "wasm",
        target_os = "unknown",
        not(target_feature = "atomics")
    ))]
    return Some(HEAP.used());
    #[allow(unreachable_code)]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("layout")
    }

    #[test]
    fn serves_aligned_blocks_from_the_region_then_from_the_system() {
        let arena: Box<Arena<256>> = Box::default();
        unsafe {
            let a = arena.alloc(layout(3, 1));
            let b = arena.alloc(layout(8, 8));
            assert!(arena.owns(a) && arena.owns(b));
            assert_eq!(b as usize % 8, 0);
            assert!(b as usize >= a as usize + 3);
            b.write_bytes(0xAB, 8);
            // Too big for what is left: the system allocator's.
            let c = arena.alloc(layout(300, 8));
            assert!(!c.is_null() && !arena.owns(c));
            c.write_bytes(1, 300);
            arena.dealloc(c, layout(300, 8));
            assert_eq!(*b.add(7), 0xAB);
        }
    }

    #[test]
    fn the_last_block_grows_shrinks_and_is_freed_in_place() {
        let arena: Box<Arena<256>> = Box::default();
        unsafe {
            let a = arena.alloc(layout(16, 1));
            let b = arena.alloc(layout(16, 1));
            b.write_bytes(7, 16);
            let used = arena.used();
            assert_eq!(arena.realloc(b, layout(16, 1), 64), b);
            assert_eq!(arena.used(), used + 48);
            assert_eq!(*b.add(15), 7);
            assert_eq!(arena.realloc(b, layout(64, 1), 8), b);
            arena.dealloc(b, layout(8, 1));
            // `b`'s bytes are free again: the next block starts there.
            assert_eq!(arena.alloc(layout(4, 1)), b);
            // `a` is not the last block: freeing it leaves the bump where it is.
            let used = arena.used();
            arena.dealloc(a, layout(16, 1));
            assert_eq!(arena.used(), used);
        }
    }

    #[test]
    fn a_block_that_cannot_grow_in_place_moves_with_its_bytes() {
        let arena: Box<Arena<256>> = Box::default();
        unsafe {
            let a = arena.alloc(layout(100, 1));
            for i in 0..100 {
                *a.add(i) = i as u8;
            }
            let _b = arena.alloc(layout(100, 1));
            // Not the last block: a new one, in the region while it fits...
            let grown = arena.realloc(a, layout(100, 1), 120);
            assert!(!arena.owns(grown), "120 more bytes do not fit in 256");
            assert!((0..100).all(|i| *grown.add(i) == i as u8));
            // ...and a system block grows through the system allocator.
            let again = arena.realloc(grown, layout(120, 1), 4096);
            assert!((0..100).all(|i| *again.add(i) == i as u8));
            arena.dealloc(again, layout(4096, 1));
            // A block that shrinks stays where it is.
            let small = arena.alloc(layout(8, 1));
            let _c = arena.alloc(layout(8, 1));
            assert_eq!(arena.realloc(small, layout(8, 1), 4), small);
        }
    }

    #[test]
    fn the_last_block_that_outgrows_the_region_moves_to_the_system() {
        let arena: Box<Arena<64>> = Box::default();
        unsafe {
            let a = arena.alloc(layout(32, 1));
            a.write_bytes(9, 32);
            let moved = arena.realloc(a, layout(32, 1), 100);
            assert!(!arena.owns(moved));
            assert!((0..32).all(|i| *moved.add(i) == 9));
            // Its bytes in the region are free again.
            assert_eq!(arena.used(), 0);
            arena.dealloc(moved, layout(100, 1));
        }
    }
}
