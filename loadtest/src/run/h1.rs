//! The load generator's HTTP/1.1 side: keep-alive, optional pipelining
//! (a batch of `depth` requests in one write, then their responses), and
//! an incremental response parser that never buffers a body.

use std::rc::Rc;
use std::time::Instant;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::pacer::Pacer;
use super::recorder::ErrorKind;
use super::schedule::Lane;
use super::session::{ConnGuard, Protocol, SessionEnd, ThreadCtx, io_kind};
use crate::buf::{consume, read_more};
use crate::chunked::ChunkedDecoder;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

/// Why a response could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct ProtocolError(&'static str);

/// A complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Response {
    /// Status code.
    pub status: u16,
    /// The server will close the connection after it.
    pub close: bool,
    /// Body bytes on the wire.
    pub body: u64,
}

#[derive(Debug, Clone)]
enum State {
    Head,
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Reads responses one after another from a byte stream.
#[derive(Debug, Clone)]
pub(super) struct ResponseParser {
    state: State,
    head_request: bool,
    status: u16,
    close: bool,
    body: u64,
}

impl ResponseParser {
    /// A parser for responses to HEAD requests when `head_request`.
    pub(super) fn new(head_request: bool) -> ResponseParser {
        ResponseParser {
            state: State::Head,
            head_request,
            status: 0,
            close: false,
            body: 0,
        }
    }

    fn finish(&mut self) -> Response {
        self.state = State::Head;
        Response {
            status: self.status,
            close: self.close,
            body: self.body,
        }
    }

    /// Consumes what it can of `buf`; returns the bytes used and the
    /// response if one completed (then stops, leaving the rest).
    pub(super) fn advance(
        &mut self,
        buf: &[u8],
    ) -> Result<(usize, Option<Response>), ProtocolError> {
        let mut pos = 0;
        loop {
            match &mut self.state {
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut r = httparse::Response::new(&mut headers);
                    let n = match r.parse(&buf[pos..]) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) if buf.len() - pos > MAX_HEAD => {
                            return Err(ProtocolError("response head too large"));
                        }
                        Ok(httparse::Status::Partial) => return Ok((pos, None)),
                        Err(_) => return Err(ProtocolError("malformed response head")),
                    };
                    pos += n;
                    let status = r.code.unwrap_or(0);
                    if status == 101 {
                        return Err(ProtocolError("unexpected 101 Switching Protocols"));
                    }
                    if (100..200).contains(&status) {
                        continue;
                    }
                    let (framing, close) = framing(r.version.unwrap_or(1), r.headers)?;
                    self.status = status;
                    self.close = close;
                    self.body = 0;
                    if self.head_request || status == 204 || status == 304 {
                        return Ok((pos, Some(self.finish())));
                    }
                    match framing {
                        Framing::Length(0) => return Ok((pos, Some(self.finish()))),
                        Framing::Length(n) => self.state = State::Length(n),
                        Framing::Chunked => self.state = State::Chunked(ChunkedDecoder::default()),
                        Framing::UntilClose => {
                            self.close = true;
                            self.state = State::UntilClose;
                        }
                    }
                }
                State::Length(left) => {
                    let take = (*left).min((buf.len() - pos) as u64);
                    pos += take as usize;
                    *left -= take;
                    self.body += take;
                    if *left == 0 {
                        return Ok((pos, Some(self.finish())));
                    }
                    return Ok((pos, None));
                }
                State::Chunked(dec) => {
                    let (n, done) = dec
                        .decode(&buf[pos..], None)
                        .map_err(|_| ProtocolError("malformed chunked body"))?;
                    pos += n;
                    self.body += n as u64;
                    if done {
                        return Ok((pos, Some(self.finish())));
                    }
                    return Ok((pos, None));
                }
                State::UntilClose => {
                    self.body += (buf.len() - pos) as u64;
                    return Ok((buf.len(), None));
                }
            }
        }
    }

    /// The server closed: completes a body delimited by the close.
    pub(super) fn eof(&mut self) -> Option<Response> {
        matches!(self.state, State::UntilClose).then(|| self.finish())
    }
}

enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(
    version: u8,
    headers: &[httparse::Header<'_>],
) -> Result<(Framing, bool), ProtocolError> {
    let mut close = version == 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(ProtocolError("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(ProtocolError("conflicting content-length"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
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
    let framing = match (chunked, length) {
        (true, Some(_)) => return Err(ProtocolError("both content-length and chunked")),
        (true, None) => Framing::Chunked,
        (false, Some(n)) => Framing::Length(n),
        (false, None) => Framing::UntilClose,
    };
    Ok((framing, close))
}

/// Sends and receives on one connection until the run ends (`Done`) or
/// the connection breaks or is closed (`Reconnect`).
pub(super) async fn session<S: AsyncReadRent + AsyncWriteRent>(
    mut io: S,
    ctx: &Rc<ThreadCtx>,
    guard: &ConnGuard,
    lane: &Lane,
) -> SessionEnd {
    let plan = &ctx.plan;
    let s = &plan.schedule;
    let depth = match plan.protocol {
        Protocol::H1 { depth } => depth.max(1),
        Protocol::H2 { .. } => 1,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut parser = ResponseParser::new(plan.head);
    let mut pacer = Pacer::new();
    loop {
        let (n, intended) = if s.rate.is_some() {
            let Some(due) = lane.next_due(s) else {
                return SessionEnd::Done;
            };
            let now = Instant::now();
            if now >= s.end {
                return SessionEnd::Done;
            }
            if due > now {
                pacer.wait_until(due).await;
            }
            lane.advance();
            (1, Some(due))
        } else {
            match ctx.tickets.take(s, depth) {
                0 => return SessionEnd::Done,
                n => (n, None),
            }
        };
        let sent = Instant::now();
        let intended = intended.unwrap_or(sent);
        guard.arm(0, sent + plan.timeout);
        let (res, _) = io.write_all(plan.h1_bytes.slice(..n * plan.h1_len)).await;
        if let Err(e) = res {
            let kind = io_kind(&e, guard);
            for _ in 0..n {
                ctx.error(kind, intended, &e);
            }
            return SessionEnd::Reconnect;
        }
        let mut got = 0;
        while got < n {
            let mut used = 0;
            while got < n {
                match parser.advance(&buf[used..]) {
                    Ok((k, Some(resp))) => {
                        used += k;
                        got += 1;
                        ctx.response(intended, sent, resp.status, resp.body);
                        if resp.close && got < n {
                            for _ in got..n {
                                ctx.error(
                                    ErrorKind::Reset,
                                    intended,
                                    &"server closed with pipelined requests unanswered",
                                );
                            }
                            return SessionEnd::Reconnect;
                        } else if resp.close {
                            return SessionEnd::Reconnect;
                        }
                    }
                    Ok((k, None)) => {
                        used += k;
                        break;
                    }
                    Err(e) => {
                        for _ in got..n {
                            ctx.error(ErrorKind::Protocol, intended, &e);
                        }
                        return SessionEnd::Reconnect;
                    }
                }
            }
            consume(&mut buf, used);
            if got == n {
                break;
            }
            let (res, b) = read_more(&mut io, buf).await;
            buf = b;
            let why: Box<dyn std::fmt::Display> = match res {
                Ok(0) => {
                    if let Some(resp) = parser.eof() {
                        ctx.response(intended, sent, resp.status, resp.body);
                        got += 1;
                    }
                    Box::new("server closed the connection before answering")
                }
                Ok(_) => continue,
                Err(e) => Box::new(e),
            };
            let kind = if guard.timed_out() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Reset
            };
            for _ in got..n {
                ctx.error(kind, intended, &*why);
            }
            return SessionEnd::Reconnect;
        }
        guard.disarm(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_responses_with_each_framing() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcHTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let mut p = ResponseParser::new(false);
        let mut pos = 0;
        let mut seen = Vec::new();
        while pos < wire.len() {
            let (n, r) = p.advance(&wire[pos..]).unwrap();
            pos += n;
            seen.push(r.unwrap().status);
        }
        assert_eq!(seen, [200, 404, 204]);
    }

    #[test]
    fn body_split_over_reads_and_until_close() {
        let mut p = ResponseParser::new(false);
        let (n, r) = p
            .advance(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab")
            .unwrap();
        assert_eq!((n, r), (40, None));
        let (n, r) = p.advance(b"cd").unwrap();
        assert_eq!(n, 2);
        assert_eq!(r.unwrap().body, 4);

        let mut p = ResponseParser::new(false);
        let (_, r) = p.advance(b"HTTP/1.0 200 OK\r\n\r\nbody...").unwrap();
        assert!(r.is_none());
        let r = p.eof().unwrap();
        assert!(r.close);
        assert_eq!(r.body, 7);
    }

    #[test]
    fn skips_informational_and_rejects_garbage() {
        let mut p = ResponseParser::new(false);
        let (_, r) = p
            .advance(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.close);
        assert!(
            ResponseParser::new(false)
                .advance(b"SSH-2.0-OpenSSH\r\n\r\n")
                .is_err()
        );
        let both = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(ResponseParser::new(false).advance(both).is_err());
    }

    #[test]
    fn head_responses_have_no_body() {
        let mut p = ResponseParser::new(true);
        let (n, r) = p
            .advance(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
            .unwrap();
        assert_eq!(n, 40);
        assert_eq!(r.unwrap().body, 0);
    }
}
