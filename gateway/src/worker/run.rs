//! A worker's thread of control: its command loop (reloads, scrapes,
//! shutdown), its listeners' accept loops, and the periodic sweeps of its
//! pools and flushes of its telemetry.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use futures_channel::mpsc::UnboundedReceiver;
use futures_core::Stream;
use monoio::net::TcpListener;
use ringway_config::Snapshot;

use super::slots::{self, Slot};
use super::state::{Sinks, Worker};
use crate::clock;
use crate::downstream::accept;
use crate::drain::Signal;
use crate::metrics::{MetricsReport, bump};
use crate::upstream::cluster::HealthTable;

/// How often a worker drops expired idle upstream connections.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How long a draining worker keeps idle keep-alive connections open for
/// a last request once nothing is in flight.
const LINGER: Duration = Duration::from_secs(1);
/// How often, at most, a worker hands its log lines and spans over, at the latest.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// What the control thread tells a worker.
#[derive(Debug)]
pub enum Command {
    /// Serve from `snapshot` from now on. `sockets` holds this worker's
    /// socket for each listener that is new in it; `done` hears the
    /// worker's id once it has switched.
    Reload {
        /// The new snapshot, as published.
        snapshot: Arc<Snapshot>,
        /// Its endpoints' health.
        health: Arc<HealthTable>,
        /// Where its access log lines and spans go.
        sinks: Sinks,
        /// Sockets for new listeners, by listener name.
        sockets: Vec<(String, std::net::TcpListener)>,
        /// Acknowledgement.
        done: Sender<usize>,
    },
    /// Send a copy of this worker's counters.
    Scrape(Sender<MetricsReport>),
    /// Stop accepting, drain, exit.
    Shutdown,
}

/// A listener this worker accepts on.
#[derive(Debug)]
struct Accepting {
    /// The address as configured (port 0 stays 0), to tell whether a
    /// reload changed it.
    configured: SocketAddr,
    stop: Rc<Signal>,
}

/// The listeners a worker accepts on, by name.
#[derive(Debug, Default)]
struct Listening(HashMap<String, Accepting>);

impl Listening {
    /// Closes the listeners `snapshot` no longer has (or has at another
    /// address).
    fn keep_only(&mut self, snapshot: &Snapshot) {
        self.0.retain(|name, accepting| {
            let keep = snapshot
                .listeners
                .iter()
                .any(|l| &l.name == name && l.addr == accepting.configured);
            if !keep {
                accepting.stop.fire();
            }
            keep
        });
    }

    /// Starts accepting on `sockets`, named after their listeners.
    fn open(&mut self, worker: &Rc<Worker>, sockets: Vec<(String, std::net::TcpListener)>) {
        let current = worker.current();
        for (name, socket) in sockets {
            let Some(config) = current.listener(&name) else {
                continue;
            };
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    // A worker may hold several sockets of one listener
                    // (handed over by a process with more workers): they
                    // stop together.
                    let stop = self
                        .0
                        .entry(name.clone())
                        .or_insert_with(|| Accepting {
                            configured: config.addr,
                            stop: Rc::new(Signal::default()),
                        })
                        .stop
                        .clone();
                    monoio::spawn(accept_loop(worker.clone(), name, listener, stop));
                }
                Err(e) => crate::say!("ringway: worker {}: listener {name}: {e}", worker.id),
            }
        }
    }
}

