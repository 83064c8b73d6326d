//! Downstream HTTP/2: one connection's streams, each served by its own
//! task on the worker, proxied to HTTP/1.1 or HTTP/2 upstreams.
//!
//! The h2 crate's protections stay on and are set from the listener:
//! concurrent streams, the header-list size (the listener's head limit,
//! which also bounds CONTINUATION floods), and the rapid-reset guards
//! (CVE-2023-44487): streams reset before they are served, and resets
//! this side must send because the peer misbehaves, are both capped and
//! end the connection with GOAWAY when exceeded.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{Method, Request, Response};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::time::{Instant as MonoInstant, sleep, timeout, timeout_at};
use ringway_config::{ClusterId, Listener, UpstreamProtocol};
use tokio::io::{AsyncRead, AsyncWrite};

use super::io::{Polled, counting_polls};
use crate::buffer::{BUF_SIZE, write_all};
use crate::cluster::Tally;
use crate::pool::{Finished, UpstreamConn};
use crate::proxy::tries::{self, Exchange, Try};
use crate::proxy::{
    ClientFacts, Counted, Failure, Plan, RequestLog, RequestText, Served, Target, bump,
    discard_upstream_body, local_answer, plan_request, read_more_head, send_and_read_head,
    upstream_conn,
};
use crate::worker::{Generation, Worker};
use ringway_codec::convert;
use ringway_codec::http1::framing::{BodyReader, Framing, chunk_header};
use ringway_codec::http1::{request, response};

/// What every stream of a connection shares.
#[derive(Debug)]
struct Connection {
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    proto: &'static str,
    /// The verified client certificate's identity (mutual TLS).
    identity: Option<String>,
    /// Streams being served.
    open: Cell<u32>,
    /// When the last stream ended (or the connection started).
    idle_since: Cell<Instant>,
    /// Buffers of streams that ended, for the next streams to fill.
    spare: RefCell<Vec<Scratch>>,
}

/// A stream's buffers: its request's text, the upstream head, a redirect's
/// location and the metric key. Kept by the connection from stream to
/// stream (at most as many as ran at once), as the HTTP/1.1 session keeps
/// its own, rather than allocated for each stream.
#[derive(Debug)]
struct Scratch {
    text: RequestText,
    up_out: Vec<u8>,
    location: String,
    key: String,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            text: RequestText::new(),
            up_out: Vec::with_capacity(1024),
            location: String::new(),
            key: String::with_capacity(64),
        }
    }
}

/// A stream being served, counted on its connection.
struct Open(Rc<Connection>);

impl Open {
    fn new(conn: &Rc<Connection>) -> Open {
        conn.open.set(conn.open.get() + 1);
        Open(conn.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let open = self.0.open.get().saturating_sub(1);
        self.0.open.set(open);
        if open == 0 {
            self.0.idle_since.set(crate::clock::now());
        }
    }
}

/// A stream the client opened, or why none came.
type Accepted = Option<Result<(Request<RecvStream>, SendResponse<Bytes>), h2::Error>>;

/// What woke the connection loop.
enum Event {
    Stream(Box<Accepted>),
    Drain,
    Tick,
}

/// Serves an HTTP/2 client connection until it closes, the worker drains,
/// or it stays idle past the listener's idle timeout (then GOAWAY, and the
/// streams in flight finish).
///
/// `io` should gather flushes (`TlsIo::gathering`): this task counts its
/// polls for it.
pub async fn serve<T>(
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    io: T,
    peer: SocketAddr,
    proto: &'static str,
    identity: Option<String>,
) where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let shared = Rc::new(Connection {
        worker,
        listener,
        peer,
        proto,
        identity,
        open: Cell::new(0),
        idle_since: Cell::new(crate::clock::now()),
        spare: RefCell::new(Vec::new()),
    });
    counting_polls(Polled::Connection, serve_connection(shared, io)).await;
}

