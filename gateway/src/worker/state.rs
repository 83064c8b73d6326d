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
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use ringway_balancer::RoundRobin;
use ringway_config::{Action, ClusterId, Listener, Snapshot};
use ringway_router::RouteId;

use crate::access_log::LogSink;
use crate::drain::Drain;
use crate::limit::{RateLimiter, RetryBudget};
use crate::metrics::{MetricsReport, WorkerMetrics};
use crate::tls::ClientTls;
use crate::trace::{SpanRecord, SpanSink};
use crate::upstream::Upstreams;
use crate::upstream::cluster::{Breakers, ClusterState, EndpointStats, HealthTable};

/// Log bytes buffered before a batch is handed over early.
const LOG_FLUSH_BYTES: usize = 32 * 1024;
/// Spans buffered before a batch is handed over early.
const SPAN_FLUSH: usize = 128;

/// One snapshot and the per-core state built for it.
#[derive(Debug)]
pub(crate) struct Generation {
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
    upstream_tls: Vec<Option<ClientTls>>,
    /// Access log and span export.
    pub sinks: Sinks,
    /// The span name of requests no route took (a route's span is named
    /// by the route's `Arc<str>` name in the snapshot): a span costs no
    /// allocation for its name, and a reload none per route.
    unrouted: Arc<str>,
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
                let new_cluster = !breakers.contains_key(&c.name);
                let b = breakers.entry(c.name.clone()).or_default().clone();
                let healthy = health.get(i).cloned().unwrap_or_default();
                ClusterState::new(c, known, healthy, (seed, worker.workers), b, new_cluster)
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
                Some(ClientTls {
                    config,
                    fingerprint: crate::tls::fingerprint(t),
                })
            })
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
            unrouted: Arc::from("ringway"),
        }
    }

    /// This worker's TLS client configuration for `cluster`, when it is
    /// reached over TLS.
    pub(crate) fn upstream_tls(&self, cluster: ClusterId) -> Option<&ClientTls> {
        self.upstream_tls.get(cluster.0 as usize)?.as_ref()
    }

    /// The span name for a request on `route` (`None`: no route matched).
    pub(crate) fn span_name(&self, route: Option<RouteId>) -> Arc<str> {
        route
            .and_then(|r| self.snapshot.routes.get(r.0 as usize))
            .map_or_else(|| self.unrouted.clone(), |r| r.name.clone())
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
            unrouted: Arc::from("ringway"),
        }
    }

    /// The cluster a request on `route` goes to: its cluster, or the next
    /// arm of its split. `None` for a route that does not proxy.
    pub(crate) fn cluster_for(&self, route: RouteId) -> Option<ClusterId> {
        let route = route.0 as usize;
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
    pub(crate) fn limiter(&self, route: RouteId) -> Option<&RateLimiter> {
        self.limiters.get(route.0 as usize)?.as_ref()
    }

    /// This worker's state of `cluster`.
    pub(crate) fn cluster(&self, cluster: ClusterId) -> &ClusterState {
        &self.clusters[cluster.0 as usize]
    }

    /// The settings of the listener called `name`.
    pub(crate) fn listener(&self, name: &str) -> Option<Rc<Listener>> {
        self.listeners.get(name).cloned()
    }

    /// This worker's rustls configuration of the TLS listener `name`.
    pub(crate) fn tls(&self, name: &str) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.get(name).cloned()
    }
}

/// Everything one worker owns.
#[derive(Debug)]
pub(crate) struct Worker {
    /// Its index, for logs.
    pub id: usize,
    current: RefCell<Rc<Generation>>,
    /// Upstream connections, kept across reloads.
    pub(crate) upstreams: Upstreams,
    /// Shutdown state.
    pub drain: Rc<Drain>,
    /// Client connections open, against the connection caps.
    pub slots: Rc<super::slots::Slots>,
    /// This worker's counters.
    pub metrics: WorkerMetrics,
    /// Requests and retries in flight, for the retry budget.
    pub(crate) budget: RetryBudget,
    /// This worker's counters per endpoint address, kept across reloads.
    endpoints: RefCell<HashMap<SocketAddr, Rc<EndpointStats>>>,
    /// Circuit-breaker counters per cluster name, kept across reloads.
    breakers: RefCell<HashMap<String, Rc<Breakers>>>,
    /// How many workers share the process-wide limits.
    pub workers: u32,
    rng: Cell<u64>,
    /// Access log lines not yet handed to the writer.
    pub log_buf: RefCell<Vec<u8>>,
    /// A request's normalized path while it is routed (planning is
    /// synchronous: one request at a time uses it).
    pub path_buf: RefCell<Vec<u8>>,
    /// Sampled spans not yet handed to the exporter.
    pub span_buf: RefCell<Vec<SpanRecord>>,
    /// TLS session-ID caches by listener name, kept across reloads.
    session_caches: RefCell<HashMap<String, Arc<dyn rustls::server::StoresServerSessions>>>,
    /// When a refused connection (failed handshake, bad PROXY header) was
    /// last logged, to log one line per interval rather than one per
    /// connection.
    pub refusal_logged: Cell<Option<std::time::Instant>>,
    /// Until then (after a hot upgrade), connections are accepted on
    /// readiness rather than by io_uring's accept: see
    /// `worker::run::accept_next`.
    pub accept_by_readiness_until: Cell<Option<std::time::Instant>>,
}

