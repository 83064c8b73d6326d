//! The compiled, immutable configuration the workers serve from.

use std::net::SocketAddr;
use std::time::Duration;

use ringway_router::Router;

/// Everything a worker needs to serve, compiled and validated. Never
/// changed once built: a reload builds a new one.
#[derive(Debug)]
pub struct Snapshot {
    /// Publication number: 0 for the first, then 1, 2, ... per reload.
    pub generation: u64,
    /// Where it came from (`<built-in>` for the default).
    pub source_name: String,
    /// The text it was compiled from, for `GET /config`.
    pub source_text: String,
    /// Threads and I/O.
    pub runtime: Runtime,
    /// Admin listener address, if any.
    pub admin: Option<SocketAddr>,
    /// The listeners, in file order.
    pub listeners: Vec<Listener>,
    /// The compiled matcher; its `RouteId`s index [`Snapshot::routes`].
    pub router: Router,
    /// The routes, in file order.
    pub routes: Vec<Route>,
    /// The clusters, sorted by name; [`ClusterId`] indexes them.
    pub clusters: Vec<Cluster>,
}

/// `[runtime]`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// How many worker threads.
    pub workers: Workers,
    /// Which I/O driver.
    pub io: IoDriver,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
}

/// Worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per available core.
    Auto,
    /// Exactly this many.
    Count(usize),
}

/// The I/O driver the workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDriver {
    /// io_uring; the default, and a hard error if it cannot start.
    Uring,
    /// epoll, only when the operator asks for it.
    Epoll,
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique name.
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
    /// Time a client has to send a complete request head (408 after it).
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Largest request head accepted (431 beyond it).
    pub max_header_bytes: usize,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Name for logs (`route-N` when not given).
    pub name: String,
    /// What to do with a matched request.
    pub action: Action,
    /// Time the upstream has to start its response (504 after it).
    pub timeout: Duration,
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Proxy to a cluster.
    Proxy(ClusterId),
    /// Answer directly.
    Respond(DirectResponse),
}

/// A response the gateway gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    /// Status code, 200..=599.
    pub status: u16,
    /// Extra headers, validated.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Index into [`Snapshot::clusters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub u32);

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Its name.
    pub name: String,
    /// Its endpoints, in file order.
    pub endpoints: Vec<Endpoint>,
    /// How to pick one.
    pub balancer: BalancerKind,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint, per worker.
    pub max_idle_per_endpoint: usize,
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// Its weight, at least 1.
    pub weight: u32,
}

/// The selection algorithm of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancerKind {
    /// Smooth weighted round-robin.
    RoundRobin,
}

impl Snapshot {
    /// A human summary of what this snapshot serves, for `ringway check`.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let workers = match self.runtime.workers {
            Workers::Auto => "one per core".to_owned(),
            Workers::Count(n) => n.to_string(),
        };
        let _ = writeln!(
            out,
            "{}: {} listener(s), {} route(s), {} cluster(s); workers: {workers}; io: {:?}",
            self.source_name,
            self.listeners.len(),
            self.routes.len(),
            self.clusters.len(),
            self.runtime.io,
        );
        for l in &self.listeners {
            let _ = writeln!(out, "  listener {} on {}", l.name, l.addr);
        }
        if let Some(admin) = self.admin {
            let _ = writeln!(out, "  admin on {admin}");
        }
        for r in &self.routes {
            match &r.action {
                Action::Proxy(c) => {
                    let cluster = &self.clusters[c.0 as usize];
                    let _ = writeln!(out, "  route {} -> cluster {}", r.name, cluster.name);
                }
                Action::Respond(d) => {
                    let _ = writeln!(out, "  route {} -> respond {}", r.name, d.status);
                }
            }
        }
        for c in &self.clusters {
            let endpoints: Vec<String> = c
                .endpoints
                .iter()
                .map(|e| format!("{} (weight {})", e.addr, e.weight))
                .collect();
            let _ = writeln!(
                out,
                "  cluster {} [{:?}]: {}",
                c.name,
                c.balancer,
                endpoints.join(", ")
            );
        }
        out
    }
}
