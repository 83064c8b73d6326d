//! Accepted connections: the TLS handshake (SNI picks the certificate,
//! ALPN picks the protocol), h2c detection on plain listeners, and the
//! hand-off to the HTTP/1.1 session or the HTTP/2 connection.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::timeout;
use ringway_config::Listener;

use super::h1::{Session, Sniffed};
use super::proxy_protocol;
use crate::forward::plan::Ends;
use crate::h2_io::{PlainIo, Replay, TlsIo};
use crate::metrics::bump;
use crate::tls;
use crate::worker::state::Worker;

/// How often, at most, a worker logs a refused connection (a failed TLS
/// handshake, a bad PROXY protocol header); the others are only counted.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// An accepted client connection, before it is served: everything its
/// task keeps while the connection lives, in one box, so that the task's
/// futures hold a pointer to it rather than copies of it (the connection's
/// memory while idle is mostly what its task holds).
pub(crate) struct Accepted<H> {
    pub(crate) worker: Rc<Worker>,
    pub(crate) listener: Rc<Listener>,
    /// The listener's TLS settings, on a TLS listener.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// The socket, until the session that serves it takes it.
    pub(crate) client: Option<TcpStream>,
    pub(crate) peer: SocketAddr,
    /// Held until the connection ends (its place under the connection cap
    /// and in a drain's count).
    pub(crate) _hold: H,
}

/// Serves a connection of a plain-HTTP listener until it closes.
pub(crate) async fn serve_plain<H>(mut accepted: Box<Accepted<H>>) {
    let Some(client) = accepted.client.as_ref() else {
        return;
    };
    let _ = client.set_nodelay(true);
    let Some(ends) = ends(&accepted.worker, &accepted.listener, client, accepted.peer).await else {
        return;
    };
    let Some(client) = accepted.client.take() else {
        return;
    };
    let _count = ConnectionCount::new(&accepted.worker);
    let worker = accepted.worker.clone();
    let listener = accepted.listener.clone();
    // Boxed for the same reason as `Accepted`.
    let mut session = Box::new(Session::new(worker, listener, client, ends, "http", None));
    if session.h2c() {
        match session.sniff_preface().await {
            Sniffed::Http1 => {}
            Sniffed::Http2 => {
                let (worker, listener, client, early) = (*session).into_parts();
                let io = Replay::new(early, PlainIo::new(client).gathering());
                // Boxed, as on TLS listeners: the HTTP/2 connection's
                // state is not laid out in every HTTP/1.1 connection's task.
                Box::pin(super::h2::serve(worker, listener, io, ends, "http", None)).await;
                return;
            }
            Sniffed::Closed => return,
        }
    }
    session.serve().await;
}

