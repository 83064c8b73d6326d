//! The file as written: serde types that mirror the TOML one to one, with
//! the span of every value kept so that [`crate::compile`] can point at it.
//! Unknown keys are refused everywhere (`deny_unknown_fields`).
//!
//! The same types describe the file as a JSON Schema ([`json_schema`]) for
//! editors and validators: their doc comments become its descriptions.
//! `Spanned` has no schema of its own, so each spanned field names the type
//! it holds (`#[schemars(with = ...)]`).

use std::collections::BTreeMap;

use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema, generate::SchemaSettings};
use serde::Deserialize;
use toml::Spanned;

mod values;

use values::DurationText;
pub use values::{BalancerValue, EndpointValue, HeaderCondition, SizeValue, WorkersValue};

/// The JSON Schema (draft-07, the draft editors' TOML plugins read) of a
/// configuration file, pretty-printed.
pub fn json_schema() -> String {
    let mut schema = SchemaSettings::draft07()
        .with_transform(RecursiveTransform(without_null))
        .into_generator()
        .into_root_schema_for::<File>();
    schema.insert("title".to_owned(), "ringway configuration".into());
    format!("{:#}", schema.as_value())
}

/// TOML has no null (a value is left out by leaving out its key), so the
/// `null` that schemars allows for each `Option` goes: `"type": ["string",
/// "null"]` becomes `"string"`, `"anyOf": [X, {"type": "null"}]` becomes X.
fn without_null(schema: &mut Schema) {
    if let Some(types) = schema.get_mut("type").and_then(|t| t.as_array_mut()) {
        types.retain(|t| *t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            schema.insert("type".to_owned(), only);
        }
    }
    if let Some(any) = schema.get_mut("anyOf").and_then(|a| a.as_array_mut()) {
        any.retain(|s| s.get("type").is_none_or(|t| *t != "null"));
        if any.len() == 1 {
            let only = any.remove(0);
            schema.remove("anyOf");
            schema.insert("allOf".to_owned(), vec![only].into());
        }
    }
}

/// A whole configuration file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `[runtime]`
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// `[admin]`
    pub admin: Option<AdminSection>,
    /// `[access_log]`
    #[schemars(with = "Option<AccessLogSection>")]
    pub access_log: Option<Spanned<AccessLogSection>>,
    /// `[tracing]`
    #[schemars(with = "Option<TracingSection>")]
    pub tracing: Option<Spanned<TracingSection>>,
    /// `[[listener]]`
    #[serde(default, rename = "listener")]
    #[schemars(with = "Vec<ListenerSection>")]
    pub listeners: Vec<Spanned<ListenerSection>>,
    /// `[[route]]`
    #[serde(default, rename = "route")]
    #[schemars(with = "Vec<RouteSection>")]
    pub routes: Vec<Spanned<RouteSection>>,
    /// `[cluster.NAME]`
    #[serde(default, rename = "cluster")]
    #[schemars(with = "BTreeMap<String, ClusterSection>")]
    pub clusters: BTreeMap<Spanned<String>, Spanned<ClusterSection>>,
}

/// `[runtime]`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// `"auto"` or a count.
    #[schemars(with = "Option<WorkersValue>")]
    pub workers: Option<Spanned<WorkersValue>>,
    /// `"uring"` or `"epoll"`.
    #[schemars(with = "Option<String>")]
    pub io: Option<Spanned<String>>,
    /// How long in-flight requests may take to finish on shutdown.
    #[schemars(with = "Option<DurationText>")]
    pub drain_timeout: Option<Spanned<String>>,
    /// Client connections open at once, process-wide (split per worker).
    #[schemars(with = "Option<i64>")]
    pub max_connections: Option<Spanned<i64>>,
    /// The Unix socket a new process (`ringway --upgrade`) takes the
    /// listening sockets from.
    #[schemars(with = "Option<String>")]
    pub upgrade_socket: Option<Spanned<String>>,
    /// DNS servers (`"IP"` or `"IP:port"`) asked for endpoint names;
    /// those of `/etc/resolv.conf` without it.
    #[schemars(with = "Option<Vec<String>>")]
    pub resolvers: Option<Spanned<Vec<Spanned<String>>>>,
    /// How endpoint names are followed.
    #[schemars(with = "Option<DnsSection>")]
    pub dns: Option<Spanned<DnsSection>>,
}

