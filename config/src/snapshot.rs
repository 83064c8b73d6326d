//! The compiled, immutable configuration the workers serve from.

pub use ringway_codec::HeaderRules;
use std::net::SocketAddr;
use std::time::Duration;

use ringway_balancer::BalancerKind;
use ringway_router::Router;

/// Everything a worker needs to serve, compiled and validated. Never
/// changed once published: a reload builds a new one, and a DNS answer
/// a copy with new endpoints (the copy shares the router).
#[derive(Debug, Clone)]
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
    /// The token the admin listener's POST endpoints need, if any.
    pub admin_token: Option<String>,
    /// Access log, if any.
    pub access_log: Option<AccessLog>,
    /// Trace propagation and export.
    pub tracing: Tracing,
    /// The listeners, in file order.
    pub listeners: Vec<Listener>,
    /// The compiled matcher; its `RouteId`s index [`Snapshot::routes`].
    pub router: std::sync::Arc<Router>,
    /// The routes, in file order.
    pub routes: Vec<Route>,
    /// The clusters, sorted by name; [`ClusterId`] indexes them.
    pub clusters: Vec<Cluster>,
}

/// Where and how requests are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// A file, or `None` for standard output.
    pub path: Option<std::path::PathBuf>,
    /// Line format.
    pub format: LogFormat,
}

/// An access log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Apache/nginx "combined".
    Combined,
}

/// W3C trace context handling and OTLP export.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// OTLP/HTTP endpoint (`host:port` and path), if spans are exported.
    pub otlp: Option<OtlpEndpoint>,
    /// Share of traces started here that are sampled.
    pub sample_rate: f64,
    /// `service.name` of exported spans.
    pub service_name: String,
}

impl Default for Tracing {
    fn default() -> Tracing {
        Tracing {
            otlp: None,
            sample_rate: 0.01,
            service_name: "ringway".to_owned(),
        }
    }
}

/// Where spans are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint {
    /// `host:port`.
    pub authority: String,
    /// The resolved address.
    pub addr: SocketAddr,
    /// The path, e.g. `/v1/traces`.
    pub path: String,
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
    /// Client connections open at once, all listeners together (`None`:
    /// no cap beyond the descriptor limit). Each worker holds its share.
    pub max_connections: Option<u32>,
    /// The Unix socket the running process hands its listening sockets
    /// over on (`ringway --upgrade`); `None`: the default place.
    pub upgrade_socket: Option<std::path::PathBuf>,
    /// How endpoint names are resolved.
    pub dns: crate::DnsSettings,
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
    /// TLS termination, if any.
    pub tls: Option<crate::tls::Tls>,
    /// HTTP/2 settings (h2 by ALPN on TLS, h2c on plain listeners).
    pub http2: Http2Settings,
    /// How request paths are normalized before routing.
    pub paths: ringway_codec::path::PathRules,
    /// What happens to request headers whose names hold `_`.
    pub underscores: Underscores,
    /// Peers whose `X-Forwarded-For` names the client (empty: none).
    pub trusted_proxies: Vec<crate::IpRange>,
    /// Client connections open at once on this listener (`None`: no cap).
    /// Each worker holds its share.
    pub max_connections: Option<u32>,
    /// Connections start with a PROXY protocol header (v1 or v2) naming
    /// the client, accepted only from `trusted_proxies` when that is set.
    pub proxy_protocol: bool,
}

/// Request header names with `_` (`X_Forwarded_For`): an upstream that
/// folds `_` into `-` (CGI, many frameworks) would see them as the header
/// a rule was written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Underscores {
    /// Left out of what goes upstream (nginx's and Envoy's default).
    #[default]
    Drop,
    /// Passed on.
    Keep,
    /// The request is refused with 400.
    Reject,
}

/// A listener's HTTP/2 settings. The largest header list is the
/// listener's `max_header_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Streams a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Flow-control window of each stream, in bytes.
    pub initial_stream_window: u32,
    /// Flow-control window of the whole connection, in bytes.
    pub initial_connection_window: u32,
    /// Streams reset by the client before they were served, at once,
    /// before the connection is closed with ENHANCE_YOUR_CALM (rapid
    /// reset, CVE-2023-44487; h2's `max_pending_accept_reset_streams`).
    pub max_pending_reset_streams: usize,
    /// Streams reset for the client's protocol errors before the
    /// connection is closed (h2's `max_local_error_reset_streams`).
    pub max_local_error_resets: usize,
    /// Plain listeners accept HTTP/2 with prior knowledge.
    pub h2c: bool,
}

