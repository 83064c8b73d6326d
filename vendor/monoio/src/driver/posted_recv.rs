//! ringway: a receive posted on a socket that waits, which takes a buffer
//! from the driver's provided-buffer ring only when bytes arrive (see
//! `uring/buf_ring.rs`). Waiting costs the socket no buffer, and arrival
//! costs one completion and one wake: the bytes come with it.
//!
//! It also tells a caller, without a system call, whether anything
//! arrived since it was posted: while the receive has not completed
//! (as of the driver's last look at its completions), nothing did.
//! io_uring only: on the legacy driver, or a kernel without
//! provided-buffer rings, posting answers `Unsupported`.

use std::{
    io,
    os::fd::RawFd,
    task::{Context, Poll},
};

use super::{
    uring::{buf_ring::BUF_LEN, UringInner},
    Inner, CURRENT,
};

/// A receive posted on one socket. Eight bytes: it is kept in every idle
/// connection, so it holds neither the socket (the caller passes it to
/// each post; the kernel holds the socket's file while the receive is
/// posted) nor the driver (the thread's current one). Dropped on the
/// runtime's thread, it cancels the receive.
#[derive(Debug, Default)]
pub struct PostedRecv {
    /// The posted receive's slab index plus one; 0 when none is posted.
    posted: u32,
    /// The driver's park count when it was posted: once it has moved, the
    /// kernel has seen the receive (and completed it at once if bytes
    /// were waiting), and the driver has reaped what followed.
    posted_at: u32,
}

/// What a posted receive got.
#[derive(Debug)]
pub enum Received {
    /// Bytes, in a ring buffer that goes back to the ring when dropped.
    Bytes(RingBytes),
    /// The end of the stream.
    End,
    /// Bytes arrived when the ring had no buffer left: they wait in the
    /// socket, to be read the usual way.
    NoBuffer,
}

/// Bytes a posted receive got, in one of the driver's ring buffers until
/// dropped. Must be dropped on the runtime's thread.
#[derive(Debug)]
pub struct RingBytes {
    at: *const u8,
    len: usize,
    bid: u16,
}

fn uring() -> io::Result<std::rc::Rc<std::cell::UnsafeCell<UringInner>>> {
    if !CURRENT.is_set() {
        return Err(io::ErrorKind::Unsupported.into());
    }
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => Ok(this.clone()),
        #[allow(unreachable_patterns)]
        _ => Err(io::ErrorKind::Unsupported.into()),
    })
}

impl PostedRecv {
    /// Nothing posted yet.
    pub const fn new() -> PostedRecv {
        PostedRecv {
            posted: 0,
            posted_at: 0,
        }
    }

    /// Posts a receive on `fd` unless one is posted already.
    /// `Unsupported` when the driver cannot (see the module's note).
    pub fn post(&mut self, fd: RawFd) -> io::Result<()> {
        if self.posted != 0 {
            return Ok(());
        }
        let driver = uring()?;
        let index = UringInner::post_recv(&driver, fd)?;
        match u32::try_from(index + 1) {
            Ok(posted) => {
                self.posted = posted;
                self.posted_at = UringInner::parks(&driver);
                Ok(())
            }
            Err(_) => {
                UringInner::drop_posted(&driver, index);
                Err(io::ErrorKind::OutOfMemory.into())
            }
        }
    }

    /// Whether anything arrived since the receive was posted: `Some(false)`
    /// when the kernel has seen the receive and it has not completed, as
    /// of the driver's last look at its completions (the window an epoll
    /// loop has too); `Some(true)` when it has completed; `None` when
    /// that cannot be known: none posted, or posted since the driver last
    /// submitted (bytes waiting already would complete it only then).
    pub fn since_posted(&self) -> Option<bool> {
        if self.posted == 0 {
            return None;
        }
        let driver = uring().ok()?;
        let index = self.posted as usize - 1;
        if !UringInner::is_pending(&driver, index) {
            return Some(true);
        }
        (UringInner::parks(&driver) != self.posted_at).then_some(false)
    }

    /// True when a receive is posted (completed or not).
    pub fn is_posted(&self) -> bool {
        self.posted != 0
    }

    /// Ready once the posted receive has completed, leaving what it got
    /// for [`PostedRecv::poll_recv`]: for a caller that must see an
    /// answer arrive while it does something else with the socket.
    /// Ready with `false` at once when none is posted (the caller then
    /// watches the socket's readiness itself).
    pub fn poll_arrived(&self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.posted == 0 {
            return Poll::Ready(false);
        }
        let Ok(driver) = uring() else {
            return Poll::Ready(false);
        };
        UringInner::poll_posted_completed(&driver, self.posted as usize - 1, cx).map(|()| true)
    }

    /// Ready with what the receive got, posting one on `fd` first if none
    /// is; `fd` must be the same socket while a receive is posted.
    pub fn poll_recv(&mut self, fd: RawFd, cx: &mut Context<'_>) -> Poll<io::Result<Received>> {
        self.post(fd)?;
        let driver = uring()?;
        let index = self.posted as usize - 1;
        let meta = match UringInner::poll_op(&driver, index, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(meta) => meta,
        };
        self.posted = 0;
        let bid = io_uring::cqueue::buffer_select(meta.flags);
        match (meta.result, bid) {
            (Ok(0), _) => {
                if let Some(bid) = bid {
                    UringInner::provide_buf(&driver, bid);
                }
                Poll::Ready(Ok(Received::End))
            }
            (Ok(n), Some(bid)) => match UringInner::ring_buf(&driver, bid) {
                Some(at) => Poll::Ready(Ok(Received::Bytes(RingBytes {
                    at,
                    len: (n as usize).min(BUF_LEN),
                    bid,
                }))),
                None => Poll::Ready(Err(io::ErrorKind::Other.into())),
            },
            (Ok(_), None) => Poll::Ready(Err(io::ErrorKind::InvalidData.into())),
            (Err(e), _) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                Poll::Ready(Ok(Received::NoBuffer))
            }
            (Err(e), bid) => {
                if let Some(bid) = bid {
                    UringInner::provide_buf(&driver, bid);
                }
                Poll::Ready(Err(e))
            }
        }
    }

    /// What the receive gets, posting one on `fd` first if none is.
    pub async fn recv(&mut self, fd: RawFd) -> io::Result<Received> {
        std::future::poll_fn(|cx| self.poll_recv(fd, cx)).await
    }
}

impl Drop for PostedRecv {
    fn drop(&mut self) {
        if self.posted != 0 {
            if let Ok(driver) = uring() {
                UringInner::drop_posted(&driver, self.posted as usize - 1);
            }
        }
    }
}

impl RingBytes {
    /// The bytes received.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the kernel wrote `len` bytes there, and the buffer is
        // not given back to the ring while `self` lives.
        unsafe { std::slice::from_raw_parts(self.at, self.len) }
    }
}

impl Drop for RingBytes {
    fn drop(&mut self) {
        if let Ok(driver) = uring() {
            UringInner::provide_buf(&driver, self.bid);
        }
    }
}
