//! Owned read buffers for io_uring: the kernel writes into memory the
//! buffer owns, so reads take the buffer and give it back.
//!
//! A connection holds a buffer only while bytes move: one waiting for its
//! next request holds none (see [`ReadBuf::release`]). Buffers come from a
//! per-worker spare list ([`take`], [`give_back`]) so that the request
//! path does not go through the allocator for them.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::RawFd;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf};
use monoio::net::TcpStream;

/// Size a connection's read buffer starts at.
pub(crate) const BUF_SIZE: usize = 16 * 1024;

/// Size a read buffer grows to while a body keeps coming (see
/// [`ReadBuf::fill_body`]): the per-direction memory bound for bodies.
/// Large enough that a transfer moves in a few operations per socket
/// buffer's worth, as Envoy's 1 MiB connection buffers and HAProxy's
/// splicing do.
pub(crate) const BODY_BUF_SIZE: usize = 256 * 1024;

/// Capacity of the small buffers connections write heads into.
pub(crate) const HEAD_SIZE: usize = 1024;

/// Spare buffers kept per worker and size class: enough for the requests
/// in flight at once on a busy worker; more go back to the allocator.
const SPARE_MAX: usize = 256;
/// A buffer larger than this is not kept: it grew for one large head or
/// body and would hold its memory for a small one.
const KEEP_MAX: usize = 4 * BUF_SIZE;
/// Spare body-sized buffers kept per worker: bodies streaming at once on
/// one worker are few; 16 of them are 4 MiB.
const BODY_SPARE_MAX: usize = 16;

/// The worker's spare buffers: `[head-sized, read-sized, body-sized]`.
/// Workers are threads, so a thread-local list is a per-worker one.
struct Spares {
    lists: [Vec<Vec<u8>>; 3],
}

thread_local! {
    static SPARES: RefCell<Spares> = const {
        RefCell::new(Spares { lists: [Vec::new(), Vec::new(), Vec::new()] })
    };
}

/// The spare list for buffers of `capacity` bytes or more.
fn class_of(capacity: usize) -> usize {
    if capacity >= BODY_BUF_SIZE {
        2
    } else {
        usize::from(capacity >= BUF_SIZE)
    }
}

/// An empty buffer of at least `capacity` bytes ([`HEAD_SIZE`],
/// [`BUF_SIZE`] or [`BODY_BUF_SIZE`]), a spare one when the worker has it.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    let spare = SPARES.with_borrow_mut(|s| s.lists[class_of(capacity)].pop());
    match spare {
        Some(buf) if buf.capacity() >= capacity => buf,
        _ => Vec::with_capacity(capacity),
    }
}

/// Gives a buffer back to the worker's spares (emptied), or to the
/// allocator when it is too small, of a size no class keeps, or the
/// spares are full.
pub(crate) fn give_back(mut buf: Vec<u8>) {
    let capacity = buf.capacity();
    let (class, max) = if (HEAD_SIZE..=KEEP_MAX).contains(&capacity) {
        (class_of(capacity), SPARE_MAX)
    } else if (BODY_BUF_SIZE..2 * BODY_BUF_SIZE).contains(&capacity) {
        (2, BODY_SPARE_MAX)
    } else {
        return;
    };
    buf.clear();
    SPARES.with_borrow_mut(|s| {
        let list = &mut s.lists[class];
        if list.len() < max {
            list.push(buf);
        }
    });
}

/// Gives `buf` back to the spares if it holds memory and no bytes,
/// leaving an empty vector that holds none.
pub(crate) fn release(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > 0 {
        give_back(std::mem::take(buf));
    }
}

/// Empties `buf` and gives its memory back to the spares.
pub(crate) fn recycle(buf: &mut Vec<u8>) {
    buf.clear();
    release(buf);
}

/// Makes sure `buf` has memory before it is written to: a spare one of
/// [`HEAD_SIZE`] when it has none.
pub(crate) fn ensure(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        *buf = take(HEAD_SIZE);
    }
}

/// Makes sure `buf` has memory for a read-sized write: a spare of
/// [`BUF_SIZE`] when it has none.
pub(crate) fn ensure_read_sized(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        *buf = take(BUF_SIZE);
    }
}

