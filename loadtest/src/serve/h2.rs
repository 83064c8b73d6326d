//! The origin's HTTP/2 side (h2c after the preface, or h2 chosen by ALPN),
//! on the h2 crate over monoio-compat's tokio-style I/O adaptor. Each
//! stream is its own task; the accept loop drives the connection.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h2::RecvStream;
use h2::server::SendResponse;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ctx::{Ctx, STATS_PATH};

/// Serves HTTP/2 on `io` until the client goes away.
pub(super) async fn serve<T>(io: T, ctx: Rc<Ctx>)
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(1024)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake::<_, Bytes>(io)
        .await;
    let Ok(mut conn) = handshake else {
        ctx.stats.bad(ctx.id);
        return;
    };
    while let Some(next) = conn.accept().await {
        match next {
            Ok((req, respond)) => {
                monoio::spawn(stream(req, respond, ctx.clone()));
            }
            Err(_) => return,
        }
    }
}

async fn stream(req: http::Request<RecvStream>, mut respond: SendResponse<Bytes>, ctx: Rc<Ctx>) {
    let (parts, mut body) = req.into_parts();
    let stats = parts.uri.path() == STATS_PATH;
    let mut echo = ctx.opts.echo.then(|| echo_head(&parts));
    while let Some(chunk) = body.data().await {
        let Ok(data) = chunk else { return };
        let _ = body.flow_control().release_capacity(data.len());
        if let Some(e) = echo.as_mut() {
            e.extend_from_slice(&data);
        }
    }
    let (status, content_type, payload) = if stats {
        let json = serde_json::to_vec(&ctx.stats.totals()).unwrap_or_default();
        (200, "application/json", Bytes::from(json))
    } else {
        ctx.stats.h2_request(ctx.id);
        let delay = ctx.next_delay();
        if !delay.is_zero() {
            monoio::time::sleep(delay).await;
        }
        match echo {
            Some(e) => (ctx.opts.status, "text/plain", Bytes::from(e)),
            None => (
                ctx.opts.status,
                "application/octet-stream",
                ctx.body.clone(),
            ),
        }
    };
    let head_only = parts.method == http::Method::HEAD;
    let Ok(response) = http::Response::builder()
        .status(status)
        .header("x-ringload-server", ctx.opts.name.as_str())
        .header("content-type", content_type)
        .header("content-length", payload.len())
        .body(())
    else {
        // Only a name that is not a valid header value gets here.
        let _ = respond.send_response(http::Response::new(()), true);
        return;
    };
    let end = head_only || payload.is_empty();
    let Ok(mut send) = respond.send_response(response, end) else {
        return;
    };
    if !end {
        let _ = send.send_data(payload, true);
    }
}

/// The request's head in HTTP/1.1-like text, for echo mode.
fn echo_head(parts: &http::request::Parts) -> Vec<u8> {
    let mut head = format!("{} {} HTTP/2\r\n", parts.method, parts.uri).into_bytes();
    for (name, value) in parts.headers.iter() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Replays bytes already read (the sniffed preface) before reading on.
#[derive(Debug)]
pub(super) struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    pub(super) fn new(prefix: Bytes, inner: T) -> Rewind<T> {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
