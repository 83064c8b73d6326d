//! One client connection: read requests, route them, answer directly or
//! proxy them upstream, and keep the connection while both sides allow.
//!
//! Requests on a connection are served one after another, so pipelined
//! requests are answered in order. Bodies stream in both directions through
//! one buffer per side: memory per connection does not grow with a body.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split};
use monoio::net::TcpStream;
use monoio::time::{Instant, timeout, timeout_at};
use ringway_balancer::hash_key;
use ringway_config::{
    Action, Cluster, ClusterId, HashKey, HeaderRules, Listener, UpstreamProtocol,
};

use crate::access_log;
use crate::buffer::{BUF_SIZE, ReadBuf, send_now, write_all};
use crate::cluster::{Overflow, Tally};
use crate::metrics::SeriesLabels;
use crate::pool::{Finished, UpstreamConn, UpstreamStream};
use crate::tls;
use crate::trace::{self, SpanRecord, TraceContext};
use crate::worker::{Generation, Worker};
use ringway_codec::http1::framing::{BodyReader, Framing, FramingError, chunk_header};
use ringway_codec::http1::request::{self, Forwarded};
use ringway_codec::http1::response::{self, ClientBody};

mod to_h2;
pub(crate) mod tries;
mod tunnel;
use tries::Try;
pub(crate) use tunnel::idle_for;

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Largest request body read and dropped to keep a connection after a
/// direct or error response; a larger one closes the connection instead.
pub(crate) const DISCARD_LIMIT: u64 = 1024 * 1024;
/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Most tries of one request, whatever a route asks.
pub(crate) const MAX_ATTEMPTS: usize = 10;

/// Adds one to a worker counter.
pub(crate) fn bump(counter: &std::cell::Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// Counts something in flight on a worker counter until dropped.
pub(crate) struct Counted<'a>(&'a std::cell::Cell<u32>);

impl<'a> Counted<'a> {
    pub(crate) fn new(counter: &'a std::cell::Cell<u32>) -> Counted<'a> {
        counter.set(counter.get() + 1);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// How often, at most, a worker logs a failed TLS handshake; the others
/// are only counted.
const TLS_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves one accepted plain-HTTP client connection until it closes.
pub async fn serve(
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    client: TcpStream,
    peer: SocketAddr,
) {
    let _ = client.set_nodelay(true);
    let _count = ConnectionCount::new(&worker);
    let mut session = Session::new(worker, listener, client, peer, "http", None);
    if session.listener.http2.h2c {
        match session.sniff_preface().await {
            Sniffed::Http1 => {}
            Sniffed::Http2 => {
                let Session {
                    worker,
                    listener,
                    client,
                    rbuf,
                    ..
                } = session;
                let io = crate::http2::io::Replay::new(
                    rbuf.data().to_vec(),
                    crate::http2::io::PlainIo::new(client).gathering(),
                );
                crate::http2::server::serve(worker, listener, io, peer, "http", None).await;
                return;
            }
            Sniffed::Closed => return,
        }
    }
    session.serve().await;
}

/// How a plain connection opens.
enum Sniffed {
    Http1,
    /// With the HTTP/2 preface (h2c with prior knowledge).
    Http2,
    /// Not at all, in time.
    Closed,
}

/// Counts a client connection in the worker's gauges while it lives.
struct ConnectionCount(Rc<Worker>);

impl ConnectionCount {
    fn new(worker: &Rc<Worker>) -> ConnectionCount {
        let metrics = &worker.metrics;
        bump(&metrics.connections_total);
        metrics
            .connections_active
            .set(metrics.connections_active.get() + 1);
        ConnectionCount(worker.clone())
    }
}

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        let metrics = &self.0.metrics;
        metrics
            .connections_active
            .set(metrics.connections_active.get().saturating_sub(1));
    }
}

/// Serves one accepted client connection of a TLS listener: the
/// handshake (within the listener's header timeout), then HTTP/1.1.
pub async fn serve_tls(
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    config: std::sync::Arc<rustls::ServerConfig>,
    client: TcpStream,
    peer: SocketAddr,
) {
    let _ = client.set_nodelay(true);
    let failure = match timeout(listener.header_timeout, tls::handshake(client, config)).await {
        Ok(Ok(accepted)) => {
            bump(&worker.metrics.tls_handshakes);
            let identity = accepted.identity;
            if accepted.stream.alpn_protocol().as_deref() == Some(b"h2") {
                let (io, conn) = accepted.stream.into_parts();
                let io = crate::http2::io::TlsIo::new(io, conn).gathering();
                let _count = ConnectionCount::new(&worker);
                crate::http2::server::serve(worker.clone(), listener, io, peer, "https", identity)
                    .await;
                return;
            }
            serve_stream(worker, listener, accepted.stream, peer, "https", identity).await;
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_owned(),
    };
    // The connection is dropped (closed) here; one line now and then.
    bump(&worker.metrics.tls_handshake_failures);
    let now = std::time::Instant::now();
    let due = worker
        .tls_failure_logged
        .get()
        .is_none_or(|last| now.duration_since(last) >= TLS_FAILURE_LOG_INTERVAL);
    if due {
        worker.tls_failure_logged.set(Some(now));
        crate::say!(
            "ringway: worker {}: listener {}: TLS handshake from {peer} failed: {failure} \
             (further failures for {}s only counted in ringway_tls_handshake_failures_total)",
            worker.id,
            listener.name,
            TLS_FAILURE_LOG_INTERVAL.as_secs()
        );
    }
}

/// Serves a client connection over any byte stream until it closes.
async fn serve_stream<S: AsyncReadRent + AsyncWriteRent + Split + 'static>(
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    client: S,
    peer: SocketAddr,
    proto: &'static str,
    identity: Option<String>,
) {
    let _count = ConnectionCount::new(&worker);
    Session::new(worker, listener, client, peer, proto, identity)
        .serve()
        .await;
}

/// After a request: whether the client connection stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    KeepAlive,
    Close,
}

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
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    Proxy {
        route: usize,
        /// The cluster (a split's arm already chosen).
        cluster: Option<ClusterId>,
        /// The request's hash key, for the hashing balancers.
        key_hash: Option<u64>,
        /// Injected delay before proxying.
        delay: Option<Duration>,
    },
    /// Redirect to the location built in the session's buffer.
    Redirect {
        route: usize,
    },
    /// Refused by the route's rate limit.
    Limited {
        route: usize,
        retry_after: u64,
    },
    /// Aborted by fault injection.
    Abort {
        route: usize,
        status: u16,
    },
    Respond {
        route: usize,
    },
    NotFound,
}

