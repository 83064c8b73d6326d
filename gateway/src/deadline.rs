//! Deadlines for connections that wait (for their next request, or in a
//! quiet tunnel), kept in one table per worker instead of one runtime
//! timer each.
//!
//! A monoio timer entry is 640 bytes, cache-line aligned, and lives in the
//! waiting future: with tens of thousands of idle connections that was
//! most of what an idle connection cost. Here a waiting connection holds
//! a key into the worker's ordered table (a few dozen bytes there), and
//! one task per worker sleeps until the earliest deadline and wakes the
//! connections whose time is up.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// The worker's deadlines: the waiting futures' wakers by (deadline, id).
struct Table {
    waiting: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// The task that sleeps until the earliest deadline, when it waits
    /// with nothing to sleep for or for a later deadline than a new one.
    sleeper: Option<Waker>,
    /// The deadline the sleeper sleeps until, if it sleeps.
    sleeping_until: Option<Instant>,
    /// Whether the sleeper task runs on this thread.
    started: bool,
}

thread_local! {
    static TABLE: RefCell<Table> = const {
        RefCell::new(Table {
            waiting: BTreeMap::new(),
            next_id: 0,
            sleeper: None,
            sleeping_until: None,
            started: false,
        })
    };
}

/// The wait outran its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// Runs `future` until `deadline`: its output, or [`Elapsed`] when the
/// deadline passes first. Must run on a monoio worker thread (the first
/// use on a thread starts its sleeper task there).
pub(crate) fn within<F: Future>(deadline: Instant, future: F) -> Within<F> {
    Within {
        future,
        deadline,
        key: Cell::new(None),
    }
}

/// The future of [`within`].
pub(crate) struct Within<F> {
    future: F,
    deadline: Instant,
    /// Its entry in the table while it waits.
    key: Cell<Option<(Instant, u64)>>,
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned (never moved out, and
        // `Within` has no `Unpin` impl of its own); the other fields are
        // not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(out) = future.poll(cx) {
            this.forget();
            return Poll::Ready(Ok(out));
        }
        if Instant::now() >= this.deadline {
            this.forget();
            return Poll::Ready(Err(Elapsed));
        }
        this.register(cx.waker());
        Poll::Pending
    }
}

impl<F> Within<F> {
    /// Puts (or refreshes) this future's waker in the table, and wakes the
    /// sleeper if it sleeps past this deadline.
    fn register(&self, waker: &Waker) {
        TABLE.with_borrow_mut(|t| {
            if let Some(key) = self.key.get()
                && let Some(held) = t.waiting.get_mut(&key)
            {
                if !held.will_wake(waker) {
                    held.clone_from(waker);
                }
                return;
            }
            let key = (self.deadline, t.next_id);
            t.next_id += 1;
            t.waiting.insert(key, waker.clone());
            self.key.set(Some(key));
            if !t.started {
                t.started = true;
                monoio::spawn(sleeper());
            }
            if t.sleeping_until.is_none_or(|at| self.deadline < at)
                && let Some(sleeper) = t.sleeper.take()
            {
                sleeper.wake();
            }
        });
    }

    /// Takes this future's entry out of the table.
    fn forget(&self) {
        if let Some(key) = self.key.take() {
            // Not at all once the thread is ending: a task dropped with
            // its runtime may outlive the table.
            let _ = TABLE.try_with(|t| t.borrow_mut().waiting.remove(&key));
        }
    }
}

impl<F> Drop for Within<F> {
    fn drop(&mut self) {
        self.forget();
    }
}

/// The worker's sleeper: sleeps until the earliest deadline, wakes the
/// futures whose deadlines have passed (taking their entries out), and
/// parks while nothing waits.
async fn sleeper() {
    loop {
        let due = std::future::poll_fn(|cx| {
            TABLE.with_borrow_mut(|t| {
                let now = Instant::now();
                while let Some(entry) = t.waiting.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    entry.remove().wake();
                }
                t.sleeper = Some(cx.waker().clone());
                t.sleeping_until = t.waiting.first_key_value().map(|(k, _)| k.0);
                match t.sleeping_until {
                    Some(at) => Poll::Ready(at),
                    None => Poll::Pending,
                }
            })
        })
        .await;
        // Until the earliest deadline, or until an earlier one comes (the
        // registering future wakes this task through `sleeper`).
        let woken = std::future::poll_fn(|cx| {
            let early = TABLE.with_borrow_mut(|t| {
                if t.sleeper.is_none() {
                    return true;
                }
                t.sleeper = Some(cx.waker().clone());
                false
            });
            if early {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        monoio::select! {
            _ = monoio::time::sleep_until(monoio::time::Instant::from_std(due)) => {}
            _ = woken => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    #[test]
    fn a_wait_ends_at_its_deadline_and_not_before() {
        runtime().block_on(async {
            let start = Instant::now();
            let never = std::future::pending::<()>();
            let out = within(start + Duration::from_millis(50), never).await;
            assert_eq!(out, Err(Elapsed));
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(50), "{took:?}");
            assert!(took < Duration::from_secs(2), "{took:?}");
            assert!(TABLE.with_borrow(|t| t.waiting.is_empty()));
        });
    }

    #[test]
    fn a_finished_wait_gives_its_output_and_leaves_the_table() {
        runtime().block_on(async {
            let far = Instant::now() + Duration::from_secs(3600);
            let out = within(far, async {
                monoio::time::sleep(Duration::from_millis(10)).await;
                7
            })
            .await;
            assert_eq!(out, Ok(7));
            assert!(TABLE.with_borrow(|t| t.waiting.is_empty()));
        });
    }

    #[test]
    fn an_earlier_deadline_wakes_the_sleeper_that_sleeps_for_a_later_one() {
        runtime().block_on(async {
            let start = Instant::now();
            let late = monoio::spawn(within(
                start + Duration::from_secs(30),
                std::future::pending::<()>(),
            ));
            // Let the late wait register and the sleeper sleep for it.
            monoio::time::sleep(Duration::from_millis(20)).await;
            let early = within(
                start + Duration::from_millis(80),
                std::future::pending::<()>(),
            )
            .await;
            assert_eq!(early, Err(Elapsed));
            assert!(start.elapsed() < Duration::from_secs(5));
            drop(late);
        });
    }

    #[test]
    fn many_waits_end_in_deadline_order() {
        runtime().block_on(async {
            let start = Instant::now();
            let order = std::rc::Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in [3u64, 1, 4, 2, 5] {
                let order = order.clone();
                tasks.push(monoio::spawn(async move {
                    let at = start + Duration::from_millis(20 * i);
                    let _ = within(at, std::future::pending::<()>()).await;
                    order.borrow_mut().push(i);
                }));
            }
            for t in tasks {
                t.await;
            }
            assert_eq!(*order.borrow(), vec![1, 2, 3, 4, 5]);
        });
    }
}
