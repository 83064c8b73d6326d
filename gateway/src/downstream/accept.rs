//! Accepted connections: the TLS handshake (SNI picks the certificate,
//! ALPN picks the protocol), h2c detection on plain listeners, and the
//! hand-off to the HTTP/1.1 session or the HTTP/2 connection.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use monoio::time::timeout;
use ringway_config::Listener;

use super::h1::{Session, Sniffed};
use crate::h2_io::{PlainIo, Replay, TlsIo};
use crate::metrics::bump;
use crate::tls;
use crate::worker::state::Worker;

/// How often, at most, a worker logs a failed TLS handshake; the others
/// are only counted.
const TLS_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves one accepted plain-HTTP client connection until it closes.
pub(crate) async fn serve(
    worker: Rc<Worker>,
    listener: Rc<Listener>,
    client: TcpStream,
    peer: SocketAddr,
) {
    let _ = client.set_nodelay(true);
    let _count = ConnectionCount::new(&worker);
    let mut session = Session::new(worker, listener, client, peer, "http", None);
    if session.h2c() {
        match session.sniff_preface().await {
            Sniffed::Http1 => {}
            Sniffed::Http2 => {
                let (worker, listener, client, early) = session.into_parts();
                let io = Replay::new(early, PlainIo::new(client).gathering());
                super::h2::serve(worker, listener, io, peer, "http", None).await;
                return;
            }
            Sniffed::Closed => return,
        }
    }
    session.serve().await;
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
pub(crate) async fn serve_tls(
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
                let io = TlsIo::new(io, conn).gathering();
                let _count = ConnectionCount::new(&worker);
                super::h2::serve(worker.clone(), listener, io, peer, "https", identity).await;
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
