//! Bodies moved socket to socket inside the kernel: `splice(2)` from the
//! sending socket into a pipe, and from the pipe into the receiving
//! socket. The worker copies no byte of the body and makes two system
//! calls per pipe's worth (HAProxy's `option splice-auto` does the same).
//!
//! It applies between two plain TCP sockets when a body passes through
//! unchanged: HTTP/1.1 on both sides, nothing to re-frame, and enough of
//! it left to be worth a pipe (see [`SPLICE_MIN`]). Everything else copies
//! through the connection's read buffer.
//!
//! Why `splice(2)` and not io_uring's `SPLICE` operation: io_uring runs
//! every splice in one of its worker threads (the kernel marks the
//! operation to always go async), a thread hop per call. Here the worker
//! waits for readiness as for everything else (io_uring `POLL_ADD`) and
//! then calls `splice(2)` without blocking: it moves what the socket has
//! and returns. The two sockets are switched to `O_NONBLOCK` for this (a
//! blocking socket would block the worker when its peer stops reading);
//! io_uring's own operations on them are unaffected, as it does not wait
//! inside the call either way.
//!
//! `RINGWAY_SPLICE=0` in the environment turns splicing off (every body
//! then copies), for comparison and as a way out.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::timeout;
use ringway_codec::http1::framing::chunk_header;

use crate::buffer::send_now_with;
use crate::watch::WatchedSocket;

/// A body with less than this left is copied: a pipe's two system calls
/// and the two sockets' readiness waits cost more than copying it.
pub(crate) const SPLICE_MIN: u64 = 64 * 1024;

/// The pipe's capacity asked for: the most one pair of calls moves. The
/// kernel may give less (then the default 64 KiB).
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// Empty pipes kept per worker for the next body.
const SPARE_PIPES: usize = 16;

/// True unless `RINGWAY_SPLICE=0` is in the environment.
pub(crate) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("RINGWAY_SPLICE").is_none_or(|v| v != "0"))
}

/// A pipe for splicing: both ends non-blocking. Kept only while empty.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity in bytes.
    size: usize,
}

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    /// Bytes this worker has spliced.
    static SPLICED: Cell<u64> = const { Cell::new(0) };
}

/// Bytes this worker has moved by splicing (`ringway_spliced_bytes_total`).
pub(crate) fn spliced() -> u64 {
    SPLICED.get()
}

impl Pipe {
    /// A spare pipe of this worker's, or a new one.
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = PIPES.with_borrow_mut(Vec::pop) {
            return Ok(pipe);
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both descriptors are new and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure leaves the size.
        let size = unsafe {
            libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
            libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        let size = usize::try_from(size).unwrap_or(0).max(4096);
        Ok(Pipe { read, write, size })
    }

    /// Keeps an empty pipe for the next body; one still holding bytes
    /// (a transfer that failed midway) is closed.
    fn give_back(self, empty: bool) {
        if empty {
            PIPES.with_borrow_mut(|pipes| {
                if pipes.len() < SPARE_PIPES {
                    pipes.push(self);
                }
            });
        }
    }
}

/// Why a transfer ended before its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The sender closed its side.
    End,
    /// Nothing moved within the idle timeout.
    Timeout,
    /// Reading from the sender failed.
    ReadFailed,
    /// Writing to the receiver failed (it is gone).
    WriteFailed,
    /// The watched socket became readable (an upstream answering while
    /// the request body still comes).
    Watched,
    /// No pipe could be had: nothing moved, copy instead.
    NoPipe,
}

