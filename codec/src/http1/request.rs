//! The request head from a client: parsed strictly, framing decided, and
//! re-written for the upstream.

use std::io::Write;
use std::net::IpAddr;

use crate::HeaderRules;

use super::framing::Framing;
use super::{
    HeaderSlots, has_bare_lf, is_hop_by_hop_here, parse_content_length, trim_ows, write_header,
};

/// Most request headers accepted; more is a 431.
pub const MAX_HEADERS: usize = 128;

/// Why a request head was refused. Each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not a valid HTTP/1.x request head (400).
    Malformed(&'static str),
    /// Too many header fields (431).
    TooManyHeaders,
    /// A transfer coding ringway does not implement (501).
    UnsupportedCoding,
    /// A method ringway does not proxy, such as CONNECT (501).
    UnsupportedMethod,
}

impl HeadError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooManyHeaders => 431,
            HeadError::UnsupportedCoding | HeadError::UnsupportedMethod => 501,
        }
    }

    /// A short explanation for the response body.
    pub fn detail(self) -> &'static str {
        match self {
            HeadError::Malformed(why) => why,
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::UnsupportedCoding => "unsupported transfer coding",
            HeadError::UnsupportedMethod => "method not supported by this gateway",
        }
    }
}

/// A complete, validated request head; it borrows the read buffer.
#[derive(Debug, Clone, Copy)]
pub struct Request<'h, 'b> {
    /// The method, e.g. `GET`.
    pub method: &'b str,
    /// Origin-form target (path and query), also when the client sent the
    /// absolute form.
    pub target: &'b [u8],
    /// The authority to route on: the Host header, or the absolute-form
    /// target's authority.
    pub host: &'b [u8],
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// It came as an HTTP/2 stream (seen through this view).
    pub http2: bool,
    /// The header fields, in order.
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the head in the buffer, CRLFCRLF included.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: Framing,
    /// The client allows this connection to be reused after the response.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl Request<'_, '_> {
    /// A HEAD request: the response has no body whatever its headers say.
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)` means more
/// bytes are needed.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut HeaderSlots<'b, MAX_HEADERS>,
) -> Result<Option<Request<'h, 'b>>, HeadError> {
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // A request line that is already wrong need not wait for more.
            if has_bare_lf(buf) {
                return Err(HeadError::Malformed("bare LF in request head"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed("unsupported HTTP version"));
        }
        Err(_) => return Err(HeadError::Malformed("malformed request head")),
    };
    if has_bare_lf(&buf[..head_len]) {
        return Err(HeadError::Malformed("bare LF in request head"));
    }
    let (Some(method), Some(path), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(HeadError::Malformed("malformed request line"));
    };
    let headers: &'h [httparse::Header<'b>] = req.headers;
    if method == "CONNECT" {
        return Err(HeadError::UnsupportedMethod);
    }

    let (target, authority) = split_absolute_form(path.as_bytes())?;
    let mut host: Option<&[u8]> = None;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut expect_continue = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(HeadError::Malformed("more than one Host header"));
            }
            host = Some(trim_ows(h.value));
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(h.value)
                .ok_or(HeadError::Malformed("invalid Content-Length"))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(HeadError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',').map(trim_ows) {
                if chunked {
                    // Anything after `chunked` means chunked is not last.
                    return Err(HeadError::Malformed(
                        "chunked is not the final transfer coding",
                    ));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked = true;
                } else {
                    return Err(HeadError::UnsupportedCoding);
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if trim_ows(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',').map(trim_ows) {
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }

    let framing = match (transfer_encoding, content_length) {
        (true, Some(_)) => {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        (true, None) if minor_version == 0 => {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        (true, None) if !chunked => return Err(HeadError::Malformed("empty Transfer-Encoding")),
        (true, None) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    let host = match (authority, host) {
        (Some(a), _) => a,
        (None, Some(h)) if !h.is_empty() => h,
        (None, _) if minor_version == 0 => b"",
        (None, _) => return Err(HeadError::Malformed("missing Host header")),
    };
    if !is_authority(host) {
        return Err(HeadError::Malformed("invalid Host"));
    }
    let keep_alive = if minor_version == 0 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };
    Ok(Some(Request {
        method,
        target,
        host,
        minor_version,
        http2: false,
        headers,
        head_len,
        framing,
        keep_alive,
        expect_continue,
    }))
}

/// True when `host` holds only what an authority's `host[:port]` can
/// (RFC 3986 §3.2.2: reg-name, IP literal, port; RFC 9112 §3.2 asks for a
/// 400 otherwise). A `/`, `?`, `#`, `@` or space in it would be read as
/// part of a path or user info by whoever rebuilds a URI from it: the
/// HTTP/2 upstream request's `:authority` and `:path` come from the Host
/// and the target.
fn is_authority(host: &[u8]) -> bool {
    host.iter().all(|&b| AUTHORITY_BYTE[usize::from(b)])
}

