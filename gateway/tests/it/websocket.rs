//! WebSocket over HTTP/1.1 (RFC 6455): the Upgrade handshake is proxied,
//! then bytes are tunnelled both ways until either side closes or the
//! tunnel stays idle past the listener's idle timeout. Real peers: python
//! `websockets` (ws_peer.py) on both ends, and a raw socket.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::*;

/// A `websockets` echo server, killed on drop.
fn ws_server() -> (Peer, SocketAddr) {
    let server = Peer::start("python3", &[&script("ws_peer.py"), "serve"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port()));
    (server, addr)
}

/// A plain gateway in front of `server`, with `listener` extra keys.
fn gateway(server: SocketAddr, listener: &str) -> InProcess {
    InProcess::start(&format!(
        "[runtime]\ndrain_timeout = \"1s\"\n{EDGE}{listener}[[route]]\ncluster = \"ws\"\n{}",
        cluster("ws", &[server])
    ))
}

#[test]
fn websocket_messages_are_echoed_through_the_tunnel() {
    let (server, addr) = ws_server();
    let gw = gateway(addr, "");
    let url = format!("ws://{}/chat", gw.addr());
    let out = python_json("ws_peer.py", &["echo", &url], Duration::from_secs(30));
    assert_eq!(out["status"], 101, "{out}");
    assert_eq!(out["upgrade_header"], "websocket", "{out}");
    assert_eq!(out["text"], "hello websocket", "{out}");
    assert_eq!(out["binary_same"], true, "{out}");
    assert_eq!(out["binary_type"], "bytes", "{out}");
    assert_eq!(out["big_len"], 1 << 20, "{out}");
    assert_eq!(out["big_same"], true, "{out}");
    assert_eq!(out["burst_in_order"], true, "{out}");
    // The client's close went through, the server's answer came back, and
    // the gateway then ended the connection (else the client would wait
    // out its 5 s close timeout).
    assert_eq!(out["close_rcvd"], 1000, "{out}");
    assert_eq!(out["close_code"], 1000, "{out}");
    assert!(out["close_seconds"].as_f64().unwrap() < 3.0, "{out}");
    assert!(
        server
            .wait_line(Duration::from_secs(5), |l| l == "closed 1000")
            .is_some(),
        "the server did not see the close: {:?}",
        server.lines()
    );
}

#[test]
fn websocket_upgrade_is_101_and_carries_raw_frames() {
    let (_server, addr) = ws_server();
    let gw = gateway(addr, "");
    let mut conn = Conn::open(gw.addr());
    conn.send(
        b"GET /raw HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let resp = conn.response(false);
    assert_eq!(resp.status, 101, "{resp:?}");
    assert!(
        resp.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{resp:?}"
    );
    assert!(
        resp.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{resp:?}"
    );
    // RFC 6455's own example key and answer: the upstream's, unchanged.
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{resp:?}"
    );

    // A masked text frame "raw" up; the echo comes back unmasked.
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | 3];
    frame.extend_from_slice(&mask);
    frame.extend(b"raw".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    conn.reader.get_mut().write_all(&frame).unwrap();
    let mut echo = [0u8; 5];
    conn.reader.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"\x81\x03raw");
}

#[test]
fn idle_websocket_tunnel_is_closed_after_the_idle_timeout() {
    let (_server, addr) = ws_server();
    let gw = gateway(addr, "idle_timeout = \"1s\"\n");
    let url = format!("ws://{}/idle", gw.addr());
    // Busy for 2.5 s (longer than the timeout, so traffic must keep it
    // open), then idle: closed after about a second, well before 5 s.
    let out = python_json(
        "ws_peer.py",
        &["idle", &url, "2.5", "5"],
        Duration::from_secs(30),
    );
    assert_eq!(out["active_ok"], true, "closed while in use: {out}");
    assert!(out.get("bad_echo").is_none(), "{out}");
    assert_eq!(out["idle_closed"], true, "idle tunnel left open: {out}");
    let idle = out["idle_seconds"].as_f64().unwrap();
    assert!(
        (0.8..4.0).contains(&idle),
        "closed {idle:.2} s into idleness, timeout 1 s: {out}"
    );
}

/// WebSocket over HTTP/2 (RFC 8441): the listener offers extended CONNECT,
/// and a CONNECT with `:protocol = websocket` reaches the HTTP/1.1 echo
/// server as the GET that upgrades; the client gets 200 and frames flow.
#[test]
fn websocket_over_h2_extended_connect_reaches_an_http1_server() {
    let (_server, addr) = ws_server();
    let gw = gateway(addr, "");
    let out = python_json(
        "ws_peer.py",
        &["h2", &gw.addr().to_string(), "/chat"],
        Duration::from_secs(30),
    );
    assert_eq!(out["enable_connect_protocol"], 1, "{out}");
    assert_eq!(out["status"], "200", "{out}");
    assert_eq!(out["echo"], "hello over h2", "{out}");
    // An unmasked text frame from the server, as RFC 6455 says.
    assert_eq!(out["echo_header"][0], 0x81, "{out}");
}
