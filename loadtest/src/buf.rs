//! Owned-buffer reads for io_uring: the kernel writes into the spare
//! capacity of a `Vec` that the caller owns again when the read completes.

use std::io;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

/// Free space guaranteed before each read.
const READ_CHUNK: usize = 16 * 1024;

/// Reads more bytes onto the end of `buf`, growing it when needed.
/// Returns the number read (0: the peer closed) and the buffer.
pub(crate) async fn read_more<S: AsyncReadRent>(
    io: &mut S,
    mut buf: Vec<u8>,
) -> (io::Result<usize>, Vec<u8>) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    let len = buf.len();
    let (res, slice) = io.read(buf.slice_mut(len..)).await;
    (res, slice.into_inner())
}

/// Drops the first `used` bytes of `buf`, keeping what follows (usually
/// nothing, or the start of the next message) at the front.
pub(crate) fn consume(buf: &mut Vec<u8>, used: usize) {
    if used >= buf.len() {
        buf.clear();
    } else if used > 0 {
        buf.copy_within(used.., 0);
        buf.truncate(buf.len() - used);
    }
}
