//! A switched connection (WebSocket over HTTP/1.1): after the `101`, the
//! gateway copies bytes both ways until either side closes, and closes
//! both when neither has sent anything for the listener's idle timeout or
//! a drain's deadline passes.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::time::Instant;

use super::Session;
use crate::buffer::BUF_SIZE;

impl<S: AsyncReadRent + AsyncWriteRent + Split + 'static> Session<S> {
    /// Serves the connection's requests; then, if one switched protocols,
    /// the tunnel.
    pub(super) async fn serve(mut self) {
        self.run().await;
        let Some(up) = self.tunnel.take() else {
            return;
        };
        // A tunnel is a request still in flight: a drain lets it run until
        // either side closes or the drain deadline ends the worker, as it
        // does for a WebSocket over HTTP/2 (its stream counts) and for any
        // slow response.
        let _in_flight = self.worker.drain.request();
        let idle = self.listener.idle_timeout;
        let client_early = self.rbuf.data().to_vec();
        let upstream_early = up.rbuf.data().to_vec();
        let (client_read, client_write) = self.client.into_split();
        let (up_read, up_write) = up.stream.into_split();
        let last = Rc::new(Cell::new(Instant::now()));
        let to_upstream = copy(client_read, up_write, client_early, last.clone());
        let to_client = copy(up_read, client_write, upstream_early, last.clone());
        let both = async {
            monoio::join!(to_upstream, to_client);
        };
        monoio::select! {
            _ = both => {}
            _ = idle_for(&last, idle) => {}
        }
    }
}

/// Resolves once nothing has moved for `idle`.
pub(crate) async fn idle_for(last: &Cell<Instant>, idle: Duration) {
    loop {
        let due = last.get() + idle;
        if Instant::now() >= due {
            return;
        }
        monoio::time::sleep_until(due).await;
    }
}

/// Copies `from` to `to` (after `early`, bytes read before the switch)
/// until `from` ends, then half-closes `to` so the other side sees the end.
async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(
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
    let mut buf = Vec::with_capacity(BUF_SIZE);
    loop {
        let (res, b) = from.read(buf).await;
        buf = b;
        match res {
            Ok(n) if n > 0 => {}
            _ => break,
        }
        last.set(Instant::now());
        let (res, b) = to.write_all(buf).await;
        buf = b;
        if res.is_err() {
            break;
        }
        buf.clear();
    }
    let _ = to.shutdown().await;
}
