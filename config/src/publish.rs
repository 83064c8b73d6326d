//! The one place a snapshot is published: an `ArcSwap` the control thread
//! stores into and the workers load from, without a lock.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::Snapshot;

/// The running snapshot, shared between the control thread and the workers.
///
/// The control thread stores; workers are handed the stored `Arc` and keep
/// it in their own per-core state, so the request path never touches the
/// `ArcSwap` (nor holds an `arc_swap::Guard` across an `.await`). Readers
/// off the request path (the admin listener) load from it.
#[derive(Debug)]
pub struct Published {
    current: ArcSwap<Snapshot>,
}

impl Published {
    /// Starts with `first`, which keeps the generation it was compiled with.
    pub fn new(first: Snapshot) -> Published {
        Published {
            current: ArcSwap::from_pointee(first),
        }
    }

    /// The snapshot to serve from now.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The generation of the snapshot to serve from now.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Numbers `next` as the following generation, without publishing it
    /// yet: the control thread hands it to the workers first, then
    /// [`Published::publish`]es it, so that a reader of the published
    /// generation knows every worker serves it.
    pub fn prepare(&self, mut next: Snapshot) -> Arc<Snapshot> {
        next.generation = self.generation() + 1;
        Arc::new(next)
    }

    /// Makes `next` (from [`Published::prepare`]) the published snapshot.
    /// Only the control thread prepares and publishes, so numbering and
    /// storing cannot race.
    pub fn publish(&self, next: Arc<Snapshot>) {
        self.current.store(next);
    }
}
