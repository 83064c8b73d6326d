//! The protocol matrix: the same behavioural cases over every pair of a
//! client protocol {HTTP/1.1, h2c with prior knowledge, h2 over TLS by
//! ALPN} and an upstream cluster protocol {HTTP/1.1, HTTP/1.1 over TLS,
//! h2c, h2 over TLS}. Each (pair, case) is its own test, named
//! `matrix::CLIENT_client_to_CLUSTER_cluster::CASE`, and every assertion
//! message names the pair again.
//!
//! The upstream is `matrix_peer.py serve` (HTTP/1.1 and HTTP/2 on one port,
//! plain or TLS, telling the protocol by the HTTP/2 preface), which prints
//! the protocol each request reached it with: every case that gets an
//! answer checks that the cluster spoke what it was configured to. The
//! clients are curl (`--http1.1`, `--http2-prior-knowledge`, `--http2`
//! over TLS), `matrix_peer.py get`/`ws` (hyper-h2) for what curl does not
//! do over HTTP/2 (show trailers, extended CONNECT), and a raw socket for
//! the HTTP/1.1 WebSocket.
//!
//! Each test builds its own world (CA, origin, in-process gateway), as the
//! rest of the suite does; the 94 of them take about 25 s on 2 busy cores.
//!
//! Every pair runs the common cases (see [`matrix!`]). Beyond them:
//!
//! - `trailers_reach_the_client` runs for every pair. With an HTTP/1.1
//!   client, the trailers come in the chunked trailer section; an h2
//!   client behind an HTTP/1.1 cluster gets that section as HTTP/2
//!   trailers.
//! - `websocket_tunnel` is skipped (not generated) for an HTTP/1.1 client
//!   with an h2 or h2-over-TLS cluster: ringway does not turn an HTTP/1.1
//!   `Upgrade: websocket` into an extended CONNECT (README: the HTTP/1.1
//!   upgrade is passed on to HTTP/1.1 upstreams; `Upgrade` is hop by hop
//!   and dropped towards HTTP/2), so that pair has no WebSocket to test.
//!   h2 clients use extended CONNECT (RFC 8441) against every cluster.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Bytes of the large bodies: a few hundred KiB, more than the HTTP/2
/// default windows (64 KiB) and no multiple of a frame or read size.
const BODY: usize = 300 * 1024 + 7;

