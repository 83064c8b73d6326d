//! The response head from an upstream: parsed strictly, its body framing
//! decided, and re-written for the client.

use std::io::Write;

use crate::HeaderRules;

use super::framing::Framing;
use super::{
    HeaderSlots, has_bare_lf, is_hop_by_hop_here, parse_content_length, trim_ows, write_header,
};

/// Most response headers accepted from an upstream.
pub const MAX_HEADERS: usize = 128;

/// The upstream's response head is not one a proxy can pass on safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid upstream response: {0}")]
pub struct InvalidResponse(pub &'static str);

/// A complete upstream response head; it borrows the read buffer.
#[derive(Debug)]
pub struct Response<'h, 'b> {
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: &'b str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// The header fields, in order.
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the head, CRLFCRLF included.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: Framing,
    /// The upstream allows this connection to be reused.
    pub keep_alive: bool,
}

/// Parses an upstream response head. `request_is_head` tells that the
/// request was HEAD, whose response has no body whatever it says.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut HeaderSlots<'b, MAX_HEADERS>,
    request_is_head: bool,
) -> Result<Option<Response<'h, 'b>>, InvalidResponse> {
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let head_len = match config.parse_response_with_uninit_headers(&mut resp, buf, headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(InvalidResponse("too many headers")),
        Err(_) => return Err(InvalidResponse("malformed head")),
    };
    if has_bare_lf(&buf[..head_len]) {
        return Err(InvalidResponse("bare LF in head"));
    }
    let (Some(status), Some(minor_version)) = (resp.code, resp.version) else {
        return Err(InvalidResponse("malformed status line"));
    };
    // httparse takes any three digits; below 100 is no status (RFC 9110
    // §15), and written back as `HTTP/1.1 99` it would not parse.
    if status < 100 {
        return Err(InvalidResponse("status code below 100"));
    }
    let reason = resp.reason.unwrap_or("");
    let headers: &'h [httparse::Header<'b>] = resp.headers;

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n =
                parse_content_length(h.value).ok_or(InvalidResponse("invalid Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(InvalidResponse("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            let last = h.value.rsplit(|&b| b == b',').map(trim_ows).next();
            chunked_last = last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(trim_ows) {
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if transfer_encoding && content_length.is_some() {
        return Err(InvalidResponse("both Content-Length and Transfer-Encoding"));
    }
    let no_body = request_is_head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else if transfer_encoding {
        if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = framing != Framing::UntilClose
        && if minor_version == 0 {
            conn_keep_alive && !conn_close
        } else {
            !conn_close
        };
    Ok(Some(Response {
        status,
        reason,
        minor_version,
        headers,
        head_len,
        framing,
        keep_alive,
    }))
}

/// How the body travels to the client, decided from the upstream's framing
/// and what the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBody {
    /// No body bytes (HEAD, 1xx, 204, 304, or empty).
    None,
    /// `Content-Length`, passed through.
    Length(u64),
    /// Chunked from the upstream, passed through byte for byte.
    Chunked,
    /// Close-delimited from the upstream, chunked to a 1.1 client.
    EncodeChunked,
    /// The payload alone, delimited by closing (a 1.0 client).
    UntilClose,
}

impl ClientBody {
    /// Chooses how to send a body with `framing` to a client speaking
    /// HTTP/1.`client_minor`.
    pub fn choose(framing: Framing, client_minor: u8) -> ClientBody {
        match (framing, client_minor) {
            (Framing::Empty, _) => ClientBody::None,
            (Framing::Length(n), _) => ClientBody::Length(n),
            (Framing::Chunked, 1) => ClientBody::Chunked,
            (Framing::UntilClose, 1) => ClientBody::EncodeChunked,
            (Framing::Chunked | Framing::UntilClose, _) => ClientBody::UntilClose,
        }
    }

    /// The connection must close after this body to delimit it.
    pub fn needs_close(self) -> bool {
        self == ClientBody::UntilClose
    }
}

/// Writes the head for the client into `out` (cleared first): the status
/// and the upstream's headers in order, less hop-by-hop ones, with the
/// framing ringway sends and its `Via`.
pub fn write_client_head(
    out: &mut Vec<u8>,
    resp: &Response<'_, '_>,
    body: ClientBody,
    close: bool,
    rules: &HeaderRules,
) {
    out.clear();
    let _ = write!(out, "HTTP/1.1 {} ", resp.status);
    out.extend_from_slice(resp.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut wrote_length = false;
    for h in resp.headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            // A bodiless response (HEAD, 304) keeps the length it
            // describes; a body with a length gets it written once below.
            if body == ClientBody::None && !wrote_length && resp.status >= 200 && resp.status != 204
            {
                write_header(out, b"content-length", trim_ows(h.value));
                wrote_length = true;
            }
            continue;
        }
        if name.eq_ignore_ascii_case("via")
            || is_hop_by_hop_here(name, resp.headers)
            || rules.drops(name)
        {
            continue;
        }
        write_header(out, name.as_bytes(), h.value);
    }
    for (name, value) in rules.set.iter().chain(&rules.add) {
        write_header(out, name.as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"via: ");
    for h in resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("via"))
    {
        out.extend_from_slice(trim_ows(h.value));
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(if resp.minor_version == 0 {
        b"1.0 ringway\r\n"
    } else {
        b"1.1 ringway\r\n"
    });
    match body {
        ClientBody::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        ClientBody::Chunked | ClientBody::EncodeChunked => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        ClientBody::None | ClientBody::UntilClose => {}
    }
    if close || body.needs_close() {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the head of a `101 Switching Protocols` for the client into
/// `out` (cleared first): the upstream's fields less hop-by-hop ones, with
/// the `Upgrade` and `Connection` that make the switch.
pub fn write_switching_head(out: &mut Vec<u8>, resp: &Response<'_, '_>, rules: &HeaderRules) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    let mut upgrade: &[u8] = b"websocket";
    for h in resp.headers {
        if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = trim_ows(h.value);
            continue;
        }
        if is_hop_by_hop_here(h.name, resp.headers) || rules.drops(h.name) {
            continue;
        }
        write_header(out, h.name.as_bytes(), h.value);
    }
    for (name, value) in rules.set.iter().chain(&rules.add) {
        write_header(out, name.as_bytes(), value.as_bytes());
    }
    write_header(out, b"upgrade", upgrade);
    out.extend_from_slice(b"connection: upgrade\r\n\r\n");
}

/// Writes a complete response that ringway makes itself (an error or a
/// direct response) into `out` (cleared first). `head_only` leaves the
/// body out, for HEAD.
pub fn write_own_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head_only: bool,
    close: bool,
) {
    out.clear();
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", super::reason(status));
    for (name, value) in headers {
        write_header(out, name.as_bytes(), value.as_bytes());
    }
    let _ = write!(out, "content-length: {}\r\n", body.len());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// Writes ringway's own error response for `status` with a one-line
/// explanation.
pub fn write_error(out: &mut Vec<u8>, status: u16, detail: &str, close: bool) {
    out.clear();
    let body_len = detail.len() + 1;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {body_len}\r\n{}\r\n{detail}\n",
        super::reason(status),
        if close { "connection: close\r\n" } else { "" },
    );
}

#[cfg(test)]
mod tests;
