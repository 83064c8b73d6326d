//! About 880 lines, kept whole: the plain and TLS streams share one
//! reader and one writer (readiness, reads in flight, gathering,
//! sealing), whose rules one file keeps in view.
//!
//! Byte streams for the h2 crate, which speaks tokio's I/O traits, and
//! (in [`rent`]) the TLS stream of HTTP/1.1 client connections too.
//!
//! No tokio runtime is involved: reads go through [`Reader`] on the
//! socket's read half (readiness from io_uring, then a read that does not
//! wait: a plain `recv(2)` straight into the reader's buffer, or TLS
//! records through the ring, so a quiet connection holds no read
//! buffer), and writes through [`Writer`] on the write half, which gathers
//! what h2 writes across its flushes and sends it in one write; its
//! buffers are the worker's spares, held only while bytes wait.
//! TLS is layered in between over the rustls connection the gateway's own
//! handshake produced: monoio-rustls's stream under the compat wrapper
//! panics when h2 reads and writes at once (see STACK-NOTES), and
//! tokio-rustls cannot adopt a finished handshake.

use std::future::Future;
use std::io::{self, BufRead, Write};
use std::ops::DerefMut;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::{ReadinessWatch, TcpStream};
use rustls::ConnectionCommon;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::buffer::{self, BUF_SIZE, recv_now, send_now, send_vectored_now};

mod rent;

/// A stream that first replays bytes already read from it (the part of
/// the h2c preface that was read while looking for an HTTP/1.1 request).
pub(crate) struct Replay<T> {
    replay: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> std::fmt::Debug for Replay<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").finish_non_exhaustive()
    }
}

