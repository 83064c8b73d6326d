//! Issue 13: an upstream connection goes back to the pool only in step.
//!
//! A broken or hostile upstream that sends bytes past its framed response
//! (a second, complete response nobody asked for), or into a connection
//! that sits idle in the pool, must never have those bytes served to a
//! later request: the gateway closes such a connection, as nginx, HAProxy
//! and Envoy do.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::*;

/// What the hostile upstream sends unasked.
const SMUGGLED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nSMUGGLED";

/// An upstream that answers `/503-then-more` with a `503` and, in the same
/// write, a second response; `/ok-then-late` with a `200`, then a second
/// response into the connection the gateway has pooled by then (`late`
/// hears when it is written); anything else with `clean:<path>`.
fn hostile(late: &mpsc::Sender<()>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let late = late.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let late = late.clone();
            std::thread::spawn(move || serve(stream, late));
        }
    });
    addr
}

/// Waits until a late response has been written into an idle connection
/// (on loopback it is in the gateway's socket by then).
fn wait_late(late: &mpsc::Receiver<()>) {
    late.recv_timeout(IO_TIMEOUT)
        .expect("the upstream wrote its late response");
}

fn serve(stream: TcpStream, late_sent: mpsc::Sender<()>) {
    let _ = stream.set_nodelay(true);
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let ok = match path.as_str() {
            "/503-then-more" => {
                let mut out =
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec();
                out.extend_from_slice(SMUGGLED);
                writer.write_all(&out).is_ok()
            }
            "/ok-then-soon" => {
                // The unasked bytes in a write of their own right after
                // the response: in the same read as it, or arriving while
                // the gateway is still relaying it, before it pools the
                // connection. (The test sends its next request once they
                // are written: on a loaded machine this thread can be
                // held between the two writes past the next request,
                // and bytes sent after a request went up are its answer
                // to any proxy.)
                let sent = writer
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_ok()
                    && writer.write_all(SMUGGLED).is_ok();
                let _ = late_sent.send(());
                sent
            }
            "/ok-then-late" => {
                let ok = writer
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_ok();
                // The gateway pools the connection once it has read the
                // response; the unasked bytes then land in the idle one.
                // Whether they arrive before or after it is pooled, they
                // must never reach a client.
                std::thread::sleep(Duration::from_millis(50));
                let late = writer.write_all(SMUGGLED).is_ok();
                let _ = late_sent.send(());
                ok && late
            }
            _ => {
                let text = format!("clean:{path}");
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len());
                writer.write_all(head.as_bytes()).is_ok()
                    && writer.write_all(text.as_bytes()).is_ok()
            }
        };
        if !ok {
            return;
        }
    }
}

fn gateway(endpoints: &[SocketAddr], route_extra: &str) -> InProcess {
    InProcess::start(&format!(
        "{EDGE}\n[[route]]\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"app\"\n{route_extra}\n{}",
        cluster("app", endpoints)
    ))
}

/// Sends `GET path` on a new client connection; the response.
fn fetch(gw: &InProcess, path: &str) -> Response {
    let mut c = Conn::open(gw.addr());
    c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    c.response(false)
}

/// Many later requests, each on its own client connection, each answered
/// with its own clean response.
fn later_requests_are_clean(gw: &InProcess) {
    for i in 0..20 {
        let path = format!("/next/{i}");
        let resp = fetch(gw, &path);
        assert_eq!(resp.status, 200, "request {i}");
        assert_eq!(resp.text(), format!("clean:{path}"), "request {i}");
    }
}

#[test]
fn issue_13_bytes_past_a_discarded_503_never_reach_another_request() {
    // Two endpoints, both hostile, so that a 503 is retried on the other
    // and the first answer is discarded (the path that pooled dirty
    // connections).
    let (late, _) = mpsc::channel();
    let gw = gateway(
        &[hostile(&late), hostile(&late)],
        "retry = { attempts = 2, on = [\"503\"] }",
    );
    for _ in 0..4 {
        let resp = fetch(&gw, "/503-then-more");
        assert_eq!(resp.status, 503);
        assert!(!resp.text().contains("SMUGGLED"));
        later_requests_are_clean(&gw);
    }
}

#[test]
fn issue_13_bytes_past_a_relayed_503_never_reach_another_request() {
    let (late, _) = mpsc::channel();
    let gw = gateway(&[hostile(&late)], "");
    for _ in 0..4 {
        assert_eq!(fetch(&gw, "/503-then-more").status, 503);
        later_requests_are_clean(&gw);
    }
}

#[test]
fn issue_13_bytes_sent_into_an_idle_pooled_connection_never_reach_a_request() {
    let (late, written) = mpsc::channel();
    let gw = gateway(&[hostile(&late)], "");
    for _ in 0..4 {
        let resp = fetch(&gw, "/ok-then-late");
        assert_eq!(resp.text(), "ok");
        wait_late(&written);
        later_requests_are_clean(&gw);
    }
}

#[test]
fn issue_13_bytes_sent_right_after_a_response_never_reach_a_request() {
    let (late, written) = mpsc::channel();
    let gw = gateway(&[hostile(&late)], "");
    for _ in 0..20 {
        assert_eq!(fetch(&gw, "/ok-then-soon").text(), "ok");
        wait_late(&written);
        for i in 0..3 {
            let path = format!("/next/{i}");
            assert_eq!(fetch(&gw, &path).text(), format!("clean:{path}"));
        }
    }
}

#[test]
fn issue_13_over_http2_clients_too() {
    let (late, written) = mpsc::channel();
    let gw = gateway(
        &[hostile(&late), hostile(&late)],
        "retry = { attempts = 2, on = [\"503\"] }",
    );
    let url = |path: &str| format!("http://{}{path}", gw.addr());
    for round in 0..3 {
        let (ok, out) = curl(&["--http2-prior-knowledge", &url("/503-then-more")]);
        assert!(ok, "round {round}");
        assert!(!String::from_utf8_lossy(&out).contains("SMUGGLED"));
        let (ok, out) = curl(&["--http2-prior-knowledge", &url("/ok-then-late")]);
        assert!(ok);
        assert_eq!(out, b"ok");
        wait_late(&written);
        for i in 0..10 {
            let path = format!("/next/{round}/{i}");
            let (ok, out) = curl(&["--http2-prior-knowledge", &url(&path)]);
            assert!(ok);
            assert_eq!(String::from_utf8_lossy(&out), format!("clean:{path}"));
        }
    }
}
