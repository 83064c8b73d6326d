//! HTTP/1.1 on both sides: parsing heads strictly, deciding body framing,
//! and writing heads for the other side. Pure code: no I/O, no allocation
//! beyond the caller's reused output buffers.

pub mod framing;
pub mod relay;
pub mod request;
pub mod response;

/// Headers a proxy never forwards (RFC 9110 §7.6.1), besides any that the
/// `Connection` header names.
fn is_hop_by_hop(name: &str) -> bool {
    const HOP_BY_HOP: [&str; 6] = [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    // `Proxy-Connection`, `Proxy-Authorization`, `Proxy-Authenticate`:
    // meant for this hop, never for the origin.
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
}

/// The comma-separated tokens of every `Connection` header.
fn connection_tokens<'a>(headers: &'a [httparse::Header<'a>]) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// True when `name` is hop-by-hop, by definition or because a `Connection`
/// header names it.
fn is_hop_by_hop_here(name: &str, headers: &[httparse::Header<'_>]) -> bool {
    is_hop_by_hop(name)
        || connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Strips optional whitespace (SP / HTAB) at both ends.
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parses a Content-Length value: digits only, no sign, no list.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = trim_ows(value);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Room for the headers of one head, left uninitialised: httparse fills
/// what it parses. An initialised array (`EMPTY_HEADER`s) costs a 4 KiB
/// fill for every head parsed.
pub type HeaderSlots<'b, const N: usize> = [std::mem::MaybeUninit<httparse::Header<'b>>; N];

/// Fresh [`HeaderSlots`].
pub fn header_slots<'b, const N: usize>() -> HeaderSlots<'b, N> {
    [const { std::mem::MaybeUninit::uninit() }; N]
}

/// True when a bare LF (one not preceded by CR) ends a line in `head`.
/// httparse accepts bare LF; a proxy must not, or it reads lines that the
/// server behind it does not.
fn has_bare_lf(head: &[u8]) -> bool {
    // memchr finds the few LFs of a head without looking at each byte.
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// Writes `name: value\r\n`.
fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for the statuses ringway produces itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b" 7 "), Some(7));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1,1",
            b"0x10",
            b"1 2",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bare_lf_is_found() {
        assert!(!has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\nHost: a\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: a\r\n\n"));
        // At either end, and after a lone CR.
        assert!(!has_bare_lf(b""));
        assert!(has_bare_lf(b"\nGET / HTTP/1.1\r\n\r\n"));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\r\n\n"));
    }

    #[test]
    fn hop_by_hop_includes_connection_named_headers() {
        let headers = [httparse::Header {
            name: "Connection",
            value: b"close, X-Secret",
        }];
        assert!(is_hop_by_hop_here("x-secret", &headers));
        assert!(is_hop_by_hop_here("Keep-Alive", &headers));
        assert!(is_hop_by_hop_here("Proxy-Authorization", &headers));
        assert!(!is_hop_by_hop_here("x-public", &headers));
        assert!(!is_hop_by_hop_here("proxy", &headers));
    }
}