impl<T> Replay<T> {
    /// `inner`, with `replay` read from it first.
    pub(crate) fn new(replay: Vec<u8>, inner: T) -> Replay<T> {
        Replay {
            replay,
            at: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Replay<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.replay.len() {
            let n = (this.replay.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.replay[this.at..this.at + n]);
            this.at += n;
            if this.at == this.replay.len() {
                this.replay = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Replay<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The read side of a socket for h2: no buffer of its own. It waits for
/// readability with one multishot io_uring poll armed for the socket's
/// life (see `crate::watch`; nothing posted while the connection is
/// quiet) and then reads without waiting: into a caller's buffer with a
/// plain non-blocking `recv(2)`, into a staging buffer (TLS records)
/// through the ring, submitted with the worker's other operations.
struct Reader {
    /// The read half, kept so the socket stays open; its stream is shared
    /// with the operations in flight.
    half: OwnedReadHalf<TcpStream>,
    /// The socket's multishot readability poll.
    watch: ReadinessWatch,
    /// The last read found the socket drained (it returned less than
    /// asked): the next one waits for readiness first instead of trying
    /// a `recv` that would most likely find nothing. A read that filled
    /// what it asked for goes again before any wait: the completion that
    /// announced what is left may have been used up already.
    drained: bool,
    /// `pending` is a staging read: the socket's next bytes are in it, so
    /// the stream counts as readable.
    reading: bool,
    /// What is in flight, one at a time: a staging read through the ring,
    /// or the readiness wait of the legacy (epoll) driver, which has no
    /// multishot polls. One slot for both keeps a TLS session in its
    /// size class (see `downstream::accept`'s size test).
    pending: Option<Pin<Box<dyn Future<Output = Pending>>>>,
}

/// What the reader's operation in flight came back with.
enum Pending {
    /// The legacy driver's readiness wait.
    Readable(io::Result<()>),
    /// A staging read: its count (`None` when the socket had nothing) and
    /// the buffer, back.
    Read(io::Result<Option<usize>>, buffer::ReadBuf),
}

impl Reader {
    fn new(half: OwnedReadHalf<TcpStream>) -> Reader {
        Reader {
            half,
            watch: ReadinessWatch::new(),
            drained: false,
            reading: false,
            pending: None,
        }
    }

    /// The socket. Not kept in a field of its own: every TLS connection
    /// would pay 8 bytes for it (its session's size class, see
    /// `downstream::accept`'s size test).
    fn fd(&self) -> RawFd {
        self.stream().as_raw_fd()
    }

    fn stream(&self) -> &TcpStream {
        // SAFETY: a shared borrow that only reads the descriptor, or
        // clones it into an operation; see `buffer::WaitReadable` for the
        // halves.
        unsafe { &*self.half.0.get() }
    }

    /// Reads with `recv` (given the socket; `Ok(None)` when it has nothing
    /// now) once the socket is readable: the count, 0 at the end of the
    /// stream. `want` is what `recv` asked for, to tell a drained socket.
    /// Never while a staging read is in flight (only TLS makes those, and
    /// it reads only through [`Reader::poll_recv_staged`]).
    fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
        mut recv: impl FnMut(RawFd) -> io::Result<Option<usize>>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.drained {
                ready!(self.poll_wait(cx))?;
                self.drained = false;
            }
            if let Some(n) = recv(self.fd())? {
                self.drained = n < want;
                return Poll::Ready(Ok(n));
            }
            self.drained = true;
        }
    }

    /// Reads into `staged` once the socket is readable, through the ring:
    /// the count, 0 at the end of the stream. The buffer travels with the
    /// read and is back in `staged` when this is ready.
    fn poll_recv_staged(
        &mut self,
        cx: &mut Context<'_>,
        staged: &mut buffer::ReadBuf,
    ) -> Poll<io::Result<usize>> {
        loop {
            if let Some(pending) = self.pending.as_mut() {
                let done = ready!(pending.as_mut().poll(cx));
                self.pending = None;
                self.reading = false;
                match done {
                    Pending::Read(read, buf) => {
                        *staged = buf;
                        if let Some(n) = read? {
                            self.drained = !staged.is_full();
                            return Poll::Ready(Ok(n));
                        }
                        self.drained = true;
                        continue;
                    }
                    Pending::Readable(ready) => {
                        ready?;
                        self.drained = false;
                    }
                }
            }
            if self.drained {
                ready!(self.poll_wait(cx))?;
                self.drained = false;
            }
            let read = std::mem::take(staged).recv_ready_owned(self.stream());
            self.pending = Some(Box::pin(async move {
                let (read, buf) = read.await;
                Pending::Read(read, buf)
            }));
            self.reading = true;
        }
    }

    /// Ready when the socket turned readable since the last wait.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_none() {
            let fd = self.fd();
            match self.watch.poll_readable(fd, cx) {
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Unsupported => {}
                watched => return watched,
            }
            let stream = self.half.0.clone();
            self.pending = Some(Box::pin(async move {
                // SAFETY: a shared borrow for the wait, which uses only the
                // descriptor; see `buffer::WaitReadable` for the halves.
                let stream = unsafe { &*stream.get() };
                Pending::Readable(stream.readable(false).await)
            }));
        }
        let done = ready!(self.pending.as_mut().expect("a wait").as_mut().poll(cx));
        self.pending = None;
        match done {
            Pending::Readable(ready) => Poll::Ready(ready),
            // Callers never wait with a staging read in flight: a
            // stream with one counts as readable (`reading`).
            Pending::Read(..) => Poll::Ready(Err(io::Error::other(
                "a staging read was in flight during a readiness wait",
            ))),
        }
    }
}

/// TLS over an io_uring socket with an established rustls connection
/// (server or client side), for the h2 crate.
///
/// Reads go through monoio-compat's wrapper on the socket's read half.
/// Writes are this type's own: plaintext is gathered until h2 flushes (h2
/// writes a frame head of 9 bytes and its payload separately; encrypting
/// each write would make a TLS record of each), then rustls seals it into
/// full-sized records, and all the records of a flush go to the socket in
/// one owned-buffer write.
pub(crate) struct TlsIo<C> {
    read: Reader,
    /// Records read from the socket and not yet taken by rustls (a spare
    /// buffer, held only while it holds bytes).
    staged: buffer::ReadBuf,
    conn: C,
    /// Plaintext written and not yet handed to rustls (a spare buffer,
    /// held only while it holds bytes).
    plain: Vec<u8>,
    /// Sealed records on their way to the socket.
    out: Writer,
}

/// The write side of a socket for h2: bytes gathered in `pending` go out
/// together when a flush writes (h2 writes a frame's head and payload
/// apart, and flushes after each chained payload: see
/// [`Writer::poll_gather`]), with a plain `send(2)` and an owned-buffer
/// io_uring write for what the socket does not take.
struct Writer {
    /// Bytes waiting for the socket.
    pending: Vec<u8>,
    /// The write half, while no write is in flight.
    half: Option<OwnedWriteHalf<TcpStream>>,
    /// The socket under `half`, for plain sends (see [`Writer::poll_write_out`]).
    fd: RawFd,
    /// What the write side waits on, if anything. One field for both
    /// kinds: a TLS session's size is a mimalloc size class it fits.
    busy: Option<Busy>,
    /// Flushes are gathered until the worker's other ready tasks have run
    /// (a server connection; see [`Writer::poll_gather`]).
    gather: bool,
    /// While bytes are gathered: the connection task's poll and the
    /// worker's stream activity when the flush was last put off, and how
    /// many times it was.
    held: Option<(u64, u64, u32)>,
}

type WriteDone = (io::Result<()>, OwnedWriteHalf<TcpStream>, Vec<u8>);

/// What a [`Writer`] waits on.
enum Busy {
    /// An owned-buffer write in flight; it gives back the half and the
    /// buffer.
    Writing(Pin<Box<dyn Future<Output = WriteDone>>>),
    /// Room in a full socket (TLS records wait in rustls meanwhile).
    Room(Pin<Box<dyn Future<Output = io::Result<()>>>>),
}

impl Writer {
    fn new(half: OwnedWriteHalf<TcpStream>, fd: RawFd) -> Writer {
        Writer {
            pending: Vec::new(),
            half: Some(half),
            fd,
            busy: None,
            gather: false,
            held: None,
        }
    }

