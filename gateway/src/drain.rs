//! Signals within one worker: graceful shutdown (stop accepting, let
//! in-flight requests finish, know when none are left) and the stopping of
//! one listener on reload.
//!
//! Single-threaded by design (`Cell`, `RefCell`): each worker owns its own;
//! the control thread reaches a worker through its command channel, never
//! by touching these.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// A one-way flag that tasks of the same worker can wait for.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    fired: Cell<bool>,
    /// The few tasks waiting: accept loops and the worker's main task.
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    /// Raises the flag and wakes every waiter.
    pub(crate) fn fire(&self) {
        self.fired.set(true);
        self.wake_all();
    }

    /// True once fired.
    pub(crate) fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once fired.
    pub(crate) async fn fired(&self) {
        self.wait_for(|| self.fired.get()).await
    }

    /// Wakes the waiters without firing: they check their condition again.
    pub(crate) fn notify(&self) {
        if !self.waiters.borrow().is_empty() {
            self.wake_all();
        }
    }

    /// Resolves when `ready` holds, re-checking each time the signal wakes
    /// its waiters.
    pub(crate) async fn wait_for(&self, ready: impl Fn() -> bool) {
        poll_fn(|cx| {
            if ready() {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            // Compared by data pointer: `will_wake` also compares vtable
            // addresses, which differ for the same task when the vtable is
            // duplicated across codegen units, and then every poll would
            // add another waker.
            if !waiters.iter().any(|w| w.data() == cx.waker().data()) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in waiters {
            w.wake();
        }
    }
}

/// Per-worker drain state.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    started: Signal,
    in_flight: Cell<usize>,
    /// Client connections open, busy or idle.
    connections: Cell<usize>,
}

impl Drain {
    /// True once shutdown has begun: finish the current request, then close.
    pub(crate) fn is_draining(&self) -> bool {
        self.started.is_fired()
    }

    /// Begins the drain and wakes whoever waits for it.
    pub(crate) fn start(&self) {
        self.started.fire();
    }

    /// Requests being served right now.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Counts a request in flight until the guard is dropped.
    pub(crate) fn request(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self.clone())
    }

    /// Resolves when the drain has started.
    pub(crate) async fn started(&self) {
        self.started.fired().await
    }

    /// Counts a client connection open, from its accept (a PROXY header
    /// or TLS handshake still in progress included) until the returned
    /// guard drops.
    pub(crate) fn connection(self: &Rc<Self>) -> OpenConnection {
        self.connections.set(self.connections.get() + 1);
        OpenConnection(self.clone())
    }

    /// Resolves once draining and no client connection is open at all,
    /// idle keep-alive ones included.
    pub(crate) async fn closed(&self) {
        self.started
            .wait_for(|| {
                self.started.is_fired() && self.in_flight.get() == 0 && self.connections.get() == 0
            })
            .await
    }

    /// Resolves when the drain has started and no request is in flight.
    pub(crate) async fn idle(&self) {
        self.started
            .wait_for(|| self.started.is_fired() && self.in_flight.get() == 0)
            .await
    }
}

/// An open client connection; dropping it counts the connection closed.
#[derive(Debug)]
pub(crate) struct OpenConnection(Rc<Drain>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let n = self.0.connections.get().saturating_sub(1);
        self.0.connections.set(n);
        if n == 0 && self.0.is_draining() {
            self.0.started.wake_all();
        }
    }
}

/// A request in flight; dropping it counts the request done.
#[derive(Debug)]
pub(crate) struct InFlight(Rc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = self.0.in_flight.get() - 1;
        self.0.in_flight.set(n);
        if n == 0 && self.0.is_draining() {
            self.0.started.wake_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::{Context, RawWaker, RawWakerVTable, Waker};

    use super::*;

    fn raw(data: *const ()) -> RawWaker {
        RawWaker::new(data, &VTABLE_A)
    }
    fn noop(_: *const ()) {}
    static VTABLE_A: RawWakerVTable = RawWakerVTable::new(raw, noop, noop, noop);
    static VTABLE_B: RawWakerVTable = RawWakerVTable::new(raw, noop, noop, noop);

    /// The same task's waker may come with another copy of its vtable (one
    /// per codegen unit); polling again must not add another waiter.
    #[test]
    fn a_task_polling_again_is_one_waiter() {
        let signal = Signal::default();
        let task = 0x1000 as *const ();
        // SAFETY: the vtables' functions do nothing with the data pointer.
        let (a, b) = unsafe {
            (
                Waker::from_raw(RawWaker::new(task, &VTABLE_A)),
                Waker::from_raw(RawWaker::new(task, &VTABLE_B)),
            )
        };
        for waker in [&a, &b, &a, &b] {
            let mut cx = Context::from_waker(waker);
            let mut fired = std::pin::pin!(signal.fired());
            assert!(fired.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(signal.waiters.borrow().len(), 1);
        signal.fire();
        assert!(signal.waiters.borrow().is_empty());
    }
}