/// [`serve`]'s work, in a task that counts its polls.
async fn serve_connection<T>(shared: Rc<Connection>, io: T)
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (worker, listener) = (&shared.worker, &shared.listener);
    let settings = &listener.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_window_size(settings.initial_stream_window)
        .initial_connection_window_size(settings.initial_connection_window)
        .max_header_list_size(u32::try_from(listener.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(settings.max_pending_reset_streams)
        .max_local_error_reset_streams(Some(settings.max_local_error_resets))
        .max_send_buffer_size(64 * 1024)
        .enable_connect_protocol();
    let mut conn = match timeout(listener.header_timeout, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(conn)) => conn,
        _ => return,
    };
    // Idle from the end of the handshake.
    shared.idle_since.set(crate::clock::now());
    let mut closing = false;
    let mut flushing = None;
    // One timer for the idle check, not one per stream accepted.
    let tick_every = listener.idle_timeout.min(Duration::from_secs(1));
    let mut tick = std::pin::pin!(sleep(tick_every));
    loop {
        // The drain is waited on, not polled for at a tick: the streams in
        // flight when it starts must keep the worker up until this
        // connection has sent their last frames.
        let drain = async {
            if closing {
                std::future::pending::<()>().await;
            }
            worker.drain.started().await;
        };
        let event = monoio::select! {
            next = conn.accept() => Event::Stream(Box::new(next)),
            _ = drain => Event::Drain,
            _ = &mut tick => Event::Tick,
        };
        match event {
            Event::Stream(next) => match *next {
                Some(Ok((request, respond))) => {
                    let open = Open::new(&shared);
                    let task = handle(open, request, respond);
                    monoio::spawn(counting_polls(Polled::Stream, task));
                }
                // A connection error (h2 has sent GOAWAY), or no more
                // streams to come (after a GOAWAY either way).
                Some(Err(_)) | None => break,
            },
            Event::Drain => {
                conn.graceful_shutdown();
                closing = true;
                // A stream's last frames are written by this task after
                // the stream's own task is done: the drain waits for the
                // connection to close, not only for the streams.
                flushing = Some(worker.drain.request());
            }
            Event::Tick => {
                tick.set(sleep(tick_every));
                let idle = shared.open.get() == 0
                    && shared.idle_since.get().elapsed() >= listener.idle_timeout;
                if idle && !closing {
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
    // The streams in flight still need the connection driven (their
    // frames go out through it) until they end and it closes.
    let _ = poll_fn(|cx| conn.poll_closed(cx)).await;
    drop(flushing);
}

/// Serves one stream and records it.
async fn handle(open: Open, request: Request<RecvStream>, respond: SendResponse<Bytes>) {
    let conn = open.0.clone();
    let _in_flight = conn.worker.drain.request();
    let generation = conn.worker.current();
    let Scratch {
        text,
        up_out,
        location,
        mut key,
    } = conn.spare.borrow_mut().pop().unwrap_or_else(Scratch::new);
    let mut stream = Stream {
        conn,
        respond,
        sent: false,
        log: RequestLog::new(),
        text,
        up_out,
        location,
    };
    stream.log.seen = true;
    // A stream the client reset before its task ran (a rapid-reset burst
    // leaves many) is not worth any upstream work.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if stream.respond.poll_reset(&mut cx).is_pending() {
        stream.serve(&generation, request).await;
    }
    let served = Served {
        worker: &stream.conn.worker,
        listener: &stream.conn.listener,
        peer: stream.conn.peer,
        log: &stream.log,
        text: &stream.text,
    };
    served.record(&generation, &mut key);
    let Stream {
        conn,
        text,
        up_out,
        location,
        ..
    } = stream;
    conn.spare.borrow_mut().push(Scratch {
        text,
        up_out,
        location,
        key,
    });
    drop(open);
}

struct Stream {
    conn: Rc<Connection>,
    respond: SendResponse<Bytes>,
    /// A response head went to the client.
    sent: bool,
    log: RequestLog,
    text: RequestText,
    /// The upstream request head, written as HTTP/1.1.
    up_out: Vec<u8>,
    location: String,
}

impl Stream {
    async fn serve(&mut self, generation: &Rc<Generation>, request: Request<RecvStream>) {
        let (parts, body) = request.into_parts();
        // WebSocket over HTTP/2 (RFC 8441): an extended CONNECT, passed to
        // an HTTP/1.1 upstream as the GET that upgrades.
        let websocket = parts.method == Method::CONNECT
            && parts
                .extensions
                .get::<h2::ext::Protocol>()
                .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
        if parts.method == Method::CONNECT && !websocket {
            return self
                .answer(501, &[], b"CONNECT is only offered for WebSocket\n")
                .await;
        }
        let mut headers = convert::header_view(&parts.headers);
        let key = websocket.then(|| websocket_key(&self.conn.worker));
        if let Some(key) = &key {
            headers.extend([
                httparse::Header {
                    name: "connection",
                    value: b"upgrade",
                },
                httparse::Header {
                    name: "upgrade",
                    value: b"websocket",
                },
                httparse::Header {
                    name: "sec-websocket-key",
                    value: key.as_bytes(),
                },
            ]);
        }
        let host = parts
            .uri
            .authority()
            .map(|a| a.as_str().as_bytes())
            .or_else(|| parts.headers.get(http::header::HOST).map(|v| v.as_bytes()))
            .unwrap_or(b"");
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .as_bytes();
        let length = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let framing = match (body.is_end_stream() || websocket, length) {
            (true, _) => Framing::Empty,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => Framing::Chunked,
        };
        let view = request::Request {
            method: if websocket {
                "GET"
            } else {
                parts.method.as_str()
            },
            target,
            host,
            minor_version: 1,
            http2: true,
            headers: &headers,
            head_len: 0,
            framing,
            keep_alive: true,
            expect_continue: false,
        };
        let worker = self.conn.worker.clone();
        self.text
            .capture(&worker, generation.snapshot.tracing.sample_rate, &view);
        let client = ClientFacts::new(
            &self.conn.listener,
            self.conn.peer,
            self.conn.proto,
            self.conn.identity.as_deref(),
        );
        let (plan, target, _) = plan_request(
            &worker,
            generation,
            client,
            &mut self.up_out,
            &mut self.location,
            &self.text,
            &view,
        );
        drop(headers);
        self.log.route = target.route();
        match target {
            Target::Proxy {
                route,
                cluster,
                key_hash,
                delay,
            } => {
                if let Some(delay) = delay {
                    sleep(delay).await;
                }
                let request = ProxyRequest {
                    plan,
                    route,
                    cluster,
                    key_hash,
                };
                self.proxy(generation, request, body).await;
            }
            other => {
                let answer = local_answer(&worker, generation, other, &mut self.location);
                self.answer(answer.status, &answer.headers, answer.body)
                    .await;
            }
        }
    }

    /// Sends a response the gateway makes itself.
    async fn answer(&mut self, status: u16, headers: &[(String, String)], body: &[u8]) {
        self.log.status = status;
        let head = convert::own_response(status, headers, body.len());
        let Ok(mut send) = self.respond.send_response(head, body.is_empty()) else {
            return;
        };
        self.sent = true;
        if !body.is_empty() {
            self.log.bytes_out += body.len() as u64;
            let _ = send_data(&mut send, convert::own_body(body), true).await;
        }
    }

    /// Answers a failure: its status while no response has started, else
    /// a reset of the stream.
    async fn fail(&mut self, failure: Failure) {
        if self.sent {
            self.respond.send_reset(Reason::INTERNAL_ERROR);
            return;
        }
        let Some(status) = failure.status() else {
            self.respond.send_reset(Reason::CANCEL);
            return;
        };
        let mut headers = vec![(
            "content-type".to_owned(),
            "text/plain; charset=utf-8".to_owned(),
        )];
        let detail = if let Failure::Overflow(overflow) = failure {
            bump(&self.conn.worker.metrics.overflowed);
            headers.push(("x-ringway-overflow".to_owned(), overflow.name().to_owned()));
            format!("{}: {}\n", failure.detail(), overflow.name())
        } else {
            format!("{}\n", failure.detail())
        };
        self.answer(status, &headers, detail.as_bytes()).await;
    }

    async fn proxy(&mut self, generation: &Generation, request: ProxyRequest, body: RecvStream) {
        let worker = self.conn.worker.clone();
        let Some(cluster_id) = request.cluster else {
            return self.fail(Failure::NoEndpoint).await;
        };
        self.log.cluster = Some(cluster_id);
        if let (Some(max), Framing::Length(n)) = (request.plan.max_body, request.plan.framing)
            && n > max
        {
            return self.fail(Failure::BodyTooLarge).await;
        }
        let cluster = &generation.snapshot.clusters[cluster_id.0 as usize];
        let state = generation.cluster(cluster_id);
        if let Some(overflow) = state.overflow(false) {
            return self.fail(Failure::Overflow(overflow)).await;
        }
        let _request = Tally::new(&state.breakers.requests);
        let _active = Counted::new(&worker.active_requests);
        // A WebSocket's stream carries the tunnel's bytes, not a body.
        let (body, tunnel) = if request.plan.upgrade {
            (None, Some(body))
        } else {
            (Some(body), None)
        };
        let retry = tries::Request {
            // As the upstream head says: no body once it was framed
            // empty (a body ending later is still sent, and not replayed).
            replayable: body.is_none() || request.plan.framing == Framing::Empty,
            idempotent: request.plan.idempotent,
            key_hash: request.key_hash,
        };
        let route = &generation.snapshot.routes[request.route];
        let mut upstream = None;
        let destination = tries::Destination {
            worker: &worker,
            route,
            cluster,
            state,
            tls: generation.upstream_tls(cluster_id),
        };
        match cluster.protocol {
            UpstreamProtocol::Http1 => {
                let mut exchange = ToHttp1 {
                    worker: &worker,
                    up_out: &mut self.up_out,
                    plan: request.plan,
                    body,
                    log: &mut self.log,
                };
                let chosen = tries::run(&mut exchange, destination, retry, &mut upstream).await;
                self.log.upstream = upstream;
                match chosen {
                    Ok(chosen) if chosen.answer.switched => {
                        let idle = self.conn.listener.idle_timeout;
                        if let Some(tunnel) = tunnel {
                            // Boxed: a tunnel's future is large and rare,
                            // and every stream's future would carry it.
                            Box::pin(self.tunnel(chosen.answer, tunnel, idle)).await;
                        }
                    }
                    Ok(chosen) => {
                        let timeout = chosen.timeout;
                        self.relay_from_http1(chosen.answer, chosen.addr, cluster, timeout)
                            .await;
                    }
                    Err(failure) => self.fail(failure).await,
                }
            }
            UpstreamProtocol::Http2 => {
                let mut exchange = ToHttp2 {
                    worker: &worker,
                    up_out: &self.up_out,
                    te_trailers: request.plan.te_trailers,
                    max_body: request.plan.max_body,
                    body,
                    websocket: tunnel.is_some(),
                    log: &mut self.log,
                };
                let chosen = tries::run(&mut exchange, destination, retry, &mut upstream).await;
                self.log.upstream = upstream;
                match chosen {
                    Ok(chosen) if chosen.answer.tunnel.is_some() => {
                        let idle = self.conn.listener.idle_timeout;
                        let rules = &route.policy.response_headers;
                        if let Some(from_client) = tunnel {
                            // Boxed, as the HTTP/1.1 tunnel is.
                            Box::pin(self.tunnel_h2(chosen.answer, from_client, rules, idle)).await;
                        }
                    }
                    Ok(chosen) => {
                        let timeout = chosen.timeout;
                        self.relay_from_http2(
                            chosen.answer,
                            &route.policy.response_headers,
                            timeout,
                        )
                        .await;
                    }
                    Err(failure) => self.fail(failure).await,
                }
            }
        }
    }

    /// Relays an HTTP/1.1 upstream's response to this stream, then pools
    /// the connection when it is in step.
    async fn relay_from_http1(
        &mut self,
        answer: Http1Answer,
        addr: SocketAddr,
        cluster: &ringway_config::Cluster,
        timeout: Duration,
    ) {
        let Http1Answer {
            mut up,
            head,
            framing,
            keep_alive,
            ..
        } = answer;
        self.log.status = head.status().as_u16();
        let end_now = framing == Framing::Empty;
        let Ok(mut send) = self.respond.send_response(head, end_now) else {
            return;
        };
        self.sent = true;
        let give_back = |up, complete| {
            let finished = Finished {
                framing,
                complete,
                keep_alive,
                request_sent: true,
            };
            let pool = &self.conn.worker.pool;
            let (idle, max) = (cluster.idle_timeout, cluster.max_idle_per_endpoint);
            pool.give_back(addr, up, finished, idle, max);
        };
        if end_now {
            give_back(up, true);
            return;
        }
        let mut body = BodyReader::new(framing);
        // Sized by what each read brings: most bodies fit one.
        let mut payload = Vec::new();
        loop {
            let Ok(p) = body.advance(up.rbuf.data(), Some(&mut payload)) else {
                send.send_reset(Reason::PROTOCOL_ERROR);
                return;
            };
            up.rbuf.consume(p.consumed);
            if !payload.is_empty() || p.done {
                self.log.bytes_out += payload.len() as u64;
                let data = Bytes::from(std::mem::take(&mut payload));
                if send_data(&mut send, data, p.done).await.is_err() {
                    return;
                }
            }
            if p.done {
                break;
            }
            match timeout_at(
                crate::clock::mono_uncached() + timeout,
                up.rbuf.fill(&mut up.stream, BUF_SIZE),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) if framing == Framing::UntilClose => {
                    let _ = send_data(&mut send, Bytes::new(), true).await;
                    return;
                }
                _ => {
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return;
                }
            }
        }
        give_back(up, true);
    }

    /// Joins a WebSocket's HTTP/2 stream and its upstream connection until
    /// either side ends or nothing moves for `idle`.
    async fn tunnel(&mut self, answer: Http1Answer, mut from_client: RecvStream, idle: Duration) {
        self.log.status = 200;
        let Ok(mut to_client) = self.respond.send_response(answer.head, false) else {
            return;
        };
        self.sent = true;
        let early = answer.up.rbuf.data().to_vec();
        let (mut up_read, mut up_write) = answer.up.stream.into_split();
        let last = Rc::new(Cell::new(MonoInstant::now()));
        let down = async {
            if !early.is_empty()
                && send_data(&mut to_client, Bytes::from(early), false)
                    .await
                    .is_err()
            {
                return;
            }
            let mut buf = Vec::with_capacity(BUF_SIZE);
            loop {
                let (res, b) = up_read.read(buf).await;
                buf = b;
                match res {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
                last.set(MonoInstant::now());
                let data = Bytes::copy_from_slice(&buf);
                buf.clear();
                if send_data(&mut to_client, data, false).await.is_err() {
                    return;
                }
            }
            let _ = to_client.send_data(Bytes::new(), true);
        };
        let up = async {
            while let Some(Ok(data)) = from_client.data().await {
                last.set(MonoInstant::now());
                let len = data.len();
                let (res, _) = up_write.write_all(data).await;
                if res.is_err() {
                    break;
                }
                let _ = from_client.flow_control().release_capacity(len);
            }
            let _ = up_write.shutdown().await;
        };
        let both = async {
            monoio::join!(down, up);
        };
        monoio::select! {
            _ = both => {}
            _ = crate::proxy::idle_for(&last, idle) => {}
        }
    }

    /// Joins a WebSocket's HTTP/2 stream to its HTTP/2 upstream stream
    /// (both extended CONNECT) until either side ends or nothing moves for
    /// `idle`.
    async fn tunnel_h2(
        &mut self,
        answer: Http2Answer,
        from_client: RecvStream,
        rules: &ringway_config::HeaderRules,
        idle: Duration,
    ) {
        let Http2Answer {
            response,
            lease,
            tunnel,
            ..
        } = answer;
        let Some(to_upstream) = tunnel else {
            return;
        };
        self.log.status = 200;
        let (parts, from_upstream) = response.into_parts();
        let head = convert::response_from_h2(&parts, rules);
        let Ok(to_client) = self.respond.send_response(head, false) else {
            return;
        };
        self.sent = true;
        let last = Rc::new(Cell::new(MonoInstant::now()));
        let up = pass_h2(from_client, to_upstream, &last);
        let down = pass_h2(from_upstream, to_client, &last);
        let both = async {
            monoio::join!(up, down);
        };
        monoio::select! {
            _ = both => {}
            _ = crate::proxy::idle_for(&last, idle) => {}
        }
        drop(lease);
    }

    /// Relays an HTTP/2 upstream's response to this stream: head, data
    /// under both sides' flow control, trailers; a reset either way is
    /// passed to the other side.
    async fn relay_from_http2(
        &mut self,
        answer: Http2Answer,
        rules: &ringway_config::HeaderRules,
        timeout: Duration,
    ) {
        let Http2Answer {
            response,
            lease,
            pump,
            ..
        } = answer;
        let (parts, mut up_body) = response.into_parts();
        self.log.status = parts.status.as_u16();
        let head = convert::response_from_h2(&parts, rules);
        let end_now = up_body.is_end_stream();
        let Ok(mut send) = self.respond.send_response(head, end_now) else {
            return;
        };
        self.sent = true;
        if !end_now {
            relay_h2_body(
                &mut up_body,
                &mut send,
                timeout,
                None,
                &mut self.log.bytes_out,
            )
            .await;
        }
        if let Some(pump) = pump {
            self.log.body_in += pump.await;
        }
        self.log.bytes_in += self.log.body_in;
        drop(lease);
    }
}

/// What a proxied request brings from routing.
#[derive(Debug, Clone, Copy)]
struct ProxyRequest {
    plan: Plan,
    route: usize,
    cluster: Option<ClusterId>,
    key_hash: Option<u64>,
}

/// A fresh `Sec-WebSocket-Key` for the upstream: 16 random bytes in
/// base64 (RFC 6455 §4.1).
fn websocket_key(worker: &Worker) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = [0u8; 18];
    bytes[..8].copy_from_slice(&worker.random_u64().to_be_bytes());
    bytes[8..16].copy_from_slice(&worker.random_u64().to_be_bytes());
    let mut key = String::with_capacity(24);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(chunk[1]) << 8) | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            key.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
        }
    }
    // 16 bytes are 22 characters and `==`.
    key.truncate(22);
    key.push_str("==");
    key
}