/// Generates, for each pair `NAME: CLIENT -> CLUSTER [EXTRA...]`, a module
/// `NAME` with one `#[test]` per case: the common cases, which every pair
/// supports, then the pair's extra cases (attributes such as `#[ignore =
/// "..."]` allowed before each). Each test calls the case function of the
/// same name with the pair's `Client` and `Cluster`.
///
/// Common cases: `large_response_body`, `request_body_round_trips`,
/// `informational_then_final`, `refused_endpoint_is_502`,
/// `slow_upstream_is_504`, `retry_moves_503_to_the_other_endpoint`.
macro_rules! matrix {
    ($(
        $pair:ident: $client:ident -> $cluster:ident [$( $(#[$attr:meta])* $extra:ident ),* $(,)?];
    )*) => {
        $(
            mod $pair {
                use super::{Client, Cluster};

                matrix!(@cases $client, $cluster;
                    large_response_body,
                    request_body_round_trips,
                    informational_then_final,
                    refused_endpoint_is_502,
                    slow_upstream_is_504,
                    retry_moves_503_to_the_other_endpoint,
                );
                $(
                    #[test]
                    $(#[$attr])*
                    fn $extra() {
                        super::$extra(Client::$client, Cluster::$cluster);
                    }
                )*
            }
        )*
    };
    (@cases $client:ident, $cluster:ident; $($case:ident,)*) => {
        $(
            #[test]
            fn $case() {
                super::$case(Client::$client, Cluster::$cluster);
            }
        )*
    };
}

matrix! {
    h1_client_to_h1_cluster: H1 -> H1 [trailers_reach_the_client, websocket_tunnel];
    h1_client_to_h1_tls_cluster: H1 -> H1Tls [trailers_reach_the_client, websocket_tunnel];
    h1_client_to_h2c_cluster: H1 -> H2c [trailers_reach_the_client];
    h1_client_to_h2_tls_cluster: H1 -> H2Tls [trailers_reach_the_client];

    h2c_client_to_h1_cluster: H2c -> H1 [
        trailers_reach_the_client,
        websocket_tunnel,
    ];
    h2c_client_to_h1_tls_cluster: H2c -> H1Tls [
        trailers_reach_the_client,
        websocket_tunnel,
    ];
    h2c_client_to_h2c_cluster: H2c -> H2c [trailers_reach_the_client, websocket_tunnel];
    h2c_client_to_h2_tls_cluster: H2c -> H2Tls [trailers_reach_the_client, websocket_tunnel];

    h2_tls_client_to_h1_cluster: H2Tls -> H1 [
        trailers_reach_the_client,
        websocket_tunnel,
    ];
    h2_tls_client_to_h1_tls_cluster: H2Tls -> H1Tls [
        trailers_reach_the_client,
        websocket_tunnel,
    ];
    h2_tls_client_to_h2c_cluster: H2Tls -> H2c [trailers_reach_the_client, websocket_tunnel];
    h2_tls_client_to_h2_tls_cluster: H2Tls -> H2Tls [trailers_reach_the_client, websocket_tunnel];
}

// ------------------------------------------------------------ the pair

/// How the client speaks to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// HTTP/1.1, plain.
    H1,
    /// HTTP/2 with prior knowledge, plain.
    H2c,
    /// HTTP/2 over TLS, chosen by ALPN.
    H2Tls,
}

/// How the gateway speaks to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cluster {
    H1,
    H1Tls,
    H2c,
    H2Tls,
}

impl Cluster {
    fn h2(self) -> bool {
        matches!(self, Cluster::H2c | Cluster::H2Tls)
    }

    fn tls(self) -> bool {
        matches!(self, Cluster::H1Tls | Cluster::H2Tls)
    }

    /// What the origin says of a request that came this way: protocol and
    /// scheme, as in its default answer.
    fn seen_as(self) -> &'static str {
        match self {
            Cluster::H1 => "h1 plain",
            Cluster::H1Tls => "h1 tls",
            Cluster::H2c => "h2 plain",
            Cluster::H2Tls => "h2 tls",
        }
    }
}

/// One test's pair and its files: a CA with an `edge` leaf (the gateway's
/// TLS listener) and an `origin` leaf (the upstream's), both for
/// `localhost`, and the pattern file the origin serves.
struct Pair {
    client: Client,
    cluster: Cluster,
    ca: TestCa,
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} client -> {:?} cluster", self.client, self.cluster)
    }
}

/// What curl reported of one exchange.
#[derive(Debug)]
struct Fetched {
    ok: bool,
    /// `%{http_version}`: "2", "1.1", or "0" when nothing came.
    version: String,
    status: u16,
    /// Every head curl saw (1xx heads, the final one, then any trailer
    /// section), as `-D` wrote them.
    heads: String,
    body: Vec<u8>,
}

impl Fetched {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The heads' blocks: each head, then the trailer section if any.
    fn blocks(&self) -> Vec<&str> {
        self.heads
            .split("\r\n\r\n")
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .collect()
    }
}

