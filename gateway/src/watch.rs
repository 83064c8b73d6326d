//! Reading a plain socket when bytes arrive, through a receive posted
//! while it waits that takes a buffer from the worker's ring only then.
//!
//! Waiting for the next request, or for an upstream's response, costs
//! the connection no buffer: the receive posted on the socket (the
//! vendored monoio's `PostedRecv`, see `vendor/README.md`) takes one of
//! the driver's ring buffers when bytes arrive, and its completion brings
//! them: one operation and one wake of the task per read. (Before, a
//! multishot poll announced readability and a second operation read:
//! two completions and two wakes of the request's task per read, the
//! larger part of session 14's per-request cost over f277430.)
//!
//! A pooled upstream connection keeps one posted while it waits, so that
//! bytes arriving on it (an unasked second response, or the upstream's
//! close) are seen without a system call, and the receive that is
//! posted when it is lent is the one that reads the response.

use std::io;
use std::os::fd::AsRawFd;

use monoio::net::{PostedRecv, Received, TcpStream};

use crate::buffer::ReadBuf;

thread_local! {
    /// Reads whose bytes found the ring empty (`ringway_read_ring_empty_total`).
    static RING_EMPTY: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Reads on this worker whose bytes arrived when its buffer ring was
/// empty: each cost one more operation (the socket read the usual way).
/// Many mean more sockets receive at once than the ring has buffers.
pub(crate) fn ring_empty() -> u64 {
    RING_EMPTY.get()
}

/// The posted receive of one plain socket. Eight bytes, in every idle
/// connection.
#[derive(Debug, Default)]
pub(crate) struct WatchedSocket {
    posted: PostedRecv,
}

/// What is known of a waiting socket without asking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinceWatched {
    /// Nothing arrived since the receive was posted (as of the worker's
    /// last look at its completions: the window an epoll loop has too).
    Nothing,
    /// Bytes (or the end of the stream) arrived.
    Arrived,
    /// No receive is posted (the legacy driver, or never watched), or
    /// the kernel has not seen it yet (posted in this turn of the
    /// worker): the socket must be asked.
    Unknown,
}

impl WatchedSocket {
    /// Reads the next bytes `socket` receives into `rbuf`: the count, 0
    /// at the end of the stream. At most `max` bytes are held before a
    /// read (an `OutOfMemory` error past it); one read may add up to a
    /// ring buffer's worth (4 KiB) beyond. An `Unsupported` error when
    /// the runtime has no io_uring or its kernel no buffer rings: the
    /// caller reads its usual way instead.
    pub(crate) async fn read(
        &mut self,
        socket: &TcpStream,
        rbuf: &mut ReadBuf,
        max: usize,
    ) -> io::Result<usize> {
        let fd = socket.as_raw_fd();
        loop {
            match self.posted.recv(fd).await? {
                Received::Bytes(got) => {
                    rbuf.append(got.bytes(), max)?;
                    return Ok(got.bytes().len());
                }
                Received::End => return Ok(0),
                // Bytes arrived when the ring was empty: they wait in the
                // socket, and are read the usual way.
                // (Boxed: the rare path's read future would otherwise be
                // laid out in every waiting connection's task.)
                Received::NoBuffer => {
                    RING_EMPTY.set(RING_EMPTY.get() + 1);
                    rbuf.make_room(max)?;
                    if let Some(n) = Box::pin(rbuf.recv_ready(socket)).await? {
                        return Ok(n);
                    }
                }
            }
        }
    }

    /// Posts the receive now, if none is: a connection going idle in the
    /// pool, so that what arrives while it waits is seen. Best effort:
    /// without it [`WatchedSocket::since_watched`] answers `Unknown`.
    pub(crate) fn watch(&mut self, socket: &TcpStream) {
        let _ = self.posted.post(socket.as_raw_fd());
    }

    /// Whether anything arrived since the receive was posted.
    pub(crate) fn since_watched(&self) -> SinceWatched {
        match self.posted.since_posted() {
            Some(false) => SinceWatched::Nothing,
            Some(true) => SinceWatched::Arrived,
            None => SinceWatched::Unknown,
        }
    }

