//! Boxing a request's future in a block the worker keeps for the next.
//!
//! An HTTP/1.1 connection boxes the state of the request it serves (about
//! 8.5 KiB of futures) so that a connection waiting for its next request
//! does not carry it. A block that size was one allocation and one free
//! per request, and mimalloc served it from its slow path nearly every
//! time (its pages of that size class hold a handful of blocks, retired
//! and made again as requests come and go: ~800 instructions a request,
//! callgrind, benches/RESULTS.md). The worker keeps the blocks of
//! finished requests instead, up to [`SPARE_BLOCKS`], for the next ones.

use std::alloc::Layout;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// Blocks kept per worker: about as many as requests served at once.
const SPARE_BLOCKS: usize = 64;

/// The worker's spare blocks, with the layout each was made for.
struct Spares(Vec<(Layout, NonNull<u8>)>);

impl Drop for Spares {
    fn drop(&mut self) {
        for (layout, block) in self.0.drain(..) {
            // SAFETY: each block was allocated with its layout and is not
            // in use (it is a spare).
            unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static SPARES: RefCell<Spares> = const { RefCell::new(Spares(Vec::new())) };
}

/// A block for `layout`: a spare when the worker has one, else new.
fn take_block(layout: Layout) -> NonNull<u8> {
    let spare = SPARES.with_borrow_mut(|spares| {
        let at = spares.0.iter().rposition(|(l, _)| *l == layout)?;
        Some(spares.0.swap_remove(at).1)
    });
    spare.unwrap_or_else(|| {
        // SAFETY: the layout has a non-zero size (checked by the caller).
        let block = unsafe { std::alloc::alloc(layout) };
        NonNull::new(block).unwrap_or_else(|| std::alloc::handle_alloc_error(layout))
    })
}

/// Keeps `block` as a spare, or frees it when enough are kept.
fn give_block(layout: Layout, block: NonNull<u8>) {
    let kept = SPARES
        .try_with(|spares| {
            let mut spares = spares.borrow_mut();
            if spares.0.len() < SPARE_BLOCKS {
                spares.0.push((layout, block));
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `block` was allocated with `layout` and is unused now.
        unsafe { std::alloc::dealloc(block.as_ptr(), layout) };
    }
}

/// A future in a heap block taken from (and given back to) the worker's
/// spares: `Box::pin` without an allocation per use.
pub(crate) struct SpareBox<F> {
    future: NonNull<F>,
}

impl<F: Future> SpareBox<F> {
    pub(crate) fn new(future: F) -> SpareBox<F> {
        let layout = Layout::new::<F>();
        if layout.size() == 0 {
            // Nothing to store: a dangling, aligned pointer is a valid
            // place for a zero-sized value.
            let at = NonNull::<F>::dangling();
            // SAFETY: writing a zero-sized value writes nothing.
            unsafe { at.as_ptr().write(future) };
            return SpareBox { future: at };
        }
        let at = take_block(layout).cast::<F>();
        // SAFETY: the block is unused, sized and aligned for `F`.
        unsafe { at.as_ptr().write(future) };
        SpareBox { future: at }
    }
}

impl<F> Drop for SpareBox<F> {
    fn drop(&mut self) {
        // SAFETY: the future was written at `future` and is dropped once,
        // in place (it may be pinned).
        unsafe { std::ptr::drop_in_place(self.future.as_ptr()) };
        let layout = Layout::new::<F>();
        if layout.size() != 0 {
            give_block(layout, self.future.cast());
        }
    }
}

// The future stays where it was written until dropped, whatever happens
// to the box: moving a `SpareBox` moves only the pointer, as with `Box`.
impl<F> Unpin for SpareBox<F> {}

impl<F: Future> Future for SpareBox<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future lives at `future` from `new` to `drop` and is
        // never moved out: pinned there.
        unsafe { Pin::new_unchecked(&mut *self.future.as_ptr()) }.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// A future that holds a large state and a drop counter.
    async fn holding(state: [u8; 4096], dropped: Rc<()>) -> usize {
        let _dropped = dropped;
        std::future::ready(()).await;
        state.iter().map(|&b| usize::from(b)).sum()
    }

    /// A box runs its future to its output, drops it once (finished or
    /// not), and the next box of the same layout reuses its block.
    #[test]
    fn reuses_the_block_and_drops_the_future_once() {
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build();
        let mut rt = rt.expect("a runtime");
        rt.block_on(async {
            let counter = Rc::new(());
            let first = SpareBox::new(holding([1; 4096], counter.clone()));
            let first_at = first.future.as_ptr() as usize;
            assert_eq!(first.await, 4096);
            assert_eq!(Rc::strong_count(&counter), 1, "dropped when done");
            let second = SpareBox::new(holding([2; 4096], counter.clone()));
            assert_eq!(second.future.as_ptr() as usize, first_at, "the spare block");
            // Dropped before it ran: its state goes all the same.
            drop(second);
            assert_eq!(Rc::strong_count(&counter), 1);
            let third = SpareBox::new(holding([3; 4096], counter.clone()));
            assert_eq!(third.await, 3 * 4096);
            // Zero-sized futures need no block.
            assert_eq!(SpareBox::new(std::future::ready(7)).await, 7);
        });
    }

    /// No more than SPARE_BLOCKS are kept: the rest are freed.
    #[test]
    fn keeps_a_bounded_number_of_blocks() {
        let boxes: Vec<_> = (0..SPARE_BLOCKS + 10)
            .map(|_| SpareBox::new(std::future::ready([0u8; 512])))
            .collect();
        drop(boxes);
        let kept = SPARES.with_borrow(|spares| {
            spares
                .0
                .iter()
                .filter(|(l, _)| *l == Layout::new::<std::future::Ready<[u8; 512]>>())
                .count()
        });
        assert_eq!(kept, SPARE_BLOCKS);
    }
}
