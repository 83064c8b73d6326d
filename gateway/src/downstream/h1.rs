//! Over 800 lines (about 970), kept whole: the session's reading,
//! answering, relaying and splicing share one set of buffers and their
//! rules (what each holds when), which one file keeps in view; the splice
//! mechanics themselves are in `splice`.
//!
//! The HTTP/1.1 session: one client connection, its requests read and
//! answered one after another (pipelined requests are answered in order),
//! each either answered by the gateway or handed to the forwarding code
//! through [`Client`].
//!
//! Bodies stream in both directions through one buffer per side, grown
//! to at most 256 KiB while a body keeps coming: memory per connection
//! does not grow with a body. Between two plain sockets the bytes that
//! need no looking at are spliced instead, and never enter the gateway. Between HTTP/1.1 peers the
//! body bytes pass through as they came (re-framed only where the two
//! sides need it): that is the fast path the benchmarks measure.
//!
//! Between requests the session holds no buffer: it waits for
//! readability and gives its read, head and upstream buffers back to the
//! worker's spares (see `run`).

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split, Splitable};
use monoio::time::{Instant, timeout, timeout_at};
use ringway_codec::HeaderRules;
use ringway_codec::convert;
use ringway_codec::http1::framing::{BodyReader, Framing, chunk_header};
use ringway_codec::http1::relay::{Relay, frame_into};
use ringway_codec::http1::request;
use ringway_codec::http1::response::{self, ClientBody};
use ringway_config::Listener;

use crate::buffer::{self, BUF_SIZE, ReadBuf, WaitReadable, write_all};
use crate::deadline;
use crate::failure::Failure;
use crate::forward::client::{BodyUp, Client, HeadFromH1, Next, Relayed};
use crate::forward::h2::send_data;
use crate::forward::plan::{ClientFacts, Ends, Plan, Target, local_answer, plan_request};
use crate::forward::proxy::{Proxied, proxy};
use crate::forward::record::{RequestLog, RequestText, Served};
use crate::forward::tunnel::{copy, idle_for};
use crate::metrics::bump;
use crate::spare_box::SpareBox;
use crate::splice::{self, PlainSocket, SPLICE_MIN, Stop};
use crate::upstream::conn::{UpstreamConn, UpstreamStream};
use crate::upstream::h2_pool::Lease;
use crate::watch::WatchedSocket;
use crate::worker::state::{Generation, Worker};

/// Largest request body read and dropped to keep a connection after a
/// direct or error response; a larger one closes the connection instead.
const DISCARD_LIMIT: u64 = 1024 * 1024;
/// The most read at once between two spliced chunks: a chunk's size line
/// and the CRLFs around it, rarely longer.
const CHUNK_FRAMING_READ: usize = 64;
/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a plain connection opens.
pub(crate) enum Sniffed {
    Http1,
    /// With the HTTP/2 preface (h2c with prior knowledge).
    Http2,
    /// Not at all, in time.
    Closed,
}

/// One client connection speaking HTTP/1.1.
pub(crate) struct Session<S> {
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    client: S,
    /// Over TLS (`https` for `X-Forwarded-Proto`), else `http`; a flag
    /// rather than the name: 15 bytes less in every connection.
    https: bool,
    /// The verified client certificate's identity (mutual TLS). A boxed
    /// `str`: 8 bytes less than a `String` in every connection.
    identity: Option<Box<str>>,
    /// Bytes from the client.
    rbuf: ReadBuf,
    /// Bytes for the client (heads, own responses, re-framed body).
    out: Vec<u8>,
    /// The request head (and any buffered body) for the upstream.
    up_out: Vec<u8>,
    /// What the request being served did, for metrics and the log.
    log: RequestLog,
    /// Reused buffer for a redirect's location.
    location: String,
    /// The request's text and ids, for the upstream, the log and the span.
    text: RequestText,
    /// The request being proxied: its plan and its body's progress.
    plan: Plan,
    body: BodyReader,
    /// How the prepared response goes to the client.
    relay: Relay,
    /// The connection closes after the prepared response.
    close_after: bool,
    /// The upstream of a switched (WebSocket) connection, to tunnel to.
    /// Boxed: most connections never switch.
    tunnel: Option<Box<UpstreamConn>>,
    /// A plain client's posted receive while it waits for its next
    /// request (see [`Session::next_request`]).
    watched: WatchedSocket,
}

