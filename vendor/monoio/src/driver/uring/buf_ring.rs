//! ringway: the driver's provided-buffer ring (`IORING_REGISTER_PBUF_RING`,
//! kernel 5.19+), from which a posted receive takes a buffer only when
//! bytes arrive. A socket that waits with such a receive posted holds no
//! buffer of its own, and the bytes come with the completion: one
//! operation and one wake per read instead of a readiness completion and
//! then a read.
//!
//! Registered on first use; a kernel that refuses it leaves the ring
//! unavailable for the driver's life, and callers read their usual way.

use std::{
    alloc::{alloc_zeroed, dealloc, Layout},
    io,
    ptr::NonNull,
    sync::atomic::{AtomicU16, Ordering},
};

use io_uring::{types::BufRingEntry, IoUring};

/// Buffers in the ring: as many connections can receive in one turn of
/// the worker before one finds the ring empty (and reads its usual way).
pub(crate) const ENTRIES: u16 = 128;
/// Bytes per buffer: a request or response head, rarely more (the rest
/// is read the usual way).
pub(crate) const BUF_LEN: usize = 4096;
/// The buffer group the ring is registered as.
pub(crate) const GROUP: u16 = 0x7277;

/// The ring and its buffers.
pub(crate) struct BufRing {
    /// `ENTRIES` ring entries, page-aligned as the kernel requires.
    entries: NonNull<BufRingEntry>,
    /// `ENTRIES` buffers of `BUF_LEN` bytes, one after another.
    bufs: NonNull<u8>,
    /// The next entry to fill (the kernel reads up to it).
    tail: u16,
}

/// Whether the driver has a ring.
pub(crate) enum Slot {
    NotYet,
    Ready(BufRing),
    Unavailable,
}

fn entries_layout() -> Layout {
    Layout::from_size_align(ENTRIES as usize * size_of::<BufRingEntry>(), 4096).unwrap()
}

fn bufs_layout() -> Layout {
    Layout::from_size_align(ENTRIES as usize * BUF_LEN, 4096).unwrap()
}

impl BufRing {
    /// Allocates the ring, registers it with `uring` and provides every
    /// buffer.
    pub(crate) fn register(uring: &IoUring) -> io::Result<BufRing> {
        // SAFETY: both layouts have a non-zero size.
        let entries = NonNull::new(unsafe { alloc_zeroed(entries_layout()) }.cast::<BufRingEntry>())
            .ok_or(io::ErrorKind::OutOfMemory)?;
        let Some(bufs) = NonNull::new(unsafe { alloc_zeroed(bufs_layout()) }) else {
            unsafe { dealloc(entries.as_ptr().cast(), entries_layout()) };
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut ring = BufRing {
            entries,
            bufs,
            tail: 0,
        };
        // SAFETY: the ring's memory lives until `unregister` (the owner
        // calls it before the io_uring goes away) or, if registering
        // fails, until the ring is dropped below.
        let registered = unsafe {
            uring
                .submitter()
                .register_buf_ring(entries.as_ptr() as u64, ENTRIES, GROUP)
        };
        if let Err(e) = registered {
            ring.free();
            return Err(e);
        }
        for bid in 0..ENTRIES {
            ring.provide(bid);
        }
        Ok(ring)
    }

    /// The bytes of buffer `bid`, `len` long, as the kernel filled them.
    /// Valid until the buffer is provided again.
    pub(crate) fn bytes(&self, bid: u16, len: usize) -> *const u8 {
        debug_assert!(bid < ENTRIES && len <= BUF_LEN);
        // SAFETY: inside the buffers' allocation.
        unsafe { self.bufs.as_ptr().add(bid as usize * BUF_LEN) }
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn provide(&mut self, bid: u16) {
        if bid >= ENTRIES {
            return;
        }
        let at = (self.tail & (ENTRIES - 1)) as usize;
        // SAFETY: `at` is inside the ring; the kernel reads only entries
        // before the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries.as_ptr().add(at) };
        entry.set_addr(self.bytes(bid, 0) as u64);
        entry.set_len(BUF_LEN as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the first entry's reserved field, aligned
        // for a u16, which the kernel reads with an acquire load.
        let tail = unsafe { &*BufRingEntry::tail(self.entries.as_ptr()).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// Unregisters the ring from `uring` and frees its memory: nothing
    /// the kernel does afterwards can pick a buffer.
    pub(crate) fn unregister(mut self, uring: &IoUring) {
        if uring.submitter().unregister_buf_ring(GROUP).is_ok() {
            self.free();
        }
        // Else leaked: the kernel may still write into it.
    }

    fn free(&mut self) {
        // SAFETY: allocated in `register` with these layouts, freed once.
        unsafe {
            dealloc(self.entries.as_ptr().cast(), entries_layout());
            dealloc(self.bufs.as_ptr(), bufs_layout());
        }
    }
}
