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
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Lanes of deadlines kept in order by appending alone; past this many, a
/// deadline earlier than every lane's last is inserted in its place.
const MAX_LANES: usize = 8;

/// A waiting future's place in the table.
struct Slot {
    /// Taken when the deadline passes (the sleeper wakes it) or the wait
    /// ends.
    waker: Option<Waker>,
    /// Bumped each time the slot is freed: a lane entry with an older one
    /// belongs to a wait that ended.
    generation: u32,
}

/// A deadline in a lane: 16 bytes, kept per waiting connection.
#[derive(Clone, Copy)]
struct Entry {
    /// Nanoseconds from the table's `base`.
    at: u64,
    slot: u32,
    generation: u32,
}

/// The worker's deadlines.
///
/// Waits of one kind share one duration (a listener's idle timeout, an
/// h2 connection's tick), so deadlines mostly arrive in order: each goes
/// to the end of a lane whose last deadline is not later, and a lane's
/// earliest deadline is at its front. A wait that ends early only frees
/// its slot; its lane entry is dropped when it reaches the front, or when
/// ended entries pass an eighth of the live ones (the lanes are then
/// compacted and shrunk: an idle connection costs its slot and one
/// entry, about what an ordered map's entry cost). Per request that is
/// a push and a slot, instead of an ordered map's insert and remove
/// (about 300 instructions of a saturated HTTP/1.1 request, session 15).
struct Table {
    /// The instant entries count their deadlines from: the clock at the
    /// first registration, before any deadline still to come.
    base: Option<Instant>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    lanes: Vec<VecDeque<Entry>>,
    /// Slots held by waits (woken or not).
    live: usize,
    /// Entries in all lanes, ended ones included.
    queued: usize,
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
            base: None,
            slots: Vec::new(),
            free: Vec::new(),
            lanes: Vec::new(),
            live: 0,
            queued: 0,
            sleeper: None,
            sleeping_until: None,
            started: false,
        })
    };
}

impl Table {
    /// `at` as nanoseconds from the base (0 for any instant before it:
    /// due already).
    fn nanos(&mut self, at: Instant) -> u64 {
        let base = *self.base.get_or_insert_with(Instant::now);
        u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `nanos` from the base stands for.
    fn instant(&self, nanos: u64) -> Instant {
        let base = self.base.expect("set with the first entry");
        base.checked_add(Duration::from_nanos(nanos))
            .unwrap_or(base)
    }

    /// Whether `entry` still stands for a wait whose deadline has not
    /// been handled.
    fn is_waiting(&self, entry: &Entry) -> bool {
        let slot = &self.slots[entry.slot as usize];
        slot.generation == entry.generation && slot.waker.is_some()
    }

    /// Takes a slot for a new wait: its index and generation.
    fn hold(&mut self, waker: &Waker) -> (u32, u32) {
        self.live += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.waker = Some(waker.clone());
            return (index, slot.generation);
        }
        let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 waits");
        self.slots.push(Slot {
            waker: Some(waker.clone()),
            generation: 0,
        });
        (index, 0)
    }

    /// Puts `entry` in a lane, in deadline order.
    fn enqueue(&mut self, entry: Entry) {
        self.queued += 1;
        // The lane whose last deadline is the latest not after this one.
        let fit = self
            .lanes
            .iter()
            .enumerate()
            .filter_map(|(i, lane)| match lane.back() {
                Some(last) if last.at <= entry.at => Some((Some(last.at), i)),
                None => Some((None, i)),
                Some(_) => None,
            })
            .max_by_key(|(last, _)| *last);
        if let Some((_, i)) = fit {
            self.lanes[i].push_back(entry);
        } else if self.lanes.len() < MAX_LANES {
            self.lanes.push(VecDeque::from([entry]));
        } else {
            let lane = &mut self.lanes[0];
            let at = lane.partition_point(|e| e.at <= entry.at);
            lane.insert(at, entry);
        }
    }

    /// Frees the slot of a wait that ended, and drops ended entries once
    /// they outnumber live ones (a wait that stays keeps those queued
    /// behind it).
    fn release(&mut self, index: u32, generation: u32) {
        let slot = &mut self.slots[index as usize];
        if slot.generation != generation {
            return;
        }
        slot.waker = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
        if self.queued > self.live + self.live / 8 + 64 {
            let mut lanes = std::mem::take(&mut self.lanes);
            for lane in &mut lanes {
                lane.retain(|e| self.is_waiting(e));
                if lane.capacity() > 2 * lane.len() + 64 {
                    lane.shrink_to(lane.len() + lane.len() / 4);
                }
            }
            lanes.retain(|lane| !lane.is_empty());
            self.queued = lanes.iter().map(VecDeque::len).sum();
            self.lanes = lanes;
        }
    }

