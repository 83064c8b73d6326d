//! HTTP/1.1 <-> HTTP/2 head conversion.
//!
//! Input: one control byte, then up to three parts separated by the
//! bytes `\0\0\n`: a client request head (and body), an upstream
//! HTTP/1.1 response head, and a chunked trailer section.
//! - bit 0: the upstream request is `https`;
//! - bit 1: the client asked for `te: trailers`;
//! - bit 2: the request was HEAD;
//! - bit 3: the HTTP/2 response's body ends with its head.
//!
//! Request: parsed, written for an HTTP/1.1 upstream as ringway does,
//! then turned into an `http::Request` for an HTTP/2 upstream. Response:
//! parsed, turned into an HTTP/2 response, passed through again as from
//! an HTTP/2 upstream, then written back for an HTTP/1.1 client. Each
//! HTTP/2 head has only lowercase names and no connection-specific
//! field; each HTTP/1.1 head parses back.
#![no_main]

use std::net::{IpAddr, Ipv6Addr};

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use ringway_codec::HeaderRules;
use ringway_codec::convert;
use ringway_codec::http1::framing::Framing;
use ringway_codec::http1::header_slots;
use ringway_codec::http1::request::{self, Forwarded, RequestEdits};
use ringway_codec::http1::response::{self, ClientBody};

const SEPARATOR: &[u8] = b"\0\0\n";

/// Fields HTTP/2 forbids (RFC 9113 8.2.2), and `host`, which becomes
/// `:authority`.
const CONNECTION_SPECIFIC: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "host",
];

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut parts = split(rest);
    let request_bytes = parts.next().unwrap_or_default();
    let response_bytes = parts.next().unwrap_or_default();
    let trailer_bytes = parts.next().unwrap_or_default();
    let scheme = if control & 1 != 0 { "https" } else { "http" };
    let te_trailers = control & 2 != 0;
    let request_is_head = control & 4 != 0;
    let body_ends_now = control & 8 != 0;
    let rules = HeaderRules {
        add: vec![("x-added".into(), "1".into())],
        set: vec![("x-set".into(), "2".into())],
        remove: vec!["x-remove".into()],
    };

    to_h2_upstream(request_bytes, scheme, te_trailers, &rules);
    responses(response_bytes, request_is_head, body_ends_now, &rules);

    let trailers = convert::trailers_from_chunked(trailer_bytes);
    h2_fields_are_clean(&trailers, false);
    for name in [
        "content-length",
        "content-type",
        "content-encoding",
        "authorization",
        "trailer",
    ] {
        assert!(!trailers.contains_key(name), "{name} in trailers");
    }
    let mut chunked = Vec::new();
    convert::write_chunked_trailers(&mut chunked, Some(&trailers));
    let mut reader =
        ringway_codec::http1::framing::BodyReader::new(Framing::Chunked).keep_trailers();
    let p = reader
        .advance(&chunked, None)
        .expect("our trailer section parses");
    assert!(p.done && p.consumed == chunked.len());
    // And back again: the same fields.
    assert_eq!(convert::trailers_from_chunked(reader.trailers()), trailers);
});

fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let data = rest?;
        match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                rest = Some(&data[at + SEPARATOR.len()..]);
                Some(&data[..at])
            }
            None => {
                rest = None;
                Some(data)
            }
        }
    })
}

/// Every name lowercase (HTTP/2 requires it) and none connection-specific.
fn h2_fields_are_clean(map: &HeaderMap, te_trailers_allowed: bool) {
    for (name, value) in map {
        let name = name.as_str();
        assert!(
            !name.bytes().any(|b| b.is_ascii_uppercase()),
            "{name} not lowercase"
        );
        assert!(
            !CONNECTION_SPECIFIC.contains(&name),
            "{name} in an HTTP/2 head"
        );
        if name == "te" {
            assert!(te_trailers_allowed && value == "trailers", "te: {value:?}");
        }
    }
}

