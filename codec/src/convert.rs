//! Translation between HTTP/1.1 heads and HTTP/2 messages.
//!
//! The request policy (header rules, rewrites, `X-Forwarded-*`, `Via`,
//! request ids, trace context, identity) is applied once, by the HTTP/1.1
//! head writer, whatever the protocols: an HTTP/2 request is seen through
//! the same [`request::Request`] view, and an HTTP/2 upstream gets the
//! written head turned into an `http::Request`. Responses get the route's
//! rules here, with the same hop-by-hop filtering as the HTTP/1.1 path.

use crate::HeaderRules;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

use crate::http1::response;

/// Fields that describe one HTTP/1.1 connection and mean nothing (or are
/// forbidden) in HTTP/2 (RFC 9113 §8.2.2).
fn is_connection_specific(name: &str) -> bool {
    const NAMES: [&str; 7] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "host",
    ];
    NAMES.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// An HTTP/2 header map as the HTTP/1.1 code sees fields.
pub fn header_view(map: &HeaderMap) -> Vec<httparse::Header<'_>> {
    map.iter()
        .map(|(name, value)| httparse::Header {
            name: name.as_str(),
            value: value.as_bytes(),
        })
        .collect()
}

/// The upstream HTTP/2 request for an HTTP/1.1 head written by
/// `request::write_upstream_head` (`head` may be followed by body bytes).
/// `te_trailers` keeps the client's `te: trailers` (gRPC needs it).
pub fn upstream_request(
    head: &[u8],
    scheme: &'static str,
    te_trailers: bool,
) -> Result<(Request<()>, usize), &'static str> {
    let mut headers = crate::http1::header_slots::<{ crate::http1::request::MAX_HEADERS }>();
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match parsed.parse_with_uninit_headers(head, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("request head cannot be translated"),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("GET").as_bytes())
        .map_err(|_| "request method cannot be translated")?;
    let path = parsed.path.unwrap_or("/");
    let authority = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value)
        .unwrap_or(b"");
    // Built from its parts, each parsed as what it is: a Host that were
    // not a whole authority (`a/b`) must not spill into the path.
    let authority = if authority.is_empty() {
        http::uri::Authority::from_static("localhost")
    } else {
        http::uri::Authority::try_from(authority)
            .map_err(|_| "request authority cannot be translated")?
    };
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| "request target cannot be translated")?;
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let map = request.headers_mut();
    for h in parsed.headers.iter() {
        if is_connection_specific(h.name) {
            continue;
        }
        let (name, mut value) = header(h.name.as_bytes(), h.value)?;
        // A value new on every request would take a place in the
        // connection's HPACK table each time and push out the headers
        // that do repeat: sent never indexed instead.
        value.set_sensitive(is_unique_per_request(h.name));
        map.append(name, value);
    }
    if te_trailers {
        map.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
    Ok((request, head_len))
}

/// Headers whose value is new on every request: the request id and the
/// trace context that ringway (or the client) made up for it.
fn is_unique_per_request(name: &str) -> bool {
    name.eq_ignore_ascii_case("x-request-id") || name.eq_ignore_ascii_case("traceparent")
}

fn header(name: &[u8], value: &[u8]) -> Result<(HeaderName, HeaderValue), &'static str> {
    let name = HeaderName::from_bytes(name).map_err(|_| "header name cannot be translated")?;
    let value = HeaderValue::from_bytes(value).map_err(|_| "header value cannot be translated")?;
    Ok((name, value))
}

fn append(map: &mut HeaderMap, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
    let (name, value) = header(name, value)?;
    map.append(name, value);
    Ok(())
}

/// Applies a route's response rules to `map` and appends this hop's `Via`.
fn apply_rules(map: &mut HeaderMap, rules: &HeaderRules, via: &'static str) {
    for name in rules.remove.iter().chain(rules.set.iter().map(|(n, _)| n)) {
        map.remove(name.as_str());
    }
    for (name, value) in rules.set.iter().chain(&rules.add) {
        // Checked when the configuration was compiled.
        let _ = append(map, name.as_bytes(), value.as_bytes());
    }
    let via = match map.get(http::header::VIA).map(HeaderValue::as_bytes) {
        Some(prev) => {
            let mut v = prev.to_vec();
            v.extend_from_slice(b", ");
            v.extend_from_slice(via.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or(HeaderValue::from_static(via))
        }
        None => HeaderValue::from_static(via),
    };
    map.insert(http::header::VIA, via);
}

/// The HTTP/2 response head for an HTTP/1.1 upstream response.
pub fn response_from_h1(
    resp: &response::Response<'_, '_>,
    rules: &HeaderRules,
) -> Result<Response<()>, &'static str> {
    let mut out = Response::new(());
    *out.status_mut() =
        StatusCode::from_u16(resp.status).map_err(|_| "upstream status cannot be translated")?;
    let map = out.headers_mut();
    let listed = |name: &str| {
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut via: Vec<&[u8]> = Vec::new();
    for h in resp.headers {
        if h.name.eq_ignore_ascii_case("via") {
            via.push(h.value.trim_ascii());
            continue;
        }
        if is_connection_specific(h.name)
            || listed(h.name)
            || h.name.eq_ignore_ascii_case("trailer")
        {
            continue;
        }
        append(map, h.name.as_bytes(), h.value)?;
    }
    if !via.is_empty() {
        append(map, b"via", &via.join(&b", "[..]))?;
    }
    let hop = if resp.minor_version == 0 {
        "1.0 ringway"
    } else {
        "1.1 ringway"
    };
    apply_rules(map, rules, hop);
    Ok(out)
}

/// The HTTP/2 response head for an HTTP/2 upstream response.
pub fn response_from_h2(parts: &http::response::Parts, rules: &HeaderRules) -> Response<()> {
    let mut out = Response::new(());
    *out.status_mut() = parts.status;
    let map = out.headers_mut();
    *map = parts.headers.clone();
    apply_rules(map, rules, "2 ringway");
    out
}

/// A response the gateway makes itself, for an HTTP/2 client.
pub fn own_response(status: u16, headers: &[(String, String)], body_len: usize) -> Response<()> {
    let mut out = Response::new(());
    *out.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let map = out.headers_mut();
    for (name, value) in headers {
        let _ = append(map, name.as_bytes(), value.as_bytes());
    }
    map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body_len));
    out
}