impl<S: AsyncReadRent + AsyncWriteRent + WaitReadable + PlainSocket> Session<S> {
    pub(crate) fn new(
        worker: Rc<Worker>,
        listener: Rc<Listener>,
        client: S,
        ends: Ends,
        proto: &'static str,
        identity: Option<String>,
    ) -> Session<S> {
        Session {
            worker,
            listener,
            client,
            https: proto == "https",
            identity: identity.map(String::into_boxed_str),
            rbuf: ReadBuf::new(),
            out: Vec::new(),
            up_out: Vec::new(),
            log: RequestLog::new(),
            location: String::new(),
            text: RequestText::new(),
            // The client's address and the one it connected to live in the
            // plan, which every request's plan carries on (one copy fewer
            // in every connection).
            plan: Plan { ends, ..Plan::NONE },
            body: BodyReader::new(Framing::Empty),
            relay: Relay::PassThrough,
            close_after: false,
            tunnel: None,
            watched: WatchedSocket::default(),
        }
    }

    /// The worker, the listener, the client stream and the bytes read
    /// from it so far: for a connection that turned out to speak h2c.
    pub(crate) fn into_parts(self) -> (Rc<Worker>, Rc<Listener>, S, Vec<u8>) {
        let early = self.rbuf.data().to_vec();
        (self.worker, self.listener, self.client, early)
    }

    /// Reads the first bytes of a plain connection: enough to tell the
    /// HTTP/2 preface from an HTTP/1.1 request line.
    pub(crate) async fn sniff_preface(&mut self) -> Sniffed {
        let deadline = crate::clock::now() + self.listener.header_timeout;
        loop {
            let data = self.rbuf.data();
            let n = data.len().min(H2_PREFACE.len());
            if data[..n] != H2_PREFACE[..n] {
                return Sniffed::Http1;
            }
            if n == H2_PREFACE.len() {
                return Sniffed::Http2;
            }
            let read = deadline::within(deadline, self.rbuf.fill(&mut self.client, BUF_SIZE));
            match read.await {
                Ok(Ok(n)) if n > 0 => {}
                _ if !self.rbuf.is_empty() => return Sniffed::Http1,
                _ => return Sniffed::Closed,
            }
        }
    }

    /// The client stream; the rest of the session and its box are freed
    /// on return (a box moved out of in an async fn would be freed only
    /// when that fn ends, here with the tunnel).
    #[allow(clippy::boxed_local)]
    fn into_client(self: Box<Self>) -> S {
        self.client
    }

    /// Whether this listener accepts h2c with prior knowledge.
    pub(crate) fn h2c(&self) -> bool {
        self.listener.http2.h2c
    }

    async fn run(&mut self) {
        let mut first = true;
        loop {
            if self.rbuf.is_empty() {
                // Waiting for the next request: no buffer is held
                // meanwhile (idle connections far outnumber busy ones),
                // and the connection closes quietly on timeout.
                self.rbuf.release();
                buffer::recycle(&mut self.out);
                buffer::recycle(&mut self.up_out);
                // The last request's text goes too (a few small strings),
                // to the worker's spares for the next request to fill.
                std::mem::replace(&mut self.text, RequestText::new()).give_back();
                self.location = String::new();
                let wait = if first {
                    self.listener.header_timeout
                } else {
                    self.listener.idle_timeout
                };
                // The read after readiness is under the same deadline: over
                // TLS, readable can mean a partial record that never ends.
                let deadline = crate::clock::now() + wait;
                match deadline::within(deadline, self.next_request()).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                self.text = RequestText::take_spare();
            }
            buffer::ensure(&mut self.out);
            buffer::ensure(&mut self.up_out);
            first = false;
            // In flight from its first byte, so a drain waits for it.
            let _in_flight = self.worker.drain.request();
            // A response that went out before a drain started promised
            // keep-alive, and the client may be sending its next request
            // already: that one is served (with `Connection: close`) while
            // the draining worker lingers, rather than reset.
            // Boxed: the request's state (about 8.5 KiB of futures) exists
            // only while it is served, not for the connection's life; in a
            // block the worker keeps for the next request, not allocated
            // per request.
            if SpareBox::new(self.serve_one()).await == Next::Close {
                return;
            }
        }
    }

