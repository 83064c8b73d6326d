//! Owned read buffers for io_uring: the kernel writes into memory the
//! buffer owns, so reads take the buffer and give it back.

use std::io;
use std::os::fd::RawFd;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

/// Size a connection's read buffer starts at; body streaming reuses it, so
/// this is also the per-direction memory bound for bodies.
pub(crate) const BUF_SIZE: usize = 16 * 1024;

/// A read buffer with a consumed prefix: `data()` is what has been read
/// but not yet used.
#[derive(Debug, Default)]
pub(crate) struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    /// An empty buffer of [`BUF_SIZE`].
    pub(crate) fn new() -> ReadBuf {
        ReadBuf {
            buf: Vec::with_capacity(BUF_SIZE),
            start: 0,
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

    /// Reads more bytes from `io`, growing the buffer up to `max` bytes of
    /// unconsumed data. Returns the count read, 0 at end of stream, and an
    /// `OutOfMemory` error when `max` is reached.
    pub(crate) async fn fill<R: AsyncReadRent>(
        &mut self,
        io: &mut R,
        max: usize,
    ) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        if len == self.buf.capacity() {
            if len >= max {
                return Err(io::ErrorKind::OutOfMemory.into());
            }
            self.buf.reserve((max - len).min(len.max(BUF_SIZE)));
        }
        // If this future is dropped mid-read (a timeout), the buffer goes
        // with it; callers close the connection in that case anyway.
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = io.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        res
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
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
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
    use std::io::{IoSlice, Read};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

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
