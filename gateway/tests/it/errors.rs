//! Each error status, produced by the situation that causes it, and what
//! happens to the connection afterwards.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

fn gateway_for(cluster_section: &str, listener_extra: &str, route_extra: &str) -> InProcess {
    InProcess::start(&format!(
        "{EDGE}{listener_extra}\n[[route]]\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"app\"\n{route_extra}\n{cluster_section}"
    ))
}

#[test]
fn no_route_is_404_and_the_connection_stays() {
    let gw = InProcess::start(&format!(
        "{EDGE}[[route]]\nmatch = {{ path = \"/only\" }}\nrespond = {{ status = 200, body = \"only\" }}\n"
    ));
    let mut c = Conn::open(gw.addr());
    c.send(b"GET /elsewhere HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).status, 404);
    c.send(b"GET /only HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(c.response(false).text(), "only");
}

#[test]
fn refused_connection_is_502() {
    let gw = gateway_for(&cluster("app", &[closed_port()]), "", "");
    let resp = get(gw.addr(), "a", "/");
    assert_eq!(resp.status, 502);
    assert!(resp.text().contains("refused"), "{}", resp.text());
}

#[test]
fn upstream_closing_or_answering_garbage_is_502() {
    let up = Upstream::start("app");
    let gw = gateway_for(&cluster("app", &[up.addr]), "", "");
    assert_eq!(get(gw.addr(), "a", "/close").status, 502);
    assert_eq!(get(gw.addr(), "a", "/garbage").status, 502);
    // And the gateway still serves afterwards.
    assert_eq!(get(gw.addr(), "a", "/fine").status, 200);
}

#[test]
fn slow_upstream_is_504() {
    let up = Upstream::start("app");
    let gw = gateway_for(&cluster("app", &[up.addr]), "", "timeout = \"300ms\"");
    let started = Instant::now();
    let resp = get(gw.addr(), "a", "/delay/3000");
    assert_eq!(resp.status, 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(get(gw.addr(), "a", "/delay/10").status, 200);
}

#[test]
fn malformed_requests_are_400_and_closed() {
    let up = Upstream::start("app");
    let gw = gateway_for(&cluster("app", &[up.addr]), "", "");
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"GET / HTTP/1.1\r\nHost: a\r\n folded: header\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ] {
        let mut c = Conn::open(gw.addr());
        c.send(raw);
        let resp = c.response(false);
        assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(raw));
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(c.is_closed());
    }
    // None of those reached the upstream: nothing was smuggled.
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

#[test]
fn oversized_headers_are_431() {
    let gw = gateway_for(
        &cluster("app", &[closed_port()]),
        "max_header_bytes = 4096",
        "",
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8000)
    );
    let mut c = Conn::open(gw.addr());
    c.send(big.as_bytes());
    assert_eq!(c.response(false).status, 431);
    assert!(c.is_closed());
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..200 {
        many.push_str(&format!("x-{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    let resp = exchange(gw.addr(), many.as_bytes());
    assert_eq!(resp.status, 431, "{}", resp.text());
}

#[test]
fn slow_client_headers_are_408() {
    let gw = gateway_for(
        &cluster("app", &[closed_port()]),
        "header_timeout = \"300ms\"",
        "",
    );
    let mut c = Conn::open(gw.addr());
    let started = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n");
    let resp = c.response(false);
    assert_eq!(resp.status, 408);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(c.is_closed());
}

#[test]
fn a_client_that_never_speaks_is_closed_quietly() {
    let gw = gateway_for(
        &cluster("app", &[closed_port()]),
        "header_timeout = \"200ms\"",
        "",
    );
    let mut c = Conn::open(gw.addr());
    assert!(c.is_closed());
}

#[test]
fn unsupported_transfer_coding_is_501() {
    let gw = gateway_for(&cluster("app", &[closed_port()]), "", "");
    let resp = exchange(
        gw.addr(),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(resp.status, 501);
}

#[test]
fn truncated_client_body_does_not_reach_upstream_as_complete() {
    let up = Upstream::start("app");
    let gw = gateway_for(&cluster("app", &[up.addr]), "", "");
    let mut c = Conn::open(gw.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-part");
    c.reader
        .get_mut()
        .shutdown(std::net::Shutdown::Write)
        .unwrap();
    assert!(c.is_closed());
    // The gateway gave up on the request; the upstream never got a full one.
    assert!(wait_until(Duration::from_secs(5), || up.seen().is_empty()));
    let _ = c.reader.get_mut().flush();
}
