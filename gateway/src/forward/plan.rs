//! Route planning: what a parsed request head asks for, where it goes,
//! and the answers the gateway makes itself (redirects, direct
//! responses, rate limits, injected faults, 404).
//!
//! Synchronous: the parsed head borrows the client's read buffer, and
//! nothing here waits.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ringway_balancer::hash_key;
use ringway_codec::http1::framing::Framing;
use ringway_codec::http1::request::{self, Forwarded};
use ringway_config::{Action, ClusterId, HashKey, Listener};
use ringway_router::RouteId;

use super::record::{RequestText, push_lossy};
use crate::metrics::bump;
use crate::worker::state::{Generation, Worker};

/// The facts of a request that outlive its parsed head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) framing: Framing,
    pub(crate) keep_alive: bool,
    pub(crate) expect_continue: bool,
    pub(crate) is_head: bool,
    /// Safe to send twice (RFC 9110 §9.2.2).
    pub(crate) idempotent: bool,
    pub(crate) minor_version: u8,
    /// A WebSocket upgrade: a `101` answer turns the connection into a
    /// tunnel.
    pub(crate) upgrade: bool,
    /// The client accepts trailers (`TE: trailers`); an HTTP/2 upstream
    /// is told so (gRPC servers insist).
    pub(crate) te_trailers: bool,
    /// Largest body the route accepts.
    pub(crate) max_body: Option<u64>,
    /// The client's address: the peer's, or, behind a trusted proxy, the
    /// one its `X-Forwarded-For` names.
    pub(crate) client: IpAddr,
    /// The connection's ends, for a PROXY protocol header to the upstream.
    pub(crate) ends: Ends,
}

impl Plan {
    /// The plan of no request, before the first.
    pub(crate) const NONE: Plan = Plan {
        framing: Framing::Empty,
        keep_alive: false,
        expect_continue: false,
        is_head: false,
        idempotent: false,
        minor_version: 1,
        upgrade: false,
        te_trailers: false,
        max_body: None,
        client: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        ends: Ends::NONE,
    };

    /// Where the request comes from and went to, as a PROXY protocol
    /// header to the upstream names them: the client's address (its port
    /// only when the address is the connection's own, 0 when it came from
    /// `X-Forwarded-For`), and the address the client connected to.
    pub(crate) fn origin(&self) -> (SocketAddr, SocketAddr) {
        let peer = self.ends.peer;
        let port = if ringway_config::canonical_ip(peer.ip()) == self.client {
            peer.port()
        } else {
            0
        };
        (SocketAddr::new(self.client, port), self.ends.local())
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Proxy {
        route: RouteId,
        /// The cluster (a split's arm already chosen).
        cluster: Option<ClusterId>,
        /// The request's hash key, for the hashing balancers.
        key_hash: Option<u64>,
        /// Injected delay before proxying.
        delay: Option<Duration>,
    },
    /// Redirect to the location built in the session's buffer.
    Redirect {
        route: RouteId,
    },
    /// Refused by the route's rate limit.
    Limited {
        route: RouteId,
        retry_after: u64,
    },
    /// Aborted by fault injection.
    Abort {
        route: RouteId,
        status: u16,
    },
    Respond {
        route: RouteId,
    },
    NotFound,
    /// A path that cannot be normalized (bad escape, above the root, an
    /// encoded slash the listener refuses): 400, and the connection closes.
    BadPath,
    /// A header name with `_` where the listener refuses them: 400, and
    /// the connection closes.
    BadHeader,
    /// The route's `allow`/`deny` refuses the client: 403.
    Forbidden {
        route: RouteId,
    },
}

impl Target {
    /// The route matched, if any.
    pub(crate) fn route(&self) -> Option<RouteId> {
        match *self {
            Target::Proxy { route, .. }
            | Target::Respond { route }
            | Target::Redirect { route }
            | Target::Limited { route, .. }
            | Target::Abort { route, .. }
            | Target::Forbidden { route } => Some(route),
            Target::NotFound | Target::BadPath | Target::BadHeader => None,
        }
    }
}

/// A response the gateway makes itself.
pub(crate) struct LocalAnswer<'g> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: &'g [u8],
    /// The redirect location buffer, to give back to its owner.
    pub location: Option<String>,
}

