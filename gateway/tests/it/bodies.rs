//! Requests and responses through the proxy, bodies byte for byte,
//! connection reuse and pipelining.

use std::io::Write;

use crate::support::*;

fn proxy_to(upstream: &Upstream) -> InProcess {
    InProcess::start(&format!(
        "{EDGE}[[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[upstream.addr])
    ))
}

#[test]
fn curl_get_and_post_pass_through() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    let base = format!("http://{}", gw.addr());

    let (ok, body) = curl(&[&format!("{base}/hello?x=1")]);
    assert!(ok);
    assert_eq!(body, b"app GET /hello?x=1");

    // Content-Length body, binary, byte for byte.
    let dir = TempDir::new();
    let file = dir.path.join("body.bin");
    let mut data = vec![0u8; 300_000];
    Pattern::new().fill(0, &mut data);
    std::fs::write(&file, &data).unwrap();
    let (ok, body) = curl(&[
        "--data-binary",
        &format!("@{}", file.display()),
        "-H",
        "Expect:",
        &format!("{base}/echo"),
    ]);
    assert!(ok);
    assert!(body == data, "echoed body differs");

    // Chunked request body, byte for byte.
    let (ok, body) = curl(&[
        "--data-binary",
        &format!("@{}", file.display()),
        "-H",
        "Transfer-Encoding: chunked",
        &format!("{base}/echo"),
    ]);
    assert!(ok);
    assert!(body == data, "echoed chunked body differs");
    let seen = up.seen();
    let last = seen.last().unwrap();
    assert_eq!(last.header("transfer-encoding"), Some("chunked"));
    assert_eq!(last.body.len(), data.len());

    // A chunked response, decoded by curl.
    let (ok, body) = curl(&[&format!("{base}/chunked/5")]);
    assert!(ok);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "chunk-0\nchunk-1\nchunk-2\nchunk-3\nchunk-4\n"
    );
}

#[test]
fn streamed_chunked_response_is_byte_exact() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    let size: u64 = 20 * 1024 * 1024 + 12345;
    let mut c = Conn::open(gw.addr());
    c.send(format!("GET /stream/{size} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let resp = c.response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.body.len() as u64, size);
    let mut scratch = Vec::new();
    assert!(Pattern::new().matches(0, &resp.body, &mut scratch));
    // The connection is still usable.
    c.send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).text(), "app GET /after");
}

#[test]
fn close_delimited_response_is_rechunked_for_http11_and_raw_for_http10() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    let mut c = Conn::open(gw.addr());
    c.send(b"GET /until-close HTTP/1.1\r\nHost: a\r\n\r\n");
    let resp = c.response(false);
    assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(resp.text(), "first part, second part");
    c.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).text(), "app GET /x");

    // HTTP/1.0 gets the payload of a chunked response, delimited by close.
    let resp = exchange(gw.addr(), b"GET /chunked/3 HTTP/1.0\r\n\r\n");
    assert_eq!(resp.header("transfer-encoding"), None);
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(resp.text(), "chunk-0\nchunk-1\nchunk-2\n");
}

#[test]
fn upstream_connections_are_reused() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    for i in 0..20 {
        // A new client connection each time; the upstream side is pooled.
        let resp = get(gw.addr(), "a", &format!("/n/{i}"));
        assert_eq!(resp.status, 200);
    }
    assert_eq!(up.seen().len(), 20);
    assert!(
        up.connections() < 20,
        "upstream saw {} connections for 20 requests",
        up.connections()
    );
    assert_eq!(up.connections(), 1);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    let mut c = Conn::open(gw.addr());
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend_from_slice(format!("GET /p/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    }
    batch.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    batch.extend_from_slice(b"GET /p/last HTTP/1.1\r\nHost: a\r\n\r\n");
    c.send(&batch);
    for i in 0..5 {
        assert_eq!(c.response(false).text(), format!("app GET /p/{i}"));
    }
    assert_eq!(c.response(false).text(), "hello");
    assert_eq!(c.response(false).text(), "app GET /p/last");
}

#[test]
fn hop_by_hop_headers_go_and_forwarding_headers_come() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    let resp = exchange(
        gw.addr(),
        b"GET /h HTTP/1.1\r\nHost: shop.example\r\nX-First: 1\r\nConnection: X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nX-Forwarded-For: 198.51.100.9\r\nX-Last: 2\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("via"), Some("1.1 ringway"));
    let seen = up.seen().pop().unwrap();
    let names: Vec<String> = seen
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            !names.contains(&gone.to_owned()),
            "{gone} was forwarded: {names:?}"
        );
    }
    // Order of the client's own headers is kept.
    let pos = |n: &str| names.iter().position(|x| x == n).unwrap();
    assert!(pos("host") < pos("x-first") && pos("x-first") < pos("x-last"));
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("198.51.100.9, 127.0.0.1")
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("shop.example"));
    assert_eq!(seen.header("via"), Some("1.1 ringway"));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    let mut c = Conn::open(gw.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response(false);
    assert_eq!(interim.status, 100);
    c.send(b"hello world");
    let resp = c.response(false);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello world");
    // The upstream does not see the Expect header: this hop handled it.
    assert_eq!(up.seen().pop().unwrap().header("expect"), None);
}

#[test]
fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    let mut c = Conn::open(gw.addr());
    c.send(b"HEAD /status/200 HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = c.response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1234"));
    c.send(b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).status, 204);
    c.send(b"GET /status/304 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).status, 304);
    // Had any of those left a stray body byte, this would misparse.
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).text(), "app GET /next");
}

#[test]
fn early_upstream_answer_reaches_the_client() {
    let up = Upstream::start("app");
    let gw = proxy_to(&up);
    let mut c = Conn::open(gw.addr());
    c.send(b"POST /early-413 HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\n");
    // Keep sending while the upstream has already answered and closed.
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..8 {
        if c.reader.get_mut().write_all(&chunk).is_err() {
            break;
        }
    }
    let resp = c.response(false);
    assert_eq!(resp.status, 413);
    assert_eq!(resp.header("connection"), Some("close"));
}