/// `[runtime] dns = { min_ttl = "1s", max_ttl = "300s", family = "all" }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// Shortest time between two questions for one name, whatever the
    /// TTL (default 1s).
    #[schemars(with = "Option<DurationText>")]
    pub min_ttl: Option<Spanned<String>>,
    /// Longest time an answer is used before asking again (default 300s).
    #[schemars(with = "Option<DurationText>")]
    pub max_ttl: Option<Spanned<String>>,
    /// Which addresses of a name are endpoints: `"all"` (default), `"v4"`,
    /// `"v6"`, `"v4-preferred"` or `"v6-preferred"`.
    #[schemars(with = "Option<String>")]
    pub family: Option<Spanned<String>>,
}

/// `[admin]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Address of the admin listener.
    #[schemars(with = "String")]
    pub listen: Spanned<String>,
    /// A file holding the token `POST /reload` and `POST /drain` need
    /// (`Authorization: Bearer TOKEN`), relative to the config's folder.
    #[schemars(with = "Option<String>")]
    pub token_file: Option<Spanned<String>>,
}

/// `[access_log]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLogSection {
    /// `"stdout"` or a file path.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
    /// `"json"` (default) or `"combined"`.
    #[schemars(with = "Option<String>")]
    pub format: Option<Spanned<String>>,
}

/// `[tracing]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingSection {
    /// OTLP/HTTP traces endpoint, e.g. `http://127.0.0.1:4318/v1/traces`.
    #[schemars(with = "Option<String>")]
    pub otlp_endpoint: Option<Spanned<String>>,
    /// Share of traces started here that are sampled (0.0 to 1.0).
    #[schemars(with = "Option<f64>")]
    pub sample_rate: Option<Spanned<f64>>,
    /// `service.name` of the exported spans.
    #[schemars(with = "Option<String>")]
    pub service_name: Option<Spanned<String>>,
}

/// One `[[listener]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// Unique name, used in logs and metrics.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// `IP:port` to listen on.
    #[schemars(with = "String")]
    pub listen: Spanned<String>,
    /// Time a client has to send a complete request head.
    #[schemars(with = "Option<DurationText>")]
    pub header_timeout: Option<Spanned<String>>,
    /// Time an idle keep-alive connection is kept open.
    #[schemars(with = "Option<DurationText>")]
    pub idle_timeout: Option<Spanned<String>>,
    /// Largest request head accepted (request line and headers), in bytes.
    #[schemars(with = "Option<i64>")]
    pub max_header_bytes: Option<Spanned<i64>>,
    /// TLS termination; plain HTTP without it.
    #[schemars(with = "Option<TlsSection>")]
    pub tls: Option<Spanned<TlsSection>>,
    /// HTTP/2 settings.
    #[schemars(with = "Option<Http2Section>")]
    pub http2: Option<Spanned<Http2Section>>,
    /// Fold `//` in request paths into `/` before routing (default true).
    pub merge_slashes: Option<bool>,
    /// `%2F` and `%5C` in request paths: "keep" (default), "reject" or
    /// "decode".
    #[schemars(with = "Option<String>")]
    pub escaped_slashes: Option<Spanned<String>>,
    /// Request header names with `_`: "drop" (default), "keep" or "reject".
    #[schemars(with = "Option<String>")]
    pub underscores_in_headers: Option<Spanned<String>>,
    /// Peers (addresses or CIDR blocks) whose `X-Forwarded-For` is
    /// believed when deriving the client's address.
    #[schemars(with = "Option<Vec<String>>")]
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    /// Client connections open at once on this listener (split per worker).
    #[schemars(with = "Option<i64>")]
    pub max_connections: Option<Spanned<i64>>,
    /// Every connection starts with a PROXY protocol header (v1 or v2)
    /// naming the client; only `trusted_proxies` peers may send it when
    /// that list is set.
    pub proxy_protocol: Option<bool>,
}

/// A listener's `http2 = { ... }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Http2Section {
    /// Streams a client may have open at once on one connection.
    #[schemars(with = "Option<i64>")]
    pub max_concurrent_streams: Option<Spanned<i64>>,
    /// Flow-control window of each stream: bytes or "1MiB".
    #[schemars(with = "Option<SizeValue>")]
    pub initial_stream_window: Option<Spanned<SizeValue>>,
    /// Flow-control window of the whole connection: bytes or "4MiB".
    #[schemars(with = "Option<SizeValue>")]
    pub initial_connection_window: Option<Spanned<SizeValue>>,
    /// Streams reset by the client before they were served, at once,
    /// before the connection is closed (rapid reset, CVE-2023-44487).
    #[schemars(with = "Option<i64>")]
    pub max_pending_reset_streams: Option<Spanned<i64>>,
    /// Streams the gateway may reset for protocol errors on one
    /// connection before closing it.
    #[schemars(with = "Option<i64>")]
    pub max_local_error_resets: Option<Spanned<i64>>,
    /// Plain listeners accept HTTP/2 with prior knowledge (h2c).
    pub h2c: Option<bool>,
}