/// A plain non-blocking `recv(2)` of up to `len` bytes at `at` from the
/// socket `fd`: the count (0 at the end of the stream), `None` when it has
/// nothing now.
pub(crate) fn recv_now(fd: RawFd, at: *mut u8, len: usize) -> io::Result<Option<usize>> {
    // SAFETY: the caller lends `len` writable bytes at `at`; recv(2) writes
    // at most that many.
    let n = unsafe { libc::recv(fd, at.cast(), len, libc::MSG_DONTWAIT) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    nothing_now(Err(io::Error::last_os_error()))
}

/// A read that does not wait, as the callers see it: the count, `None`
/// when the socket had nothing now (`EAGAIN`, or a signal), or the error.
fn nothing_now(read: io::Result<usize>) -> io::Result<Option<usize>> {
    match read {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A read buffer with a consumed prefix: `data()` is what has been read
/// but not yet used. It holds memory only from its first read until
/// [`ReadBuf::release`].
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    /// Counted in [`held`] (from the first read to [`ReadBuf::release`]).
    /// A flag rather than the capacity: a read dropped mid-flight takes
    /// the buffer with it, and the next read takes another.
    held: bool,
    /// The last body read ([`ReadBuf::fill_body`], [`ReadBuf::recv_now`])
    /// found at least [`BUF_SIZE`] bytes waiting: the peer sends faster
    /// than they are read, so the next read grows. It outlives
    /// [`ReadBuf::release`] (a TLS staging buffer is released after every
    /// read), and the first small read clears it.
    streaming: bool,
}

thread_local! {
    /// Read buffers this worker's connections hold now.
    static HELD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many read buffers this worker's connections hold now: those in
/// the middle of a request (or of reading one). A connection that waits
/// for its next request, and a pooled upstream connection, hold none.
pub(crate) fn held() -> u64 {
    HELD.get()
}

impl ReadBuf {
    /// An empty buffer that holds no memory until its first read.
    pub(crate) fn new() -> ReadBuf {
        ReadBuf {
            buf: Vec::new(),
            start: 0,
            held: false,
            streaming: false,
        }
    }

    /// Gives the memory back to the worker's spares when nothing
    /// unconsumed is held (a connection about to wait for its next
    /// request); the next read takes a spare again.
    pub(crate) fn release(&mut self) {
        if self.is_empty() {
            self.start = 0;
            release(&mut self.buf);
            if self.held {
                self.held = false;
                HELD.set(HELD.get() - 1);
            }
        }
    }

    /// The bytes read and not yet consumed.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// True when nothing unconsumed is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Marks the first `n` bytes of [`ReadBuf::data`] as used.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n;
        debug_assert!(self.start <= self.buf.len());
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Moves the unconsumed bytes to the front and makes sure the buffer
    /// holds memory (a spare, counted in [`held`]) before a read.
    fn prepare_read(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() == 0 {
            self.buf = take(BUF_SIZE);
            if !self.held {
                self.held = true;
                HELD.set(HELD.get() + 1);
            }
        }
    }

    /// Makes room for a read: takes a spare buffer if none is held, and
    /// grows a full one, up to `max` bytes of unconsumed data (an
    /// `OutOfMemory` error once that is reached).
    pub(crate) fn make_room(&mut self, max: usize) -> io::Result<()> {
        self.prepare_read();
        let len = self.buf.len();
        if len == self.buf.capacity() {
            if len >= max {
                return Err(io::ErrorKind::OutOfMemory.into());
            }
            self.buf.reserve((max - len).min(len.max(BUF_SIZE)));
        }
        Ok(())
    }

    /// Appends `bytes` read elsewhere (a ring buffer), taking a spare first
    /// if none is held; an `OutOfMemory` error when `max` bytes are held
    /// already (the buffer grows past `max` by at most `bytes`).
    pub(crate) fn append(&mut self, bytes: &[u8], max: usize) -> io::Result<()> {
        self.prepare_read();
        if self.buf.len() >= max {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        self.buf.extend_from_slice(bytes);
        self.note_read(bytes.len());
        Ok(())
    }

    /// Reads more bytes from `io`, growing the buffer up to `max` bytes of
    /// unconsumed data. Returns the count read, 0 at end of stream, and an
    /// `OutOfMemory` error when `max` is reached.
    pub(crate) async fn fill<R: AsyncReadRent>(
        &mut self,
        io: &mut R,
        max: usize,
    ) -> io::Result<usize> {
        self.make_room(max)?;
        let len = self.buf.len();
        // If this future is dropped mid-read (a timeout), the buffer goes
        // with it; callers close the connection in that case anyway.
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = io.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        res
    }

    /// [`ReadBuf::fill`] for a streaming body: once a read finds at least
    /// [`BUF_SIZE`] bytes waiting, the buffer grows to [`BODY_BUF_SIZE`] (a spare of that
    /// size), so that a body that keeps coming moves in large reads and
    /// writes, a few operations per socket buffer's worth rather than one
    /// per 16 KiB. [`ReadBuf::release`] gives it back when the connection
    /// next waits.
    pub(crate) async fn fill_body<R: AsyncReadRent>(&mut self, io: &mut R) -> io::Result<usize> {
        self.prepare_read();
        self.grow_if_streaming();
        let n = self.fill(io, BODY_BUF_SIZE).await?;
        self.streaming = n >= BUF_SIZE;
        Ok(n)
    }

    /// Moves the bytes held into a [`BODY_BUF_SIZE`] spare when the peer
    /// is streaming and the buffer is smaller.
    fn grow_if_streaming(&mut self) {
        if self.streaming && self.buf.capacity() < BODY_BUF_SIZE {
            let mut larger = take(BODY_BUF_SIZE);
            larger.extend_from_slice(&self.buf);
            give_back(std::mem::replace(&mut self.buf, larger));
        }
    }

    /// Reads at most `len` more bytes: a chunk's framing between two
    /// spliced chunks, so that the next chunk's data stays in the socket
    /// to be spliced in turn.
    pub(crate) async fn fill_at_most<R: AsyncReadRent>(
        &mut self,
        io: &mut R,
        len: usize,
    ) -> io::Result<usize> {
        self.prepare_read();
        let have = self.buf.len();
        self.buf.reserve(len);
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = io.read(buf.slice_mut(have..have + len)).await;
        self.buf = slice.into_inner();
        res
    }

    /// Reads what the socket `fd` has now with a plain `recv(2)` (see
    /// [`recv_now`]), taking a spare buffer first if it holds none; it
    /// grows as [`ReadBuf::fill_body`] does while the peer streams.
    pub(crate) fn recv_now(&mut self, fd: RawFd) -> io::Result<Option<usize>> {
        self.prepare_read();
        self.grow_if_streaming();
        let len = self.buf.len();
        let room = self.buf.capacity() - len;
        // SAFETY: the spare capacity past `len` is this vector's own.
        let at = unsafe { self.buf.as_mut_ptr().add(len) };
        let got = recv_now(fd, at, room)?;
        if let Some(n) = got {
            // SAFETY: recv(2) initialized `n` bytes past `len`.
            unsafe { self.buf.set_len(len + n) };
            self.note_read(n);
        }
        Ok(got)
    }

    /// A read of `n` bytes without waiting: a full buffer's worth means the
    /// peer streams, and the next read grows.
    fn note_read(&mut self, n: usize) {
        self.streaming = n >= BUF_SIZE;
    }

    /// [`ReadBuf::recv_now`] through the ring: submitted with the worker's
    /// other operations, so a busy worker reads many sockets per system
    /// call instead of one. Meant for after a readiness wait; `None` when
    /// the socket has nothing now.
    pub(crate) async fn recv_ready(&mut self, socket: &TcpStream) -> io::Result<Option<usize>> {
        // If this future is dropped mid-read (a timeout), the buffer goes
        // with it, as in `fill`.
        let (read, buf) = std::mem::take(self).recv_ready_owned(socket).await;
        *self = buf;
        read
    }

    /// [`ReadBuf::recv_ready`] for a reader that polls: the buffer travels
    /// with the read (submitted now) and comes back with its result.
    pub(crate) fn recv_ready_owned(
        mut self,
        socket: &TcpStream,
    ) -> impl Future<Output = (io::Result<Option<usize>>, ReadBuf)> + 'static {
        self.prepare_read();
        self.grow_if_streaming();
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let read = socket.recv_ready(buf.slice_mut(len..));
        async move {
            let (res, slice) = read.await;
            self.buf = slice.into_inner();
            let read = nothing_now(res);
            if let Ok(Some(n)) = read {
                self.note_read(n);
            }
            (read, self)
        }
    }

    /// True when the buffer has no room left: a read into it may have
    /// left bytes in the socket.
    pub(crate) fn is_full(&self) -> bool {
        self.buf.len() == self.buf.capacity()
    }

    /// Takes the first `n` unconsumed bytes out, without copying when they
    /// are all the buffer holds (the buffer then goes with them, and the
    /// next read takes a spare); else as a copy.
    pub(crate) fn split_off_front(&mut self, n: usize) -> Vec<u8> {
        if self.start == 0 && n == self.buf.len() && n > 0 {
            return std::mem::take(&mut self.buf);
        }
        let front = self.data()[..n].to_vec();
        self.consume(n);
        front
    }

    /// Writes the first `n` unconsumed bytes to `io` without copying, and
    /// consumes them.
    pub(crate) async fn write_prefix<W: AsyncWriteRentExt>(
        &mut self,
        io: &mut W,
        n: usize,
    ) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = io.write_all(buf.slice(self.start..self.start + n)).await;
        self.buf = slice.into_inner();
        res?;
        self.consume(n);
        Ok(())
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.release();
    }
}

/// A byte stream that can wait for bytes to read without lending a
/// buffer to the kernel: a connection waiting for its next request (or a
/// quiet tunnel) waits this way and holds no read buffer meanwhile.
pub(crate) trait WaitReadable {
    /// Resolves when a read would find bytes, the end of the stream, or an
    /// error (io_uring `POLL_ADD`: no buffer is posted).
    async fn readable(&mut self) -> io::Result<()>;
}

impl WaitReadable for TcpStream {
    async fn readable(&mut self) -> io::Result<()> {
        TcpStream::readable(self, false).await
    }
}

impl<T: WaitReadable> WaitReadable for OwnedReadHalf<T> {
    async fn readable(&mut self) -> io::Result<()> {
        // SAFETY: as monoio's own reads through this half: the stream is
        // read only from here, on one thread, and the wait looks only at
        // the read side's state.
        let stream = unsafe { &mut *self.0.get() };
        stream.readable().await
    }
}

/// Writes all of `out` to `io`, keeping `out` (and its capacity) for reuse.
pub(crate) async fn write_all<W: AsyncWriteRentExt>(
    io: &mut W,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let buf = std::mem::take(out);
    let (res, buf) = io.write_all(buf).await;
    *out = buf;
    res.map(|_| ())
}

/// Writes what the socket `fd` takes of `bytes` now, with a plain
/// non-blocking `send(2)`: the count, 0 when it has no room.
///
/// For small writes that should leave before the worker's turn ends: an
/// io_uring write goes to the kernel only when the worker next submits,
/// after every other ready task has run, and its completion takes another
/// turn to be seen.
pub(crate) fn send_now(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    send_now_with(fd, bytes, 0)
}

/// [`send_now`] with more `send(2)` flags (`MSG_MORE`: hold a small
/// piece back to leave with what follows).
pub(crate) fn send_now_with(fd: RawFd, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    if bytes.is_empty() {
        return Ok(0);
    }
    // SAFETY: a send(2) from a live buffer; `fd` is a socket the caller's
    // stream owns and keeps open for the call.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    unsent_is_zero()
}

/// [`send_now`] for several buffers at once (a `sendmsg(2)` of them all).
pub(crate) fn send_vectored_now(fd: RawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    if bufs.iter().all(|b| b.is_empty()) {
        return Ok(0);
    }
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix; sendmsg does not
    // write through the pointer.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize);
    // SAFETY: a sendmsg(2) from live buffers; `fd` is a socket the
    // caller's stream owns and keeps open for the call.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n >= 0 {
        return Ok(n as usize);
    }
    unsent_is_zero()
}

/// The last send's error, where "no room now" is 0 bytes sent.
fn unsent_is_zero() -> io::Result<usize> {
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::AsyncWriteRentExt;
    use std::io::{IoSlice, Read};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_read_buffer_holds_memory_from_its_first_read_until_released() {
        block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = monoio::net::TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let before = held();
            let mut rbuf = ReadBuf::new();
            assert_eq!(held(), before, "a new buffer holds nothing");
            let (res, _) = client.write_all(b"GET / HTTP/1.1\r\n\r\n").await;
            res.unwrap();
            WaitReadable::readable(&mut server).await.unwrap();
            assert_eq!(held(), before, "waiting for bytes takes no buffer");
            assert!(rbuf.fill(&mut server, BUF_SIZE).await.unwrap() > 0);
            assert_eq!(held(), before + 1);
            // Unconsumed bytes keep it.
            rbuf.release();
            assert_eq!(held(), before + 1);
            rbuf.consume(rbuf.data().len());
            rbuf.release();
            assert_eq!(held(), before);
            // The spare is lent again, and dropping a holding buffer
            // counts it out too.
            let (res, _) = client.write_all(b"more").await;
            res.unwrap();
            assert_eq!(rbuf.fill(&mut server, BUF_SIZE).await.unwrap(), 4);
            assert_eq!(held(), before + 1);
            drop(rbuf);
            assert_eq!(held(), before);
        });
    }

    #[test]
    fn a_body_that_keeps_coming_grows_the_buffer_and_the_spare_is_reused() {
        block_on(async {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = monoio::net::TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            let (res, _) = client.write_all(vec![1u8; 3 * BUF_SIZE]).await;
            res.unwrap();
            let mut rbuf = ReadBuf::new();
            // The first read has a read-sized buffer and fills it.
            assert_eq!(rbuf.fill_body(&mut server).await.unwrap(), BUF_SIZE);
            assert!(rbuf.buf.capacity() < BODY_BUF_SIZE);
            rbuf.consume(BUF_SIZE);
            // So the next one grows and takes all that is there.
            assert_eq!(rbuf.fill_body(&mut server).await.unwrap(), 2 * BUF_SIZE);
            assert_eq!(rbuf.buf.capacity(), BODY_BUF_SIZE);
            let big = rbuf.buf.as_ptr();
            rbuf.consume(2 * BUF_SIZE);
            rbuf.release();
            assert_eq!(rbuf.buf.capacity(), 0, "released when the body ended");
            let again = take(BODY_BUF_SIZE);
            assert_eq!(again.as_ptr(), big, "the body-sized spare is reused");
            // A read that does not fill its room does not grow the next.
            let (res, _) = client.write_all(vec![2u8; 100]).await;
            res.unwrap();
            assert_eq!(rbuf.fill_body(&mut server).await.unwrap(), 100);
            assert!(!rbuf.streaming);
        });
    }

    #[test]
    fn spares_are_kept_by_size_and_only_within_bounds() {
        let a = take(BUF_SIZE);
        let ptr = a.as_ptr();
        give_back(a);
        let b = take(BUF_SIZE);
        assert_eq!(b.as_ptr(), ptr, "a read-sized spare is reused");
        assert!(b.capacity() >= BUF_SIZE);
        let head = take(HEAD_SIZE);
        assert!(head.capacity() >= HEAD_SIZE && head.capacity() < BUF_SIZE);
        give_back(b);
        // A huge buffer goes back to the allocator, not to the spares.
        let huge: Vec<u8> = Vec::with_capacity(KEEP_MAX * 2);
        give_back(huge);
        assert!(take(BUF_SIZE).capacity() <= KEEP_MAX);
        // Recycling empties a buffer and leaves no memory behind.
        let mut out = take(HEAD_SIZE);
        out.extend_from_slice(b"stale");
        recycle(&mut out);
        assert_eq!(out.capacity(), 0);
        ensure(&mut out);
        assert!(out.is_empty() && out.capacity() >= HEAD_SIZE);
    }

    #[test]
    fn sends_now_take_what_the_socket_has_room_for_and_no_more() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let parts = [&b"head "[..], b"", b"body", b" tail"];
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        assert_eq!(send_vectored_now(fd, &slices).unwrap(), 14);
        assert_eq!(send_vectored_now(fd, &[IoSlice::new(b"")]).unwrap(), 0);
        let mut got = [0u8; 14];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"head body tail");
        // Fill the socket: then both say 0 instead of waiting.
        let block = vec![7u8; 64 * 1024];
        let mut sent = 0;
        while send_now(fd, &block).unwrap() > 0 {
            sent += 1;
            assert!(sent < 10_000, "the socket never filled");
        }
        assert_eq!(send_vectored_now(fd, &[IoSlice::new(&block)]).unwrap(), 0);
        // A closed peer is an error, not a signal that ends the process.
        drop(b);
        assert!(send_vectored_now(fd, &[IoSlice::new(b"x")]).is_err());
        assert!(send_now(fd, b"x").is_err());
    }
}
