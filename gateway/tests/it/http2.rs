//! HTTP/2 (issue 6): downstream over TLS by ALPN and h2c with prior
//! knowledge, upstream h2 (h2c and over TLS), from real clients: curl,
//! h2load, openssl, and python's hyper-h2 for the hostile ones (rapid
//! reset, CONTINUATION floods) and for reading SETTINGS.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ringload::Origin;
use crate::support::*;

/// Shutting down waits at most this long for connections in flight.
const RUNTIME: &str = "[runtime]\ndrain_timeout = \"1s\"\n";

/// What curl reported of one exchange.
#[derive(Debug)]
struct Fetched {
    ok: bool,
    /// `%{http_version}`: "2", "1.1", or "0" when nothing came.
    version: String,
    status: u16,
    body: Vec<u8>,
}

impl Fetched {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// curl with `args`, its protocol version and status read from `-w`.
/// Every exchange here takes well under a second when healthy; 60 s is
/// the most any may take (the 64 MiB ones at the protocol's smallest
/// windows took over 15 s once on a machine busy with fuzzers).
fn fetch(args: &[&str]) -> Fetched {
    let mut all = vec!["--max-time", "60", "-w", "\n@@%{http_version} %{http_code}"];
    all.extend_from_slice(args);
    let (ok, out) = curl(&all);
    let Some(at) = out.windows(3).rposition(|w| w == b"\n@@") else {
        return Fetched {
            ok,
            version: String::new(),
            status: 0,
            body: out,
        };
    };
    let tail = String::from_utf8_lossy(&out[at + 3..]).into_owned();
    let (version, status) = tail.split_once(' ').unwrap_or(("", ""));
    Fetched {
        ok,
        version: version.to_owned(),
        status: status.trim().parse().unwrap_or(0),
        body: out[..at].to_vec(),
    }
}

/// A CA with a `server` leaf for localhost.
fn pki() -> TestCa {
    let ca = TestCa::new();
    ca.leaf("server", &["localhost"]);
    ca
}

/// curl over TLS to `https://localhost:PORT/PATH`, trusting the test CA.
fn https(ca: &TestCa, addr: SocketAddr, path: &str, extra: &[&str]) -> Fetched {
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let url = format!("https://localhost:{}{path}", addr.port());
    let cafile = ca.path("ca.pem");
    let mut args = vec!["--cacert", &cafile, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    fetch(&args)
}

/// curl with HTTP/2 prior knowledge (h2c) to `http://ADDR/PATH`.
fn h2c(addr: SocketAddr, path: &str, extra: &[&str]) -> Fetched {
    let url = format!("http://{addr}{path}");
    let mut args = vec!["--http2-prior-knowledge"];
    args.extend_from_slice(extra);
    args.push(&url);
    fetch(&args)
}

/// `openssl s_client -alpn PROTOS` to `addr`; its whole output. A request
/// line goes in so that the gateway closes and s_client ends.
fn s_client_alpn(ca: &TestCa, addr: SocketAddr, protos: &str) -> String {
    let dir = TempDir::new();
    let input = dir.path.join("request");
    std::fs::write(
        &input,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let out = output_within(
        Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string()])
            .args(["-servername", "localhost", "-alpn", protos, "-ign_eof"])
            .args(["-CAfile", &ca.path("ca.pem")])
            .stdin(std::fs::File::open(&input).unwrap()),
        Duration::from_secs(20),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A cluster section speaking h2 to `endpoints`.
fn h2_cluster(name: &str, endpoints: &[SocketAddr]) -> String {
    format!("{}protocol = \"h2\"\n", cluster(name, endpoints))
}

/// `ringload serve`'s counters, asked of it directly.
fn origin_stats(origin: &Origin) -> serde_json::Value {
    let resp = get(origin.addr, "origin", "/__ringload/stats");
    assert_eq!(resp.status, 200);
    serde_json::from_slice(&resp.body).unwrap()
}

/// The first line of an echoed request head.
fn first_line(echo: &str) -> &str {
    echo.split("\r\n").next().unwrap_or("")
}

#[test]
fn tls_alpn_picks_h2_or_http1_and_both_reach_the_upstream() {
    let up = Upstream::start("app");
    let ca = pki();
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}{}\n[[route]]\ncluster = \"app\"\n{}",
        ca.listener_tls("server", ""),
        cluster("app", &[up.addr])
    ));

