//! Per-worker keep-alive pool of upstream connections, keyed by endpoint
//! address so that a reload keeps the connections of endpoints that stay.
//!
//! Owned by one worker and never shared: `RefCell`, no lock. Newest idle
//! connections are reused first (they are the least likely to have been
//! closed by the upstream); expired ones are dropped when met and by a
//! periodic sweep.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::buffer::ReadBuf;

/// A connection to an upstream endpoint and its read buffer.
#[derive(Debug)]
pub struct UpstreamConn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read from it and not yet used.
    pub rbuf: ReadBuf,
    /// Taken from the pool rather than freshly connected: the upstream may
    /// have closed it meanwhile.
    pub reused: bool,
    /// Counts the connection against its cluster's limit while it lives.
    pub tally: Option<crate::cluster::Tally>,
}

#[derive(Debug)]
struct Idle {
    conn: UpstreamConn,
    expires: Instant,
}

/// The idle upstream connections of one worker.
#[derive(Debug, Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
    opened: Cell<u64>,
    reused: Cell<u64>,
}

impl Pool {
    /// An idle connection to `addr`, if one is left that has not expired.
    pub fn take(&self, addr: SocketAddr) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(conn) = list.pop() {
            if conn.expires > now {
                self.reused.set(self.reused.get() + 1);
                let mut conn = conn.conn;
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Counts a freshly opened connection.
    pub fn note_opened(&self) {
        self.opened.set(self.opened.get() + 1);
    }

    /// Keeps `conn` for reuse for `idle_timeout`, unless `max_idle` are kept
    /// already.
    pub fn put(
        &self,
        addr: SocketAddr,
        conn: UpstreamConn,
        idle_timeout: Duration,
        max_idle: usize,
    ) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= max_idle {
            return;
        }
        list.push(Idle {
            conn,
            expires: Instant::now() + idle_timeout,
        });
    }

    /// Drops expired idle connections.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|c| c.expires > now);
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Idle connections kept for `addr` now.
    pub fn idle(&self, addr: SocketAddr) -> usize {
        self.idle.borrow().get(&addr).map_or(0, Vec::len)
    }

    /// Connections opened and reused so far, for metrics and tests.
    pub fn counts(&self) -> (u64, u64) {
        (self.opened.get(), self.reused.get())
    }
}
