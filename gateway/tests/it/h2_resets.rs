//! Resets and GOAWAY across the gateway's HTTP/2 upstream side, against
//! a raw hyper-h2 origin (h2_origin.py) that resets streams with chosen
//! codes, refuses them, and sends GOAWAY as servers do when they drain:
//! a reset of a started response reaches the client's stream with its
//! code, a refused stream is tried again where the retry policy allows,
//! and an upstream going away costs clients nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Shutting down waits at most this long for connections in flight.
const RUNTIME: &str = "[runtime]\ndrain_timeout = \"1s\"\n";

/// A raw HTTP/2 origin, killed on drop.
struct H2Origin {
    peer: Peer,
    addrs: Vec<SocketAddr>,
}

impl H2Origin {
    /// `h2_origin.py args...`; its listeners from its first line.
    fn start(args: &[&str]) -> H2Origin {
        let mut all = vec![script("h2_origin.py")];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let peer = Peer::start("python3", &all);
        let first = peer.lines().remove(0);
        let addrs = first
            .split_whitespace()
            .skip(1)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p.parse().unwrap())))
            .collect();
        H2Origin { peer, addrs }
    }

    /// Every line the origin printed up to now. Its lines are collected
    /// from a pipe by another thread, so a line printed a moment ago may
    /// not be there yet: a `MARK` is sent, and its echo waited for (the
    /// pipe keeps order), so that every line printed before this call is.
    fn settled_lines(&self) -> Vec<String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let token = format!("t{}", NEXT.fetch_add(1, Ordering::SeqCst));
        let mut mark = TcpStream::connect(self.addrs[0]).unwrap();
        mark.write_all(format!("MARK {token}\n").as_bytes())
            .unwrap();
        let echo = format!("mark {token}");
        self.peer
            .wait_line(IO_TIMEOUT, |l| l == echo)
            .unwrap_or_else(|| panic!("the origin never echoed {echo}"));
        self.peer.lines()
    }

    /// The origin's event lines whose first word is `kind`.
    fn events(&self, kind: &str) -> Vec<String> {
        self.settled_lines()
            .into_iter()
            .filter(|l| l.split_whitespace().next() == Some(kind))
            .collect()
    }

    /// Streams that arrived for `path`.
    fn streams(&self, path: &str) -> usize {
        self.events("stream")
            .iter()
            .filter(|l| l.split_whitespace().nth(3) == Some(path))
            .count()
    }
}

/// A gateway sending every request to `origin`'s listeners over h2c;
/// `route_extra` goes in the route (a `retry` policy).
fn gateway(origin: &H2Origin, route_extra: &str) -> InProcess {
    InProcess::start(&format!(
        "{RUNTIME}{EDGE}[[route]]\ncluster = \"origin\"\n{route_extra}\n{}protocol = \"h2\"\n",
        cluster("origin", &origin.addrs)
    ))
}

/// One GET with hyper-h2 (h2c, prior knowledge), read to its end.
fn h2_get(addr: SocketAddr, path: &str) -> Value {
    python_json(
        "h2_attacks.py",
        &["get", &addr.to_string(), path],
        Duration::from_secs(20),
    )
}

