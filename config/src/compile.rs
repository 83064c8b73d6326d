//! From text to [`Snapshot`]: deserialize strictly, then check the whole
//! and build the router. Every error points at the value that caused it.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ringway_router::{HeaderMatch, HeaderValueMatch, HostMatch, PathMatch, RouteRule, Router};
use rustls::pki_types::{CertificateDer, ServerName};
use toml::Spanned;

use crate::error::Location;
use crate::schema::{self, HeaderCondition, SizeValue, WorkersValue};
use crate::{
    AccessLog, Action, BalancerKind, Cluster, ClusterId, DirectResponse, Endpoint, Error, HashKey,
    HeaderRules, HealthCheck, Http2Settings, IoDriver, Limits, Listener, LogFormat, OtlpEndpoint,
    Outlier, RateLimit, Redirect, Result, RetryPolicy, Route, RoutePolicy, Runtime, Snapshot,
    Tracing, UpstreamProtocol, WeightedCluster, Workers, duration,
};
use crate::{ClientAuth, Tls, TlsCertificate, TlsVersion, UpstreamTls, tls};

/// The configuration `ringway` runs when given none: one listener on
/// 127.0.0.1:8080 that answers every request directly and says how to go on.
pub const DEFAULT_CONFIG: &str = r#"# ringway's built-in default. Copy examples/ringway.toml and run
#   ringway --config ringway.toml
# to proxy to your own services.
[[listener]]
name = "default"
listen = "127.0.0.1:8080"

[[route]]
name = "welcome"
respond = { status = 200, headers = { "content-type" = "text/plain; charset=utf-8" }, body = """
ringway is running on its built-in default configuration.
Next: write a config with [[listener]], [[route]] and [cluster.NAME] sections
(see examples/ringway.toml), check it with `ringway check FILE`, and run it
with `ringway --config FILE`.
""" }
"#;

const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_IDLE_PER_ENDPOINT: usize = 64;
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// HTTP/2's smallest and largest flow-control windows (RFC 9113 6.9.2).
const H2_WINDOWS: std::ops::RangeInclusive<u64> = 65_535..=(1 << 31) - 1;

/// Reads and compiles the file at `path`.
pub fn load_file(path: &Path) -> Result<Snapshot> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        file: path.to_owned(),
        source,
    })?;
    // Files a listener's `tls` names are relative to the config's folder.
    let dir = path.parent().unwrap_or(Path::new(""));
    compile_in(&path.display().to_string(), &text, dir)
}

/// Compiles configuration text; `name` is used in error locations.
/// Files named in it (TLS certificates) are relative to the working
/// directory.
pub fn compile_str(name: &str, text: &str) -> Result<Snapshot> {
    compile_in(name, text, Path::new(""))
}

fn compile_in(name: &str, text: &str, dir: &Path) -> Result<Snapshot> {
    let cx = Cx {
        name,
        text,
        dir,
        system_roots: std::cell::OnceCell::new(),
    };
    let file: schema::File = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        Error::Invalid {
            at: Location::of(name, text, offset),
            message: e.message().trim().to_owned(),
        }
    })?;
    cx.compile(file)
}

/// The file being compiled, to turn spans into locations.
struct Cx<'a> {
    name: &'a str,
    text: &'a str,
    /// Where relative file names start.
    dir: &'a Path,
    /// The system's trust anchors, read once per compile for all the
    /// clusters that need them.
    system_roots: std::cell::OnceCell<Result<Vec<CertificateDer<'static>>, String>>,
}