impl Default for Http2Settings {
    fn default() -> Http2Settings {
        Http2Settings {
            max_concurrent_streams: 128,
            initial_stream_window: 1 << 20,
            initial_connection_window: 4 << 20,
            max_pending_reset_streams: 20,
            max_local_error_resets: 1024,
            h2c: true,
        }
    }
}

/// One route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Name for logs (`route-N` when not given).
    pub name: std::sync::Arc<str>,
    /// What to do with a matched request.
    pub action: Action,
    /// Time the upstream has to start its response (504 after it).
    pub timeout: Duration,
    /// When and how often to try again on another endpoint.
    pub retry: RetryPolicy,
    /// Header, path and body rules, rate limit and faults.
    pub policy: RoutePolicy,
}

/// What a route does to requests besides sending them somewhere.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutePolicy {
    /// Request headers changed on the way up.
    pub request_headers: HeaderRules,
    /// Response headers changed on the way down.
    pub response_headers: HeaderRules,
    /// Path prefix rewrite: (matched prefix, replacement).
    pub rewrite_prefix: Option<(String, String)>,
    /// Host header rewrite.
    pub rewrite_host: Option<String>,
    /// Largest request body accepted.
    pub max_body: Option<u64>,
    /// Rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Delay a share of requests: (share in 0..=1, how long).
    pub fault_delay: Option<(f64, Duration)>,
    /// Answer a share of requests with a status: (share in 0..=1, status).
    pub fault_abort: Option<(f64, u16)>,
    /// Clients allowed (empty: all); the others get 403.
    pub allow: Vec<crate::IpRange>,
    /// Clients refused with 403 (checked first).
    pub deny: Vec<crate::IpRange>,
}

impl RoutePolicy {
    /// True when the route refuses a client at `ip` (its derived address).
    pub fn refuses(&self, ip: std::net::IpAddr) -> bool {
        self.deny.iter().any(|r| r.contains(ip))
            || (!self.allow.is_empty() && !self.allow.iter().any(|r| r.contains(ip)))
    }
}

/// A token-bucket rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Requests per second, steady.
    pub per_second: f64,
    /// Requests allowed at once.
    pub burst: f64,
    /// Separate buckets per client, by this.
    pub key: Option<HashKey>,
}

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// Retry when no connection could be made (nothing was sent).
    pub on_connect_failure: bool,
    /// Retry when the upstream closed or reset before any response byte.
    pub on_reset: bool,
    /// Retry on these response statuses.
    pub on_statuses: Vec<u16>,
    /// Time each try has to start its response; the route's timeout
    /// bounds them all.
    pub per_try_timeout: Option<Duration>,
    /// Share of a worker's active requests that may be retries at once.
    pub budget: f64,
    /// Retries always allowed at once, whatever the budget.
    pub min_retries: u32,
}

impl Default for RetryPolicy {
    /// Without a `retry` section: one more try on another endpoint when
    /// the first could not connect, as nginx does; nothing had been sent,
    /// so it is safe for every method.
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            on_connect_failure: true,
            on_reset: false,
            on_statuses: Vec::new(),
            per_try_timeout: None,
            budget: 0.2,
            min_retries: 3,
        }
    }
}

/// What a route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Proxy to a cluster.
    Proxy(ClusterId),
    /// Proxy to one of several clusters, by weight (canaries, blue/green).
    Split(Vec<WeightedCluster>),
    /// Answer directly.
    Respond(DirectResponse),
    /// Redirect elsewhere.
    Redirect(Redirect),
}

/// A redirect answered by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The target URL.
    pub to: String,
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// Append the request's path and query to `to`.
    pub keep_path: bool,
}

/// One arm of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedCluster {
    /// The cluster.
    pub cluster: ClusterId,
    /// Its share.
    pub weight: u32,
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
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Its name.
    pub name: String,
    /// Its endpoints now: the source's literal addresses in file order,
    /// then each name's addresses as DNS last gave them (see
    /// [`Snapshot::resolve`]; empty until a name has been answered).
    pub endpoints: Vec<crate::Endpoint>,
    /// Where the endpoints come from.
    pub source: crate::EndpointSource,
    /// How to pick one.
    pub balancer: BalancerKind,
    /// What the hashing balancers hash; `None` for the others.
    pub hash_key: Option<HashKey>,
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time an idle pooled connection is kept.
    pub idle_timeout: Duration,
    /// Idle connections kept per endpoint, per worker.
    pub max_idle_per_endpoint: usize,
    /// Active health checks, if any.
    pub health: Option<HealthCheck>,
    /// Passive outlier ejection.
    pub outlier: Outlier,
    /// Circuit breakers.
    pub limits: Limits,
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// h2: streams open at once on one upstream connection; at this many
    /// the gateway opens another.
    pub max_streams_per_connection: u32,
    /// TLS to the endpoints, if any.
    pub tls: Option<crate::tls::UpstreamTls>,
    /// The PROXY protocol header each new connection starts with, if any.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// How long a new or recovered endpoint's share takes to ramp up
    /// from 10% to all of it (`None`: at once).
    pub slow_start: Option<Duration>,
    /// The endpoints file the endpoints were read from
    /// (`discovery = { file = ... }`), resolved against the configuration
    /// file's folder; a change to it reloads.
    pub endpoints_file: Option<std::path::PathBuf>,
    /// The hashing balancer's table, once [`Snapshot::build_tables`] has
    /// run (`None` until then, and for the other balancers).
    pub table: Option<ringway_balancer::SharedTable>,
}

