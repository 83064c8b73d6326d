//! Active health checks in the cluster's own protocol: HTTPS with the
//! cluster's CA, name and client certificate; HTTP/2; gRPC's health
//! service (grpcio's own); bare TCP with the cluster's PROXY header. Real
//! origins (python's ssl and http.server, hyper-h2, grpcio), the built
//! binary with two workers, verdicts read from `/metrics`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// Quick checks: one failure or pass turns the verdict.
const QUICK: &str =
    "interval = \"100ms\", timeout = \"2s\", healthy_threshold = 1, unhealthy_threshold = 1";

/// Every endpoint's `ringway_endpoint_healthy` in cluster `cluster`.
fn verdict(gw: &Binary, cluster: &str, addr: SocketAddr) -> Option<bool> {
    let (status, body) = gw.admin("GET", "/metrics");
    assert_eq!(status, 200);
    let prefix = format!("ringway_endpoint_healthy{{cluster=\"{cluster}\",endpoint=\"{addr}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v == "1")
}

/// Waits (10 s at most) until `addr` of `cluster` is judged `healthy`.
fn judged(gw: &Binary, cluster: &str, addr: SocketAddr, healthy: bool) -> bool {
    wait_until(Duration::from_secs(10), || {
        verdict(gw, cluster, addr) == Some(healthy)
    })
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The ports of a peer's `listening PORT...` line.
fn ports(peer: &Peer) -> Vec<u16> {
    peer.lines()[0]
        .split_whitespace()
        .skip(1)
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Lines of `peer` that start with `prefix`.
fn count(peer: &Peer, prefix: &str) -> usize {
    peer.lines()
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// The port in an origin's answer `origin PORT ...`.
fn answered_by(response: &Response) -> u16 {
    let text = response.text();
    assert_eq!(response.status, 200, "{text}");
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Before checks spoke TLS, every endpoint of a TLS cluster failed its
/// plaintext check and was taken out of rotation. Now the check uses the
/// cluster's CA, `server_name` and client certificate (the origins refuse
/// a handshake without one), sends the endpoint's host and port as `Host`,
/// and only the origin whose /healthz answers 503 leaves the rotation of
/// both workers.
#[test]
fn tls_clusters_are_checked_over_tls_and_only_the_sick_endpoint_leaves() {
    let ca = TestCa::new();
    ca.leaf("origin", &["localhost"]);
    ca.leaf("client", &["client.test"]);
    let peer = Peer::start(
        "python3",
        &[
            &script("health_peer.py"),
            "https",
            &ca.path("ca.pem"),
            &ca.path("origin.pem"),
            &ca.path("origin.key"),
            "3",
            "2",
        ],
    );
    let ends: Vec<SocketAddr> = ports(&peer).into_iter().map(local).collect();
    let sick = ends[2];
    let gw = Binary::start(
        &format!(
            "{ADMIN}{EDGE}[[route]]\ncluster = \"api\"\n{}\
             tls = {{ ca = {:?}, server_name = \"localhost\", client_cert = {:?}, client_key = {:?} }}\n\
             health = {{ path = \"/healthz\", {QUICK} }}\n",
            cluster("api", &ends),
            ca.path("ca.pem"),
            ca.path("client.pem"),
            ca.path("client.key"),
        ),
        &["--workers", "2"],
    );
    assert!(
        judged(&gw, "api", sick, false),
        "the 503 endpoint stayed in"
    );
    // The good ones have been checked (over TLS, with their own Host) and
    // stay in.
    for end in &ends[..2] {
        let want = format!("req {} {end} /healthz", end.port());
        assert!(
            wait_until(Duration::from_secs(10), || count(&peer, &want) >= 3),
            "{end} was not checked over TLS: {:?}",
            peer.lines()
        );
        assert_eq!(verdict(&gw, "api", *end), Some(true), "{end}");
    }
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(clusters.contains(&sick.to_string()), "{clusters}");

    // New connections each time: both workers' shares of the traffic.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..60 {
        let port = answered_by(&get(gw.addr, "a", "/work"));
        assert_ne!(port, sick.port(), "a request reached the sick origin");
        seen.insert(port);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        count(&peer, &format!("req {} ", sick.port())),
        count(&peer, &format!("req {} {sick} /healthz", sick.port()))
    );
}

/// An h2 cluster's check is a GET over HTTP/2 (prior knowledge, hyper-h2's
/// origin) with the configured `host` as `:authority`; the origin that
/// answers 503 leaves, the others serve.
#[test]
fn h2_clusters_are_checked_over_h2_with_the_configured_host() {
    let origin = Peer::start(
        "python3",
        &[
            &script("h2_origin.py"),
            "--ports",
            "3",
            "--sick",
            "1",
            "--authorities",
        ],
    );
    let ends: Vec<SocketAddr> = ports(&origin).into_iter().map(local).collect();
    let sick = ends[1];
    let gw = Binary::start(
        &format!(
            "{ADMIN}{EDGE}[[route]]\ncluster = \"h2\"\n{}protocol = \"h2\"\n\
             health = {{ path = \"/healthz\", host = \"health.example.test\", {QUICK} }}\n",
            cluster("h2", &ends),
        ),
        &["--workers", "2"],
    );
    assert!(judged(&gw, "h2", sick, false), "the 503 endpoint stayed in");
    assert!(wait_until(Duration::from_secs(10), || {
        count(&origin, "stream ") >= 9
    }));
    for end in [ends[0], ends[2]] {
        assert_eq!(verdict(&gw, "h2", end), Some(true), "{end}");
    }
    let authorities: Vec<String> = origin
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("authority "))
        .collect();
    assert!(
        authorities
            .iter()
            .all(|l| l.ends_with(" health.example.test")),
        "{authorities:?}"
    );
    for _ in 0..30 {
        let port = answered_by(&get(gw.addr, "a", "/work"));
        assert_ne!(port, sick.port(), "a request reached the sick origin");
    }
}

/// `kind = "grpc"` asks grpcio's own health service, over h2c and over
/// TLS: SERVING passes; NOT_SERVING, set while the gateway runs, fails;
/// SERVING again passes; a service the server does not know (NOT_FOUND)
/// fails.
#[test]
fn grpc_checks_follow_the_health_service() {
    let ca = TestCa::new();
    ca.leaf("grpc", &["localhost"]);
    let mut peer = Peer::start(
        "python3",
        &[
            &script("health_peer.py"),
            "grpc",
            &ca.path("grpc.pem"),
            &ca.path("grpc.key"),
        ],
    );
    let (plain, tls) = match ports(&peer)[..] {
        [plain, tls] => (local(plain), local(tls)),
        _ => panic!("{:?}", peer.lines()),
    };
    let gw = Binary::start(
        &format!(
            "{ADMIN}{EDGE}[[route]]\ncluster = \"cart\"\n\
             {}protocol = \"h2\"\nhealth = {{ kind = \"grpc\", service = \"shop.Cart\", {QUICK} }}\n\
             {}protocol = \"h2\"\nhealth = {{ kind = \"grpc\", {QUICK} }}\n\
             {}protocol = \"h2\"\ntls = {{ ca = {:?}, server_name = \"localhost\" }}\n\
             health = {{ kind = \"grpc\", service = \"shop.Cart\", {QUICK} }}\n\
             {}protocol = \"h2\"\nhealth = {{ kind = \"grpc\", service = \"shop.Nowhere\", {QUICK} }}\n",
            cluster("cart", &[plain]),
            cluster("whole", &[plain]),
            cluster("cart_tls", &[tls]),
            ca.path("ca.pem"),
            cluster("nowhere", &[plain]),
        ),
        &[],
    );
    assert!(judged(&gw, "nowhere", plain, false));
    assert!(wait_until(Duration::from_secs(10), || {
        count(&peer, "check shop.Cart") >= 4 && count(&peer, "check \"\"") >= 2
    }));
    for cluster in ["cart", "whole"] {
        assert_eq!(verdict(&gw, cluster, plain), Some(true), "{cluster}");
    }
    assert_eq!(verdict(&gw, "cart_tls", tls), Some(true));

    peer.tell("set shop.Cart NOT_SERVING");
    assert!(judged(&gw, "cart", plain, false), "NOT_SERVING stayed in");
    assert!(
        judged(&gw, "cart_tls", tls, false),
        "NOT_SERVING stayed in (TLS)"
    );
    assert_eq!(verdict(&gw, "whole", plain), Some(true));

    peer.tell("set shop.Cart SERVING");
    assert!(judged(&gw, "cart", plain, true), "SERVING again stayed out");
    assert!(judged(&gw, "cart_tls", tls, true));
}

/// `kind = "tcp"`: a refused connection fails, an accepted one passes,
/// and a cluster that sends PROXY headers sends one (v2 LOCAL) first.
#[test]
fn tcp_checks_connect_and_send_the_proxy_header() {
    let open = Upstream::start("open");
    let closed = closed_port();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxied = listener.local_addr().unwrap();
    let (got, headers) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut head = [0u8; 16];
            if stream.read_exact(&mut head).is_ok() && got.send(head).is_err() {
                return;
            }
        }
    });
    let gw = Binary::start(
        &format!(
            "{ADMIN}{EDGE}[[route]]\ncluster = \"tcp\"\n\
             {}health = {{ kind = \"tcp\", {QUICK} }}\n\
             {}proxy_protocol = \"v2\"\nhealth = {{ kind = \"tcp\", {QUICK} }}\n",
            cluster("tcp", &[open.addr, closed]),
            cluster("pp", &[proxied]),
        ),
        &["--workers", "2"],
    );
    assert!(
        judged(&gw, "tcp", closed, false),
        "the closed port stayed in"
    );
    assert!(wait_until(Duration::from_secs(10), || open.connections() >= 3));
    assert_eq!(verdict(&gw, "tcp", open.addr), Some(true));
    // Connected only: no request was sent.
    assert_eq!(open.seen().len(), 0);
    let head = headers.recv_timeout(IO_TIMEOUT).unwrap();
    // The v2 signature, then version 2 / command LOCAL (0x20).
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!(head[12], 0x20);
    assert_eq!(verdict(&gw, "pp", proxied), Some(true));
}