/// `NAME: VALUE` lines as (lower-case name, value).
fn fields(block: &str) -> Vec<(String, String)> {
    block
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// True when `data` is the test pattern's first `data.len()` bytes.
fn is_pattern(data: &[u8]) -> bool {
    Pattern::new().matches(0, data, &mut Vec::new())
}

impl Pair {
    fn new(client: Client, cluster: Cluster) -> Pair {
        let ca = TestCa::new();
        ca.leaf("edge", &["localhost"]);
        ca.leaf("origin", &["localhost"]);
        let mut data = vec![0u8; BODY];
        Pattern::new().fill(0, &mut data);
        std::fs::write(ca.path("pattern"), &data).unwrap();
        // A gRPC message frame: uncompressed, empty.
        std::fs::write(ca.path("grpc-frame"), [0u8; 5]).unwrap();
        Pair {
            client,
            cluster,
            ca,
        }
    }

    /// A `matrix_peer.py serve` origin, over TLS when the cluster is, with
    /// `extra` arguments; and its address.
    fn origin(&self, extra: &[&str]) -> (Peer, SocketAddr) {
        let script = script("matrix_peer.py");
        let pattern = self.ca.path("pattern");
        let (cert, key) = (self.ca.path("origin.pem"), self.ca.path("origin.key"));
        let mut args = vec![script.as_str(), "serve", &pattern];
        if self.cluster.tls() {
            args.extend(["--tls", &cert, &key]);
        }
        args.extend_from_slice(extra);
        let peer = Peer::start("python3", &args);
        let addr = SocketAddr::from(([127, 0, 0, 1], peer.port()));
        (peer, addr)
    }

    /// A gateway whose `edge` listener serves this pair's client (TLS for
    /// h2 over TLS), with one route (and its `route` keys) to cluster `up`
    /// over `endpoints` in this pair's cluster protocol, then `extra`
    /// config (the cluster's sub-tables).
    fn gateway(&self, endpoints: &[SocketAddr], route: &str, extra: &str) -> InProcess {
        let listener_tls = match self.client {
            Client::H2Tls => format!("{}\n", self.ca.listener_tls("edge", "")),
            _ => String::new(),
        };
        let mut up = cluster("up", endpoints);
        if self.cluster.h2() {
            up.push_str("protocol = \"h2\"\n");
        }
        if self.cluster.tls() {
            up.push_str(&format!(
                "[cluster.up.tls]\nca = {:?}\nserver_name = \"localhost\"\n",
                self.ca.path("ca.pem")
            ));
        }
        InProcess::start(&format!(
            "[runtime]\ndrain_timeout = \"1s\"\n{EDGE}{listener_tls}\
             [[route]]\ncluster = \"up\"\n{route}{up}{extra}"
        ))
    }

    /// curl in this pair's client protocol to `path` on `gw`, with `args`
    /// before the URL and its stdin from `stdin` (none if `None`).
    fn curl(&self, gw: &InProcess, path: &str, args: &[&str], stdin: Option<&Path>) -> Fetched {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let heads = self.ca.path(&format!("heads-{n}"));
        let port = gw.addr().port();
        let cafile = self.ca.path("ca.pem");
        let resolve = format!("localhost:{port}:127.0.0.1");
        let (url, protocol) = match self.client {
            Client::H1 => (format!("http://127.0.0.1:{port}{path}"), vec!["--http1.1"]),
            Client::H2c => (
                format!("http://127.0.0.1:{port}{path}"),
                vec!["--http2-prior-knowledge"],
            ),
            Client::H2Tls => (
                format!("https://localhost:{port}{path}"),
                vec!["--http2", "--cacert", &cafile, "--resolve", &resolve],
            ),
        };
        let stdin = match stdin {
            Some(file) => Stdio::from(std::fs::File::open(file).unwrap()),
            None => Stdio::null(),
        };
        // Every exchange here takes well under a second when healthy.
        let out = output_within(
            Command::new("curl")
                .args(["-sS", "--max-time", "15", "-D", &heads])
                .args(["-w", "\n@@%{http_version} %{http_code}"])
                .args(protocol)
                .args(args)
                .arg(&url)
                .stdin(stdin),
            Duration::from_secs(20),
        );
        let stdout = &out.stdout;
        let at = stdout
            .windows(3)
            .rposition(|w| w == b"\n@@")
            .unwrap_or_else(|| panic!("{self}: curl wrote no -w line: {out:?}"));
        let tail = String::from_utf8_lossy(&stdout[at + 3..]).into_owned();
        let (version, status) = tail.split_once(' ').unwrap_or(("", ""));
        let fetched = Fetched {
            ok: out.status.success(),
            version: version.to_owned(),
            status: status.trim().parse().unwrap_or(0),
            heads: std::fs::read_to_string(&heads).unwrap_or_default(),
            body: stdout[..at].to_vec(),
        };
        if !fetched.ok {
            eprintln!(
                "{self}: curl {path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fetched
    }

    /// Checks that curl got `status` in the client's protocol.
    fn expect(&self, r: &Fetched, status: u16) {
        let version = match self.client {
            Client::H1 => "1.1",
            Client::H2c | Client::H2Tls => "2",
        };
        assert!(r.ok, "{self}: curl failed: {r:?}");
        assert_eq!(
            (r.version.as_str(), r.status),
            (version, status),
            "{self}: {}",
            r.text()
        );
    }

    /// `matrix_peer.py COMMAND` (the HTTP/2 client: `get` or `ws`) to
    /// `path` on `gw`, over TLS when the client is, with `extra` arguments.
    fn h2_client(&self, gw: &InProcess, command: &str, path: &str, extra: &[&str]) -> Value {
        let addr = gw.addr().to_string();
        let cafile = self.ca.path("ca.pem");
        let mut args = vec![command, addr.as_str(), path];
        match self.client {
            Client::H2Tls => args.extend(["--ca", &cafile, "--name", "localhost"]),
            Client::H2c => {}
            Client::H1 => panic!("{self}: the python client speaks HTTP/2 only"),
        }
        args.extend_from_slice(extra);
        let out = python_json("matrix_peer.py", &args, Duration::from_secs(30));
        if self.client == Client::H2Tls {
            assert_eq!(out["alpn"], "h2", "{self}: {out}");
        }
        out
    }

    /// Waits for `origin` to report `METHOD PATH` and checks that it came
    /// in the cluster's protocol.
    fn origin_saw(&self, origin: &Peer, method: &str, path: &str) {
        let tail = format!(" {method} {path}");
        let line = origin
            .wait_line(Duration::from_secs(5), |l| {
                l.starts_with("request ") && l.ends_with(&tail)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{self}: the origin never saw {method} {path}: {:?}",
                    origin.lines()
                )
            });
        let proto = if self.cluster.h2() { "h2" } else { "h1" };
        assert_eq!(line, format!("request {proto}{tail}"), "{self}");
    }
}

/// How many requests for `path` `origin` has reported so far.
fn requests_for(origin: &Peer, path: &str) -> usize {
    let tail = format!(" {path}");
    origin
        .lines()
        .iter()
        .filter(|l| l.starts_with("request ") && l.ends_with(&tail))
        .count()
}

// ----------------------------------------------------------- the cases

/// A GET answered with BODY bytes of the test pattern, byte for byte.
fn large_response_body(client: Client, cluster: Cluster) {
    let p = Pair::new(client, cluster);
    let (origin, addr) = p.origin(&[]);
    let gw = p.gateway(&[addr], "", "");
    let path = format!("/pattern/{BODY}");
    let r = p.curl(&gw, &path, &[], None);
    p.expect(&r, 200);
    assert_eq!(r.body.len(), BODY, "{p}");
    assert!(
        is_pattern(&r.body),
        "{p}: the body differs from the origin's"
    );
    p.origin_saw(&origin, "GET", &path);
}

/// BODY bytes up and back, byte for byte: a POST with a length, then a PUT
/// without one (curl reads stdin: chunked over HTTP/1.1, DATA frames until
/// END_STREAM over HTTP/2), echoed by the origin.
fn request_body_round_trips(client: Client, cluster: Cluster) {
    let p = Pair::new(client, cluster);
    let (origin, addr) = p.origin(&[]);
    let gw = p.gateway(&[addr], "", "");
    let file = p.ca.path("pattern");

    let data = format!("@{file}");
    let r = p.curl(&gw, "/echo", &["--data-binary", &data], None);
    p.expect(&r, 200);
    assert_eq!(r.body.len(), BODY, "{p}: POST with a length");
    assert!(
        is_pattern(&r.body),
        "{p}: POST with a length came back changed"
    );
    p.origin_saw(&origin, "POST", "/echo");

    let r = p.curl(&gw, "/echo", &["-T", "-"], Some(Path::new(&file)));
    p.expect(&r, 200);
    assert_eq!(r.body.len(), BODY, "{p}: PUT without a length");
    assert!(
        is_pattern(&r.body),
        "{p}: PUT without a length came back changed"
    );
    p.origin_saw(&origin, "PUT", "/echo");
}

/// gRPC style: a POST with `te: trailers` is answered with a body and the
/// trailers `grpc-status`, `grpc-message` and `x-trailer`, which reach the
/// client: HTTP/2 trailers for an h2 client (read by hyper-h2; curl does
/// not show them), a chunked trailer section for an HTTP/1.1 one.
fn trailers_reach_the_client(client: Client, cluster: Cluster) {
    let p = Pair::new(client, cluster);
    let (origin, addr) = p.origin(&[]);
    let gw = p.gateway(&[addr], "", "");
    let (body, trailers) = match client {
        Client::H1 => {
            let frame = format!("@{}", p.ca.path("grpc-frame"));
            let r = p.curl(
                &gw,
                "/trailers",
                &[
                    "-H",
                    "te: trailers",
                    "-H",
                    "content-type: application/grpc",
                    "--data-binary",
                    &frame,
                ],
                None,
            );
            p.expect(&r, 200);
            // The final head, then the trailer section.
            let blocks = r.blocks();
            let last_head = blocks.iter().rposition(|b| b.starts_with("HTTP/"));
            let after = last_head.and_then(|i| blocks.get(i + 1)).copied();
            let trailers = fields(after.unwrap_or(""));
            let map: serde_json::Map<String, Value> = trailers
                .into_iter()
                .map(|(n, v)| (n, Value::String(v)))
                .collect();
            (r.text(), Value::Object(map))
        }
        Client::H2c | Client::H2Tls => {
            let out = p.h2_client(
                &gw,
                "get",
                "/trailers",
                &[
                    "--method",
                    "POST",
                    "--header",
                    "te: trailers",
                    "--header",
                    "content-type: application/grpc",
                    "--body-hex",
                    "0000000000",
                ],
            );
            assert_eq!(out["status"], 200, "{p}: {out}");
            assert!(out.get("reset").is_none(), "{p}: {out}");
            (
                out["body"].as_str().unwrap_or_default().to_owned(),
                out["trailers"].clone(),
            )
        }
    };
    assert_eq!(body, "trailered", "{p}");
    for (name, value) in [
        ("grpc-status", "0"),
        ("grpc-message", "fine"),
        ("x-trailer", "kept"),
    ] {
        assert_eq!(trailers[name], value, "{p}: trailer {name}: {trailers}");
    }
    p.origin_saw(&origin, "POST", "/trailers");
}

/// The origin answers 103 Early Hints, then 200: the final response comes
/// whole (curl's `-D` shows every head, 1xx included). An HTTP/1.1 client
/// behind an HTTP/1.1 cluster gets the 103 too (the gateway passes 102 and
/// 103 on); other pairs may drop it, and a 103 that does arrive carries
/// its `link`.
fn informational_then_final(client: Client, cluster: Cluster) {
    let p = Pair::new(client, cluster);
    let (origin, addr) = p.origin(&[]);
    let gw = p.gateway(&[addr], "", "");
    let r = p.curl(&gw, "/early-hints", &[], None);
    p.expect(&r, 200);
    assert_eq!(r.text(), "final after 103", "{p}");
    let blocks = r.blocks();
    let status = |b: &str| b.split_whitespace().nth(1).unwrap_or("").to_owned();
    let (last, interim) = blocks.split_last().unwrap();
    assert_eq!(status(last), "200", "{p}: {blocks:?}");
    for head in interim {
        assert_eq!(status(head), "103", "{p}: {blocks:?}");
        assert!(
            fields(head).contains(&("link".to_owned(), "</style.css>; rel=preload".to_owned())),
            "{p}: {blocks:?}"
        );
    }
    if client == Client::H1 && !cluster.h2() {
        assert_eq!(interim.len(), 1, "{p}: the 103 did not reach the client");
    }
    p.origin_saw(&origin, "GET", "/early-hints");
}

/// The only endpoint refuses connections: 502.
fn refused_endpoint_is_502(client: Client, cluster: Cluster) {
    let p = Pair::new(client, cluster);
    let gw = p.gateway(&[closed_port()], "", "");
    let r = p.curl(&gw, "/refused", &[], None);
    p.expect(&r, 502);
    assert!(r.text().contains("refused"), "{p}: {}", r.text());
}

/// The origin answers after 5 s, the route's timeout is 300 ms: 504 in
/// about 300 ms. The cluster then still serves a quick request.
fn slow_upstream_is_504(client: Client, cluster: Cluster) {
    let p = Pair::new(client, cluster);
    let (origin, addr) = p.origin(&[]);
    let gw = p.gateway(&[addr], "timeout = \"300ms\"\n", "");
    let started = Instant::now();
    let r = p.curl(&gw, "/delay/5000", &[], None);
    let took = started.elapsed();
    p.expect(&r, 504);
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(3),
        "{p}: 504 after {took:?}"
    );
    p.origin_saw(&origin, "GET", "/delay/5000");

    let r = p.curl(&gw, "/after-504", &[], None);
    p.expect(&r, 200);
    assert_eq!(
        r.text(),
        format!("{} GET /after-504", cluster.seen_as()),
        "{p}"
    );
}

/// Two endpoints, one answering 503 to everything; `retry = { attempts =
/// 2, on = ["503"] }`: both requests get 200. Round-robin sends one of
/// the two first tries to the sick endpoint, and that one is retried on
/// the other.
fn retry_moves_503_to_the_other_endpoint(client: Client, cluster: Cluster) {
    let p = Pair::new(client, cluster);
    let (sick, sick_addr) = p.origin(&["--always", "503"]);
    let (well, well_addr) = p.origin(&[]);
    // No ejection of the sick endpoint: every first try is round-robin's.
    let gw = p.gateway(
        &[sick_addr, well_addr],
        "retry = { attempts = 2, on = [\"503\"] }\n",
        "[cluster.up.outlier]\nconsecutive_failures = 0\n",
    );
    for i in 0..2 {
        let path = format!("/retry/{i}");
        let r = p.curl(&gw, &path, &[], None);
        p.expect(&r, 200);
        assert_eq!(r.text(), format!("{} GET {path}", cluster.seen_as()), "{p}");
        p.origin_saw(&well, "GET", &path);
    }
    let to_sick = || requests_for(&sick, "/retry/0") + requests_for(&sick, "/retry/1");
    assert!(
        wait_until(Duration::from_secs(5), || to_sick() >= 1),
        "{p}: the sick endpoint got no first try: {:?}",
        sick.lines()
    );
    assert_eq!(to_sick(), 1, "{p}: {:?}", sick.lines());
}

/// A WebSocket through the gateway: a text frame and a 60000-byte binary
/// frame echoed. An HTTP/1.1 client upgrades (101, the origin's
/// `Sec-WebSocket-Accept` unchanged); an h2 client opens it by extended
/// CONNECT (200), which reaches an HTTP/1.1 origin as the upgrading GET
/// and an HTTP/2 one as an extended CONNECT.
fn websocket_tunnel(client: Client, cluster: Cluster) {
    let p = Pair::new(client, cluster);
    let (origin, addr) = p.origin(&[]);
    let gw = p.gateway(&[addr], "", "");
    let binary: Vec<u8> = (0..60_000u32).map(|i| ((i * 7 + 3) % 251) as u8).collect();
    match client {
        Client::H1 => {
            let mut conn = Conn::open(gw.addr());
            conn.send(
                b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            );
            let resp = conn.response(false);
            assert_eq!(resp.status, 101, "{p}: {resp:?}");
            // RFC 6455's own example key and answer.
            assert_eq!(
                resp.header("sec-websocket-accept"),
                Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                "{p}: {resp:?}"
            );
            assert_eq!(ws_echo(&mut conn, 0x81, b"hello matrix"), b"hello matrix");
            assert!(
                ws_echo(&mut conn, 0x82, &binary) == binary,
                "{p}: the binary frame came back changed"
            );
        }
        Client::H2c | Client::H2Tls => {
            let out = p.h2_client(&gw, "ws", "/ws", &[]);
            assert_eq!(out["enable_connect_protocol"], 1, "{p}: {out}");
            assert_eq!(out["status"], 200, "{p}: {out}");
            assert_eq!(out["frames"], serde_json::json!([0x81, 0x82]), "{p}: {out}");
            assert_eq!(out["text"], "hello matrix", "{p}: {out}");
            assert_eq!(out["binary_same"], true, "{p}: {out}");
        }
    }
    let method = if cluster.h2() { "CONNECT" } else { "GET" };
    p.origin_saw(&origin, method, "/ws");
}

/// Sends `payload` (under 64 KiB) in one masked frame whose first byte is
/// `first` and reads the echoed frame, which comes back unmasked.
fn ws_echo(conn: &mut Conn, first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![first];
    match u16::try_from(payload.len()).unwrap() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&n.to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    conn.reader.get_mut().write_all(&frame).unwrap();
    let mut head = [0u8; 2];
    conn.reader.read_exact(&mut head).unwrap();
    assert_eq!(head[0], first, "echoed frame type");
    let len = match head[1] {
        n @ 0..=125 => usize::from(n),
        126 => {
            let mut n = [0u8; 2];
            conn.reader.read_exact(&mut n).unwrap();
            usize::from(u16::from_be_bytes(n))
        }
        other => panic!("unexpected echoed length byte {other:#x}"),
    };
    let mut echo = vec![0u8; len];
    conn.reader.read_exact(&mut echo).unwrap();
    echo
}