/// Moves an HTTP/2 body from `from` to `to` under both sides' flow
/// control, then the trailers; a reset on either side resets the other,
/// and a body past `limit` is cut off with CANCEL (dropping `from` then
/// cancels the sender's stream too). Returns false when the stream was
/// reset.
pub(crate) async fn relay_h2_body(
    from: &mut RecvStream,
    to: &mut SendStream<Bytes>,
    timeout: Duration,
    limit: Option<u64>,
    bytes: &mut u64,
) -> bool {
    loop {
        let next = monoio::select! {
            next = monoio::time::timeout(timeout, from.data()) => next,
            reason = poll_fn(|cx| to.poll_reset(cx)) => {
                // The receiver went away: dropping `from` cancels it.
                let _ = reason;
                return false;
            }
        };
        match next {
            Ok(Some(Ok(data))) => {
                let len = data.len();
                *bytes += len as u64;
                if limit.is_some_and(|max| *bytes > max) {
                    to.send_reset(Reason::CANCEL);
                    return false;
                }
                if send_data(to, data, false).await.is_err() {
                    return false;
                }
                // Room for more only once the receiver took this.
                let _ = from.flow_control().release_capacity(len);
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                to.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
                return false;
            }
            Err(_) => {
                to.send_reset(Reason::CANCEL);
                return false;
            }
        }
    }
    match from.trailers().await {
        Ok(Some(trailers)) => to.send_trailers(trailers).is_ok(),
        Ok(None) => to.send_data(Bytes::new(), true).is_ok(),
        Err(e) => {
            to.send_reset(e.reason().unwrap_or(Reason::INTERNAL_ERROR));
            false
        }
    }
}