/// What the gateway answers for a target it serves itself (anything but
/// [`Target::Proxy`]). A redirect takes the location built in `location`.
pub(crate) fn local_answer<'g>(
    worker: &Worker,
    generation: &'g Generation,
    target: Target,
    location: &mut String,
) -> LocalAnswer<'g> {
    let text = |status, headers, body| LocalAnswer {
        status,
        headers,
        body,
        location: None,
    };
    let plain = || {
        (
            "content-type".to_owned(),
            "text/plain; charset=utf-8".to_owned(),
        )
    };
    match target {
        Target::Respond { route } => match &generation.snapshot.routes[route.0 as usize].action {
            Action::Respond(d) => text(d.status, d.headers.clone(), &d.body[..]),
            _ => text(500, Vec::new(), b""),
        },
        Target::Redirect { route } => {
            let status = match &generation.snapshot.routes[route.0 as usize].action {
                Action::Redirect(r) => r.status,
                _ => 500,
            };
            let taken = std::mem::take(location);
            LocalAnswer {
                status,
                headers: vec![("location".to_owned(), taken.clone())],
                body: b"",
                location: Some(taken),
            }
        }
        Target::Limited { retry_after, .. } => {
            bump(&worker.metrics.rate_limited);
            let headers = vec![("retry-after".to_owned(), retry_after.to_string()), plain()];
            text(429, headers, b"rate limit exceeded\n")
        }
        Target::Abort { status, .. } => {
            let headers = vec![("x-ringway-fault".to_owned(), "abort".to_owned())];
            text(status, headers, b"")
        }
        Target::NotFound | Target::Proxy { .. } => {
            text(404, vec![plain()], b"no route matches this request\n")
        }
        Target::BadPath => text(400, vec![plain()], b"bad request path\n"),
        Target::BadHeader => text(400, vec![plain()], b"header name with an underscore\n"),
        Target::Forbidden { .. } => text(403, vec![plain()], b"forbidden\n"),
    }
}

/// The two ends of a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ends {
    /// The client's address; behind a load balancer that speaks the PROXY
    /// protocol, the one its header names.
    pub(crate) peer: SocketAddr,
    /// The address the client connected to, as far as known without a
    /// system call: the listener's address (unspecified, or port 0, when
    /// it is bound to every address or a port the kernel chose), or the
    /// one a PROXY header named. [`Ends::local`] completes it.
    pub(crate) local: SocketAddr,
    /// The client socket, to ask it for the address it reached when that
    /// is needed (only a PROXY protocol header to an upstream needs it):
    /// no `getsockname` on every accept.
    pub(crate) socket: std::os::fd::RawFd,
}

impl Ends {
    /// The address the client connected to. Valid while the connection is
    /// open (a request or stream in progress keeps it open).
    pub(crate) fn local(&self) -> SocketAddr {
        if !self.local.ip().is_unspecified() && self.local.port() != 0 {
            return self.local;
        }
        // SAFETY: the client socket of the connection whose request asks;
        // it stays open while that request runs.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.socket) };
        socket2::SockRef::from(&fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(self.local)
    }

    /// No connection's: the plan of no request.
    const NONE: Ends = Ends {
        peer: SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
        local: SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
        socket: -1,
    };
}

/// What is known of the client beyond its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientFacts<'a> {
    pub(crate) ends: Ends,
    pub(crate) proto: &'static str,
    /// The header that carries `identity`, when the listener names one.
    pub(crate) identity_header: Option<&'a str>,
    /// The verified client certificate's identity.
    pub(crate) identity: Option<&'a str>,
    /// The listener it came in on: its path, header-name and trusted
    /// proxy rules.
    pub(crate) listener: &'a Listener,
}