/// A listener's `tls = { ... }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first (with `key`: the first certificate).
    #[schemars(with = "Option<String>")]
    pub cert: Option<Spanned<String>>,
    /// PEM private key of `cert`.
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,
    /// More certificates, chosen by SNI.
    #[schemars(with = "Option<Vec<CertificateSection>>")]
    pub certificates: Option<Spanned<Vec<Spanned<CertificateSection>>>>,
    /// ALPN protocols offered, in order of preference.
    #[schemars(with = "Option<Vec<String>>")]
    pub alpn: Option<Spanned<Vec<Spanned<String>>>>,
    /// Lowest TLS version accepted: `"1.2"` or `"1.3"`.
    #[schemars(with = "Option<String>")]
    pub min_version: Option<Spanned<String>>,
    /// PEM bundle of the CAs client certificates must chain to.
    #[schemars(with = "Option<String>")]
    pub client_ca: Option<Spanned<String>>,
    /// `"require"` or `"optional"`.
    #[schemars(with = "Option<String>")]
    pub client_auth: Option<Spanned<String>>,
    /// Request header that carries the verified client identity (the
    /// client certificate's first URI SAN, else its first DNS SAN) upstream
    /// and to routing: `match = { headers = { "x-client-san" = "..." } }`
    /// routes on it. A copy the client sends is always removed first.
    #[schemars(with = "Option<String>")]
    pub client_identity_header: Option<Spanned<String>>,
}

/// One `{ cert, key }` of `certificates`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateSection {
    /// PEM certificate chain, leaf first.
    #[schemars(with = "String")]
    pub cert: Spanned<String>,
    /// PEM private key.
    #[schemars(with = "String")]
    pub key: Spanned<String>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Optional name, for logs and metrics.
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// The conditions; absent means every request.
    #[serde(rename = "match")]
    #[schemars(with = "Option<MatchSection>")]
    pub matcher: Option<Spanned<MatchSection>>,
    /// Proxy to this cluster.
    #[schemars(with = "Option<String>")]
    pub cluster: Option<Spanned<String>>,
    /// Or split between clusters by weight.
    #[schemars(with = "Option<Vec<SplitEntry>>")]
    pub split: Option<Spanned<Vec<Spanned<SplitEntry>>>>,
    /// When to try again, on another endpoint.
    #[schemars(with = "Option<RetrySection>")]
    pub retry: Option<Spanned<RetrySection>>,
    /// Or answer directly.
    #[schemars(with = "Option<RespondSection>")]
    pub respond: Option<Spanned<RespondSection>>,
    /// Upstream response timeout for this route.
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<Spanned<String>>,
    /// Or redirect.
    #[schemars(with = "Option<RedirectSection>")]
    pub redirect: Option<Spanned<RedirectSection>>,
    /// Request headers to add, set and remove on the way up.
    #[schemars(with = "Option<HeadersSection>")]
    pub request_headers: Option<Spanned<HeadersSection>>,
    /// Response headers to add, set and remove on the way down.
    #[schemars(with = "Option<HeadersSection>")]
    pub response_headers: Option<Spanned<HeadersSection>>,
    /// Path prefix and host rewrites.
    #[schemars(with = "Option<RewriteSection>")]
    pub rewrite: Option<Spanned<RewriteSection>>,
    /// Largest request body accepted (413 beyond it): bytes or "1MiB".
    #[schemars(with = "Option<SizeValue>")]
    pub max_body: Option<Spanned<SizeValue>>,
    /// Requests per period.
    #[schemars(with = "Option<RateLimitSection>")]
    pub rate_limit: Option<Spanned<RateLimitSection>>,
    /// Fault injection.
    #[schemars(with = "Option<FaultSection>")]
    pub fault: Option<Spanned<FaultSection>>,
    /// Client addresses (or CIDR blocks) allowed; others get 403.
    #[schemars(with = "Option<Vec<String>>")]
    pub allow: Option<Vec<Spanned<String>>>,
    /// Client addresses (or CIDR blocks) refused with 403.
    #[schemars(with = "Option<Vec<String>>")]
    pub deny: Option<Vec<Spanned<String>>>,
}