/// Runs a worker until told to shut down and its in-flight requests are
/// done (or the drain deadline passes).
pub(crate) async fn run(
    worker: Rc<Worker>,
    sockets: Vec<(String, std::net::TcpListener)>,
    mut commands: UnboundedReceiver<Command>,
) {
    let mut listening = Listening::default();
    listening.open(&worker, sockets);
    monoio::spawn(sweep_loop(worker.clone()));
    monoio::spawn(flush_loop(worker.clone()));
    loop {
        match poll_fn(|cx| Pin::new(&mut commands).poll_next(cx)).await {
            Some(Command::Reload {
                snapshot,
                health,
                sinks,
                sockets,
                done,
            }) => {
                worker.switch_to(snapshot.clone(), &health, sinks);
                listening.keep_only(&snapshot);
                listening.open(&worker, sockets);
                let _ = done.send(worker.id);
                // After the acknowledgement: the reload does not wait on it.
                crate::memory::release_freed();
            }
            Some(Command::Scrape(reply)) => {
                let _ = reply.send(worker.report());
            }
            // A closed channel means the control thread is gone: drain too.
            Some(Command::Shutdown) | None => break,
        }
    }
    worker.drain.start();
    let drain_timeout = worker.current().snapshot.runtime.drain_timeout;
    let deadline = monoio::time::Instant::now() + drain_timeout;
    let finished = monoio::time::timeout_at(deadline, worker.drain.idle()).await;
    if finished.is_ok() {
        // A keep-alive client between two requests is not in flight, and
        // its next request may already be on the way: ending now would
        // reset it. Idle connections linger a moment; a request that
        // arrives is served (with `Connection: close`), and the worker
        // ends as soon as every connection has closed.
        let linger = monoio::time::Instant::now() + LINGER;
        let _ = monoio::time::timeout_at(linger.min(deadline), worker.drain.closed()).await;
    }
    if monoio::time::timeout_at(deadline, worker.drain.idle())
        .await
        .is_err()
    {
        crate::say!(
            "ringway: worker {}: drain deadline passed with {} request(s) in flight",
            worker.id,
            worker.drain.in_flight()
        );
    }
    worker.flush(true);
}

async fn accept_loop(worker: Rc<Worker>, name: String, listener: TcpListener, stop: Rc<Signal>) {
    // This listener's connections open on this worker.
    let open_here = Rc::new(Cell::new(0u32));
    let mut errors_in_a_row = 0u32;
    loop {
        // At a connection cap, stop accepting: new connections wait in
        // the kernel's backlog and are served as slots free.
        let current = worker.current();
        let listener_cap = current.listener(&name).map_or(u32::MAX, |l| {
            slots::share(l.max_connections, worker.workers)
        });
        let worker_cap = slots::share(current.snapshot.runtime.max_connections, worker.workers);
        drop(current);
        let free = || open_here.get() < listener_cap && worker.slots.open() < worker_cap;
        if !free() {
            bump(&worker.metrics.accept_paused);
            monoio::select! {
                _ = worker.slots.wait(free) => continue,
                _ = stop.fired() => break,
                _ = worker.drain.started() => break,
            }
        }
        // When told to stop, an io_uring accept is cancelled and then
        // awaited, not dropped: one the kernel completed meanwhile yields
        // its connection, which is served (dropping the operation would
        // leak the accepted socket, and its client would wait for an
        // answer until the process exits).
        let readiness = accepts_by_readiness(&worker);
        let canceller = monoio::io::Canceller::new();
        let mut accepting = std::pin::pin!(accept_next(&listener, readiness, canceller.handle()));
        let mut stopping = std::pin::pin!(async {
            monoio::select! {
                _ = stop.fired() => {},
                _ = worker.drain.started() => {},
            }
        });
        let outcome = poll_fn(|cx| {
            if let std::task::Poll::Ready(accepted) = accepting.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(accepted));
            }
            stopping.as_mut().poll(cx).map(|()| None)
        })
        .await;
        let (accepted, last) = match outcome {
            Some(accepted) => (accepted, false),
            // A readiness wait holds no connection: dropped as it is.
            None if readiness => break,
            None => {
                let _ = canceller.cancel();
                (accepting.await, true)
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                errors_in_a_row = 0;
                let slot = Slot::take(&worker.slots, &open_here);
                // Counted from here, so that a drain waits for a PROXY
                // header or TLS handshake in progress too.
                let open = worker.drain.connection();
                // Settings come from the generation current at accept.
                let current = worker.current();
                if let Some(listener) = current.listener(&name) {
                    let tls = current.tls(&name);
                    if listener.tls.is_some() && tls.is_none() {
                        continue;
                    }
                    // One box holds all the connection's task keeps
                    // between requests (see `accept::Accepted`).
                    let accepted = Box::new(accept::Accepted {
                        worker: worker.clone(),
                        listener,
                        tls,
                        client: Some(stream),
                        peer,
                        _hold: (slot, open),
                    });
                    if accepted.tls.is_some() {
                        monoio::spawn(clock::per_poll(accept::serve_tls(accepted)));
                    } else {
                        monoio::spawn(clock::per_poll(accept::serve_plain(accepted)));
                    }
                }
            }
            // The cancelled accept's own answer.
            Err(_) if last => {}
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: back
                // off instead of spinning, keep serving what is open,
                // and say so once per run of errors, not per try.
                bump(&worker.metrics.accept_errors);
                if errors_in_a_row == 0 {
                    crate::say!(
                        "ringway: worker {}: accept on {name}: {e}; backing off",
                        worker.id
                    );
                }
                errors_in_a_row = errors_in_a_row.saturating_add(1);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if last {
            break;
        }
    }
    // Dropping the listener closes it: new connections are refused.
}