    let h2 = https(&ca, gw.addr(), "/alpn-h2", &["--http2"]);
    assert!(h2.ok, "{h2:?}");
    assert_eq!((h2.version.as_str(), h2.status), ("2", 200), "{h2:?}");
    assert_eq!(h2.text(), "app GET /alpn-h2");

    let h1 = https(&ca, gw.addr(), "/alpn-h1", &["--http1.1"]);
    assert!(h1.ok, "{h1:?}");
    assert_eq!((h1.version.as_str(), h1.status), ("1.1", 200), "{h1:?}");
    assert_eq!(h1.text(), "app GET /alpn-h1");

    // Both went up as the same HTTP/1.1 request, marked as from TLS.
    for path in ["/alpn-h2", "/alpn-h1"] {
        let seen = up.seen();
        let s = seen.iter().find(|s| s.target == path).unwrap();
        assert_eq!(s.method, "GET");
        assert_eq!(s.header("x-forwarded-proto"), Some("https"), "{s:?}");
        assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"), "{s:?}");
        assert_eq!(
            s.header("host"),
            Some(format!("localhost:{}", gw.addr().port()).as_str()),
            "{s:?}"
        );
    }

    let text = s_client_alpn(&ca, gw.addr(), "h2");
    assert!(text.contains("ALPN protocol: h2"), "{text}");
    let text = s_client_alpn(&ca, gw.addr(), "http/1.1");
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");
}

#[test]
fn tls_alpn_list_from_the_config_is_what_is_offered() {
    let up = Upstream::start("app");
    let ca = pki();
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}{}\n[[route]]\ncluster = \"app\"\n{}",
        ca.listener_tls("server", ", alpn = [\"http/1.1\"]"),
        cluster("app", &[up.addr])
    ));
    // curl asks for h2 and gets HTTP/1.1, still served.
    let r = https(&ca, gw.addr(), "/only-h1", &["--http2"]);
    assert_eq!((r.version.as_str(), r.status), ("1.1", 200), "{r:?}");
    assert_eq!(r.text(), "app GET /only-h1");
    let text = s_client_alpn(&ca, gw.addr(), "h2");
    assert!(!text.contains("ALPN protocol: h2"), "{text}");
}

