//! Why a try at an upstream failed, and the one place that maps each
//! reason to the status the client gets.

use std::io;

/// Which circuit breaker refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Too many upstream connections.
    Connections,
    /// Too many requests waiting for a connection.
    Pending,
    /// Too many requests in flight.
    Requests,
    /// Too many retries in flight.
    Retries,
}

impl Overflow {
    /// The name used in the `x-ringway-overflow` header.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Overflow::Connections => "max_connections",
            Overflow::Pending => "max_pending",
            Overflow::Requests => "max_requests",
            Overflow::Retries => "max_retries",
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
