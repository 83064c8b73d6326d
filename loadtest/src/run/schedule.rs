//! When requests go out. Closed loop: as soon as the previous answer is
//! in, while tickets (`-n`) and time (`-d`) last. Open loop: request slot
//! `j` (counted over every lane of every connection) is due at
//! `start + j / rate`, so the offered load is spread evenly and does not
//! depend on how fast the server answers; latency counts from that due
//! time, which is what corrects for coordinated omission.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The run's clock and limits, the same on every thread.
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    /// When the first request is due (connections open just before).
    pub start: Instant,
    /// When measurement starts (after `--warmup`).
    pub measure_start: Instant,
    /// No request starts at or after this.
    pub end: Instant,
    /// Anything still in flight is cut off here (`end + --timeout`).
    pub hard_end: Instant,
    /// Open loop: requests per second over all lanes.
    pub rate: Option<f64>,
    /// Open loop: lanes over all connections and threads.
    pub lanes: u64,
    /// Open loop with `-n`: the first slot that is not sent.
    pub end_slot: Option<u64>,
}

impl Schedule {
    /// When slot `j` is due.
    pub(super) fn due(&self, j: u64) -> Option<Instant> {
        let rate = self.rate?;
        if self.end_slot.is_some_and(|e| j >= e) {
            return None;
        }
        // A slot too far out to represent is past any end.
        let offset = Duration::try_from_secs_f64(j as f64 / rate).ok()?;
        let at = self.start.checked_add(offset)?;
        (at < self.end).then_some(at)
    }
}

/// One open-loop sender (a connection in HTTP/1.1, a stream slot in h2):
/// its slots are `index`, `index + lanes`, `index + 2 * lanes`, ...
#[derive(Debug)]
pub(super) struct Lane {
    index: u64,
    next: Cell<u64>,
}

impl Lane {
    /// Lane number `index`.
    pub(super) fn new(index: u64) -> Lane {
        Lane {
            index,
            next: Cell::new(0),
        }
    }

    /// When this lane's next request is due, or `None` when it has no
    /// more slots before the end.
    pub(super) fn next_due(&self, s: &Schedule) -> Option<Instant> {
        s.due(self.next.get() * s.lanes + self.index)
    }

    /// The next slot is taken (sent, or failed trying).
    pub(super) fn advance(&self) {
        self.next.set(self.next.get() + 1);
    }

    /// Slots still due in the measured window; called when the run ends
    /// with this lane behind its schedule. Estimated in closed form (a
    /// server down for a long run can leave millions behind) and then
    /// corrected against `due` itself at both ends.
    pub(super) fn remaining_measured(&self, s: &Schedule) -> u64 {
        let Some(rate) = s.rate else { return 0 };
        let first = self.next.get();
        let slot = |k: u64| k.saturating_mul(s.lanes).saturating_add(self.index);
        // The smallest k whose slot is at or after slot position `j`.
        let k_at = |j: f64| ((j - self.index as f64) / s.lanes as f64).ceil().max(0.0) as u64;
        let since = |t: Instant| t.saturating_duration_since(s.start).as_secs_f64() * rate;
        let mut end = k_at(since(s.end)).max(first);
        if let Some(limit) = s.end_slot {
            end = end.min(k_at(limit as f64).max(first));
        }
        while end > first && s.due(slot(end - 1)).is_none() {
            end -= 1;
        }
        while s.due(slot(end)).is_some() {
            end += 1;
        }
        let mut from = k_at(since(s.measure_start)).clamp(first, end);
        while from > first
            && s.due(slot(from - 1))
                .is_some_and(|at| at >= s.measure_start)
        {
            from -= 1;
        }
        while from < end && s.due(slot(from)).is_some_and(|at| at < s.measure_start) {
            from += 1;
        }
        end - from
    }
}

/// A thread's share of `-n` in closed loop.
#[derive(Debug)]
pub(super) struct Tickets {
    left: Cell<Option<u64>>,
}

impl Tickets {
    /// `None`: unlimited (the run is bounded by time).
    pub(super) fn new(n: Option<u64>) -> Tickets {
        Tickets { left: Cell::new(n) }
    }

    /// Takes up to `want` requests; 0 when the run is over. The warm-up
    /// takes none: `-n` counts measured requests.
    pub(super) fn take(&self, s: &Schedule, want: usize) -> usize {
        let now = Instant::now();
        if now >= s.end {
            return 0;
        }
        if now < s.measure_start {
            return want;
        }
        match self.left.get() {
            None => want,
            Some(left) => {
                let n = (want as u64).min(left);
                self.left.set(Some(left - n));
                n as usize
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(rate: f64, lanes: u64, secs: u64) -> Schedule {
        let start = Instant::now();
        Schedule {
            start,
            measure_start: start,
            end: start + Duration::from_secs(secs),
            hard_end: start + Duration::from_secs(secs + 1),
            rate: Some(rate),
            lanes,
            end_slot: None,
        }
    }

    #[test]
    fn lanes_share_the_slots_evenly() {
        let s = open(1000.0, 4, 1);
        let lanes: Vec<Lane> = (0..4).map(Lane::new).collect();
        let total: u64 = lanes.iter().map(|l| l.remaining_measured(&s)).sum();
        assert_eq!(total, 1000);
        // Lane 1's first slot is 1 ms after the start, its second 5 ms.
        assert_eq!(
            lanes[1].next_due(&s),
            Some(s.start + Duration::from_millis(1))
        );
        lanes[1].advance();
        assert_eq!(
            lanes[1].next_due(&s),
            Some(s.start + Duration::from_millis(5))
        );
    }

    #[test]
    fn end_slot_limits_open_loop() {
        let mut s = open(1000.0, 2, 10);
        s.end_slot = Some(7);
        let lanes: Vec<Lane> = (0..2).map(Lane::new).collect();
        assert_eq!(
            lanes[0].remaining_measured(&s) + lanes[1].remaining_measured(&s),
            7
        );
    }

    #[test]
    fn remaining_counts_only_the_measured_window_and_is_quick_for_huge_backlogs() {
        let mut s = open(1000.0, 4, 2);
        s.measure_start = s.start + Duration::from_secs(1);
        let lanes: Vec<Lane> = (0..4).map(Lane::new).collect();
        let total: u64 = lanes.iter().map(|l| l.remaining_measured(&s)).sum();
        assert_eq!(total, 1000);
        // A lane far behind at a huge rate: counted without walking slots.
        let s = open(1e9, 1, 600);
        assert_eq!(Lane::new(0).remaining_measured(&s), 600_000_000_000);
    }

    #[test]
    fn tickets_run_out() {
        let s = open(1.0, 1, 10);
        let t = Tickets::new(Some(5));
        assert_eq!(t.take(&s, 4), 4);
        assert_eq!(t.take(&s, 4), 1);
        assert_eq!(t.take(&s, 4), 0);
        assert_eq!(Tickets::new(None).take(&s, 3), 3);
    }
}