#[test]
fn h2c_prior_knowledge_reaches_h1_and_h2_upstreams() {
    let up = Upstream::start("app");
    let origin = Origin::start("h2origin", &["--echo"]);
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}[[route]]\nmatch = {{ path_prefix = \"/h2/\" }}\ncluster = \"h2up\"\n[[route]]\ncluster = \"app\"\n{}{}",
        cluster("app", &[up.addr]),
        h2_cluster("h2up", &[origin.addr]),
    ));

    // To the HTTP/1.1 upstream.
    let r = h2c(gw.addr(), "/plain?q=1", &["-H", "x-test: one"]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{r:?}");
    assert_eq!(r.text(), "app GET /plain?q=1");
    let seen = up.seen();
    let s = seen.iter().find(|s| s.target == "/plain?q=1").unwrap();
    assert_eq!(s.header("x-test"), Some("one"));
    assert_eq!(s.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(s.header("x-forwarded-proto"), Some("http"));
    assert_eq!(s.header("host"), Some(gw.addr().to_string().as_str()));
    let posted = h2c(gw.addr(), "/echo", &["--data-binary", "h2c body"]);
    assert_eq!(posted.status, 200, "{posted:?}");
    assert_eq!(posted.text(), "h2c body");

    // To the HTTP/2 upstream: ringload echoes the head it got, so the
    // request line shows the protocol that reached it.
    let r = h2c(gw.addr(), "/h2/echo?x=y", &["-H", "x-test: two"]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{r:?}");
    let echo = r.text();
    let line = first_line(&echo);
    assert!(
        line.starts_with("GET ") && line.ends_with("/h2/echo?x=y HTTP/2"),
        "{echo}"
    );
    for want in [
        "x-test: two\r\n",
        "x-forwarded-for: 127.0.0.1\r\n",
        "x-forwarded-proto: http\r\n",
        "via: ",
    ] {
        assert!(echo.contains(want), "{want:?} missing from {echo}");
    }
    let posted = h2c(gw.addr(), "/h2/post", &["--data-binary", "to h2"]);
    assert_eq!(posted.status, 200, "{posted:?}");
    assert!(
        posted.text().ends_with("\r\n\r\nto h2"),
        "{}",
        posted.text()
    );
    let stats = origin_stats(&origin);
    assert!(stats["h2_requests"].as_u64().unwrap() >= 2, "{stats}");
    assert_eq!(stats["h1_requests"], 0, "{stats}");
}

#[test]
fn h2c_can_be_turned_off_and_http1_still_works() {
    let up = Upstream::start("app");
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}http2 = {{ h2c = false }}\n[[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    ));
    let r = h2c(gw.addr(), "/no-h2c", &[]);
    assert!(
        !(r.version == "2" && r.status == 200),
        "h2c served though turned off: {r:?}"
    );
    assert_eq!(up.count("/no-h2c"), 0);
    assert_eq!(get(gw.addr(), "a", "/h1").status, 200);
}

/// The counts h2load reports: `requests:` and `status codes:` lines as
/// (word, number) pairs, e.g. ("succeeded", 20000), ("2xx", 20000).
fn h2load_counts(text: &str) -> Vec<(String, u64)> {
    let mut counts = Vec::new();
    for line in text.lines() {
        let Some(rest) = line
            .strip_prefix("requests: ")
            .or_else(|| line.strip_prefix("status codes: "))
        else {
            continue;
        };
        for part in rest.split(',') {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(word)) = (words.next(), words.next()) {
                counts.push((word.to_owned(), n.parse().unwrap()));
            }
        }
    }
    counts
}

/// Runs h2load (bounded: it is killed past 15 s; a healthy run takes
/// about a second) and checks that all `n`
/// requests succeeded with a 2xx; returns its output.
fn h2load_all_ok(url: &str, n: u64, clients: u32, streams: u32) -> String {
    let out = output_within(
        Command::new("h2load")
            .args(["-n", &n.to_string(), "-c", &clients.to_string()])
            .args(["-m", &streams.to_string(), url])
            .stdin(Stdio::null()),
        Duration::from_secs(15),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let counts = h2load_counts(&text);
    let count = |w: &str| counts.iter().find(|(k, _)| k == w).map(|(_, n)| *n);
    assert_eq!(count("total"), Some(n), "{text}");
    assert_eq!(count("succeeded"), Some(n), "{text}");
    assert_eq!(count("failed"), Some(0), "{text}");
    assert_eq!(count("errored"), Some(0), "{text}");
    assert_eq!(count("timeout"), Some(0), "{text}");
    assert_eq!(count("2xx"), Some(n), "{text}");
    text
}

/// A gateway with a TLS listener `edge` (with `tls_extra` keys) and a
/// plain one (h2c) for `/h2/...` to `h2` over HTTP/2 and the rest to `h1`
/// over HTTP/1.1, and the plain listener's address.
fn both_listeners(
    ca: &TestCa,
    tls_extra: &str,
    h1: SocketAddr,
    h2: SocketAddr,
) -> (InProcess, SocketAddr) {
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}{}
{tls_extra}[[listener]]
name = \"plain\"\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\nmatch = {{ path_prefix = \"/h2/\" }}\ncluster = \"h2up\"\n\
         [[route]]\ncluster = \"h1up\"\n{}{}",
        ca.listener_tls("server", ""),
        cluster("h1up", &[h1]),
        h2_cluster("h2up", &[h2]),
    ));
    let plain = gw.gateway.listener_addr("plain").unwrap();
    (gw, plain)
}

