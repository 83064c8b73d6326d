//! The origin's counters: one cache-line-sized slot per worker, written
//! only by that worker (a plain load and store, no read-modify-write
//! across cores), summed only when someone asks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One worker's counters, padded so that two workers never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    h1_requests: AtomicU64,
    h2_requests: AtomicU64,
    connections: AtomicU64,
    tls_connections: AtomicU64,
    bad: AtomicU64,
}

/// Every worker's counters.
#[derive(Debug)]
pub struct Stats {
    slots: Box<[Slot]>,
}

/// The sum over workers, as `/__ringload/stats` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Requests received (h1 and h2), not counting stats requests.
    pub requests: u64,
    /// Of which HTTP/1.1.
    pub h1_requests: u64,
    /// Of which HTTP/2 streams.
    pub h2_requests: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Of which completed a TLS handshake.
    pub tls_connections: u64,
    /// Malformed requests and failed handshakes.
    pub bad: u64,
}

/// Only the slot's own worker writes it, so load-then-store loses nothing.
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed) + 1, Relaxed);
}

impl Stats {
    /// Counters for `workers` workers.
    pub fn new(workers: usize) -> Stats {
        Stats {
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
        }
    }

    fn slot(&self, worker: usize) -> &Slot {
        &self.slots[worker % self.slots.len()]
    }

    /// An HTTP/1.1 request was received by `worker`.
    pub fn h1_request(&self, worker: usize) {
        bump(&self.slot(worker).h1_requests);
    }

    /// An HTTP/2 stream was received by `worker`.
    pub fn h2_request(&self, worker: usize) {
        bump(&self.slot(worker).h2_requests);
    }

    /// A connection was accepted by `worker`.
    pub fn connection(&self, worker: usize) {
        bump(&self.slot(worker).connections);
    }

    /// A TLS handshake completed on `worker`.
    pub fn tls_connection(&self, worker: usize) {
        bump(&self.slot(worker).tls_connections);
    }

    /// A malformed request or failed handshake on `worker`.
    pub fn bad(&self, worker: usize) {
        bump(&self.slot(worker).bad);
    }

    /// The sum over workers.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.slots.iter() {
            t.h1_requests += s.h1_requests.load(Relaxed);
            t.h2_requests += s.h2_requests.load(Relaxed);
            t.connections += s.connections.load(Relaxed);
            t.tls_connections += s.tls_connections.load(Relaxed);
            t.bad += s.bad.load(Relaxed);
        }
        t.requests = t.h1_requests + t.h2_requests;
        t
    }
}