impl Cx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        Error::Invalid {
            at: Location::of(self.name, self.text, span.start),
            message: message.into(),
        }
    }

    fn duration(&self, value: Option<&Spanned<String>>, default: Duration) -> Result<Duration> {
        match value {
            None => Ok(default),
            Some(v) => {
                let d = duration::parse_duration(v.get_ref()).map_err(|m| self.err(v.span(), m))?;
                if d.is_zero() {
                    return Err(self.err(v.span(), "expected a duration greater than zero"));
                }
                Ok(d)
            }
        }
    }

    fn socket_addr(&self, value: &Spanned<String>) -> Result<SocketAddr> {
        let text = value.get_ref();
        if let Ok(addr) = text.parse() {
            return Ok(addr);
        }
        // A host name resolves once, here, on the control thread.
        let expected = || {
            self.err(
                value.span(),
                format!("expected an address \"IP:port\" or \"host:port\", found {text:?}"),
            )
        };
        if !text.contains(':') {
            return Err(expected());
        }
        text.to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(expected)
    }

    /// An optional integer: `default` when absent, else the value when it
    /// fits `T` and `ok` holds, else an error saying what was `expected`.
    fn int_or<T: TryFrom<i64>>(
        &self,
        value: Option<&Spanned<i64>>,
        default: T,
        ok: impl Fn(&T) -> bool,
        expected: &str,
    ) -> Result<T> {
        match value {
            None => Ok(default),
            Some(v) => T::try_from(*v.get_ref())
                .ok()
                .filter(|n| ok(n))
                .ok_or_else(|| self.err(v.span(), expected)),
        }
    }

    fn positive(&self, value: Option<&Spanned<i64>>, default: usize, what: &str) -> Result<usize> {
        self.int_or(
            value,
            default,
            |&n| n > 0,
            &format!("expected {what} greater than zero"),
        )
    }

    fn compile(&self, file: schema::File) -> Result<Snapshot> {
        let runtime = self.runtime(&file.runtime)?;
        let admin = file
            .admin
            .as_ref()
            .map(|a| self.socket_addr(&a.listen))
            .transpose()?;
        let listeners = self.listeners(&file.listeners)?;
        let access_log = file
            .access_log
            .as_ref()
            .map(|a| self.access_log(a))
            .transpose()?;
        let tracing = match &file.tracing {
            Some(t) => self.tracing(t)?,
            None => Tracing::default(),
        };
        let (clusters, cluster_ids) = self.clusters(&file.clusters)?;
        let (rules, routes) = self.routes(&file.routes, &cluster_ids)?;
        let router = Router::build(rules).map_err(|e| match e {
            ringway_router::Error::InvalidRegex { route, message } => {
                // Point at the regex itself, not just its route.
                let route = file.routes[route].get_ref();
                let span = route
                    .matcher
                    .as_ref()
                    .and_then(|m| m.get_ref().path_regex.as_ref())
                    .map_or(0..0, |r| r.span());
                self.err(span, format!("invalid path_regex: {message}"))
            }
            other => self.err(0..0, other.to_string()),
        })?;
        Ok(Snapshot {
            generation: 0,
            source_name: self.name.to_owned(),
            source_text: self.text.to_owned(),
            runtime,
            admin,
            access_log,
            tracing,
            listeners,
            router,
            routes,
            clusters,
        })
    }

    fn runtime(&self, section: &schema::RuntimeSection) -> Result<Runtime> {
        let workers = match &section.workers {
            None => Workers::Auto,
            Some(w) => match *w.get_ref() {
                WorkersValue::Auto => Workers::Auto,
                WorkersValue::Count(n) => match usize::try_from(n) {
                    Ok(n) if (1..=1024).contains(&n) => Workers::Count(n),
                    _ => return Err(self.err(w.span(), "expected \"auto\" or 1..=1024 workers")),
                },
            },
        };
        let io = match &section.io {
            None => IoDriver::Uring,
            Some(v) => match v.get_ref().as_str() {
                "uring" | "io_uring" => IoDriver::Uring,
                "epoll" => IoDriver::Epoll,
                other => {
                    return Err(self.err(
                        v.span(),
                        format!("expected io = \"uring\" or \"epoll\", found {other:?}"),
                    ));
                }
            },
        };
        Ok(Runtime {
            workers,
            io,
            drain_timeout: self.duration(section.drain_timeout.as_ref(), DEFAULT_DRAIN_TIMEOUT)?,
        })
    }

    fn listeners(&self, sections: &[Spanned<schema::ListenerSection>]) -> Result<Vec<Listener>> {
        let mut names: HashMap<&str, ()> = HashMap::new();
        let mut addrs: HashMap<SocketAddr, ()> = HashMap::new();
        let mut out = Vec::with_capacity(sections.len());
        for section in sections {
            let l = section.get_ref();
            if names.insert(l.name.get_ref(), ()).is_some() {
                return Err(self.err(
                    l.name.span(),
                    format!("duplicate listener name {:?}", l.name.get_ref()),
                ));
            }
            let addr = self.socket_addr(&l.listen)?;
            // Port 0 asks the kernel for a free port: never a clash.
            if addr.port() != 0 && addrs.insert(addr, ()).is_some() {
                return Err(self.err(
                    l.listen.span(),
                    format!("another listener already listens on {addr}"),
                ));
            }
            out.push(Listener {
                name: l.name.get_ref().clone(),
                addr,
                header_timeout: self.duration(l.header_timeout.as_ref(), DEFAULT_HEADER_TIMEOUT)?,
                idle_timeout: self.duration(l.idle_timeout.as_ref(), DEFAULT_IDLE_TIMEOUT)?,
                max_header_bytes: self.positive(
                    l.max_header_bytes.as_ref(),
                    DEFAULT_MAX_HEADER_BYTES,
                    "a size in bytes",
                )?,
                tls: l.tls.as_ref().map(|t| self.tls(t)).transpose()?,
                http2: match &l.http2 {
                    Some(h) => self.http2(h)?,
                    None => Http2Settings::default(),
                },
            });
        }
        Ok(out)
    }

    fn http2(&self, section: &Spanned<schema::Http2Section>) -> Result<Http2Settings> {
        let h = section.get_ref();
        let d = Http2Settings::default();
        let window = |v: &Option<Spanned<SizeValue>>, default: u32| -> Result<u32> {
            let Some(v) = v else { return Ok(default) };
            parse_size(v.get_ref())
                .filter(|n| H2_WINDOWS.contains(n))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    self.err(
                        v.span(),
                        "expected a window size in 65535..=2147483647 bytes, or a string such as \"1MiB\"",
                    )
                })
        };
        let count = |v: &Option<Spanned<i64>>, default: usize| {
            self.int_or(
                v.as_ref(),
                default,
                |n| (1..=100_000).contains(n),
                "expected a count in 1..=100000",
            )
        };
        Ok(Http2Settings {
            max_concurrent_streams: self.int_or(
                h.max_concurrent_streams.as_ref(),
                d.max_concurrent_streams,
                |n| (1..=10_000).contains(n),
                "expected a stream count in 1..=10000",
            )?,
            initial_stream_window: window(&h.initial_stream_window, d.initial_stream_window)?,
            initial_connection_window: window(
                &h.initial_connection_window,
                d.initial_connection_window,
            )?,
            max_pending_reset_streams: count(
                &h.max_pending_reset_streams,
                d.max_pending_reset_streams,
            )?,
            max_local_error_resets: count(&h.max_local_error_resets, d.max_local_error_resets)?,
            h2c: h.h2c.unwrap_or(d.h2c),
        })
    }

    /// `min_version = "1.2"` (the default) or `"1.3"`.
    fn min_version(&self, value: Option<&Spanned<String>>) -> Result<TlsVersion> {
        match value.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "1.2")) => Ok(TlsVersion::Tls12),
            Some((_, "1.3")) => Ok(TlsVersion::Tls13),
            Some((v, other)) => Err(self.err(
                v.span(),
                format!("expected \"1.2\" or \"1.3\", found {other:?}"),
            )),
        }
    }

    /// Reads a file named at `value`, relative to the config's folder.
    fn read(&self, value: &Spanned<String>) -> Result<Vec<u8>> {
        let path = self.dir.join(value.get_ref());
        std::fs::read(&path)
            .map_err(|e| self.err(value.span(), format!("cannot read {}: {e}", path.display())))
    }

    /// One certificate chain and its key, read and checked.
    fn certificate(
        &self,
        cert: &Spanned<String>,
        key: &Spanned<String>,
        now: i64,
    ) -> Result<TlsCertificate> {
        let chain = tls::parse_certs(&self.read(cert)?).map_err(|m| self.err(cert.span(), m))?;
        let names = tls::leaf_names(&chain[0], now).map_err(|m| self.err(cert.span(), m))?;
        let der = tls::parse_key(&self.read(key)?).map_err(|m| self.err(key.span(), m))?;
        let key = tls::certified_key(chain, der).map_err(|m| self.err(key.span(), m))?;
        Ok(TlsCertificate {
            names,
            key: Arc::new(key),
        })
    }

    fn tls(&self, section: &Spanned<schema::TlsSection>) -> Result<Tls> {
        let t = section.get_ref();
        let now = unix_now();
        let mut certificates = Vec::new();
        match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => certificates.push(self.certificate(cert, key, now)?),
            (Some(cert), None) => {
                return Err(self.err(cert.span(), "`cert` needs its `key` beside it"));
            }
            (None, Some(key)) => {
                return Err(self.err(key.span(), "`key` needs its `cert` beside it"));
            }
            (None, None) => {}
        }
        for c in t.certificates.iter().flat_map(|c| c.get_ref()) {
            let c = c.get_ref();
            certificates.push(self.certificate(&c.cert, &c.key, now)?);
        }
        if certificates.is_empty() {
            return Err(self.err(
                section.span(),
                "expected a certificate: `cert` and `key`, or `certificates = [{ cert, key }]`",
            ));
        }
        let alpn = match &t.alpn {
            // h2 preferred; clients that do not offer it get HTTP/1.1.
            None => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Some(list) => {
                let mut alpn = Vec::new();
                for p in list.get_ref() {
                    match p.get_ref().as_str() {
                        "h2" | "http/1.1" | "http/1.0" => {
                            alpn.push(p.get_ref().as_bytes().to_vec())
                        }
                        other => {
                            return Err(self.err(
                                p.span(),
                                format!(
                                    "expected \"h2\", \"http/1.1\" or \"http/1.0\", found {other:?}"
                                ),
                            ));
                        }
                    }
                }
                alpn
            }
        };
        let min_version = self.min_version(t.min_version.as_ref())?;
        let client_auth = match (&t.client_ca, &t.client_auth) {
            (None, Some(a)) => {
                return Err(self.err(a.span(), "`client_auth` needs a `client_ca` bundle"));
            }
            (None, None) => None,
            (Some(ca), auth) => {
                let roots =
                    tls::parse_certs(&self.read(ca)?).map_err(|m| self.err(ca.span(), m))?;
                let required = match auth.as_ref().map(|a| (a, a.get_ref().as_str())) {
                    None | Some((_, "require")) => true,
                    Some((_, "optional")) => false,
                    Some((a, other)) => {
                        return Err(self.err(
                            a.span(),
                            format!("expected \"require\" or \"optional\", found {other:?}"),
                        ));
                    }
                };
                Some(ClientAuth { roots, required })
            }
        };
        let identity_header = match &t.client_identity_header {
            None => None,
            Some(h) => {
                if client_auth.is_none() {
                    return Err(self.err(
                        h.span(),
                        "`client_identity_header` needs `client_ca` (no client certificate is verified without it)",
                    ));
                }
                self.header_name(h)?;
                Some(h.get_ref().to_ascii_lowercase())
            }
        };
        Ok(Tls {
            certificates,
            alpn,
            min_version,
            client_auth,
            identity_header,
        })
    }

    fn clusters(
        &self,
        sections: &BTreeMap<Spanned<String>, Spanned<schema::ClusterSection>>,
    ) -> Result<(Vec<Cluster>, HashMap<String, ClusterId>)> {
        let mut out = Vec::with_capacity(sections.len());
        let mut ids = HashMap::new();
        for (name, section) in sections {
            let c = section.get_ref();
            if c.endpoints.is_empty() {
                return Err(self.err(
                    section.span(),
                    format!("cluster {:?} needs at least one endpoint", name.get_ref()),
                ));
            }
            let protocol = self.protocol(c.protocol.as_ref())?;
            let tls = c
                .tls
                .as_ref()
                .map(|t| self.upstream_tls(t, protocol))
                .transpose()?;
            let mut endpoints = Vec::with_capacity(c.endpoints.len());
            for e in &c.endpoints {
                let addr_value = Spanned::new(e.span(), e.get_ref().addr.clone());
                let addr = self.socket_addr(&addr_value)?;
                // `socket_addr` accepted it, so a `:port` follows the host.
                let host = addr_value
                    .get_ref()
                    .rsplit_once(':')
                    .map_or("", |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let verifiable = match &tls {
                    Some(tls) if tls.server_name.is_none() => {
                        ServerName::try_from(host.as_str()).is_ok()
                    }
                    _ => true,
                };
                if !verifiable {
                    return Err(self.err(
                        e.span(),
                        format!("{host:?} is not a name TLS can verify; set the cluster's `tls.server_name`"),
                    ));
                }
                let weight = u32::try_from(e.get_ref().weight)
                    .ok()
                    .filter(|w| (1..=1_000_000).contains(w))
                    .ok_or_else(|| self.err(e.span(), "expected a weight in 1..=1000000"))?;
                endpoints.push(Endpoint { addr, host, weight });
            }
            let (balancer, hash_key) = match &c.balancer {
                None => (BalancerKind::RoundRobin, None),
                Some(b) => self.balancer(b)?,
            };
            ids.insert(name.get_ref().clone(), ClusterId(out.len() as u32));
            out.push(Cluster {
                name: name.get_ref().clone(),
                endpoints,
                balancer,
                hash_key,
                connect_timeout: self
                    .duration(c.connect_timeout.as_ref(), DEFAULT_CONNECT_TIMEOUT)?,
                idle_timeout: self.duration(c.idle_timeout.as_ref(), DEFAULT_POOL_IDLE_TIMEOUT)?,
                health: c.health.as_ref().map(|h| self.health(h)).transpose()?,
                outlier: match &c.outlier {
                    Some(o) => self.outlier(o)?,
                    None => Outlier::default(),
                },
                limits: match &c.limits {
                    Some(l) => self.limits(l)?,
                    None => Limits::default(),
                },
                max_idle_per_endpoint: match &c.max_idle_per_endpoint {
                    Some(v) if *v.get_ref() == 0 => 0,
                    other => self.positive(
                        other.as_ref(),
                        DEFAULT_MAX_IDLE_PER_ENDPOINT,
                        "a connection count",
                    )?,
                },
                protocol,
                max_streams_per_connection: self.int_or(
                    c.max_streams_per_connection.as_ref(),
                    DEFAULT_MAX_STREAMS_PER_CONNECTION,
                    |n| (1..=10_000).contains(n),
                    "expected a stream count in 1..=10000",
                )?,
                tls,
            });
        }
        Ok((out, ids))
    }

    fn protocol(&self, value: Option<&Spanned<String>>) -> Result<UpstreamProtocol> {
        match value.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "http1" | "http/1.1")) => Ok(UpstreamProtocol::Http1),
            Some((_, "h2" | "http2")) => Ok(UpstreamProtocol::Http2),
            Some((v, other)) => Err(self.err(
                v.span(),
                format!("unknown protocol {other:?}; expected \"http1\" (or \"http/1.1\") or \"h2\" (or \"http2\")"),
            )),
        }
    }

    fn upstream_tls(
        &self,
        section: &Spanned<schema::UpstreamTlsSection>,
        protocol: UpstreamProtocol,
    ) -> Result<UpstreamTls> {
        let t = section.get_ref();
        let roots = match &t.ca {
            Some(ca) => {
                let certs =
                    tls::parse_certs(&self.read(ca)?).map_err(|m| self.err(ca.span(), m))?;
                let count = certs.len();
                let roots = tls::usable_roots(certs);
                if roots.len() != count {
                    return Err(self.err(
                        ca.span(),
                        "a certificate of the bundle cannot serve as a trust anchor",
                    ));
                }
                roots
            }
            None => self
                .system_roots
                .get_or_init(tls::system_roots)
                .clone()
                .map_err(|m| self.err(section.span(), m))?,
        };
        let server_name = match &t.server_name {
            None => None,
            Some(name) => {
                if ServerName::try_from(name.get_ref().as_str()).is_err() {
                    return Err(self.err(
                        name.span(),
                        format!(
                            "expected a DNS name or an IP address, found {:?}",
                            name.get_ref()
                        ),
                    ));
                }
                Some(name.get_ref().clone())
            }
        };
        let client_identity = match (&t.client_cert, &t.client_key) {
            (Some(cert), Some(key)) => Some(self.certificate(cert, key, unix_now())?.key),
            (Some(cert), None) => {
                return Err(self.err(
                    cert.span(),
                    "`client_cert` needs its `client_key` beside it",
                ));
            }
            (None, Some(key)) => {
                return Err(self.err(key.span(), "`client_key` needs its `client_cert` beside it"));
            }
            (None, None) => None,
        };
        Ok(UpstreamTls {
            roots,
            server_name,
            client_identity,
            min_version: self.min_version(t.min_version.as_ref())?,
            alpn: vec![match protocol {
                UpstreamProtocol::Http1 => b"http/1.1".to_vec(),
                UpstreamProtocol::Http2 => b"h2".to_vec(),
            }],
        })
    }

    fn routes(
        &self,
        sections: &[Spanned<schema::RouteSection>],
        clusters: &HashMap<String, ClusterId>,
    ) -> Result<(Vec<RouteRule>, Vec<Route>)> {
        let mut rules = Vec::with_capacity(sections.len());
        let mut routes = Vec::with_capacity(sections.len());
        for (i, section) in sections.iter().enumerate() {
            let r = section.get_ref();
            let action = match (&r.cluster, &r.split, &r.respond, &r.redirect) {
                (Some(name), None, None, None) => Action::Proxy(self.cluster_id(name, clusters)?),
                (None, Some(split), None, None) => Action::Split(self.split(split, clusters)?),
                (None, None, Some(respond), None) => {
                    Action::Respond(self.direct_response(respond)?)
                }
                (None, None, None, Some(redirect)) => Action::Redirect(self.redirect(redirect)?),
                _ => {
                    return Err(self.err(
                        section.span(),
                        "a route needs exactly one of `cluster = \"NAME\"`, `split = [...]`, `respond = { ... }` or `redirect = { ... }`",
                    ));
                }
            };
            rules.push(match &r.matcher {
                Some(m) => self.rule(m)?,
                None => RouteRule {
                    host: HostMatch::Any,
                    path: PathMatch::Any,
                    methods: Vec::new(),
                    headers: Vec::new(),
                },
            });
            routes.push(Route {
                name: r
                    .name
                    .as_ref()
                    .map_or_else(|| format!("route-{i}"), |n| n.get_ref().clone()),
                action,
                timeout: self.duration(r.timeout.as_ref(), DEFAULT_ROUTE_TIMEOUT)?,
                retry: match &r.retry {
                    Some(retry) => self.retry(retry)?,
                    None => RetryPolicy::default(),
                },
                policy: self.policy(r)?,
            });
        }
        Ok((rules, routes))
    }

    fn balancer(
        &self,
        b: &Spanned<schema::BalancerValue>,
    ) -> Result<(BalancerKind, Option<HashKey>)> {
        let v = b.get_ref();
        let bad = |message: String| self.err(b.span(), message);
        let size = |n: Option<i64>, what: &str| -> Result<Option<usize>> {
            n.map(|n| {
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(format!("expected {what} greater than zero")))
            })
            .transpose()
        };
        let hashing = matches!(v.kind.as_str(), "ring-hash" | "maglev");
        let key = match (&v.key, hashing) {
            (None, _) => None,
            (Some(_), false) => return Err(bad(format!("`key` applies to \"ring-hash\" and \"maglev\", not {:?}", v.kind))),
            (Some(k), true) => Some(hash_key(k).ok_or_else(|| {
                bad(format!("unknown hash key {k:?}; expected \"header:NAME\", \"cookie:NAME\", \"query:NAME\", \"path\" or \"client-ip\""))
            })?),
        };
        let unused = |present: bool, field: &str| -> Result<()> {
            if present {
                return Err(bad(format!("`{field}` does not apply to {:?}", v.kind)));
            }
            Ok(())
        };
        let kind = match v.kind.as_str() {
            "round-robin" | "random" => {
                unused(
                    v.table_size.is_some()
                        || v.min_ring_size.is_some()
                        || v.max_ring_size.is_some(),
                    "a table or ring size",
                )?;
                unused(v.bounded_load.is_some(), "bounded_load")?;
                unused(v.active_request_bias.is_some(), "active_request_bias")?;
                if v.kind == "random" {
                    BalancerKind::Random
                } else {
                    BalancerKind::RoundRobin
                }
            }
            "least-request" => {
                unused(
                    v.table_size.is_some()
                        || v.min_ring_size.is_some()
                        || v.max_ring_size.is_some(),
                    "a table or ring size",
                )?;
                unused(v.bounded_load.is_some(), "bounded_load")?;
                let mut kind = BalancerKind::least_request();
                if let (
                    Some(bias),
                    BalancerKind::LeastRequest {
                        active_request_bias,
                    },
                ) = (v.active_request_bias, &mut kind)
                {
                    *active_request_bias = bias;
                }
                kind
            }
            "ring-hash" => {
                unused(v.table_size.is_some(), "table_size")?;
                unused(v.active_request_bias.is_some(), "active_request_bias")?;
                let mut kind = BalancerKind::ring_hash();
                if let BalancerKind::RingHash {
                    min_ring_size,
                    max_ring_size,
                    bounded_load,
                } = &mut kind
                {
                    if let Some(min) = size(v.min_ring_size, "min_ring_size")? {
                        *min_ring_size = min;
                    }
                    *max_ring_size = size(v.max_ring_size, "max_ring_size")?;
                    *bounded_load = v.bounded_load;
                }
                kind
            }
            "maglev" => {
                unused(
                    v.min_ring_size.is_some() || v.max_ring_size.is_some(),
                    "a ring size",
                )?;
                unused(v.active_request_bias.is_some(), "active_request_bias")?;
                let mut kind = BalancerKind::maglev();
                if let BalancerKind::Maglev {
                    table_size,
                    bounded_load,
                } = &mut kind
                {
                    if let Some(n) = size(v.table_size, "table_size")? {
                        *table_size = n;
                    }
                    *bounded_load = v.bounded_load;
                }
                kind
            }
            other => {
                return Err(bad(format!(
                    "unknown balancer {other:?}; expected \"round-robin\", \"random\", \"least-request\", \"ring-hash\" or \"maglev\""
                )));
            }
        };
        // Parameters the algorithm itself refuses (a table size that is
        // not prime, a load factor below 1) are found by building it once.
        let probe = [ringway_balancer::EndpointSpec::new("probe", 1)];
        ringway_balancer::Balancer::build(ringway_balancer::BalancerSpec::new(kind), &probe)
            .map_err(|e| bad(format!("invalid balancer: {e}")))?;
        Ok((kind, key))
    }

    fn access_log(&self, a: &Spanned<schema::AccessLogSection>) -> Result<AccessLog> {
        let a = a.get_ref();
        let path = match a.path.get_ref().as_str() {
            "stdout" | "-" => None,
            "" => return Err(self.err(a.path.span(), "expected \"stdout\" or a file path")),
            p => Some(std::path::PathBuf::from(p)),
        };
        let format = match a.format.as_ref().map(|f| (f, f.get_ref().as_str())) {
            None | Some((_, "json")) => LogFormat::Json,
            Some((_, "combined")) => LogFormat::Combined,
            Some((f, other)) => {
                return Err(self.err(
                    f.span(),
                    format!("unknown log format {other:?}; expected \"json\" or \"combined\""),
                ));
            }
        };
        Ok(AccessLog { path, format })
    }

    fn tracing(&self, t: &Spanned<schema::TracingSection>) -> Result<Tracing> {
        let t = t.get_ref();
        let mut tracing = Tracing::default();
        if let Some(rate) = &t.sample_rate {
            if !(0.0..=1.0).contains(rate.get_ref()) {
                return Err(self.err(rate.span(), "expected a sample rate between 0.0 and 1.0"));
            }
            tracing.sample_rate = *rate.get_ref();
        }
        if let Some(name) = &t.service_name {
            tracing.service_name = name.get_ref().clone();
        }
        if let Some(url) = &t.otlp_endpoint {
            let bad = || {
                self.err(
                    url.span(),
                    "expected an OTLP/HTTP URL such as \"http://127.0.0.1:4318/v1/traces\"",
                )
            };
            let rest = url.get_ref().strip_prefix("http://").ok_or_else(bad)?;
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/v1/traces"),
            };
            let spanned = Spanned::new(url.span(), authority.to_owned());
            let addr = self.socket_addr(&spanned).map_err(|_| bad())?;
            tracing.otlp = Some(OtlpEndpoint {
                authority: authority.to_owned(),
                addr,
                path: path.to_owned(),
            });
        }
        Ok(tracing)
    }

    fn redirect(&self, r: &Spanned<schema::RedirectSection>) -> Result<Redirect> {
        let s = r.get_ref();
        if s.to.get_ref().is_empty() || s.to.get_ref().bytes().any(|b| b.is_ascii_control()) {
            return Err(self.err(s.to.span(), "expected a URL without control characters"));
        }
        let status = match &s.status {
            None => 301,
            Some(v) => u16::try_from(*v.get_ref())
                .ok()
                .filter(|s| [301, 302, 303, 307, 308].contains(s))
                .ok_or_else(|| {
                    self.err(
                        v.span(),
                        "expected a redirect status: 301, 302, 303, 307 or 308",
                    )
                })?,
        };
        Ok(Redirect {
            to: s.to.get_ref().clone(),
            status,
            keep_path: s.keep_path,
        })
    }

    fn header_rules(&self, h: &Option<Spanned<schema::HeadersSection>>) -> Result<HeaderRules> {
        let Some(h) = h else {
            return Ok(HeaderRules::default());
        };
        let h = h.get_ref();
        let pairs =
            |map: &BTreeMap<Spanned<String>, Spanned<String>>| -> Result<Vec<(String, String)>> {
                let mut out = Vec::with_capacity(map.len());
                for (name, value) in map {
                    self.header_name(name)?;
                    if value
                        .get_ref()
                        .bytes()
                        .any(|b| b == b'\r' || b == b'\n' || b == 0)
                    {
                        return Err(
                            self.err(value.span(), "a header value cannot hold CR, LF or NUL")
                        );
                    }
                    out.push((name.get_ref().to_ascii_lowercase(), value.get_ref().clone()));
                }
                Ok(out)
            };
        let mut remove = Vec::with_capacity(h.remove.len());
        for name in &h.remove {
            self.header_name(name)?;
            remove.push(name.get_ref().to_ascii_lowercase());
        }
        Ok(HeaderRules {
            add: pairs(&h.add)?,
            set: pairs(&h.set)?,
            remove,
        })
    }

    fn policy(&self, r: &schema::RouteSection) -> Result<RoutePolicy> {
        let mut policy = RoutePolicy {
            request_headers: self.header_rules(&r.request_headers)?,
            response_headers: self.header_rules(&r.response_headers)?,
            ..RoutePolicy::default()
        };
        for rules in [&policy.request_headers, &policy.response_headers] {
            for name in rules
                .add
                .iter()
                .chain(&rules.set)
                .map(|(n, _)| n)
                .chain(&rules.remove)
            {
                if matches!(
                    name.as_str(),
                    "content-length" | "transfer-encoding" | "connection" | "host"
                ) {
                    let span = r
                        .request_headers
                        .as_ref()
                        .or(r.response_headers.as_ref())
                        .map_or(0..0, |h| h.span());
                    return Err(self.err(
                        span,
                        format!("{name:?} is managed by ringway; use `rewrite` for host"),
                    ));
                }
            }
        }
        if let Some(rw) = &r.rewrite {
            let rw = rw.get_ref();
            if let Some(prefix) = &rw.path_prefix {
                let matched = r
                    .matcher
                    .as_ref()
                    .and_then(|m| m.get_ref().path_prefix.as_ref())
                    .ok_or_else(|| {
                        self.err(
                            prefix.span(),
                            "rewrite.path_prefix needs the route to match on `path_prefix`",
                        )
                    })?;
                if !prefix.get_ref().starts_with('/') {
                    return Err(self.err(prefix.span(), "expected a path starting with `/`"));
                }
                policy.rewrite_prefix = Some((matched.get_ref().clone(), prefix.get_ref().clone()));
            }
            if let Some(host) = &rw.host {
                if host.get_ref().is_empty()
                    || !host.get_ref().bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(self.err(host.span(), "expected a host name"));
                }
                policy.rewrite_host = Some(host.get_ref().clone());
            }
        }
        if let Some(size) = &r.max_body {
            policy.max_body = Some(parse_size(size.get_ref()).ok_or_else(|| {
                self.err(
                    size.span(),
                    "expected a size in bytes, or a string such as \"64KiB\", \"1MiB\" or \"2GiB\"",
                )
            })?);
        }
        if let Some(rl) = &r.rate_limit {
            let rl = rl.get_ref();
            let requests = u32::try_from(*rl.requests.get_ref())
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    self.err(
                        rl.requests.span(),
                        "expected a number of requests greater than zero",
                    )
                })?;
            let per = self.duration(rl.per.as_ref(), Duration::from_secs(1))?;
            let burst = match &rl.burst {
                None => f64::from(requests),
                Some(b) => u32::try_from(*b.get_ref())
                    .ok()
                    .filter(|&n| n > 0)
                    .map(f64::from)
                    .ok_or_else(|| self.err(b.span(), "expected a burst greater than zero"))?,
            };
            let key = match &rl.key {
                None => None,
                Some(k) => match hash_key(k.get_ref()) {
                    Some(key @ (HashKey::ClientIp | HashKey::Header(_))) => Some(key),
                    _ => {
                        return Err(self.err(k.span(), "expected \"client-ip\" or \"header:NAME\""));
                    }
                },
            };
            policy.rate_limit = Some(RateLimit {
                per_second: f64::from(requests) / per.as_secs_f64(),
                burst,
                key,
            });
        }
        if let Some(fault) = &r.fault {
            let fault = fault.get_ref();
            let share = |p: &Spanned<f64>| -> Result<f64> {
                let v = *p.get_ref();
                if !(0.0..=100.0).contains(&v) {
                    return Err(self.err(p.span(), "expected a percentage between 0 and 100"));
                }
                Ok(v / 100.0)
            };
            if let Some(d) = &fault.delay {
                let d = d.get_ref();
                policy.fault_delay = Some((
                    share(&d.percent)?,
                    self.duration(Some(&d.duration), Duration::ZERO)?,
                ));
            }
            if let Some(a) = &fault.abort {
                let a = a.get_ref();
                let status = u16::try_from(*a.status.get_ref())
                    .ok()
                    .filter(|s| (200..=599).contains(s))
                    .ok_or_else(|| self.err(a.status.span(), "expected a status in 200..=599"))?;
                policy.fault_abort = Some((share(&a.percent)?, status));
            }
        }
        Ok(policy)
    }

    fn limits(&self, l: &Spanned<schema::LimitsSection>) -> Result<Limits> {
        let s = l.get_ref();
        let d = Limits::default();
        let count = |v: &Option<Spanned<i64>>, default: u32| {
            self.int_or(
                v.as_ref(),
                default,
                |&n| n > 0,
                "expected a limit greater than zero",
            )
        };
        Ok(Limits {
            max_connections: count(&s.max_connections, d.max_connections)?,
            max_pending: count(&s.max_pending, d.max_pending)?,
            max_requests: count(&s.max_requests, d.max_requests)?,
            max_retries: count(&s.max_retries, d.max_retries)?,
        })
    }

    fn cluster_id(
        &self,
        name: &Spanned<String>,
        clusters: &HashMap<String, ClusterId>,
    ) -> Result<ClusterId> {
        clusters.get(name.get_ref()).copied().ok_or_else(|| {
            self.err(
                name.span(),
                format!("no cluster named {:?} is defined", name.get_ref()),
            )
        })
    }

    fn split(
        &self,
        split: &Spanned<Vec<Spanned<schema::SplitEntry>>>,
        clusters: &HashMap<String, ClusterId>,
    ) -> Result<Vec<WeightedCluster>> {
        if split.get_ref().is_empty() {
            return Err(self.err(split.span(), "a split needs at least one cluster"));
        }
        let mut arms = Vec::with_capacity(split.get_ref().len());
        for entry in split.get_ref() {
            let e = entry.get_ref();
            let weight = u32::try_from(*e.weight.get_ref())
                .ok()
                .filter(|w| (1..=1_000_000).contains(w))
                .ok_or_else(|| self.err(e.weight.span(), "expected a weight in 1..=1000000"))?;
            arms.push(WeightedCluster {
                cluster: self.cluster_id(&e.cluster, clusters)?,
                weight,
            });
        }
        Ok(arms)
    }

    fn retry(&self, retry: &Spanned<schema::RetrySection>) -> Result<RetryPolicy> {
        let r = retry.get_ref();
        let mut policy = RetryPolicy::default();
        if let Some(attempts) = &r.attempts {
            policy.attempts = u32::try_from(*attempts.get_ref())
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| {
                    self.err(
                        attempts.span(),
                        "expected attempts in 1..=10 (tries in all, the first included)",
                    )
                })?;
        }
        if let Some(on) = &r.on {
            policy.on_connect_failure = false;
            for condition in on {
                match condition.get_ref().as_str() {
                    "connect-failure" => policy.on_connect_failure = true,
                    "reset" => policy.on_reset = true,
                    "5xx" => policy.on_statuses.extend(500..=599),
                    "gateway-error" => policy.on_statuses.extend([502, 503, 504]),
                    other => match other.parse::<u16>() {
                        Ok(status) if (500..=599).contains(&status) => {
                            policy.on_statuses.push(status)
                        }
                        _ => {
                            return Err(self.err(
                                condition.span(),
                                format!("unknown retry condition {other:?}; expected \"connect-failure\", \"reset\", \"5xx\", \"gateway-error\" or a 5xx status"),
                            ));
                        }
                    },
                }
            }
        }
        if let Some(t) = &r.per_try_timeout {
            policy.per_try_timeout = Some(self.duration(Some(t), Duration::ZERO)?);
        }
        if let Some(budget) = &r.budget {
            let b = *budget.get_ref();
            if !(0.0..=1.0).contains(&b) {
                return Err(self.err(
                    budget.span(),
                    "expected a budget between 0.0 and 1.0 (a share of active requests)",
                ));
            }
            policy.budget = b;
        }
        if let Some(min) = &r.min_retries {
            policy.min_retries = u32::try_from(*min.get_ref())
                .map_err(|_| self.err(min.span(), "expected a count of zero or more"))?;
        }
        Ok(policy)
    }

    fn health(&self, h: &Spanned<schema::HealthSection>) -> Result<HealthCheck> {
        let s = h.get_ref();
        if !s.path.get_ref().starts_with('/') {
            return Err(self.err(s.path.span(), "expected a path starting with `/`"));
        }
        let threshold = |v: &Option<Spanned<i64>>, default: u32| {
            self.int_or(
                v.as_ref(),
                default,
                |&n| n > 0,
                "expected a count greater than zero",
            )
        };
        Ok(HealthCheck {
            path: s.path.get_ref().clone(),
            interval: self.duration(s.interval.as_ref(), Duration::from_secs(5))?,
            timeout: self.duration(s.timeout.as_ref(), Duration::from_secs(1))?,
            healthy_threshold: threshold(&s.healthy_threshold, 1)?,
            unhealthy_threshold: threshold(&s.unhealthy_threshold, 2)?,
        })
    }

    fn outlier(&self, o: &Spanned<schema::OutlierSection>) -> Result<Outlier> {
        let s = o.get_ref();
        let defaults = Outlier::default();
        let percent = |v: &Option<Spanned<i64>>, default: u8| {
            self.int_or(
                v.as_ref(),
                default,
                |&p| p <= 100,
                "expected a percentage in 0..=100",
            )
        };
        Ok(Outlier {
            consecutive_failures: self.int_or(
                s.consecutive_failures.as_ref(),
                defaults.consecutive_failures,
                |_| true,
                "expected a count of zero (never) or more",
            )?,
            base_ejection: self.duration(s.base_ejection_time.as_ref(), defaults.base_ejection)?,
            max_ejection: self.duration(s.max_ejection_time.as_ref(), defaults.max_ejection)?,
            max_ejection_percent: percent(&s.max_ejection_percent, defaults.max_ejection_percent)?,
            panic_threshold: percent(&s.panic_threshold, defaults.panic_threshold)?,
        })
    }

    fn rule(&self, m: &Spanned<schema::MatchSection>) -> Result<RouteRule> {
        let section = m.get_ref();
        let host = match &section.host {
            None => HostMatch::Any,
            Some(h) => {
                HostMatch::parse(h.get_ref()).map_err(|e| self.err(h.span(), e.to_string()))?
            }
        };
        let path_kinds = [
            section
                .path
                .as_ref()
                .map(|p| (p, PathMatch::Exact(p.get_ref().clone()))),
            section
                .path_prefix
                .as_ref()
                .map(|p| (p, PathMatch::Prefix(p.get_ref().clone()))),
            section
                .path_regex
                .as_ref()
                .map(|p| (p, PathMatch::Regex(p.get_ref().clone()))),
        ];
        let mut given = path_kinds.into_iter().flatten();
        let path = match (given.next(), given.next()) {
            (None, _) => PathMatch::Any,
            (Some((_, path)), None) => path,
            (Some(_), Some((second, _))) => {
                return Err(self.err(
                    second.span(),
                    "give at most one of path, path_prefix and path_regex",
                ));
            }
        };
        for p in [&section.path, &section.path_prefix].into_iter().flatten() {
            if !p.get_ref().starts_with('/') {
                return Err(self.err(p.span(), "expected a path starting with `/`"));
            }
        }
        let mut methods = Vec::new();
        for method in section.methods.iter().flatten() {
            if method.get_ref().is_empty() || !method.get_ref().bytes().all(is_token_byte) {
                return Err(self.err(method.span(), "expected an HTTP method such as \"GET\""));
            }
            methods.push(method.get_ref().clone());
        }
        let mut headers = Vec::new();
        for (name, cond) in section.headers.iter().flatten() {
            self.header_name(name)?;
            let value = match cond.get_ref() {
                HeaderCondition::Present => HeaderValueMatch::Present,
                HeaderCondition::Exact(v) => HeaderValueMatch::Exact(v.clone()),
            };
            headers.push(HeaderMatch {
                name: name.get_ref().to_ascii_lowercase(),
                value,
            });
        }
        Ok(RouteRule {
            host,
            path,
            methods,
            headers,
        })
    }

    fn direct_response(&self, r: &Spanned<schema::RespondSection>) -> Result<DirectResponse> {
        let section = r.get_ref();
        let status = u16::try_from(*section.status.get_ref())
            .ok()
            .filter(|s| (200..=599).contains(s))
            .ok_or_else(|| self.err(section.status.span(), "expected a status in 200..=599"))?;
        let mut headers = Vec::with_capacity(section.headers.len());
        for (name, value) in &section.headers {
            self.header_name(name)?;
            if name.get_ref().eq_ignore_ascii_case("content-length")
                || name.get_ref().eq_ignore_ascii_case("transfer-encoding")
            {
                return Err(self.err(name.span(), "the body's framing is set by ringway"));
            }
            if value
                .get_ref()
                .bytes()
                .any(|b| b == b'\r' || b == b'\n' || b == 0)
            {
                return Err(self.err(value.span(), "a header value cannot hold CR, LF or NUL"));
            }
            headers.push((name.get_ref().clone(), value.get_ref().clone()));
        }
        Ok(DirectResponse {
            status,
            headers,
            body: section.body.clone().into_bytes(),
        })
    }

    fn header_name(&self, name: &Spanned<String>) -> Result<()> {
        if name.get_ref().is_empty() || !name.get_ref().bytes().all(is_token_byte) {
            return Err(self.err(name.span(), "expected a header name (letters, digits, `-`)"));
        }
        Ok(())
    }
}

