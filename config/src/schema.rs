//! The file as written: serde types that mirror the TOML one to one, with
//! the span of every value kept so that [`crate::compile`] can point at it.
//! Unknown keys are refused everywhere (`deny_unknown_fields`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A whole configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[runtime]`
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// `[admin]`
    pub admin: Option<AdminSection>,
    /// `[access_log]`
    pub access_log: Option<Spanned<AccessLogSection>>,
    /// `[tracing]`
    pub tracing: Option<Spanned<TracingSection>>,
    /// `[[listener]]`
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<ListenerSection>>,
    /// `[[route]]`
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteSection>>,
    /// `[cluster.NAME]`
    #[serde(default, rename = "cluster")]
    pub clusters: BTreeMap<Spanned<String>, Spanned<ClusterSection>>,
}

/// `[runtime]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// `"auto"` or a count.
    pub workers: Option<Spanned<WorkersValue>>,
    /// `"uring"` or `"epoll"`.
    pub io: Option<Spanned<String>>,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Option<Spanned<String>>,
    /// Client connections open at once, process-wide (split per worker).
    pub max_connections: Option<Spanned<i64>>,
    /// The Unix socket a new process (`ringway --upgrade`) takes the
    /// listening sockets from.
    pub upgrade_socket: Option<Spanned<String>>,
}

/// `workers = "auto"` or `workers = 4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkersValue {
    /// One per core.
    Auto,
    /// This many.
    Count(i64),
}

impl<'de> Deserialize<'de> for WorkersValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WorkersValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a number of workers")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WorkersValue, E> {
                Ok(WorkersValue::Count(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<WorkersValue, E> {
                match s {
                    "auto" => Ok(WorkersValue::Auto),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin listener.
    pub listen: Spanned<String>,
    /// A file holding the token `POST /reload` and `POST /drain` need
    /// (`Authorization: Bearer TOKEN`), relative to the config's folder.
    pub token_file: Option<Spanned<String>>,
}

/// `[access_log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// `"stdout"` or a file path.
    pub path: Spanned<String>,
    /// `"json"` (default) or `"combined"`.
    pub format: Option<Spanned<String>>,
}

/// `[tracing]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: Option<Spanned<String>>,
    /// Share of traces started here that are sampled (0.0 to 1.0).
    pub sample_rate: Option<Spanned<f64>>,
    /// `service.name` of the exported spans.
    pub service_name: Option<Spanned<String>>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// `IP:port` to listen on.
    pub listen: Spanned<String>,
    /// Time a client has to send a complete request head.
    pub header_timeout: Option<Spanned<String>>,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Option<Spanned<String>>,
    /// Largest request head accepted (request line and headers), in bytes.
    pub max_header_bytes: Option<Spanned<i64>>,
    /// TLS termination; plain HTTP without it.
    pub tls: Option<Spanned<TlsSection>>,
    /// HTTP/2 settings.
    pub http2: Option<Spanned<Http2Section>>,
    /// Fold `//` in request paths into `/` before routing (default true).
    pub merge_slashes: Option<bool>,
    /// `%2F` and `%5C` in request paths: "keep" (default), "reject" or
    /// "decode".
    pub escaped_slashes: Option<Spanned<String>>,
    /// Request header names with `_`: "drop" (default), "keep" or "reject".
    pub underscores_in_headers: Option<Spanned<String>>,
    /// Peers (addresses or CIDR blocks) whose `X-Forwarded-For` is
    /// believed when deriving the client's address.
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// Client connections open at once on this listener (split per worker).
    pub max_connections: Option<Spanned<i64>>,
    /// Every connection starts with a PROXY protocol header (v1 or v2)
    /// naming the client; only `trusted_proxies` peers may send it when
    /// that list is set.
    pub proxy_protocol: Option<bool>,
}

/// A listener's `http2 = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Section {
    /// Streams a client may have open at once on one connection.
    pub max_concurrent_streams: Option<Spanned<i64>>,
    /// Flow-control window of each stream: bytes or "1MiB".
    pub initial_stream_window: Option<Spanned<SizeValue>>,
    /// Flow-control window of the whole connection: bytes or "4MiB".
    pub initial_connection_window: Option<Spanned<SizeValue>>,
    /// Streams reset by the client before they were served, at once,
    /// before the connection is closed (rapid reset, CVE-2023-44487).
    pub max_pending_reset_streams: Option<Spanned<i64>>,
    /// Streams the gateway may reset for protocol errors on one
    /// connection before closing it.
    pub max_local_error_resets: Option<Spanned<i64>>,
    /// Plain listeners accept HTTP/2 with prior knowledge (h2c).
    pub h2c: Option<bool>,
}

