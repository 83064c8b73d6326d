//! The origin's HTTP/1.1 side: keep-alive and pipelining on httparse with
//! owned buffers. Every complete request in a read is answered, and all
//! their responses leave in one write; framing that could be ambiguous is
//! refused with 400 and a close.

use std::rc::Rc;

use bytes::Bytes;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::ctx::{Ctx, STATS_PATH};
use crate::buf::{consume, read_more};
use crate::chunked::ChunkedDecoder;

/// Largest request head accepted (431 above).
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (413 above); bodies are buffered whole.
const MAX_BODY: u64 = 64 * 1024 * 1024;
const MAX_HEADERS: usize = 100;

/// A response head with the origin's name and a content length.
pub(super) fn response_head(
    status: u16,
    name: &str,
    len: usize,
    close: bool,
    content_type: &str,
) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let conn = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nx-ringload-server: {name}\r\ncontent-type: {content_type}\r\ncontent-length: {len}\r\n{conn}\r\n"
    )
    .into_bytes()
}

/// What one request asks for, once all of it has arrived.
#[derive(Debug)]
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// Refuse with this status and close.
    Bad(u16),
    /// A whole request of `used` bytes.
    Request(Request),
}

#[derive(Debug)]
struct Request {
    used: usize,
    close: bool,
    head: bool,
    stats: bool,
    /// For echo: the request's head and body.
    echo: Option<Vec<u8>>,
}

fn parse(buf: &[u8], echo: bool) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Parsed::Bad(431),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(431),
        Err(_) => return Parsed::Bad(400),
    };
    if head_len > MAX_HEAD {
        return Parsed::Bad(431);
    }
    let version = req.version.unwrap_or(1);
    let mut close = version == 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                return Parsed::Bad(400);
            };
            if length.is_some_and(|l| l != n) {
                return Parsed::Bad(400);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !h.value.eq_ignore_ascii_case(b"chunked") || chunked {
                return Parsed::Bad(400);
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    close = false;
                }
            }
        }
    }
    if chunked && length.is_some() {
        return Parsed::Bad(400);
    }
    let head = req.method == Some("HEAD");
    let stats = req.path == Some(STATS_PATH);
    let rest = &buf[head_len..];
    let mut body = echo.then(|| buf[..head_len].to_vec());
    let used = if chunked {
        let mut dec = ChunkedDecoder::default();
        match dec.decode(rest, body.as_mut()) {
            Ok((n, true)) => head_len + n,
            Ok((_, false)) if rest.len() as u64 > MAX_BODY => return Parsed::Bad(413),
            Ok((_, false)) => return Parsed::Partial,
            Err(_) => return Parsed::Bad(400),
        }
    } else {
        let n = length.unwrap_or(0);
        if n > MAX_BODY {
            return Parsed::Bad(413);
        }
        if (rest.len() as u64) < n {
            return Parsed::Partial;
        }
        if let Some(b) = body.as_mut() {
            b.extend_from_slice(&rest[..n as usize]);
        }
        head_len + n as usize
    };
    Parsed::Request(Request {
        used,
        close,
        head,
        stats,
        echo: body,
    })
}