/// The PROXY protocol version a cluster sends its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// The protocol a cluster's endpoints speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive pooling.
    #[default]
    Http1,
    /// HTTP/2, streams multiplexed over shared connections.
    Http2,
}

/// A cluster's circuit breakers, for the whole process (each worker gets
/// its share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Upstream connections open at once.
    pub max_connections: u32,
    /// Requests waiting for a connection at once.
    pub max_pending: u32,
    /// Requests in flight at once.
    pub max_requests: u32,
    /// Retries in flight at once.
    pub max_retries: u32,
}

impl Default for Limits {
    /// Envoy's defaults, which only stop runaway load.
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// Active health checks of a cluster's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What one check does.
    pub kind: HealthKind,
    /// The `Host` (`:authority`) a check sends; the endpoint's host and
    /// port when `None`.
    pub host: Option<String>,
    /// Time between checks of one endpoint.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Passes in a row that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// What one health check does, over the cluster's transport (its PROXY
/// header, its TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthKind {
    /// A GET of `path` in the cluster's protocol; a 2xx or 3xx passes.
    Http {
        /// The path to GET.
        path: String,
    },
    /// A TCP connection (and the cluster's PROXY header); nothing more.
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2; passes when the answer
    /// is SERVING with grpc-status 0.
    Grpc {
        /// The service asked about; empty for the server as a whole.
        service: String,
    },
}

/// Passive outlier ejection, judged by each worker on its own traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlier {
    /// 5xx answers or connect failures in a row that eject (0: never).
    pub consecutive_failures: u32,
    /// First ejection's length; the n-th lasts n times as long.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Largest share of the cluster ejected at once, in percent (at least
    /// one endpoint may always be ejected).
    pub max_ejection_percent: u8,
    /// Below this share of usable endpoints, all are used (percent).
    pub panic_threshold: u8,
}

impl Default for Outlier {
    fn default() -> Outlier {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            panic_threshold: 50,
        }
    }
}

/// What a hashing balancer hashes to keep a client on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// A request header's first value.
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// A query parameter's value.
    Query(String),
    /// The path, without the query.
    Path,
    /// The client's IP address.
    ClientIp,
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
                Action::Split(arms) => {
                    let arms: Vec<String> = arms
                        .iter()
                        .map(|a| {
                            format!(
                                "{} ({})",
                                self.clusters[a.cluster.0 as usize].name, a.weight
                            )
                        })
                        .collect();
                    let _ = writeln!(out, "  route {} -> split {}", r.name, arms.join(", "));
                }
                Action::Respond(d) => {
                    let _ = writeln!(out, "  route {} -> respond {}", r.name, d.status);
                }
                Action::Redirect(d) => {
                    let _ = writeln!(out, "  route {} -> redirect {} {}", r.name, d.status, d.to);
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

impl Snapshot {
    /// Every DNS question the clusters' endpoints ask, each once.
    pub fn dns_queries(&self) -> std::collections::BTreeSet<crate::DnsQuery> {
        self.clusters
            .iter()
            .flat_map(|c| c.source.queries())
            .collect()
    }

    /// Gives every cluster the endpoints its source has with `answers`.
    /// Returns whether any cluster's endpoints changed; a hashing
    /// cluster's table is dropped where they did (build it again with
    /// [`Snapshot::build_tables`]).
    pub fn resolve(
        &mut self,
        answers: &dyn Fn(&crate::DnsQuery) -> Option<crate::DnsAnswer>,
    ) -> bool {
        let mut changed = false;
        for c in &mut self.clusters {
            let endpoints = c.source.endpoints(answers);
            if endpoints != c.endpoints {
                c.endpoints = endpoints;
                c.table = None;
                changed = true;
            }
        }
        changed
    }
}
