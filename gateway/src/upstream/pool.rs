//! Per-worker keep-alive pool of upstream connections, keyed by endpoint
//! address so that a reload keeps the connections of endpoints that stay.
//!
//! Owned by one worker and never shared: `RefCell`, no lock. Newest idle
//! connections are reused first (they are the least likely to have been
//! closed by the upstream); expired ones are dropped when met and by a
//! periodic sweep.
//!
//! A connection comes back through one door, [`Pool::give_back`], which
//! keeps it only when it is in step: its response was read to the framed
//! end, both sides keep it open, and no byte past that response has
//! arrived. A connection that turns readable while idle (a broken or
//! hostile upstream sending unasked bytes, or a close) is never handed
//! out: [`Pool::take`] looks before it lends, and closes such a
//! connection, as nginx, HAProxy and Envoy do.
//!
//! The look costs no system call when the connection's readiness watch
//! can answer (a plain connection whose response was read through it):
//! no completion reaped since that read means nothing arrived, as of the
//! worker's last look at its completion queue, which is the window an
//! epoll loop such as nginx's has. Otherwise (TLS, the legacy driver, a
//! body read another way, or a completion waiting) a one-byte
//! `MSG_PEEK` asks the socket.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ringway_codec::http1::framing::Framing;
use rustc_hash::FxHashMap;

use super::conn::UpstreamConn;
use super::target::ReuseKey;
use crate::watch::SinceWatched;

/// How the last exchange on an upstream connection ended, as far as
/// reusing the connection goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finished {
    /// The response's framing: a close-delimited body ends the connection.
    pub framing: Framing,
    /// The response was read to its framed end.
    pub complete: bool,
    /// The upstream did not ask to close (`Connection: close`, HTTP/1.0).
    pub keep_alive: bool,
    /// The whole request reached the upstream (one that stopped reading a
    /// body early may still be waiting for the rest).
    pub request_sent: bool,
}

impl Finished {
    /// True when the connection may carry another request.
    fn reusable(&self) -> bool {
        self.complete && self.keep_alive && self.request_sent && self.framing != Framing::UntilClose
    }
}