#[test]
fn h2load_many_streams_over_h2c_to_an_h2_upstream() {
    let origin = Origin::start("origin", &[]);
    let (_gw, plain) = both_listeners(&pki(), "", origin.addr, origin.addr);
    let text = h2load_all_ok(&format!("http://{plain}/h2/load"), 20_000, 4, 100);
    assert!(text.contains("Application protocol: h2c"), "{text}");
    // It really went up over h2.
    let stats = origin_stats(&origin);
    assert!(stats["h2_requests"].as_u64().unwrap() >= 20_000, "{stats}");
}

#[test]
fn h2load_many_streams_over_tls_to_an_h1_upstream() {
    let origin = Origin::start("origin", &[]);
    let (gw, _) = both_listeners(&pki(), "", origin.addr, origin.addr);
    let text = h2load_all_ok(
        &format!("https://127.0.0.1:{}/h1/load", gw.addr().port()),
        20_000,
        4,
        100,
    );
    assert!(text.contains("Application protocol: h2"), "{text}");
    let stats = origin_stats(&origin);
    assert!(stats["h1_requests"].as_u64().unwrap() >= 20_000, "{stats}");
}

#[test]
fn h2_upstream_streams_share_few_connections() {
    let origin = Origin::start("origin", &[]);
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}[[route]]\ncluster = \"h2up\"\n{}max_streams_per_connection = 100\n",
        h2_cluster("h2up", &[origin.addr]),
    ));
    // 4 x 100 streams at once, on one worker: 4 upstream connections of
    // 100 streams would do; twice that leaves room for a race or two.
    h2load_all_ok(&format!("http://{}/many", gw.addr()), 4_000, 4, 100);
    let stats = origin_stats(&origin);
    let connections = stats["connections"].as_u64().unwrap();
    // One of them is this stats request's own.
    assert!(
        connections <= 9,
        "{connections} upstream connections for 400 concurrent streams: {stats}"
    );
}

/// Writes the test pattern's first `len` bytes to `path`.
fn pattern_file(path: &std::path::Path, len: u64) {
    let pattern = Pattern::new();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        pattern.fill(off, &mut buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        off += n as u64;
    }
    file.flush().unwrap();
}

/// True when `data` is the test pattern's first `data.len()` bytes.
fn is_pattern(data: &[u8]) -> bool {
    Pattern::new().matches(0, data, &mut Vec::new())
}

const UPLOAD: u64 = 64 << 20;
const DOWNLOAD: u64 = 32 << 20;