impl<'a> ClientFacts<'a> {
    /// The facts of a client of `listener` (whose TLS settings name the
    /// identity header, if any).
    pub(crate) fn new(
        listener: &'a Listener,
        ends: Ends,
        proto: &'static str,
        identity: Option<&'a str>,
    ) -> ClientFacts<'a> {
        ClientFacts {
            ends,
            proto,
            identity_header: listener
                .tls
                .as_ref()
                .and_then(|t| t.identity_header.as_deref()),
            identity,
            listener,
        }
    }
}

/// Routes a parsed request and, when it goes upstream, writes the upstream
/// head into `up_out`. Synchronous: the parsed head borrows the read
/// buffer, and nothing here waits.
pub(crate) fn plan_request(
    worker: &Worker,
    generation: &Generation,
    client: ClientFacts<'_>,
    up_out: &mut Vec<u8>,
    location: &mut String,
    text: &RequestText,
    req: &request::Request<'_, '_>,
) -> (Plan, Target, usize) {
    let mut plan = Plan {
        framing: req.framing,
        keep_alive: req.keep_alive && !worker.drain.is_draining(),
        expect_continue: req.expect_continue,
        upgrade: request::websocket_upgrade(req).is_some(),
        te_trailers: req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("te")
                && h.value
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        }),
        is_head: req.is_head(),
        idempotent: matches!(
            req.method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        minor_version: req.minor_version,
        max_body: None,
        client: client.ends.peer.ip(),
        ends: client.ends,
    };
    // Routed, and sent upstream, by its normal form: `/x/../admin/` is
    // `/admin/` (ringway_codec::path).
    let mut path_buf = worker.path_buf.borrow_mut();
    let normal;
    let req = match ringway_codec::path::normalize(req.target, client.listener.paths, &mut path_buf)
    {
        Ok(false) => req,
        Ok(true) => {
            normal = request::Request {
                target: &path_buf[..],
                ..*req
            };
            &normal
        }
        Err(_) => {
            plan.keep_alive = false;
            return (plan, Target::BadPath, req.head_len);
        }
    };
    if client.listener.underscores == ringway_config::Underscores::Reject
        && req.headers.iter().any(|h| h.name.contains('_'))
    {
        plan.keep_alive = false;
        return (plan, Target::BadHeader, req.head_len);
    }
    let snapshot = &generation.snapshot;
    let peer = client.ends.peer;
    // Who the client is, for hashing, rate limits, allow/deny and the log.
    plan.client = client_address(peer.ip(), &client.listener.trusted_proxies, req.headers);
    let client_ip = plan.client;
    let headers = HeaderLookup {
        client_ip,
        headers: req.headers,
        identity: client
            .identity_header
            .map(|name| (name, client.identity.map(str::as_bytes))),
    };
    let Some(id) = snapshot
        .router
        .route(req.host, req.target, req.method.as_bytes(), &headers)
    else {
        return (plan, Target::NotFound, req.head_len);
    };
    let route_index = id;
    let route = &snapshot.routes[id.0 as usize];
    let policy = &route.policy;
    if policy.refuses(client_ip) {
        return (plan, Target::Forbidden { route: route_index }, req.head_len);
    }
    if let (Some(limiter), Some(limit)) = (generation.limiter(route_index), &policy.rate_limit) {
        let key = limit
            .key
            .as_ref()
            .and_then(|k| request_key_hash(k, req, client_ip))
            .unwrap_or(0);
        if let Err(retry_after) = limiter.take(key, crate::clock::now()) {
            let target = Target::Limited {
                route: route_index,
                retry_after,
            };
            return (plan, target, req.head_len);
        }
    }
    if let Some((share, status)) = policy.fault_abort
        && worker.random() < share
    {
        let target = Target::Abort {
            route: route_index,
            status,
        };
        return (plan, target, req.head_len);
    }
    let target = match &route.action {
        Action::Proxy(_) | Action::Split(_) => {
            let fwd = Forwarded {
                client_ip: peer.ip(),
                proto: client.proto,
                identity: headers.identity,
                request_id: text.generated_id.then_some(text.request_id.as_bytes()),
                traceparent: &text.traceparent,
                upgrade: plan
                    .upgrade
                    .then(|| request::websocket_upgrade(req))
                    .flatten(),
            };
            let edits = request::RequestEdits {
                headers: &policy.request_headers,
                rewrite_prefix: policy
                    .rewrite_prefix
                    .as_ref()
                    .map(|(from, to)| (from.as_str(), to.as_str())),
                rewrite_host: policy.rewrite_host.as_deref(),
                drop_underscored: client.listener.underscores == ringway_config::Underscores::Drop,
            };
            request::write_upstream_head(up_out, req, fwd, edits);
            plan.max_body = policy.max_body;
            let cluster = generation.cluster_for(route_index);
            let key_hash = cluster
                .and_then(|c| snapshot.clusters[c.0 as usize].hash_key.as_ref())
                .and_then(|key| request_key_hash(key, req, client_ip));
            let delay = policy
                .fault_delay
                .filter(|(share, _)| worker.random() < *share)
                .map(|(_, d)| d);
            Target::Proxy {
                route: route_index,
                cluster,
                key_hash,
                delay,
            }
        }
        Action::Redirect(r) => {
            location.clear();
            location.push_str(&r.to);
            if r.keep_path {
                push_lossy(location, req.target);
            }
            Target::Redirect { route: route_index }
        }
        Action::Respond(_) => Target::Respond { route: route_index },
    };
    (plan, target, req.head_len)
}

