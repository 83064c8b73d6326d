//! One thread's tallies: latencies, status codes and errors by kind, kept
//! apart for the warm-up, and an interval copy for the progress line.

use std::time::Instant;

use crate::histogram::{self, Latency};

/// Why a request (or a connection) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Connecting, the TLS handshake or the h2 handshake failed.
    Connect = 0,
    /// No complete response within `--timeout` (or by the end of the run).
    Timeout = 1,
    /// The server closed or reset the connection before answering.
    Reset = 2,
    /// The server's bytes were not valid HTTP.
    Protocol = 3,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Reset,
        ErrorKind::Protocol,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Reset => "reset",
            ErrorKind::Protocol => "protocol",
        }
    }
}

/// Status codes kept in a flat table (100..=999).
const STATUS_SLOTS: usize = 1000;

/// What one thread measured; merged across threads at the end.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of measured requests, µs (from the intended send time).
    pub latency: Latency,
    /// How late requests left against their schedule, µs (open loop).
    pub lag: Latency,
    /// Responses by status code.
    pub status: Box<[u64]>,
    /// Errors by kind.
    pub errors: [u64; 4],
    /// The first message seen for each kind of error.
    pub first_error: [Option<String>; 4],
    /// Responses received in the measured window.
    pub responses: u64,
    /// Requests that finished (answered or failed) during the warm-up.
    pub warmup: u64,
    /// Open loop: requests due in the measured window that never left.
    pub unsent: u64,
    /// Body bytes received in the measured window.
    pub body_bytes: u64,
    /// Connections opened (including reconnects).
    pub connects: u64,
    /// When the last measured response arrived.
    pub last_done: Option<Instant>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: histogram::new(),
            lag: histogram::new(),
            status: vec![0; STATUS_SLOTS].into_boxed_slice(),
            errors: [0; 4],
            first_error: Default::default(),
            responses: 0,
            warmup: 0,
            unsent: 0,
            body_bytes: 0,
            connects: 0,
            last_done: None,
        }
    }
}

impl Tally {
    /// Adds `other` into this one.
    pub fn merge(&mut self, other: &Tally) {
        // Both histograms have the same bounds and saturate on record, so
        // adding cannot fail; a failure would only drop samples.
        let _ = self.latency.add(&other.latency);
        let _ = self.lag.add(&other.lag);
        for (a, b) in self.status.iter_mut().zip(other.status.iter()) {
            *a += b;
        }
        for i in 0..4 {
            self.errors[i] += other.errors[i];
            if self.first_error[i].is_none() {
                self.first_error[i].clone_from(&other.first_error[i]);
            }
        }
        self.responses += other.responses;
        self.warmup += other.warmup;
        self.unsent += other.unsent;
        self.body_bytes += other.body_bytes;
        self.connects += other.connects;
        self.last_done = self.last_done.max(other.last_done);
    }

    /// Total errors.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// The interval counters behind the once-a-second progress line.
#[derive(Debug, Clone)]
pub(super) struct Interval {
    /// Responses in the interval (warm-up included).
    pub responses: u64,
    /// Errors in the interval.
    pub errors: u64,
    /// Latencies in the interval, µs.
    pub latency: Latency,
}

impl Default for Interval {
    fn default() -> Self {
        Interval {
            responses: 0,
            errors: 0,
            latency: histogram::new(),
        }
    }
}

/// A thread's recorder: the tally and the current interval.
#[derive(Debug)]
pub(super) struct Recorder {
    measure_start: Instant,
    /// The totals.
    pub tally: Tally,
    /// Since the last progress tick.
    pub interval: Interval,
}

fn us(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Recorder {
    /// A recorder that counts what was due from `measure_start` on.
    pub(super) fn new(measure_start: Instant) -> Recorder {
        Recorder {
            measure_start,
            tally: Tally::default(),
            interval: Interval::default(),
        }
    }

    /// A response to a request due at `intended`, sent at `sent`, complete
    /// at `done`.
    pub(super) fn response(
        &mut self,
        intended: Instant,
        sent: Instant,
        done: Instant,
        status: u16,
        body: u64,
    ) {
        let latency = us(done.saturating_duration_since(intended));
        self.interval.responses += 1;
        histogram::record(&mut self.interval.latency, latency);
        if intended < self.measure_start {
            self.tally.warmup += 1;
            return;
        }
        let t = &mut self.tally;
        t.responses += 1;
        t.body_bytes += body;
        if let Some(slot) = t.status.get_mut(usize::from(status)) {
            *slot += 1;
        }
        histogram::record(&mut t.latency, latency);
        histogram::record(&mut t.lag, us(sent.saturating_duration_since(intended)));
        t.last_done = Some(done);
    }

    /// A failure of kind `kind`; `at` is when the request was due (or the
    /// connect started), to tell warm-up from measurement.
    pub(super) fn error(&mut self, kind: ErrorKind, at: Instant, why: &dyn std::fmt::Display) {
        self.interval.errors += 1;
        if at < self.measure_start {
            self.tally.warmup += 1;
            return;
        }
        let i = kind as usize;
        self.tally.errors[i] += 1;
        if self.tally.first_error[i].is_none() {
            self.tally.first_error[i] = Some(why.to_string());
        }
    }

    /// Requests that were due in the measured window but never sent.
    pub(super) fn unsent(&mut self, n: u64) {
        self.tally.unsent += n;
    }

    /// A connection was opened.
    pub(super) fn connected(&mut self) {
        self.tally.connects += 1;
    }

    /// Hands over the interval counters and starts a new interval.
    pub(super) fn take_interval(&mut self) -> Interval {
        std::mem::take(&mut self.interval)
    }
}