/// The bytes [`is_authority`] allows, as a table: one load per byte
/// instead of a search of the punctuation list (every request's Host goes
/// through it).
const AUTHORITY_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"-._~!$&'()*+,;=%:[]";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

/// `http://host:port/path?q` -> (`/path?q`, Some(`host:port`)); any other
/// target is returned as is.
fn split_absolute_form(path: &[u8]) -> Result<(&[u8], Option<&[u8]>), HeadError> {
    let rest = if path.len() > 7 && path[..7].eq_ignore_ascii_case(b"http://") {
        &path[7..]
    } else if path.len() > 8 && path[..8].eq_ignore_ascii_case(b"https://") {
        &path[8..]
    } else {
        return Ok((path, None));
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, target) = rest.split_at(end);
    if authority.is_empty() || authority.contains(&b'@') {
        return Err(HeadError::Malformed("invalid absolute-form target"));
    }
    // `http://host?q` has an empty path: it means `/?q`; the caller
    // forwards a target that starts with `?` as `/` + target.
    Ok((
        if target.is_empty() { b"/" } else { target },
        Some(authority),
    ))
}

/// What the gateway adds when it forwards a request.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client's address, appended to `X-Forwarded-For`.
    pub client_ip: IpAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'a str,
    /// A header the gateway alone sets, and its value if any: the client's
    /// copies are dropped (so it cannot claim a client identity).
    pub identity: Option<(&'a str, Option<&'a [u8]>)>,
    /// A request id ringway generated, to add as `x-request-id` (the
    /// client's own, if any, passes through in place).
    pub request_id: Option<&'a [u8]>,
    /// The `traceparent` that makes ringway's span the upstream's parent;
    /// replaces the client's. Empty: none.
    pub traceparent: &'a [u8],
    /// The protocol the client asks to switch to (`Upgrade: websocket`),
    /// passed on with `Connection: upgrade`; `None` drops any upgrade.
    pub upgrade: Option<&'a [u8]>,
}

/// A route's changes to a request on its way up.
#[derive(Debug, Clone, Copy)]
pub struct RequestEdits<'a> {
    /// Headers added, set and removed.
    pub headers: &'a HeaderRules,
    /// Path prefix rewrite: (matched prefix, replacement).
    pub rewrite_prefix: Option<(&'a str, &'a str)>,
    /// Host header rewrite.
    pub rewrite_host: Option<&'a str>,
    /// Headers whose names hold `_` are left out (nginx's and Envoy's
    /// default): `X_Forwarded_For` must not slip past rules written for
    /// `X-Forwarded-For` to an upstream that folds `_` into `-`.
    pub drop_underscored: bool,
}

/// The protocol a request asks to switch to, when it is one the gateway
/// tunnels: a GET with `Connection: upgrade` and `Upgrade: websocket`
/// (RFC 6455 §4.1). Other upgrades (h2c, say) are dropped as hop-by-hop.
pub fn websocket_upgrade<'b>(req: &Request<'_, 'b>) -> Option<&'b [u8]> {
    if req.method != "GET" || req.minor_version == 0 {
        return None;
    }
    let asks = super::connection_tokens(req.headers).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    let upgrade = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))?
        .value;
    let websocket = upgrade
        .split(|&b| b == b',')
        .any(|p| super::trim_ows(p).eq_ignore_ascii_case(b"websocket"));
    (asks && websocket).then_some(super::trim_ows(upgrade))
}

