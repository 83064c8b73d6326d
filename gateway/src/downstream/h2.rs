//! Slightly over 800 lines, kept whole: the connection task and the
//! stream's `Client` share the connection's state and its flow-control
//! rules, which one file keeps in view.
//!
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
use std::future::{pending, poll_fn};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{Method, Request, Response};
use monoio::time::{timeout, timeout_at};
use ringway_config::Listener;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::buffer::{self, BODY_BUF_SIZE, BUF_SIZE, write_all};
use crate::deadline;
use crate::failure::Failure;
use crate::forward::client::{BodyUp, Client, HeadFromH1, Next, Relayed};
use crate::forward::h2::{pump_body, relay_h2_body, send_data};
use crate::forward::plan::{ClientFacts, Ends, Plan, Target, local_answer, plan_request};
use crate::forward::proxy::{Proxied, proxy};
use crate::forward::record::{RequestLog, RequestText, Served};
use crate::forward::tunnel::{tunnel_h1, tunnel_h2};
use crate::h2_io::{Polled, counting_polls};
use crate::metrics::bump;
use crate::upstream::conn::UpstreamConn;
use crate::upstream::h2_pool::Lease;
use crate::worker::state::{Generation, Worker};
use ringway_codec::http1::framing::{BodyReader, Framing, chunk_header};
use ringway_codec::http1::{request, response};
use ringway_codec::{HeaderRules, convert};

