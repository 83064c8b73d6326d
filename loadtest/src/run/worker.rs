//! One load thread: its runtime, its connections (each reconnecting until
//! the run ends), its recorder, a progress ticker and a watchdog.
//!
//! The watchdog is why no wait can hang: instead of a timer per read, it
//! looks at every connection every few milliseconds and shuts down the
//! socket of any whose request is overdue (or everything after the hard
//! end). The pending read then completes with end-of-file, and the
//! connection counts a timeout.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::net::TcpStream;
use monoio_compat::StreamWrapper;
use monoio_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use super::recorder::{ErrorKind, Interval, Recorder, Tally};
use super::schedule::{Lane, Schedule, Tickets};
use super::target::{RequestTemplate, Target};
use super::{h1, h2};
use crate::runtime;

/// How often the watchdog looks.
const WATCH_EVERY: Duration = Duration::from_millis(5);
/// The longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

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
    fn new(slots: usize) -> ConnGuard {
        ConnGuard {
            fd: Cell::new(-1),
            deadlines: (0..slots.max(1)).map(|_| Cell::new(None)).collect(),
            timed_out: Cell::new(false),
        }
    }

    fn attach(&self, fd: RawFd) {
        self.fd.set(fd);
        self.timed_out.set(false);
        for d in self.deadlines.iter() {
            d.set(None);
        }
    }

    /// Must run before the socket is closed, so that a reused descriptor
    /// number is never shut down by mistake.
    fn detach(&self) {
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

    fn check(&self, now: Instant, hard_end: Instant) {
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
    guards: RefCell<Vec<Rc<ConnGuard>>>,
    done: Cell<bool>,
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

/// Runs thread `tid` to the end of the run and returns its tally.
pub(super) fn thread_main(
    tid: usize,
    cpu: Option<usize>,
    plan: Arc<Plan>,
    progress: mpsc::Sender<Tick>,
) -> crate::Result<Tally> {
    if let Some(cpu) = cpu {
        runtime::pin_to(cpu);
    }
    let mut rt = runtime::build()?;
    let tickets = plan.requests.map(|n| {
        let per = n / plan.threads as u64;
        per + u64::from((tid as u64) < n % plan.threads as u64)
    });
    let ctx = Rc::new(ThreadCtx {
        rec: RefCell::new(Recorder::new(plan.schedule.measure_start)),
        tickets: Tickets::new(tickets),
        guards: RefCell::new(Vec::new()),
        done: Cell::new(false),
        plan,
    });
    let tally = rt.block_on(async move {
        let plan = ctx.plan.clone();
        let streams = match plan.protocol {
            Protocol::H1 { .. } => 1,
            Protocol::H2 { streams } => streams,
        };
        let mut handles = Vec::new();
        for conn in (tid..plan.connections).step_by(plan.threads) {
            let guard = Rc::new(ConnGuard::new(streams));
            ctx.guards.borrow_mut().push(guard.clone());
            let lanes: Vec<Rc<Lane>> = (0..streams)
                .map(|s| Rc::new(Lane::new((conn * streams + s) as u64)))
                .collect();
            handles.push(monoio::spawn(connection(ctx.clone(), guard, lanes)));
        }
        monoio::spawn(watchdog(ctx.clone()));
        monoio::spawn(ticker(ctx.clone(), progress.clone()));
        for h in handles {
            h.await;
        }
        ctx.done.set(true);
        let mut rec = ctx.rec.borrow_mut();
        let interval = rec.take_interval();
        let _ = progress.send(Tick { interval });
        rec.tally.clone()
    });
    Ok(tally)
}

async fn watchdog(ctx: Rc<ThreadCtx>) {
    let hard_end = ctx.plan.schedule.hard_end;
    while !ctx.done.get() {
        monoio::time::sleep(WATCH_EVERY).await;
        let now = Instant::now();
        for g in ctx.guards.borrow().iter() {
            g.check(now, hard_end);
        }
    }
}

async fn ticker(ctx: Rc<ThreadCtx>, progress: mpsc::Sender<Tick>) {
    let mut next = ctx.plan.schedule.start + Duration::from_secs(1);
    loop {
        monoio::time::sleep_until(monoio::time::Instant::from_std(next)).await;
        if ctx.done.get() {
            return;
        }
        let interval = ctx.rec.borrow_mut().take_interval();
        if progress.send(Tick { interval }).is_err() {
            return;
        }
        next += Duration::from_secs(1);
    }
}

fn run_over(ctx: &ThreadCtx, lanes: &[Rc<Lane>]) -> bool {
    let s = &ctx.plan.schedule;
    Instant::now() >= s.end
        || match s.rate {
            Some(_) => lanes.iter().all(|l| l.next_due(s).is_none()),
            None => false,
        }
}

/// One connection slot: connects, runs sessions, reconnects after
/// failures with a growing pause, until the run is over.
async fn connection(ctx: Rc<ThreadCtx>, guard: Rc<ConnGuard>, lanes: Vec<Rc<Lane>>) {
    let plan = ctx.plan.clone();
    let s = &plan.schedule;
    let mut backoff = Duration::from_millis(5);
    let mut first = true;
    while !run_over(&ctx, &lanes) {
        let began = Instant::now();
        // Failures before the start belong to the first measured second
        // when there is no warm-up, not to a warm-up that does not exist.
        let at = if began < s.start {
            s.measure_start
        } else {
            began
        };
        let limit = plan
            .connect_timeout
            .min(s.hard_end.saturating_duration_since(began));
        let stream =
            match monoio::time::timeout(limit, TcpStream::connect_addr(plan.target.addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    ctx.error(ErrorKind::Connect, at, &e);
                    pause(&ctx, &mut backoff).await;
                    continue;
                }
                Err(_) => {
                    ctx.error(ErrorKind::Connect, at, &"connect timed out");
                    pause(&ctx, &mut backoff).await;
                    continue;
                }
            };
        let _ = stream.set_nodelay(true);
        ctx.rec.borrow_mut().connected();
        guard.attach(std::os::fd::AsRawFd::as_raw_fd(&stream));
        if first {
            first = false;
            if Instant::now() < s.start {
                monoio::time::sleep_until(monoio::time::Instant::from_std(s.start)).await;
            }
        }
        let end = session(&ctx, &guard, &lanes, stream, at).await;
        guard.detach();
        match end {
            SessionEnd::Done => break,
            SessionEnd::Reconnect => backoff = Duration::from_millis(5),
            SessionEnd::Failed => pause(&ctx, &mut backoff).await,
        }
    }
    if s.rate.is_some() {
        let unsent: u64 = lanes.iter().map(|l| l.remaining_measured(s)).sum();
        ctx.rec.borrow_mut().unsent(unsent);
    }
}

async fn pause(ctx: &ThreadCtx, backoff: &mut Duration) {
    let left = ctx
        .plan
        .schedule
        .end
        .saturating_duration_since(Instant::now());
    monoio::time::sleep((*backoff).min(left)).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// Runs the TLS handshake if any, then the protocol.
async fn session(
    ctx: &Rc<ThreadCtx>,
    guard: &Rc<ConnGuard>,
    lanes: &[Rc<Lane>],
    stream: TcpStream,
    at: Instant,
) -> SessionEnd {
    let plan = &ctx.plan;
    let Some(Tls { config, name }) = &plan.tls else {
        return match plan.protocol {
            Protocol::H1 { .. } => h1::session(stream, ctx, guard, &lanes[0]).await,
            Protocol::H2 { .. } => {
                h2::session(StreamWrapper::new(stream), ctx, guard, lanes, at).await
            }
        };
    };
    guard.arm(0, Instant::now() + plan.connect_timeout);
    match plan.protocol {
        Protocol::H1 { .. } => {
            let connected = TlsConnector::from(config.clone())
                .connect(name.clone(), stream)
                .await;
            guard.disarm(0);
            match connected {
                Ok(tls) => h1::session(tls, ctx, guard, &lanes[0]).await,
                Err(e) => {
                    ctx.error(
                        ErrorKind::Connect,
                        at,
                        &format!("TLS handshake: {}", std::io::Error::from(e)),
                    );
                    SessionEnd::Failed
                }
            }
        }
        Protocol::H2 { .. } => {
            // tokio-rustls here, not monoio-rustls: see Cargo.toml.
            let connected = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), StreamWrapper::new(stream))
                .await;
            guard.disarm(0);
            let tls = match connected {
                Ok(tls) => tls,
                Err(e) => {
                    ctx.error(ErrorKind::Connect, at, &format!("TLS handshake: {e}"));
                    return SessionEnd::Failed;
                }
            };
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                ctx.error(
                    ErrorKind::Connect,
                    at,
                    &"the server did not accept h2 by ALPN",
                );
                return SessionEnd::Failed;
            }
            h2::session(tls, ctx, guard, lanes, at).await
        }
    }
}