/// curl with HTTP/2 prior knowledge: (exit code, stderr).
fn curl_h2c(addr: SocketAddr, path: &str) -> (Option<i32>, String) {
    let out = output_within(
        Command::new("curl")
            .args(["-sS", "--max-time", "15", "--http2-prior-knowledge", "-o"])
            .arg("/dev/null")
            .arg(format!("http://{addr}{path}")),
        Duration::from_secs(20),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ------------------------------------------------------ upstream resets

/// A response that the client sees start (200 and a first piece of
/// body), then the origin resets with `code` (h2_attacks.py reset-midway).
fn reset_midway(addr: SocketAddr, code: u32, key: &str) -> Value {
    python_json(
        "h2_attacks.py",
        &["reset-midway", &addr.to_string(), &code.to_string(), key],
        Duration::from_secs(20),
    )
}

#[test]
fn upstream_reset_midway_reaches_the_h2_client_with_its_code() {
    let origin = H2Origin::start(&[]);
    let gw = gateway(&origin, "");
    // Distinctive codes, so that a gateway resetting with one of its own
    // (INTERNAL_ERROR, CANCEL) shows: ENHANCE_YOUR_CALM, INTERNAL_ERROR,
    // HTTP_1_1_REQUIRED.
    for code in [11, 2, 13] {
        let got = reset_midway(gw.addr(), code, &format!("midway-{code}"));
        assert_eq!(got["started"]["status"], 200, "{got}");
        assert_eq!(got["started"]["body"], "partial", "{got}");
        assert_eq!(got["trigger_status"], 200, "{got}");
        assert_eq!(got["timeout"], false, "no end to the stream: {got}");
        assert_eq!(got["ended"], false, "a reset response ended cleanly: {got}");
        assert_eq!(got["reset"], code, "reset with another code: {got}");
    }
    // The origin did reset each, once: a started response is not retried.
    assert_eq!(origin.events("reset").len(), 3);
    assert_eq!(origin.streams("/reset-on-trigger/11/midway-11"), 1);
}

#[test]
fn upstream_reset_right_after_headers_reaches_h2_clients() {
    let origin = H2Origin::start(&[]);
    let gw = gateway(&origin, "");
    // HEADERS, DATA and RST_STREAM in one write: the gateway may not get
    // to send the head before the reset (h2 drops a reset stream's queued
    // frames), so only the reset and its code are asserted.
    let got = h2_get(gw.addr(), "/reset-after-headers/11");
    assert_eq!(got["timeout"], false, "{got}");
    assert_eq!(got["ended"], false, "a reset response ended cleanly: {got}");
    assert_eq!(got["reset"], 11, "reset with another code: {got}");

    // curl: the stream was not closed cleanly (exit 92), with the
    // upstream's code named.
    let (code, stderr) = curl_h2c(gw.addr(), "/reset-after-headers/11");
    assert_eq!(code, Some(92), "{stderr}");
    assert!(stderr.contains("ENHANCE_YOUR_CALM"), "{stderr}");
    assert_eq!(origin.streams("/reset-after-headers/11"), 2);
}

#[test]
fn upstream_reset_midway_cuts_an_http1_client_short() {
    let origin = H2Origin::start(&[]);
    let gw = gateway(&origin, "");
    // The response starts: 200, chunked for the HTTP/1.1 client, and the
    // first chunk.
    let mut c = Conn::open(gw.addr());
    c.send(b"GET /reset-on-trigger/2/h1 HTTP/1.1\r\nHost: origin\r\n\r\n");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(9).any(|w| w == b"partial\r\n") {
        let n = c.reader.read(&mut buf).expect("the response's start");
        assert!(n > 0, "closed before the first chunk: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );

    // The origin resets it: the connection must close without the last
    // chunk, so that the client knows the body is cut short.
    assert_eq!(get(gw.addr(), "origin", "/trigger/h1").status, 200);
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest).into_owned();
    assert!(
        !rest.contains("0\r\n\r\n"),
        "a reset response ended as if complete: {rest:?}"
    );
    assert_eq!(origin.events("reset").len(), 1);
}

#[test]
fn upstream_reset_before_headers_is_a_502() {
    let origin = H2Origin::start(&[]);
    let gw = gateway(&origin, "retry = { attempts = 2, on = [\"reset\"] }");
    // Nothing was answered, so the client gets the gateway's answer. The
    // stream was not refused (ENHANCE_YOUR_CALM: the origin may have
    // acted on it), so even a retry policy on resets does not repeat it.
    let got = h2_get(gw.addr(), "/reset-before-headers/11");
    assert_eq!(got["status"], 502, "{got}");
    assert_eq!(got["ended"], true, "{got}");
    assert_eq!(origin.streams("/reset-before-headers/11"), 1);
}

// ----------------------------------------------------- refused streams

#[test]
fn refused_stream_is_tried_again_when_the_policy_allows() {
    // Two listeners of one origin: two endpoints, one record of which
    // paths it refused already.
    let origin = H2Origin::start(&["--ports", "2"]);
    let gw = gateway(&origin, "retry = { attempts = 2, on = [\"reset\"] }");

    // RST_STREAM(REFUSED_STREAM) before any response: nothing was
    // processed, the retry gets the answer.
    let got = h2_get(gw.addr(), "/refuse-once/h2");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["ended"], true, "{got}");
    assert_eq!(origin.streams("/refuse-once/h2"), 2);
    assert_eq!(origin.events("refused").len(), 1);

    // The same for an HTTP/1.1 client.
    let resp = get(gw.addr(), "origin", "/refuse-once/h1");
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().starts_with("origin "), "{}", resp.text());
    assert_eq!(origin.streams("/refuse-once/h1"), 2);

    // GOAWAY whose last stream is before this one: not processed either.
    let got = h2_get(gw.addr(), "/goaway-once/h2");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(origin.streams("/goaway-once/h2"), 2);
}

#[test]
fn refused_stream_is_tried_again_on_a_single_endpoint() {
    // One endpoint, as behind a load balancer or a service address: the
    // refused stream was not processed (RFC 9113 §8.7), so the retry the
    // policy allows may go to the same endpoint.
    let origin = H2Origin::start(&[]);
    let gw = gateway(&origin, "retry = { attempts = 2, on = [\"reset\"] }");
    let got = h2_get(gw.addr(), "/refuse-once/single");
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(origin.streams("/refuse-once/single"), 2);
}

#[test]
fn refused_stream_without_a_retry_policy_is_a_502() {
    let origin = H2Origin::start(&["--ports", "2"]);
    // The default policy retries connect failures only.
    let gw = gateway(&origin, "");
    let got = h2_get(gw.addr(), "/refuse-once/none");
    assert_eq!(got["status"], 502, "{got}");
    assert_eq!(origin.streams("/refuse-once/none"), 1);

    // A policy that allows it, but every try refused: the last failure,
    // after exactly the tries allowed.
    let gw = gateway(&origin, "retry = { attempts = 2, on = [\"reset\"] }");
    let got = h2_get(gw.addr(), "/refuse-always");
    assert_eq!(got["status"], 502, "{got}");
    assert_eq!(origin.streams("/refuse-always"), 2);
}

// -------------------------------------------------------------- GOAWAY

/// `count` sequential requests through `gw` over one h2c connection,
/// then `count` over HTTP/1.1 (keep-alive): every one must be a 200 from
/// the origin. Both clients run before anything is asserted, so that a
/// failure shows what each saw.
fn all_served(gw: &InProcess, count: usize) {
    let got = python_json(
        "h2_attacks.py",
        &["repeat", &gw.addr().to_string(), "/seq", &count.to_string()],
        Duration::from_secs(25),
    );
    let statuses = got["statuses"].as_array().unwrap();
    let h2_failed: Vec<(usize, &Value)> = statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s != 200)
        .collect();

    let mut h1_failed = Vec::new();
    let mut c = Conn::open(gw.addr());
    for i in 0..count {
        c.send(b"GET /seq-h1 HTTP/1.1\r\nHost: origin\r\n\r\n");
        match read_response(&mut c.reader, false) {
            Ok(resp) => {
                if resp.status != 200 || !resp.text().starts_with("origin ") {
                    h1_failed.push((i, resp.status, resp.text()));
                }
                if resp.header("connection") == Some("close") {
                    c = Conn::open(gw.addr());
                }
            }
            Err(e) => {
                h1_failed.push((i, 0, e.to_string()));
                c = Conn::open(gw.addr());
            }
        }
    }

    assert!(
        statuses.len() == count && h2_failed.is_empty() && h1_failed.is_empty(),
        "h2 client: {} of {count} failed (index, status): {h2_failed:?}\n\
         HTTP/1.1 client: {} of {count} failed: {h1_failed:?}\n{got}",
        h2_failed.len(),
        h1_failed.len(),
    );
    assert_eq!(got["resets"], serde_json::json!([]), "{got}");
}