/// `redirect = { to = "https://example.com", status = 308, keep_path = true }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectSection {
    /// Where to.
    #[schemars(with = "String")]
    pub to: Spanned<String>,
    /// 301, 302, 303, 307 or 308 (default 301).
    #[schemars(with = "Option<i64>")]
    pub status: Option<Spanned<i64>>,
    /// Append the request's path and query to `to`.
    #[serde(default)]
    pub keep_path: bool,
}

/// `{ add = { name = "v" }, set = { name = "v" }, remove = ["name"] }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeadersSection {
    /// Added beside any the message has.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub add: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Replacing any the message has.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub set: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Removed.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub remove: Vec<Spanned<String>>,
}

/// `rewrite = { path_prefix = "/v2/", host = "internal" }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteSection {
    /// Replaces the route's matched `path_prefix`.
    #[schemars(with = "Option<String>")]
    pub path_prefix: Option<Spanned<String>>,
    /// Replaces the Host header.
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
}

/// `rate_limit = { requests = 100, per = "1s", burst = 20, key = "client-ip" }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Requests allowed per period.
    #[schemars(with = "i64")]
    pub requests: Spanned<i64>,
    /// The period (default 1s).
    #[schemars(with = "Option<DurationText>")]
    pub per: Option<Spanned<String>>,
    /// Requests allowed at once above the steady rate (default: `requests`).
    #[schemars(with = "Option<i64>")]
    pub burst: Option<Spanned<i64>>,
    /// Separate limits per client: "client-ip" or "header:NAME".
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,
}

/// `fault = { delay = { percent = 10, duration = "100ms" }, abort = { percent = 5, status = 503 } }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSection {
    /// Delay a share of requests.
    #[schemars(with = "Option<FaultDelay>")]
    pub delay: Option<Spanned<FaultDelay>>,
    /// Answer a share of requests with an error, without the upstream.
    #[schemars(with = "Option<FaultAbort>")]
    pub abort: Option<Spanned<FaultAbort>>,
}

/// A share of requests delayed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// Share, in percent (0 to 100, fractions allowed).
    #[schemars(with = "f64")]
    pub percent: Spanned<f64>,
    /// How long.
    #[schemars(with = "DurationText")]
    pub duration: Spanned<String>,
}

/// A share of requests aborted.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// Share, in percent (0 to 100, fractions allowed).
    #[schemars(with = "f64")]
    pub percent: Spanned<f64>,
    /// Status to answer.
    #[schemars(with = "i64")]
    pub status: Spanned<i64>,
}

/// `limits = { max_connections = 1024, ... }` on a cluster.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Upstream connections open at once (pooled or busy).
    #[schemars(with = "Option<i64>")]
    pub max_connections: Option<Spanned<i64>>,
    /// Requests waiting for a connection at once.
    #[schemars(with = "Option<i64>")]
    pub max_pending: Option<Spanned<i64>>,
    /// Requests in flight at once.
    #[schemars(with = "Option<i64>")]
    pub max_requests: Option<Spanned<i64>>,
    /// Retries in flight at once.
    #[schemars(with = "Option<i64>")]
    pub max_retries: Option<Spanned<i64>>,
}

/// `{ cluster = "NAME", weight = N }` in a `split`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitEntry {
    /// The cluster.
    #[schemars(with = "String")]
    pub cluster: Spanned<String>,
    /// Its share.
    #[schemars(with = "i64")]
    pub weight: Spanned<i64>,
}

/// `retry = { attempts = 2, on = [...], per_try_timeout = "1s", budget = 0.2 }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Tries in all, the first included.
    #[schemars(with = "Option<i64>")]
    pub attempts: Option<Spanned<i64>>,
    /// Conditions: `connect-failure`, `reset`, `5xx`, `gateway-error`, or a status.
    #[schemars(with = "Option<Vec<String>>")]
    pub on: Option<Vec<Spanned<String>>>,
    /// Time each try has to start its response.
    #[schemars(with = "Option<DurationText>")]
    pub per_try_timeout: Option<Spanned<String>>,
    /// Share of active requests that may be retries at once.
    #[schemars(with = "Option<f64>")]
    pub budget: Option<Spanned<f64>>,
    /// Retries always allowed at once, whatever the budget.
    #[schemars(with = "Option<i64>")]
    pub min_retries: Option<Spanned<i64>>,
}