impl Target {
    /// The route matched, if any.
    pub(crate) fn route(&self) -> Option<usize> {
        match *self {
            Target::Proxy { route, .. }
            | Target::Respond { route }
            | Target::Redirect { route }
            | Target::Limited { route, .. }
            | Target::Abort { route, .. } => Some(route),
            Target::NotFound => None,
        }
    }
}

/// Why an upstream exchange failed. Each maps to one status in
/// [`Failure::status`], and none carries heap data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The cluster had no endpoint to offer.
    NoEndpoint,
    /// Connecting failed (refused, unreachable).
    Connect(io::ErrorKind),
    /// Connecting took longer than the cluster's connect timeout.
    ConnectTimeout,
    /// The upstream closed or reset before a complete response head;
    /// `started` when some of it had arrived.
    Closed { started: bool },
    /// The upstream took longer than the route's timeout.
    Timeout,
    /// The upstream's response cannot be passed on.
    Invalid(&'static str),
    /// The client's body framing is invalid.
    ClientBody,
    /// The client stopped sending its body in time.
    ClientTimeout,
    /// The client went away.
    ClientGone,
    /// The request body is larger than the route accepts.
    BodyTooLarge,
    /// A circuit breaker of the cluster is open.
    Overflow(Overflow),
    /// The upstream's TLS handshake failed (certificate, name, protocol).
    TlsHandshake,
    /// The upstream refused the HTTP/2 stream unprocessed (REFUSED_STREAM):
    /// load shedding, safe to send again, even to the same endpoint.
    Refused,
    /// The HTTP/2 connection went away (GOAWAY) before the stream was
    /// processed: safe to send again on a new connection.
    GoneAway,
}

impl Failure {
    /// True when the failure is the endpoint's, for outlier ejection.
    pub(crate) fn is_upstream_fault(self) -> bool {
        matches!(
            self,
            Failure::Connect(_)
                | Failure::ConnectTimeout
                | Failure::Closed { .. }
                | Failure::Timeout
                | Failure::Invalid(_)
                | Failure::TlsHandshake
        )
    }

    /// The status answered for this failure; `None` when there is nobody
    /// to answer.
    pub(crate) fn status(self) -> Option<u16> {
        match self {
            Failure::NoEndpoint => Some(503),
            Failure::Connect(_) | Failure::Closed { .. } | Failure::Invalid(_) => Some(502),
            Failure::ConnectTimeout | Failure::Timeout => Some(504),
            Failure::ClientBody => Some(400),
            Failure::ClientTimeout => Some(408),
            Failure::ClientGone => None,
            Failure::BodyTooLarge => Some(413),
            Failure::Overflow(_) => Some(503),
            Failure::TlsHandshake | Failure::Refused | Failure::GoneAway => Some(502),
        }
    }

    pub(crate) fn detail(self) -> &'static str {
        match self {
            Failure::NoEndpoint => "no upstream endpoint available",
            Failure::Connect(io::ErrorKind::ConnectionRefused) => "upstream refused the connection",
            Failure::Connect(_) => "upstream connection failed",
            Failure::ConnectTimeout => "upstream connect timed out",
            Failure::Closed { .. } => "upstream closed the connection without a response",
            Failure::Timeout => "upstream did not respond in time",
            Failure::Invalid(why) => why,
            Failure::ClientBody => "invalid request body framing",
            Failure::ClientTimeout => "request body not received in time",
            Failure::ClientGone => "client went away",
            Failure::BodyTooLarge => "request body larger than this route accepts",
            Failure::Overflow(_) => "upstream cluster is at its limit",
            Failure::TlsHandshake => "upstream TLS handshake failed",
            Failure::Refused => "upstream refused the stream",
            Failure::GoneAway => "upstream connection went away before the request was processed",
        }
    }
}

/// How the response's body bytes are turned into what the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relay {
    /// The same bytes.
    PassThrough,
    /// Close-delimited in, chunked out.
    Encode,
    /// Chunked in, payload out (a 1.0 client).
    Decode,
}

/// The upstream's final response head, once written for the client.
#[derive(Debug, Clone, Copy)]
struct Reply {
    status: u16,
    framing: Framing,
    relay: Relay,
    upstream_keep_alive: bool,
    close_client: bool,
}

struct Session<S> {
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    client: S,
    peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    proto: &'static str,
    /// The verified client certificate's identity (mutual TLS).
    identity: Option<String>,
    /// Bytes from the client.
    rbuf: ReadBuf,
    /// Bytes for the client (heads, own responses, re-framed body).
    out: Vec<u8>,
    /// The request head (and any buffered body) for the upstream.
    up_out: Vec<u8>,
    /// What the request being served did, for metrics and the log.
    log: RequestLog,
    /// Reused buffer for metric series keys.
    key: String,
    /// Reused buffer for a redirect's location.
    location: String,
    /// The request's text and ids, for the upstream, the log and the span.
    text: RequestText,
    /// The upstream of a switched (WebSocket) connection, to tunnel to.
    tunnel: Option<UpstreamConn>,
}

/// What a request said and which ids it carries, copied out of the read
/// buffer (into buffers reused from request to request) because the log
/// line and the span are written after the buffer has moved on.
#[derive(Debug)]
pub(crate) struct RequestText {
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) target: String,
    pub(crate) request_id: String,
    /// ringway made the request id up (the client sent none).
    pub(crate) generated_id: bool,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) traceparent: Vec<u8>,
}

impl RequestText {
    pub(crate) fn new() -> RequestText {
        RequestText {
            method: String::new(),
            host: String::new(),
            target: String::new(),
            request_id: String::new(),
            generated_id: false,
            trace: None,
            traceparent: Vec::with_capacity(55),
        }
    }