impl Worker {
    /// A worker serving `snapshot`.
    pub(crate) fn new(
        id: usize,
        workers: u32,
        snapshot: Arc<Snapshot>,
        health: &HealthTable,
        sinks: Sinks,
    ) -> Rc<Worker> {
        let worker = Rc::new(Worker {
            id,
            current: RefCell::new(Rc::new(Generation::empty(snapshot.clone()))),
            upstreams: Upstreams::default(),
            drain: Rc::new(Drain::default()),
            slots: Rc::default(),
            metrics: WorkerMetrics::default(),
            budget: RetryBudget::default(),
            endpoints: RefCell::new(HashMap::new()),
            breakers: RefCell::new(HashMap::new()),
            workers,
            rng: Cell::new(seed(id)),
            log_buf: RefCell::new(Vec::with_capacity(LOG_FLUSH_BYTES)),
            path_buf: RefCell::new(Vec::new()),
            span_buf: RefCell::new(Vec::new()),
            session_caches: RefCell::new(HashMap::new()),
            refusal_logged: Cell::new(None),
            accept_by_readiness_until: Cell::new(None),
        });
        let mut known = HashMap::new();
        let generation = Generation::new(&worker, snapshot, health, sinks, &mut known);
        *worker.endpoints.borrow_mut() = known;
        *worker.current.borrow_mut() = Rc::new(generation);
        worker
    }

    /// A random 64-bit number from this worker's generator, for ids.
    pub(crate) fn random_u64(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Hands buffered log lines and spans to their writers: when `force`,
    /// whatever is there; otherwise only full batches.
    pub(crate) fn flush(&self, force: bool) {
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
    pub(crate) fn random(&self) -> f64 {
        (self.random_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A copy of this worker's counters and endpoint states.
    pub(crate) fn report(&self) -> MetricsReport {
        let mut report = self.metrics.report();
        let (opened, reused) = self.upstreams.h1.counts();
        report.upstream_opened = opened;
        report.upstream_reused = reused;
        report.upstream_dirty = self.upstreams.h1.dirty();
        let current = self.current();
        for (cluster, state) in current.snapshot.clusters.iter().zip(&current.clusters) {
            let idle = |addr| self.upstreams.h1.idle(addr);
            report.endpoints.extend(state.report(cluster, idle));
        }
        report
    }

    /// The generation to serve a new request from.
    pub(crate) fn current(&self) -> Rc<Generation> {
        self.current.borrow().clone()
    }

    /// Serves new requests from `snapshot` from now on: builds the next
    /// generation from this worker's kept state (pools, endpoint counters,
    /// breakers and session caches stay) and makes it current. Requests
    /// in flight keep the generation they started on.
    pub(crate) fn switch_to(&self, snapshot: Arc<Snapshot>, health: &HealthTable, sinks: Sinks) {
        // What the old generation logged goes to its own writer.
        self.flush(true);
        // Counters of endpoints that left every cluster are forgotten;
        // requests still running on the old generation hold their own.
        let mut known = self.endpoints.borrow_mut();
        let kept: std::collections::HashSet<SocketAddr> = snapshot
            .clusters
            .iter()
            .flat_map(|c| c.endpoints.iter().map(|e| e.addr))
            .collect();
        known.retain(|addr, _| kept.contains(addr));
        // Their pooled connections close; a busy one closes when its
        // request ends instead of going back to the pool.
        self.upstreams.h1.keep_only(&kept);
        self.upstreams.h2.keep_only(&kept);
        let next = Generation::new(self, snapshot, health, sinks, &mut known);
        drop(known);
        *self.current.borrow_mut() = Rc::new(next);
    }
}

/// A distinct starting state for each worker's generator.
fn seed(id: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ 0x9e37_79b9_7f4a_7c15 ^ ((id as u64 + 1) << 40)) | 1
}