    /// Whether a flush writes now (`Ready(true)`) or reports done with the
    /// bytes still gathered (`Ready(false)`; the task is woken to flush
    /// again after the worker's other ready tasks).
    ///
    /// h2 flushes after every DATA frame whose payload it chains (1 KiB
    /// and up) and once more when it has written all it had. Written at
    /// once, each of a turn's responses would leave on its own; gathered,
    /// the streams answered in the same turn of the event loop leave in
    /// one write (and, over TLS, in full records). The bytes wait while
    /// the connection task is in the same poll, and after that while the
    /// worker's stream tasks are still running (at most
    /// [`MAX_GATHER_YIELDS`] times).
    ///
    /// Without `gather` (connections to upstreams, whose task is not
    /// counted), the flush lets the other ready tasks run once and writes.
    fn poll_gather(&mut self, cx: &mut Context<'_>, has_data: bool) -> Poll<bool> {
        if !has_data || matches!(self.busy, Some(Busy::Writing(_))) {
            self.held = None;
            return Poll::Ready(true);
        }
        let (poll, busy) = (connection_polls(), stream_polls());
        let yields = match self.held {
            Some((seen, _, _)) if self.gather && seen == poll => return Poll::Ready(false),
            Some((_, before, yields))
                if !self.gather || before == busy || yields >= MAX_GATHER_YIELDS =>
            {
                self.held = None;
                return Poll::Ready(true);
            }
            Some((_, _, yields)) => yields + 1,
            None => 0,
        };
        self.held = Some((poll, busy, yields));
        cx.waker().wake_by_ref();
        if self.gather {
            Poll::Ready(false)
        } else {
            Poll::Pending
        }
    }

    /// Ready once the write in flight is done; the error it met, if any.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(Busy::Writing(writing)) = &mut self.busy else {
            return Poll::Ready(Ok(()));
        };
        let (result, half, mut buf) = ready!(writing.as_mut().poll(cx));
        self.busy = None;
        self.half = Some(half);
        buffer::recycle(&mut buf);
        Poll::Ready(result)
    }

    /// Writes everything pending; ready when it is all on the socket.
    ///
    /// A plain non-blocking send first, and an io_uring write only for
    /// what the socket did not take. An io_uring write leaves at the
    /// worker's next submission and is seen complete only a turn later;
    /// until then the next flush of the connection waits, and responses
    /// made ready meanwhile miss that turn's submission: a turn more per
    /// response than the worker needs, and fewer, smaller writes per turn.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_idle(cx))?;
            if self.pending.is_empty() {
                buffer::release(&mut self.pending);
                return Poll::Ready(Ok(()));
            }
            if self.half.is_none() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            let sent = send_now(self.fd, &self.pending)?;
            self.pending.drain(..sent);
            if self.pending.is_empty() {
                buffer::release(&mut self.pending);
                return Poll::Ready(Ok(()));
            }
            let Some(mut half) = self.half.take() else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            let buf = std::mem::take(&mut self.pending);
            self.busy = Some(Busy::Writing(Box::pin(async move {
                let (result, buf) = half.write_all(buf).await;
                (result.map(|_| ()), half, buf)
            })));
        }
    }

    /// Ready once the socket has room for more (io_uring `POLL_ADD`).
    fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(half) = &self.half else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        if !matches!(self.busy, Some(Busy::Room(_))) {
            let stream = half.0.clone();
            self.busy = Some(Busy::Room(Box::pin(async move {
                // SAFETY: a shared borrow for the wait, which uses only the
                // descriptor; see `buffer::WaitReadable` for the halves.
                let stream = unsafe { &*stream.get() };
                stream.writable(false).await
            })));
        }
        let Some(Busy::Room(waiting)) = &mut self.busy else {
            unreachable!("set just above");
        };
        let result = ready!(waiting.as_mut().poll(cx));
        self.busy = None;
        Poll::Ready(result)
    }

    /// Half-closes the socket once everything pending is written.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_write_out(cx))?;
        if let Some(half) = &mut self.half {
            // A plain shutdown(2): it does not wait. Best effort, the peer
            // may be gone already.
            let mut shutdown = std::pin::pin!(half.shutdown());
            let _ = shutdown.as_mut().poll(cx);
        }
        Poll::Ready(Ok(()))
    }
}

