//! Graceful shutdown within one worker: stop accepting, let in-flight
//! requests finish, and know when none are left.
//!
//! Single-threaded by design (`Cell`, `RefCell`): each worker owns its own
//! [`Drain`]; the control thread reaches it through a channel, never by
//! touching it.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Per-worker drain state.
#[derive(Debug, Default)]
pub struct Drain {
    draining: Cell<bool>,
    in_flight: Cell<usize>,
    /// Tasks waiting for the drain to start or for in-flight to reach
    /// zero: the accept loops and the worker's main task, a handful.
    waiters: RefCell<Vec<Waker>>,
}

impl Drain {
    /// True once shutdown has begun: finish the current request, then close.
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Begins the drain and wakes whoever waits for it.
    pub fn start(&self) {
        self.draining.set(true);
        self.wake_all();
    }

    /// Requests being served right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn request(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self.clone())
    }

    /// Resolves when the drain has started.
    pub async fn started(&self) {
        poll_fn(|cx| {
            if self.draining.get() {
                Poll::Ready(())
            } else {
                self.register(cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    /// Resolves when no request is in flight any more.
    pub async fn idle(&self) {
        poll_fn(|cx| {
            if self.in_flight.get() == 0 {
                Poll::Ready(())
            } else {
                self.register(cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    fn register(&self, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    fn wake_all(&self) {
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }
}

/// A request in flight; dropping it counts the request done.
#[derive(Debug)]
pub struct InFlight(Rc<Drain>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = self.0.in_flight.get() - 1;
        self.0.in_flight.set(n);
        if n == 0 && self.0.draining.get() {
            self.0.wake_all();
        }
    }
}
