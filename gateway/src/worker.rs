//! One worker: a thread, its io_uring runtime, its listeners, its pool and
//! its balancer state. Nothing here is shared with another worker.
//!
//! A worker serves from a [`Generation`]: one snapshot and the per-core
//! state built for it. A reload arrives as a [`Command`] on the worker's
//! channel; the worker builds the next generation *from* the running one
//! (pools are keyed by endpoint address and simply stay), swaps it in, and
//! opens or closes listeners. A request holds the `Rc<Generation>` it
//! started with until it ends, so it finishes on the snapshot it began on.

use std::cell::{Cell, RefCell};
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
use ringway_balancer::RoundRobin;
use ringway_config::{Action, ClusterId, Listener, Snapshot};

use crate::access_log::LogSink;
use crate::clock;
use crate::cluster::{Breakers, ClusterState, EndpointStats, HealthTable};
use crate::drain::{Drain, Signal};
use crate::limit::RateLimiter;
use crate::metrics::{MetricsReport, WorkerMetrics};
use crate::pool::Pool;
use crate::proxy;
use crate::trace::{SpanRecord, SpanSink};

/// How often a worker drops expired idle upstream connections.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often a worker hands its log lines and spans over, at the latest.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Log bytes buffered before a batch is handed over early.
const LOG_FLUSH_BYTES: usize = 32 * 1024;
/// Spans buffered before a batch is handed over early.
const SPAN_FLUSH: usize = 128;

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

/// One snapshot and the per-core state built for it.
#[derive(Debug)]
pub struct Generation {
    /// The snapshot.
    pub snapshot: Arc<Snapshot>,
    /// Per cluster, in snapshot order.
    clusters: Vec<ClusterState>,
    /// Per route: the smooth weighted round-robin over a split's arms, so
    /// that a 90/10 split is exactly 90/10 over every 100 requests.
    splits: Vec<Option<RefCell<RoundRobin>>>,
    /// Per route: its rate limit, this worker's share.
    limiters: Vec<Option<RateLimiter>>,
    /// Listener settings by name.
    listeners: HashMap<String, Rc<Listener>>,
    /// This worker's rustls configuration of each TLS listener, by name.
    tls: HashMap<String, Arc<rustls::ServerConfig>>,
    /// Per cluster: this worker's rustls client configuration, for clusters
    /// reached over TLS.
    upstream_tls: Vec<Option<UpstreamTls>>,
    /// Access log and span export.
    pub sinks: Sinks,
    /// Span names: each route's name, and one for requests no route took,
    /// shared so that a span costs no allocation for its name.
    span_names: Vec<Arc<str>>,
}

/// A worker's TLS client settings for one cluster.
#[derive(Debug)]
pub struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    /// Tells pooled connections of different settings apart.
    pub fingerprint: u64,
}

/// Where a generation's telemetry goes.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// The access log writer, if logging.
    pub log: Option<LogSink>,
    /// The span exporter, if exporting.
    pub spans: Option<SpanSink>,
}

