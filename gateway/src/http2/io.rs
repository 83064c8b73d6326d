//! Byte streams for the h2 crate, which speaks tokio's I/O traits.
//!
//! monoio-compat's `StreamWrapper` turns a monoio (io_uring) socket into a
//! tokio `AsyncRead + AsyncWrite` without a tokio runtime. TLS is layered
//! on top of that here, over the rustls connection the gateway's own
//! handshake produced: monoio-rustls's stream under the compat wrapper
//! panics when h2 reads and writes at once (both halves share one buffer;
//! see STACK-NOTES), and tokio-rustls cannot adopt a finished handshake.

use std::future::Future;
use std::io::{self, Read, Write};
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
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
    /// Sealed records waiting for the socket.
    sealed: Vec<u8>,
    /// The write half, while no write is in flight.
    write_half: Option<OwnedWriteHalf<TcpStream>>,
    /// The write in flight; it gives back the half and the buffer.
    writing: Option<Pin<Box<dyn Future<Output = WriteDone>>>>,
}

type WriteDone = (io::Result<()>, OwnedWriteHalf<TcpStream>, Vec<u8>);

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
            sealed: Vec::with_capacity(PLAIN_BATCH + 4096),
            write_half: Some(write),
            writing: None,
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
            if let Some(writing) = &mut self.writing {
                let (result, half, mut buf) = ready!(writing.as_mut().poll(cx));
                self.writing = None;
                self.write_half = Some(half);
                result?;
                buf.clear();
                if self.sealed.is_empty() {
                    // Keep the larger buffer for the next records.
                    std::mem::swap(&mut self.sealed, &mut buf);
                }
            }
            while self.conn.wants_write() {
                self.conn.write_tls(&mut self.sealed)?;
            }
            if self.sealed.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let Some(mut half) = self.write_half.take() else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            let buf = std::mem::take(&mut self.sealed);
            self.writing = Some(Box::pin(async move {
                let (result, buf) = half.write_all(buf).await;
                (result.map(|_| ()), half, buf)
            }));
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
        self.get_mut().poll_push(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_push(cx))?;
        if this.write_half.is_some() {
            this.conn.send_close_notify();
        }
        ready!(this.poll_send_tls(cx))?;
        if let Some(half) = &mut this.write_half {
            // Best effort: the peer may be gone already.
            let mut shutdown = std::pin::pin!(half.shutdown());
            let _ = shutdown.as_mut().poll(cx);
        }
        Poll::Ready(Ok(()))
    }
}