/// Moves a tunnel's bytes from one HTTP/2 stream to another until `from`
/// ends (then ends `to`) or either side resets; `last` is when bytes last
/// moved.
async fn pass_h2(mut from: RecvStream, mut to: SendStream<Bytes>, last: &Cell<MonoInstant>) {
    while let Some(Ok(data)) = from.data().await {
        last.set(MonoInstant::now());
        let len = data.len();
        if send_data(&mut to, data, false).await.is_err() {
            return;
        }
        let _ = from.flow_control().release_capacity(len);
    }
    let _ = to.send_data(Bytes::new(), true);
}

/// Sends `data` as DATA frames as the peer's window allows.
pub(crate) async fn send_data(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() || end {
        // The end of the body, already in memory: h2 keeps it until the
        // windows open, as the loop below would, and nothing more is read
        // meanwhile. Most responses are one such piece; reserving and
        // polling capacity for them cost two more trips through h2's
        // stream lock each.
        return send.send_data(data, end);
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let room = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(Reason::CANCEL)),
        };
        if room == 0 {
            continue;
        }
        let piece = data.split_to(room.min(data.len()));
        send.send_data(piece, end && data.is_empty())?;
    }
    Ok(())
}

/// An HTTP/1.1 upstream's response head, ready for an HTTP/2 client.
struct Http1Answer {
    up: UpstreamConn,
    head: Response<()>,
    framing: Framing,
    keep_alive: bool,
    /// The upstream switched to WebSocket (its `101`, as a `200` here).
    switched: bool,
}

