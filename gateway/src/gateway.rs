//! The running gateway as the control thread sees it: the worker
//! threads, their listening sockets, the published snapshot, the health
//! checker and the telemetry writers; starting, reloading, scraping and
//! stopping them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::worker::run::Command;
use futures_channel::mpsc::UnboundedSender;
use ringway_config::{IoDriver, Listener, Published, Snapshot, Workers};

use crate::runtime::{self, DriverInfo};
use crate::{access_log, health, metrics, trace, upgrade, worker};

/// Overrides from the command line, over the file's `[runtime]`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Worker count.
    pub workers: Option<usize>,
    /// I/O driver.
    pub io: Option<IoDriver>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener's socket could not be opened.
    #[error("listener {name}: cannot listen on {addr}: {source}")]
    Listen {
        /// The listener.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A worker could not start.
    #[error("worker {worker}: {message}")]
    Worker {
        /// Which.
        worker: usize,
        /// Why, and what to change.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Backlog of each listening socket.
const LISTEN_BACKLOG: i32 = 1024;
/// How long past its own drain timeout a new process assumes the old one
/// may still hold the listening sockets it handed over.
const SHARED_SOCKETS_MARGIN: Duration = Duration::from_secs(3);
/// How long a reload waits for every worker to switch.
const RELOAD_ACK: Duration = Duration::from_secs(5);

/// A running gateway. Dropping it shuts it down and waits for the drain.
#[derive(Debug)]
pub struct Gateway {
    workers: Vec<WorkerThread>,
    listeners: Vec<(String, SocketAddr)>,
    driver: DriverInfo,
    published: Arc<Published>,
    health: health::HealthChecker,
    telemetry: Telemetry,
    /// What the last start or reload did to the balancer tables.
    tables: ringway_config::TableBuild,
    /// A copy of every listening socket (the workers own theirs), by
    /// [`upgrade::listener_key`]: handed to a new process on upgrade.
    held: Vec<(String, Vec<std::net::TcpListener>)>,
}

/// The access log writer and span exporter in use, with the settings they
/// were started for, so that a reload restarts them only when those change.
#[derive(Debug, Default)]
struct Telemetry {
    log: Option<(ringway_config::AccessLog, access_log::LogSink)>,
    spans: Option<(ringway_config::OtlpEndpoint, String, trace::SpanSink)>,
}

impl Telemetry {
    /// Sinks for `snapshot`, starting writers whose settings changed.
    fn sinks_for(&mut self, snapshot: &Snapshot) -> worker::state::Sinks {
        match &snapshot.access_log {
            None => self.log = None,
            Some(config) if self.log.as_ref().is_some_and(|(c, _)| c == config) => {}
            Some(config) => match access_log::spawn_writer(config) {
                Ok(sink) => self.log = Some((config.clone(), sink)),
                Err(e) => {
                    say!("ringway: cannot open the access log: {e}");
                    self.log = None;
                }
            },
        }
        let tracing = &snapshot.tracing;
        match &tracing.otlp {
            None => self.spans = None,
            Some(endpoint)
                if self
                    .spans
                    .as_ref()
                    .is_some_and(|(e, n, _)| e == endpoint && *n == tracing.service_name) => {}
            Some(endpoint) => {
                match trace::spawn_exporter(endpoint.clone(), tracing.service_name.clone()) {
                    Ok(sink) => {
                        self.spans = Some((endpoint.clone(), tracing.service_name.clone(), sink))
                    }
                    Err(e) => {
                        say!("ringway: cannot start the OTLP exporter: {e}");
                        self.spans = None;
                    }
                }
            }
        }
        worker::state::Sinks {
            log: self.log.as_ref().map(|(_, s)| s.clone()),
            spans: self.spans.as_ref().map(|(_, _, s)| s.clone()),
        }
    }
}

#[derive(Debug)]
struct WorkerThread {
    thread: Option<JoinHandle<()>>,
    commands: UnboundedSender<Command>,
}

impl Gateway {
    /// Opens the listeners and starts the workers; returns once every
    /// worker runs (or the first that could not start, with why).
    pub fn start(snapshot: Snapshot, options: &Options) -> Result<Gateway> {
        Gateway::start_inheriting(snapshot, options, &mut upgrade::Sockets::default())
    }

    /// As [`Gateway::start`], serving each listener on the sockets a
    /// previous process handed over for it (`inherited`, taken from), and
    /// opening sockets only for the listeners it had none for.
    pub fn start_inheriting(
        snapshot: Snapshot,
        options: &Options,
        inherited: &mut upgrade::Sockets,
    ) -> Result<Gateway> {
        // Before any TLS listener makes its ticketer: sessions the old
        // process issued tickets for resume here.
        if let Some(keys) = inherited.tickets.take()
            && !crate::tickets::adopt(&keys)
        {
            say!(
                "ringway: upgrade: the session-ticket keys handed over were not usable; new ones made"
            );
        }
        let cpus = runtime::allowed_cpus();
        let count = options
            .workers
            .unwrap_or(match snapshot.runtime.workers {
                Workers::Auto => cpus.len(),
                Workers::Count(n) => n,
            })
            .max(1);
        let io = options.io.unwrap_or(snapshot.runtime.io);
        let mut snapshot = snapshot;
        let tables = snapshot.build_tables(None);
        say_tables(&tables);
        let published = Arc::new(Published::new(snapshot));
        let snapshot = published.load();
        let mut checker = health::HealthChecker::seeded(inherited.take_verdicts());
        let table = checker.update(&snapshot);
        let mut telemetry = Telemetry::default();
        let sinks = telemetry.sinks_for(&snapshot);

        let took_over = !inherited.is_empty();
        let mut listeners = Vec::with_capacity(snapshot.listeners.len());
        let mut held = Vec::with_capacity(snapshot.listeners.len());
        let mut sockets: Vec<Vec<(String, std::net::TcpListener)>> =
            (0..count).map(|_| Vec::new()).collect();
        for l in &snapshot.listeners {
            let key = upgrade::listener_key(&l.name, l.addr);
            let (bound, copies) = open_sockets(l, &mut sockets, inherited.take(&key))?;
            listeners.push((l.name.clone(), bound));
            held.push((key, copies));
        }

        // Sockets taken over from a process that is about to drain are
        // shared with it until it has gone: see `worker::run::accept_next`.
        let sharing_until = took_over
            .then(|| Instant::now() + snapshot.runtime.drain_timeout + SHARED_SOCKETS_MARGIN);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut workers = Vec::with_capacity(count);
        for (id, worker_sockets) in sockets.into_iter().enumerate() {
            let (commands, command_rx) = futures_channel::mpsc::unbounded();
            let snapshot = snapshot.clone();
            let table = table.clone();
            let sinks = sinks.clone();
            let ready = ready_tx.clone();
            let cpu = cpus.get(id % cpus.len().max(1)).copied();
            let thread = std::thread::Builder::new()
                .name(format!("ringway-w{id}"))
                .spawn(move || {
                    if let Some(Err(e)) = cpu.map(runtime::pin_to) {
                        say!("ringway: worker {id}: {e}; running unpinned");
                    }
                    let on_ready = |r| {
                        let _ = ready.send((id, r));
                    };
                    runtime::run(io, on_ready, move || {
                        let worker =
                            worker::state::Worker::new(id, count as u32, snapshot, &table, sinks);
                        worker.accept_by_readiness_until.set(sharing_until);
                        worker::run::run(worker, worker_sockets, command_rx)
                    });
                })
                .map_err(|e| Error::Worker {
                    worker: id,
                    message: format!("cannot spawn thread: {e}"),
                })?;
            workers.push(WorkerThread {
                thread: Some(thread),
                commands,
            });
        }
        drop(ready_tx);

        let mut gateway = Gateway {
            workers,
            listeners,
            driver: DriverInfo {
                driver: io,
                flags: "",
            },
            published,
            health: checker,
            telemetry,
            tables,
            held,
        };
        for _ in 0..count {
            match ready_rx.recv() {
                Ok((_, Ok(info))) => gateway.driver = info,
                Ok((worker, Err(message))) => return Err(Error::Worker { worker, message }),
                Err(_) => {
                    return Err(Error::Worker {
                        worker: 0,
                        message: "a worker exited during start-up".to_owned(),
                    });
                }
            }
        }
        Ok(gateway)
    }

    /// Serves `next` from now on: opens its new listeners (any that cannot
    /// be opened fails the reload and leaves everything as it was),
    /// publishes it, and returns once every worker has switched to it.
    /// Requests in flight finish on the snapshot they started with.
    pub fn reload(&mut self, mut next: Snapshot) -> Result<Arc<Snapshot>> {
        let previous = self.published.load();
        let tables = next.build_tables(Some(&previous));
        say_tables(&tables);
        self.tables = tables;
        let mut sockets: Vec<Vec<(String, std::net::TcpListener)>> =
            (0..self.workers.len()).map(|_| Vec::new()).collect();
        let mut listeners = Vec::with_capacity(next.listeners.len());
        // Copies of the sockets opened for new listeners; `None` for kept.
        let mut opened = Vec::with_capacity(next.listeners.len());
        for l in &next.listeners {
            let kept = previous
                .listeners
                .iter()
                .any(|old| old.name == l.name && old.addr == l.addr);
            let (bound, copies) = match self.listener_addr(&l.name) {
                Some(bound) if kept => (bound, None),
                _ => {
                    let (bound, copies) = open_sockets(l, &mut sockets, Vec::new())?;
                    (bound, Some(copies))
                }
            };
            listeners.push((l.name.clone(), bound));
            opened.push(copies);
        }
        let mut was_held = std::mem::take(&mut self.held);
        for (l, copies) in next.listeners.iter().zip(opened) {
            let key = upgrade::listener_key(&l.name, l.addr);
            let copies = copies.or_else(|| {
                let at = was_held.iter().position(|(k, _)| *k == key)?;
                Some(was_held.swap_remove(at).1)
            });
            self.held.push((key, copies.unwrap_or_default()));
        }
        // The copies of listeners the new configuration dropped close
        // here, so that their sockets close once the workers let go.
        drop(was_held);
        if next.runtime != previous.runtime || next.admin != previous.admin {
            say!("ringway: [runtime] and [admin] changes take effect at the next restart");
        }

        let stored = self.published.prepare(next);
        let table = self.health.update(&stored);
        let sinks = self.telemetry.sinks_for(&stored);
        let (done, acks) = std::sync::mpsc::channel();
        let mut expected = 0;
        for (w, worker_sockets) in self.workers.iter().zip(sockets) {
            let command = Command::Reload {
                snapshot: stored.clone(),
                health: table.clone(),
                sinks: sinks.clone(),
                sockets: worker_sockets,
                done: done.clone(),
            };
            if w.commands.unbounded_send(command).is_ok() {
                expected += 1;
            }
        }
        let deadline = Instant::now() + RELOAD_ACK;
        for _ in 0..expected {
            let left = deadline.saturating_duration_since(Instant::now());
            if acks.recv_timeout(left).is_err() {
                say!(
                    "ringway: a worker did not confirm generation {} in time",
                    stored.generation
                );
                break;
            }
        }
        // Published once the workers serve it: the generation the admin
        // listener reports is one every worker has switched to.
        self.published.publish(stored.clone());
        self.listeners = listeners;
        // The replaced snapshot is gone unless a request still holds it.
        drop(previous);
        crate::memory::release_freed();
        Ok(stored)
    }

    /// Copies of every listening socket, keyed for a new process.
    pub fn handover_sockets(&self) -> upgrade::Sockets {
        let mut sockets = upgrade::Sockets::default();
        sockets.verdicts = self.health.verdicts();
        sockets.tickets = crate::tickets::export();
        for (key, held) in &self.held {
            let (key, fds) = upgrade::copies(key.clone(), held);
            sockets.push(key, fds);
        }
        sockets
    }

    /// What the last start or reload did to the balancer tables: built,
    /// taken over, and the bytes the served ones hold.
    pub fn tables(&self) -> ringway_config::TableBuild {
        self.tables
    }

    /// Asks every worker for its counters and waits (briefly) for them.
    pub fn scrape(&self) -> Vec<metrics::MetricsReport> {
        scrape(&self.scraper())
    }

    /// A handle the admin thread can scrape the workers with.
    pub fn scraper(&self) -> Vec<UnboundedSender<Command>> {
        self.workers.iter().map(|w| w.commands.clone()).collect()
    }

    /// Reopens the access log file (after rotation moved it away).
    pub fn reopen_logs(&self) {
        if let Some((_, sink)) = &self.telemetry.log {
            sink.reopen();
        }
    }

    /// The snapshot being served, for readers off the request path.
    pub fn published(&self) -> &Arc<Published> {
        &self.published
    }

    /// The listeners, by name, with the addresses actually bound.
    pub fn listeners(&self) -> &[(String, SocketAddr)] {
        &self.listeners
    }

    /// The bound address of the listener called `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// The I/O driver the workers run on.
    pub fn driver(&self) -> &DriverInfo {
        &self.driver
    }

    /// The number of workers.
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Stops accepting on every worker and lets in-flight requests finish;
    /// returns at once. [`Gateway::join`] waits for the end.
    pub fn shutdown(&mut self) {
        // The copies kept for a hand-over close too, so that the sockets
        // close (new clients are refused) once the workers let go of
        // theirs; after a hand-over the new process holds its own.
        self.held.clear();
        for w in &self.workers {
            let _ = w.commands.unbounded_send(Command::Shutdown);
        }
    }

    /// Shuts down (if not yet) and waits until every worker has drained.
    pub fn join(mut self) {
        self.stop_and_wait();
    }

    fn stop_and_wait(&mut self) {
        self.shutdown();
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_and_wait();
    }
}

/// Asks each worker behind `workers` for its counters; a worker that does
/// not answer within a second is left out.
/// Says what building the balancer tables did, when there were any.
fn say_tables(tables: &ringway_config::TableBuild) {
    if tables.built + tables.reused > 0 {
        say!(
            "ringway: balancer tables: {} built, {} kept, {} KiB shared by every worker",
            tables.built,
            tables.reused,
            tables.bytes.div_ceil(1024)
        );
    }
}

pub(crate) fn scrape(workers: &[UnboundedSender<Command>]) -> Vec<metrics::MetricsReport> {
    let (reply, reports) = std::sync::mpsc::channel();
    let asked = workers
        .iter()
        .filter(|w| w.unbounded_send(Command::Scrape(reply.clone())).is_ok())
        .count();
    let deadline = Instant::now() + Duration::from_secs(1);
    (0..asked)
        .map_while(|_| {
            reports
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        })
        .collect()
}

/// Gives every worker at least one socket of `listener`, appending each to
/// that worker's list, and returns the bound address (a port of 0 is
/// resolved by the first socket and shared by the rest) and a copy of
/// every socket. The sockets `inherited` from a previous process come
/// first, spread over the workers (a worker may get several: each must be
/// accepted on, or the connections the kernel queues on it would wait
/// forever); sockets are opened for workers left without one.
fn open_sockets(
    listener: &Listener,
    sockets: &mut [Vec<(String, std::net::TcpListener)>],
    inherited: Vec<std::os::fd::OwnedFd>,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let mut addr = listener.addr;
    let error = |addr, source| Error::Listen {
        name: listener.name.clone(),
        addr,
        source,
    };
    let count = sockets.len();
    let mut copies = Vec::with_capacity(count.max(inherited.len()));
    let mut given = 0;
    for fd in inherited {
        let socket = std::net::TcpListener::from(fd);
        socket.set_nonblocking(true).map_err(|e| error(addr, e))?;
        if given == 0 {
            addr = socket.local_addr().map_err(|e| error(addr, e))?;
        }
        copies.push(socket.try_clone().map_err(|e| error(addr, e))?);
        sockets[given % count].push((listener.name.clone(), socket));
        given += 1;
    }
    for worker_sockets in sockets.iter_mut().skip(given) {
        let socket = listen_socket(addr).map_err(|e| error(addr, e))?;
        if addr.port() == 0 {
            addr = socket.local_addr().map_err(|e| error(addr, e))?;
        }
        copies.push(socket.try_clone().map_err(|e| error(addr, e))?);
        worker_sockets.push((listener.name.clone(), socket));
    }
    Ok((addr, copies))
}

/// A non-blocking listening socket with `SO_REUSEPORT`, so that every
/// worker accepts on its own socket and the kernel spreads connections.
fn listen_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}
