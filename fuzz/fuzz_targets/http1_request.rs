//! A client connection's bytes: request heads parsed one after another
//! (pipelining), each body framed with `BodyReader`, and each head
//! re-written for the upstream and parsed back.
//!
//! Input: one control byte, then the bytes the client sent.
//! - bits 0..3: body bytes are fed N at a time (0: all at once);
//! - bit 3: the body reader keeps chunked trailers;
//! - bit 4: the route drops headers with `_`;
//! - bit 5: the route rewrites the host;
//! - bit 6: the route rewrites the prefix `/api` to `/v2`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use ringway_codec::HeaderRules;
use ringway_codec::http1::framing::{BodyReader, Framing, FramingError, Progress};
use ringway_codec::http1::header_slots;
use ringway_codec::http1::relay::{Relay, frame_into};
use ringway_codec::http1::request::{self, Forwarded, Request, RequestEdits};
use ringway_codec::path::{PathRules, normalize};

fuzz_target!(|data: &[u8]| {
    let Some((&control, conn)) = data.split_first() else {
        return;
    };
    let step = usize::from(control & 7);
    let keep_trailers = control & 8 != 0;
    let rules = HeaderRules {
        add: vec![("x-added".into(), "1".into())],
        set: vec![("x-set".into(), "2".into())],
        remove: vec!["x-remove".into()],
    };
    let edits = RequestEdits {
        headers: &rules,
        rewrite_prefix: (control & 64 != 0).then_some(("/api", "/v2")),
        rewrite_host: (control & 32 != 0).then_some("upstream.internal"),
        drop_underscored: control & 16 != 0,
    };

    let mut pos = 0;
    // A pipelined connection: one request after another until the bytes
    // run out, a head is refused, or a body is incomplete.
    for _ in 0..32 {
        let buf = &conn[pos..];
        let mut slots = header_slots::<{ request::MAX_HEADERS }>();
        let req = match request::parse(buf, &mut slots) {
            Ok(Some(req)) => req,
            Ok(None) | Err(_) => return,
        };
        assert!(req.head_len <= buf.len());
        assert!(buf[..req.head_len].ends_with(b"\r\n\r\n"));
        assert_ne!(req.method, "CONNECT");
        assert!(req.minor_version <= 1);
        assert!(!matches!(req.framing, Framing::UntilClose));
        upstream_head_parses_back(&req, edits);

        // As the gateway does: route and forward the normal form.
        let mut normal = Vec::new();
        if let Ok(true) = normalize(req.target, PathRules::default(), &mut normal) {
            let normalized = Request {
                target: &normal,
                ..req
            };
            upstream_head_parses_back(&normalized, edits);
        }

        let body = &buf[req.head_len..];
        let whole = feed(req.framing, keep_trailers, body, 0);
        let stepped = feed(req.framing, keep_trailers, body, step);
        assert_eq!(
            whole, stepped,
            "feeding {step} bytes at a time changed the outcome"
        );
        let Ok(fed) = whole else { return };
        check_body(req.framing, body, &fed);
        relays_agree(req.framing, body, &fed);
        if !fed.done {
            return;
        }
        pos += req.head_len + fed.consumed;
    }
});

#[derive(Debug, PartialEq, Eq)]
struct Fed {
    consumed: usize,
    done: bool,
    payload: Vec<u8>,
    trailers: Vec<u8>,
}

/// Feeds `body` to a fresh reader `step` bytes at a time (0: at once)
/// until it is done.
fn feed(framing: Framing, keep: bool, body: &[u8], step: usize) -> Result<Fed, FramingError> {
    let mut reader = BodyReader::new(framing);
    if keep {
        reader = reader.keep_trailers();
    }
    let mut payload = Vec::new();
    let mut consumed = 0;
    let step = if step == 0 { body.len().max(1) } else { step };
    let mut done = reader.is_done();
    for piece in body.chunks(step) {
        if done {
            break;
        }
        let Progress {
            consumed: n,
            done: d,
        } = reader.advance(piece, Some(&mut payload))?;
        assert!(n <= piece.len());
        // A reader that stops short of a piece's end has finished.
        assert!(
            n == piece.len() || d,
            "stopped at {n} of {} without finishing",
            piece.len()
        );
        consumed += n;
        done = d;
    }
    assert_eq!(done, reader.is_done());
    Ok(Fed {
        consumed,
        done,
        payload,
        trailers: reader.trailers().to_vec(),
    })
}