/// Tries on HTTP/1.1 endpoints for an HTTP/2 client.
struct ToHttp1<'a> {
    worker: &'a Worker,
    /// The request head; lent to each write and given back.
    up_out: &'a mut Vec<u8>,
    plan: Plan,
    /// The client's body, until the first try that sends it.
    body: Option<RecvStream>,
    log: &'a mut RequestLog,
}

impl Exchange for ToHttp1<'_> {
    type Answer = Http1Answer;

    async fn attempt(&mut self, to: Try<'_>) -> Result<(Http1Answer, u16), Failure> {
        let mut fresh_only = false;
        loop {
            let mut up = upstream_conn(self.worker, to, fresh_only).await?;
            let sent_at = crate::clock::now();
            // The body goes as the head framed it: a body that ended
            // after the head was written (an empty DATA frame with
            // END_STREAM) still owes the upstream its last chunk.
            let body = self
                .body
                .take()
                .filter(|_| self.plan.framing != Framing::Empty);
            let sent = match body {
                None => {
                    let deadline = crate::clock::mono_now() + to.timeout;
                    send_and_read_head(&mut up, self.up_out, deadline)
                        .await
                        .map(|()| deadline)
                }
                Some(mut body) => match write_all(&mut up.stream, self.up_out).await {
                    Ok(()) => self
                        .send_body(&mut up, &mut body)
                        .await
                        .map(|()| crate::clock::mono_now() + to.timeout),
                    Err(_) => Err(Failure::Closed { started: false }),
                },
            };
            let head = match sent {
                Ok(deadline) => read_h1_head(&mut up, self.plan, to.rules, deadline).await,
                Err(f) => Err(f),
            };
            match head {
                Err(Failure::Closed { started: false }) if up.reused && to.replayable => {
                    fresh_only = true;
                }
                Err(f) => return Err(f),
                Ok(H1Head {
                    head,
                    framing,
                    keep_alive,
                    switched,
                }) => {
                    self.log.upstream_micros =
                        Some(crate::clock::since(sent_at).as_micros() as u64);
                    let status = head.status().as_u16();
                    let answer = Http1Answer {
                        up,
                        head,
                        framing,
                        keep_alive,
                        switched,
                    };
                    return Ok((answer, status));
                }
            }
        }
    }

    async fn discard(&mut self, mut answer: Http1Answer, to: Try<'_>) {
        let complete = discard_upstream_body(&mut answer.up, answer.framing, to.timeout).await;
        let finished = Finished {
            framing: answer.framing,
            complete,
            keep_alive: answer.keep_alive,
            request_sent: true,
        };
        self.worker.pool.give_back(
            to.addr,
            answer.up,
            finished,
            to.cluster.idle_timeout,
            to.cluster.max_idle_per_endpoint,
        );
    }
}

