//! Connection caps: `[listener] max_connections` and `[runtime]
//! max_connections`, each worker holding its share. At a cap the accept
//! loop stops accepting, so new connections wait in the kernel's backlog
//! (and are served as slots free) rather than being accepted and dropped.

use std::cell::Cell;
use std::rc::Rc;

use crate::drain::Signal;

/// A worker's open client connections, all listeners together, and the
/// signal its accept loops wait on at a cap.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    open: Cell<u32>,
    freed: Signal,
}

impl Slots {
    /// Connections open on this worker.
    pub(crate) fn open(&self) -> u32 {
        self.open.get()
    }

    /// Resolves once `free` holds, re-checked whenever a connection closes.
    pub(crate) async fn wait(&self, free: impl Fn() -> bool) {
        self.freed.wait_for(free).await
    }
}

/// One accepted connection, counted on its worker and its listener until
/// dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Rc<Slots>,
    listener: Rc<Cell<u32>>,
}

impl Slot {
    /// Counts a connection just accepted on the listener counted by
    /// `listener`.
    pub(crate) fn take(slots: &Rc<Slots>, listener: &Rc<Cell<u32>>) -> Slot {
        slots.open.set(slots.open.get() + 1);
        listener.set(listener.get() + 1);
        Slot {
            slots: slots.clone(),
            listener: listener.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.set(self.slots.open.get().saturating_sub(1));
        self.listener.set(self.listener.get().saturating_sub(1));
        self.slots.freed.notify();
    }
}

/// A cap of `total` for the whole process, as one of `workers` holds it.
pub(crate) fn share(total: Option<u32>, workers: u32) -> u32 {
    total.map_or(u32::MAX, |n| n.div_ceil(workers.max(1)).max(1))
}
