//! Byte streams for the h2 crate, which speaks tokio's I/O traits.
//!
//! monoio-compat's `StreamWrapper` turns a monoio (io_uring) socket into a
//! tokio `AsyncRead + AsyncWrite` without a tokio runtime. TLS is layered
//! on top of that here, over the rustls connection the gateway's own
//! handshake produced: monoio-rustls's stream under the compat wrapper
//! panics when h2 reads and writes at once (both halves share one buffer;
//! see STACK-NOTES), and tokio-rustls cannot adopt a finished handshake.

use std::io::{self, Read, Write};
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use monoio::net::TcpStream;
use monoio_compat::StreamWrapper;
use rustls::ConnectionCommon;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A monoio TCP stream seen through tokio's traits.
pub type CompatTcp = StreamWrapper<TcpStream>;

/// Wraps a monoio TCP stream for the h2 crate.
pub fn compat(stream: TcpStream) -> CompatTcp {
    // Frames of up to 16 KiB plus headers move in one read or write.
    StreamWrapper::new_with_buffer_size(stream, 32 * 1024, 32 * 1024)
}

/// A stream that first replays bytes already read from it (the part of
/// the h2c preface that was read while looking for an HTTP/1.1 request).
pub struct Replay<T> {
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
    pub fn new(replay: Vec<u8>, inner: T) -> Replay<T> {
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

/// TLS over a compat stream with an established rustls connection
/// (server or client side).
pub struct TlsIo<C> {
    io: CompatTcp,
    conn: C,
    /// Plaintext written and not yet handed to rustls. h2 writes a frame
    /// head (9 bytes) and its payload separately; encrypting each write as
    /// it comes would make a TLS record of each. Gathered here until a
    /// flush (h2 flushes after each batch of frames), records come out
    /// full-sized.
    plain: Vec<u8>,
}

/// Plaintext gathered before it goes to rustls regardless of a flush.
const PLAIN_BATCH: usize = 64 * 1024;

impl<C> std::fmt::Debug for TlsIo<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIo").finish_non_exhaustive()
    }
}

impl<C> TlsIo<C> {
    /// Wraps a stream whose handshake `conn` has completed.
    pub fn new(io: TcpStream, conn: C) -> TlsIo<C> {
        TlsIo {
            io: compat(io),
            conn,
            plain: Vec::with_capacity(PLAIN_BATCH),
        }
    }
}

/// rustls's synchronous reads and writes, over a non-blocking stream:
/// `Pending` becomes `WouldBlock`.
struct SyncIo<'a, 'b> {
    io: &'a mut CompatTcp,
    cx: &'a mut Context<'b>,
}

impl Read for SyncIo<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for SyncIo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.io).poll_flush(self.cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<C, D> TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    /// Sends what rustls has ready; `Ready(Ok(0))` when the socket took
    /// nothing.
    fn poll_send_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut sync = SyncIo {
            io: &mut self.io,
            cx,
        };
        match self.conn.write_tls(&mut sync) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            r => Poll::Ready(r),
        }
    }

    /// Hands the gathered plaintext to rustls and sends the records; ready
    /// once all of it is on its way to the socket.
    fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.plain.is_empty() {
                // rustls takes what its outgoing buffer has room for.
                let n = self.conn.writer().write(&self.plain)?;
                self.plain.drain(..n);
            }
            if !self.conn.wants_write() {
                if self.plain.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if ready!(self.poll_send_tls(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
    }

    /// Reads TLS records from the socket into rustls; `Ready(Ok(0))` at
    /// the end of the stream.
    fn poll_receive_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut sync = SyncIo {
            io: &mut self.io,
            cx,
        };
        let n = match self.conn.read_tls(&mut sync) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            r => r?,
        };
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
            match this.conn.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
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
            // Answers rustls owes the peer (key updates) go out first.
            while this.conn.wants_write() {
                match this.poll_send_tls(cx) {
                    Poll::Ready(Ok(0)) | Poll::Pending => break,
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                }
            }
            if ready!(this.poll_receive_tls(cx))? == 0 {
                // The peer closed; rustls now knows, and the next read
                // says whether that was a clean close_notify.
                continue;
            }
        }
    }
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
        let room = PLAIN_BATCH.saturating_sub(this.plain.len()).max(1);
        let take = buf.len().min(room);
        this.plain.extend_from_slice(&buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_push(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_push(cx))?;
        this.conn.send_close_notify();
        while this.conn.wants_write() {
            if ready!(this.poll_send_tls(cx))? == 0 {
                break;
            }
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
