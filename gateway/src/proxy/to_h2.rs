//! An HTTP/1.1 client's request to an HTTP/2 upstream: the head written
//! for HTTP/1.1 becomes an `http::Request`, the body is de-framed into
//! DATA frames, and the response comes back as an HTTP/1.1 head with the
//! body chunked (or length-delimited when the upstream said so) and any
//! trailers in the chunked trailer section.

use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::timeout;
use ringway_config::HeaderRules;

use super::tries::{Exchange, Try};
use super::{Failure, Next, Plan, Session};
use crate::buffer::BUF_SIZE;
use crate::http2::client::Lease;
use crate::http2::server::{h2_failure, send_data};
use ringway_codec::convert;
use ringway_codec::http1::framing::{BodyReader, chunk_header};
use ringway_codec::http1::response::{self, ClientBody};

/// Tries on HTTP/2 endpoints for an HTTP/1.1 client.
pub(super) struct H1ToH2<'s, S> {
    pub session: &'s mut Session<S>,
    pub plan: Plan,
    pub body: &'s mut BodyReader,
}

impl<S: AsyncReadRent + AsyncWriteRent> Exchange for H1ToH2<'_, S> {
    type Answer = (http::Response<RecvStream>, Lease);

    async fn attempt(&mut self, to: Try<'_>) -> Result<(Self::Answer, u16), Failure> {
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

    async fn discard(&mut self, answer: Self::Answer, _to: Try<'_>) {
        // Dropping the stream's handles resets it (CANCEL).
        drop(answer);
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> H1ToH2<'_, S> {
    async fn attempt_on_connection(
        &mut self,
        to: Try<'_>,
    ) -> Result<((http::Response<RecvStream>, Lease), u16), Failure> {
        let session = &mut *self.session;
        let scheme = if to.cluster.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let (request, head_len) =
            convert::upstream_request(&session.up_out, scheme, self.plan.te_trailers)
                .map_err(Failure::Invalid)?;
        // The body bytes that came with the head, de-framed (a fresh
        // reader sees them as the session's reader did).
        let mut payload = Vec::with_capacity(BUF_SIZE);
        BodyReader::new(self.plan.framing)
            .advance(&session.up_out[head_len..], Some(&mut payload))
            .map_err(|_| Failure::ClientBody)?;
        let (send, lease) = session.worker.h2.stream(to).await?;
        // A connection that went away takes no more streams.
        let failed = |e: h2::Error| {
            let failure = h2_failure(&e);
            if failure == Failure::GoneAway {
                lease.retire();
            }
            failure
        };
        let mut send = send.ready().await.map_err(failed)?;
        let done = self.body.is_done();
        let sent_at = crate::clock::now();
        let (response, mut up) = send
            .send_request(request, done && payload.is_empty())
            .map_err(failed)?;
        if !payload.is_empty() {
            send_data(&mut up, Bytes::from(payload), done)
                .await
                .map_err(failed)?;
        }
        if !done {
            if self.plan.expect_continue {
                session.out.clear();
                session
                    .out
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                session.write_out().await.map_err(|_| Failure::ClientGone)?;
            }
            while !self.body.is_done() {
                if session.rbuf.is_empty() {
                    match timeout(
                        session.listener.idle_timeout,
                        session.rbuf.fill(&mut session.client, BUF_SIZE),
                    )
                    .await
                    {
                        Ok(Ok(n)) if n > 0 => {}
                        Err(_) => return Err(Failure::ClientTimeout),
                        Ok(_) => return Err(Failure::ClientGone),
                    }
                }
                let mut piece = Vec::with_capacity(session.rbuf.data().len());
                let p = self
                    .body
                    .advance(session.rbuf.data(), Some(&mut piece))
                    .map_err(|_| Failure::ClientBody)?;
                session.rbuf.consume(p.consumed);
                session.log.bytes_in += p.consumed as u64;
                session.log.body_in += p.consumed as u64;
                if self
                    .plan
                    .max_body
                    .is_some_and(|max| session.log.body_in > max)
                {
                    up.send_reset(h2::Reason::CANCEL);
                    return Err(Failure::BodyTooLarge);
                }
                if piece.is_empty() && !p.done {
                    continue;
                }
                send_data(&mut up, Bytes::from(piece), p.done)
                    .await
                    .map_err(failed)?;
            }
        }
        let response =
            match monoio::time::timeout_at(crate::clock::mono_now() + to.timeout, response).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(e)) => return Err(failed(e)),
                Ok(Ok(r)) => r,
            };
        session.log.upstream_micros = Some(crate::clock::since(sent_at).as_micros() as u64);
        let status = response.status().as_u16();
        Ok(((response, lease), status))
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> Session<S> {
    /// Relays an HTTP/2 upstream's response to this HTTP/1.1 client.
    pub(super) async fn finish_h2(
        &mut self,
        (response, lease): (http::Response<RecvStream>, Lease),
        plan: Plan,
        body: &BodyReader,
        rules: &HeaderRules,
        timeout_each: Duration,
    ) -> Next {
        let (parts, mut up) = response.into_parts();
        self.log.status = parts.status.as_u16();
        let headers = convert::header_view(&parts.headers);
        let view = convert::h1_response_view(&parts, &headers, up.is_end_stream(), plan.is_head);
        let client_body = ClientBody::choose(view.framing, plan.minor_version);
        let close = !plan.keep_alive
            || !body.is_done()
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

    /// Ends a response that cannot be completed: what was written goes
    /// out, then the connection closes.
    async fn abandon(&mut self) -> Next {
        let _ = self.write_out().await;
        Next::Close
    }
}
