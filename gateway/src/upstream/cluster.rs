//! One worker's view of a cluster: its balancer, the shared health of its
//! endpoints, and this worker's own counters for each endpoint (requests
//! in flight, failures in a row, ejection).
//!
//! Passive outlier ejection is judged per worker, from that worker's own
//! traffic: no shared counter is written per request. With connections
//! spread evenly across workers, each sees a fair sample of an endpoint's
//! failures, so a failing endpoint is ejected by every worker within a few
//! requests of each other. Active health is shared: one check per
//! endpoint per interval for the whole process, its verdict read by all.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ringway_balancer::{Balancer, BalancerSpec, EndpointId, EndpointState};
use ringway_config::{Cluster, Limits, Outlier};

use crate::failure::Overflow;

/// Health verdicts for every endpoint of every cluster of a snapshot, in
/// snapshot order; written by the health checker, read by the workers.
pub(crate) type HealthTable = Vec<Vec<Arc<AtomicBool>>>;

/// This worker's counters for one endpoint address. Kept across reloads
/// for as long as the address stays in some cluster.
#[derive(Debug, Default)]
pub(crate) struct EndpointStats {
    /// Requests this worker has in flight to it.
    pub active: Cell<u32>,
    failures: Cell<u32>,
    ejected_until: Cell<Option<Instant>>,
    ejections: Cell<u32>,
    last_ejection_end: Cell<Option<Instant>>,
    /// Since when its share ramps up (slow start): it joined a cluster
    /// this worker already served, or its health check passed again.
    warming_since: Cell<Option<Instant>>,
    /// Its health verdict at this worker's last look (to see it recover).
    seen_unhealthy: Cell<bool>,
}

impl EndpointStats {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.get().is_some_and(|until| until > now)
    }
}

/// Counts a request in flight to an endpoint until dropped.
#[derive(Debug)]
pub(crate) struct Active(Rc<EndpointStats>);

