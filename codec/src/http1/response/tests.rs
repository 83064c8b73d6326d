use super::*;

fn framing_of(raw: &[u8], head: bool) -> Result<(Framing, bool), InvalidResponse> {
    let mut headers = crate::http1::header_slots();
    let resp = parse(raw, &mut headers, head)?.expect("complete");
    Ok((resp.framing, resp.keep_alive))
}

#[test]
fn framing_rules() {
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false),
        Ok((Framing::Length(3), true))
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true),
        Ok((Framing::Empty, true))
    );
    assert_eq!(
        framing_of(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        ),
        Ok((Framing::Chunked, true))
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 200 OK\r\n\r\n", false),
        Ok((Framing::UntilClose, false))
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 204 No Content\r\n\r\n", false),
        Ok((Framing::Empty, true))
    );
    assert_eq!(
        framing_of(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            false
        ),
        Ok((Framing::Empty, true))
    );
    assert_eq!(
        framing_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
            false
        ),
        Ok((Framing::Length(1), false))
    );
    assert_eq!(
        framing_of(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
        Ok((Framing::Length(1), false))
    );
}

#[test]
fn ambiguous_responses_are_refused() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 3\r\n\r\n",
        b"HTTX/1.1 200 OK\r\n\r\n",
    ] {
        assert!(
            framing_of(raw, false).is_err(),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn client_head_rewrites_framing_and_hop_by_hop() {
    let raw = b"HTTP/1.1 200 OK\r\nServer: up\r\nConnection: X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-Z: z\r\n\r\n";
    let mut headers = crate::http1::header_slots();
    let resp = parse(raw, &mut headers, false).unwrap().unwrap();
    let mut out = Vec::new();
    write_client_head(
        &mut out,
        &resp,
        ClientBody::choose(resp.framing, 1),
        false,
        &Default::default(),
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nServer: up\r\nX-Z: z\r\nvia: 1.1 ringway\r\ntransfer-encoding: chunked\r\n\r\n"
    );
}

#[test]
fn head_response_keeps_its_length() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n";
    let mut headers = crate::http1::header_slots();
    let resp = parse(raw, &mut headers, true).unwrap().unwrap();
    let mut out = Vec::new();
    write_client_head(
        &mut out,
        &resp,
        ClientBody::choose(resp.framing, 1),
        false,
        &Default::default(),
    );
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("content-length: 42\r\n")
    );
}

#[test]
fn a_one_zero_client_gets_a_close_delimited_body() {
    assert_eq!(
        ClientBody::choose(Framing::Chunked, 0),
        ClientBody::UntilClose
    );
    assert_eq!(
        ClientBody::choose(Framing::UntilClose, 1),
        ClientBody::EncodeChunked
    );
    assert!(ClientBody::UntilClose.needs_close());
}

#[test]
fn own_responses_are_complete() {
    let mut out = Vec::new();
    write_error(&mut out, 502, "upstream refused the connection", true);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(
        text.contains("content-length: 32\r\nconnection: close\r\n\r\n"),
        "{text}"
    );
    let mut out = Vec::new();
    write_own_response(
        &mut out,
        200,
        &[("x-a".into(), "1".into())],
        b"hi",
        true,
        false,
    );
    assert_eq!(
        out,
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 2\r\n\r\n"
    );
}

/// Found by the `http1_response` fuzz target: `HTTP/1.1 099` was taken as
/// status 99 and written to the client as `HTTP/1.1 99`, which no parser
/// reads.
#[test]
fn status_code_below_100_is_refused() {
    assert_eq!(
        framing_of(b"HTTP/1.1 099 Weird\r\nContent-Length: 0\r\n\r\n", false),
        Err(InvalidResponse("status code below 100"))
    );
    assert_eq!(
        framing_of(b"HTTP/1.1 000 \r\n\r\n", false),
        Err(InvalidResponse("status code below 100"))
    );
    assert!(framing_of(b"HTTP/1.1 100 Continue\r\n\r\n", false).is_ok());
}
