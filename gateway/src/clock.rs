//! The time on the request path: one clock read per task poll.
//!
//! A proxied request asks for the time a dozen times (its start, its try's
//! deadline, the pool's and the balancer's expiries, its latencies), and
//! each ask is a `clock_gettime` through the vDSO: 20–25 ns on the
//! benchmark VM, 2.5% of an HTTP/2 request's CPU time (session 5,
//! `perf record`). Within one poll of a task those reads differ by the
//! microseconds the poll takes, which no timeout or latency histogram can
//! tell apart. So a task wrapped in [`per_poll`] reads the clock at most
//! once per poll, on the first [`now`]; outside such a task [`now`] reads
//! the clock each time.
//!
//! A poll is short with io_uring (every operation yields first). With the
//! epoll driver, reads that find bytes ready complete without yielding,
//! and a loop over a long body can keep one poll going; such loops take
//! their deadlines from [`mono_uncached`].

use std::cell::Cell;
use std::future::Future;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
enum Reading {
    /// Not inside a [`per_poll`] task: every [`now`] reads the clock.
    Fresh,
    /// Inside one poll of a [`per_poll`] task: the time read first, if any.
    ThisPoll(Option<Instant>),
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Fresh) };
}

/// The time: the clock as this task's current poll first read it, or the
/// clock now outside a [`per_poll`] task.
pub(crate) fn now() -> Instant {
    READING.with(|reading| match reading.get() {
        Reading::Fresh => Instant::now(),
        Reading::ThisPoll(Some(at)) => at,
        Reading::ThisPoll(None) => {
            let at = Instant::now();
            reading.set(Reading::ThisPoll(Some(at)));
            at
        }
    })
}

/// The time from `then` to [`now`] (zero if `then` is later).
pub(crate) fn since(then: Instant) -> std::time::Duration {
    now().saturating_duration_since(then)
}

/// [`now`] as monoio's instant, for its timers.
pub(crate) fn mono_now() -> monoio::time::Instant {
    monoio::time::Instant::from_std(now())
}

/// The clock itself as monoio's instant, even inside a [`per_poll`] task:
/// for deadlines in loops over a body, which can keep one poll going for
/// longer than a timeout with the epoll driver (reads that find bytes
/// ready complete without yielding).
pub(crate) fn mono_uncached() -> monoio::time::Instant {
    monoio::time::Instant::now()
}

/// `future` with [`now`] read at most once in each of its polls. Not
/// boxed: a task spawned with it is one allocation (an idle connection's
/// task is most of what the connection costs).
pub(crate) fn per_poll<F: Future>(future: F) -> PerPoll<F> {
    PerPoll { future }
}

/// The future of [`per_poll`].
#[derive(Debug)]
pub(crate) struct PerPoll<F> {
    future: F,
}

impl<F: Future> Future for PerPoll<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let _poll = ThisPoll::enter();
        // SAFETY: `future` is structurally pinned: it is never moved out
        // of `PerPoll`, which has no `Unpin` impl or `Drop` of its own.
        unsafe { self.map_unchecked_mut(|p| &mut p.future) }.poll(cx)
    }
}

/// One poll of a [`per_poll`] task (or of another wrapper that does the
/// same); what was before comes back when it ends (polls nest when such a
/// future is awaited inside another).
pub(crate) struct ThisPoll(Reading);

impl ThisPoll {
    pub(crate) fn enter() -> ThisPoll {
        ThisPoll(READING.with(|r| r.replace(Reading::ThisPoll(None))))
    }
}

impl Drop for ThisPoll {
    fn drop(&mut self) {
        READING.with(|r| r.set(self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    /// Polls `future` once with a waker that does nothing.
    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn one_poll_sees_one_time_and_the_next_poll_a_later_one() {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = seen.clone();
        let mut polls = 0;
        let task = per_poll(std::future::poll_fn(move |_| {
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            log.borrow_mut().push((first, now()));
            polls += 1;
            if polls == 2 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
        let mut task = std::pin::pin!(task);
        assert!(poll_once(task.as_mut()).is_pending());
        assert!(poll_once(task.as_mut()).is_ready());
        let seen = seen.borrow();
        // Within a poll: the same time, though 2 ms passed.
        assert_eq!(seen[0].0, seen[0].1);
        assert_eq!(seen[1].0, seen[1].1);
        // The next poll read the clock again.
        assert!(seen[1].0 >= seen[0].0 + Duration::from_millis(2));
    }

    #[test]
    fn outside_a_task_and_after_its_poll_the_clock_is_read_each_time() {
        let a = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() >= a + Duration::from_millis(2));
        let mut task = std::pin::pin!(per_poll(async {
            now();
        }));
        assert!(poll_once(task.as_mut()).is_ready());
        let b = now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(now() >= b + Duration::from_millis(2));
    }

    #[test]
    fn a_nested_task_reads_its_own_time_and_gives_the_outer_poll_back_its_own() {
        let mut task = std::pin::pin!(per_poll(async {
            let outer = now();
            std::thread::sleep(Duration::from_millis(2));
            let inner = per_poll(async { now() }).await;
            assert!(inner >= outer + Duration::from_millis(2));
            assert_eq!(now(), outer);
        }));
        assert!(poll_once(task.as_mut()).is_ready());
    }
}