fn to_h2_upstream(bytes: &[u8], scheme: &'static str, te_trailers: bool, rules: &HeaderRules) {
    let mut slots = header_slots::<{ request::MAX_HEADERS }>();
    let Ok(Some(req)) = request::parse(bytes, &mut slots) else {
        return;
    };
    let fwd = Forwarded {
        client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
        proto: scheme,
        identity: None,
        request_id: Some(b"r-1"),
        traceparent: b"",
        upgrade: None,
    };
    let edits = RequestEdits {
        headers: rules,
        rewrite_prefix: None,
        rewrite_host: None,
        drop_underscored: false,
    };
    let mut head = Vec::new();
    request::write_upstream_head(&mut head, &req, fwd, edits);
    let body_start = head.len();
    head.extend_from_slice(&bytes[req.head_len..]);
    let Ok((h2, head_len)) = convert::upstream_request(&head, scheme, te_trailers) else {
        return;
    };
    assert_eq!(head_len, body_start);
    assert_eq!(h2.method().as_str(), req.method);
    assert_eq!(h2.uri().scheme_str(), Some(scheme));
    if !req.host.is_empty() {
        assert_eq!(
            h2.uri().authority().map(|a| a.as_str().as_bytes()),
            Some(req.host),
            "{:?}",
            String::from_utf8_lossy(&head[..body_start])
        );
    }
    h2_fields_are_clean(h2.headers(), te_trailers);
    assert_eq!(h2.headers().contains_key("te"), te_trailers);
    assert!(!h2.headers().contains_key("x-remove"));
    // The view of an HTTP/2 request's fields that the HTTP/1.1 code uses.
    let view = convert::header_view(h2.headers());
    assert_eq!(view.len(), h2.headers().len());
}

fn responses(bytes: &[u8], request_is_head: bool, body_ends_now: bool, rules: &HeaderRules) {
    let mut slots = header_slots::<{ response::MAX_HEADERS }>();
    let Ok(Some(resp)) = response::parse(bytes, &mut slots, request_is_head) else {
        return;
    };
    let Ok(h2) = convert::response_from_h1(&resp, rules) else {
        return;
    };
    assert_eq!(h2.status().as_u16(), resp.status);
    h2_fields_are_clean(h2.headers(), false);
    assert!(!h2.headers().contains_key("x-remove"));
    assert!(!h2.headers().contains_key("trailer"));
    // Fields the upstream named in `Connection` are hop-by-hop too.
    for token in resp
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
    {
        if let Ok(name) = http::HeaderName::from_bytes(token)
            && !matches!(name.as_str(), "x-added" | "x-set" | "via")
        {
            assert!(
                !h2.headers().contains_key(&name),
                "{name} named in Connection passed on"
            );
        }
    }
    let via = h2.headers().get_all("via").iter().count();
    assert_eq!(via, 1);

    // As if the upstream were HTTP/2: the same fields, one more Via.
    let (parts, ()) = h2.into_parts();
    let again = convert::response_from_h2(&parts, &HeaderRules::default());
    h2_fields_are_clean(again.headers(), false);

    // For an HTTP/1.1 client: the view, then the head written and parsed
    // back.
    let view = convert::header_view(&parts.headers);
    let h1 = convert::h1_response_view(&parts, &view, body_ends_now, request_is_head);
    assert_ne!(h1.framing, Framing::Chunked);
    let body = ClientBody::choose(h1.framing, 1);
    let mut out = Vec::new();
    response::write_client_head(&mut out, &h1, body, false, &HeaderRules::default());
    let mut back_slots = header_slots::<{ response::MAX_HEADERS }>();
    match response::parse(&out, &mut back_slots, request_is_head) {
        Ok(Some(back)) => {
            assert_eq!(back.status, resp.status);
            assert_eq!(back.head_len, out.len());
        }
        Err(e) if e.0 == "too many headers" => {}
        other => panic!(
            "client head {:?} parsed as {other:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}