impl Generation {
    fn new(
        worker: &Worker,
        snapshot: Arc<Snapshot>,
        health: &HealthTable,
        sinks: Sinks,
        known: &mut HashMap<SocketAddr, Rc<EndpointStats>>,
    ) -> Generation {
        // Each worker draws its own random stream.
        let seed = worker.id as u64;
        let mut breakers = worker.breakers.borrow_mut();
        let clusters = snapshot
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let b = breakers.entry(c.name.clone()).or_default().clone();
                let healthy = health.get(i).cloned().unwrap_or_default();
                ClusterState::new(c, known, healthy, seed, worker.workers, b)
            })
            .collect();
        let limiters = snapshot
            .routes
            .iter()
            .map(|r| {
                r.policy
                    .rate_limit
                    .as_ref()
                    .map(|l| RateLimiter::new(l, worker.workers))
            })
            .collect();
        let splits = snapshot
            .routes
            .iter()
            .map(|r| match &r.action {
                Action::Split(arms) => {
                    let weights: Vec<u32> = arms.iter().map(|a| a.weight).collect();
                    RoundRobin::new(&weights).ok().map(RefCell::new)
                }
                _ => None,
            })
            .collect();
        let listeners = snapshot
            .listeners
            .iter()
            .map(|l| (l.name.clone(), Rc::new(l.clone())))
            .collect();
        let mut caches = worker.session_caches.borrow_mut();
        let mut tls = HashMap::new();
        for l in &snapshot.listeners {
            let Some(t) = &l.tls else { continue };
            let cache = caches
                .entry(l.name.clone())
                .or_insert_with(crate::tls::session_cache)
                .clone();
            match crate::tls::server_config(t, cache) {
                Ok(config) => {
                    tls.insert(l.name.clone(), config);
                }
                // The material was checked at compile time: this is rare,
                // and the listener then refuses connections.
                Err(e) => crate::say!("ringway: worker {}: listener {}: {e}", worker.id, l.name),
            }
        }
        caches.retain(|name, _| tls.contains_key(name));
        let upstream_tls = snapshot
            .clusters
            .iter()
            .map(|c| {
                let t = c.tls.as_ref()?;
                let config = crate::tls::client_config(t)
                    .inspect_err(|e| {
                        crate::say!("ringway: worker {}: cluster {}: {e}", worker.id, c.name);
                    })
                    .ok()?;
                Some(UpstreamTls {
                    config,
                    fingerprint: crate::tls::fingerprint(t),
                })
            })
            .collect();
        let span_names = snapshot
            .routes
            .iter()
            .map(|r| Arc::from(r.name.as_str()))
            .chain([Arc::from("ringway")])
            .collect();
        Generation {
            snapshot,
            clusters,
            splits,
            limiters,
            listeners,
            tls,
            upstream_tls,
            sinks,
            span_names,
        }
    }

    /// This worker's TLS client configuration for `cluster`, when it is
    /// reached over TLS.
    pub fn upstream_tls(&self, cluster: ClusterId) -> Option<&UpstreamTls> {
        self.upstream_tls.get(cluster.0 as usize)?.as_ref()
    }

    /// The span name for a request on `route` (`None`: no route matched).
    pub fn span_name(&self, route: Option<usize>) -> Arc<str> {
        let last = self.span_names.len().saturating_sub(1);
        self.span_names
            .get(route.unwrap_or(last))
            .cloned()
            .unwrap_or_else(|| Arc::from("ringway"))
    }

    /// A generation with no per-core state yet, only while a worker is
    /// being built.
    fn empty(snapshot: Arc<Snapshot>) -> Generation {
        Generation {
            snapshot,
            clusters: Vec::new(),
            splits: Vec::new(),
            limiters: Vec::new(),
            listeners: HashMap::new(),
            tls: HashMap::new(),
            upstream_tls: Vec::new(),
            sinks: Sinks::default(),
            span_names: Vec::new(),
        }
    }

    /// The cluster a request on `route` goes to: its cluster, or the next
    /// arm of its split. `None` for a route that does not proxy.
    pub fn cluster_for(&self, route: usize) -> Option<ClusterId> {
        match &self.snapshot.routes.get(route)?.action {
            Action::Proxy(cluster) => Some(*cluster),
            Action::Split(arms) => {
                let arm = self
                    .splits
                    .get(route)?
                    .as_ref()?
                    .borrow_mut()
                    .pick(|_| true)?;
                Some(arms.get(arm.0 as usize)?.cluster)
            }
            Action::Respond(_) | Action::Redirect(_) => None,
        }
    }

    /// The rate limiter of `route`, if it has one.
    pub fn limiter(&self, route: usize) -> Option<&RateLimiter> {
        self.limiters.get(route)?.as_ref()
    }

    /// This worker's state of `cluster`.
    pub fn cluster(&self, cluster: ClusterId) -> &ClusterState {
        &self.clusters[cluster.0 as usize]
    }

    /// The settings of the listener called `name`.
    pub fn listener(&self, name: &str) -> Option<Rc<Listener>> {
        self.listeners.get(name).cloned()
    }

    /// This worker's rustls configuration of the TLS listener `name`.
    pub fn tls(&self, name: &str) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.get(name).cloned()
    }
}

/// A listener this worker accepts on.
#[derive(Debug)]
struct Accepting {
    /// The address as configured (port 0 stays 0), to tell whether a
    /// reload changed it.
    configured: SocketAddr,
    stop: Rc<Signal>,
}

