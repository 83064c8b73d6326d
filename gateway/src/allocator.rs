//! The process's allocator: mimalloc, asked the way that keeps it on its
//! fast paths.
//!
//! The `mimalloc` crate hands every request to `mi_malloc_aligned`. For a
//! block over 1 KiB whose size class is not a power of two that falls back
//! to over-allocating by the alignment and aligning by hand, whatever the
//! alignment asked: a request's boxed future (8.5 KiB, aligned to 8) took
//! that path on every request, about 1,000 instructions where the plain
//! path takes about 100 (callgrind, benches/RESULTS.md). `mi_malloc`
//! already aligns every block of 16 bytes or more to 16, so a request that
//! asks no more than that (and no more than its size) goes there, as the
//! `mimalloc` crate itself did before it routed everything through the
//! aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// What `mi_malloc` guarantees for a block of at least this many bytes.
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the module's comment).
#[derive(Debug)]
pub struct Mimalloc;

/// True when `mi_malloc` of `size` bytes is aligned for `align`.
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY: every block comes from mimalloc, aligned as its layout asks
// (the plain calls only where mimalloc guarantees that alignment), and
// goes back to it through `mi_free`, which takes blocks of either kind.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls take any size and a
        // power-of-two alignment, which a `Layout` always has.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block is aligned as `layout` asks, by the same rule as `alloc`.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a program asks for comes back aligned, by
    /// either path, through allocation, zeroed allocation and growth.
    #[test]
    fn blocks_are_aligned_as_asked() {
        let sizes = [
            1, 7, 8, 12, 16, 24, 100, 1000, 1025, 4096, 8496, 70_000, 300_000,
        ];
        for &size in &sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a valid layout of non-zero size; each block is
                // freed once with the layout it was made with.
                unsafe {
                    let p = Mimalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size} aligned to {align}");
                    p.write_bytes(0xa5, size);
                    let z = Mimalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} to {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    Mimalloc.dealloc(z, layout);
                    let grown = Mimalloc.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "{size} grown, to {align}");
                    assert!(
                        std::slice::from_raw_parts(grown, size)
                            .iter()
                            .all(|&b| b == 0xa5)
                    );
                    Mimalloc.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                }
            }
        }
    }
}
