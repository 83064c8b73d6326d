//! Handing the memory of a replaced configuration back to the system.
//!
//! mimalloc keeps freed pages for reuse by the thread that owns them and
//! purges them only when that thread allocates or collects again. The
//! control thread compiles each snapshot (so it owns the snapshot's pages)
//! and then goes quiet; blocks the workers free on its behalf wait in its
//! queues. Without a nudge a replaced snapshot stays resident until the
//! next reload: with 10,000 routes and 1,000 Maglev clusters, 87 MiB at
//! start grew to 139–165 MiB over reloads (benches/RESULTS.md). Collecting
//! once a reload is done keeps it flat.

/// Frees what this thread's heap holds unused, back to the system. Costs
/// a few milliseconds on a large heap: call it after a reload, never per
/// request.
pub(crate) fn release_freed() {
    // SAFETY: mi_collect takes no pointers; it works on the calling
    // thread's heap (a no-op where mimalloc is not the allocator in use
    // and holds nothing).
    unsafe { libmimalloc_sys::mi_collect(true) }
}
