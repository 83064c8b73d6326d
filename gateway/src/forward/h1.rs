//! The exchange with an HTTP/1.1 upstream, for a client of either
//! protocol: a pooled connection or a new one, the request, the response
//! head (1xx passed on, `101` to a WebSocket upgrade), the body relayed,
//! and the connection given back to the pool only when it is in step.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRentExt;
use monoio::time::{Instant, timeout, timeout_at};
use ringway_codec::http1::framing::{BodyReader, Framing};
use ringway_codec::http1::response;
use ringway_config::Cluster;

use super::client::{Client, HeadFromH1, Next};
use super::plan::Plan;
use super::tries::{Chosen, Exchange, Relay};
use crate::buffer::{BUF_SIZE, send_now, write_all};
use crate::failure::Failure;
use crate::upstream::conn::{UpstreamConn, UpstreamStream};
use crate::upstream::pool::{Finished, Pool};
use crate::upstream::target::Try;

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Largest response body read and dropped to keep a connection when a
/// retry replaces the response; a larger one closes the connection.
const DISCARD_LIMIT: u64 = 1024 * 1024;

/// A response head from an HTTP/1.1 upstream, prepared for the client and
/// not yet sent.
#[derive(Debug)]
pub(crate) struct Answer {
    up: UpstreamConn,
    framing: Framing,
    keep_alive: bool,
    /// The whole request reached the upstream.
    request_sent: bool,
    /// The upstream switched to WebSocket.
    switched: bool,
}

/// Tries on HTTP/1.1 endpoints for `client`.
pub(crate) struct H1Exchange<'a, C> {
    pub(crate) client: &'a mut C,
    pub(crate) pool: &'a Pool,
    pub(crate) cluster: &'a Cluster,
    pub(crate) plan: Plan,
}

impl<C: Client> Exchange for H1Exchange<'_, C> {
    type Answer = Answer;

    /// One try on endpoint `to`. A pooled connection the upstream closed
    /// before reading the request is replaced by a new one once, as hyper
    /// and browsers do, when the whole request is still at hand.
    async fn attempt(&mut self, to: Try<'_>) -> Result<(Answer, u16), Failure> {
        let mut fresh_only = false;
        loop {
            let mut up = upstream_conn(self.pool, to, fresh_only).await?;
            let sent_at = crate::clock::now();
            match self.exchange(&mut up, to).await {
                Ok((status, framing, keep_alive, request_sent, switched)) => {
                    self.client.log().upstream_micros =
                        Some(crate::clock::since(sent_at).as_micros() as u64);
                    let answer = Answer {
                        up,
                        framing,
                        keep_alive,
                        request_sent,
                        switched,
                    };
                    return Ok((answer, status));
                }
                Err(Failure::Closed { started: false }) if up.reused && to.replayable => {
                    fresh_only = true;
                }
                Err(f) => return Err(f),
            }
        }
    }

    async fn discard(&mut self, mut answer: Answer, to: Try<'_>) {
        let complete = discard_upstream_body(&mut answer.up, answer.framing, to.timeout).await;
        self.give_back(to.addr, answer, complete);
    }
}

impl<C: Client> Relay for H1Exchange<'_, C> {
    type Client = C;

    fn client(&mut self) -> &mut C {
        self.client
    }

    /// Relays the chosen answer and gives its connection back.
    async fn finish(&mut self, chosen: Chosen<Answer>) -> Next {
        let Chosen {
            mut answer,
            addr,
            timeout,
            ..
        } = chosen;
        if answer.switched {
            return self.client.tunnel_to_h1(answer.up).await;
        }
        let relayed = self
            .client
            .relay_from_h1(&mut answer.up, answer.framing, timeout)
            .await;
        self.give_back(addr, answer, relayed.complete);
        relayed.next
    }
}