fn check_body(framing: Framing, body: &[u8], fed: &Fed) {
    assert!(fed.consumed <= body.len());
    // The payload is the body less its framing: never more bytes.
    assert!(fed.payload.len() <= fed.consumed);
    match framing {
        Framing::Empty => assert_eq!((fed.consumed, fed.done), (0, true)),
        Framing::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            assert_eq!(fed.consumed, n.min(body.len()));
            assert_eq!(fed.done, fed.consumed == n);
            assert_eq!(fed.payload, &body[..fed.consumed]);
        }
        Framing::Chunked => {
            if fed.done {
                // The bytes that made a complete body make the same body
                // again, with nothing left over.
                let again = feed(Framing::Chunked, true, &body[..fed.consumed], 0)
                    .expect("a body accepted once is accepted again");
                assert!(again.done);
                assert_eq!(again.consumed, fed.consumed);
                assert_eq!(again.payload, fed.payload);
                // Trailer lines are complete CRLF-ended lines.
                assert!(again.trailers.is_empty() || again.trailers.ends_with(b"\r\n"));
            }
        }
        Framing::UntilClose => unreachable!("requests are never close-delimited"),
    }
}

/// The three ways of relaying a body agree with the reader.
fn relays_agree(framing: Framing, body: &[u8], fed: &Fed) {
    let mut out = Vec::new();
    let n = frame_into(
        &mut out,
        &mut BodyReader::new(framing),
        body,
        Relay::PassThrough,
    )
    .expect("accepted by the reader");
    assert_eq!(n, fed.consumed);
    assert_eq!(out, &body[..n]);

    out.clear();
    let n = frame_into(&mut out, &mut BodyReader::new(framing), body, Relay::Decode)
        .expect("accepted by the reader");
    assert_eq!(n, fed.consumed);
    assert_eq!(out, fed.payload);

    // Close-delimited in, chunked out: decoding the chunks gives back
    // the bytes.
    out.clear();
    let n = frame_into(
        &mut out,
        &mut BodyReader::new(Framing::UntilClose),
        body,
        Relay::Encode,
    )
    .expect("a close-delimited body is never refused");
    assert_eq!(n, body.len());
    out.extend_from_slice(b"0\r\n\r\n");
    let decoded = feed(Framing::Chunked, false, &out, 0).expect("our own chunks parse");
    assert!(decoded.done);
    assert_eq!(decoded.consumed, out.len());
    assert_eq!(decoded.payload, body);
}

/// The head written for the upstream is one ringway's own strict parser
/// reads back the same way: same method, target, host and framing.
fn upstream_head_parses_back(req: &Request<'_, '_>, edits: RequestEdits<'_>) {
    let fwd = Forwarded {
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        proto: "http",
        identity: Some(("x-client-cert", Some(b"cn=fuzz"))),
        request_id: Some(b"0f3a"),
        traceparent: b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        upgrade: request::websocket_upgrade(req),
    };
    let mut out = Vec::new();
    request::write_upstream_head(&mut out, req, fwd, edits);
    let host = edits.rewrite_host.map_or(req.host, str::as_bytes);
    if host.is_empty() {
        // An HTTP/1.0 request without any host: the upstream head has none.
        return;
    }
    let mut slots = header_slots::<{ request::MAX_HEADERS }>();
    let back = match request::parse(&out, &mut slots) {
        Ok(Some(back)) => back,
        Ok(None) => panic!(
            "incomplete upstream head {:?}",
            String::from_utf8_lossy(&out)
        ),
        Err(request::HeadError::TooManyHeaders) => return,
        Err(e) => panic!(
            "upstream head refused ({e:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(back.head_len, out.len());
    assert_eq!(back.method, req.method);
    assert_eq!(
        back.framing,
        req.framing,
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(back.host, host, "{:?}", String::from_utf8_lossy(&out));
    let mut target = Vec::new();
    match edits.rewrite_prefix {
        Some((from, to)) if req.target.starts_with(from.as_bytes()) => {
            target.extend_from_slice(to.as_bytes());
            target.extend_from_slice(&req.target[from.len()..]);
        }
        _ => {
            if req.target.first() == Some(&b'?') {
                target.push(b'/');
            }
            target.extend_from_slice(req.target);
        }
    }
    assert_eq!(back.target, target);
    // Nothing hop-by-hop from the client survives, and the identity
    // header is ringway's alone.
    for h in back.headers {
        let name = h.name.to_ascii_lowercase();
        assert!(
            !matches!(
                name.as_str(),
                "keep-alive" | "te" | "trailer" | "proxy-connection"
            ),
            "{name} forwarded"
        );
        if name == "x-client-cert" {
            assert_eq!(h.value, b"cn=fuzz");
        }
        assert_ne!(name, "x-remove");
    }
}