/// An HTTP/2 response as the HTTP/1.1 head writer sees it: the status,
/// fields and framing (`Length` when the upstream said so, else the end of
/// the stream delimits it).
pub fn h1_response_view<'h, 'b>(
    parts: &'b http::response::Parts,
    headers: &'h [httparse::Header<'b>],
    body_ends_now: bool,
    request_is_head: bool,
) -> response::Response<'h, 'b> {
    let status = parts.status.as_u16();
    let length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let framing = if request_is_head || status == 204 || status == 304 || body_ends_now {
        match length {
            Some(n) if !request_is_head && status != 204 && status != 304 => {
                crate::http1::framing::Framing::Length(n)
            }
            _ => crate::http1::framing::Framing::Empty,
        }
    } else {
        match length {
            Some(n) => crate::http1::framing::Framing::Length(n),
            None => crate::http1::framing::Framing::UntilClose,
        }
    };
    response::Response {
        status,
        reason: parts.status.canonical_reason().unwrap_or(""),
        minor_version: 1,
        headers,
        head_len: 0,
        framing,
        keep_alive: true,
    }
}

/// An HTTP/1.1 chunked trailer section for HTTP/2 trailers (the final
/// `0\r\n` included).
pub fn write_chunked_trailers(out: &mut Vec<u8>, trailers: Option<&HeaderMap>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// HTTP/2 trailers for the lines of an HTTP/1.1 chunked trailer section
/// (as [`BodyReader::keep_trailers`](crate::http1::framing::BodyReader::keep_trailers)
/// keeps them). Fields that frame, route or authenticate a message are
/// not allowed in trailers (RFC 9110 §6.5.1) and are dropped, as are the
/// connection-specific ones and any line that is not a valid field.
pub fn trailers_from_chunked(lines: &[u8]) -> HeaderMap {
    const NOT_IN_TRAILERS: [&str; 5] = [
        "content-length",
        "content-type",
        "content-encoding",
        "authorization",
        "trailer",
    ];
    let mut map = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        if is_connection_specific(name.as_str()) || NOT_IN_TRAILERS.contains(&name.as_str()) {
            continue;
        }
        map.append(name, value);
    }
    map
}

/// The body bytes of a response the gateway makes itself.
pub fn own_body(body: &[u8]) -> Bytes {
    Bytes::copy_from_slice(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_trailer_lines_become_http2_trailers_without_forbidden_fields() {
        let map = trailers_from_chunked(
            b"Grpc-Status: 0\r\ngrpc-message:  ok \r\ncontent-length: 5\r\nbad line\r\n\
              x-a: 1\r\nx-a: 2\r\nbad name: x\r\nTransfer-Encoding: chunked\r\n",
        );
        assert_eq!(map.get("grpc-status").unwrap(), "0");
        assert_eq!(map.get("grpc-message").unwrap(), "ok");
        assert_eq!(map.get_all("x-a").iter().count(), 2);
        assert_eq!(map.len(), 4, "{map:?}");
    }

    /// Found by the `convert` fuzz target: `Host: example.com/6` made the
    /// HTTP/2 request `http://example.com/6/a`, its path taken from the
    /// Host.
    #[test]
    fn a_host_with_a_slash_does_not_spill_into_the_http2_path() {
        let head = b"GET /a HTTP/1.1\r\nhost: example.com/6\r\n\r\n";
        assert!(upstream_request(head, "http", false).is_err());
        let head = b"GET /a HTTP/1.1\r\nhost: example.com:8080\r\n\r\n";
        let (request, _) = upstream_request(head, "http", false).unwrap();
        assert_eq!(request.uri(), "http://example.com:8080/a");
    }

    #[test]
    fn upstream_requests_send_per_request_ids_never_indexed() {
        let head = b"GET /a?b HTTP/1.1\r\nhost: up.example\r\nuser-agent: t\r\nx-request-id: 0f3a\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nconnection: keep-alive\r\n\r\nbody";
        let (request, head_len) = upstream_request(head, "http", false).unwrap();
        assert_eq!(head_len, head.len() - 4);
        assert_eq!(request.uri(), "http://up.example/a?b");
        let headers = request.headers();
        assert!(headers["x-request-id"].is_sensitive());
        assert!(headers["traceparent"].is_sensitive());
        assert!(!headers["user-agent"].is_sensitive());
        // Host went to :authority; connection-specific headers go.
        assert!(!headers.contains_key("host"));
        assert!(!headers.contains_key("connection"));
    }
}