/// What every stream of a connection shares.
#[derive(Debug)]
struct Connection {
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    /// The client's address and the one it connected to.
    ends: Ends,
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

/// A stream's buffers: its request's text, the upstream head and a
/// redirect's location. Kept by the connection from stream to
/// stream (at most as many as ran at once), as the HTTP/1.1 session keeps
/// its own, rather than allocated for each stream.
#[derive(Debug)]
struct Scratch {
    text: RequestText,
    up_out: Vec<u8>,
    location: String,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            text: RequestText::new(),
            up_out: Vec::with_capacity(1024),
            location: String::new(),
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
pub(crate) async fn serve<T>(
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    io: T,
    ends: Ends,
    proto: &'static str,
    identity: Option<String>,
) where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let shared = Rc::new(Connection {
        worker,
        listener,
        ends,
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
        // A streaming body's piece (a 256 KiB read) is handed to h2 in one
        // go rather than in four, each a round trip between the stream's
        // task and the connection's; h2 holds it only until it is sent.
        .max_send_buffer_size(BODY_BUF_SIZE)
        .enable_connect_protocol();
    // Boxed: the handshake's state (the socket, a runtime timer) is not
    // laid out beside the connection's in this task's future.
    let handshake = Box::pin(timeout(
        listener.header_timeout,
        builder.handshake::<_, Bytes>(io),
    ));
    let mut conn = match handshake.await {
        Ok(Ok(conn)) => conn,
        _ => return,
    };
    // Idle from the end of the handshake.
    shared.idle_since.set(crate::clock::now());
    let mut closing = false;
    let mut flushing = None;
    // One deadline for the idle checks, not one per stream accepted; an
    // entry in the worker's table rather than a runtime timer (see
    // `deadline`). While the connection is quiet its buffers are given
    // back at the first tick, and then it sleeps until its idle timeout.
    let tick_every = listener.idle_timeout.min(Duration::from_secs(1));
    let next_tick = || deadline::within(crate::clock::now() + tick_every, pending::<()>());
    let mut tick = next_tick();
    let mut released = false;
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
                    if released {
                        // Quiet no more: tick again to give the buffers
                        // back once it is.
                        released = false;
                        tick = next_tick();
                    }
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
                let quiet = shared.open.get() == 0;
                let idle = quiet && shared.idle_since.get().elapsed() >= listener.idle_timeout;
                if idle && !closing {
                    conn.graceful_shutdown();
                    closing = true;
                }
                if quiet && !closing {
                    // Nothing in flight: the codec's buffers and the
                    // streams' spare scratch go back.
                    conn.release_idle_buffers();
                    *shared.spare.borrow_mut() = Vec::new();
                    released = true;
                    let due = shared.idle_since.get() + listener.idle_timeout;
                    tick = deadline::within(due, pending::<()>());
                } else {
                    tick = next_tick();
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
    } = conn.spare.borrow_mut().pop().unwrap_or_else(Scratch::new);
    let mut stream = Stream {
        conn,
        respond,
        sent: false,
        log: RequestLog::new(),
        text,
        up_out,
        location,
        plan: Plan::NONE,
        body: None,
        from_client: None,
        head: None,
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
        peer: stream.conn.ends.peer,
        log: &stream.log,
        text: &stream.text,
    };
    served.record(&generation);
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
    /// The request being proxied.
    plan: Plan,
    /// Its body, until the try that sends it.
    body: Option<RecvStream>,
    /// A WebSocket's stream from the client: the tunnel's bytes.
    from_client: Option<RecvStream>,
    /// The response head prepared for the client.
    head: Option<Response<()>>,
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
        self.text.capture(&worker, generation, &view);
        let client = ClientFacts::new(
            &self.conn.listener,
            self.conn.ends,
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
        self.log.client = Some(plan.client);
        match target {
            Target::Proxy {
                route,
                cluster,
                key_hash,
                delay,
            } => {
                // A WebSocket's stream carries the tunnel's bytes, not a
                // body.
                if plan.upgrade {
                    self.from_client = Some(body);
                } else if plan.framing != Framing::Empty {
                    self.body = Some(body);
                }
                self.plan = plan;
                let request = Proxied {
                    plan,
                    route,
                    cluster,
                    key_hash,
                    delay,
                };
                proxy(self, &worker, generation, request).await;
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
    async fn fail_stream(&mut self, failure: Failure) {
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
}

impl Client for Stream {
    fn up_out(&mut self) -> &mut Vec<u8> {
        &mut self.up_out
    }

    fn log(&mut self) -> &mut RequestLog {
        &mut self.log
    }

    fn body_pending(&self) -> bool {
        self.body.is_some()
    }

    fn extended_connect(&self) -> bool {
        self.plan.upgrade
    }

    async fn go_on(&mut self) -> Result<(), Failure> {
        // HTTP/2 has no `100 Continue` to wait for: the client sends.
        Ok(())
    }

    /// Streams the client's DATA frames up, chunked when no length was
    /// given, with its trailers as chunked trailers. Frames already
    /// received join one write of up to 256 KiB: a write per 16 KiB frame
    /// cost the gateway more than the bytes did.
    async fn body_to_h1(&mut self, up: &mut UpstreamConn) -> Result<bool, Failure> {
        let Some(mut body) = self.body.take() else {
            return Ok(true);
        };
        let chunked = self.plan.framing == Framing::Chunked;
        let mut out = buffer::take(BUF_SIZE);
        let mut ended = false;
        while !ended {
            let Some(first) = body.data().await else {
                break;
            };
            out.clear();
            let mut taken = 0;
            let mut next = Some(first);
            while let Some(data) = next.take() {
                let data = data.map_err(|_| Failure::ClientGone)?;
                let len = data.len();
                taken += len;
                self.log.body_in += len as u64;
                self.log.bytes_in += len as u64;
                if self.plan.max_body.is_some_and(|max| self.log.body_in > max) {
                    return Err(Failure::BodyTooLarge);
                }
                if chunked && len > 0 {
                    chunk_header(&mut out, len);
                }
                out.extend_from_slice(&data);
                if chunked && len > 0 {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= BODY_BUF_SIZE {
                    break;
                }
                match poll_fn(|cx| Poll::Ready(body.poll_data(cx))).await {
                    Poll::Ready(Some(more)) => next = Some(more),
                    Poll::Ready(None) => ended = true,
                    Poll::Pending => {}
                }
            }
            if write_all(&mut up.stream, &mut out).await.is_err() {
                return Err(Failure::Closed { started: false });
            }
            let _ = body.flow_control().release_capacity(taken);
        }
        if chunked {
            let trailers = body.trailers().await.map_err(|_| Failure::ClientGone)?;
            out.clear();
            convert::write_chunked_trailers(&mut out, trailers.as_ref());
            if write_all(&mut up.stream, &mut out).await.is_err() {
                return Err(Failure::Closed { started: false });
            }
        }
        buffer::give_back(out);
        Ok(true)
    }

    fn head_from_h1(
        &mut self,
        resp: &response::Response<'_, '_>,
        rules: &HeaderRules,
    ) -> Result<HeadFromH1, Failure> {
        if resp.status == 101 {
            // The HTTP/2 client is told 200 (RFC 8441 §5); the key's
            // answer is this hop's business.
            let mut head = convert::response_from_h1(resp, rules).map_err(Failure::Invalid)?;
            *head.status_mut() = http::StatusCode::OK;
            head.headers_mut().remove("sec-websocket-accept");
            self.head = Some(head);
            self.log.status = 200;
            return Ok(HeadFromH1::Switched);
        }
        if resp.status < 200 {
            // Informational heads are dropped: h2 gives no way to send
            // them ahead of the final head through this stream's API.
            return Ok(HeadFromH1::Informational { send: false });
        }
        let head = convert::response_from_h1(resp, rules).map_err(Failure::Invalid)?;
        self.log.status = resp.status;
        self.head = Some(head);
        Ok(HeadFromH1::Final)
    }

    async fn send_informational(&mut self) -> Result<(), Failure> {
        Ok(())
    }

    async fn relay_from_h1(
        &mut self,
        up: &mut UpstreamConn,
        framing: Framing,
        timeout: Duration,
    ) -> Relayed {
        let done = Relayed {
            complete: false,
            next: Next::Close,
        };
        let Some(head) = self.head.take() else {
            return done;
        };
        let end_now = framing == Framing::Empty;
        let Ok(mut send) = self.respond.send_response(head, end_now) else {
            return done;
        };
        self.sent = true;
        if end_now {
            return Relayed {
                complete: true,
                ..done
            };
        }
        // A chunked body's trailer section becomes HTTP/2 trailers.
        let mut body = BodyReader::new(framing).keep_trailers();
        // Sized by what each read brings: most bodies fit one.
        let mut payload = Vec::new();
        loop {
            if framing != Framing::Chunked {
                // No framing to take out: what was read is the payload,
                // and goes to h2 as it is, without a copy.
                let n = (body.opaque_len().min(up.rbuf.data().len() as u64)) as usize;
                body.skip_opaque(n as u64);
                payload = up.rbuf.split_off_front(n);
            }
            let Ok(p) = body.advance(up.rbuf.data(), Some(&mut payload)) else {
                send.send_reset(Reason::PROTOCOL_ERROR);
                return done;
            };
            up.rbuf.consume(p.consumed);
            let trailers = (p.done && !body.trailers().is_empty())
                .then(|| convert::trailers_from_chunked(body.trailers()))
                .filter(|t| !t.is_empty());
            if !payload.is_empty() || p.done {
                self.log.bytes_out += payload.len() as u64;
                let data = Bytes::from(std::mem::take(&mut payload));
                let end = p.done && trailers.is_none();
                if send_data(&mut send, data, end).await.is_err() {
                    return done;
                }
            }
            if let Some(trailers) = trailers
                && send.send_trailers(trailers).is_err()
            {
                return done;
            }
            if p.done {
                return Relayed {
                    complete: true,
                    ..done
                };
            }
            match timeout_at(
                crate::clock::mono_uncached() + timeout,
                up.rbuf.fill_body(&mut up.stream),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) if framing == Framing::UntilClose => {
                    let _ = send_data(&mut send, Bytes::new(), true).await;
                    return done;
                }
                _ => {
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return done;
                }
            }
        }
    }

    /// Joins the WebSocket's HTTP/2 stream and its upstream connection
    /// until either side ends or nothing moves for the idle timeout.
    async fn tunnel_to_h1(&mut self, up: UpstreamConn) -> Next {
        let (Some(head), Some(from_client)) = (self.head.take(), self.from_client.take()) else {
            return Next::Close;
        };
        let Ok(to_client) = self.respond.send_response(head, false) else {
            return Next::Close;
        };
        self.sent = true;
        let idle = self.conn.listener.idle_timeout;
        // Boxed: a tunnel's future is large and rare, and every stream's
        // future would carry it.
        Box::pin(tunnel_h1(up, from_client, to_client, idle)).await;
        Next::Close
    }

    fn early_body_for_h2(&mut self, _head_len: usize) -> Result<(Vec<u8>, bool), Failure> {
        // The body travels as DATA frames, none of it with the head.
        let ends = self.body.as_ref().is_none_or(RecvStream::is_end_stream);
        Ok((Vec::new(), ends))
    }

    async fn body_to_h2(
        &mut self,
        up: SendStream<Bytes>,
        timeout: Duration,
    ) -> Result<BodyUp, Failure> {
        if self.plan.upgrade {
            return Ok(BodyUp::Tunnel(up));
        }
        match self.body.take() {
            Some(body) => {
                let pump = pump_body(body, up, timeout, self.plan.max_body);
                Ok(BodyUp::Pumping(monoio::spawn(pump)))
            }
            None => Ok(BodyUp::Sent),
        }
    }

    async fn relay_from_h2(
        &mut self,
        response: http::Response<RecvStream>,
        lease: Lease,
        body_up: BodyUp,
        rules: &HeaderRules,
        timeout: Duration,
    ) -> Next {
        let (parts, mut up_body) = response.into_parts();
        let head = convert::response_from_h2(&parts, rules);
        let status = parts.status.as_u16();
        self.log.status = status;
        match body_up {
            BodyUp::Tunnel(to_upstream) if status == 200 => {
                if let (Ok(to_client), Some(from_client)) = (
                    self.respond.send_response(head, false),
                    self.from_client.take(),
                ) {
                    self.sent = true;
                    let idle = self.conn.listener.idle_timeout;
                    // Boxed, as the HTTP/1.1 tunnel is.
                    Box::pin(tunnel_h2(
                        from_client,
                        to_upstream,
                        up_body,
                        to_client,
                        idle,
                    ))
                    .await;
                }
                drop(lease);
                return Next::Close;
            }
            BodyUp::Pumping(pump) => {
                self.relay_h2_response(head, &mut up_body, timeout).await;
                self.log.body_in += pump.await;
            }
            BodyUp::Sent | BodyUp::Tunnel(_) => {
                self.relay_h2_response(head, &mut up_body, timeout).await;
            }
        }
        self.log.bytes_in += self.log.body_in;
        drop(lease);
        Next::Close
    }

    async fn fail(&mut self, failure: Failure, _body_read: bool) -> Next {
        self.fail_stream(failure).await;
        Next::Close
    }
}

impl Stream {
    /// Relays an HTTP/2 upstream's response head and body to this stream:
    /// data under both sides' flow control, trailers; a reset either way
    /// is passed to the other side.
    async fn relay_h2_response(
        &mut self,
        head: Response<()>,
        up_body: &mut RecvStream,
        timeout: Duration,
    ) {
        let end_now = up_body.is_end_stream();
        let Ok(mut send) = self.respond.send_response(head, end_now) else {
            return;
        };
        self.sent = true;
        if !end_now {
            relay_h2_body(up_body, &mut send, timeout, None, &mut self.log.bytes_out).await;
        }
    }
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
