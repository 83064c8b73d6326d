//! Upstream HTTP/2: per worker, a few multiplexed connections per
//! endpoint. A stream goes on the first connection with room under the
//! cluster's `max_streams_per_connection` (and the peer's own limit); when
//! every connection is full, another is opened. Idle connections are closed
//! after the cluster's idle timeout.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use monoio::time::timeout;
use rustc_hash::FxHashMap;

use super::cluster::Tally;
use super::target::{ReuseKey, Try};
use crate::drain::Signal;
use crate::failure::Failure;
use crate::h2_io::{PlainIo, TlsIo};

/// One upstream HTTP/2 connection.
#[derive(Debug)]
struct Conn {
    send: SendRequest<Bytes>,
    /// Streams open on it now.
    open: Cell<u32>,
    /// Set by its driver task when the connection has ended.
    closed: Rc<Cell<bool>>,
    /// When its last stream ended.
    idle_since: Cell<Instant>,
    idle_timeout: Duration,
    /// What a stream must match to use it ([`Try::reuse_key`]).
    key: ReuseKey,
    /// Counts it against the cluster's connection limit while it lives.
    _tally: Tally,
}

/// A stream's claim on a connection, given back when dropped.
#[derive(Debug)]
pub(crate) struct Lease(Rc<Conn>);

impl Lease {
    /// Takes the connection out of use (its peer sent GOAWAY): streams
    /// already on it finish, new ones go to another.
    pub(crate) fn retire(&self) {
        self.0.closed.set(true);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let open = self.0.open.get().saturating_sub(1);
        self.0.open.set(open);
        if open == 0 {
            self.0.idle_since.set(crate::clock::now());
        }
    }
}

/// A worker's upstream HTTP/2 connections, by endpoint.
#[derive(Debug, Default)]
pub(crate) struct H2Pool {
    /// Keyed by configured addresses: a fast hash is safe.
    conns: RefCell<FxHashMap<SocketAddr, Vec<Rc<Conn>>>>,
    /// Connections being opened, by endpoint and TLS settings.
    opening: RefCell<FxHashMap<(SocketAddr, ReuseKey), Rc<Signal>>>,
}

impl H2Pool {
    /// A connection to `to`'s endpoint with room for one more stream,
    /// opening one when none has room.
    pub(crate) async fn stream(&self, to: Try<'_>) -> Result<(SendRequest<Bytes>, Lease), Failure> {
        let limit = to.cluster.max_streams_per_connection;
        let key = (to.addr, to.reuse_key());
        loop {
            if let Some(found) = self.lease(to.addr, key.1, limit) {
                return Ok(found);
            }
            // While a connection is being opened, the streams that want one
            // wait for it rather than each opening their own.
            let opening = self.opening.borrow().get(&key).cloned();
            match opening {
                Some(signal) => signal.fired().await,
                None => break,
            }
        }
        let signal = Rc::new(Signal::default());
        self.opening.borrow_mut().insert(key, signal.clone());
        // Boxed: opening (TCP, TLS, h2 handshake) is rare, and its large
        // future would otherwise be part of every stream's.
        let opened = Box::pin(self.open(to)).await;
        self.opening.borrow_mut().remove(&key);
        signal.fire();
        opened
    }

    /// Opens a connection to `to`'s endpoint, with one stream leased.
    async fn open(&self, to: Try<'_>) -> Result<(SendRequest<Bytes>, Lease), Failure> {
        if let Some(overflow) = to.state.connect_overflow() {
            return Err(Failure::Overflow(overflow));
        }
        let connecting = Tally::new(&to.state.breakers.pending);
        let host = &to.cluster.endpoints[to.endpoint.0 as usize].host;
        let result = timeout(to.cluster.connect_timeout, connect(to, host)).await;
        drop(connecting);
        let (send, closed) = match result {
            Err(_) => return Err(Failure::ConnectTimeout),
            Ok(r) => r?,
        };
        let conn = Rc::new(Conn {
            send: send.clone(),
            open: Cell::new(1),
            closed,
            idle_since: Cell::new(Instant::now()),
            idle_timeout: to.cluster.idle_timeout,
            key: to.reuse_key(),
            _tally: Tally::new(&to.state.breakers.connections),
        });
        self.conns
            .borrow_mut()
            .entry(to.addr)
            .or_default()
            .push(conn.clone());
        Ok((send, Lease(conn)))
    }