/// Now, in Unix seconds, to check certificates' expiry.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `1024`, `"64KiB"`, `"1MiB"`, `"2GiB"` (also `KB`/`MB`/`GB` as powers of 1000).
fn parse_size(value: &SizeValue) -> Option<u64> {
    match value {
        SizeValue::Bytes(n) => u64::try_from(*n).ok(),
        SizeValue::Text(t) => {
            let t = t.trim();
            let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let n: u64 = t[..digits].parse().ok()?;
            let unit: u64 = match t[digits..].trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                "KB" | "kB" => 1000,
                "MB" => 1_000_000,
                "GB" => 1_000_000_000,
                _ => return None,
            };
            n.checked_mul(unit)
        }
    }
}

/// `header:NAME`, `cookie:NAME`, `query:NAME`, `path`, `client-ip`.
fn hash_key(text: &str) -> Option<HashKey> {
    let named = |name: &str| (!name.is_empty()).then(|| name.to_owned());
    match text.split_once(':') {
        Some(("header", name)) if name.bytes().all(is_token_byte) => {
            named(&name.to_ascii_lowercase()).map(HashKey::Header)
        }
        Some(("cookie", name)) => named(name).map(HashKey::Cookie),
        Some(("query", name)) => named(name).map(HashKey::Query),
        None if text == "path" => Some(HashKey::Path),
        None if text == "client-ip" => Some(HashKey::ClientIp),
        _ => None,
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