impl ToHttp1<'_> {
    /// Streams the client's DATA frames up, chunked when no length was
    /// given, with its trailers as chunked trailers.
    async fn send_body(
        &mut self,
        up: &mut UpstreamConn,
        body: &mut RecvStream,
    ) -> Result<(), Failure> {
        let chunked = self.plan.framing == Framing::Chunked;
        let mut out = Vec::with_capacity(BUF_SIZE);
        while let Some(data) = body.data().await {
            let data = data.map_err(|_| Failure::ClientGone)?;
            let len = data.len();
            self.log.body_in += len as u64;
            self.log.bytes_in += len as u64;
            if self.plan.max_body.is_some_and(|max| self.log.body_in > max) {
                return Err(Failure::BodyTooLarge);
            }
            out.clear();
            if chunked && len > 0 {
                chunk_header(&mut out, len);
            }
            out.extend_from_slice(&data);
            if chunked && len > 0 {
                out.extend_from_slice(b"\r\n");
            }
            if write_all(&mut up.stream, &mut out).await.is_err() {
                return Err(Failure::Closed { started: false });
            }
            let _ = body.flow_control().release_capacity(len);
        }
        if chunked {
            let trailers = body.trailers().await.map_err(|_| Failure::ClientGone)?;
            out.clear();
            convert::write_chunked_trailers(&mut out, trailers.as_ref());
            if write_all(&mut up.stream, &mut out).await.is_err() {
                return Err(Failure::Closed { started: false });
            }
        }
        Ok(())
    }
}