impl Active {
    /// Starts counting.
    pub(crate) fn new(stats: &Rc<EndpointStats>) -> Active {
        stats.active.set(stats.active.get() + 1);
        Active(stats.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
    }
}

/// Counts something against a limit while it lives.
#[derive(Debug)]
pub(crate) struct Tally(Rc<Cell<u32>>);

impl Tally {
    /// Counts one more.
    pub(crate) fn new(counter: &Rc<Cell<u32>>) -> Tally {
        counter.set(counter.get() + 1);
        Tally(counter.clone())
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// A cluster's circuit-breaker counters on one worker, kept across
/// reloads with the cluster's name.
#[derive(Debug, Default)]
pub(crate) struct Breakers {
    /// Upstream connections open (idle or busy).
    pub connections: Rc<Cell<u32>>,
    /// Requests connecting.
    pub pending: Rc<Cell<u32>>,
    /// Requests in flight.
    pub requests: Rc<Cell<u32>>,
    /// Retries in flight.
    pub retries: Rc<Cell<u32>>,
}

/// A cluster as one worker serves it in one generation.
#[derive(Debug)]
pub(crate) struct ClusterState {
    /// `None` where the endpoint set could not make one (which the
    /// config's validation rules out): picks then answer 503.
    balancer: RefCell<Option<Balancer>>,
    endpoints: Vec<Rc<EndpointStats>>,
    healthy: Vec<Arc<AtomicBool>>,
    outlier: Outlier,
    /// This worker's share of each limit.
    limits: Limits,
    /// This worker's counters against them.
    pub breakers: Rc<Breakers>,
    /// Slow start's ramp, if the cluster has one.
    slow_start: Option<std::time::Duration>,
    /// xorshift state for slow start's draws (per worker, per cluster).
    draws: Cell<u64>,
}

impl ClusterState {
    /// Builds the state for `cluster`, reusing this worker's counters of
    /// endpoints it already knows (`known`, keyed by address). With slow
    /// start, an address new to this worker warms up unless the cluster
    /// itself is new here (`new_cluster`: a start, or a cluster a reload
    /// adds, serves all its endpoints at once).
    pub(crate) fn new(
        cluster: &Cluster,
        known: &mut HashMap<SocketAddr, Rc<EndpointStats>>,
        healthy: Vec<Arc<AtomicBool>>,
        (seed, workers): (u64, u32),
        breakers: Rc<Breakers>,
        new_cluster: bool,
    ) -> ClusterState {
        // A hashing balancer's table was built once for the process
        // (`Snapshot::build_tables`); this worker only adds its own
        // random state.
        let balancer = Balancer::with_table(
            BalancerSpec::new(cluster.balancer).with_seed(seed),
            &cluster.endpoint_specs(),
            cluster.table.as_ref(),
        )
        .ok();
        let now = crate::clock::now();
        let endpoints = cluster
            .endpoints
            .iter()
            .map(|e| {
                let stats = known.entry(e.addr).or_insert_with(|| {
                    let fresh = Rc::new(EndpointStats::default());
                    if cluster.slow_start.is_some() && !new_cluster {
                        fresh.warming_since.set(Some(now));
                    }
                    fresh
                });
                stats.clone()
            })
            .collect();
        ClusterState {
            balancer: RefCell::new(balancer),
            endpoints,
            healthy,
            outlier: cluster.outlier.clone(),
            limits: share(cluster.limits, workers),
            breakers,
            slow_start: cluster.slow_start,
            draws: Cell::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        }
    }

    /// The breaker that would trip if one more `retry` (or first try)
    /// started now, if any.
    pub(crate) fn overflow(&self, retry: bool) -> Option<Overflow> {
        let b = &self.breakers;
        if b.requests.get() >= self.limits.max_requests {
            return Some(Overflow::Requests);
        }
        if retry && b.retries.get() >= self.limits.max_retries {
            return Some(Overflow::Retries);
        }
        None
    }

    /// The breaker that stops opening another connection, if any.
    pub(crate) fn connect_overflow(&self) -> Option<Overflow> {
        let b = &self.breakers;
        if b.connections.get() >= self.limits.max_connections {
            return Some(Overflow::Connections);
        }
        if b.pending.get() >= self.limits.max_pending {
            return Some(Overflow::Pending);
        }
        None
    }

    /// This worker's counters for endpoint `id`.
    pub(crate) fn stats(&self, id: EndpointId) -> &Rc<EndpointStats> {
        &self.endpoints[id.0 as usize]
    }

    fn usable(&self, i: usize, now: Instant) -> bool {
        let healthy = self
            .healthy
            .get(i)
            .is_none_or(|h| h.load(Ordering::Relaxed));
        let stats = &self.endpoints[i];
        if stats.seen_unhealthy.get() == healthy {
            stats.seen_unhealthy.set(!healthy);
            if healthy && self.slow_start.is_some() {
                // Back from a failed health check: warm up again.
                stats.warming_since.set(Some(now));
            }
        }
        healthy && !stats.is_ejected(now)
    }

    /// Slow start: whether endpoint `i` takes this pick. A warming
    /// endpoint takes a share of the picks it would get that grows
    /// linearly from 10% to all of it over the ramp (as Envoy's and
    /// HAProxy's slow start, with Envoy's 10% floor), drawn at random.
    fn warm_enough(&self, i: usize, now: Instant) -> bool {
        let (Some(ramp), Some(since)) = (self.slow_start, self.endpoints[i].warming_since.get())
        else {
            return true;
        };
        let elapsed = now.saturating_duration_since(since);
        if elapsed >= ramp {
            self.endpoints[i].warming_since.set(None);
            return true;
        }
        let share = (elapsed.as_secs_f64() / ramp.as_secs_f64()).max(0.1);
        // xorshift64: cheap, and good enough to spread picks.
        let mut x = self.draws.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.draws.set(x);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < share
    }

    /// Picks a usable endpoint other than those in `tried`. When fewer
    /// than the panic threshold's share are usable, all are used: sending
    /// traffic to suspect endpoints beats overloading the few good ones.
    pub(crate) fn pick(&self, key_hash: Option<u64>, tried: &[EndpointId]) -> Option<EndpointId> {
        let now = crate::clock::now();
        let n = self.endpoints.len();
        let usable = (0..n).filter(|&i| self.usable(i, now)).count();
        let panic = usable * 100 < usize::from(self.outlier.panic_threshold) * n;
        let mut view = PickView {
            state: self,
            tried,
            panic,
            now,
            warming: self.slow_start.is_some(),
        };
        let mut balancer = self.balancer.borrow_mut();
        let balancer = balancer.as_mut()?;
        match balancer.pick(key_hash, &view) {
            // Slow start never leaves a request without an endpoint: when
            // the draws turned every candidate away, ask again without.
            None if view.warming => {
                view.warming = false;
                balancer.pick(key_hash, &view)
            }
            picked => picked,
        }
    }

    /// True when some usable endpoint is not in `tried` (without moving
    /// the balancer).
    pub(crate) fn has_candidate(&self, tried: &[EndpointId]) -> bool {
        let now = crate::clock::now();
        (0..self.endpoints.len())
            .any(|i| !tried.contains(&EndpointId(i as u32)) && self.usable(i, now))
    }

    /// This worker's view of each endpoint, for metrics and `/clusters`.
    /// `idle` tells how many idle pooled connections an address has.
    pub(crate) fn report(
        &self,
        cluster: &Cluster,
        idle: impl Fn(SocketAddr) -> usize,
    ) -> Vec<crate::metrics::EndpointReport> {
        let now = Instant::now();
        cluster
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| crate::metrics::EndpointReport {
                cluster: cluster.name.clone(),
                addr: e.addr.to_string(),
                weight: e.weight,
                healthy: self
                    .healthy
                    .get(i)
                    .is_none_or(|h| h.load(Ordering::Relaxed)),
                active: u64::from(self.endpoints[i].active.get()),
                ejected: self.endpoints[i].is_ejected(now),
                idle: idle(e.addr) as u64,
            })
            .collect()
    }

    /// Records how a try on `id` went: a success clears its failures; a
    /// failure (no connection, reset, 5xx) counts towards ejection.
    /// Returns true when this failure ejected the endpoint.
    pub(crate) fn record(&self, id: EndpointId, success: bool) -> bool {
        let stats = self.stats(id);
        if success {
            stats.failures.set(0);
            return false;
        }
        let failures = stats.failures.get() + 1;
        stats.failures.set(failures);
        let threshold = self.outlier.consecutive_failures;
        if threshold == 0 || failures < threshold {
            return false;
        }
        let now = crate::clock::now();
        let n = self.endpoints.len();
        let ejected = self.endpoints.iter().filter(|e| e.is_ejected(now)).count();
        let cap = (n * usize::from(self.outlier.max_ejection_percent) / 100).max(1);
        if ejected >= cap || stats.is_ejected(now) {
            return false;
        }
        // Each ejection lasts longer than the last, unless the endpoint
        // has since stayed in for as long as one base ejection per step.
        let base = self.outlier.base_ejection;
        let recovered = stats.last_ejection_end.get().map_or(0, |end| {
            let quiet = now.saturating_duration_since(end);
            (quiet.as_millis() / base.as_millis().max(1)) as u32
        });
        let count = stats.ejections.get().saturating_sub(recovered) + 1;
        let length = base.saturating_mul(count).min(self.outlier.max_ejection);
        stats.ejections.set(count);
        stats.ejected_until.set(Some(now + length));
        stats.last_ejection_end.set(Some(now + length));
        stats.failures.set(0);
        true
    }
}

/// What a balancer sees of a cluster for one pick.
struct PickView<'a> {
    state: &'a ClusterState,
    tried: &'a [EndpointId],
    panic: bool,
    now: Instant,
    /// Slow start's draws apply.
    warming: bool,
}

impl EndpointState for PickView<'_> {
    fn eligible(&self, id: EndpointId) -> bool {
        let i = id.0 as usize;
        !self.tried.contains(&id)
            && (self.panic || self.state.usable(i, self.now))
            && (!self.warming || self.state.warm_enough(i, self.now))
    }

    fn active(&self, id: EndpointId) -> u32 {
        self.state
            .endpoints
            .get(id.0 as usize)
            .map_or(0, |e| e.active.get())
    }
}

/// One worker's share of process-wide limits: each limit divided by the
/// number of workers, rounded up, so that the total holds within one per
/// worker and no worker is left with none.
fn share(limits: Limits, workers: u32) -> Limits {
    let w = workers.max(1);
    let part = |n: u32| n.div_ceil(w).max(1);
    Limits {
        max_connections: part(limits.max_connections),
        max_pending: part(limits.max_pending),
        max_requests: part(limits.max_requests),
        max_retries: part(limits.max_retries),
    }
}