/// A listener's `tls = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first (with `key`: the first certificate).
    pub cert: Option<Spanned<String>>,
    /// PEM private key of `cert`.
    pub key: Option<Spanned<String>>,
    /// More certificates, chosen by SNI.
    pub certificates: Option<Spanned<Vec<Spanned<CertificateSection>>>>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Option<Spanned<Vec<Spanned<String>>>>,
    /// Lowest TLS version accepted: `"1.2"` or `"1.3"`.
    pub min_version: Option<Spanned<String>>,
    /// PEM bundle of the CAs client certificates must chain to.
    pub client_ca: Option<Spanned<String>>,
    /// `"require"` or `"optional"`.
    pub client_auth: Option<Spanned<String>>,
    /// Request header that carries the verified client identity (the
    /// client certificate's first URI SAN, else its first DNS SAN) upstream
    /// and to routing: `match = { headers = { "x-client-san" = "..." } }`
    /// routes on it. A copy the client sends is always removed first.
    pub client_identity_header: Option<Spanned<String>>,
}

/// One `{ cert, key }` of `certificates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    /// PEM certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM private key.
    pub key: Spanned<String>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Optional name, for logs and metrics.
    pub name: Option<Spanned<String>>,
    /// The conditions; absent means every request.
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<MatchSection>>,
    /// Proxy to this cluster.
    pub cluster: Option<Spanned<String>>,
    /// Or split between clusters by weight.
    pub split: Option<Spanned<Vec<Spanned<SplitEntry>>>>,
    /// When to try again, on another endpoint.
    pub retry: Option<Spanned<RetrySection>>,
    /// Or answer directly.
    pub respond: Option<Spanned<RespondSection>>,
    /// Upstream response timeout for this route.
    pub timeout: Option<Spanned<String>>,
    /// Or redirect.
    pub redirect: Option<Spanned<RedirectSection>>,
    /// Request headers to add, set and remove on the way up.
    pub request_headers: Option<Spanned<HeadersSection>>,
    /// Response headers to add, set and remove on the way down.
    pub response_headers: Option<Spanned<HeadersSection>>,
    /// Path prefix and host rewrites.
    pub rewrite: Option<Spanned<RewriteSection>>,
    /// Largest request body accepted (413 beyond it): bytes or "1MiB".
    pub max_body: Option<Spanned<SizeValue>>,
    /// Requests per period.
    pub rate_limit: Option<Spanned<RateLimitSection>>,
    /// Fault injection.
    pub fault: Option<Spanned<FaultSection>>,
    /// Client addresses (or CIDR blocks) allowed; others get 403.
    pub allow: Option<Vec<Spanned<String>>>,
    /// Client addresses (or CIDR blocks) refused with 403.
    pub deny: Option<Vec<Spanned<String>>>,
}

/// `redirect = { to = "https://example.com", status = 308, keep_path = true }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectSection {
    /// Where to.
    pub to: Spanned<String>,
    /// 301, 302, 303, 307 or 308 (default 301).
    pub status: Option<Spanned<i64>>,
    /// Append the request's path and query to `to`.
    #[serde(default)]
    pub keep_path: bool,
}

/// `{ add = { name = "v" }, set = { name = "v" }, remove = ["name"] }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersSection {
    /// Added beside any the message has.
    #[serde(default)]
    pub add: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Replacing any the message has.
    #[serde(default)]
    pub set: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Removed.
    #[serde(default)]
    pub remove: Vec<Spanned<String>>,
}

/// `rewrite = { path_prefix = "/v2/", host = "internal" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteSection {
    /// Replaces the route's matched `path_prefix`.
    pub path_prefix: Option<Spanned<String>>,
    /// Replaces the Host header.
    pub host: Option<Spanned<String>>,
}

/// A size: a number of bytes, or "64KiB", "1MiB", "2GiB".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizeValue {
    /// Bytes.
    Bytes(i64),
    /// Text with a unit.
    Text(String),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a string such as \"64KiB\" or \"1MiB\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `rate_limit = { requests = 100, per = "1s", burst = 20, key = "client-ip" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Requests allowed per period.
    pub requests: Spanned<i64>,
    /// The period (default 1s).
    pub per: Option<Spanned<String>>,
    /// Requests allowed at once above the steady rate (default: `requests`).
    pub burst: Option<Spanned<i64>>,
    /// Separate limits per client: "client-ip" or "header:NAME".
    pub key: Option<Spanned<String>>,
}