/// Reads an HTTP/1.1 response head from `up` for an HTTP/2 client, by
/// `deadline`, dropping informational responses.
async fn read_h1_head(
    up: &mut UpstreamConn,
    plan: Plan,
    rules: &ringway_config::HeaderRules,
    deadline: MonoInstant,
) -> Result<H1Head, Failure> {
    loop {
        if let Some(head) = parse_h1_head(up, plan, rules)? {
            return Ok(head);
        }
        read_more_head(up, deadline).await?;
    }
}

/// An HTTP/1.1 response head, translated for an HTTP/2 client.
struct H1Head {
    head: Response<()>,
    framing: Framing,
    keep_alive: bool,
    /// A `101` to a WebSocket upgrade (told as `200`).
    switched: bool,
}

/// The final response head in `up`'s buffer, if it is all there (1xx
/// heads before it are dropped). Synchronous, so that the parser's header
/// array (4 KiB) is not kept in the stream's future across a read.
fn parse_h1_head(
    up: &mut UpstreamConn,
    plan: Plan,
    rules: &ringway_config::HeaderRules,
) -> Result<Option<H1Head>, Failure> {
    loop {
        let mut headers = ringway_codec::http1::header_slots::<{ response::MAX_HEADERS }>();
        let informational = match response::parse(up.rbuf.data(), &mut headers, plan.is_head) {
            Ok(Some(resp)) if resp.status == 101 && plan.upgrade => {
                // The HTTP/2 client is told 200 (RFC 8441 §5); the key's
                // answer is this hop's business.
                let mut head = convert::response_from_h1(&resp, rules).map_err(Failure::Invalid)?;
                *head.status_mut() = http::StatusCode::OK;
                head.headers_mut().remove("sec-websocket-accept");
                up.rbuf.consume(resp.head_len);
                return Ok(Some(H1Head {
                    head,
                    framing: Framing::Empty,
                    keep_alive: false,
                    switched: true,
                }));
            }
            Ok(Some(resp)) if resp.status == 101 => {
                return Err(Failure::Invalid("upstream switched protocols unasked"));
            }
            Ok(Some(resp)) if resp.status < 200 => resp.head_len,
            Ok(Some(resp)) => {
                let head = convert::response_from_h1(&resp, rules).map_err(Failure::Invalid)?;
                let (framing, keep_alive, len) = (resp.framing, resp.keep_alive, resp.head_len);
                up.rbuf.consume(len);
                return Ok(Some(H1Head {
                    head,
                    framing,
                    keep_alive,
                    switched: false,
                }));
            }
            Ok(None) => return Ok(None),
            Err(e) => return Err(Failure::Invalid(e.0)),
        };
        up.rbuf.consume(informational);
    }
}

/// An HTTP/2 upstream's response, with its stream's claim on the
/// connection and the task still moving the client's body up.
pub(crate) struct Http2Answer {
    pub response: Response<RecvStream>,
    pub lease: super::client::Lease,
    /// Resolves to the body bytes sent up.
    pub pump: Option<monoio::task::JoinHandle<u64>>,
    /// A WebSocket's upstream stream, open for the tunnel's bytes (the
    /// upstream accepted the extended CONNECT with 200).
    pub tunnel: Option<SendStream<Bytes>>,
}

