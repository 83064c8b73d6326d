//! Tunnels (WebSocket): after the upgrade, bytes are copied both ways
//! until either side closes; both close when neither has sent anything
//! for the listener's idle timeout, or when a drain's deadline passes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::time::Instant;

use super::h2::send_data;
use crate::buffer::{self, BUF_SIZE, WaitReadable};
use crate::deadline;
use crate::upstream::conn::UpstreamConn;

/// Resolves once nothing has moved for `idle`. Its deadline is an entry
/// in the worker's table ([`deadline`]), not a runtime timer in each
/// tunnel: a quiet tunnel costs little more than its two sockets.
pub(crate) async fn idle_for(last: &Cell<Instant>, idle: Duration) {
    loop {
        let due = last.get() + idle;
        if Instant::now() >= due {
            return;
        }
        let _ = deadline::within(due.into_std(), std::future::pending::<()>()).await;
    }
}

/// Copies `from` to `to` (after `early`, bytes read before the switch)
/// until `from` ends, then half-closes `to` so the other side sees the end.
pub(crate) async fn copy<R: AsyncReadRent + WaitReadable, W: AsyncWriteRent>(
    mut from: R,
    mut to: W,
    early: Vec<u8>,
    last: Rc<Cell<Instant>>,
) {
    if !early.is_empty() {
        let (res, _) = to.write_all(early).await;
        if res.is_err() {
            return;
        }
    }
    let mut chunks = Chunks::new();
    while let Some(buf) = chunks.next(&mut from).await {
        last.set(Instant::now());
        let (res, buf) = to.write_all(buf).await;
        chunks.done(buf);
        if res.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The reads of one direction of a tunnel, holding a buffer only while
/// bytes keep coming: a quiet tunnel (a WebSocket between messages) waits
/// for readability with none, so it costs no buffer in either direction.
struct Chunks {
    /// The read filled the whole buffer last time: more is likely waiting,
    /// so the next read goes straight to the socket.
    busy: bool,
}

impl Chunks {
    fn new() -> Chunks {
        Chunks { busy: false }
    }

    /// The next bytes from `from` in a buffer from the worker's spares;
    /// `None` at the end of the stream or on an error.
    async fn next<R: AsyncReadRent + WaitReadable>(&mut self, from: &mut R) -> Option<Vec<u8>> {
        if !self.busy {
            from.readable().await.ok()?;
        }
        let (res, buf) = from.read(buffer::take(BUF_SIZE)).await;
        match res {
            Ok(n) if n > 0 => {
                self.busy = n == buf.capacity();
                Some(buf)
            }
            _ => {
                buffer::give_back(buf);
                None
            }
        }
    }

    /// Gives back a buffer [`Chunks::next`] returned, once written.
    fn done(&mut self, buf: Vec<u8>) {
        buffer::give_back(buf);
    }
}

/// Moves a tunnel's bytes from one HTTP/2 stream to another until `from`
/// ends (then ends `to`) or either side resets; `last` is when bytes last
/// moved.
pub(crate) async fn pass_h2(mut from: RecvStream, mut to: SendStream<Bytes>, last: &Cell<Instant>) {
    while let Some(Ok(data)) = from.data().await {
        last.set(Instant::now());
        let len = data.len();
        if send_data(&mut to, data, false).await.is_err() {
            return;
        }
        let _ = from.flow_control().release_capacity(len);
    }
    let _ = to.send_data(Bytes::new(), true);
}

/// Joins a WebSocket's HTTP/2 stream to its HTTP/1.1 upstream connection
/// until either side ends or nothing moves for `idle`.
pub(crate) async fn tunnel_h1(
    up: UpstreamConn,
    mut from_client: RecvStream,
    mut to_client: SendStream<Bytes>,
    idle: Duration,
) {
    let early = up.rbuf.data().to_vec();
    // The rest of the connection (its read buffer) goes now, not with the
    // tunnel.
    let (stream, _tally) = up.into_stream();
    let (mut up_read, mut up_write) = stream.into_split();
    let last = Rc::new(Cell::new(Instant::now()));
    let down = async {
        if !early.is_empty()
            && send_data(&mut to_client, Bytes::from(early), false)
                .await
                .is_err()
        {
            return;
        }
        let mut chunks = Chunks::new();
        while let Some(buf) = chunks.next(&mut up_read).await {
            last.set(Instant::now());
            let data = Bytes::copy_from_slice(&buf);
            chunks.done(buf);
            if send_data(&mut to_client, data, false).await.is_err() {
                return;
            }
        }
        let _ = to_client.send_data(Bytes::new(), true);
    };
    let up = async {
        while let Some(Ok(data)) = from_client.data().await {
            last.set(Instant::now());
            let len = data.len();
            let (res, _) = up_write.write_all(data).await;
            if res.is_err() {
                break;
            }
            let _ = from_client.flow_control().release_capacity(len);
        }
        let _ = up_write.shutdown().await;
    };
    let both = async {
        monoio::join!(down, up);
    };
    monoio::select! {
        _ = both => {}
        _ = idle_for(&last, idle) => {}
    }
}

/// Joins a WebSocket's HTTP/2 stream to its HTTP/2 upstream stream (both
/// extended CONNECT) until either side ends or nothing moves for `idle`.
pub(crate) async fn tunnel_h2(
    from_client: RecvStream,
    to_upstream: SendStream<Bytes>,
    from_upstream: RecvStream,
    to_client: SendStream<Bytes>,
    idle: Duration,
) {
    let last = Rc::new(Cell::new(Instant::now()));
    let up = pass_h2(from_client, to_upstream, &last);
    let down = pass_h2(from_upstream, to_client, &last);
    let both = async {
        monoio::join!(up, down);
    };
    monoio::select! {
        _ = both => {}
        _ = idle_for(&last, idle) => {}
    }
}