/// A plain socket for h2 (h2c): reads through monoio-compat's wrapper,
/// writes gathered until a flush.
pub(crate) struct PlainIo {
    read: Reader,
    /// Bytes read ahead for a caller that asked for little (see
    /// [`SMALL_READ`]); a spare buffer held only while it holds bytes.
    staged: buffer::ReadBuf,
    out: Writer,
}

/// A read asking for less than this goes through a staging buffer, not
/// straight to the socket: after an idle connection gave its codec buffer
/// back, h2's framing regrows it from 8 bytes, doubling, and each of those
/// reads would otherwise be a system call.
const SMALL_READ: usize = 4096;

impl std::fmt::Debug for PlainIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainIo").finish_non_exhaustive()
    }
}

impl PlainIo {
    /// Wraps a TCP stream.
    pub(crate) fn new(io: TcpStream) -> PlainIo {
        let fd = io.as_raw_fd();
        let (read, write) = io.into_split();
        PlainIo {
            read: Reader::new(read),
            staged: buffer::ReadBuf::new(),
            out: Writer::new(write, fd),
        }
    }
}

impl PlainIo {
    /// Gathers flushes (a server connection, whose task counts its polls:
    /// see [`Writer::poll_gather`]).
    pub(crate) fn gathering(mut self) -> PlainIo {
        self.out.gather = true;
        self
    }
}

