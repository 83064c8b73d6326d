//! One load thread: its runtime, its connections (each reconnecting until
//! the run ends), its recorder, a progress ticker and a watchdog.
//!
//! The watchdog is why no wait can hang: instead of a timer per read, it
//! looks at every connection every few milliseconds and shuts down the
//! socket of any whose request is overdue (or everything after the hard
//! end). The pending read then completes with end-of-file, and the
//! connection counts a timeout.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use monoio_compat::StreamWrapper;
use monoio_rustls::TlsConnector;

use super::recorder::{ErrorKind, Recorder, Tally};
use super::schedule::{Lane, Tickets};
use super::session::{ConnGuard, Plan, Protocol, SessionEnd, ThreadCtx, Tick, Tls};
use super::{h1, h2};
use crate::runtime;

/// How often the watchdog looks.
const WATCH_EVERY: Duration = Duration::from_millis(5);
/// The longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

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
