//! The request interface both downstream protocols present to the
//! forwarding code: an HTTP/1.1 session (one request at a time on a
//! connection) and an HTTP/2 stream implement [`Client`], so that the
//! exchange with an HTTP/1.1 upstream ([`super::h1`]) and the one with an
//! HTTP/2 upstream ([`super::h2`]) are each written once.
//!
//! What differs by client protocol is only how bytes are framed for the
//! client and read from it; every decision (which connection, when to try
//! again, when a connection goes back to its pool, what a failure
//! answers) is made by the forwarding code.

use std::time::Duration;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use ringway_codec::HeaderRules;
use ringway_codec::http1::framing::Framing;
use ringway_codec::http1::response;

use super::record::RequestLog;
use crate::failure::Failure;
use crate::upstream::conn::UpstreamConn;
use crate::upstream::h2_pool::Lease;

/// After a request: whether the client connection stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    KeepAlive,
    Close,
}

/// What an HTTP/1.1 upstream's head turned into for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadFromH1 {
    /// A 1xx to pass on (`send` says whether the client gets it).
    Informational { send: bool },
    /// The final head, ready to go out with the body.
    Final,
    /// A `101` to the client's WebSocket upgrade, ready to go out.
    Switched,
}

/// How much of an HTTP/1.1 upstream's response body was relayed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relayed {
    /// Read to its framed end: the upstream connection is in step.
    pub(crate) complete: bool,
    /// What the client connection does next.
    pub(crate) next: Next,
}

/// The rest of a request body on its way to an HTTP/2 upstream.
pub(crate) enum BodyUp {
    /// All sent (or there was none).
    Sent,
    /// A task still moves it; resolves to the bytes sent.
    Pumping(monoio::task::JoinHandle<u64>),
    /// A WebSocket's stream, open for the tunnel's bytes.
    Tunnel(SendStream<Bytes>),
}

/// The client's side of one proxied request.
pub(crate) trait Client {
    /// The request head for the upstream, written as HTTP/1.1 (and, from
    /// an HTTP/1.1 client, the body bytes that came with it).
    fn up_out(&mut self) -> &mut Vec<u8>;

    /// What the request did so far, for metrics and the log.
    fn log(&mut self) -> &mut RequestLog;

    /// Body bytes remain to be read from the client: the request is not
    /// whole in [`Client::up_out`].
    fn body_pending(&self) -> bool;

    /// The request is a WebSocket to open as an extended CONNECT on an
    /// HTTP/2 upstream (an HTTP/2 client's; an HTTP/1.1 client's upgrade
    /// goes to HTTP/1.1 upstreams).
    fn extended_connect(&self) -> bool;

    /// Tells a client that waits for it (`Expect: 100-continue`) to send
    /// its body.
    async fn go_on(&mut self) -> Result<(), Failure>;

    /// Streams the rest of the body to an HTTP/1.1 upstream, framed as
    /// the head written for it says. False when the upstream stopped
    /// taking it (it may have answered early).
    async fn body_to_h1(&mut self, up: &mut UpstreamConn) -> Result<bool, Failure>;

    /// Prepares `resp`, an HTTP/1.1 upstream's head, for the client.
    fn head_from_h1(
        &mut self,
        resp: &response::Response<'_, '_>,
        rules: &HeaderRules,
    ) -> Result<HeadFromH1, Failure>;

    /// Sends the informational head prepared last.
    async fn send_informational(&mut self) -> Result<(), Failure>;

    /// Sends the final head prepared last and relays the body from `up`,
    /// each read within `timeout`.
    async fn relay_from_h1(
        &mut self,
        up: &mut UpstreamConn,
        framing: Framing,
        timeout: Duration,
    ) -> Relayed;

    /// Sends the `101` prepared last and joins the client to `up`.
    async fn tunnel_to_h1(&mut self, up: UpstreamConn) -> Next;

    /// Sends the rest of the body (after what
    /// [`Client::early_body_for_h2`] gave) on `up`, an HTTP/2 upstream
    /// stream; or keeps `up` open for a WebSocket's tunnel.
    async fn body_to_h2(
        &mut self,
        up: SendStream<Bytes>,
        timeout: Duration,
    ) -> Result<BodyUp, Failure>;

    /// The body bytes that came with the head, de-framed, and whether
    /// they end the body: sent with the request to an HTTP/2 upstream.
    fn early_body_for_h2(&mut self, head_len: usize) -> Result<(Vec<u8>, bool), Failure>;

    /// Relays an HTTP/2 upstream's response.
    async fn relay_from_h2(
        &mut self,
        response: http::Response<RecvStream>,
        lease: Lease,
        body_up: BodyUp,
        rules: &HeaderRules,
        timeout: Duration,
    ) -> Next;

    /// Answers a failure: its status, while no response has started.
    /// `body_read` says the request body was read whole (the connection
    /// may then stay).
    async fn fail(&mut self, failure: Failure, body_read: bool) -> Next;
}