    /// Wakes the waits whose deadlines are not after `now` (taking their
    /// wakers), drops ended entries from the lanes' fronts, and returns
    /// the earliest deadline still waiting.
    fn wake_due(&mut self, now: Instant) -> Option<Instant> {
        self.base?;
        let now = self.nanos(now);
        let mut earliest: Option<u64> = None;
        for i in 0..self.lanes.len() {
            while let Some(&front) = self.lanes[i].front() {
                if self.is_waiting(&front) && front.at > now {
                    earliest = Some(earliest.map_or(front.at, |e| e.min(front.at)));
                    break;
                }
                self.lanes[i].pop_front();
                self.queued -= 1;
                let slot = &mut self.slots[front.slot as usize];
                if slot.generation == front.generation
                    && let Some(waker) = slot.waker.take()
                {
                    waker.wake();
                }
            }
        }
        earliest.map(|at| self.instant(at))
    }
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
    /// Its slot in the table (index, generation) while it waits.
    key: Cell<Option<(u32, u32)>>,
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
        if crate::clock::now() >= this.deadline || this.register(cx.waker()) {
            this.forget();
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

impl<F> Within<F> {
    /// Puts (or refreshes) this future's waker in the table, and wakes the
    /// sleeper if it sleeps past this deadline. True when the sleeper
    /// has already woken it for its deadline.
    fn register(&self, waker: &Waker) -> bool {
        TABLE.with_borrow_mut(|t| {
            if let Some((index, generation)) = self.key.get() {
                let slot = &mut t.slots[index as usize];
                debug_assert_eq!(slot.generation, generation);
                return match &mut slot.waker {
                    Some(held) => {
                        if !held.will_wake(waker) {
                            held.clone_from(waker);
                        }
                        false
                    }
                    None => true,
                };
            }
            let (slot, generation) = t.hold(waker);
            let at = t.nanos(self.deadline);
            t.enqueue(Entry {
                at,
                slot,
                generation,
            });
            self.key.set(Some((slot, generation)));
            if !t.started {
                t.started = true;
                monoio::spawn(sleeper());
            }
            if t.sleeping_until.is_none_or(|at| self.deadline < at)
                && let Some(sleeper) = t.sleeper.take()
            {
                sleeper.wake();
            }
            false
        })
    }

    /// Gives this future's slot back.
    fn forget(&self) {
        if let Some((index, generation)) = self.key.take() {
            // Not at all once the thread is ending: a task dropped with
            // its runtime may outlive the table.
            let _ = TABLE.try_with(|t| t.borrow_mut().release(index, generation));
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
                t.sleeping_until = t.wake_due(Instant::now());
                t.sleeper = Some(cx.waker().clone());
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
            assert_eq!(TABLE.with_borrow(|t| t.live), 0);
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
            assert_eq!(TABLE.with_borrow(|t| t.live), 0);
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

    /// Spawns a wait per step, each ending `step x spacing` from now
    /// (registered in the order given, `between` apart), and returns the
    /// steps in the order their waits ended.
    async fn end_order(steps: &[u64], spacing: Duration, between: Option<Duration>) -> Vec<u64> {
        let start = Instant::now();
        let order = std::rc::Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for &i in steps {
            let order = order.clone();
            tasks.push(monoio::spawn(async move {
                let at = start + spacing * i as u32;
                let _ = within(at, std::future::pending::<()>()).await;
                order.borrow_mut().push(i);
            }));
            if let Some(between) = between {
                monoio::time::sleep(between).await;
            }
        }
        for t in tasks {
            t.await;
        }
        order.take()
    }

    /// More distinct durations than lanes, registered out of order: every
    /// wait still ends in deadline order.
    #[test]
    fn waits_of_many_durations_end_in_deadline_order() {
        runtime().block_on(async {
            let steps = [12u64, 3, 9, 1, 14, 6, 11, 2, 13, 5, 8, 4, 10, 7, 15];
            assert!(steps.len() > MAX_LANES);
            // Registered one by one, in this order.
            let order = end_order(
                &steps,
                Duration::from_millis(15),
                Some(Duration::from_micros(100)),
            )
            .await;
            let mut sorted = steps.to_vec();
            sorted.sort();
            assert_eq!(order, sorted);
            assert_eq!(TABLE.with_borrow(|t| t.live), 0);
        });
    }

    /// Waits that end early (a request arrives) behind one that stays (an
    /// idle connection) do not pile up in the lanes.
    #[test]
    fn ended_waits_do_not_pile_up_behind_a_long_one() {
        runtime().block_on(async {
            let long = monoio::spawn(within(
                Instant::now() + Duration::from_secs(60),
                std::future::pending::<()>(),
            ));
            monoio::time::sleep(Duration::from_millis(5)).await;
            for _ in 0..10_000 {
                // Pending once (so the wait registers), then done.
                let mut yielded = false;
                let once = std::future::poll_fn(|cx| {
                    if yielded {
                        return Poll::Ready(());
                    }
                    yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                });
                let out = within(Instant::now() + Duration::from_secs(60), once).await;
                assert_eq!(out, Ok(()));
            }
            let (live, queued) = TABLE.with_borrow(|t| (t.live, t.queued));
            assert_eq!(live, 1);
            assert!(queued <= live + 65, "{queued} entries queued");
            drop(long);
        });
    }

    #[test]
    fn many_waits_end_in_deadline_order() {
        runtime().block_on(async {
            let order = end_order(&[3, 1, 4, 2, 5], Duration::from_millis(20), None).await;
            assert_eq!(order, vec![1, 2, 3, 4, 5]);
        });
    }
}