    fn lease(
        &self,
        addr: SocketAddr,
        key: ReuseKey,
        limit: u32,
    ) -> Option<(SendRequest<Bytes>, Lease)> {
        let mut conns = self.conns.borrow_mut();
        let list = conns.get_mut(&addr)?;
        list.retain(|c| !c.closed.get());
        let conn = list.iter().find(|c| {
            if c.key != key {
                return false;
            }
            let peer_limit = u32::try_from(c.send.current_max_send_streams()).unwrap_or(u32::MAX);
            c.open.get() < limit.min(peer_limit.max(1))
        })?;
        conn.open.set(conn.open.get() + 1);
        Some((conn.send.clone(), Lease(conn.clone())))
    }

    /// Forgets the connections of endpoints not in `kept` (they left every
    /// cluster): no new stream goes to them, and each closes once the
    /// streams already on it end (their leases hold it until then).
    pub(crate) fn keep_only(&self, kept: &std::collections::HashSet<SocketAddr>) {
        let mut conns = self.conns.borrow_mut();
        for (_, list) in conns.extract_if(|addr, _| !kept.contains(addr)) {
            for conn in list {
                conn.closed.set(true);
            }
        }
    }

    /// Closes connections idle past their timeout, and forgets ended ones.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut conns = self.conns.borrow_mut();
        for list in conns.values_mut() {
            list.retain(|c| {
                !c.closed.get()
                    && (c.open.get() > 0 || now.duration_since(c.idle_since.get()) < c.idle_timeout)
            });
        }
        conns.retain(|_, list| !list.is_empty());
    }
}

/// Opens an HTTP/2 connection (over TLS when the cluster says so) and
/// starts the task that drives it.
async fn connect(to: Try<'_>, host: &str) -> Result<(SendRequest<Bytes>, Rc<Cell<bool>>), Failure> {
    let mut stream = super::conn::connect(to.addr, to.cluster.connect_timeout).await?;
    if let Some(version) = to.cluster.proxy_protocol {
        super::proxy_protocol::send(&mut stream, version, to.origin).await?;
    }
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .max_send_buffer_size(64 * 1024)
        .enable_push(false);
    let closed = Rc::new(Cell::new(false));
    let send = match (to.tls, &to.cluster.tls) {
        (Some(tls), Some(settings)) => {
            let name = crate::tls::server_name_for(settings, host)
                .map_err(|_| Failure::Invalid("upstream TLS name is not valid"))?;
            let (io, conn) = crate::tls::connect(stream, tls.config.clone(), name)
                .await
                .map_err(|e| {
                    crate::tls::log_upstream_failure(&to.cluster.name, to.addr, &e);
                    Failure::TlsHandshake
                })?;
            start(&builder, TlsIo::new(io, conn), &closed).await?
        }
        _ => start(&builder, PlainIo::new(stream), &closed).await?,
    };
    Ok((send, closed))
}

/// Opens HTTP/2 on `io` and spawns the task that drives the connection
/// until it ends (then `closed` is set). Ready once the server's SETTINGS
/// are in (a PING answered: the server's SETTINGS is the first frame it
/// sends), so the first streams already see its limits and whether it
/// offers extended CONNECT.
async fn start<T>(
    builder: &h2::client::Builder,
    io: T,
    closed: &Rc<Cell<bool>>,
) -> Result<SendRequest<Bytes>, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (send, mut connection) = builder
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|_| Failure::Closed { started: false })?;
    let ping = connection.ping_pong();
    let flag = closed.clone();
    monoio::spawn(async move {
        let _ = connection.await;
        flag.set(true);
    });
    if let Some(mut ping) = ping {
        ping.ping(h2::Ping::opaque())
            .await
            .map_err(|_| Failure::Closed { started: false })?;
    }
    Ok(send)
}