/// Everything one worker owns.
#[derive(Debug)]
pub struct Worker {
    /// Its index, for logs.
    pub id: usize,
    current: RefCell<Rc<Generation>>,
    /// Idle upstream connections, kept across reloads.
    pub pool: Pool,
    /// Upstream HTTP/2 connections, kept across reloads.
    pub h2: crate::http2::client::Pool,
    /// Shutdown state.
    pub drain: Rc<Drain>,
    /// This worker's counters.
    pub metrics: WorkerMetrics,
    /// Proxied requests in flight, for the retry budget.
    pub active_requests: Cell<u32>,
    /// Retries in flight, for the retry budget.
    pub active_retries: Cell<u32>,
    accepting: RefCell<HashMap<String, Accepting>>,
    /// This worker's counters per endpoint address, kept across reloads.
    endpoints: RefCell<HashMap<SocketAddr, Rc<EndpointStats>>>,
    /// Circuit-breaker counters per cluster name, kept across reloads.
    breakers: RefCell<HashMap<String, Rc<Breakers>>>,
    /// How many workers share the process-wide limits.
    pub workers: u32,
    rng: Cell<u64>,
    /// Access log lines not yet handed to the writer.
    pub log_buf: RefCell<Vec<u8>>,
    /// Sampled spans not yet handed to the exporter.
    pub span_buf: RefCell<Vec<SpanRecord>>,
    /// TLS session-ID caches by listener name, kept across reloads.
    session_caches: RefCell<HashMap<String, Arc<dyn rustls::server::StoresServerSessions>>>,
    /// When a failed handshake was last logged, to log one line per
    /// interval rather than one per connection.
    pub tls_failure_logged: Cell<Option<std::time::Instant>>,
}

impl Worker {
    /// A worker serving `snapshot`.
    pub fn new(
        id: usize,
        workers: u32,
        snapshot: Arc<Snapshot>,
        health: &HealthTable,
        sinks: Sinks,
    ) -> Rc<Worker> {
        let worker = Rc::new(Worker {
            id,
            current: RefCell::new(Rc::new(Generation::empty(snapshot.clone()))),
            pool: Pool::default(),
            h2: crate::http2::client::Pool::default(),
            drain: Rc::new(Drain::default()),
            metrics: WorkerMetrics::default(),
            active_requests: Cell::new(0),
            active_retries: Cell::new(0),
            accepting: RefCell::new(HashMap::new()),
            endpoints: RefCell::new(HashMap::new()),
            breakers: RefCell::new(HashMap::new()),
            workers,
            rng: Cell::new(seed(id)),
            log_buf: RefCell::new(Vec::with_capacity(LOG_FLUSH_BYTES)),
            span_buf: RefCell::new(Vec::new()),
            session_caches: RefCell::new(HashMap::new()),
            tls_failure_logged: Cell::new(None),
        });
        let mut known = HashMap::new();
        let generation = Generation::new(&worker, snapshot, health, sinks, &mut known);
        *worker.endpoints.borrow_mut() = known;
        *worker.current.borrow_mut() = Rc::new(generation);
        worker
    }