#[test]
fn upstream_goaway_and_close_costs_clients_nothing() {
    // Every upstream connection serves 5 requests, then the origin sends
    // GOAWAY(NO_ERROR) after the 5th answer and closes, as servers with a
    // per-connection request limit do (nginx's keepalive_requests).
    let origin = H2Origin::start(&["--goaway-after", "5"]);
    // The default policy: no retries on resets. A graceful GOAWAY is no
    // failure; the gateway must open a new connection, not fail requests.
    let gw = gateway(&origin, "");
    all_served(&gw, 50);
    // 100 requests, 5 per connection: at least 20 connections.
    let conns = origin.events("conn").len();
    assert!(conns >= 20, "{conns} upstream connections for 100 requests");
    assert_eq!(origin.events("goaway").len(), conns);
}

#[test]
fn upstream_goaway_racing_a_new_stream_costs_clients_nothing() {
    // The origin decides to go away just as the gateway opens a stream:
    // its GOAWAY names the stream before as the last processed, so the new
    // one was not (RFC 9113 §6.8) and must be sent again on a new
    // connection. The default policy, as in production.
    let origin = H2Origin::start(&["--goaway-after", "5", "--goaway-late"]);
    let gw = gateway(&origin, "");
    all_served(&gw, 30);
    let goaways = origin.events("goaway").len();
    assert!(goaways >= 10, "only {goaways} GOAWAYs for 60 requests");
}

#[test]
fn upstream_goaway_while_the_connection_lingers_costs_clients_nothing() {
    // The same, but the origin keeps each connection open 300 ms after
    // its GOAWAY (draining, as servers shutting down gracefully do):
    // requests in that time must go on a new connection, not on the one
    // going away.
    let origin = H2Origin::start(&["--goaway-after", "5", "--linger", "300"]);
    let gw = gateway(&origin, "");
    all_served(&gw, 20);
    let conns = origin.events("conn").len();
    assert!(conns >= 8, "{conns} upstream connections for 40 requests");
}