/// Writes the request head for the upstream into `out` (cleared first):
/// the same method, target and headers in their order, less hop-by-hop
/// headers, with ringway's own framing header and the forwarding headers.
pub fn write_upstream_head(
    out: &mut Vec<u8>,
    req: &Request<'_, '_>,
    fwd: Forwarded<'_>,
    edits: RequestEdits<'_>,
) {
    out.clear();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    match edits.rewrite_prefix {
        Some((from, to)) if req.target.starts_with(from.as_bytes()) => {
            out.extend_from_slice(to.as_bytes());
            out.extend_from_slice(&req.target[from.len()..]);
        }
        _ => {
            if req.target.first() == Some(&b'?') {
                out.push(b'/');
            }
            out.extend_from_slice(req.target);
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let rules = edits.headers;
    let mut wrote_host = false;
    for h in req.headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            // In its place, rewritten or not. `req.host` is the authority
            // the request was routed on: an absolute-form target's wins
            // over the client's Host (RFC 9112 §3.2.2), so the upstream
            // must see that one too, not a second name the routing never
            // looked at.
            let value = edits.rewrite_host.map_or(req.host, str::as_bytes);
            write_header(out, name.as_bytes(), value);
            wrote_host = true;
            continue;
        }
        if rules.drops(name)
            || (edits.drop_underscored && name.contains('_'))
            || fwd
                .identity
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        // X-Forwarded-For and Via are lists this hop appends to; they are
        // written once, merged, after the client's other headers.
        let replaced = name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("x-forwarded-for")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
            || name.eq_ignore_ascii_case("via")
            || (!fwd.traceparent.is_empty() && name.eq_ignore_ascii_case("traceparent"));
        if replaced || is_hop_by_hop_here(name, req.headers) {
            continue;
        }
        write_header(out, name.as_bytes(), h.value);
    }
    if !wrote_host {
        // An HTTP/1.0 request in absolute form may have none.
        let host = edits.rewrite_host.map_or(req.host, str::as_bytes);
        if !host.is_empty() {
            write_header(out, b"host", host);
        }
    }
    for (name, value) in rules.set.iter().chain(&rules.add) {
        write_header(out, name.as_bytes(), value.as_bytes());
    }
    if !fwd.traceparent.is_empty() {
        write_header(out, b"traceparent", fwd.traceparent);
    }
    if let Some(id) = fwd.request_id {
        write_header(out, b"x-request-id", id);
    }
    if let Some(protocol) = fwd.upgrade {
        write_header(out, b"upgrade", protocol);
        write_header(out, b"connection", b"upgrade");
    }
    if let Some((name, Some(value))) = fwd.identity {
        write_header(out, name.as_bytes(), value);
    }
    // This hop's entry, after the client's list unless the route removes
    // it (then the upstream sees this hop only), and none at all when the
    // route sets its own value.
    let xff = "x-forwarded-for";
    if !rules.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(xff)) {
        out.extend_from_slice(b"x-forwarded-for: ");
        if !rules.remove.iter().any(|n| n.eq_ignore_ascii_case(xff)) {
            write_list_prefix(out, xff, req.headers);
        }
        write_ip(out, fwd.client_ip);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-proto: ");
    out.extend_from_slice(fwd.proto.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-host: ");
    out.extend_from_slice(req.host);
    out.extend_from_slice(b"\r\nvia: ");
    write_list_prefix(out, "via", req.headers);
    out.extend_from_slice(if req.http2 {
        b"2 ringway\r\n"
    } else if req.minor_version == 0 {
        b"1.0 ringway\r\n"
    } else {
        b"1.1 ringway\r\n"
    });
    match req.framing {
        Framing::Empty => {
            // Keep an explicit `Content-Length: 0` on methods that carry a
            // body, so the upstream does not wait for one.
            if matches!(req.method, "POST" | "PUT" | "PATCH") {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::UntilClose => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes every earlier value of the list header `name`, each followed
/// by `, `, so that the caller appends its own element.
/// Writes `ip` as text. IPv4 without `fmt`: this runs on every forwarded
/// request, and formatting through `Display` cost more than the rest of
/// the header.
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        if octet >= 100 {
            out.push(b'0' + octet / 100);
        }
        if octet >= 10 {
            out.push(b'0' + octet / 10 % 10);
        }
        out.push(b'0' + octet % 10);
    }
}

fn write_list_prefix(out: &mut Vec<u8>, name: &str, headers: &[httparse::Header<'_>]) {
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
        let v = trim_ows(h.value);
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
}

#[cfg(test)]
mod tests;