/// `fault = { delay = { percent = 10, duration = "100ms" }, abort = { percent = 5, status = 503 } }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSection {
    /// Delay a share of requests.
    pub delay: Option<Spanned<FaultDelay>>,
    /// Answer a share of requests with an error, without the upstream.
    pub abort: Option<Spanned<FaultAbort>>,
}

/// A share of requests delayed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// Share, in percent (0 to 100, fractions allowed).
    pub percent: Spanned<f64>,
    /// How long.
    pub duration: Spanned<String>,
}

/// A share of requests aborted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// Share, in percent (0 to 100, fractions allowed).
    pub percent: Spanned<f64>,
    /// Status to answer.
    pub status: Spanned<i64>,
}

/// `limits = { max_connections = 1024, ... }` on a cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Upstream connections open at once (pooled or busy).
    pub max_connections: Option<Spanned<i64>>,
    /// Requests waiting for a connection at once.
    pub max_pending: Option<Spanned<i64>>,
    /// Requests in flight at once.
    pub max_requests: Option<Spanned<i64>>,
    /// Retries in flight at once.
    pub max_retries: Option<Spanned<i64>>,
}

/// `{ cluster = "NAME", weight = N }` in a `split`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitEntry {
    /// The cluster.
    pub cluster: Spanned<String>,
    /// Its share.
    pub weight: Spanned<i64>,
}

/// `retry = { attempts = 2, on = [...], per_try_timeout = "1s", budget = 0.2 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Tries in all, the first included.
    pub attempts: Option<Spanned<i64>>,
    /// Conditions: `connect-failure`, `reset`, `5xx`, `gateway-error`, or a status.
    pub on: Option<Vec<Spanned<String>>>,
    /// Time each try has to start its response.
    pub per_try_timeout: Option<Spanned<String>>,
    /// Share of active requests that may be retries at once.
    pub budget: Option<Spanned<f64>>,
    /// Retries always allowed at once, whatever the budget.
    pub min_retries: Option<Spanned<i64>>,
}

/// `health = { path = "/healthz", interval = "2s", ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// Path to GET.
    pub path: Spanned<String>,
    /// Time between checks of one endpoint.
    pub interval: Option<Spanned<String>>,
    /// Time a check may take.
    pub timeout: Option<Spanned<String>>,
    /// Passes in a row that make an unhealthy endpoint healthy.
    pub healthy_threshold: Option<Spanned<i64>>,
    /// Failures in a row that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: Option<Spanned<i64>>,
}

/// `outlier = { consecutive_failures = 5, base_ejection_time = "30s", ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierSection {
    /// 5xx answers or connect failures in a row that eject (0: never).
    pub consecutive_failures: Option<Spanned<i64>>,
    /// First ejection's length; each further one is longer by as much.
    pub base_ejection_time: Option<Spanned<String>>,
    /// Longest ejection.
    pub max_ejection_time: Option<Spanned<String>>,
    /// Largest share of the cluster ejected at once, in percent.
    pub max_ejection_percent: Option<Spanned<i64>>,
    /// Below this share of usable endpoints, use them all (percent).
    pub panic_threshold: Option<Spanned<i64>>,
}

/// `match = { ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    /// `example.com` or `*.example.com`.
    pub host: Option<Spanned<String>>,
    /// Exact path.
    pub path: Option<Spanned<String>>,
    /// Path prefix.
    pub path_prefix: Option<Spanned<String>>,
    /// Whole-path regular expression.
    pub path_regex: Option<Spanned<String>>,
    /// Allowed methods.
    pub methods: Option<Vec<Spanned<String>>>,
    /// Header conditions: a string for an exact value, `true` for present.
    pub headers: Option<BTreeMap<Spanned<String>, Spanned<HeaderCondition>>>,
    /// Client addresses or CIDR blocks (the derived client address).
    pub client_ip: Option<Vec<Spanned<String>>>,
}

/// A header condition: `"value"` or `true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCondition {
    /// Present with any value.
    Present,
    /// Exactly this value.
    Exact(String),
}