    /// Waits until something arrives on `socket`, leaving it for the next
    /// [`WatchedSocket::read`]: an upstream answering while the request's
    /// body still goes up. With a receive posted, readiness cannot be
    /// watched (the receive takes the bytes and the socket reads empty
    /// again), so its completion is; without one, readiness is.
    pub(crate) async fn arrived(&self, socket: &TcpStream) -> io::Result<()> {
        if std::future::poll_fn(|cx| self.posted.poll_arrived(cx)).await {
            return Ok(());
        }
        socket.readable(false).await
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::buffer::BUF_SIZE;

    /// Runs `test` on an io_uring runtime with timers.
    fn on_io_uring(test: impl std::future::Future<Output = ()>) {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("an io_uring runtime")
            .block_on(test);
    }

    /// A socket on the runtime and its peer, connected over loopback.
    async fn connected() -> (TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (peer, _) = listener.accept().unwrap();
        (stream, peer)
    }

    /// Kept in every idle connection (and the session's size test counts
    /// on it): a slab index and the turn it was posted in.
    #[test]
    fn a_watch_is_eight_bytes() {
        assert_eq!(size_of::<WatchedSocket>(), 8);
    }

    /// Bytes written in pieces, with waits between, all arrive; the end
    /// of the stream reads as 0; and more than a ring buffer's worth at
    /// once arrives whole over several reads.
    #[test]
    fn reads_every_piece_then_the_end() {
        on_io_uring(async {
            let (stream, mut peer) = connected().await;
            let mut watched = WatchedSocket::default();
            let mut rbuf = ReadBuf::new();
            let big: Vec<u8> = (0..BUF_SIZE + 100).map(|i| (i % 251) as u8).collect();
            peer.write_all(&big).unwrap();
            let mut got = 0;
            while got < big.len() {
                got += watched
                    .read(&stream, &mut rbuf, BUF_SIZE * 4)
                    .await
                    .unwrap();
            }
            assert_eq!(rbuf.data(), &big[..]);
            rbuf.consume(big.len());
            for piece in [&b"one"[..], b"two", b"three"] {
                peer.write_all(piece).unwrap();
                let n = watched.read(&stream, &mut rbuf, BUF_SIZE).await.unwrap();
                assert_eq!(&rbuf.data()[..n], piece);
                rbuf.consume(n);
            }
            drop(peer);
            assert_eq!(watched.read(&stream, &mut rbuf, BUF_SIZE).await.unwrap(), 0);
        });
    }

    /// Turns of the worker until `watched` has seen something arrive.
    async fn until_arrived(watched: &WatchedSocket) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while watched.since_watched() == SinceWatched::Nothing {
            assert!(
                std::time::Instant::now() < deadline,
                "the bytes were never seen"
            );
            monoio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// The pool's no-syscall look (issue 13): unknown until a receive is
    /// posted, nothing while nothing arrives, and bytes that arrive
    /// afterwards (an upstream's unasked second response) are seen once
    /// the worker has looked at its completions, and read, not lost; the
    /// legacy driver never vouches.
    #[test]
    fn a_posted_receive_sees_what_arrives_while_idle() {
        on_io_uring(async {
            let (stream, mut peer) = connected().await;
            let mut watched = WatchedSocket::default();
            let mut rbuf = ReadBuf::new();
            assert_eq!(watched.since_watched(), SinceWatched::Unknown);
            watched.watch(&stream);
            // Not yet seen by the kernel: bytes waiting already would
            // complete it only when it is submitted.
            assert_eq!(watched.since_watched(), SinceWatched::Unknown);
            // Turns of the worker with nothing sent: still nothing.
            for _ in 0..3 {
                monoio::time::sleep(std::time::Duration::from_millis(2)).await;
                assert_eq!(watched.since_watched(), SinceWatched::Nothing);
            }
            peer.write_all(b"unasked").unwrap();
            until_arrived(&watched).await;
            assert_eq!(watched.since_watched(), SinceWatched::Arrived);
            let n = watched.read(&stream, &mut rbuf, BUF_SIZE).await.unwrap();
            assert_eq!(&rbuf.data()[..n], b"unasked");
            rbuf.consume(n);
            // Read: nothing posted until the next watch.
            assert_eq!(watched.since_watched(), SinceWatched::Unknown);
            watched.watch(&stream);
            drop(peer);
            until_arrived(&watched).await;
            assert_eq!(watched.read(&stream, &mut rbuf, BUF_SIZE).await.unwrap(), 0);
        });
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("a legacy runtime")
            .block_on(async {
                let (stream, _peer) = connected().await;
                let mut watched = WatchedSocket::default();
                watched.watch(&stream);
                assert_eq!(watched.since_watched(), SinceWatched::Unknown);
            });
    }

    /// An early answer is seen arriving while the caller does something
    /// else, and is still there for the read that follows.
    #[test]
    fn arrived_leaves_the_bytes_for_the_read() {
        on_io_uring(async {
            let (stream, mut peer) = connected().await;
            let mut watched = WatchedSocket::default();
            watched.watch(&stream);
            let mut rbuf = ReadBuf::new();
            let early = monoio::time::timeout(
                std::time::Duration::from_millis(20),
                watched.arrived(&stream),
            )
            .await;
            assert!(early.is_err(), "nothing was sent yet");
            peer.write_all(b"HTTP/1.1 413 Content Too Large\r\n")
                .unwrap();
            monoio::time::timeout(std::time::Duration::from_secs(5), watched.arrived(&stream))
                .await
                .expect("the answer was seen")
                .unwrap();
            let n = watched.read(&stream, &mut rbuf, BUF_SIZE).await.unwrap();
            assert_eq!(&rbuf.data()[..n], b"HTTP/1.1 413 Content Too Large\r\n");
        });
    }

    /// More sockets receive at once than the ring has buffers: those that
    /// find it empty are read the usual way, and every byte arrives, in
    /// order, on its own socket.
    #[test]
    fn more_arrivals_than_ring_buffers_lose_nothing() {
        on_io_uring(async {
            let count = 300;
            let mut sockets = Vec::new();
            for _ in 0..count {
                let (stream, peer) = connected().await;
                let mut watched = WatchedSocket::default();
                watched.watch(&stream);
                sockets.push((stream, peer, watched));
            }
            for (i, (_, peer, _)) in sockets.iter_mut().enumerate() {
                peer.write_all(format!("socket {i} ").repeat(50).as_bytes())
                    .unwrap();
            }
            // Every receive completes (with a buffer, or finding none)
            // before any is read.
            for (_, _, watched) in &sockets {
                until_arrived(watched).await;
            }
            for (i, (stream, _, watched)) in sockets.iter_mut().enumerate() {
                let want = format!("socket {i} ").repeat(50);
                let mut rbuf = ReadBuf::new();
                while rbuf.data().len() < want.len() {
                    let n = watched.read(stream, &mut rbuf, BUF_SIZE).await.unwrap();
                    assert!(n > 0);
                }
                assert_eq!(rbuf.data(), want.as_bytes(), "socket {i}");
            }
            assert!(ring_empty() > 0, "some receives found the ring empty");
        });
    }

    /// On the legacy (epoll) driver there is no posted receive: the read
    /// answers `Unsupported` and the caller reads its usual way.
    #[test]
    fn the_legacy_driver_answers_unsupported() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("a legacy runtime");
        rt.block_on(async {
            let (stream, _peer) = connected().await;
            let mut watched = WatchedSocket::default();
            let err = watched
                .read(&stream, &mut ReadBuf::new(), BUF_SIZE)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        });
    }

    /// A watch dropped while its receive is posted cancels it: the receive
    /// holds the socket's file, so without the cancel closing the stream
    /// would never reach the peer.
    #[test]
    fn a_dropped_watch_lets_its_socket_close() {
        on_io_uring(async {
            let (stream, mut peer) = connected().await;
            let mut watched = WatchedSocket::default();
            let mut rbuf = ReadBuf::new();
            // Posted, and left waiting.
            let waited = monoio::time::timeout(
                std::time::Duration::from_millis(20),
                watched.read(&stream, &mut rbuf, BUF_SIZE),
            )
            .await;
            assert!(waited.is_err(), "nothing was sent, so nothing was read");
            drop(watched);
            drop(stream);
            peer.set_nonblocking(true).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut byte = [0u8; 1];
            loop {
                match std::io::Read::read(&mut peer, &mut byte) {
                    Ok(0) => break,
                    Ok(_) => panic!("no byte was sent"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the socket never closed"
                );
                monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        });
    }
}