/// True when nothing is waiting to be read on `fd` and the peer has not
/// closed: a non-blocking one-byte `MSG_PEEK` says `EAGAIN`.
fn peek_finds_nothing(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: `fd` is the open socket of a connection this pool owns, and
    // the buffer is one valid byte; MSG_PEEK leaves the data in place.
    let n = unsafe {
        libc::recv(
            fd,
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

#[derive(Debug)]
struct Idle {
    conn: UpstreamConn,
    expires: Instant,
}

/// The idle upstream connections of one worker.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Keyed by endpoint address: a key from the configuration, never
    /// from a client, so a fast hash (not SipHash) is safe.
    idle: RefCell<FxHashMap<SocketAddr, Vec<Idle>>>,
    opened: Cell<u64>,
    reused: Cell<u64>,
    /// Connections closed instead of kept or lent because they were out
    /// of step (unread bytes, or readable while idle).
    dirty: Cell<u64>,
    /// Every endpoint address of the configuration served, once a reload
    /// has set it: a connection to any other (an endpoint that left while
    /// the connection was busy) is closed when given back, not kept.
    endpoints: RefCell<Option<rustc_hash::FxHashSet<SocketAddr>>>,
}

impl Pool {
    /// An idle connection to `addr`, if one is left that has not expired
    /// and has received nothing while idle. One that has (unasked bytes,
    /// or the upstream's close) is closed, and the next one looked at.
    pub(crate) fn take(&self, addr: SocketAddr, key: ReuseKey) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let now = crate::clock::now();
        loop {
            let mut at = list.iter().rposition(|c| c.conn.key == key)?;
            if list[at].expires <= now {
                // The newest is expired, so most likely all are: the only
                // case that pays for a pass over the list (the sweep does
                // the rest).
                list.retain(|c| c.expires > now);
                at = list.iter().rposition(|c| c.conn.key == key)?;
            }
            let mut conn = list.remove(at).conn;
            // The posted receive answers when one is posted; else the
            // socket is asked.
            let arrived = match conn.watched.since_watched() {
                SinceWatched::Nothing => false,
                SinceWatched::Arrived => true,
                SinceWatched::Unknown => !peek_finds_nothing(conn.fd),
            };
            if arrived {
                self.dirty.set(self.dirty.get() + 1);
                continue;
            }
            self.reused.set(self.reused.get() + 1);
            conn.reused = true;
            return Some(conn);
        }
    }

    /// Counts a freshly opened connection.
    pub(crate) fn note_opened(&self) {
        self.opened.set(self.opened.get() + 1);
    }

    /// The one way back into the pool: keeps `conn` for `idle_timeout`
    /// when `finished` says it is in step and nothing past the response
    /// has arrived, unless `max_idle` are kept already; otherwise drops
    /// (closes) it. True when it was kept.
    pub(crate) fn give_back(
        &self,
        addr: SocketAddr,
        mut conn: UpstreamConn,
        finished: Finished,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> bool {
        if !finished.reusable() {
            return false;
        }
        // Bytes after the framed end, read with it: a second response
        // nobody asked for. Kept, it would be served to the next request
        // sent on this connection. (Bytes that arrive later are caught by
        // `take`, which looks before it lends: one look per reuse, not
        // two.)
        if !conn.rbuf.is_empty() {
            self.dirty.set(self.dirty.get() + 1);
            return false;
        }
        conn.reused = false;
        // A pooled connection holds no read buffer while it waits, and
        // has a receive posted that sees what arrives meanwhile (and
        // reads the next response).
        conn.rbuf.release();
        conn.watch_idle();
        self.put(addr, conn, idle_timeout, max_idle)
    }

    /// Keeps `conn` for reuse for `idle_timeout`, unless `max_idle` are kept
    /// already.
    fn put(
        &self,
        addr: SocketAddr,
        conn: UpstreamConn,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> bool {
        if let Some(endpoints) = &*self.endpoints.borrow()
            && !endpoints.contains(&addr)
        {
            return false;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= max_idle {
            return false;
        }
        list.push(Idle {
            conn,
            expires: crate::clock::now() + idle_timeout,
        });
        true
    }

    /// Drops expired idle connections, and those something arrived on
    /// while idle (unasked bytes, or the upstream's close): they would
    /// never be lent, and unasked bytes hold one of the worker's ring
    /// buffers until the connection goes.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        let mut dirty = 0;
        for list in idle.values_mut() {
            list.retain(|c| {
                if c.conn.watched.since_watched() == SinceWatched::Arrived {
                    dirty += 1;
                    return false;
                }
                c.expires > now
            });
        }
        idle.retain(|_, list| !list.is_empty());
        self.dirty.set(self.dirty.get() + dirty);
    }

    /// Closes the idle connections of endpoints not in `kept` (they left
    /// every cluster: a reload, a DNS answer, an endpoints file).
    pub(crate) fn keep_only(&self, kept: &std::collections::HashSet<SocketAddr>) {
        self.idle.borrow_mut().retain(|addr, _| kept.contains(addr));
        *self.endpoints.borrow_mut() = Some(kept.iter().copied().collect());
    }

    /// Idle connections kept for `addr` now.
    pub(crate) fn idle(&self, addr: SocketAddr) -> usize {
        self.idle.borrow().get(&addr).map_or(0, Vec::len)
    }

    /// Connections opened and reused so far, for metrics and tests.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.opened.get(), self.reused.get())
    }

    /// Connections closed because they were out of step.
    pub(crate) fn dirty(&self) -> u64 {
        self.dirty.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::ReadBuf;
    use crate::upstream::conn::UpstreamStream;
    use monoio::net::TcpStream;

    const PLAIN: ReuseKey = ReuseKey {
        tls: 0,
        origin: None,
    };

    /// `n` plain connections to a loopback listener, and the listener's
    /// address (the listener is leaked: the connections only sit idle).
    async fn connections(n: usize) -> (SocketAddr, Vec<UpstreamConn>) {
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(plain_conn(TcpStream::connect(addr).await.unwrap()));
        }
        std::mem::forget(listener);
        (addr, conns)
    }

    /// A plain upstream connection over `stream`, as `conn::open` makes.
    fn plain_conn(stream: TcpStream) -> UpstreamConn {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
        UpstreamConn {
            stream: UpstreamStream::Plain(stream),
            rbuf: ReadBuf::new(),
            reused: false,
            _tally: None,
            key: PLAIN,
            fd,
            watched: crate::watch::WatchedSocket::default(),
        }
    }

    /// The sweep closes an idle connection that received unasked bytes
    /// (seen by its posted receive, no system call) and keeps the quiet
    /// one, which is still lent.
    #[test]
    fn the_sweep_closes_idle_connections_something_arrived_on() {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("an io_uring runtime")
            .block_on(async {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let pool = Pool::default();
                let mut peers = Vec::new();
                for _ in 0..2 {
                    let mut conn = plain_conn(TcpStream::connect(addr).await.unwrap());
                    peers.push(listener.accept().unwrap().0);
                    conn.watch_idle();
                    assert!(pool.put(addr, conn, Duration::from_secs(60), 8));
                }
                std::io::Write::write_all(&mut peers[0], b"HTTP/1.1 200 OK\r\n").unwrap();
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    pool.sweep();
                    if pool.idle(addr) == 1 {
                        break;
                    }
                    assert!(Instant::now() < deadline, "the bytes were never seen");
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                assert_eq!(pool.dirty(), 1);
                assert!(pool.take(addr, PLAIN).is_some());
            });
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
    fn the_newest_unexpired_connection_with_the_same_key_is_taken() {
        run(async {
            let pool = Pool::default();
            let (addr, mut conns) = connections(4).await;
            let ports: Vec<u16> = conns.iter().map(port_of).collect();
            let long = Duration::from_secs(60);
            // Oldest first: an expired one, a TLS one, two plain ones.
            conns[1].key = ReuseKey {
                tls: 7,
                origin: None,
            };
            let mut conns = conns.into_iter();
            pool.put(addr, conns.next().unwrap(), Duration::ZERO, 8);
            for conn in conns {
                pool.put(addr, conn, long, 8);
            }
            assert_eq!(pool.idle(addr), 4);
            let taken = pool.take(addr, PLAIN).unwrap();
            assert!(taken.reused);
            assert_eq!(port_of(&taken), ports[3]);
            assert_eq!(port_of(&pool.take(addr, PLAIN).unwrap()), ports[2]);
            assert_eq!(
                port_of(
                    &pool
                        .take(
                            addr,
                            ReuseKey {
                                tls: 7,
                                origin: None
                            }
                        )
                        .unwrap()
                ),
                ports[1]
            );
            // Only the expired one is left, and it is never handed out.
            assert!(pool.take(addr, PLAIN).is_none());
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
            assert_eq!(port_of(&pool.take(addr, PLAIN).unwrap()), ports[0]);
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