    /// A random 64-bit number from this worker's generator, for ids.
    pub fn random_u64(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Hands buffered log lines and spans to their writers: when `force`,
    /// whatever is there; otherwise only full batches.
    pub fn flush(&self, force: bool) {
        // Called after every request: most of the time nothing is due.
        let due = |len: usize, batch: usize| len > 0 && (force || len >= batch);
        if !due(self.log_buf.borrow().len(), LOG_FLUSH_BYTES)
            && !due(self.span_buf.borrow().len(), SPAN_FLUSH)
        {
            return;
        }
        let current = self.current();
        let sinks = &current.sinks;
        let mut lines = self.log_buf.borrow_mut();
        if !lines.is_empty() && (force || lines.len() >= LOG_FLUSH_BYTES) {
            let batch = std::mem::replace(&mut *lines, Vec::with_capacity(LOG_FLUSH_BYTES));
            if let Some(log) = &sinks.log
                && !log.send(batch)
            {
                self.metrics
                    .log_dropped
                    .set(self.metrics.log_dropped.get() + 1);
            }
        }
        let mut spans = self.span_buf.borrow_mut();
        if !spans.is_empty() && (force || spans.len() >= SPAN_FLUSH) {
            let batch = std::mem::replace(&mut *spans, Vec::with_capacity(SPAN_FLUSH));
            if let Some(exporter) = &sinks.spans {
                let lost = exporter.send(batch);
                self.metrics
                    .spans_dropped
                    .set(self.metrics.spans_dropped.get() + lost as u64);
            }
        }
    }

    /// A uniform number in `0.0..1.0` from this worker's own generator
    /// (xorshift64*), for fault injection.
    pub fn random(&self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A copy of this worker's counters and endpoint states.
    fn report(&self) -> MetricsReport {
        let mut report = self.metrics.report();
        let (opened, reused) = self.pool.counts();
        report.upstream_opened = opened;
        report.upstream_reused = reused;
        let current = self.current();
        for (cluster, state) in current.snapshot.clusters.iter().zip(&current.clusters) {
            report.endpoints.extend(state.report(cluster, &self.pool));
        }
        report
    }

    /// The generation to serve a new request from.
    pub fn current(&self) -> Rc<Generation> {
        self.current.borrow().clone()
    }

    /// Switches to `snapshot`: closes listeners it no longer has (or has
    /// at another address) and opens the new ones from `sockets`.
    fn apply(
        self: &Rc<Self>,
        snapshot: Arc<Snapshot>,
        health: &HealthTable,
        sinks: Sinks,
        sockets: Vec<(String, std::net::TcpListener)>,
    ) {
        // What the old generation logged goes to its own writer.
        self.flush(true);
        // Counters of endpoints that left every cluster are forgotten;
        // requests still running on the old generation hold their own.
        let mut known = self.endpoints.borrow_mut();
        known.retain(|addr, _| {
            snapshot
                .clusters
                .iter()
                .any(|c| c.endpoints.iter().any(|e| e.addr == *addr))
        });
        let next = Generation::new(self, snapshot, health, sinks, &mut known);
        drop(known);
        self.accepting.borrow_mut().retain(|name, accepting| {
            let keep = next
                .snapshot
                .listeners
                .iter()
                .any(|l| &l.name == name && l.addr == accepting.configured);
            if !keep {
                accepting.stop.fire();
            }
            keep
        });
        *self.current.borrow_mut() = Rc::new(next);
        self.open(sockets);
    }

    /// Starts accepting on `sockets`, named after their listeners.
    fn open(self: &Rc<Self>, sockets: Vec<(String, std::net::TcpListener)>) {
        let current = self.current();
        for (name, socket) in sockets {
            let Some(config) = current.listener(&name) else {
                continue;
            };
            match TcpListener::from_std(socket) {
                Ok(listener) => {
                    let stop = Rc::new(Signal::default());
                    self.accepting.borrow_mut().insert(
                        name.clone(),
                        Accepting {
                            configured: config.addr,
                            stop: stop.clone(),
                        },
                    );
                    monoio::spawn(accept_loop(self.clone(), name, listener, stop));
                }
                Err(e) => crate::say!("ringway: worker {}: listener {name}: {e}", self.id),
            }
        }
    }
}

/// Runs a worker until told to shut down and its in-flight requests are
/// done (or the drain deadline passes).
pub async fn run(
    worker: Rc<Worker>,
    sockets: Vec<(String, std::net::TcpListener)>,
    mut commands: UnboundedReceiver<Command>,
) {
    worker.open(sockets);
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
                worker.apply(snapshot, &health, sinks, sockets);
                let _ = done.send(worker.id);
            }
            Some(Command::Scrape(reply)) => {
                let _ = reply.send(worker.report());
            }
            // A closed channel means the control thread is gone: drain too.
            Some(Command::Shutdown) | None => break,
        }
    }
    worker.drain.start();
    let deadline = worker.current().snapshot.runtime.drain_timeout;
    if monoio::time::timeout(deadline, worker.drain.idle())
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
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Settings come from the generation current at accept.
                    let current = worker.current();
                    if let Some(config) = current.listener(&name) {
                        if config.tls.is_none() {
                            monoio::spawn(clock::per_poll(proxy::serve(
                                worker.clone(),
                                config,
                                stream,
                                peer,
                            )));
                        } else if let Some(tls) = current.tls(&name) {
                            monoio::spawn(clock::per_poll(proxy::serve_tls(
                                worker.clone(),
                                config,
                                tls,
                                stream,
                                peer,
                            )));
                        }
                    }
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    crate::say!("ringway: worker {}: accept on {name}: {e}", worker.id);
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stop.fired() => break,
            _ = worker.drain.started() => break,
        }
    }
    // Dropping the listener closes it: new connections are refused.
}

async fn flush_loop(worker: Rc<Worker>) {
    while !worker.drain.is_draining() {
        monoio::time::sleep(FLUSH_INTERVAL).await;
        worker.flush(true);
    }
}

/// A distinct starting state for each worker's generator.
fn seed(id: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ 0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) << 40)) | 1
}

async fn sweep_loop(worker: Rc<Worker>) {
    while !worker.drain.is_draining() {
        monoio::time::sleep(SWEEP_INTERVAL).await;
        worker.pool.sweep();
        worker.h2.sweep();
    }
}
