//! Issue 16: a connection waiting for its next request holds no read
//! buffer. The gateway's `ringway_read_buffers_held` gauge counts the read
//! buffers its connections hold; it must follow the requests in progress,
//! not the connections open.

use std::time::Duration;

use crate::support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The gauge, scraped from the admin listener.
fn buffers_held(gw: &Binary) -> u64 {
    let (status, text) = gw.admin("GET", "/metrics");
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix("ringway_read_buffers_held "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the metrics name ringway_read_buffers_held")
}

/// Waits (with a deadline) for the gauge to read `want`.
fn wait_held(gw: &Binary, want: u64) {
    let mut seen = u64::MAX;
    let reached = wait_until(Duration::from_secs(5), || {
        seen = buffers_held(gw);
        seen == want
    });
    assert!(reached, "read buffers held: {seen}, expected {want}");
}

#[test]
fn waiting_connections_hold_no_read_buffer_and_reading_ones_do() {
    let up = Upstream::start("app");
    let toml = format!(
        "{ADMIN}{EDGE}idle_timeout = \"60s\"\n[[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    );
    let gw = Binary::start(&toml, &["--workers", "1"]);
    // Forty keep-alive connections, one request each, then quiet.
    let mut idle: Vec<Conn> = (0..40)
        .map(|i| {
            let mut c = Conn::open(gw.addr);
            c.send(format!("GET /first/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
            assert_eq!(c.response(false).status, 200);
            c
        })
        .collect();
    wait_held(&gw, 0);
    // A connection in the middle of its request head holds one.
    let mut partial = Conn::open(gw.addr);
    partial.send(b"GET /slow HTTP/1.1\r\nHo");
    wait_held(&gw, 1);
    partial.send(b"st: a\r\n\r\n");
    assert_eq!(partial.response(false).status, 200);
    wait_held(&gw, 0);
    // The quiet connections were kept, and each takes a buffer again for
    // its next request.
    for (i, c) in idle.iter_mut().enumerate() {
        c.send(format!("GET /second/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(c.response(false).status, 200);
    }
    wait_held(&gw, 0);
    assert_eq!(up.count("/second/"), 40);
}

/// A quiet HTTP/2 connection gives its buffers back (h2's codec buffers
/// and stream tables, vendor/h2, at its first tick with no stream open)
/// and makes them again for the next request: requests after quiet spells
/// longer than the tick are served whole on the same connection.
#[test]
fn a_quiet_http2_connection_serves_again_after_giving_its_buffers_back() {
    let up = Upstream::start("app");
    let toml = format!(
        "{EDGE}idle_timeout = \"60s\"\n[[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    );
    let gw = InProcess::start(&toml);
    let got = python_json(
        "h2_attacks.py",
        &["repeat", &gw.addr().to_string(), "/after-quiet", "3", "1.6"],
        Duration::from_secs(30),
    );
    let statuses: Vec<u64> = got["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .filter_map(|s| s.as_u64())
        .collect();
    assert_eq!(statuses, vec![200, 200, 200], "{got}");
    for body in got["bodies"].as_array().expect("bodies") {
        assert!(
            body.as_str().is_some_and(|b| b.starts_with("app ")),
            "{got}"
        );
    }
    assert_eq!(up.count("/after-quiet"), 3);
}
