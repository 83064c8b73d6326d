//! The one place a snapshot is published: an `ArcSwap` the control thread
//! stores into and the workers load from, without a lock.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::Snapshot;

/// The running snapshot, shared between the control thread and the workers.
///
/// Workers keep their own `Arc<Snapshot>` and compare
/// [`Published::generation`] (one atomic load) at each request, so the
/// request path never holds an `arc_swap::Guard` across an `.await`.
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

    /// Publishes `next` as the following generation and returns it.
    pub fn store(&self, mut next: Snapshot) -> u64 {
        let generation = self.generation() + 1;
        next.generation = generation;
        self.current.store(Arc::new(next));
        generation
    }
}