/// `health = { path = "/healthz", interval = "2s", ... }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// What a check is: `"http"` (default: a GET of `path`), `"tcp"` (a
    /// connection only) or `"grpc"` (`grpc.health.v1.Health/Check`).
    #[schemars(with = "Option<String>")]
    pub kind: Option<Spanned<String>>,
    /// Path to GET (`kind = "http"` only, and required there).
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// The service to ask about (`kind = "grpc"` only; the server as a
    /// whole when absent).
    #[schemars(with = "Option<String>")]
    pub service: Option<Spanned<String>>,
    /// The `Host` (`:authority`) checks send; the endpoint's host and port
    /// when absent.
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    /// Time between checks of one endpoint.
    #[schemars(with = "Option<DurationText>")]
    pub interval: Option<Spanned<String>>,
    /// Time a check may take.
    #[schemars(with = "Option<DurationText>")]
    pub timeout: Option<Spanned<String>>,
    /// Passes in a row that make an unhealthy endpoint healthy.
    #[schemars(with = "Option<i64>")]
    pub healthy_threshold: Option<Spanned<i64>>,
    /// Failures in a row that make a healthy endpoint unhealthy.
    #[schemars(with = "Option<i64>")]
    pub unhealthy_threshold: Option<Spanned<i64>>,
}

/// `outlier = { consecutive_failures = 5, base_ejection_time = "30s", ... }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierSection {
    /// 5xx answers or connect failures in a row that eject (0: never).
    #[schemars(with = "Option<i64>")]
    pub consecutive_failures: Option<Spanned<i64>>,
    /// First ejection's length; each further one is longer by as much.
    #[schemars(with = "Option<DurationText>")]
    pub base_ejection_time: Option<Spanned<String>>,
    /// Longest ejection.
    #[schemars(with = "Option<DurationText>")]
    pub max_ejection_time: Option<Spanned<String>>,
    /// Largest share of the cluster ejected at once, in percent.
    #[schemars(with = "Option<i64>")]
    pub max_ejection_percent: Option<Spanned<i64>>,
    /// Below this share of usable endpoints, use them all (percent).
    #[schemars(with = "Option<i64>")]
    pub panic_threshold: Option<Spanned<i64>>,
}

/// `match = { ... }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSection {
    /// `example.com` or `*.example.com`.
    #[schemars(with = "Option<String>")]
    pub host: Option<Spanned<String>>,
    /// Exact path.
    #[schemars(with = "Option<String>")]
    pub path: Option<Spanned<String>>,
    /// Path prefix.
    #[schemars(with = "Option<String>")]
    pub path_prefix: Option<Spanned<String>>,
    /// Whole-path regular expression.
    #[schemars(with = "Option<String>")]
    pub path_regex: Option<Spanned<String>>,
    /// Allowed methods.
    #[schemars(with = "Option<Vec<String>>")]
    pub methods: Option<Vec<Spanned<String>>>,
    /// Header conditions: a string for an exact value, `true` for present.
    #[schemars(with = "Option<BTreeMap<String, HeaderCondition>>")]
    pub headers: Option<BTreeMap<Spanned<String>, Spanned<HeaderCondition>>>,
    /// Client addresses or CIDR blocks (the derived client address).
    #[schemars(with = "Option<Vec<String>>")]
    pub client_ip: Option<Vec<Spanned<String>>>,
}

