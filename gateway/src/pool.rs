//! Per-worker keep-alive pool of upstream connections, keyed by endpoint
//! address so that a reload keeps the connections of endpoints that stay.
//!
//! Owned by one worker and never shared: `RefCell`, no lock. Newest idle
//! connections are reused first (they are the least likely to have been
//! closed by the upstream); expired ones are dropped when met and by a
//! periodic sweep.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use rustc_hash::FxHashMap;

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
    /// Keyed by endpoint address: a key from the configuration, never
    /// from a client, so a fast hash (not SipHash) is safe.
    idle: RefCell<FxHashMap<SocketAddr, Vec<Idle>>>,
    opened: Cell<u64>,
    reused: Cell<u64>,
}

impl Pool {
    /// An idle connection to `addr`, if one is left that has not expired.
    pub fn take(&self, addr: SocketAddr, tls: u64) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let now = crate::clock::now();
        let mut at = list.iter().rposition(|c| c.conn.tls == tls)?;
        if list[at].expires <= now {
            // The newest is expired, so most likely all are: the only
            // case that pays for a pass over the list (the sweep does
            // the rest).
            list.retain(|c| c.expires > now);
            at = list.iter().rposition(|c| c.conn.tls == tls)?;
        }
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
            expires: crate::clock::now() + idle_timeout,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` plain connections to a loopback listener, and the listener's
    /// address (the listener is leaked: the connections only sit idle).
    async fn connections(n: usize) -> (SocketAddr, Vec<UpstreamConn>) {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Vec::new();
        for _ in 0..n {
            let stream = TcpStream::connect(addr).await.unwrap();
            conns.push(UpstreamConn {
                stream: UpstreamStream::Plain(stream),
                rbuf: ReadBuf::new(),
                reused: false,
                tally: None,
                tls: 0,
            });
        }
        std::mem::forget(listener);
        (addr, conns)
    }

    fn run(test: impl std::future::Future<Output = ()>) {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(test);
    }

    fn port_of(conn: &UpstreamConn) -> u16 {
        match &conn.stream {
            UpstreamStream::Plain(s) => s.local_addr().unwrap().port(),
            UpstreamStream::Tls(_) => unreachable!("plain connections only"),
        }
    }

    #[test]
    fn the_newest_unexpired_connection_with_the_same_tls_is_taken() {
        run(async {
            let pool = Pool::default();
            let (addr, mut conns) = connections(4).await;
            let ports: Vec<u16> = conns.iter().map(port_of).collect();
            let long = Duration::from_secs(60);
            // Oldest first: an expired one, a TLS one, two plain ones.
            conns[1].tls = 7;
            let mut conns = conns.into_iter();
            pool.put(addr, conns.next().unwrap(), Duration::ZERO, 8);
            for conn in conns {
                pool.put(addr, conn, long, 8);
            }
            assert_eq!(pool.idle(addr), 4);
            let taken = pool.take(addr, 0).unwrap();
            assert!(taken.reused);
            assert_eq!(port_of(&taken), ports[3]);
            assert_eq!(port_of(&pool.take(addr, 0).unwrap()), ports[2]);
            assert_eq!(port_of(&pool.take(addr, 7).unwrap()), ports[1]);
            // Only the expired one is left, and it is never handed out.
            assert!(pool.take(addr, 0).is_none());
            pool.sweep();
            assert_eq!(pool.idle(addr), 0);
            assert_eq!(pool.counts(), (0, 3));
        });
    }

    #[test]
    fn when_the_newest_has_expired_the_list_is_cleared_of_expired_ones() {
        run(async {
            let pool = Pool::default();
            let (addr, conns) = connections(3).await;
            let ports: Vec<u16> = conns.iter().map(port_of).collect();
            let mut conns = conns.into_iter();
            // A longer-lived one under two that expire at once (another
            // cluster's longer idle timeout on the same endpoint).
            pool.put(addr, conns.next().unwrap(), Duration::from_secs(60), 8);
            for conn in conns {
                pool.put(addr, conn, Duration::ZERO, 8);
            }
            assert_eq!(port_of(&pool.take(addr, 0).unwrap()), ports[0]);
            assert_eq!(pool.idle(addr), 0);
        });
    }

    #[test]
    fn no_more_than_max_idle_are_kept() {
        run(async {
            let pool = Pool::default();
            let (addr, conns) = connections(3).await;
            for conn in conns {
                pool.put(addr, conn, Duration::from_secs(60), 2);
            }
            assert_eq!(pool.idle(addr), 2);
        });
    }
}