/// A reload that keeps a check keeps its verdict (an unhealthy endpoint
/// is not back in rotation, or said unhealthy again, because the file
/// changed) and hands it the new settings (here a new path).
#[test]
fn a_reload_keeps_a_continuing_checks_verdict_and_gives_it_new_settings() {
    let (good, sick) = (Upstream::start("good"), Upstream::start("sick"));
    sick.set_sick(true);
    let config = |path: &str| {
        format!(
            "{ADMIN}{EDGE}[[route]]\ncluster = \"app\"\n{}health = {{ path = \"{path}\", {QUICK} }}\n",
            cluster("app", &[good.addr, sick.addr])
        )
    };
    let mut gw = Binary::start(&config("/before"), &[]);
    assert!(judged(&gw, "app", sick.addr, false));
    let generation = gw.generation();
    gw.write_config(&config("/after"));
    assert!(wait_until(Duration::from_secs(10), || gw.generation() > generation));
    // The same checks, now on the new path.
    assert!(wait_until(Duration::from_secs(10), || {
        sick.count("/after") >= 3 && good.count("/after") >= 3
    }));
    assert_eq!(verdict(&gw, "app", sick.addr), Some(false));
    assert_eq!(verdict(&gw, "app", good.addr), Some(true));
    sick.set_sick(false);
    assert!(judged(&gw, "app", sick.addr, true));

    // Its verdict changed twice in all: out once, back once.
    gw.child.kill().unwrap();
    // What it said before it announced its listeners, and after.
    let mut log = gw.log.concat();
    gw.stderr.read_to_string(&mut log).unwrap();
    let said = |what: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("endpoint {} is {what}", sick.addr)))
            .count()
    };
    assert_eq!((said("unhealthy"), said("healthy again")), (1, 1), "{log}");
    assert!(
        !log.contains(&format!("endpoint {} is", good.addr)),
        "{log}"
    );
}
