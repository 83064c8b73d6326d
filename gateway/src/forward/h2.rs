//! The exchange with an HTTP/2 upstream, for a client of either protocol:
//! a stream on one of the worker's multiplexed connections, the request
//! head translated from the HTTP/1.1 head written for it, the body under
//! both sides' flow control, and the response relayed by the client.

use std::future::poll_fn;
use std::time::Duration;

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use http::{Method, Request};
use monoio::time::timeout_at;
use ringway_codec::{HeaderRules, convert};

use super::client::{BodyUp, Client, Next};
use super::plan::Plan;
use super::tries::{Chosen, Exchange, Relay};
use crate::failure::Failure;
use crate::upstream::h2_pool::{H2Pool, Lease};
use crate::upstream::target::Try;

/// An HTTP/2 upstream's response, with its stream's claim on the
/// connection and what is left of the request body.
pub(crate) struct Answer {
    response: http::Response<RecvStream>,
    lease: Lease,
    body_up: BodyUp,
}

/// Tries on HTTP/2 endpoints for `client`.
pub(crate) struct H2Exchange<'a, C> {
    pub(crate) client: &'a mut C,
    pub(crate) pool: &'a H2Pool,
    pub(crate) plan: Plan,
    /// The route's response header rules.
    pub(crate) rules: &'a HeaderRules,
}

impl<C: Client> Exchange for H2Exchange<'_, C> {
    type Answer = Answer;

    async fn attempt(&mut self, to: Try<'_>) -> Result<(Answer, u16), Failure> {
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

    async fn discard(&mut self, answer: Answer, _to: Try<'_>) {
        // Dropping the stream's handles resets it (CANCEL).
        drop(answer);
    }
}

impl<C: Client> Relay for H2Exchange<'_, C> {
    type Client = C;

    fn client(&mut self) -> &mut C {
        self.client
    }

    /// Relays the chosen answer to the client.
    async fn finish(&mut self, chosen: Chosen<Answer>) -> Next {
        let Answer {
            response,
            lease,
            body_up,
        } = chosen.answer;
        self.client
            .relay_from_h2(response, lease, body_up, self.rules, chosen.timeout)
            .await
    }
}

impl<C: Client> H2Exchange<'_, C> {
    async fn attempt_on_connection(&mut self, to: Try<'_>) -> Result<(Answer, u16), Failure> {
        let scheme = if to.cluster.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let websocket = self.client.extended_connect();
        let (mut request, head_len) =
            convert::upstream_request(self.client.up_out(), scheme, self.plan.te_trailers)
                .map_err(Failure::Invalid)?;
        if websocket {
            websocket_connect(&mut request);
        }
        let (early, ends) = self.client.early_body_for_h2(head_len)?;
        let (send, lease) = self.pool.stream(to).await?;
        // A connection that went away takes no more streams.
        let failed = |failure: Failure| {
            if failure == Failure::GoneAway {
                lease.retire();
            }
            failure
        };
        let h2_failed = |e: h2::Error| failed(h2_failure(&e));
        let mut send = send.ready().await.map_err(h2_failed)?;
        if websocket && !send.is_extended_connect_protocol_enabled() {
            return Err(Failure::Invalid(
                "the upstream does not offer WebSocket over HTTP/2",
            ));
        }
        let end_now = !websocket && ends && early.is_empty();
        let sent_at = crate::clock::now();
        let (response, mut up) = send.send_request(request, end_now).map_err(h2_failed)?;
        if !early.is_empty() {
            send_data(&mut up, Bytes::from(early), ends)
                .await
                .map_err(h2_failed)?;
        }
        let body_up = if ends && !websocket {
            BodyUp::Sent
        } else {
            self.client.go_on().await?;
            self.client
                .body_to_h2(up, to.timeout)
                .await
                .map_err(failed)?
        };
        let response = match timeout_at(crate::clock::mono_now() + to.timeout, response).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(h2_failed(e)),
            Ok(Ok(r)) => r,
        };
        self.client.log().upstream_micros = Some(crate::clock::since(sent_at).as_micros() as u64);
        let status = response.status().as_u16();
        let answer = Answer {
            response,
            lease,
            body_up,
        };
        Ok((answer, status))
    }
}

/// Turns the upstream request for a WebSocket (the HTTP/1.1 upgrade head
/// translated by `convert::upstream_request`) into an extended CONNECT
/// (RFC 8441 §4): `:protocol = websocket`, and no `Sec-WebSocket-Key`,
/// which only the HTTP/1.1 handshake uses (§5).
fn websocket_connect(request: &mut Request<()>) {
    *request.method_mut() = Method::CONNECT;
    request.headers_mut().remove("sec-websocket-key");
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
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

/// Moves a client's request body to the upstream stream; the byte count.
pub(crate) async fn pump_body(
    mut from: RecvStream,
    mut to: SendStream<Bytes>,
    timeout: Duration,
    max_body: Option<u64>,
) -> u64 {
    let mut bytes = 0;
    relay_h2_body(&mut from, &mut to, timeout, max_body, &mut bytes).await;
    bytes
}
