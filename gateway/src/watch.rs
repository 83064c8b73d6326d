//! Reading a plain socket when it turns readable, through one multishot
//! io_uring poll armed for the socket's life.
//!
//! Waiting for the next request, or for an upstream's response, used to
//! arm a poll (or post a read, which arms one inside the kernel) per wait
//! and tear it down when it fired: at a low request rate, where every
//! request is its own turn of the worker, that was a measurable part of
//! the kernel's work per request. A [`WatchedSocket`] arms one multishot
//! `POLL_ADD` the first time it waits (the vendored monoio's
//! `ReadinessWatch`, see `vendor/README.md`), and each wait after that
//! consumes the completions the kernel posted since the last; the bytes
//! are then read with a plain non-blocking `recv(2)`.
//!
//! A completion says bytes arrived at some point since the last wait, not
//! that they are still there (a read since may have taken them): a read
//! that finds nothing waits again. The one case where bytes could be left
//! with their completion used up is a read that filled its buffer; the
//! next read then goes first, before any wait.

use std::io;
use std::os::fd::AsRawFd;

use monoio::net::{ReadinessWatch, TcpStream};

use crate::buffer::ReadBuf;

/// The multishot watch of one plain socket, armed on first use. Eight
/// bytes, in every idle connection.
#[derive(Debug, Default)]
pub(crate) struct WatchedSocket {
    watch: ReadinessWatch,
    /// The last read filled its buffer: more may be waiting unannounced.
    more_unread: bool,
}

impl WatchedSocket {
    /// Reads the next bytes `socket` receives into `rbuf` (growing it up
    /// to `max` bytes held): the count, 0 at the end of the stream. An
    /// `Unsupported` error when the runtime has no io_uring (the legacy
    /// driver): the caller reads its usual way instead.
    pub(crate) async fn read(
        &mut self,
        socket: &TcpStream,
        rbuf: &mut ReadBuf,
        max: usize,
    ) -> io::Result<usize> {
        let fd = socket.as_raw_fd();
        loop {
            if !self.more_unread {
                self.watch.readable(fd).await?;
            }
            rbuf.make_room(max)?;
            match rbuf.recv_ready(socket).await? {
                Some(n) => {
                    self.more_unread = rbuf.is_full();
                    return Ok(n);
                }
                None => self.more_unread = false,
            }
        }
    }

    /// True when nothing arrived on the socket since the last read, as of
    /// the worker's last look at its completions: the watch is armed, no
    /// completion came since the last wait (every wait is followed by a
    /// read), and that read did not fill its buffer. False whenever that
    /// cannot be known (never armed, the legacy driver, or reads made
    /// other ways since, whose bytes left their completions unconsumed):
    /// the caller then asks the socket.
    pub(crate) fn is_quiet(&self) -> bool {
        !self.more_unread && self.watch.is_quiet()
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
    /// on it): a slab index and a flag, nothing more.
    #[test]
    fn a_watch_is_eight_bytes() {
        assert_eq!(size_of::<WatchedSocket>(), 8);
    }

    /// Bytes written in pieces, with waits between, all arrive; the end
    /// of the stream reads as 0; and a read that fills its buffer does
    /// not strand what is left behind it (the case a completion cannot
    /// announce twice).
    #[test]
    fn reads_every_piece_then_the_end() {
        on_io_uring(async {
            let (stream, mut peer) = connected().await;
            let mut watched = WatchedSocket::default();
            let mut rbuf = ReadBuf::new();
            // More than a buffer's worth at once: two reads, one wait.
            let big = vec![b'x'; BUF_SIZE + 100];
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

    /// The pool's no-syscall look (issue 13): quiet only while armed with
    /// nothing reaped since the last read; bytes that arrive afterwards
    /// (an upstream's unasked second response) make it say so once the
    /// worker has looked at its completions; a read that filled its
    /// buffer is never vouched for; the legacy driver never vouches.
    #[test]
    fn quiet_means_nothing_arrived_since_the_last_read() {
        on_io_uring(async {
            let (stream, mut peer) = connected().await;
            let mut watched = WatchedSocket::default();
            let mut rbuf = ReadBuf::new();
            assert!(!watched.is_quiet(), "never armed: nothing to vouch with");
            peer.write_all(b"response").unwrap();
            let n = watched.read(&stream, &mut rbuf, BUF_SIZE).await.unwrap();
            rbuf.consume(n);
            assert!(watched.is_quiet());
            peer.write_all(b"unasked").unwrap();
            // Turns of the worker until it reaps the poll's completion.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while watched.is_quiet() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the unasked bytes were never seen"
                );
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let n = watched.read(&stream, &mut rbuf, BUF_SIZE).await.unwrap();
            assert_eq!(&rbuf.data()[..n], b"unasked");
            rbuf.consume(n);
            assert!(watched.is_quiet());
            // A read that fills its buffer may leave bytes unannounced.
            let sent = 3 * BUF_SIZE;
            peer.write_all(&vec![b'x'; sent]).unwrap();
            let mut got = 0;
            let mut filled = false;
            while got < sent && !filled {
                let n = watched.read(&stream, &mut rbuf, BUF_SIZE).await.unwrap();
                filled = rbuf.is_full();
                rbuf.consume(n);
                got += n;
            }
            assert!(filled, "three buffers' worth sent at once fill a read");
            assert!(!watched.is_quiet());
        });
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("a legacy runtime")
            .block_on(async {
                assert!(!WatchedSocket::default().is_quiet());
            });
    }

    /// On the legacy (epoll) driver there is no multishot poll: the read
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

    /// A watch dropped while its poll is armed cancels it: the poll holds
    /// the socket's file, so without the cancel closing the stream would
    /// never reach the peer.
    #[test]
    fn a_dropped_watch_lets_its_socket_close() {
        on_io_uring(async {
            let (stream, mut peer) = connected().await;
            let mut watched = WatchedSocket::default();
            let mut rbuf = ReadBuf::new();
            // Armed, and left waiting.
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