#[test]
fn large_uploads_cross_flow_control_to_h1_and_h2_upstreams() {
    let up = Upstream::start("app");
    let origin = Origin::start("echo", &["--echo"]);
    let ca = pki();
    // Windows of the protocol minimum: 64 MiB needs a thousand and more
    // WINDOW_UPDATEs from the gateway to get through.
    let (gw, plain) = both_listeners(
        &ca,
        "http2 = { initial_stream_window = 65535, initial_connection_window = 65535 }\n",
        up.addr,
        origin.addr,
    );
    let dir = TempDir::new();
    let file = dir.path.join("upload");
    pattern_file(&file, UPLOAD);
    let file_arg = file.display().to_string();

    // h2 (TLS) to HTTP/1.1 with a length: the upstream checks every byte.
    let verify = format!("/verify/{UPLOAD}");
    let r = https(&ca, gw.addr(), &verify, &["--http2", "-T", &file_arg]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{r:?}");
    assert_eq!(r.text(), format!("ok {UPLOAD}"));

    // The same without a length (curl reads stdin): chunked upstream.
    let url = format!("https://localhost:{}{verify}", gw.addr().port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.addr().port());
    let out = output_within(
        Command::new("curl")
            .args(["-sS", "--max-time", "60", "--http2", "-T", "-"])
            .args(["--cacert", &ca.path("ca.pem"), "--resolve", &resolve, &url])
            .stdin(std::fs::File::open(&file).unwrap()),
        Duration::from_secs(90),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ok {UPLOAD}"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = up.seen();
    let chunked = seen
        .iter()
        .filter(|s| s.target == verify)
        .collect::<Vec<_>>();
    assert_eq!(chunked.len(), 2);
    assert!(
        chunked
            .iter()
            .any(|s| s.header("transfer-encoding") == Some("chunked")),
        "{:?}",
        chunked.iter().map(|s| &s.headers).collect::<Vec<_>>()
    );

    // h2c to an h2 upstream that answers it all back: 64 MiB each way.
    let back = dir.path.join("back");
    let back_arg = back.display().to_string();
    let r = h2c(plain, "/h2/upload", &["-T", &file_arg, "-o", &back_arg]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{r:?}");
    let echoed = std::fs::read(&back).unwrap();
    let head_end = echoed
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an echoed head")
        + 4;
    let body = &echoed[head_end..];
    assert_eq!(body.len() as u64, UPLOAD);
    assert!(is_pattern(body), "the echoed body differs from the upload");
}

/// Downloads `DOWNLOAD` bytes from an HTTP/1.1 upstream (chunked, every
/// byte checked) and from an HTTP/2 one, with `client` (curl over TLS or
/// h2c) through `both_listeners`.
fn downloads(client: impl Fn(&str, &[&str]) -> Fetched) {
    let dir = TempDir::new();
    let file = dir.path.join("from-h1");
    let file_arg = file.display().to_string();
    let r = client(&format!("/stream/{DOWNLOAD}"), &["-o", &file_arg]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{r:?}");
    let got = std::fs::read(&file).unwrap();
    assert_eq!(got.len() as u64, DOWNLOAD, "from the HTTP/1.1 upstream");
    assert!(is_pattern(&got), "the downloaded body differs");

    let file = dir.path.join("from-h2");
    let file_arg = file.display().to_string();
    let r = client("/h2/big", &["-o", &file_arg]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{r:?}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        DOWNLOAD,
        "from the HTTP/2 upstream"
    );
}

#[test]
fn large_downloads_over_h2c_cross_flow_control() {
    let up = Upstream::start("app");
    let origin = Origin::start("big", &["--body-size", &DOWNLOAD.to_string()]);
    let (_gw, plain) = both_listeners(&pki(), "", up.addr, origin.addr);
    downloads(|path, extra| h2c(plain, path, extra));
}

#[test]
fn large_downloads_over_tls_h2_cross_flow_control() {
    let up = Upstream::start("app");
    let origin = Origin::start("big", &["--body-size", &DOWNLOAD.to_string()]);
    let ca = pki();
    let (gw, _) = both_listeners(&ca, "", up.addr, origin.addr);
    downloads(|path, extra| {
        let mut args = vec!["--http2"];
        args.extend_from_slice(extra);
        https(&ca, gw.addr(), path, &args)
    });
}

#[test]
fn http1_client_to_an_h2_upstream() {
    let origin = Origin::start("h2origin", &["--echo"]);
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}[[route]]\ncluster = \"h2up\"\n{}",
        h2_cluster("h2up", &[origin.addr]),
    ));
    let url = format!("http://{}/mixed?a=b", gw.addr());
    let r = fetch(&["--http1.1", "-H", "x-test: mixed", &url]);
    assert_eq!((r.version.as_str(), r.status), ("1.1", 200), "{r:?}");
    let echo = r.text();
    let line = first_line(&echo);
    assert!(
        line.starts_with("GET ") && line.ends_with("/mixed?a=b HTTP/2"),
        "the upstream did not get HTTP/2: {echo}"
    );
    assert!(echo.contains("x-test: mixed\r\n"), "{echo}");
    assert!(echo.contains("x-forwarded-for: 127.0.0.1\r\n"), "{echo}");

    // A chunked HTTP/1.1 body goes up as DATA frames, and back.
    let r = fetch(&[
        "--http1.1",
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        "chunked up",
        &url,
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().ends_with("\r\n\r\nchunked up"), "{}", r.text());

    // Keep-alive: three requests on one client connection.
    let mut conn = Conn::open(gw.addr());
    for i in 0..3 {
        conn.send(format!("GET /keep/{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        let resp = conn.response(false);
        assert_eq!(resp.status, 200);
        assert!(
            first_line(&resp.text()).ends_with(&format!("/keep/{i} HTTP/2")),
            "{}",
            resp.text()
        );
    }
    let stats = origin_stats(&origin);
    assert_eq!(stats["h1_requests"], 0, "{stats}");
}

#[test]
fn upstream_h2_over_tls_verifies_the_origin() {
    let ca = pki();
    let origin = Origin::start(
        "tls-origin",
        &[
            "--echo",
            "--cert",
            &ca.path("server.pem"),
            "--key",
            &ca.path("server.key"),
        ],
    );
    let stranger = TestCa::new();
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}\
         [[route]]\nmatch = {{ path_prefix = \"/wrong-ca/\" }}\ncluster = \"wrongca\"\n\
         [[route]]\nmatch = {{ path_prefix = \"/wrong-name/\" }}\ncluster = \"wrongname\"\n\
         [[route]]\ncluster = \"good\"\n\
         {}[cluster.good.tls]\nca = {:?}\nserver_name = \"localhost\"\n\
         {}[cluster.wrongca.tls]\nca = {:?}\nserver_name = \"localhost\"\n\
         {}[cluster.wrongname.tls]\nca = {:?}\nserver_name = \"other.test\"\n",
        h2_cluster("good", &[origin.addr]),
        ca.path("ca.pem"),
        h2_cluster("wrongca", &[origin.addr]),
        stranger.path("ca.pem"),
        h2_cluster("wrongname", &[origin.addr]),
        ca.path("ca.pem"),
    ));
    let r = h2c(gw.addr(), "/secure", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let echo = r.text();
    assert!(first_line(&echo).ends_with("/secure HTTP/2"), "{echo}");
    // The origin speaks only TLS: this came over a verified TLS session.
    assert!(echo.contains("x-forwarded-proto: http\r\n"), "{echo}");

    for path in ["/wrong-ca/x", "/wrong-name/x"] {
        let r = h2c(gw.addr(), path, &[]);
        assert_eq!(r.status, 502, "{path}: {r:?}");
        assert!(r.text().contains("TLS handshake"), "{path}: {}", r.text());
    }
}

// ------------------------------------------------------ hostile clients

/// A plain (h2c) gateway in front of `up`, with `listener` extra keys.
fn h2c_gateway(up: &Upstream, listener: &str) -> InProcess {
    InProcess::start(&format!(
        "{RUNTIME}{EDGE}{listener}[[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    ))
}

/// The gateway still serves a new client: hyper-h2 and curl.
fn still_serving(addr: SocketAddr) {
    let after = python_json(
        "h2_attacks.py",
        &["get", &addr.to_string(), "/after"],
        Duration::from_secs(20),
    );
    assert_eq!(after["status"], 200, "{after}");
    let r = h2c(addr, "/after-curl", &[]);
    assert_eq!((r.version.as_str(), r.status), ("2", 200), "{r:?}");
}

#[test]
fn rapid_reset_is_answered_with_goaway_and_others_are_still_served() {
    let up = Upstream::start("app");
    let gw = h2c_gateway(&up, "");
    let addr = gw.addr().to_string();

    // A few cancelled streams are ordinary: the connection goes on.
    let mild = python_json(
        "h2_attacks.py",
        &["rapid-reset", &addr, "5"],
        Duration::from_secs(20),
    );
    assert!(mild["goaway"].is_null(), "{mild}");
    assert_eq!(mild["final_status"], "200", "{mild}");

    let before = up.count("/rapid-reset");

    // A thousand in one burst is the attack (CVE-2023-44487).
    let attack = python_json(
        "h2_attacks.py",
        &["rapid-reset", &addr, "1000"],
        Duration::from_secs(20),
    );
    assert!(!attack["goaway"].is_null(), "no GOAWAY: {attack}");
    assert_eq!(
        attack["goaway"]["error_code"], 11,
        "expected ENHANCE_YOUR_CALM: {attack}"
    );
    assert_eq!(attack["closed"], true, "{attack}");
    assert!(attack["final_status"].is_null(), "{attack}");
    // Streams past the GOAWAY's last stream id were not processed, so the
    // upstream saw at most those up to it.
    let last = attack["goaway"]["last_stream_id"].as_u64().unwrap();
    assert!(last < 1999, "GOAWAY came only at the end: {attack}");
    let reached = up.count("/rapid-reset") - before;
    assert!(
        reached as u64 <= last.div_ceil(2),
        "{reached} reached the upstream, last stream {last}"
    );

    still_serving(gw.addr());
}

#[test]
fn continuation_flood_is_cut_off() {
    let up = Upstream::start("app");
    let gw = h2c_gateway(&up, "");
    // One header block of 1 MiB in 1 KiB CONTINUATION frames.
    let flood = python_json(
        "h2_attacks.py",
        &["continuation", &gw.addr().to_string(), "1048576", "1024"],
        Duration::from_secs(20),
    );
    assert!(!flood["goaway"].is_null(), "no GOAWAY: {flood}");
    assert_eq!(flood["closed"], true, "{flood}");
    assert!(flood["statuses"].as_array().unwrap().is_empty(), "{flood}");
    assert_eq!(up.count("/continuation"), 0);
    still_serving(gw.addr());
}

#[test]
fn header_list_over_max_header_bytes_is_refused() {
    let up = Upstream::start("app");
    let gw = h2c_gateway(&up, "max_header_bytes = 16384\n");
    let addr = gw.addr().to_string();

    // Under the limit, split over CONTINUATION frames: served.
    let fits = python_json(
        "h2_attacks.py",
        &["continuation", &addr, "8000", "4096"],
        Duration::from_secs(20),
    );
    assert_eq!(fits["statuses"], serde_json::json!(["200"]), "{fits}");
    assert_eq!(up.count("/continuation"), 1);

    // Over it: refused (431, a reset or GOAWAY), never forwarded.
    let over = python_json(
        "h2_attacks.py",
        &["continuation", &addr, "40000", "16384"],
        Duration::from_secs(20),
    );
    let statuses = over["statuses"].as_array().unwrap();
    let refused = statuses.iter().any(|s| s == "431")
        || !over["rst_stream"].as_array().unwrap().is_empty()
        || !over["goaway"].is_null();
    assert!(refused, "oversized header list not refused: {over}");
    assert!(!statuses.iter().any(|s| s == "200"), "{over}");
    assert_eq!(up.count("/continuation"), 1, "the oversized one went up");
    still_serving(gw.addr());
}

#[test]
fn listener_http2_settings_are_advertised() {
    let up = Upstream::start("app");
    let gw = InProcess::start(&format!(
        "{RUNTIME}{EDGE}max_header_bytes = 32768\n\
         [listener.http2]\nmax_concurrent_streams = 8\ninitial_stream_window = 131072\n\
         [[listener]]\nname = \"default\"\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    ));
    let settings = |addr: SocketAddr| {
        let got = python_json(
            "h2_attacks.py",
            &["settings", &addr.to_string()],
            Duration::from_secs(20),
        );
        assert_eq!(got["timeout"], false, "{got}");
        got["settings"].clone()
    };
    let set = settings(gw.addr());
    assert_eq!(set["MAX_CONCURRENT_STREAMS"], 8, "{set}");
    assert_eq!(set["INITIAL_WINDOW_SIZE"], 131072, "{set}");
    assert_eq!(set["MAX_HEADER_LIST_SIZE"], 32768, "{set}");
    // The other listener has the defaults: the 8 came from the config.
    let defaults = settings(gw.gateway.listener_addr("default").unwrap());
    assert_eq!(defaults["MAX_CONCURRENT_STREAMS"], 128, "{defaults}");
}