/// The next connection on `listener`. Normally io_uring's accept. Right
/// after a hot upgrade, while the old process may still hold the same
/// socket, readiness and a non-blocking `accept(2)` instead: io_uring waits
/// for an accept as an exclusive waiter, and the kernel wakes only the
/// first exclusive waiter per connection; if that is the old process's
/// accept being cancelled as it drains, the wake-up is lost and the
/// connection waits in the queue until another one arrives (seen: 20 s
/// stalls under load). A readiness poll is not exclusive: every poller
/// wakes, one accepts, the others find the queue empty and wait again.
/// `cancel` cancels an io_uring accept (whose answer is then awaited).
async fn accept_next(
    listener: &TcpListener,
    readiness: bool,
    cancel: monoio::io::CancelHandle,
) -> std::io::Result<(monoio::net::TcpStream, SocketAddr)> {
    if !readiness {
        return listener.cancelable_accept(cancel).await;
    }
    loop {
        match try_accept(listener) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                listener.readable(false).await?;
            }
            accepted => return accepted,
        }
    }
}

/// Whether `worker` still shares its sockets with a process it took over
/// from (see [`accept_next`]).
fn accepts_by_readiness(worker: &Worker) -> bool {
    worker
        .accept_by_readiness_until
        .get()
        .is_some_and(|until| std::time::Instant::now() < until)
}

/// A non-blocking `accept(2)` on `listener` (whose socket is non-blocking).
fn try_accept(listener: &TcpListener) -> std::io::Result<(monoio::net::TcpStream, SocketAddr)> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor is `listener`'s, open for the whole call.
    let fd = unsafe { BorrowedFd::borrow_raw(listener.as_raw_fd()) };
    let (socket, addr) = socket2::SockRef::from(&fd).accept()?;
    let peer = addr
        .as_socket()
        .ok_or_else(|| std::io::Error::other("accepted a connection that is not TCP/IP"))?;
    socket.set_nonblocking(true)?;
    Ok((monoio::net::TcpStream::from_std(socket.into())?, peer))
}

async fn flush_loop(worker: Rc<Worker>) {
    while !worker.drain.is_draining() {
        monoio::time::sleep(FLUSH_INTERVAL).await;
        worker.flush(true);
    }
}

async fn sweep_loop(worker: Rc<Worker>) {
    while !worker.drain.is_draining() {
        monoio::time::sleep(SWEEP_INTERVAL).await;
        worker.upstreams.h1.sweep();
        worker.upstreams.h2.sweep();
    }
}