    /// Waits for the first bytes of the next request and reads them: the
    /// count read, 0 when the client closed. A plain client's bytes come
    /// with the completion of a receive posted while it waits, in a ring
    /// buffer taken only when they arrive: no buffer while it waits, one
    /// operation per request.
    async fn next_request(&mut self) -> io::Result<usize> {
        if let Some(socket) = self.client.plain_socket() {
            match self.watched.read(socket, &mut self.rbuf, BUF_SIZE).await {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                read => return read,
            }
        }
        self.client.readable().await?;
        self.rbuf.fill(&mut self.client, BUF_SIZE).await
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
            let served = Served {
                worker: &self.worker,
                listener: &self.listener,
                peer: self.plan.ends.peer,
                log: &self.log,
                text: &self.text,
            };
            served.record(&generation);
        }
        next
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
                    self.text.capture(&self.worker, generation, &req);
                    let client = ClientFacts::new(
                        &self.listener,
                        self.plan.ends,
                        if self.https { "https" } else { "http" },
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
        self.log.client = Some(plan.client);
        match target {
            Target::Proxy {
                route,
                cluster,
                key_hash,
                delay,
            } => {
                self.plan = plan;
                self.body = BodyReader::new(plan.framing);
                // The body bytes that came with the head travel with it.
                match self.body.advance(self.rbuf.data(), None) {
                    Ok(p) => {
                        self.up_out
                            .extend_from_slice(&self.rbuf.data()[..p.consumed]);
                        self.rbuf.consume(p.consumed);
                        self.log.bytes_in += p.consumed as u64;
                        self.log.body_in += p.consumed as u64;
                    }
                    Err(_) => return self.refuse(400, Failure::ClientBody.detail()).await,
                }
                let request = Proxied {
                    plan,
                    route,
                    cluster,
                    key_hash,
                    delay,
                };
                let worker = self.worker.clone();
                proxy(self, &worker, generation, request).await
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

    /// Reads more of the client's body into `rbuf`, within the idle
    /// timeout.
    async fn read_body(&mut self) -> Result<(), Failure> {
        match timeout(
            self.listener.idle_timeout,
            self.rbuf.fill_body(&mut self.client),
        )
        .await
        {
            Ok(Ok(n)) if n > 0 => Ok(()),
            Err(_) => Err(Failure::ClientTimeout),
            Ok(_) => Err(Failure::ClientGone),
        }
    }

    /// Counts `n` body bytes read; an error once past the route's limit.
    fn count_body(&mut self, n: usize) -> Result<(), Failure> {
        self.log.bytes_in += n as u64;
        self.log.body_in += n as u64;
        match self.plan.max_body {
            Some(max) if self.log.body_in > max => Err(Failure::BodyTooLarge),
            _ => Ok(()),
        }
    }

    /// What follows a response: the connection closes when it must, after
    /// lingering if the request body was not read whole.
    async fn next_after_response(&mut self) -> Next {
        if !self.close_after {
            return Next::KeepAlive;
        }
        if !self.body.is_done() {
            self.linger().await;
        }
        Next::Close
    }

    /// Ends a response that cannot be completed: what was written goes
    /// out, then the connection closes.
    async fn abandon(&mut self) -> Next {
        let _ = self.write_out().await;
        Next::Close
    }
}

impl<S: AsyncReadRent + AsyncWriteRent + WaitReadable + PlainSocket + Split + 'static> Session<S> {
    /// Serves the connection's requests; then, if one switched protocols,
    /// the tunnel.
    pub(crate) async fn serve(mut self: Box<Self>) {
        self.run().await;
        let Some(up) = self.tunnel.take() else {
            return;
        };
        // Boxed: the tunnel's state exists only for connections that
        // switched, not in every connection's task.
        Box::pin(self.tunnel(*up)).await;
    }

    /// Copies bytes both ways between the client and the upstream that
    /// switched protocols, until either side closes or both are quiet for
    /// the idle timeout.
    async fn tunnel(self: Box<Self>, up: UpstreamConn) {
        // A tunnel is a request still in flight: a drain lets it run until
        // either side closes or the drain deadline ends the worker, as it
        // does for a WebSocket over HTTP/2 (its stream counts) and for any
        // slow response.
        let _in_flight = self.worker.drain.request();
        let idle = self.listener.idle_timeout;
        let client_early = self.rbuf.data().to_vec();
        let upstream_early = up.rbuf.data().to_vec();
        // The session's other state (its buffers) and the upstream
        // connection's read buffer go now, not with the tunnel: a quiet
        // tunnel keeps only its two sockets and their tasks.
        let client = self.into_client();
        let (stream, _tally) = up.into_stream();
        let (client_read, client_write) = client.into_split();
        let (up_read, up_write) = stream.into_split();
        let last = Rc::new(Cell::new(Instant::now()));
        let to_upstream = copy(client_read, up_write, client_early, last.clone());
        let to_client = copy(up_read, client_write, upstream_early, last.clone());
        let both = async {
            monoio::join!(to_upstream, to_client);
        };
        monoio::select! {
            _ = both => {}
            _ = idle_for(&last, idle) => {}
        }
    }
}

impl<S: AsyncReadRent + AsyncWriteRent + WaitReadable + PlainSocket> Client for Session<S> {
    fn up_out(&mut self) -> &mut Vec<u8> {
        &mut self.up_out
    }

    fn log(&mut self) -> &mut RequestLog {
        &mut self.log
    }

    fn body_pending(&self) -> bool {
        !self.body.is_done()
    }

    fn extended_connect(&self) -> bool {
        false
    }

    async fn go_on(&mut self) -> Result<(), Failure> {
        if !self.plan.expect_continue {
            return Ok(());
        }
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        self.write_out().await.map_err(|_| Failure::ClientGone)
    }

    async fn body_to_h1(&mut self, up: &mut UpstreamConn) -> Result<bool, Failure> {
        while !self.body.is_done() {
            if let Some(end) = self.splice_request(up).await {
                match end {
                    Ok(()) => continue,
                    // Answered early, or the upstream is gone: the
                    // response (or its absence) says the rest.
                    Err(Stop::Watched | Stop::WriteFailed) => return Ok(false),
                    Err(Stop::Timeout) => return Err(Failure::ClientTimeout),
                    Err(_) => return Err(Failure::ClientGone),
                }
            }
            if self.rbuf.is_empty() {
                // Wait for more body, but also for the upstream: one that
                // answers early (413, say) must not wait on a client that
                // waits on it. Readiness is watched, not read, so losing
                // the race costs no upstream byte; the client's read may be
                // cancelled, and then its connection closes after the
                // response anyway.
                let more = timeout(
                    self.listener.idle_timeout,
                    self.rbuf.fill_body(&mut self.client),
                );
                monoio::select! {
                    read = more => match read {
                        Ok(Ok(n)) if n > 0 => {}
                        Err(_) => return Err(Failure::ClientTimeout),
                        Ok(_) => return Err(Failure::ClientGone),
                    },
                    _ = up.answered() => return Ok(false),
                }
            }
            let p = self
                .body
                .advance(self.rbuf.data(), None)
                .map_err(|_| Failure::ClientBody)?;
            // Checked before the piece goes up: nothing past the limit is sent.
            self.count_body(p.consumed)?;
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

    fn head_from_h1(
        &mut self,
        resp: &response::Response<'_, '_>,
        rules: &HeaderRules,
    ) -> Result<HeadFromH1, Failure> {
        if resp.status == 101 {
            response::write_switching_head(&mut self.out, resp, rules);
            self.log.status = 101;
            return Ok(HeadFromH1::Switched);
        }
        if resp.status < 200 {
            // 100 Continue is this hop's business; 102 and 103 go on.
            let send = resp.status != 100;
            if send {
                response::write_client_head(&mut self.out, resp, ClientBody::None, false, rules);
            }
            return Ok(HeadFromH1::Informational { send });
        }
        let client_body = ClientBody::choose(resp.framing, self.plan.minor_version);
        self.close_after = !self.plan.keep_alive
            || !self.body.is_done()
            || client_body.needs_close()
            || self.worker.drain.is_draining();
        response::write_client_head(&mut self.out, resp, client_body, self.close_after, rules);
        self.relay = match (resp.framing, client_body) {
            (Framing::UntilClose, ClientBody::EncodeChunked) => Relay::Encode,
            (Framing::Chunked, ClientBody::UntilClose) => Relay::Decode,
            _ => Relay::PassThrough,
        };
        self.log.status = resp.status;
        Ok(HeadFromH1::Final)
    }

    async fn send_informational(&mut self) -> Result<(), Failure> {
        self.write_out().await.map_err(|_| Failure::ClientGone)
    }

    async fn relay_from_h1(
        &mut self,
        up: &mut UpstreamConn,
        framing: Framing,
        timeout: Duration,
    ) -> Relayed {
        match self.relay_body(up, framing, timeout).await {
            Ok(()) => Relayed {
                complete: true,
                next: self.next_after_response().await,
            },
            Err(()) => Relayed {
                complete: false,
                next: Next::Close,
            },
        }
    }

    async fn tunnel_to_h1(&mut self, up: UpstreamConn) -> Next {
        // The head goes out now; the bytes follow in the tunnel, once
        // this request is recorded.
        if self.write_out().await.is_ok() {
            self.tunnel = Some(Box::new(up));
        }
        Next::Close
    }

    fn early_body_for_h2(&mut self, head_len: usize) -> Result<(Vec<u8>, bool), Failure> {
        // The body bytes that came with the head, de-framed (a fresh
        // reader sees them as the session's reader did).
        let mut payload = Vec::new();
        BodyReader::new(self.plan.framing)
            .advance(&self.up_out[head_len..], Some(&mut payload))
            .map_err(|_| Failure::ClientBody)?;
        Ok((payload, self.body.is_done()))
    }

    async fn body_to_h2(
        &mut self,
        mut up: SendStream<Bytes>,
        _timeout: Duration,
    ) -> Result<BodyUp, Failure> {
        while !self.body.is_done() {
            if self.rbuf.is_empty() {
                self.read_body().await?;
            }
            let mut piece = Vec::with_capacity(self.rbuf.data().len());
            let p = self
                .body
                .advance(self.rbuf.data(), Some(&mut piece))
                .map_err(|_| Failure::ClientBody)?;
            self.rbuf.consume(p.consumed);
            if let Err(failure) = self.count_body(p.consumed) {
                up.send_reset(h2::Reason::CANCEL);
                return Err(failure);
            }
            if piece.is_empty() && !p.done {
                continue;
            }
            send_data(&mut up, Bytes::from(piece), p.done)
                .await
                .map_err(|e| crate::forward::h2::h2_failure(&e))?;
        }
        Ok(BodyUp::Sent)
    }

    async fn relay_from_h2(
        &mut self,
        response: http::Response<RecvStream>,
        lease: Lease,
        _body_up: BodyUp,
        rules: &HeaderRules,
        timeout_each: Duration,
    ) -> Next {
        let (parts, mut up) = response.into_parts();
        self.log.status = parts.status.as_u16();
        let headers = convert::header_view(&parts.headers);
        let view =
            convert::h1_response_view(&parts, &headers, up.is_end_stream(), self.plan.is_head);
        let client_body = ClientBody::choose(view.framing, self.plan.minor_version);
        let close = !self.plan.keep_alive
            || !self.body.is_done()
            || client_body.needs_close()
            || self.worker.drain.is_draining();
        response::write_client_head(&mut self.out, &view, client_body, close, rules);
        drop(headers);
        let chunked = client_body == ClientBody::EncodeChunked;
        if client_body != ClientBody::None {
            loop {
                let data = match timeout(timeout_each, up.data()).await {
                    Ok(Some(Ok(data))) => data,
                    Ok(None) => break,
                    // Reset, or stalled: the client sees the connection
                    // close before the framing completes.
                    _ => return self.abandon().await,
                };
                let len = data.len();
                if len > 0 {
                    if chunked {
                        chunk_header(&mut self.out, len);
                    }
                    self.out.extend_from_slice(&data);
                    if chunked {
                        self.out.extend_from_slice(b"\r\n");
                    }
                }
                if self.write_out().await.is_err() {
                    return Next::Close;
                }
                self.out.clear();
                let _ = up.flow_control().release_capacity(len);
            }
            if chunked {
                let Ok(trailers) = up.trailers().await else {
                    return self.abandon().await;
                };
                convert::write_chunked_trailers(&mut self.out, trailers.as_ref());
            }
        }
        drop(lease);
        if self.write_out().await.is_err() {
            return Next::Close;
        }
        if close { Next::Close } else { Next::KeepAlive }
    }

    async fn fail(&mut self, failure: Failure, body_read: bool) -> Next {
        let Some(status) = failure.status() else {
            return Next::Close;
        };
        self.log.status = status;
        let close = !self.plan.keep_alive || !body_read;
        if let Failure::Overflow(overflow) = failure {
            bump(&self.worker.metrics.overflowed);
            let headers = [("x-ringway-overflow".to_owned(), overflow.name().to_owned())];
            let detail = format!("{}: {}\n", failure.detail(), overflow.name());
            response::write_own_response(
                &mut self.out,
                status,
                &headers,
                detail.as_bytes(),
                self.plan.is_head,
                close,
            );
            return self.send_out(close).await;
        }
        response::write_error(&mut self.out, status, failure.detail(), close);
        self.send_out(close).await
    }
}

impl<S: AsyncReadRent + AsyncWriteRent + WaitReadable + PlainSocket> Session<S> {
    /// Sends the client head (in `self.out`) and the response body.
    /// `Err` means the response could not be completed: close both sides.
    async fn relay_body(
        &mut self,
        up: &mut UpstreamConn,
        framing: Framing,
        timeout: Duration,
    ) -> Result<(), ()> {
        let relay = self.relay;
        let mut body = BodyReader::new(framing);
        // What arrived with the head goes out with it, in one write.
        let consumed =
            frame_into(&mut self.out, &mut body, up.rbuf.data(), relay).map_err(|_| ())?;
        up.rbuf.consume(consumed);
        self.write_out().await.map_err(|_| ())?;
        // After a chunk's data was spliced, the framing that follows is
        // read in a small read, leaving the next chunk's data in the
        // socket to be spliced too; a small chunk ends that.
        let mut framing_read = false;
        if relay == Relay::Encode
            && framing == Framing::UntilClose
            && let Some(end) = self.splice_close_delimited(up, timeout).await
        {
            return end.map_err(|_| ());
        }
        while !body.is_done() {
            if relay == Relay::PassThrough
                && let Some(end) = self.splice_response(up, &mut body, timeout).await
            {
                match end {
                    Ok(()) => {
                        framing_read = framing == Framing::Chunked;
                        continue;
                    }
                    Err(Stop::End) if framing == Framing::UntilClose => return Ok(()),
                    Err(_) => return Err(()),
                }
            }
            let read = async {
                if framing_read {
                    up.rbuf
                        .fill_at_most(&mut up.stream, CHUNK_FRAMING_READ)
                        .await
                } else {
                    up.rbuf.fill_body(&mut up.stream).await
                }
            };
            match timeout_at(crate::clock::mono_uncached() + timeout, read).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) if framing == Framing::UntilClose => {
                    if relay == Relay::Encode {
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
            if relay == Relay::PassThrough {
                let p = body.advance(up.rbuf.data(), None).map_err(|_| ())?;
                self.log.bytes_out += p.consumed as u64;
                up.rbuf
                    .write_prefix(&mut self.client, p.consumed)
                    .await
                    .map_err(|_| ())?;
                framing_read &= !(1..SPLICE_MIN).contains(&body.opaque_len());
            } else {
                self.out.clear();
                let consumed =
                    frame_into(&mut self.out, &mut body, up.rbuf.data(), relay).map_err(|_| ())?;
                up.rbuf.consume(consumed);
                self.write_out().await.map_err(|_| ())?;
            }
        }
        Ok(())
    }

    /// Splices the part of a response body that needs no looking at
    /// straight from the upstream's socket to the client's (see
    /// `splice`), when both are plain sockets, nothing of it is buffered
    /// and enough of it is left. `None` when that does not apply (the
    /// body then copies); else how the transfer ended.
    async fn splice_response(
        &mut self,
        up: &mut UpstreamConn,
        body: &mut BodyReader,
        idle: Duration,
    ) -> Option<Result<(), Stop>> {
        let left = body.opaque_len();
        if left < SPLICE_MIN || !up.rbuf.is_empty() || !splice::enabled() {
            return None;
        }
        let (client, upstream) = plain_pair(&self.client, up)?;
        let (moved, end) = splice::transfer(upstream, client, left, idle, None).await;
        body.skip_opaque(moved);
        self.log.bytes_out += moved;
        (end != Err(Stop::NoPipe)).then_some(end)
    }

    /// A close-delimited response to an HTTP/1.1 client, spliced as it
    /// is re-framed: each pipe load goes out as one chunk, the last chunk
    /// when the upstream closes. `None` when splicing does not apply.
    async fn splice_close_delimited(
        &mut self,
        up: &mut UpstreamConn,
        idle: Duration,
    ) -> Option<Result<(), Stop>> {
        if !up.rbuf.is_empty() || !splice::enabled() {
            return None;
        }
        let (client, upstream) = plain_pair(&self.client, up)?;
        let (moved, end) = splice::transfer_chunked(upstream, client, idle).await;
        self.log.bytes_out += moved;
        (end != Err(Stop::NoPipe)).then_some(end)
    }

    /// As [`Session::splice_response`] for the request body, client to
    /// upstream: within the route's body limit (nothing past it is sent),
    /// and ending when the upstream answers early.
    async fn splice_request(&mut self, up: &mut UpstreamConn) -> Option<Result<(), Stop>> {
        let mut left = self.body.opaque_len();
        if let Some(max) = self.plan.max_body {
            left = left.min(max.saturating_sub(self.log.body_in));
        }
        if left < SPLICE_MIN || !self.rbuf.is_empty() || !splice::enabled() {
            return None;
        }
        let (client, upstream) = plain_pair(&self.client, up)?;
        let idle = self.listener.idle_timeout;
        let (moved, end) =
            splice::transfer(client, upstream, left, idle, Some((upstream, &up.watched))).await;
        self.body.skip_opaque(moved);
        self.log.bytes_in += moved;
        self.log.body_in += moved;
        (end != Err(Stop::NoPipe)).then_some(end)
    }
}

/// The client's and the upstream's sockets when both are plain TCP, so
/// that a body between them can be spliced.
fn plain_pair<'a, S: PlainSocket>(
    client: &'a S,
    up: &'a UpstreamConn,
) -> Option<(&'a monoio::net::TcpStream, &'a monoio::net::TcpStream)> {
    match (client.plain_socket(), &up.stream) {
        (Some(client), UpstreamStream::Plain(upstream)) => Some((client, upstream)),
        _ => None,
    }
}
