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
    assert_eq!(echo_raw(&mut conn, b"raw"), b"raw");
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

/// Opens a WebSocket through `gw` by a raw Upgrade and checks one echo.
fn open_raw_tunnel(gw: SocketAddr) -> Conn {
    let mut conn = Conn::open(gw);
    conn.send(
        b"GET /raw HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let resp = conn.response(false);
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(echo_raw(&mut conn, b"raw"), b"raw");
    conn
}

/// Sends `text` (under 126 bytes) in a masked text frame and reads the
/// echoed frame's text, which comes back unmasked.
fn echo_raw(conn: &mut Conn, text: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    conn.reader.get_mut().write_all(&frame).unwrap();
    let mut echo = vec![0u8; 2 + text.len()];
    conn.reader.read_exact(&mut echo).unwrap();
    assert_eq!(&echo[..2], &[0x81, text.len() as u8]);
    echo.split_off(2)
}

/// A drain lets an open WebSocket run on (it is a request in flight) and
/// the worker ends it at the drain deadline, then exits cleanly.
#[test]
fn a_drain_keeps_websocket_tunnels_until_its_deadline() {
    let (_server, addr) = ws_server();
    let mut gw = Binary::start(
        &format!(
            "[runtime]\ndrain_timeout = \"2s\"\n{EDGE}[[route]]\ncluster = \"ws\"\n{}",
            cluster("ws", &[addr])
        ),
        &["--workers", "1"],
    );
    let mut conn = open_raw_tunnel(gw.addr);
    let signalled = std::time::Instant::now();
    gw.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || std::net::TcpStream::connect(
            gw.addr
        )
        .is_err()),
        "still accepting after SIGTERM"
    );
    // Draining, and the tunnel still carries frames.
    assert_eq!(echo_raw(&mut conn, b"draining"), b"draining");
    // The deadline closes it and the process exits.
    conn.reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = conn.reader.read_to_end(&mut rest);
    let closed_after = signalled.elapsed();
    assert!(
        closed_after >= Duration::from_millis(1500),
        "tunnel closed {closed_after:?} after SIGTERM, before the 2 s deadline"
    );
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let mut log = String::new();
    let _ = gw.stderr.read_to_string(&mut log);
    assert!(log.contains("drain deadline passed"), "{log}");
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

/// An HTTP/2 gateway in front of `server` as an `h2` cluster.
fn h2_upstream_gateway(server: SocketAddr) -> InProcess {
    InProcess::start(&format!(
        "{EDGE}[[route]]\ncluster = \"ws\"\n{}protocol = \"h2\"\n",
        cluster("ws", &[server])
    ))
}

/// An HTTP/2 upstream that does not offer extended CONNECT (a plain
/// hyper-h2 origin) gets no WebSocket: the client is answered 502.
#[test]
fn websocket_over_h2_to_an_h2_server_without_extended_connect_is_502() {
    let origin = Peer::start("python3", &[&script("h2_origin.py")]);
    let gw = h2_upstream_gateway(SocketAddr::from(([127, 0, 0, 1], origin.port())));
    let out = python_json(
        "ws_peer.py",
        &["h2", &gw.addr().to_string(), "/chat"],
        Duration::from_secs(30),
    );
    assert_eq!(out["status"], "502", "{out}");
}

/// WebSocket over HTTP/2 on both sides: the client's extended CONNECT goes
/// to an HTTP/2 upstream as an extended CONNECT (without the
/// `Sec-WebSocket-Key` the HTTP/1.1 handshake needs), and frames flow
/// through both streams.
#[test]
fn websocket_over_h2_reaches_an_h2_server_by_extended_connect() {
    let server = Peer::start("python3", &[&script("ws_peer.py"), "serve-h2"]);
    let gw = h2_upstream_gateway(SocketAddr::from(([127, 0, 0, 1], server.port())));
    let out = python_json(
        "ws_peer.py",
        &["h2", &gw.addr().to_string(), "/chat"],
        Duration::from_secs(30),
    );
    assert_eq!(out["status"], "200", "{out}");
    assert_eq!(out["echo"], "hello over h2", "{out}");
    assert_eq!(out["echo_header"][0], 0x81, "{out}");
    let seen = server
        .wait_line(Duration::from_secs(5), |l| l.starts_with("connect "))
        .expect("the upstream saw the CONNECT");
    assert_eq!(seen, "connect /chat websocket -");
}