/// One non-blocking `splice(2)` of up to `len` bytes.
fn splice_now(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: splice between two descriptors the caller keeps open, no
    // offsets (both are a socket or a pipe).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sets `O_NONBLOCK` on a socket, if it is not set yet.
fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl reading and setting file status flags on an open fd.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0
            && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Moves up to `max` bytes from `from` to `to` through a pipe, waiting at
/// most `idle` for either socket each time; `watch`, if given, ends the
/// transfer when something arrives on that socket (an upstream answering
/// early), leaving it to be read. Returns how many bytes reached
/// `to`, and why it stopped short of `max` if it did.
pub(crate) async fn transfer(
    from: &TcpStream,
    to: &TcpStream,
    max: u64,
    idle: Duration,
    watch: Option<(&TcpStream, &WatchedSocket)>,
) -> (u64, Result<(), Stop>) {
    let (moved, _, end) = through_pipe(from, to, max, idle, watch, false).await;
    (moved, end)
}

/// Moves everything `from` sends, until it closes, to `to` as an
/// HTTP/1.1 chunked body: each pipe load is one chunk, its size line sent
/// before it, and the last chunk sent when `from` closes (then `Ok`).
/// For a close-delimited response to an HTTP/1.1 client, which must be
/// re-framed but not looked at. Returns the bytes that reached `to`,
/// framing included.
pub(crate) async fn transfer_chunked(
    from: &TcpStream,
    to: &TcpStream,
    idle: Duration,
) -> (u64, Result<(), Stop>) {
    let (moved, framing, end) = through_pipe(from, to, u64::MAX, idle, None, true).await;
    if end != Err(Stop::End) {
        return (moved + framing, end);
    }
    // The chunk before (if any) still owes its CRLF.
    let last: &[u8] = if moved > 0 {
        b"\r\n0\r\n\r\n"
    } else {
        b"0\r\n\r\n"
    };
    let end = send_all(to, last, idle, 0).await;
    let sent = if end.is_ok() { last.len() as u64 } else { 0 };
    (moved + framing + sent, end)
}

/// [`transfer`], and with `chunked` a chunk size line before each pipe
/// load: the payload bytes moved, the framing bytes sent, how it ended.
async fn through_pipe(
    from: &TcpStream,
    to: &TcpStream,
    max: u64,
    idle: Duration,
    watch: Option<(&TcpStream, &WatchedSocket)>,
    chunked: bool,
) -> (u64, u64, Result<(), Stop>) {
    let (Ok(pipe), Ok(()), Ok(())) = (
        Pipe::take(),
        set_nonblocking(from.as_raw_fd()),
        set_nonblocking(to.as_raw_fd()),
    ) else {
        return (0, 0, Err(Stop::NoPipe));
    };
    let mut moved = 0u64;
    let mut framing = 0u64;
    let mut line = Vec::new();
    let mut in_pipe = 0usize;
    let result = loop {
        if in_pipe > 0
            && let Err(stop) = empty_pipe(&pipe, to, &mut in_pipe, &mut moved, idle).await
        {
            break Err(stop);
        }
        if moved >= max {
            break Ok(());
        }
        let want = usize::try_from(max - moved)
            .unwrap_or(usize::MAX)
            .min(pipe.size);
        match splice_now(from.as_raw_fd(), pipe.write.as_raw_fd(), want) {
            Ok(0) => break Err(Stop::End),
            Ok(n) => {
                in_pipe = n;
                if chunked {
                    // The previous chunk's CRLF and this one's size line,
                    // held back (MSG_MORE) to leave with its data.
                    line.clear();
                    if moved > 0 {
                        line.extend_from_slice(b"\r\n");
                    }
                    chunk_header(&mut line, n);
                    if let Err(stop) = send_all(to, &line, idle, libc::MSG_MORE).await {
                        break Err(stop);
                    }
                    framing += line.len() as u64;
                }
            }
            Err(e) if would_block(&e) => {
                let readable = timeout(idle, from.readable(false));
                let waited = match watch {
                    None => readable.await,
                    Some((other, watched)) => monoio::select! {
                        r = readable => r,
                        _ = watched.arrived(other) => break Err(Stop::Watched),
                    },
                };
                match waited {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break Err(Stop::ReadFailed),
                    Err(_) => break Err(Stop::Timeout),
                }
            }
            Err(_) => break Err(Stop::ReadFailed),
        }
    };
    pipe.give_back(in_pipe == 0);
    (moved, framing, result)
}

/// Splices the `in_pipe` bytes in `pipe` out to `to`, counting them in
/// `moved` as they go.
async fn empty_pipe(
    pipe: &Pipe,
    to: &TcpStream,
    in_pipe: &mut usize,
    moved: &mut u64,
    idle: Duration,
) -> Result<(), Stop> {
    while *in_pipe > 0 {
        match splice_now(pipe.read.as_raw_fd(), to.as_raw_fd(), *in_pipe) {
            // The receiver took nothing and reported no error: treat it
            // as gone rather than spin.
            Ok(0) => return Err(Stop::WriteFailed),
            Ok(n) => {
                *in_pipe -= n;
                *moved += n as u64;
                SPLICED.set(SPLICED.get() + n as u64);
            }
            Err(e) if would_block(&e) => wait_writable(to, idle).await?,
            Err(_) => return Err(Stop::WriteFailed),
        }
    }
    Ok(())
}

/// Waits at most `idle` for room to write to `to`.
async fn wait_writable(to: &TcpStream, idle: Duration) -> Result<(), Stop> {
    match timeout(idle, to.writable(false)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Stop::WriteFailed),
        Err(_) => Err(Stop::Timeout),
    }
}

/// Sends all of `bytes` to `to` with non-blocking sends (`flags` added),
/// waiting at most `idle` for room each time.
async fn send_all(
    to: &TcpStream,
    mut bytes: &[u8],
    idle: Duration,
    flags: libc::c_int,
) -> Result<(), Stop> {
    while !bytes.is_empty() {
        match send_now_with(to.as_raw_fd(), bytes, flags) {
            Ok(0) => wait_writable(to, idle).await?,
            Ok(n) => bytes = &bytes[n..],
            Err(_) => return Err(Stop::WriteFailed),
        }
    }
    Ok(())
}

/// A client stream that may be a plain TCP socket, whose bytes are the
/// stream's own (so a body can be spliced to or from it).
pub(crate) trait PlainSocket {
    /// The socket, when the stream is a plain one.
    fn plain_socket(&self) -> Option<&TcpStream>;
}

impl PlainSocket for TcpStream {
    fn plain_socket(&self) -> Option<&TcpStream> {
        Some(self)
    }
}