/// The two ends of a client connection: the client's address and the
/// address it connected to. Behind a load balancer that speaks the PROXY
/// protocol (`proxy_protocol = true`), its header names both; `None` when
/// the connection is refused (closed) instead: the header came from a
/// peer outside `trusted_proxies`, was malformed, or did not come within
/// the listener's header timeout.
async fn ends(
    worker: &Worker,
    listener: &Listener,
    client: &TcpStream,
    peer: SocketAddr,
) -> Option<Ends> {
    let mut ends = Ends {
        peer,
        local: listener.addr,
        socket: std::os::fd::AsRawFd::as_raw_fd(client),
    };
    if listener.proxy_protocol {
        let ip = ringway_config::canonical_ip(peer.ip());
        let trusted = &listener.trusted_proxies;
        // Boxed: its timer would otherwise be laid out in every
        // connection's task for the connection's life.
        let read = Box::pin(timeout(
            listener.header_timeout,
            proxy_protocol::read_header(client),
        ));
        let refused = if !trusted.is_empty() && !trusted.iter().any(|r| r.contains(ip)) {
            Some("the peer is not in trusted_proxies".to_owned())
        } else {
            match read.await {
                Ok(Ok(Some((from, to)))) => {
                    ends.peer = from;
                    ends.local = to;
                    None
                }
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no header in time".to_owned()),
            }
        };
        if let Some(why) = refused {
            bump(&worker.metrics.proxy_protocol_refused);
            log_now_and_then(
                worker,
                &format!(
                    "listener {}: PROXY protocol from {peer} refused: {why}",
                    listener.name
                ),
                "ringway_proxy_protocol_refused_total",
            );
            return None;
        }
    }
    Some(ends)
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

/// What a TLS connection goes on to after its handshake.
enum AfterHandshake {
    Http2(std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>),
    Http1(Box<Session<TlsIo<rustls::ServerConnection>>>),
    /// Why not (for the log).
    Failed(String),
}

/// Serves a connection of a TLS listener: the handshake (within the
/// listener's header timeout), then HTTP/2 or HTTP/1.1 as ALPN chose.
pub(crate) async fn serve_tls<H>(mut accepted: Box<Accepted<H>>) {
    let (Some(client), Some(config)) = (accepted.client.as_ref(), accepted.tls.clone()) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let Some(ends) = ends(&accepted.worker, &accepted.listener, client, accepted.peer).await else {
        return;
    };
    let Some(client) = accepted.client.take() else {
        return;
    };
    let worker = accepted.worker.clone();
    let listener = accepted.listener.clone();
    let peer = ends.peer;
    let handshake = Box::pin(timeout(
        listener.header_timeout,
        tls::handshake(client, config),
    ));
    // What follows the handshake is made here, with no await in between,
    // so that the handshake's results (the rustls connection, the socket)
    // are moved into the boxed session or connection, not also kept in
    // this task's future for the connection's life.
    let next = match handshake.await {
        Ok(Ok(accepted)) => {
            bump(&worker.metrics.tls_handshakes);
            let identity = accepted.identity;
            let h2 = accepted.stream.alpn_protocol().as_deref() == Some(b"h2");
            let (io, conn) = accepted.stream.into_parts();
            let io = TlsIo::new(io, conn);
            let (w, l) = (worker.clone(), listener.clone());
            if h2 {
                let serve = super::h2::serve(w, l, io.gathering(), ends, "https", identity);
                AfterHandshake::Http2(Box::pin(serve))
            } else {
                let session = Session::new(w, l, io, ends, "https", identity);
                AfterHandshake::Http1(Box::new(session))
            }
        }
        Ok(Err(e)) => AfterHandshake::Failed(e.to_string()),
        Err(_) => AfterHandshake::Failed("timed out".to_owned()),
    };
    let failure = match next {
        AfterHandshake::Http2(serve) => {
            let _count = ConnectionCount::new(&worker);
            serve.await;
            return;
        }
        AfterHandshake::Http1(session) => {
            let _count = ConnectionCount::new(&worker);
            session.serve().await;
            return;
        }
        AfterHandshake::Failed(failure) => failure,
    };
    // The connection is dropped (closed) here; one line now and then.
    bump(&worker.metrics.tls_handshake_failures);
    log_now_and_then(
        &worker,
        &format!(
            "listener {}: TLS handshake from {peer} failed: {failure}",
            listener.name
        ),
        "ringway_tls_handshake_failures_total",
    );
}

/// Logs a refused connection, at most one line per worker every
/// [`REFUSAL_LOG_INTERVAL`]: the others are only counted in `counter`.
fn log_now_and_then(worker: &Worker, what: &str, counter: &str) {
    let now = std::time::Instant::now();
    let due = worker
        .refusal_logged
        .get()
        .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL);
    if due {
        worker.refusal_logged.set(Some(now));
        crate::say!(
            "ringway: worker {}: {what} (further refusals for {}s only counted in {counter})",
            worker.id,
            REFUSAL_LOG_INTERVAL.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2_io::TlsIo;

    /// What a waiting connection keeps is its task, its `Accepted` box and
    /// its session (measured: 1.7 KiB in all with 18,000 idle connections,
    /// benches/RESULTS.md). These bounds are mimalloc's size classes they
    /// fit today: growing past one costs every idle connection the next
    /// class's size, so it should be a choice, not an accident.
    /// The size of what `f` returns, without calling it.
    fn returned_size<A, R>(_: impl FnOnce(A) -> R) -> usize {
        size_of::<R>()
    }

    #[test]
    fn a_waiting_connection_keeps_its_size_classes() {
        assert!(
            size_of::<Session<TcpStream>>() <= 768,
            "{}",
            size_of::<Session<TcpStream>>()
        );
        assert!(size_of::<Accepted<(u64, u64, u64)>>() <= 192);
        // The task's future: every state of a plain connection's life is
        // laid out in it, the rare ones boxed (session 15: an inline
        // fallback read made it 776 bytes, a mimalloc class up for every
        // idle connection).
        let task = returned_size(serve_plain::<(u64, u64, u64)>);
        assert!(task <= 512, "{task}");
        // Over TLS the session holds the rustls connection inline.
        let tls = size_of::<Session<TlsIo<rustls::ServerConnection>>>();
        assert!(tls <= 2048, "{tls}");
    }
}