/// The client's address: the peer's, unless the peer is a trusted proxy;
/// then the first address from the right of `X-Forwarded-For` that is not
/// a trusted proxy (nginx's `real_ip_recursive`), or the leftmost when all
/// are. An entry that is not an address ends the walk where it is.
pub(crate) fn client_address(
    peer: IpAddr,
    trusted: &[ringway_config::IpRange],
    headers: &[httparse::Header<'_>],
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    let mut client = ringway_config::canonical_ip(peer);
    if trusted.is_empty() || !is_trusted(client) {
        return client;
    }
    let entries = headers
        .iter()
        .rev()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .flat_map(|h| h.value.rsplit(|&b| b == b','));
    for entry in entries {
        let Some(ip) = std::str::from_utf8(entry.trim_ascii())
            .ok()
            .and_then(|s| s.parse::<IpAddr>().ok())
        else {
            break;
        };
        client = ringway_config::canonical_ip(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The hash of what `key` names in the request; `None` when the request
/// does not carry it (the balancer then picks at random).
fn request_key_hash(
    key: &HashKey,
    req: &request::Request<'_, '_>,
    client_ip: IpAddr,
) -> Option<u64> {
    let path = req.target.split(|&b| b == b'?').next().unwrap_or(b"");
    match key {
        HashKey::Header(name) => req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| hash_key(h.value)),
        HashKey::Cookie(name) => req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|h| h.value.split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (&pair[..eq] == name.as_bytes()).then(|| hash_key(&pair[eq + 1..]))
            }),
        HashKey::Query(name) => {
            let query = req.target.splitn(2, |&b| b == b'?').nth(1)?;
            query.split(|&b| b == b'&').find_map(|pair| {
                let eq = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
                (&pair[..eq] == name.as_bytes())
                    .then(|| hash_key(pair.get(eq + 1..).unwrap_or(b"")))
            })
        }
        HashKey::Path => Some(hash_key(path)),
        HashKey::ClientIp => Some(match client_ip {
            std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
            std::net::IpAddr::V6(ip) => hash_key(&ip.octets()),
        }),
    }
}

/// The router's view of a parsed head's fields: the identity header, when
/// the listener names one, holds the verified identity and never what the
/// client sent.
struct HeaderLookup<'h, 'b> {
    headers: &'h [httparse::Header<'b>],
    identity: Option<(&'h str, Option<&'h [u8]>)>,
    /// The derived client address, for `client_ip` conditions.
    client_ip: IpAddr,
}

impl ringway_router::Headers for HeaderLookup<'_, '_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        if let Some((header, value)) = self.identity
            && header.eq_ignore_ascii_case(name)
        {
            return value;
        }
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn client_ip(&self) -> Option<IpAddr> {
        Some(self.client_ip)
    }
}