/// `respond = { status = 200, body = "...", headers = { ... } }`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RespondSection {
    /// Status code.
    #[schemars(with = "i64")]
    pub status: Spanned<i64>,
    /// Body text.
    #[serde(default)]
    pub body: String,
    /// Extra response headers.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub headers: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[cluster.NAME]`
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The endpoints (or `discovery`).
    #[serde(default)]
    #[schemars(with = "Vec<EndpointValue>")]
    pub endpoints: Vec<Spanned<EndpointValue>>,
    /// Where the endpoints come from instead of `endpoints`.
    #[schemars(with = "Option<DiscoverySection>")]
    pub discovery: Option<Spanned<DiscoverySection>>,
    /// How to pick one.
    #[schemars(with = "Option<BalancerValue>")]
    pub balancer: Option<Spanned<BalancerValue>>,
    /// Time to establish a connection to an endpoint.
    #[schemars(with = "Option<DurationText>")]
    pub connect_timeout: Option<Spanned<String>>,
    /// Time an idle pooled connection is kept.
    #[schemars(with = "Option<DurationText>")]
    pub idle_timeout: Option<Spanned<String>>,
    /// Idle connections kept per endpoint, per worker.
    #[schemars(with = "Option<i64>")]
    pub max_idle_per_endpoint: Option<Spanned<i64>>,
    /// Active health checks.
    #[schemars(with = "Option<HealthSection>")]
    pub health: Option<Spanned<HealthSection>>,
    /// Passive outlier ejection.
    #[schemars(with = "Option<OutlierSection>")]
    pub outlier: Option<Spanned<OutlierSection>>,
    /// Circuit breakers.
    #[schemars(with = "Option<LimitsSection>")]
    pub limits: Option<Spanned<LimitsSection>>,
    /// `"http1"` (default) or `"h2"`.
    #[schemars(with = "Option<String>")]
    pub protocol: Option<Spanned<String>>,
    /// h2: streams open at once on one upstream connection before another
    /// is opened.
    #[schemars(with = "Option<i64>")]
    pub max_streams_per_connection: Option<Spanned<i64>>,
    /// TLS to the endpoints; plain TCP without it.
    #[schemars(with = "Option<UpstreamTlsSection>")]
    pub tls: Option<Spanned<UpstreamTlsSection>>,
    /// Start each connection with a PROXY protocol header naming the
    /// client: "v1" or "v2".
    #[schemars(with = "Option<String>")]
    pub proxy_protocol: Option<Spanned<String>>,
    /// A new or recovered endpoint's share ramps up linearly over this
    /// long (round-robin, random and least-request).
    #[schemars(with = "Option<DurationText>")]
    pub slow_start: Option<Spanned<String>>,
}

/// A cluster's `tls = { ... }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    /// PEM bundle of the CAs the endpoints' certificates must chain to
    /// (the system's roots without it).
    #[schemars(with = "Option<String>")]
    pub ca: Option<Spanned<String>>,
    /// The name to send (SNI) and verify, for every endpoint (else each
    /// endpoint's host as written).
    #[schemars(with = "Option<String>")]
    pub server_name: Option<Spanned<String>>,
    /// PEM certificate chain presented to the endpoints, leaf first.
    #[schemars(with = "Option<String>")]
    pub client_cert: Option<Spanned<String>>,
    /// PEM private key of `client_cert`.
    #[schemars(with = "Option<String>")]
    pub client_key: Option<Spanned<String>>,
    /// Lowest TLS version accepted: `"1.2"` or `"1.3"`.
    #[schemars(with = "Option<String>")]
    pub min_version: Option<Spanned<String>>,
}

/// A cluster's `discovery = { ... }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySection {
    /// A file of endpoints (`endpoints = [...]`, as in a cluster), relative
    /// to the configuration file; re-read when it changes.
    #[schemars(with = "Option<String>")]
    pub file: Option<Spanned<String>>,
    /// An SRV name (`_api._tcp.service.consul`): the targets, ports and
    /// weights of its lowest-priority group, followed as DNS changes.
    #[schemars(with = "Option<String>")]
    pub srv: Option<Spanned<String>>,
}

/// An endpoints file, as `discovery = { file = ... }` names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsFile {
    /// The endpoints.
    pub endpoints: Vec<Spanned<EndpointValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> serde_json::Value {
        serde_json::from_str(&json_schema()).expect("the schema is JSON")
    }

    #[test]
    fn the_duration_pattern_accepts_what_parse_duration_accepts() {
        let schema = schema();
        let pattern = schema["definitions"]["Duration"]["pattern"]
            .as_str()
            .expect("a pattern");
        let pattern = regex::Regex::new(pattern).expect("a valid pattern");
        for text in [
            "250ms", "5s", "1m30s", "2h", "100us", "10µs", " 5s ", "", "5", "s", "5 s", "5sec",
            "-1s", "1.5s", "s5",
        ] {
            assert_eq!(
                pattern.is_match(text),
                crate::parse_duration(text).is_ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_null_are_refused_as_the_parser_refuses_them() {
        let schema = schema();
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            schema["definitions"]["ListenerSection"]["additionalProperties"],
            false
        );
        assert!(!json_schema().contains("null"), "TOML has no null");
        // The spanned fields still say what they hold.
        let listener = &schema["definitions"]["ListenerSection"]["properties"];
        assert_eq!(listener["name"]["type"], "string");
        assert_eq!(listener["trusted_proxies"]["items"]["type"], "string");
        assert_eq!(
            listener["idle_timeout"]["allOf"][0]["$ref"],
            "#/definitions/Duration"
        );
    }
}