impl AsyncRead for PlainIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining();
        if this.staged.is_empty() && want >= SMALL_READ {
            // SAFETY: recv(2) only writes initialized bytes into the
            // unfilled part, and exactly the count it returns is marked
            // filled.
            let unfilled = unsafe { buf.unfilled_mut() };
            let n = ready!(this.read.poll_recv(cx, want, |fd| {
                recv_now(fd, unfilled.as_mut_ptr().cast(), unfilled.len())
            }))?;
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        if this.staged.is_empty() {
            let staged = &mut this.staged;
            if ready!(this.read.poll_recv(cx, BUF_SIZE, |fd| staged.recv_now(fd)))? == 0 {
                this.staged.release();
                return Poll::Ready(Ok(()));
            }
        }
        let n = this.staged.data().len().min(want);
        buf.put_slice(&this.staged.data()[..n]);
        this.staged.consume(n);
        this.staged.release();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for PlainIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let out = &mut self.get_mut().out;
        if out.pending.len() >= PLAIN_BATCH {
            ready!(out.poll_write_out(cx))?;
        }
        let room = PLAIN_BATCH.saturating_sub(out.pending.len()).max(1);
        let take = buf.len().min(room);
        buffer::ensure_read_sized(&mut out.pending);
        out.pending.extend_from_slice(&buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = &mut self.get_mut().out;
        let has_data = !out.pending.is_empty();
        if !ready!(out.poll_gather(cx, has_data)) {
            return Poll::Ready(Ok(()));
        }
        out.poll_write_out(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().out.poll_close(cx)
    }
}

thread_local! {
    /// Polls of this worker's HTTP/2 server connection tasks and of their
    /// stream tasks (see [`Writer::poll_gather`]).
    static POLLS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// The tasks whose polls a worker counts (see [`Writer::poll_gather`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Polled {
    /// A server connection's task: its `io` gathers flushes.
    Connection,
    /// A stream's task.
    Stream,
}

/// `future`, boxed, counting each of its polls as `kind`, and reading the
/// clock at most once per poll (see [`crate::clock::per_poll`]).
pub(crate) fn counting_polls<F: Future>(
    kind: Polled,
    future: F,
) -> impl Future<Output = F::Output> {
    let mut future = Box::pin(future);
    std::future::poll_fn(move |cx| {
        let _clock = crate::clock::ThisPoll::enter();
        POLLS.with(|p| {
            let (connections, streams) = p.get();
            p.set(match kind {
                Polled::Connection => (connections.wrapping_add(1), streams),
                Polled::Stream => (connections, streams.wrapping_add(1)),
            });
        });
        future.as_mut().poll(cx)
    })
}

fn connection_polls() -> u64 {
    POLLS.with(|p| p.get().0)
}

fn stream_polls() -> u64 {
    POLLS.with(|p| p.get().1)
}

/// At most this many times a flush is put off, however busy the worker.
const MAX_GATHER_YIELDS: u32 = 64;

/// Plaintext gathered before it goes to rustls regardless of a flush.
const PLAIN_BATCH: usize = 64 * 1024;

/// A full TLS record's plaintext (rustls's default fragment size).
const RECORD: usize = 16 * 1024;

/// Writes from this size up are sealed from the caller's buffer (see
/// `TlsIo::seal_large`); smaller ones are gathered.
const LARGE_WRITE: usize = 4 * 1024;

impl<C, D> TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    /// Seals a large write (a DATA frame's payload) from `buf` itself,
    /// after the plaintext gathered before it, up to the last full record:
    /// only the tail that would make a short record is gathered. h2 writes
    /// a frame's head (with the payload's first KiB, which it copies to
    /// make the head's write worth a call) and the rest of its payload
    /// apart; gathering the rest too copied every byte of a body once
    /// more, and sent it 64 KiB at a time (`PLAIN_BATCH`) instead of in
    /// the sealed batches a turn makes. `None` when `buf` is gathered.
    fn seal_large(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        let gathered = self.plain.len();
        let whole = (gathered + buf.len()) / RECORD * RECORD;
        if buf.len() < LARGE_WRITE || whole <= gathered {
            return Ok(None);
        }
        let direct = whole - gathered;
        let parts = [
            io::IoSlice::new(&self.plain),
            io::IoSlice::new(&buf[..direct]),
        ];
        let parts = if gathered == 0 {
            &parts[1..]
        } else {
            &parts[..]
        };
        let n = self.conn.writer().write_vectored(parts)?;
        if n < gathered {
            // rustls had room for part of what was gathered only: the
            // rest stays gathered, and `buf` goes the usual way.
            self.plain.drain(..n);
            return Ok(None);
        }
        self.plain.clear();
        Ok(Some(n - gathered).filter(|&taken| taken > 0))
    }
}

impl<C> std::fmt::Debug for TlsIo<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIo").finish_non_exhaustive()
    }
}

/// How much sealed output rustls may hold before a write waits for the
/// socket: a body moves in 256 KiB pieces (see `buffer::BODY_BUF_SIZE`),
/// sealed and sent in one go rather than in four.
const SEALED_LIMIT: usize = 256 * 1024;

impl<C, D> TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    /// Wraps a stream whose handshake `conn` has completed.
    pub(crate) fn new(io: TcpStream, mut conn: C) -> TlsIo<C> {
        conn.set_buffer_limit(Some(SEALED_LIMIT));
        let fd = io.as_raw_fd();
        let (read, write) = io.into_split();
        TlsIo {
            read: Reader::new(read),
            staged: buffer::ReadBuf::new(),
            conn,
            plain: Vec::new(),
            out: Writer::new(write, fd),
        }
    }
}

impl<C> TlsIo<C> {
    /// Gathers flushes (a server connection, whose task counts its polls:
    /// see [`Writer::poll_gather`]).
    pub(crate) fn gathering(mut self) -> TlsIo<C> {
        self.out.gather = true;
        self
    }
}

/// rustls's writes to the socket, as far as it takes them now (see
/// [`send_vectored_now`]): `Ok(0)` when it has no room.
struct SendNow(RawFd);

