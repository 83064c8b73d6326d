//! Uring state lifecycle.
//! Partly borrow from tokio-uring.

use std::{
    io,
    task::{Context, Poll, Waker},
};

use crate::{driver::op::CompletionMeta, utils::slab::Ref};

pub(crate) enum Lifecycle {
    /// The operation has been submitted to uring and is currently in-flight
    Submitted,

    /// The submitter is waiting for the completion of the operation
    Waiting(Waker),

    /// The submitter no longer has interest in the operation result. The state
    /// must be passed to the driver and held until the operation completes.
    #[allow(dead_code)]
    Ignored(Box<dyn std::any::Any>),

    /// The operation has completed.
    Completed(io::Result<u32>, u32),
}

impl<'a> Ref<'a, Lifecycle> {
    /// ringway: true when nobody waits for the result any more (the
    /// operation was dropped): a buffer the kernel selected for it goes
    /// back to the ring.
    pub(crate) fn complete(mut self, result: io::Result<u32>, flags: u32) -> bool {
        let ref_mut = &mut *self;
        match ref_mut {
            Lifecycle::Submitted => {
                *ref_mut = Lifecycle::Completed(result, flags);
            }
            Lifecycle::Waiting(_) => {
                let old = std::mem::replace(ref_mut, Lifecycle::Completed(result, flags));
                match old {
                    Lifecycle::Waiting(waker) => {
                        waker.wake();
                    }
                    _ => unsafe { std::hint::unreachable_unchecked() },
                }
            }
            // ringway: a multishot operation stays in the slab until its
            // last completion (one without `IORING_CQE_F_MORE`).
            Lifecycle::Ignored(..) if io_uring::cqueue::more(flags) => return true,
            Lifecycle::Ignored(..) => {
                self.remove();
                return true;
            }
            // ringway: only a multishot operation completes again before
            // it is polled; the newest completion is the one kept.
            Lifecycle::Completed(..) => {
                *ref_mut = Lifecycle::Completed(result, flags);
            }
        }
        false
    }

    /// ringway: ready once the operation has completed, leaving its
    /// result for `poll_op` to take.
    pub(crate) fn poll_completed(mut self, cx: &mut Context<'_>) -> Poll<()> {
        let ref_mut = &mut *self;
        match ref_mut {
            Lifecycle::Submitted => {
                *ref_mut = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Waiting(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *ref_mut = Lifecycle::Waiting(cx.waker().clone());
                }
                Poll::Pending
            }
            Lifecycle::Completed(..) => Poll::Ready(()),
            Lifecycle::Ignored(..) => unsafe { std::hint::unreachable_unchecked() },
        }
    }

    /// ringway: gives up a single-shot operation that may have selected a
    /// buffer: the completion's flags when it had completed (removed
    /// now), `None` when the kernel still holds it (it must be cancelled,
    /// and stays in the slab, ignored, until it completes).
    pub(crate) fn drop_posted(mut self) -> Option<u32> {
        let ref_mut = &mut *self;
        match ref_mut {
            Lifecycle::Completed(_, flags) => {
                let flags = *flags;
                self.remove();
                Some(flags)
            }
            _ => {
                *ref_mut = Lifecycle::Ignored(Box::new(()));
                None
            }
        }
    }

    /// ringway: polls a multishot operation. A completion that says more
    /// will follow leaves the operation in the slab, waiting again; the
    /// last one removes it.
    pub(crate) fn poll_multishot(mut self, cx: &mut Context<'_>) -> Poll<CompletionMeta> {
        let ref_mut = &mut *self;
        match ref_mut {
            Lifecycle::Submitted => {
                *ref_mut = Lifecycle::Waiting(cx.waker().clone());
                Poll::Pending
            }
            Lifecycle::Waiting(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *ref_mut = Lifecycle::Waiting(cx.waker().clone());
                }
                Poll::Pending
            }
            Lifecycle::Completed(_, flags) if io_uring::cqueue::more(*flags) => {
                match std::mem::replace(ref_mut, Lifecycle::Submitted) {
                    Lifecycle::Completed(result, flags) => {
                        Poll::Ready(CompletionMeta { result, flags })
                    }
                    _ => unsafe { std::hint::unreachable_unchecked() },
                }
            }
            Lifecycle::Completed(..) => match self.remove() {
                Lifecycle::Completed(result, flags) => {
                    Poll::Ready(CompletionMeta { result, flags })
                }
                _ => unsafe { std::hint::unreachable_unchecked() },
            },
            Lifecycle::Ignored(..) => unsafe { std::hint::unreachable_unchecked() },
        }
    }

    /// ringway: true while an operation is in flight with no completion
    /// reaped (for a multishot one: none since it was last polled ready;
    /// one the kernel posted after the driver last looked is not seen).
    pub(crate) fn is_pending(&self) -> bool {
        matches!(&**self, Lifecycle::Submitted | Lifecycle::Waiting(_))
    }

    /// ringway: gives up a multishot operation. True when it had ended
    /// (removed now); false when the kernel still holds it (it must be
    /// cancelled, and stays in the slab, ignored, until its last
    /// completion).
    pub(crate) fn drop_multishot(mut self) -> bool {
        let ref_mut = &mut *self;
        match ref_mut {
            Lifecycle::Completed(_, flags) if !io_uring::cqueue::more(*flags) => {
                self.remove();
                true
            }
            _ => {
                *ref_mut = Lifecycle::Ignored(Box::new(()));
                false
            }
        }
    }

    #[allow(clippy::needless_pass_by_ref_mut)]
    pub(crate) fn poll_op(mut self, cx: &mut Context<'_>) -> Poll<CompletionMeta> {
        let ref_mut = &mut *self;
        match ref_mut {
            Lifecycle::Submitted => {
                *ref_mut = Lifecycle::Waiting(cx.waker().clone());
                return Poll::Pending;
            }
            Lifecycle::Waiting(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *ref_mut = Lifecycle::Waiting(cx.waker().clone());
                }
                return Poll::Pending;
            }
            _ => {}
        }

        match self.remove() {
            Lifecycle::Completed(result, flags) => Poll::Ready(CompletionMeta { result, flags }),
            _ => unsafe { std::hint::unreachable_unchecked() },
        }
    }

    // return if the op must has been finished
    pub(crate) fn drop_op<T: 'static>(mut self, data: &mut Option<T>) -> bool {
        let ref_mut = &mut *self;
        match ref_mut {
            Lifecycle::Submitted | Lifecycle::Waiting(_) => {
                if let Some(data) = data.take() {
                    *ref_mut = Lifecycle::Ignored(Box::new(data));
                } else {
                    *ref_mut = Lifecycle::Ignored(Box::new(())); // () is a ZST, so it does not
                                                                 // allocate
                };
                return false;
            }
            Lifecycle::Completed(..) => {
                self.remove();
            }
            Lifecycle::Ignored(..) => unsafe { std::hint::unreachable_unchecked() },
        }
        true
    }
}
