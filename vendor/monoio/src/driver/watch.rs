//! ringway: waiting for a socket to turn readable with one multishot
//! `POLL_ADD` armed for the socket's life, instead of one poll armed and
//! torn down per wait. Each time the socket becomes readable the kernel
//! posts a completion and the poll stays armed; a wait consumes the
//! completions that came since the last one. io_uring only: on the
//! legacy driver a wait answers `Unsupported`.
//!
//! A completion says that bytes arrived (or the peer closed) at some
//! point since the last wait, not that they are still unread: the caller
//! reads without blocking and waits again when nothing is there.

use std::{
    io,
    os::fd::RawFd,
    task::{Context, Poll},
};

use super::{Inner, UringInner, CURRENT};

/// A multishot readability poll on one socket. Four bytes: it is kept in
/// every idle connection, so it holds neither the socket (the caller
/// passes it to each wait) nor the driver (the thread's current one).
/// Dropped on the runtime's thread, it cancels the poll.
#[derive(Debug, Default)]
pub struct ReadinessWatch {
    /// The armed poll's slab index plus one; 0 when none is armed (not
    /// yet, or the kernel ended it: a full completion queue or an error),
    /// and the next wait arms one.
    armed: u32,
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

impl ReadinessWatch {
    /// A watch with nothing armed yet.
    pub const fn new() -> ReadinessWatch {
        ReadinessWatch { armed: 0 }
    }

    /// Ready when the socket `fd` turned readable (or was closed) since
    /// the last time this returned ready; the first call arms the poll.
    /// `Unsupported` when the runtime's driver is not io_uring. `fd` must
    /// be the same socket at every call while the watch lives.
    pub fn poll_readable(&mut self, fd: RawFd, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let driver = uring()?;
        if self.armed == 0 {
            let sqe = io_uring::opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as _)
                .multi(true)
                .build();
            let index = UringInner::submit_sqe(&driver, sqe)?;
            let Ok(armed) = u32::try_from(index + 1) else {
                UringInner::drop_multishot(&driver, index);
                return Poll::Ready(Err(io::ErrorKind::OutOfMemory.into()));
            };
            self.armed = armed;
        }
        let index = self.armed as usize - 1;
        let meta = match UringInner::poll_multishot(&driver, index, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(meta) => meta,
        };
        if !io_uring::cqueue::more(meta.flags) {
            // Ended by the kernel (its last completion removed the
            // entry): armed again at the next wait.
            self.armed = 0;
        }
        match meta.result {
            Ok(_) => Poll::Ready(Ok(())),
            // Ended without an event (the completion queue overflowed):
            // a wait that may be spurious costs the caller one read.
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Waits until the socket `fd` turned readable since the last wait.
    pub async fn readable(&mut self, fd: RawFd) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_readable(fd, cx)).await
    }
}

impl Drop for ReadinessWatch {
    fn drop(&mut self) {
        if self.armed != 0 {
            if let Ok(driver) = uring() {
                // The poll holds the socket's file, not its number: it is
                // released once the cancel is processed, whether or not
                // the descriptor was closed first.
                UringInner::drop_multishot(&driver, self.armed as usize - 1);
            }
        }
    }
}