/// Serves HTTP/1.1 on `io` until the client closes, asks to close, or
/// sends something malformed. `buf` holds bytes already read.
pub(super) async fn serve<S: AsyncReadRent + AsyncWriteRent>(
    mut io: S,
    mut buf: Vec<u8>,
    ctx: Rc<Ctx>,
) {
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        let mut used = 0;
        let mut close = false;
        // Single canned responses go out as the shared `Bytes` itself,
        // without a copy; anything else is gathered in `out`.
        let mut single: Option<Bytes> = None;
        loop {
            match parse(&buf[used..], ctx.opts.echo) {
                Parsed::Partial => break,
                Parsed::Bad(status) => {
                    ctx.stats.bad(ctx.id);
                    flush_single(&mut single, &mut out);
                    let msg = b"bad request\n";
                    out.extend_from_slice(&response_head(
                        status,
                        &ctx.opts.name,
                        msg.len(),
                        true,
                        "text/plain",
                    ));
                    out.extend_from_slice(msg);
                    close = true;
                    break;
                }
                Parsed::Request(req) => {
                    used += req.used;
                    if req.stats {
                        flush_single(&mut single, &mut out);
                        let body = serde_json::to_vec(&ctx.stats.totals()).unwrap_or_default();
                        out.extend_from_slice(&response_head(
                            200,
                            &ctx.opts.name,
                            body.len(),
                            req.close,
                            "application/json",
                        ));
                        out.extend_from_slice(&body);
                    } else {
                        ctx.stats.h1_request(ctx.id);
                        let delay = ctx.next_delay();
                        if !delay.is_zero() {
                            // Earlier pipelined answers must not wait for this one's delay.
                            flush_single(&mut single, &mut out);
                            if !out.is_empty() {
                                let (res, o) = io.write_all(out).await;
                                out = o;
                                out.clear();
                                if res.is_err() {
                                    return;
                                }
                            }
                            monoio::time::sleep(delay).await;
                        }
                        respond(&ctx, &req, &mut single, &mut out);
                    }
                    if req.close {
                        close = true;
                        break;
                    }
                }
            }
        }
        consume(&mut buf, used);
        if let Some(bytes) = single.take() {
            if out.is_empty() {
                if io.write_all(bytes).await.0.is_err() {
                    return;
                }
            } else {
                out.extend_from_slice(&bytes);
            }
        }
        if !out.is_empty() {
            let (res, o) = io.write_all(out).await;
            out = o;
            out.clear();
            if res.is_err() {
                return;
            }
        }
        if close {
            let _ = io.shutdown().await;
            return;
        }
        let (res, b) = read_more(&mut io, buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn flush_single(single: &mut Option<Bytes>, out: &mut Vec<u8>) {
    if let Some(b) = single.take() {
        out.extend_from_slice(&b);
    }
}

fn respond(ctx: &Ctx, req: &Request, single: &mut Option<Bytes>, out: &mut Vec<u8>) {
    let opts = &ctx.opts;
    if let Some(echo) = &req.echo {
        flush_single(single, out);
        out.extend_from_slice(&response_head(
            opts.status,
            &opts.name,
            echo.len(),
            req.close,
            "text/plain",
        ));
        if !req.head {
            out.extend_from_slice(echo);
        }
        return;
    }
    if req.close {
        flush_single(single, out);
        out.extend_from_slice(&response_head(
            opts.status,
            &opts.name,
            opts.body_size,
            true,
            "application/octet-stream",
        ));
        if !req.head {
            out.extend_from_slice(&ctx.body);
        }
        return;
    }
    let canned = if req.head { &ctx.head_only } else { &ctx.full };
    if single.is_none() && out.is_empty() {
        *single = Some(canned.clone());
    } else {
        flush_single(single, out);
        out.extend_from_slice(canned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(p: Parsed) -> Request {
        match p {
            Parsed::Request(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let two = b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET /b HTTP/1.1\r\nhost: a\r\n\r\n";
        let first = request(parse(two, false));
        assert_eq!(first.used, 27);
        assert!(!first.close);
        let second = request(parse(&two[first.used..], false));
        assert_eq!(first.used + second.used, two.len());
    }

    #[test]
    fn bodies_wait_until_complete_and_echo_whole_request() {
        let req = b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhel";
        assert!(matches!(parse(req, true), Parsed::Partial));
        let req = b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello";
        let r = request(parse(req, true));
        assert_eq!(r.echo.as_deref(), Some(&req[..]));
        let chunked =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        let r = request(parse(chunked, false));
        assert_eq!(r.used, chunked.len());
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let both = b"POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(matches!(parse(both, false), Parsed::Bad(400)));
        let dup = b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n";
        assert!(matches!(parse(dup, false), Parsed::Bad(400)));
        assert!(matches!(
            parse(b"\x00\x01 nonsense\r\n\r\n", false),
            Parsed::Bad(400)
        ));
    }

    #[test]
    fn close_and_http10_end_the_connection() {
        assert!(request(parse(b"GET / HTTP/1.0\r\n\r\n", false)).close);
        assert!(
            !request(parse(
                b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n",
                false
            ))
            .close
        );
        assert!(request(parse(b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n", false)).close);
    }
}