impl<'de> Deserialize<'de> for HeaderCondition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HeaderCondition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value (string) or `true` for \"present\"")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<HeaderCondition, E> {
                if b {
                    Ok(HeaderCondition::Present)
                } else {
                    Err(E::invalid_value(de::Unexpected::Bool(b), &self))
                }
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HeaderCondition, E> {
                Ok(HeaderCondition::Exact(s.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `respond = { status = 200, body = "...", headers = { ... } }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondSection {
    /// Status code.
    pub status: Spanned<i64>,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// Extra response headers.
    #[serde(default)]
    pub headers: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[cluster.NAME]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The endpoints.
    pub endpoints: Vec<Spanned<EndpointValue>>,
    /// How to pick one.
    pub balancer: Option<Spanned<BalancerValue>>,
    /// Time to establish a connection to an endpoint.
    pub connect_timeout: Option<Spanned<String>>,
    /// Time an idle pooled connection is kept.
    pub idle_timeout: Option<Spanned<String>>,
    /// Idle connections kept per endpoint, per worker.
    pub max_idle_per_endpoint: Option<Spanned<i64>>,
    /// Active health checks.
    pub health: Option<Spanned<HealthSection>>,
    /// Passive outlier ejection.
    pub outlier: Option<Spanned<OutlierSection>>,
    /// Circuit breakers.
    pub limits: Option<Spanned<LimitsSection>>,
    /// `"http1"` (default) or `"h2"`.
    pub protocol: Option<Spanned<String>>,
    /// h2: streams open at once on one upstream connection before another
    /// is opened.
    pub max_streams_per_connection: Option<Spanned<i64>>,
    /// TLS to the endpoints; plain TCP without it.
    pub tls: Option<Spanned<UpstreamTlsSection>>,
    /// Start each connection with a PROXY protocol header naming the
    /// client: "v1" or "v2".
    pub proxy_protocol: Option<Spanned<String>>,
}

/// A cluster's `tls = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    /// PEM bundle of the CAs the endpoints' certificates must chain to
    /// (the system's roots without it).
    pub ca: Option<Spanned<String>>,
    /// The name to send (SNI) and verify, for every endpoint (else each
    /// endpoint's host as written).
    pub server_name: Option<Spanned<String>>,
    /// PEM certificate chain presented to the endpoints, leaf first.
    pub client_cert: Option<Spanned<String>>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<Spanned<String>>,
    /// Lowest TLS version accepted: `"1.2"` or `"1.3"`.
    pub min_version: Option<Spanned<String>>,
}

/// `"IP:port"` or `{ addr = "IP:port", weight = N }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointValue {
    /// The address as written.
    pub addr: String,
    /// The weight (1 when not given).
    pub weight: i64,
}

impl<'de> Deserialize<'de> for EndpointValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            addr: String,
            #[serde(default = "one")]
            weight: i64,
        }
        fn one() -> i64 {
            1
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EndpointValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an address \"host:port\" or a table { addr = \"host:port\", weight = N }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EndpointValue, E> {
                Ok(EndpointValue {
                    addr: s.to_owned(),
                    weight: 1,
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<EndpointValue, M::Error> {
                let t = Table::deserialize(MapAccessDeserializer::new(map))?;
                Ok(EndpointValue {
                    addr: t.addr,
                    weight: t.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `"round-robin"` or `{ kind = "maglev", key = "header:x-user-id", ... }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BalancerValue {
    /// The algorithm's name.
    pub kind: String,
    /// What to hash, for the hashing kinds.
    pub key: Option<String>,
    /// Maglev table size (a prime).
    pub table_size: Option<i64>,
    /// Ring hash: smallest ring.
    pub min_ring_size: Option<i64>,
    /// Ring hash: largest ring.
    pub max_ring_size: Option<i64>,
    /// Hashing kinds: the bounded-load factor (e.g. 1.25).
    pub bounded_load: Option<f64>,
    /// Least request: Envoy's active-request bias.
    pub active_request_bias: Option<f64>,
}

impl<'de> Deserialize<'de> for BalancerValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            kind: String,
            key: Option<String>,
            table_size: Option<i64>,
            min_ring_size: Option<i64>,
            max_ring_size: Option<i64>,
            bounded_load: Option<f64>,
            active_request_bias: Option<f64>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BalancerValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a balancer name such as \"round-robin\", or a table { kind = \"...\", ... }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<BalancerValue, E> {
                Ok(BalancerValue {
                    kind: s.to_owned(),
                    ..BalancerValue::default()
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<BalancerValue, M::Error> {
                let t = Table::deserialize(MapAccessDeserializer::new(map))?;
                Ok(BalancerValue {
                    kind: t.kind,
                    key: t.key,
                    table_size: t.table_size,
                    min_ring_size: t.min_ring_size,
                    max_ring_size: t.max_ring_size,
                    bounded_load: t.bounded_load,
                    active_request_bias: t.active_request_bias,
                })
            }
        }
        d.deserialize_any(V)
    }
}
