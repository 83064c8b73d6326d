//! What a load-generating thread and its HTTP/1.1 and HTTP/2 sessions
//! share: the plan, the connection guard, the thread context and how a
//! session ends.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::ServerName;

use super::recorder::{ErrorKind, Interval, Recorder};
use super::schedule::{Schedule, Tickets};
use super::target::{RequestTemplate, Target};

/// HTTP version and its concurrency knob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    /// HTTP/1.1 with this many requests pipelined per batch.
    H1 {
        /// Pipeline depth (1: none).
        depth: usize,
    },
    /// HTTP/2 with this many concurrent streams per connection.
    H2 {
        /// Streams per connection.
        streams: usize,
    },
}

/// Everything the threads share, read-only.
#[derive(Debug)]
pub(super) struct Plan {
    /// Where.
    pub target: Target,
    /// What.
    pub template: RequestTemplate,
    /// How.
    pub protocol: Protocol,
    /// TLS, when the URL is https.
    pub tls: Option<Tls>,
    /// One HTTP/1.1 request, repeated for the pipeline depth.
    pub h1_bytes: Bytes,
    /// Length of one HTTP/1.1 request in `h1_bytes`.
    pub h1_len: usize,
    /// The h2 request URI.
    pub h2_uri: http::Uri,
    /// HEAD requests get no body back.
    pub head: bool,
    /// Clock and limits.
    pub schedule: Schedule,
    /// Per-request deadline.
    pub timeout: Duration,
    /// Per-connect deadline (TCP plus TLS plus h2 handshake).
    pub connect_timeout: Duration,
    /// Connections in total.
    pub connections: usize,
    /// Threads in total.
    pub threads: usize,
    /// Closed loop `-n`.
    pub requests: Option<u64>,
}

/// The client side of TLS: the configuration and the name to present.
pub(super) struct Tls {
    /// rustls configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// SNI and the name the certificate must carry.
    pub name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A thread's progress since its last report.
#[derive(Debug)]
pub(super) struct Tick {
    /// The interval's counters.
    pub interval: Interval,
}

/// What a connection's watchdog needs to know about it.
#[derive(Debug)]
pub(super) struct ConnGuard {
    fd: Cell<RawFd>,
    deadlines: Box<[Cell<Option<Instant>>]>,
    timed_out: Cell<bool>,
}

impl ConnGuard {
    pub(super) fn new(slots: usize) -> ConnGuard {
        ConnGuard {
            fd: Cell::new(-1),
            deadlines: (0..slots.max(1)).map(|_| Cell::new(None)).collect(),
            timed_out: Cell::new(false),
        }
    }

    pub(super) fn attach(&self, fd: RawFd) {
        self.fd.set(fd);
        self.timed_out.set(false);
        for d in self.deadlines.iter() {
            d.set(None);
        }
    }

    /// Must run before the socket is closed, so that a reused descriptor
    /// number is never shut down by mistake.
    pub(super) fn detach(&self) {
        self.fd.set(-1);
    }

    /// Slot `slot` has a request (or handshake) due to finish by `at`.
    pub(super) fn arm(&self, slot: usize, at: Instant) {
        if let Some(d) = self.deadlines.get(slot) {
            d.set(Some(at));
        }
    }

    /// Slot `slot` is idle.
    pub(super) fn disarm(&self, slot: usize) {
        if let Some(d) = self.deadlines.get(slot) {
            d.set(None);
        }
    }

    /// Whether the watchdog cut this connection.
    pub(super) fn timed_out(&self) -> bool {
        self.timed_out.get()
    }

    pub(super) fn check(&self, now: Instant, hard_end: Instant) {
        let fd = self.fd.get();
        if fd < 0 {
            return;
        }
        let overdue = self
            .deadlines
            .iter()
            .any(|d| d.get().is_some_and(|at| at <= now));
        if overdue || now >= hard_end {
            self.timed_out.set(true);
            self.fd.set(-1);
            // SAFETY: `fd` is the open socket of a live connection (detach
            // clears it before the socket closes); shutdown only changes
            // its state, it does not close or free anything.
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
            }
        }
    }
}

/// A thread's shared state.
#[derive(Debug)]
pub(super) struct ThreadCtx {
    pub(super) plan: Arc<Plan>,
    pub(super) rec: RefCell<Recorder>,
    pub(super) tickets: Tickets,
    pub(super) guards: RefCell<Vec<Rc<ConnGuard>>>,
    pub(super) done: Cell<bool>,
}

impl ThreadCtx {
    /// Records an error.
    pub(super) fn error(&self, kind: ErrorKind, at: Instant, why: &dyn std::fmt::Display) {
        self.rec.borrow_mut().error(kind, at, why);
    }

    /// Records a response.
    pub(super) fn response(&self, intended: Instant, sent: Instant, status: u16, body: u64) {
        self.rec
            .borrow_mut()
            .response(intended, sent, Instant::now(), status, body);
    }
}

/// How a session on one connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SessionEnd {
    /// Nothing more to send.
    Done,
    /// The connection broke or was closed: open another.
    Reconnect,
    /// The handshake failed: open another after a pause.
    Failed,
}

/// Classifies an I/O error on a connection.
pub(super) fn io_kind(e: &std::io::Error, guard: &ConnGuard) -> ErrorKind {
    if guard.timed_out() {
        ErrorKind::Timeout
    } else if e.kind() == std::io::ErrorKind::InvalidData {
        ErrorKind::Protocol
    } else {
        ErrorKind::Reset
    }
}