impl Write for SendNow {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_now(self.0, buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        send_vectored_now(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<C, D> TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    /// Sends every record rustls has sealed; ready when all of them are
    /// written to the socket.
    fn poll_send_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.out.poll_idle(cx))?;
        loop {
            // Straight from rustls's buffers while the socket takes them:
            // copying the records out first (into an owned io_uring
            // write) cost as much as a copy of every byte sent.
            let mut socket = SendNow(self.out.fd);
            while self.conn.wants_write() && self.conn.write_tls(&mut socket)? > 0 {}
            if !self.conn.wants_write() {
                return Poll::Ready(Ok(()));
            }
            // The socket is full: the records wait in rustls (bounded by
            // its buffer limit) until it has room.
            ready!(self.out.poll_writable(cx))?;
        }
    }

    /// Hands the gathered plaintext to rustls and sends the records; ready
    /// once all of it is written.
    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.plain.is_empty() {
                // rustls takes what its outgoing buffer has room for.
                let n = self.conn.writer().write(&self.plain)?;
                self.plain.drain(..n);
            }
            ready!(self.poll_send_tls(cx))?;
            if self.plain.is_empty() {
                buffer::release(&mut self.plain);
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Reads TLS records from the socket into rustls; `Ready(Ok(0))` at
    /// the end of the stream.
    fn poll_receive_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.staged.is_empty() {
            let got = ready!(self.read.poll_recv_staged(cx, &mut self.staged))?;
            if got == 0 {
                self.staged.release();
                // rustls learns of the end from an empty read.
                self.conn.read_tls(&mut io::empty())?;
                return Poll::Ready(Ok(0));
            }
        }
        let n = self.conn.read_tls(&mut self.staged.data())?;
        self.staged.consume(n);
        self.staged.release();
        if let Err(e) = self.conn.process_new_packets() {
            // Send the alert that says why, if the socket takes it now.
            let _ = self.poll_send_tls(cx);
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        Poll::Ready(Ok(n))
    }
}

impl<C, D> AsyncRead for TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(result) = take_plaintext(&mut this.conn, buf) {
                return Poll::Ready(result);
            }
            // rustls may hold whole records it has not decrypted yet (it
            // stops when its plaintext buffer fills): those first, or the
            // socket read below could wait for bytes that never come.
            match this.conn.process_new_packets() {
                Ok(state) if state.plaintext_bytes_to_read() > 0 => continue,
                Ok(_) => {}
                Err(e) => {
                    let _ = this.poll_send_tls(cx);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            }
            // Answers rustls owes the peer (key updates) go out meanwhile.
            if let Poll::Ready(Err(e)) = this.poll_send_tls(cx) {
                return Poll::Ready(Err(e));
            }
            if ready!(this.poll_receive_tls(cx))? == 0 {
                // The peer closed; rustls now knows, and the next read
                // says whether that was a clean close_notify.
                continue;
            }
        }
    }
}

/// Copies the plaintext rustls holds into `buf`; `None` when it holds
/// none yet. It copies from rustls's own buffers: reading into `buf`
/// through `Read` would first zero all of its unfilled part on every call
/// (h2 reads into a buffer of several KiB), which cost more than the copy.
fn take_plaintext<D>(
    conn: &mut ConnectionCommon<D>,
    buf: &mut ReadBuf<'_>,
) -> Option<io::Result<()>> {
    let mut reader = conn.reader();
    let mut filled = false;
    while buf.remaining() > 0 {
        match reader.fill_buf() {
            Ok(chunk) => {
                // Empty: a clean close_notify, the end of the stream
                // (after what this call has copied, if anything).
                if chunk.is_empty() {
                    return Some(Ok(()));
                }
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                reader.consume(n);
                filled = true;
            }
            Err(_) if filled => break,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok(()))
}

impl<C, D> AsyncWrite for TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.plain.len() >= PLAIN_BATCH {
            ready!(this.poll_push(cx))?;
        }
        if let Some(n) = this.seal_large(buf)? {
            return Poll::Ready(Ok(n));
        }
        let room = PLAIN_BATCH.saturating_sub(this.plain.len()).max(1);
        let take = buf.len().min(room);
        buffer::ensure_read_sized(&mut this.plain);
        this.plain.extend_from_slice(&buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !ready!(this.out.poll_gather(cx, !this.plain.is_empty())) {
            return Poll::Ready(Ok(()));
        }
        this.poll_push(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_push(cx))?;
        if this.out.half.is_some() {
            this.conn.send_close_notify();
        }
        ready!(this.poll_send_tls(cx))?;
        this.out.poll_close(cx)
    }
}