    /// Copies what the log and span need from `req`, and settles its
    /// request id and trace context.
    pub(crate) fn capture(
        &mut self,
        worker: &Worker,
        sample_rate: f64,
        req: &request::Request<'_, '_>,
    ) {
        self.method.clear();
        self.method.push_str(req.method);
        self.host.clear();
        push_lossy(&mut self.host, req.host);
        self.target.clear();
        push_lossy(&mut self.target, req.target);
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
        };
        self.request_id.clear();
        match header("x-request-id").map(|h| h.value.trim_ascii()) {
            Some(id)
                if !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic) =>
            {
                push_lossy(&mut self.request_id, id);
                self.generated_id = false;
            }
            _ => {
                let mut id = Vec::with_capacity(32);
                trace::hex(&worker.random_u64().to_be_bytes(), &mut id);
                trace::hex(&worker.random_u64().to_be_bytes(), &mut id);
                push_lossy(&mut self.request_id, &id);
                self.generated_id = true;
            }
        }
        let span_id = worker.random_u64().to_be_bytes();
        let incoming = header("traceparent").and_then(|h| TraceContext::parse(h.value, span_id));
        let context = incoming.unwrap_or_else(|| {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&worker.random_u64().to_be_bytes());
            trace_id[8..].copy_from_slice(&worker.random_u64().to_be_bytes());
            TraceContext {
                trace_id,
                parent: None,
                span_id,
                sampled: worker.random() < sample_rate,
            }
        });
        self.traceparent.clear();
        context.write_traceparent(&mut self.traceparent);
        self.trace = Some(context);
    }
}

/// Appends `bytes` to `to`, invalid UTF-8 replaced. Checked with
/// `str::from_utf8` first: `from_utf8_lossy` walks its input in chunks and
/// was measurably slower on the valid text that nearly all requests carry.
fn push_lossy(to: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => to.push_str(text),
        Err(_) => to.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// A request served, for the record.
pub(crate) struct Served<'a> {
    pub worker: &'a Worker,
    pub listener: &'a Listener,
    pub peer: SocketAddr,
    pub log: &'a RequestLog,
    pub text: &'a RequestText,
}

impl Served<'_> {
    /// Counts the request in its worker's metrics, logs it and keeps its span.
    /// `key` is a reused buffer for the series key.
    pub(crate) fn record(&self, generation: &Generation, key: &mut String) {
        let snapshot = &generation.snapshot;
        let route = self
            .log
            .route
            .and_then(|r| snapshot.routes.get(r))
            .map_or("", |r| r.name.as_str());
        let cluster = self
            .log
            .cluster
            .and_then(|c| snapshot.clusters.get(c.0 as usize))
            .map_or("", |c| c.name.as_str());
        key.clear();
        key.push_str(&self.listener.name);
        key.push('\0');
        key.push_str(route);
        key.push('\0');
        key.push_str(cluster);
        let series = self.worker.metrics.series(key, || SeriesLabels {
            listener: self.listener.name.clone(),
            route: route.to_owned(),
            cluster: cluster.to_owned(),
        });
        let duration = crate::clock::since(self.log.started);
        let micros = duration.as_micros() as u64;
        // The wall clock only for the sinks that print it: most requests
        // have none to feed.
        let wall_start = || {
            let now = std::time::SystemTime::now();
            now.checked_sub(duration).unwrap_or(now)
        };
        series.record(
            self.log.status,
            micros,
            self.log.bytes_in,
            self.log.bytes_out,
        );
        if let Some(upstream) = self.log.upstream_micros {
            series.upstream.observe(upstream);
        }
        if let Some(log) = &generation.sinks.log {
            let entry = access_log::Entry {
                time: wall_start(),
                client: self.peer,
                method: &self.text.method,
                host: &self.text.host,
                target: &self.text.target,
                status: self.log.status,
                bytes_in: self.log.bytes_in,
                bytes_out: self.log.bytes_out,
                upstream: self.log.upstream,
                upstream_micros: self.log.upstream_micros,
                duration_micros: micros,
                request_id: &self.text.request_id,
                trace_id: self.text.trace.map(|t| t.trace_id),
            };
            let mut buf = self.worker.log_buf.borrow_mut();
            access_log::write_line(&mut buf, log.format, &entry);
        }
        if let (Some(_), Some(context)) = (&generation.sinks.spans, self.text.trace)
            && context.sampled
        {
            let start = wall_start()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            self.worker.span_buf.borrow_mut().push(SpanRecord {
                context,
                name: generation.span_name(self.log.route),
                start_unix_nanos: start,
                end_unix_nanos: start + micros * 1000,
                method: trace::method_name(&self.text.method),
                target: self.text.target.clone(),
                status: self.log.status,
                upstream: self.log.upstream,
            });
        }
        self.worker.flush(false);
    }
}

/// What one request did, filled in as it is served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLog {
    pub(crate) started: std::time::Instant,
    /// Status answered; 0 when nothing could be answered.
    pub(crate) status: u16,
    /// A request head was read (or refused): there is something to count.
    pub(crate) seen: bool,
    pub(crate) route: Option<usize>,
    pub(crate) cluster: Option<ClusterId>,
    pub(crate) bytes_in: u64,
    /// Request body bytes read so far (as framed on the wire).
    pub(crate) body_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) upstream_micros: Option<u64>,
    /// The endpoint tried last.
    pub(crate) upstream: Option<SocketAddr>,
}

impl RequestLog {
    pub(crate) fn new() -> RequestLog {
        RequestLog {
            started: crate::clock::now(),
            status: 0,
            seen: false,
            route: None,
            cluster: None,
            bytes_in: 0,
            body_in: 0,
            bytes_out: 0,
            upstream_micros: None,
            upstream: None,
        }
    }
}

/// HTTP/1.1 tries for an HTTP/1.1 client: the request's head and body
/// bytes go up as they came (re-framed only where needed).
struct H1Exchange<'s, S> {
    session: &'s mut Session<S>,
    plan: Plan,
    body: &'s mut BodyReader,
}

