//! Per-worker keep-alive pool of upstream connections, keyed by endpoint
//! address so that a reload keeps the connections of endpoints that stay.
//!
//! Owned by one worker and never shared: `RefCell`, no lock. Newest idle
//! connections are reused first (they are the least likely to have been
//! closed by the upstream); expired ones are dropped when met and by a
//! periodic sweep.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;

use crate::buffer::ReadBuf;

/// The byte stream to an upstream endpoint: plain TCP, or TLS when its
/// cluster says so.
#[derive(Debug)]
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// Resolves when the socket has bytes to read (or has closed), without
    /// reading them. Over TLS it never does: monoio-rustls does not lend
    /// its socket, so an early answer from a TLS upstream is seen once the
    /// request body is sent, or its write fails.
    pub async fn readable(&self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.readable(false).await,
            UpstreamStream::Tls(_) => std::future::pending().await,
        }
    }
}

// Both kinds may be read and written at once from two halves.
unsafe impl Split for UpstreamStream {}

impl AsyncReadRent for UpstreamStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.read(buf).await,
            UpstreamStream::Tls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.readv(buf).await,
            UpstreamStream::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpstreamStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.write(buf).await,
            UpstreamStream::Tls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.writev(buf).await,
            UpstreamStream::Tls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.flush().await,
            UpstreamStream::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.shutdown().await,
            UpstreamStream::Tls(s) => s.shutdown().await,
        }
    }
}

/// A connection to an upstream endpoint and its read buffer.
#[derive(Debug)]
pub struct UpstreamConn {
    /// The socket.
    pub stream: UpstreamStream,
    /// Bytes read from it and not yet used.
    pub rbuf: ReadBuf,
    /// Taken from the pool rather than freshly connected: the upstream may
    /// have closed it meanwhile.
    pub reused: bool,
    /// Counts the connection against its cluster's limit while it lives.
    pub tally: Option<crate::cluster::Tally>,
    /// The TLS settings it was opened with (`tls::fingerprint`), 0 for
    /// plain TCP: only a cluster with the same settings may reuse it.
    pub tls: u64,
}

#[derive(Debug)]
struct Idle {
    conn: UpstreamConn,
    expires: Instant,
}

/// The idle upstream connections of one worker.
#[derive(Debug, Default)]
pub struct Pool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
    opened: Cell<u64>,
    reused: Cell<u64>,
}

impl Pool {
    /// An idle connection to `addr`, if one is left that has not expired.
    pub fn take(&self, addr: SocketAddr, tls: u64) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        list.retain(|c| c.expires > now);
        let at = list.iter().rposition(|c| c.conn.tls == tls)?;
        self.reused.set(self.reused.get() + 1);
        let mut conn = list.remove(at).conn;
        conn.reused = true;
        Some(conn)
    }

    /// Counts a freshly opened connection.
    pub fn note_opened(&self) {
        self.opened.set(self.opened.get() + 1);
    }

    /// Keeps `conn` for reuse for `idle_timeout`, unless `max_idle` are kept
    /// already.
    pub fn put(
        &self,
        addr: SocketAddr,
        conn: UpstreamConn,
        idle_timeout: Duration,
        max_idle: usize,
    ) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= max_idle {
            return;
        }
        list.push(Idle {
            conn,
            expires: Instant::now() + idle_timeout,
        });
    }

    /// Drops expired idle connections.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        for list in idle.values_mut() {
            list.retain(|c| c.expires > now);
        }
        idle.retain(|_, list| !list.is_empty());
    }

    /// Idle connections kept for `addr` now.
    pub fn idle(&self, addr: SocketAddr) -> usize {
        self.idle.borrow().get(&addr).map_or(0, Vec::len)
    }

    /// Connections opened and reused so far, for metrics and tests.
    pub fn counts(&self) -> (u64, u64) {
        (self.opened.get(), self.reused.get())
    }
}
