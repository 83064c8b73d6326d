//! Byte streams for the h2 crate, which speaks tokio's I/O traits.
//!
//! No tokio runtime is involved: reads go through monoio-compat's
//! `StreamWrapper` on the socket's read half (io_uring reads into an owned
//! buffer), and writes through [`Writer`] on the write half, which gathers
//! what h2 writes until it flushes and sends it in one owned-buffer write.
//! TLS is layered in between over the rustls connection the gateway's own
//! handshake produced: monoio-rustls's stream under the compat wrapper
//! panics when h2 reads and writes at once (see STACK-NOTES), and
//! tokio-rustls cannot adopt a finished handshake.

use std::future::Future;
use std::io::{self, BufRead, Read, Write};
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio_compat::StreamWrapper;
use rustls::ConnectionCommon;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// TLS over an io_uring socket with an established rustls connection
/// (server or client side), for the h2 crate.
///
/// Reads go through monoio-compat's wrapper on the socket's read half.
/// Writes are this type's own: plaintext is gathered until h2 flushes (h2
/// writes a frame head of 9 bytes and its payload separately; encrypting
/// each write would make a TLS record of each), then rustls seals it into
/// full-sized records, and all the records of a flush go to the socket in
/// one owned-buffer write.
pub struct TlsIo<C> {
    read: StreamWrapper<OwnedReadHalf<TcpStream>>,
    conn: C,
    /// Plaintext written and not yet handed to rustls.
    plain: Vec<u8>,
    /// Sealed records on their way to the socket.
    out: Writer,
}

/// The write side of a socket for h2: bytes gathered in `pending` go out
/// in one owned-buffer write per flush (monoio-compat's wrapper keeps one
/// write of at most its buffer in flight, and h2 writes a frame's head and
/// payload apart: a write each).
struct Writer {
    /// Bytes waiting for the socket.
    pending: Vec<u8>,
    /// The write half, while no write is in flight.
    half: Option<OwnedWriteHalf<TcpStream>>,
    /// The write in flight; it gives back the half and the buffer.
    writing: Option<Pin<Box<dyn Future<Output = WriteDone>>>>,
    /// A flush let the worker's other ready tasks run first (see
    /// [`Writer::poll_corked`]).
    yielded: bool,
}

type WriteDone = (io::Result<()>, OwnedWriteHalf<TcpStream>, Vec<u8>);

impl Writer {
    fn new(half: OwnedWriteHalf<TcpStream>) -> Writer {
        Writer {
            pending: Vec::with_capacity(PLAIN_BATCH + 4096),
            half: Some(half),
            writing: None,
            yielded: false,
        }
    }

    /// Lets the other ready tasks of the worker run once before a flush
    /// writes: the streams answered in the same turn of the event loop then
    /// leave in one write (and, over TLS, in full records) rather than a
    /// write each. Ready when the flush may go ahead.
    fn poll_corked(&mut self, cx: &mut Context<'_>, has_data: bool) -> Poll<()> {
        if !has_data || self.writing.is_some() || self.yielded {
            self.yielded = false;
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Ready once the write in flight is done; the error it met, if any.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(writing) = &mut self.writing else {
            return Poll::Ready(Ok(()));
        };
        let (result, half, mut buf) = ready!(writing.as_mut().poll(cx));
        self.writing = None;
        self.half = Some(half);
        buf.clear();
        if self.pending.is_empty() {
            // Keep the larger buffer for what comes next.
            std::mem::swap(&mut self.pending, &mut buf);
        }
        Poll::Ready(result)
    }

    /// Writes everything pending; ready when it is all on the socket.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_idle(cx))?;
            if self.pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let Some(mut half) = self.half.take() else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            let buf = std::mem::take(&mut self.pending);
            self.writing = Some(Box::pin(async move {
                let (result, buf) = half.write_all(buf).await;
                (result.map(|_| ()), half, buf)
            }));
        }
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
pub struct PlainIo {
    read: StreamWrapper<OwnedReadHalf<TcpStream>>,
    out: Writer,
}

impl std::fmt::Debug for PlainIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainIo").finish_non_exhaustive()
    }
}

impl PlainIo {
    /// Wraps a TCP stream.
    pub fn new(io: TcpStream) -> PlainIo {
        let (read, write) = io.into_split();
        PlainIo {
            read: StreamWrapper::new_with_buffer_size(read, 32 * 1024, 0),
            out: Writer::new(write),
        }
    }
}

impl AsyncRead for PlainIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, buf)
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
        out.pending.extend_from_slice(&buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = &mut self.get_mut().out;
        let has_data = !out.pending.is_empty();
        ready!(out.poll_corked(cx, has_data));
        out.poll_write_out(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().out.poll_close(cx)
    }
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
        let (read, write) = io.into_split();
        TlsIo {
            read: StreamWrapper::new_with_buffer_size(read, 32 * 1024, 0),
            conn,
            plain: Vec::with_capacity(PLAIN_BATCH),
            out: Writer::new(write),
        }
    }
}

/// rustls's synchronous reads over the non-blocking read half: `Pending`
/// becomes `WouldBlock`.
struct SyncRead<'a, 'b> {
    io: &'a mut StreamWrapper<OwnedReadHalf<TcpStream>>,
    cx: &'a mut Context<'b>,
}

impl Read for SyncRead<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut buf) {
            Poll::Ready(Ok(())) => Ok(buf.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<C, D> TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    /// Sends every record rustls has sealed; ready when all of them are
    /// written to the socket.
    fn poll_send_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.out.poll_idle(cx))?;
            while self.conn.wants_write() {
                self.conn.write_tls(&mut self.out.pending)?;
            }
            ready!(self.out.poll_write_out(cx))?;
            if !self.conn.wants_write() {
                return Poll::Ready(Ok(()));
            }
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
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// Reads TLS records from the socket into rustls; `Ready(Ok(0))` at
    /// the end of the stream.
    fn poll_receive_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut sync = SyncRead {
            io: &mut self.read,
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
        let room = PLAIN_BATCH.saturating_sub(this.plain.len()).max(1);
        let take = buf.len().min(room);
        this.plain.extend_from_slice(&buf[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.out.poll_corked(cx, !this.plain.is_empty()));
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