impl<S: AsyncReadRent + AsyncWriteRent> tries::Exchange for H1Exchange<'_, S> {
    type Answer = (UpstreamConn, Reply, bool);

    async fn attempt(&mut self, to: Try<'_>) -> Result<(Self::Answer, u16), Failure> {
        let worker = self.session.worker.clone();
        let (up, reply, sent) = self
            .session
            .attempt(self.plan, &worker, to, self.body)
            .await?;
        Ok(((up, reply, sent), reply.status))
    }

    async fn discard(&mut self, (mut up, reply, request_sent): Self::Answer, to: Try<'_>) {
        let complete = discard_upstream_body(&mut up, reply.framing, to.timeout).await;
        let finished = Finished {
            framing: reply.framing,
            complete,
            keep_alive: reply.upstream_keep_alive,
            request_sent,
        };
        self.session.worker.pool.give_back(
            to.addr,
            up,
            finished,
            to.cluster.idle_timeout,
            to.cluster.max_idle_per_endpoint,
        );
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> Session<S> {
    fn new(
        worker: Rc<Worker>,
        listener: Rc<Listener>,
        client: S,
        peer: SocketAddr,
        proto: &'static str,
        identity: Option<String>,
    ) -> Session<S> {
        Session {
            worker,
            listener,
            client,
            peer,
            proto,
            identity,
            rbuf: ReadBuf::new(),
            out: Vec::with_capacity(1024),
            up_out: Vec::with_capacity(1024),
            log: RequestLog::new(),
            key: String::with_capacity(64),
            location: String::new(),
            text: RequestText::new(),
            tunnel: None,
        }
    }

    /// Reads the first bytes of a plain connection: enough to tell the
    /// HTTP/2 preface from an HTTP/1.1 request line.
    async fn sniff_preface(&mut self) -> Sniffed {
        let preface = crate::http2::PREFACE;
        let deadline = crate::clock::mono_now() + self.listener.header_timeout;
        loop {
            let data = self.rbuf.data();
            let n = data.len().min(preface.len());
            if data[..n] != preface[..n] {
                return Sniffed::Http1;
            }
            if n == preface.len() {
                return Sniffed::Http2;
            }
            match timeout_at(deadline, self.rbuf.fill(&mut self.client, BUF_SIZE)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ if !self.rbuf.is_empty() => return Sniffed::Http1,
                _ => return Sniffed::Closed,
            }
        }
    }

    async fn run(&mut self) {
        let mut first = true;
        loop {
            if self.rbuf.is_empty() {
                // Waiting for the next request: a quiet close on timeout.
                let wait = if first {
                    self.listener.header_timeout
                } else {
                    self.listener.idle_timeout
                };
                match timeout_at(
                    crate::clock::mono_now() + wait,
                    self.rbuf.fill(&mut self.client, BUF_SIZE),
                )
                .await
                {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
            }
            first = false;
            // In flight from its first byte, so a drain waits for it.
            let _in_flight = self.worker.drain.request();
            if self.serve_one().await == Next::Close || self.worker.drain.is_draining() {
                return;
            }
        }
    }

    /// Serves one request and counts it.
    async fn serve_one(&mut self) -> Next {
        // The request runs to its end on the generation it starts on.
        let generation = self.worker.current();
        self.log = RequestLog::new();
        self.text.trace = None;
        self.text.method.clear();
        self.text.target.clear();
        self.text.host.clear();
        self.text.request_id.clear();
        let next = self.serve_request(&generation).await;
        if self.log.seen {
            self.record(&generation);
        }
        next
    }

    /// Counts the request just served in this worker's metrics.
    fn record(&mut self, generation: &Generation) {
        let served = Served {
            worker: &self.worker,
            listener: &self.listener,
            peer: self.peer,
            log: &self.log,
            text: &self.text,
        };
        served.record(generation, &mut self.key);
    }

    /// Writes `self.out` to the client, counting it.
    async fn write_out(&mut self) -> io::Result<()> {
        self.log.bytes_out += self.out.len() as u64;
        write_all(&mut self.client, &mut self.out).await
    }

    /// Reads one request head, then answers it.
    async fn serve_request(&mut self, generation: &Rc<Generation>) -> Next {
        let max_head = self.listener.max_header_bytes;
        let deadline = crate::clock::mono_now() + self.listener.header_timeout;
        let (plan, target, head_len) = loop {
            let mut headers = ringway_codec::http1::header_slots::<{ request::MAX_HEADERS }>();
            match request::parse(self.rbuf.data(), &mut headers) {
                // A head that arrived in one read can be complete and still
                // be over the limit.
                Ok(Some(req)) if req.head_len > max_head => {
                    return self.refuse(431, "request head too large").await;
                }
                Ok(Some(req)) => {
                    let sample_rate = generation.snapshot.tracing.sample_rate;
                    self.text.capture(&self.worker, sample_rate, &req);
                    let client = ClientFacts::new(
                        &self.listener,
                        self.peer,
                        self.proto,
                        self.identity.as_deref(),
                    );
                    break plan_request(
                        &self.worker,
                        generation,
                        client,
                        &mut self.up_out,
                        &mut self.location,
                        &self.text,
                        &req,
                    );
                }
                Ok(None) => {}
                Err(e) => return self.refuse(e.status(), e.detail()).await,
            }
            if self.rbuf.data().len() >= max_head {
                return self.refuse(431, "request head too large").await;
            }
            match timeout_at(deadline, self.rbuf.fill(&mut self.client, max_head)).await {
                Err(_) => return self.refuse(408, "request head not received in time").await,
                Ok(Ok(0)) => return Next::Close,
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
                    return self.refuse(431, "request head too large").await;
                }
                Ok(Err(_)) => return Next::Close,
            }
        };
        self.rbuf.consume(head_len);
        self.log.seen = true;
        self.log.bytes_in += head_len as u64;
        self.log.route = target.route();
        match target {
            Target::Proxy {
                route,
                cluster,
                key_hash,
                delay,
            } => {
                if let Some(delay) = delay {
                    monoio::time::sleep(delay).await;
                }
                self.proxy(generation, plan, route, cluster, key_hash).await
            }
            other => {
                let answer = local_answer(&self.worker, generation, other, &mut self.location);
                let next = self
                    .respond_local(plan, answer.status, &answer.headers, answer.body)
                    .await;
                if let Some(location) = answer.location {
                    self.location = location;
                }
                next
            }
        }
    }

    /// Answers a request from the gateway itself, after reading and
    /// dropping its body where that is cheap, so the connection stays.
    async fn respond_local(
        &mut self,
        plan: Plan,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Next {
        let body_read = self.discard_body(plan).await;
        let close = !plan.keep_alive || !body_read;
        self.log.status = status;
        response::write_own_response(&mut self.out, status, headers, body, plan.is_head, close);
        self.send_out(close).await
    }

    /// Writes `self.out` to the client and says what follows.
    async fn send_out(&mut self, close: bool) -> Next {
        if self.write_out().await.is_err() {
            return Next::Close;
        }
        if close {
            self.linger().await;
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Refuses a request whose head is unusable: the status, then close.
    async fn refuse(&mut self, status: u16, detail: &str) -> Next {
        self.log.seen = true;
        self.log.status = status;
        response::write_error(&mut self.out, status, detail, true);
        self.send_out(true).await
    }

    /// Answers an upstream failure. The connection stays only when the
    /// client's request was read whole.
    async fn fail(&mut self, plan: Plan, failure: Failure, body_read: bool) -> Next {
        let Some(status) = failure.status() else {
            return Next::Close;
        };
        self.log.status = status;
        let close = !plan.keep_alive || !body_read;
        if let Failure::Overflow(overflow) = failure {
            bump(&self.worker.metrics.overflowed);
            let headers = [("x-ringway-overflow".to_owned(), overflow.name().to_owned())];
            let detail = format!("{}: {}\n", failure.detail(), overflow.name());
            response::write_own_response(
                &mut self.out,
                status,
                &headers,
                detail.as_bytes(),
                plan.is_head,
                close,
            );
            return self.send_out(close).await;
        }
        response::write_error(&mut self.out, status, failure.detail(), close);
        self.send_out(close).await
    }

    /// Reads and drops the request body; false when it was not read whole
    /// (too large, invalid, slow, or the client waits for `100 Continue`).
    async fn discard_body(&mut self, plan: Plan) -> bool {
        let mut body = BodyReader::new(plan.framing);
        if body.is_done() {
            return true;
        }
        if plan.expect_continue {
            return false;
        }
        let mut seen = 0u64;
        loop {
            match body.advance(self.rbuf.data(), None) {
                Ok(p) => {
                    self.rbuf.consume(p.consumed);
                    seen += p.consumed as u64;
                    self.log.bytes_in += p.consumed as u64;
                    self.log.body_in += p.consumed as u64;
                    if p.done {
                        return true;
                    }
                }
                Err(_) => return false,
            }
            if seen > DISCARD_LIMIT {
                return false;
            }
            match timeout(
                self.listener.idle_timeout,
                self.rbuf.fill(&mut self.client, BUF_SIZE),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return false,
            }
        }
    }

    /// Half-closes, then reads and drops what the client still sends for a
    /// moment: closing with unread bytes would send a reset, and a reset can
    /// destroy the response still on its way to the client.
    async fn linger(&mut self) {
        let _ = self.client.shutdown().await;
        let deadline = Instant::now() + LINGER;
        let mut dropped = 0;
        while dropped < DISCARD_LIMIT as usize {
            self.rbuf.consume(self.rbuf.data().len());
            match timeout_at(deadline, self.rbuf.fill(&mut self.client, BUF_SIZE)).await {
                Ok(Ok(n)) if n > 0 => dropped += n,
                _ => return,
            }
        }
    }

    /// Proxies one request on route `route_index`, trying again on another
    /// endpoint where the route's retry policy and the worker's retry
    /// budget allow it.
    async fn proxy(
        &mut self,
        generation: &Generation,
        plan: Plan,
        route_index: usize,
        cluster: Option<ClusterId>,
        key_hash: Option<u64>,
    ) -> Next {
        let worker = self.worker.clone();
        let route = &generation.snapshot.routes[route_index];
        let mut body = BodyReader::new(plan.framing);
        // The body bytes that came with the head travel with it.
        match body.advance(self.rbuf.data(), None) {
            Ok(p) => {
                self.up_out
                    .extend_from_slice(&self.rbuf.data()[..p.consumed]);
                self.rbuf.consume(p.consumed);
                self.log.bytes_in += p.consumed as u64;
                self.log.body_in += p.consumed as u64;
            }
            Err(_) => return self.refuse(400, Failure::ClientBody.detail()).await,
        }
        // With the whole request in `up_out`, it can be sent again.
        let replayable = body.is_done();
        let Some(cluster_id) = cluster else {
            return self.fail(plan, Failure::NoEndpoint, replayable).await;
        };
        self.log.cluster = Some(cluster_id);
        let too_large = match (plan.max_body, plan.framing) {
            (Some(max), Framing::Length(n)) => n > max,
            (Some(max), _) => self.log.body_in > max,
            (None, _) => false,
        };
        if too_large {
            return self.fail(plan, Failure::BodyTooLarge, false).await;
        }
        let cluster = &generation.snapshot.clusters[cluster_id.0 as usize];
        let state = generation.cluster(cluster_id);
        if let Some(overflow) = state.overflow(false) {
            return self
                .fail(plan, Failure::Overflow(overflow), replayable)
                .await;
        }
        let _request = Tally::new(&state.breakers.requests);
        let _active = Counted::new(&worker.active_requests);
        let request = tries::Request {
            replayable,
            idempotent: plan.idempotent,
            key_hash,
        };
        let mut upstream = None;
        let destination = tries::Destination {
            worker: &worker,
            route,
            cluster,
            state,
            tls: generation.upstream_tls(cluster_id),
        };
        if cluster.protocol == UpstreamProtocol::Http2 {
            let chosen = {
                let mut exchange = to_h2::H1ToH2 {
                    session: self,
                    plan,
                    body: &mut body,
                };
                tries::run(&mut exchange, destination, request, &mut upstream).await
            };
            self.log.upstream = upstream;
            return match chosen {
                Ok(chosen) => {
                    let rules = &route.policy.response_headers;
                    self.finish_h2(chosen.answer, plan, &body, rules, chosen.timeout)
                        .await
                }
                Err(failure) => self.fail(plan, failure, body.is_done()).await,
            };
        }
        let chosen = {
            let mut exchange = H1Exchange {
                session: self,
                plan,
                body: &mut body,
            };
            tries::run(&mut exchange, destination, request, &mut upstream).await
        };
        self.log.upstream = upstream;
        match chosen {
            Ok(chosen) => {
                let (up, reply, request_sent) = chosen.answer;
                self.finish(
                    up,
                    reply,
                    request_sent,
                    chosen.addr,
                    cluster,
                    &body,
                    chosen.timeout,
                )
                .await
            }
            Err(failure) => self.fail(plan, failure, body.is_done()).await,
        }
    }

    /// One try on endpoint `addr`: a pooled connection or a new one, the
    /// request, the response head. A pooled connection the upstream closed
    /// before reading the request is replaced by a new one once, as hyper
    /// and browsers do, when the whole request is still at hand.
    async fn attempt(
        &mut self,
        plan: Plan,
        worker: &Worker,
        to: Try<'_>,
        body: &mut BodyReader,
    ) -> Result<(UpstreamConn, Reply, bool), Failure> {
        let mut fresh_only = false;
        loop {
            let mut up = upstream_conn(worker, to, fresh_only).await?;
            match self
                .exchange(plan, &mut up, body, to.timeout, to.rules)
                .await
            {
                Ok((reply, request_sent)) => return Ok((up, reply, request_sent)),
                Err(Failure::Closed { started: false }) if up.reused && to.replayable => {
                    fresh_only = true;
                }
                Err(f) => return Err(f),
            }
        }
    }

    /// Relays the chosen response and puts the upstream connection back in
    /// the pool when it can be reused.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &mut self,
        mut up: UpstreamConn,
        reply: Reply,
        request_sent: bool,
        addr: SocketAddr,
        cluster: &Cluster,
        body: &BodyReader,
        timeout: Duration,
    ) -> Next {
        self.log.status = reply.status;
        if reply.status == 101 {
            // The head goes out now; the bytes follow in the tunnel, once
            // this request is recorded.
            if self.write_out().await.is_err() {
                return Next::Close;
            }
            self.tunnel = Some(up);
            return Next::Close;
        }
        match self.relay_body(&mut up, reply, timeout).await {
            Ok(()) => {
                let finished = Finished {
                    framing: reply.framing,
                    complete: true,
                    keep_alive: reply.upstream_keep_alive,
                    request_sent,
                };
                self.worker.pool.give_back(
                    addr,
                    up,
                    finished,
                    cluster.idle_timeout,
                    cluster.max_idle_per_endpoint,
                );
                if reply.close_client {
                    if !body.is_done() {
                        self.linger().await;
                    }
                    Next::Close
                } else {
                    Next::KeepAlive
                }
            }
            Err(()) => Next::Close,
        }
    }

    /// Sends the request on `up` and reads the response head, passing
    /// informational responses on. On success the client's head is in
    /// `self.out`; the flag says whether the whole request reached the
    /// upstream.
    async fn exchange(
        &mut self,
        plan: Plan,
        up: &mut UpstreamConn,
        body: &mut BodyReader,
        timeout: Duration,
        rules: &HeaderRules,
    ) -> Result<(Reply, bool), Failure> {
        let sent_at = crate::clock::now();
        let mut request_sent = true;
        let deadline;
        if body.is_done() {
            deadline = crate::clock::mono_now() + timeout;
            send_and_read_head(up, &mut self.up_out, deadline).await?;
        } else {
            if write_all(&mut up.stream, &mut self.up_out).await.is_err() {
                return Err(Failure::Closed { started: false });
            }
            if plan.expect_continue {
                self.out.clear();
                self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                self.write_out().await.map_err(|_| Failure::ClientGone)?;
            }
            // An upstream that stops reading may have answered early (413,
            // say): its response is read and passed on below.
            request_sent = self.stream_request_body(up, body, plan.max_body).await?;
            deadline = crate::clock::mono_uncached() + timeout;
        }
        loop {
            let mut headers = ringway_codec::http1::header_slots::<{ response::MAX_HEADERS }>();
            let informational = match response::parse(up.rbuf.data(), &mut headers, plan.is_head) {
                Ok(Some(resp)) if resp.status == 101 && plan.upgrade => {
                    response::write_switching_head(&mut self.out, &resp, rules);
                    up.rbuf.consume(resp.head_len);
                    self.log.upstream_micros =
                        Some(crate::clock::since(sent_at).as_micros() as u64);
                    let reply = Reply {
                        status: 101,
                        framing: Framing::Empty,
                        relay: Relay::PassThrough,
                        upstream_keep_alive: false,
                        close_client: true,
                    };
                    return Ok((reply, request_sent));
                }
                Ok(Some(resp)) if resp.status == 101 => {
                    return Err(Failure::Invalid("upstream switched protocols unasked"));
                }
                Ok(Some(resp)) if resp.status < 200 => {
                    // 100 Continue is this hop's business; 102 and 103 go on.
                    let forward = resp.status != 100;
                    if forward {
                        response::write_client_head(
                            &mut self.out,
                            &resp,
                            ClientBody::None,
                            false,
                            rules,
                        );
                    }
                    Some((resp.head_len, forward))
                }
                Ok(Some(resp)) => {
                    let client_body = ClientBody::choose(resp.framing, plan.minor_version);
                    let close_client = !plan.keep_alive
                        || !body.is_done()
                        || client_body.needs_close()
                        || self.worker.drain.is_draining();
                    response::write_client_head(
                        &mut self.out,
                        &resp,
                        client_body,
                        close_client,
                        rules,
                    );
                    let relay = match (resp.framing, client_body) {
                        (Framing::UntilClose, ClientBody::EncodeChunked) => Relay::Encode,
                        (Framing::Chunked, ClientBody::UntilClose) => Relay::Decode,
                        _ => Relay::PassThrough,
                    };
                    let reply = Reply {
                        status: resp.status,
                        framing: resp.framing,
                        relay,
                        upstream_keep_alive: resp.keep_alive,
                        close_client,
                    };
                    let head_len = resp.head_len;
                    up.rbuf.consume(head_len);
                    self.log.upstream_micros =
                        Some(crate::clock::since(sent_at).as_micros() as u64);
                    return Ok((reply, request_sent));
                }
                Ok(None) => None,
                Err(e) => return Err(Failure::Invalid(e.0)),
            };
            if let Some((head_len, forward)) = informational {
                up.rbuf.consume(head_len);
                if forward {
                    self.write_out().await.map_err(|_| Failure::ClientGone)?;
                }
                continue;
            }
            read_more_head(up, deadline).await?;
        }
    }

    /// Streams the rest of the request body to the upstream. Returns false
    /// when the upstream stopped taking it.
    async fn stream_request_body(
        &mut self,
        up: &mut UpstreamConn,
        body: &mut BodyReader,
        max_body: Option<u64>,
    ) -> Result<bool, Failure> {
        while !body.is_done() {
            if self.rbuf.is_empty() {
                // Wait for more body, but also for the upstream: one that
                // answers early (413, say) must not wait on a client that
                // waits on it. Readiness is watched, not read, so losing
                // the race costs no upstream byte; the client's read may be
                // cancelled, and then its connection closes after the
                // response anyway.
                let more = timeout(
                    self.listener.idle_timeout,
                    self.rbuf.fill(&mut self.client, BUF_SIZE),
                );
                monoio::select! {
                    read = more => match read {
                        Ok(Ok(n)) if n > 0 => {}
                        Err(_) => return Err(Failure::ClientTimeout),
                        Ok(_) => return Err(Failure::ClientGone),
                    },
                    _ = up.stream.readable() => return Ok(false),
                }
            }
            let p = body
                .advance(self.rbuf.data(), None)
                .map_err(|_| Failure::ClientBody)?;
            self.log.bytes_in += p.consumed as u64;
            self.log.body_in += p.consumed as u64;
            // Checked before the piece goes up: nothing past the limit is sent.
            if max_body.is_some_and(|max| self.log.body_in > max) {
                return Err(Failure::BodyTooLarge);
            }
            if self
                .rbuf
                .write_prefix(&mut up.stream, p.consumed)
                .await
                .is_err()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends the client head (in `self.out`) and the response body.
    /// `Err` means the response could not be completed: close both sides.
    async fn relay_body(
        &mut self,
        up: &mut UpstreamConn,
        reply: Reply,
        timeout: Duration,
    ) -> Result<(), ()> {
        let mut body = BodyReader::new(reply.framing);
        // What arrived with the head goes out with it, in one write.
        let consumed =
            frame_into(&mut self.out, &mut body, up.rbuf.data(), reply.relay).map_err(|_| ())?;
        up.rbuf.consume(consumed);
        self.write_out().await.map_err(|_| ())?;
        while !body.is_done() {
            match timeout_at(
                crate::clock::mono_uncached() + timeout,
                up.rbuf.fill(&mut up.stream, BUF_SIZE),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) if reply.framing == Framing::UntilClose => {
                    if reply.relay == Relay::Encode {
                        self.out.clear();
                        self.out.extend_from_slice(b"0\r\n\r\n");
                        self.write_out().await.map_err(|_| ())?;
                    }
                    return Ok(());
                }
                // Truncated or stalled: the client sees the connection
                // close before the framing completes.
                _ => return Err(()),
            }
            if reply.relay == Relay::PassThrough {
                let p = body.advance(up.rbuf.data(), None).map_err(|_| ())?;
                self.log.bytes_out += p.consumed as u64;
                up.rbuf
                    .write_prefix(&mut self.client, p.consumed)
                    .await
                    .map_err(|_| ())?;
            } else {
                self.out.clear();
                let consumed = frame_into(&mut self.out, &mut body, up.rbuf.data(), reply.relay)
                    .map_err(|_| ())?;
                up.rbuf.consume(consumed);
                self.write_out().await.map_err(|_| ())?;
            }
        }
        Ok(())
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
        Target::Respond { route } => match &generation.snapshot.routes[route].action {
            Action::Respond(d) => text(d.status, d.headers.clone(), &d.body[..]),
            _ => text(500, Vec::new(), b""),
        },
        Target::Redirect { route } => {
            let status = match &generation.snapshot.routes[route].action {
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
    }
}

/// Routes a parsed request and, when it goes upstream, writes the upstream
/// head into `up_out`. Synchronous: the parsed head borrows the read
/// buffer, and nothing here waits.
/// What is known of the client beyond its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientFacts<'a> {
    pub(crate) peer: SocketAddr,
    pub(crate) proto: &'static str,
    /// The header that carries `identity`, when the listener names one.
    pub(crate) identity_header: Option<&'a str>,
    /// The verified client certificate's identity.
    pub(crate) identity: Option<&'a str>,
}

impl<'a> ClientFacts<'a> {
    /// The facts of a client of `listener` (whose TLS settings name the
    /// identity header, if any).
    pub(crate) fn new(
        listener: &'a Listener,
        peer: SocketAddr,
        proto: &'static str,
        identity: Option<&'a str>,
    ) -> ClientFacts<'a> {
        ClientFacts {
            peer,
            proto,
            identity_header: listener
                .tls
                .as_ref()
                .and_then(|t| t.identity_header.as_deref()),
            identity,
        }
    }
}

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
    };
    let snapshot = &generation.snapshot;
    let peer = client.peer;
    let headers = HeaderLookup {
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
    let route_index = id.0 as usize;
    let route = &snapshot.routes[route_index];
    let policy = &route.policy;
    if let (Some(limiter), Some(limit)) = (generation.limiter(route_index), &policy.rate_limit) {
        let key = limit
            .key
            .as_ref()
            .and_then(|k| request_key_hash(k, req, peer))
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
            };
            request::write_upstream_head(up_out, req, fwd, edits);
            plan.max_body = policy.max_body;
            let cluster = generation.cluster_for(route_index);
            let key_hash = cluster
                .and_then(|c| snapshot.clusters[c.0 as usize].hash_key.as_ref())
                .and_then(|key| request_key_hash(key, req, peer));
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

/// The hash of what `key` names in the request; `None` when the request
/// does not carry it (the balancer then picks at random).
fn request_key_hash(
    key: &HashKey,
    req: &request::Request<'_, '_>,
    peer: SocketAddr,
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
        HashKey::ClientIp => Some(match peer.ip() {
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
}

/// Appends to `out` what the client gets for the body bytes in `data`, and
/// returns how many of them belonged to the body.
fn frame_into(
    out: &mut Vec<u8>,
    body: &mut BodyReader,
    data: &[u8],
    relay: Relay,
) -> Result<usize, FramingError> {
    match relay {
        Relay::PassThrough => {
            let p = body.advance(data, None)?;
            out.extend_from_slice(&data[..p.consumed]);
            Ok(p.consumed)
        }
        Relay::Decode => Ok(body.advance(data, Some(out))?.consumed),
        Relay::Encode => {
            let p = body.advance(data, None)?;
            if p.consumed > 0 {
                chunk_header(out, p.consumed);
                out.extend_from_slice(&data[..p.consumed]);
                out.extend_from_slice(b"\r\n");
            }
            Ok(p.consumed)
        }
    }
}

/// Reads and drops an upstream response body that will not be used;
/// true when it was read whole and the connection is in step.
pub(crate) async fn discard_upstream_body(
    up: &mut UpstreamConn,
    framing: Framing,
    timeout: Duration,
) -> bool {
    if framing == Framing::UntilClose {
        return false;
    }
    let mut body = BodyReader::new(framing);
    let mut seen = 0u64;
    loop {
        match body.advance(up.rbuf.data(), None) {
            Ok(p) => {
                up.rbuf.consume(p.consumed);
                seen += p.consumed as u64;
                if p.done {
                    return true;
                }
            }
            Err(_) => return false,
        }
        if seen > DISCARD_LIMIT {
            return false;
        }
        match monoio::time::timeout(timeout, up.rbuf.fill(&mut up.stream, BUF_SIZE)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// Sends a request that is all in `out` (no body left to stream) and reads
/// the start of the response, by `deadline`.
///
/// Over plain TCP the head goes out with a plain `send(2)` when the socket
/// has room (it nearly always has): the upstream gets it at once rather
/// than when the worker next submits its io_uring operations at the end of
/// the turn, so its answer is back sooner, and there is no completion to
/// wait a turn for. io_uring is used for what has to wait: the rest of a
/// head the socket would not take, and the read.
pub(crate) async fn send_and_read_head(
    up: &mut UpstreamConn,
    out: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), Failure> {
    let unsent = Failure::Closed { started: false };
    let sent = match &up.stream {
        UpstreamStream::Plain(tcp) => send_now(tcp.as_raw_fd(), out).map_err(|_| unsent)?,
        UpstreamStream::Tls(_) => 0,
    };
    if sent < out.len() {
        let (written, rest) = up.stream.write_all(std::mem::take(out).slice(sent..)).await;
        *out = rest.into_inner();
        written.map_err(|_| unsent)?;
    }
    read_more_head(up, deadline).await
}

/// Reads more of an upstream response head, by `deadline`, within the
/// head size limit.
pub(crate) async fn read_more_head(
    up: &mut UpstreamConn,
    deadline: Instant,
) -> Result<(), Failure> {
    if up.rbuf.data().len() >= MAX_RESPONSE_HEAD {
        return Err(Failure::Invalid("upstream response head too large"));
    }
    let started = !up.rbuf.is_empty();
    match timeout_at(deadline, up.rbuf.fill(&mut up.stream, MAX_RESPONSE_HEAD)).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Ok(0)) => Err(Failure::Closed { started }),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::OutOfMemory => {
            Err(Failure::Invalid("upstream response head too large"))
        }
        Ok(Err(_)) => Err(Failure::Closed { started }),
    }
}

/// A pooled HTTP/1.1 connection to `to`'s endpoint, or a new one
/// (`fresh_only` skips the pool).
pub(crate) async fn upstream_conn(
    worker: &Worker,
    to: Try<'_>,
    fresh_only: bool,
) -> Result<UpstreamConn, Failure> {
    if !fresh_only && let Some(up) = worker.pool.take(to.addr, to.tls_fingerprint()) {
        return Ok(up);
    }
    // Boxed: connecting (and a TLS handshake) is the rare case, and its
    // future would otherwise be part of every request's.
    Box::pin(open_upstream_conn(worker, to)).await
}

/// Opens a new HTTP/1.1 connection to `to`'s endpoint.
async fn open_upstream_conn(worker: &Worker, to: Try<'_>) -> Result<UpstreamConn, Failure> {
    if let Some(overflow) = to.state.connect_overflow() {
        return Err(Failure::Overflow(overflow));
    }
    let connecting = Tally::new(&to.state.breakers.pending);
    let started = Instant::now();
    let stream = connect(to.addr, to.cluster.connect_timeout).await?;
    let fd = stream.as_raw_fd();
    let stream = match (to.tls, &to.cluster.tls) {
        (Some(tls), Some(settings)) => {
            let host = &to.cluster.endpoints[to.endpoint].host;
            let name = crate::tls::server_name_for(settings, host)
                .map_err(|_| Failure::Invalid("upstream TLS name is not valid"))?;
            let left = to.cluster.connect_timeout.saturating_sub(started.elapsed());
            let (io, conn) = timeout(left, crate::tls::connect(stream, tls.config.clone(), name))
                .await
                .map_err(|_| Failure::ConnectTimeout)?
                .map_err(|e| {
                    crate::tls::log_upstream_failure(&to.cluster.name, to.addr, &e);
                    Failure::TlsHandshake
                })?;
            UpstreamStream::Tls(Box::new(monoio_rustls::ClientTlsStream::new(io, conn)))
        }
        _ => UpstreamStream::Plain(stream),
    };
    drop(connecting);
    worker.pool.note_opened();
    Ok(UpstreamConn {
        stream,
        rbuf: ReadBuf::new(),
        reused: false,
        tally: Some(Tally::new(&to.state.breakers.connections)),
        tls: to.tls_fingerprint(),
        fd,
    })
}

/// Connects to an upstream endpoint within `limit`.
pub(crate) async fn connect(addr: SocketAddr, limit: Duration) -> Result<TcpStream, Failure> {
    match timeout(limit, TcpStream::connect_addr(addr)).await {
        Err(_) => Err(Failure::ConnectTimeout),
        Ok(Err(e)) => Err(Failure::Connect(e.kind())),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}
