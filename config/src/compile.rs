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
    AccessLog, Action, BalancerKind, Cluster, ClusterId, DirectResponse, Error, HashKey,
    HeaderRules, HealthCheck, HealthKind, Http2Settings, IoDriver, Limits, Listener, LogFormat,
    OtlpEndpoint, Outlier, ProxyProtocol, RateLimit, Redirect, Result, RetryPolicy, Route,
    RoutePolicy, Runtime, Snapshot, Tracing, UpstreamProtocol, WeightedCluster, Workers, duration,
};
use crate::{ClientAuth, Tls, TlsCertificate, TlsVersion, UpstreamTls, tls};
use crate::{DeclaredEndpoint, EndpointSource};

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
    compile_file_text(path, &text)
}

/// Compiles `text`, read from the file at `path`: files it names (TLS
/// certificates and keys) are relative to that file's folder, whatever
/// the working directory is, at start and at every reload alike.
pub fn compile_file_text(path: &Path, text: &str) -> Result<Snapshot> {
    let dir = path.parent().unwrap_or(Path::new(""));
    compile_in(&path.display().to_string(), text, dir)
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

    /// A list of addresses and CIDR blocks.
    fn ip_ranges(&self, list: Option<&Vec<Spanned<String>>>) -> Result<Vec<crate::IpRange>> {
        list.into_iter()
            .flatten()
            .map(|v| {
                v.get_ref()
                    .parse()
                    .map_err(|e: String| self.err(v.span(), e))
            })
            .collect()
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
        Ok(self.socket_addrs(value)?[0])
    }

    /// Every address `value` names: an `IP:port`, or each address a
    /// `host:port` resolves to (at least one), in the resolver's order.
    fn socket_addrs(&self, value: &Spanned<String>) -> Result<Vec<SocketAddr>> {
        let text = value.get_ref();
        if let Ok(addr) = text.parse() {
            return Ok(vec![addr]);
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
        let mut addrs: Vec<SocketAddr> = text.to_socket_addrs().map_err(|_| expected())?.collect();
        // getaddrinfo lists an address once per socket type asked for.
        let mut seen = std::collections::HashSet::new();
        addrs.retain(|a| seen.insert(*a));
        if addrs.is_empty() {
            return Err(expected());
        }
        Ok(addrs)
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

    /// The admin token in `file`: its first line, at least 16 characters
    /// (a short token is a guessable one).
    fn admin_token(&self, file: &Spanned<String>) -> Result<String> {
        let bytes = self.read(file)?;
        let token = String::from_utf8(bytes)
            .ok()
            .and_then(|t| t.lines().next().map(|l| l.trim().to_owned()))
            .unwrap_or_default();
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.err(
                file.span(),
                "the token file's first line must be a token of at least 16 printable characters",
            ));
        }
        Ok(token)
    }

    /// A `max_connections`: 1 ..= 10 million, or none.
    fn connection_cap(&self, value: Option<&Spanned<i64>>) -> Result<Option<u32>> {
        value
            .map(|v| {
                u32::try_from(*v.get_ref())
                    .ok()
                    .filter(|n| (1..=10_000_000).contains(n))
                    .ok_or_else(|| {
                        self.err(v.span(), "expected a connection count in 1..=10000000")
                    })
            })
            .transpose()
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
        let admin_token = file
            .admin
            .as_ref()
            .and_then(|a| a.token_file.as_ref())
            .map(|f| self.admin_token(f))
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
            admin_token,
            access_log,
            tracing,
            listeners,
            router: Arc::new(router),
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
            max_connections: self.connection_cap(section.max_connections.as_ref())?,
            upgrade_socket: match &section.upgrade_socket {
                None => None,
                Some(p) if p.get_ref().is_empty() => {
                    return Err(self.err(p.span(), "expected a path for the upgrade socket"));
                }
                Some(p) => Some(std::path::PathBuf::from(p.get_ref())),
            },
            dns: self.dns(section)?,
        })
    }

    /// `[runtime] resolvers` and `[runtime] dns`.
    fn dns(&self, section: &schema::RuntimeSection) -> Result<crate::DnsSettings> {
        let mut dns = crate::DnsSettings::default();
        if let Some(list) = &section.resolvers {
            if list.get_ref().is_empty() {
                return Err(self.err(
                    list.span(),
                    "expected at least one resolver (leave `resolvers` out for /etc/resolv.conf)",
                ));
            }
            for r in list.get_ref() {
                let text = r.get_ref();
                let addr = text
                    .parse::<SocketAddr>()
                    .or_else(|_| text.parse().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        self.err(
                            r.span(),
                            format!("expected a resolver \"IP\" or \"IP:port\", found {text:?}"),
                        )
                    })?;
                dns.resolvers.push(addr);
            }
        }
        let Some(d) = &section.dns else {
            return Ok(dns);
        };
        let d = d.get_ref();
        dns.min_ttl = self.duration(d.min_ttl.as_ref(), dns.min_ttl)?;
        dns.max_ttl = self.duration(d.max_ttl.as_ref(), dns.max_ttl)?;
        if dns.max_ttl < dns.min_ttl {
            let at = d
                .max_ttl
                .as_ref()
                .or(d.min_ttl.as_ref())
                .map_or(0..0, |v| v.span());
            return Err(self.err(at, "`max_ttl` must not be shorter than `min_ttl`"));
        }
        if let Some(f) = &d.family {
            use crate::AddressFamily as F;
            dns.family = self.choice(
                Some(f),
                "family",
                &[
                    ("all", F::All),
                    ("v4", F::V4),
                    ("v6", F::V6),
                    ("v4-preferred", F::V4Preferred),
                    ("v6-preferred", F::V6Preferred),
                ],
            )?;
        }
        Ok(dns)
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

mod clusters;
mod listeners;
mod routes;
#[cfg(test)]
mod tests;