/// Tries on HTTP/2 endpoints for an HTTP/2 client.
struct ToHttp2<'a> {
    worker: &'a Worker,
    up_out: &'a [u8],
    te_trailers: bool,
    max_body: Option<u64>,
    body: Option<RecvStream>,
    /// A WebSocket: sent as an extended CONNECT (RFC 8441) whose stream
    /// stays open for the tunnel.
    websocket: bool,
    log: &'a mut RequestLog,
}

impl Exchange for ToHttp2<'_> {
    type Answer = Http2Answer;

    async fn attempt(&mut self, to: Try<'_>) -> Result<(Http2Answer, u16), Failure> {
        // A stream the upstream's GOAWAY left unprocessed goes once more,
        // on a new connection, without counting as another try.
        let mut resent = false;
        loop {
            match self.attempt_on_connection(to).await {
                Err(Failure::GoneAway) if to.replayable && !resent => resent = true,
                other => return other,
            }
        }
    }

    async fn discard(&mut self, answer: Http2Answer, _to: Try<'_>) {
        // Dropping the stream's handles resets it (CANCEL).
        drop(answer);
    }
}

impl ToHttp2<'_> {
    async fn attempt_on_connection(&mut self, to: Try<'_>) -> Result<(Http2Answer, u16), Failure> {
        let scheme = if to.cluster.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (mut request, _) = convert::upstream_request(self.up_out, scheme, self.te_trailers)
            .map_err(Failure::Invalid)?;
        if self.websocket {
            websocket_connect(&mut request);
        }
        let (send, lease) = self.worker.h2.stream(to).await?;
        // A connection that went away takes no more streams.
        let failed = |e: h2::Error| {
            let failure = h2_failure(&e);
            if failure == Failure::GoneAway {
                lease.retire();
            }
            failure
        };
        let mut send = send.ready().await.map_err(failed)?;
        if self.websocket && !send.is_extended_connect_protocol_enabled() {
            return Err(Failure::Invalid(
                "the upstream does not offer WebSocket over HTTP/2",
            ));
        }
        let end_now = !self.websocket && self.body.as_ref().is_none_or(RecvStream::is_end_stream);
        let sent_at = crate::clock::now();
        let (response, up_send) = send.send_request(request, end_now).map_err(failed)?;
        let (pump, tunnel) = match self.body.take() {
            _ if self.websocket => (None, Some(up_send)),
            Some(body) if !end_now => {
                let pump = pump_body(body, up_send, to.timeout, self.max_body);
                (Some(monoio::spawn(pump)), None)
            }
            _ => (None, None),
        };
        let response = match timeout_at(crate::clock::mono_now() + to.timeout, response).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(failed(e)),
            Ok(Ok(r)) => r,
        };
        self.log.upstream_micros = Some(crate::clock::since(sent_at).as_micros() as u64);
        let status = response.status().as_u16();
        Ok((
            Http2Answer {
                response,
                lease,
                pump,
                // Any other answer is relayed as a response.
                tunnel: tunnel.filter(|_| status == 200),
            },
            status,
        ))
    }
}

/// Turns the upstream request for a WebSocket (the HTTP/1.1 upgrade head
/// translated by `convert::upstream_request`) into an extended CONNECT (RFC 8441
/// §4): `:protocol = websocket`, and no `Sec-WebSocket-Key`, which only
/// the HTTP/1.1 handshake uses (§5).
pub fn websocket_connect(request: &mut Request<()>) {
    *request.method_mut() = Method::CONNECT;
    request.headers_mut().remove("sec-websocket-key");
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
}

/// Moves a client's request body to the upstream stream; the byte count.
async fn pump_body(
    mut from: RecvStream,
    mut to: SendStream<Bytes>,
    timeout: Duration,
    max_body: Option<u64>,
) -> u64 {
    let mut bytes = 0;
    relay_h2_body(&mut from, &mut to, timeout, max_body, &mut bytes).await;
    bytes
}

/// The failure an h2 error means for a try. A stream the upstream refused
/// (REFUSED_STREAM, or beyond a GOAWAY's last stream) was not processed
/// and may be sent again.
pub(crate) fn h2_failure(e: &h2::Error) -> Failure {
    if e.is_go_away() && e.is_remote() {
        return Failure::GoneAway;
    }
    if e.is_reset() && e.reason() == Some(Reason::REFUSED_STREAM) {
        return Failure::Refused;
    }
    if e.is_io() {
        return Failure::Closed { started: false };
    }
    Failure::Closed { started: true }
}