impl<C: Client> H1Exchange<'_, C> {
    /// Sends the request on `up` and reads the response head, passing
    /// informational responses on; the final head is prepared in the
    /// client. Returns the status, the body's framing, whether the
    /// upstream keeps the connection, whether the whole request reached
    /// it, and whether it switched protocols.
    async fn exchange(
        &mut self,
        up: &mut UpstreamConn,
        to: Try<'_>,
    ) -> Result<(u16, Framing, bool, bool, bool), Failure> {
        let mut request_sent = true;
        let deadline;
        if !self.client.body_pending() {
            deadline = crate::clock::mono_now() + to.timeout;
            send_and_read_head(up, self.client.up_out(), deadline).await?;
        } else {
            if write_all(&mut up.stream, self.client.up_out())
                .await
                .is_err()
            {
                return Err(Failure::Closed { started: false });
            }
            self.client.go_on().await?;
            // An upstream that stops reading may have answered early (413,
            // say): its response is read and passed on below.
            request_sent = self.client.body_to_h1(up).await?;
            deadline = crate::clock::mono_uncached() + to.timeout;
        }
        loop {
            match self.parse_head(up, to)? {
                Some(Step::Informational { send }) => {
                    if send {
                        self.client.send_informational().await?;
                    }
                }
                Some(Step::Final(status, framing, keep_alive)) => {
                    return Ok((status, framing, keep_alive, request_sent, false));
                }
                Some(Step::Switched) => {
                    return Ok((101, Framing::Empty, false, request_sent, true));
                }
                None => read_more_head(up, deadline).await?,
            }
        }
    }

    /// The next head in `up`'s buffer, if it is all there, prepared in the
    /// client and consumed. Synchronous, so that the parser's header array
    /// (4 KiB) is not kept in the request's future across a read.
    fn parse_head(&mut self, up: &mut UpstreamConn, to: Try<'_>) -> Result<Option<Step>, Failure> {
        let mut headers = ringway_codec::http1::header_slots::<{ response::MAX_HEADERS }>();
        let resp = match response::parse(up.rbuf.data(), &mut headers, self.plan.is_head) {
            Ok(Some(resp)) => resp,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Failure::Invalid(e.0)),
        };
        if resp.status == 101 && !self.plan.upgrade {
            return Err(Failure::Invalid("upstream switched protocols unasked"));
        }
        let step = match self.client.head_from_h1(&resp, to.rules)? {
            HeadFromH1::Informational { send } => Step::Informational { send },
            HeadFromH1::Switched => Step::Switched,
            HeadFromH1::Final => Step::Final(resp.status, resp.framing, resp.keep_alive),
        };
        up.rbuf.consume(resp.head_len);
        Ok(Some(step))
    }

    /// The one way an answer's connection leaves the exchange: back to the
    /// pool, which keeps it only when it is in step.
    fn give_back(&self, addr: SocketAddr, answer: Answer, complete: bool) {
        let finished = Finished {
            framing: answer.framing,
            complete,
            keep_alive: answer.keep_alive,
            request_sent: answer.request_sent,
        };
        let (idle, max) = (
            self.cluster.idle_timeout,
            self.cluster.max_idle_per_endpoint,
        );
        self.pool.give_back(addr, answer.up, finished, idle, max);
    }
}

/// A head read from the upstream.
enum Step {
    Informational { send: bool },
    Final(u16, Framing, bool),
    Switched,
}

/// Reads and drops an upstream response body that will not be used;
/// true when it was read whole.
async fn discard_upstream_body(up: &mut UpstreamConn, framing: Framing, limit: Duration) -> bool {
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
        match timeout(limit, up.rbuf.fill(&mut up.stream, BUF_SIZE)).await {
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
async fn send_and_read_head(
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
async fn read_more_head(up: &mut UpstreamConn, deadline: Instant) -> Result<(), Failure> {
    if up.rbuf.data().len() >= MAX_RESPONSE_HEAD {
        return Err(Failure::Invalid("upstream response head too large"));
    }
    let started = !up.rbuf.is_empty();
    match timeout_at(deadline, up.read_head_bytes(MAX_RESPONSE_HEAD)).await {
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
async fn upstream_conn(
    pool: &Pool,
    to: Try<'_>,
    fresh_only: bool,
) -> Result<UpstreamConn, Failure> {
    if !fresh_only && let Some(up) = pool.take(to.addr, to.reuse_key()) {
        return Ok(up);
    }
    // Boxed: connecting (and a TLS handshake) is the rare case, and its
    // future would otherwise be part of every request's.
    let up = Box::pin(crate::upstream::conn::open(to)).await?;
    pool.note_opened();
    Ok(up)
}
