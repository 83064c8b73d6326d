//! monoio's owned-buffer I/O traits over [`TlsIo`], so that the HTTP/1.1
//! session reads and writes TLS through the same connection type as
//! HTTP/2: readiness and a plain `recv(2)` for reads (a quiet connection
//! holds no read buffer), records sealed from spare buffers for writes.

use std::future::poll_fn;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{Poll, ready};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use rustls::ConnectionCommon;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::TlsIo;
use crate::buffer::WaitReadable;

impl<C, D> AsyncReadRent for TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let len = buf.bytes_total();
        // SAFETY: `buf` lends `len` writable bytes at its write pointer for
        // the call; they are only written, as `MaybeUninit`, never read.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(buf.write_ptr().cast::<MaybeUninit<u8>>(), len)
        };
        let mut read = ReadBuf::uninit(dst);
        let res = poll_fn(|cx| Pin::new(&mut *self).poll_read(cx, &mut read)).await;
        let n = read.filled().len();
        // SAFETY: `n` bytes from the write pointer are initialized.
        unsafe { buf.set_init(n) };
        (res.map(|()| n), buf)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        // Not used on client connections: their reads are whole buffers.
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }
}

impl<C, D> AsyncWriteRent for TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    /// Seals as much of `buf` as fits one batch of records and writes
    /// them before returning: a response leaves when it is written, as on
    /// a plain socket, rather than at the next flush.
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `buf` lends its `bytes_init` initialized bytes for the call.
        let src = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        // What `poll_write` took is taken: polled again while the push
        // waits for the socket, this must not hand the same bytes over a
        // second time.
        let mut taken = None;
        let res = poll_fn(|cx| {
            loop {
                let n = match taken {
                    Some(n) => n,
                    None if self.plain.is_empty() && !src.is_empty() => {
                        // Sealed straight from `buf` (rustls takes what its
                        // outgoing buffer has room for), not copied into
                        // `plain` first: one copy less per byte of a body.
                        let n = self.conn.writer().write(src)?;
                        if n == 0 {
                            ready!(self.poll_send_tls(cx))?;
                            continue;
                        }
                        *taken.insert(n)
                    }
                    None => *taken.insert(ready!(Pin::new(&mut *self).poll_write(cx, src))?),
                };
                ready!(self.poll_push(cx))?;
                return Poll::Ready(Ok(n));
            }
        })
        .await;
        (res, buf)
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // Not used on client connections: their writes are whole buffers.
        (Err(io::ErrorKind::Unsupported.into()), buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_push(cx)).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut *self).poll_shutdown(cx)).await
    }
}

impl<C> crate::splice::PlainSocket for TlsIo<C> {
    /// Never: the socket carries records, not the stream's bytes.
    fn plain_socket(&self) -> Option<&monoio::net::TcpStream> {
        None
    }
}

impl<C, D> WaitReadable for TlsIo<C>
where
    C: DerefMut<Target = ConnectionCommon<D>> + Unpin,
{
    /// At once when records or plaintext are already held; otherwise when
    /// the socket becomes readable, with no buffer posted meanwhile.
    async fn readable(&mut self) -> io::Result<()> {
        if !self.staged.is_empty() {
            return Ok(());
        }
        match self.conn.process_new_packets() {
            Ok(state) if state.plaintext_bytes_to_read() > 0 || state.peer_has_closed() => {
                return Ok(());
            }
            Ok(_) => {}
            // The read that follows reports it.
            Err(_) => return Ok(()),
        }
        // A read that filled what it asked for may have left bytes whose
        // completion was used up, and a read in flight has the next ones:
        // the read goes first then.
        if !self.read.drained || self.read.reading {
            return Ok(());
        }
        std::future::poll_fn(|cx| self.read.poll_wait(cx)).await?;
        self.read.drained = false;
        Ok(())
    }
}

// SAFETY: as monoio-rustls's stream, which it replaces on client
// connections: a tunnel reads from one half and writes from the other on
// the same thread, and each poll runs to its end before another starts.
unsafe impl<C> Split for TlsIo<C> {}
