//! An upstream's bytes: a response head parsed strictly, its body framed
//! and relayed the way the client gets it, and the head written for the
//! client parsed back.
//!
//! Input: one control byte, then the bytes the upstream sent.
//! - bit 0: the request was HEAD;
//! - bit 1: the client speaks HTTP/1.0 (else 1.1);
//! - bit 2: the gateway closes the client connection after this response;
//! - bits 3..6: body bytes are fed N at a time (0: all at once).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_codec::HeaderRules;
use ringway_codec::http1::framing::{BodyReader, Framing};
use ringway_codec::http1::header_slots;
use ringway_codec::http1::relay::{Relay, frame_into};
use ringway_codec::http1::response::{self, ClientBody};

fuzz_target!(|data: &[u8]| {
    let Some((&control, buf)) = data.split_first() else {
        return;
    };
    let request_is_head = control & 1 != 0;
    let client_minor = if control & 2 != 0 { 0 } else { 1 };
    let close = control & 4 != 0;
    let step = usize::from((control >> 3) & 7);
    let rules = HeaderRules {
        add: vec![("x-added".into(), "1".into())],
        set: vec![("server".into(), "ringway".into())],
        remove: vec!["x-remove".into()],
    };

    let mut slots = header_slots::<{ response::MAX_HEADERS }>();
    let resp = match response::parse(buf, &mut slots, request_is_head) {
        Ok(Some(resp)) => resp,
        Ok(None) | Err(_) => return,
    };
    assert!(resp.head_len <= buf.len());
    assert!(buf[..resp.head_len].ends_with(b"\r\n\r\n"));
    assert!(resp.minor_version <= 1);
    let bodiless =
        request_is_head || (100..200).contains(&resp.status) || matches!(resp.status, 204 | 304);
    if bodiless {
        assert_eq!(resp.framing, Framing::Empty);
    }
    if resp.framing == Framing::UntilClose {
        assert!(!resp.keep_alive);
    }

    // The client's head, parsed back by the same strict parser.
    let body = ClientBody::choose(resp.framing, client_minor);
    let mut out = Vec::new();
    response::write_client_head(&mut out, &resp, body, close, &rules);
    let mut back_slots = header_slots::<{ response::MAX_HEADERS }>();
    let back = match response::parse(&out, &mut back_slots, request_is_head) {
        Ok(Some(back)) => back,
        Ok(None) => panic!("incomplete client head {:?}", String::from_utf8_lossy(&out)),
        Err(e) if e.0 == "too many headers" => return,
        Err(e) => panic!(
            "client head refused ({e}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    };
    assert_eq!(back.head_len, out.len());
    assert_eq!(back.status, resp.status);
    let expected = match body {
        ClientBody::None => Framing::Empty,
        ClientBody::Length(n) => Framing::Length(n),
        ClientBody::Chunked | ClientBody::EncodeChunked => Framing::Chunked,
        ClientBody::UntilClose => Framing::UntilClose,
    };
    assert_eq!(
        back.framing,
        expected,
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    if close || body.needs_close() {
        assert!(!back.keep_alive);
    }
    let mut lengths = 0;
    for h in back.headers {
        let name = h.name.to_ascii_lowercase();
        assert!(
            !matches!(
                name.as_str(),
                "keep-alive" | "te" | "trailer" | "upgrade" | "proxy-connection" | "x-remove"
            ),
            "{name} passed on: {:?}",
            String::from_utf8_lossy(&out)
        );
        lengths += usize::from(name == "content-length");
    }
    assert!(lengths <= 1);

    // The body: fed whole or in pieces, the same outcome; relayed, the
    // client gets what its framing says.
    let rest = &buf[resp.head_len..];
    let whole = relay(resp.framing, body, rest, 0);
    let stepped = relay(resp.framing, body, rest, step);
    assert_eq!(whole, stepped);
    if let Some((consumed, done, client_bytes)) = whole {
        assert!(consumed <= rest.len());
        match body {
            ClientBody::None => assert!(client_bytes.is_empty() && done),
            ClientBody::Length(_) | ClientBody::Chunked => {
                assert_eq!(client_bytes, &rest[..consumed]);
            }
            ClientBody::UntilClose => assert!(client_bytes.len() <= consumed),
            ClientBody::EncodeChunked => {
                // Our chunks, closed, decode back to the upstream's bytes.
                let mut chunks = client_bytes.clone();
                chunks.extend_from_slice(b"0\r\n\r\n");
                let mut reader = BodyReader::new(Framing::Chunked);
                let mut payload = Vec::new();
                let p = reader
                    .advance(&chunks, Some(&mut payload))
                    .expect("our chunks parse");
                assert!(p.done && p.consumed == chunks.len());
                assert_eq!(payload, &rest[..consumed]);
            }
        }
    }
});

/// What the client gets for `rest`, fed `step` bytes at a time (0: at
/// once): (bytes of the body, body complete, bytes for the client), or
/// `None` when the framing is refused.
fn relay(
    framing: Framing,
    body: ClientBody,
    rest: &[u8],
    step: usize,
) -> Option<(usize, bool, Vec<u8>)> {
    let how = match body {
        ClientBody::None | ClientBody::Length(_) | ClientBody::Chunked => Relay::PassThrough,
        ClientBody::EncodeChunked => Relay::Encode,
        ClientBody::UntilClose => match framing {
            Framing::Chunked => Relay::Decode,
            _ => Relay::PassThrough,
        },
    };
    let mut reader = BodyReader::new(framing);
    let mut out = Vec::new();
    let mut consumed = 0;
    if reader.is_done() {
        return Some((0, true, out));
    }
    let step = if step == 0 { rest.len().max(1) } else { step };
    for piece in rest.chunks(step) {
        // Encode re-frames each piece as its own chunk: compare the
        // decoded form, not the chunk boundaries.
        let mut piece_out = Vec::new();
        let n = frame_into(&mut piece_out, &mut reader, piece, how).ok()?;
        if how == Relay::Encode {
            let mut reader = BodyReader::new(Framing::Chunked);
            let mut payload = Vec::new();
            reader
                .advance(&piece_out, Some(&mut payload))
                .expect("our chunk parses");
            assert_eq!(payload, &piece[..n]);
            // Normalize to one chunk per call's worth of payload.
            out.extend_from_slice(&payload);
        } else {
            out.extend_from_slice(&piece_out);
        }
        consumed += n;
        if reader.is_done() {
            break;
        }
    }
    if how == Relay::Encode && !out.is_empty() {
        let mut chunk = Vec::new();
        ringway_codec::http1::framing::chunk_header(&mut chunk, out.len());
        chunk.extend_from_slice(&out);
        chunk.extend_from_slice(b"\r\n");
        out = chunk;
    }
    Some((consumed, reader.is_done(), out))
}
