//! TLS termination (issue 5, HTTP/1.1 half): real curl and openssl
//! clients against certificates made here with rcgen; SNI, resumption by
//! session ID and by ticket, mutual TLS with the identity header, reload of
//! a renewed certificate, garbage handshakes, and config errors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::SanType;

use crate::support::*;

/// The test CA of the support module, with the leaves this suite needs.
struct Pki(TestCa);

impl std::ops::Deref for Pki {
    type Target = TestCa;
    fn deref(&self) -> &TestCa {
        &self.0
    }
}

impl Pki {
    /// The usual set: `server` (localhost, *.example.test), `other`
    /// (other.test) and `client` (a SPIFFE URI).
    fn standard() -> Pki {
        let pki = Pki(TestCa::new());
        pki.leaf_with(
            "server",
            "ringway-test-server",
            vec![dns("localhost"), dns("*.example.test")],
            None,
        );
        pki.leaf_with("other", "ringway-test-other", vec![dns("other.test")], None);
        pki.leaf_with(
            "client",
            "ringway-test-client",
            vec![SanType::URI(
                "spiffe://cluster/ns/web".to_owned().try_into().unwrap(),
            )],
            None,
        );
        pki
    }

    /// A `tls = { ... }` value with both certificates and `extra` keys.
    fn tls(&self, extra: &str) -> String {
        format!(
            "tls = {{ certificates = [{{ cert = {:?}, key = {:?} }}, {{ cert = {:?}, key = {:?} }}]{extra} }}",
            self.path("server.pem"),
            self.path("server.key"),
            self.path("other.pem"),
            self.path("other.key"),
        )
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.to_owned().try_into().unwrap())
}

/// A TLS listener `edge` proxying everything to `up`.
fn proxied(pki: &Pki, up: SocketAddr) -> String {
    format!(
        "[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n{}\n[[route]]\ncluster = \"up\"\n{}",
        pki.tls(""),
        cluster("up", &[up])
    )
}

/// curl over TLS to `https://NAME:PORT/PATH`, trusting the test CA.
fn curl_tls(
    pki: &Pki,
    addr: SocketAddr,
    name: &str,
    path: &str,
    extra: &[&str],
) -> (bool, Vec<u8>) {
    let port = addr.port();
    let resolve = format!("{name}:{port}:127.0.0.1");
    let url = format!("https://{name}:{port}{path}");
    let ca = pki.path("ca.pem");
    let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

/// `openssl s_client` to `addr` with `args`, sending one request and
/// waiting for the server to close (so that TLS 1.3 tickets arrive).
fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-ign_eof")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn curl_over_tls_is_proxied_with_forwarded_proto_https() {
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let gw = InProcess::start(&proxied(&pki, up.addr));
    let (ok, body) = curl_tls(&pki, gw.addr(), "localhost", "/hello", &[]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&body), "up GET /hello");
    let seen = up.seen();
    assert_eq!(
        seen.last().unwrap().header("x-forwarded-proto"),
        Some("https")
    );

    // Keep-alive: two requests on one TLS connection, a 1 MiB body each way.
    let url = format!("https://localhost:{}/echo", gw.addr().port());
    let body = "x".repeat(1 << 20);
    let file = pki.path("body");
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{file}");
    let (ok, out) = curl_tls(
        &pki,
        gw.addr(),
        "localhost",
        "/hello",
        &["--data-binary", &data, "-w", "[%{num_connects}]", &url],
    );
    assert!(ok);
    assert!(out.starts_with(body.as_bytes()), "{} bytes", out.len());
    let tail = String::from_utf8_lossy(&out[body.len()..]).into_owned();
    assert_eq!(tail, "[1]up POST /hello[0]");
}

#[test]
fn sni_chooses_the_certificate_and_unknown_names_are_refused() {
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let gw = InProcess::start(&proxied(&pki, up.addr));
    let subject = |sni: Option<&str>| {
        let mut args = vec![];
        match sni {
            Some(name) => args.extend(["-servername", name]),
            None => args.push("-noservername"),
        }
        let out = s_client(gw.addr(), &args);
        out.lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_else(|| panic!("no subject in {out}"))
            .to_owned()
    };
    assert!(subject(Some("other.test")).contains("ringway-test-other"));
    assert!(subject(Some("localhost")).contains("ringway-test-server"));
    assert!(subject(Some("www.example.test")).contains("ringway-test-server"));
    assert!(subject(None).contains("ringway-test-server"));
    // A name no certificate covers: the handshake fails with an alert, no
    // certificate is presented, and the listener goes on serving.
    let refused = s_client(gw.addr(), &["-servername", "unknown.test"]);
    assert!(
        !refused.lines().any(|l| l.starts_with("subject=")),
        "{refused}"
    );
    assert!(refused.contains("alert"), "{refused}");
    assert!(subject(Some("localhost")).contains("ringway-test-server"));
    // And curl verifies the wildcard certificate for its name.
    let (ok, body) = curl_tls(&pki, gw.addr(), "api.example.test", "/", &[]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&body), "up GET /");
}

/// Connects once saving the session, then `again` times resuming it;
/// returns the outputs of the resumptions.
fn resume(addr: SocketAddr, dir: &Path, args: &[&str], again: usize) -> Vec<String> {
    let sess = dir.join(format!("session-{}", args.join("")));
    let sess = sess.display().to_string();
    let mut first = args.to_vec();
    first.extend(["-sess_out", &sess]);
    let out = s_client(addr, &first);
    assert!(out.contains("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\nNew, "), "{out}");
    (0..again)
        .map(|_| {
            let mut next = args.to_vec();
            next.extend(["-sess_in", &sess]);
            s_client(addr, &next)
        })
        .collect()
}

#[test]
fn sessions_resume_by_id_and_by_ticket() {
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let gw = InProcess::start(&proxied(&pki, up.addr));
    let sni = ["-servername", "localhost"];
    // TLS 1.2 with session IDs only (the worker's cache).
    for out in resume(
        gw.addr(),
        &pki.dir.path,
        &[&sni[..], &["-tls1_2", "-no_ticket"]].concat(),
        1,
    ) {
        assert!(out.contains("Reused, TLSv1.2"), "{out}");
    }
    // TLS 1.2 with a ticket.
    for out in resume(
        gw.addr(),
        &pki.dir.path,
        &[&sni[..], &["-tls1_2"]].concat(),
        1,
    ) {
        assert!(out.contains("Reused, TLSv1.2"), "{out}");
    }
    // TLS 1.3 tickets.
    for out in resume(
        gw.addr(),
        &pki.dir.path,
        &[&sni[..], &["-tls1_3"]].concat(),
        1,
    ) {
        assert!(out.contains("Reused, TLSv1.3"), "{out}");
    }
}

#[test]
fn tickets_resume_on_every_worker() {
    // The ticket key is shared: with two workers (SO_REUSEPORT spreads
    // connections by their ports) every resumption must succeed.
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let gw = Binary::start(&proxied(&pki, up.addr), &["--workers", "2"]);
    let sni = ["-servername", "localhost"];
    for args in [["-tls1_3"], ["-tls1_2"]] {
        let args = [&sni[..], &args[..]].concat();
        for out in resume(gw.addr, &pki.dir.path, &args, 6) {
            assert!(out.contains("Reused, "), "{out}");
        }
    }
}

fn mtls_config(pki: &Pki, up: SocketAddr) -> String {
    let ca = pki.path("ca.pem");
    format!(
        "[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n{}\n\
         [[listener]]\nname = \"opt\"\nlisten = \"127.0.0.1:0\"\n{}\n\
         [[route]]\nmatch = {{ headers = {{ \"x-client-san\" = \"spiffe://cluster/ns/web\" }} }}\ncluster = \"up\"\n\
         [[route]]\nrespond = {{ status = 403, body = \"no identity\" }}\n{}",
        pki.tls(&format!(
            ", client_ca = {ca:?}, client_auth = \"require\", client_identity_header = \"x-client-san\""
        )),
        pki.tls(&format!(
            ", client_ca = {ca:?}, client_auth = \"optional\", client_identity_header = \"X-Client-SAN\""
        )),
        cluster("up", &[up])
    )
}

#[test]
fn mutual_tls_forwards_the_verified_identity_and_strips_forged_copies() {
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let gw = InProcess::start(&mtls_config(&pki, up.addr));
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let with_cert = ["--cert", &cert, "--key", &key];

    // A good client certificate: routed on its SAN, forwarded upstream.
    let forged = ["-H", "x-client-san: spiffe://cluster/ns/admin"];
    let (ok, body) = curl_tls(
        &pki,
        gw.addr(),
        "localhost",
        "/a",
        &[&with_cert[..], &forged[..]].concat(),
    );
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&body), "up GET /a");
    let seen = up.seen();
    let last = seen.last().unwrap();
    let values: Vec<&str> = last
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-client-san"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values, ["spiffe://cluster/ns/web"]);

    // Required: no certificate, no handshake.
    let (ok, _) = curl_tls(&pki, gw.addr(), "localhost", "/b", &[]);
    assert!(!ok, "a client without a certificate was served");
    assert_eq!(up.count("/b"), 0);

    // Optional: served without one, but a forged identity routes nowhere
    // and never reaches the upstream.
    let opt = gw.gateway.listener_addr("opt").unwrap();
    let forged = ["-H", "x-client-san: spiffe://cluster/ns/web"];
    let (ok, body) = curl_tls(&pki, opt, "localhost", "/c", &forged);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&body), "no identity");
    assert_eq!(up.count("/c"), 0);
    // And with the certificate, the optional listener forwards it too.
    let (ok, body) = curl_tls(&pki, opt, "localhost", "/d", &with_cert);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&body), "up GET /d");
    let seen = up.seen();
    assert_eq!(
        seen.last().unwrap().header("x-client-san"),
        Some("spiffe://cluster/ns/web")
    );
}

#[test]
fn a_renewed_certificate_is_served_after_reload() {
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let toml = proxied(&pki, up.addr);
    let mut gw = InProcess::start(&toml);
    let subject = |addr| {
        let out = s_client(addr, &["-servername", "localhost"]);
        out.lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(subject(gw.addr()).contains("ringway-test-server"));
    // Same config text, new files on disk.
    pki.leaf_with(
        "server",
        "ringway-test-renewed",
        vec![dns("localhost"), dns("*.example.test")],
        None,
    );
    gw.gateway
        .reload(ringway_config::compile_str("t.toml", &toml).unwrap())
        .unwrap();
    assert!(subject(gw.addr()).contains("ringway-test-renewed"));
    let (ok, body) = curl_tls(&pki, gw.addr(), "localhost", "/after", &[]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&body), "up GET /after");
}

#[test]
fn a_garbage_handshake_is_closed_counted_and_the_worker_serves_on() {
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        proxied(&pki, up.addr)
    );
    let gw = Binary::start(&toml, &["--workers", "1"]);
    for _ in 0..20 {
        let mut s = TcpStream::connect(gw.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        // Closed (perhaps after an alert), never an HTTP answer.
        let _ = s.read_to_end(&mut rest);
        assert!(!rest.starts_with(b"HTTP/"), "{rest:?}");
    }
    let (ok, body) = curl_tls(&pki, gw.addr, "localhost", "/next", &[]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&body), "up GET /next");
    let (_, metrics) = gw.admin("GET", "/metrics");
    assert!(
        metrics.contains("\nringway_tls_handshake_failures_total 20\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nringway_tls_handshakes_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn bad_tls_settings_are_refused_with_their_location() {
    let pki = Pki::standard();
    pki.leaf_with(
        "expired",
        "ringway-test-expired",
        vec![dns("localhost")],
        Some(2020),
    );
    let compile = |tls: &str| {
        let text = format!("{EDGE}{tls}\n");
        ringway_config::compile_str("t.toml", &text)
            .unwrap_err()
            .to_string()
    };
    let e = compile(&format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        pki.path("expired.pem"),
        pki.path("expired.key")
    ));
    assert!(
        e.starts_with("t.toml:4:16: the certificate expired on"),
        "{e}"
    );
    let e = compile(&format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        pki.path("server.pem"),
        pki.path("other.key")
    ));
    assert!(e.contains("does not match the certificate"), "{e}");
    let e = compile(&format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        pki.path("missing.pem"),
        pki.path("server.key")
    ));
    assert!(e.starts_with("t.toml:4:16: cannot read"), "{e}");
    let e = compile(&format!(
        "tls = {{ cert = {:?}, key = {:?} }}",
        pki.path("server.key"),
        pki.path("server.key")
    ));
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = compile(&pki.tls(", alpn = [\"h3\"]"));
    assert!(
        e.contains("expected \"h2\", \"http/1.1\" or \"http/1.0\""),
        "{e}"
    );
    let e = compile(&pki.tls(", client_auth = \"require\""));
    assert!(e.contains("needs a `client_ca`"), "{e}");

    // At start: a clear error and exit status 1.
    let dir = TempDir::new();
    let file = dir.path.join("ringway.toml");
    std::fs::write(
        &file,
        format!(
            "{EDGE}tls = {{ cert = {:?}, key = {:?} }}\n",
            pki.path("expired.pem"),
            pki.path("expired.key")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ringway.toml:4:16: the certificate expired"),
        "{stderr}"
    );
}

/// A gateway in front of a mesh gateway that requires client certificates:
/// clusters reached over TLS verify the endpoint against the CA bundle and
/// the name, present the client certificate, and speak HTTP/1.1 or h2 as
/// ALPN settles.
#[test]
fn upstream_tls_verifies_the_endpoint_and_presents_the_mesh_identity() {
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let mesh = InProcess::start(&mtls_config(&pki, up.addr));
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let mesh_addr = mesh.addr();
    let front = InProcess::start(&format!(
        "{EDGE}\
         [[route]]\nmatch = {{ path_prefix = \"/h1\" }}\ncluster = \"mesh\"\n\
         [[route]]\nmatch = {{ path_prefix = \"/h2\" }}\ncluster = \"mesh2\"\n\
         [[route]]\nmatch = {{ path_prefix = \"/nocert\" }}\ncluster = \"nocert\"\n\
         [[route]]\nmatch = {{ path_prefix = \"/wrongname\" }}\ncluster = \"wrongname\"\n\
         [cluster.mesh]\nendpoints = [\"{mesh_addr}\"]\n\
         tls = {{ ca = {ca:?}, server_name = \"localhost\", client_cert = {cert:?}, client_key = {key:?} }}\n\
         [cluster.mesh2]\nendpoints = [\"{mesh_addr}\"]\nprotocol = \"h2\"\n\
         tls = {{ ca = {ca:?}, server_name = \"localhost\", client_cert = {cert:?}, client_key = {key:?} }}\n\
         [cluster.nocert]\nendpoints = [\"{mesh_addr}\"]\n\
         tls = {{ ca = {ca:?}, server_name = \"localhost\" }}\n\
         [cluster.wrongname]\nendpoints = [\"{mesh_addr}\"]\n\
         tls = {{ ca = {ca:?}, server_name = \"wrong.test\", client_cert = {cert:?}, client_key = {key:?} }}\n"
    ));
    let url = |path: &str| format!("http://{}{path}", front.addr());

    for (path, version) in [("/h1/a", "HTTP/1.1"), ("/h2/a", "HTTP/2")] {
        let (ok, body) = curl(&["-sS", "--fail", &url(path)]);
        assert!(ok, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(String::from_utf8_lossy(&body), format!("up GET {path}"));
        let seen = up.seen();
        let last = seen.last().unwrap();
        let san = last
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-client-san"))
            .map(|(_, v)| v.as_str());
        assert_eq!(san, Some("spiffe://cluster/ns/web"), "{path}");
        // The mesh gateway says which protocol reached it.
        let via = last
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("via"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let expected = if version == "HTTP/2" {
            "2 ringway"
        } else {
            "1.1 ringway"
        };
        assert!(via.contains(expected), "{path}: via {via}");
    }
    // No client certificate: the mesh refuses the handshake. A name the
    // certificate does not carry: the front refuses it.
    for path in ["/nocert/a", "/wrongname/a"] {
        let (_, body) = curl(&["-sS", "-o", "/dev/null", "-w", "%{http_code}", &url(path)]);
        assert_eq!(String::from_utf8_lossy(&body), "502", "{path}");
        assert_eq!(up.count(path), 0);
    }
}

/// Certificate paths relative to the config file work at start and at
/// every reload (file change, SIGHUP, `POST /reload`) with ringway's
/// working directory elsewhere (`/`).
#[test]
fn relative_certificate_paths_survive_every_kind_of_reload() {
    let pki = Pki::standard();
    let config = |body: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n\
             tls = {{ cert = \"server.pem\", key = \"server.key\" }}\n\
             [[route]]\nrespond = {{ status = 200, body = \"{body}\" }}\n"
        )
    };
    let path = pki.dir.path.join("ringway.toml");
    std::fs::write(&path, config("v0")).unwrap();
    let gw = Binary::start_at(path.clone(), Path::new("/"), &["--workers", "1"]);
    let body = |gw: &Binary| {
        let (ok, body) = curl_tls(&pki, gw.addr, "localhost", "/", &[]);
        assert!(ok);
        String::from_utf8(body).unwrap()
    };
    assert_eq!(body(&gw), "v0");

    // The file changes.
    gw.write_config(&config("v1"));
    assert!(wait_until(Duration::from_secs(5), || body(&gw) == "v1"));
    gw.write_config(&config("v2"));
    assert!(wait_until(Duration::from_secs(5), || body(&gw) == "v2"));
    // SIGHUP (of the unchanged file: only the signal reloads it).
    let g = gw.generation();
    gw.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(5), || gw.generation() > g));
    // POST /reload.
    let (status, answer) = gw.admin("POST", "/reload");
    assert_eq!(status, 200, "{answer}");
    let (_, shown) = gw.admin("GET", "/config");
    assert!(!shown.contains("last reload refused"), "{shown}");
    assert_eq!(body(&gw), "v2");
}

#[test]
fn tickets_resume_across_a_hot_upgrade() {
    // The ticket keys cross with the listening sockets: a session the old
    // process issued a ticket for resumes with the new one.
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let listen = free_port();
    let config = proxied(&pki, up.addr).replace("127.0.0.1:0", &listen.to_string());
    let config = format!(
        "[runtime]\nupgrade_socket = {:?}\n{config}",
        pki.dir.path.join("upgrade.sock")
    );
    let path = pki.dir.path.join("ringway.toml");
    std::fs::write(&path, &config).unwrap();
    let mut old = Binary::start_at(path.clone(), Path::new("."), &["--workers", "1"]);
    let sni = ["-servername", "localhost"];
    let sessions: Vec<(Vec<&str>, String)> = [["-tls1_3"], ["-tls1_2"]]
        .into_iter()
        .map(|version| {
            let args = [&sni[..], &version[..]].concat();
            let sess = pki
                .dir
                .path
                .join(format!("upgrade-session{}", version[0]))
                .display()
                .to_string();
            let mut first = args.clone();
            first.extend(["-sess_out", &sess]);
            let out = s_client(old.addr, &first);
            assert!(out.contains("\nNew, "), "{out}");
            (args, sess)
        })
        .collect();
    let _new = Binary::start_at(path, Path::new("."), &["--workers", "1", "--upgrade"]);
    assert_eq!(old.wait_exit(Duration::from_secs(15)), Some(0));
    for (args, sess) in &sessions {
        let mut again = args.clone();
        again.extend(["-sess_in", sess.as_str()]);
        let out = s_client(listen, &again);
        assert!(out.contains("HTTP/1.1 200"), "{out}");
        assert!(out.contains("Reused, "), "{args:?}: {out}");
    }
}

/// A client that, after its first request, sends part of a TLS record and
/// stops is closed at the listener's idle timeout: the read that follows
/// readability (a partial record is readable) is under the wait's
/// deadline too, so the connection cannot hold its read buffer forever.
#[test]
fn a_client_stalled_mid_record_is_closed_at_the_idle_timeout() {
    let pki = Pki::standard();
    let up = Upstream::start("up");
    let toml = proxied(&pki, up.addr).replacen(
        "listen = \"127.0.0.1:0\"\n",
        "listen = \"127.0.0.1:0\"\nidle_timeout = \"1s\"\n",
        1,
    );
    let gw = InProcess::start(&toml);
    let script = r#"
import json, os, socket, ssl, sys, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="localhost")
s.sendall(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n")
got = b""
while b"\r\n\r\n" not in got:
    got += s.recv(65536)
# Part of an application-data record: its header says 64 bytes, 10 come.
raw = socket.socket(fileno=os.dup(s.fileno()))
raw.sendall(b"\x17\x03\x03\x00\x40" + b"x" * 10)
start = time.monotonic()
raw.settimeout(10)
closed = False
try:
    while raw.recv(65536):
        pass
    closed = True
except OSError:
    pass
print(json.dumps({"status": int(got.split(b" ")[1]), "closed": closed, "after": time.monotonic() - start}))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &gw.addr().port().to_string()])
        .output()
        .expect("python3 runs");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(
        got["closed"], true,
        "the gateway kept the stalled connection: {got}"
    );
    let after = got["after"].as_f64().unwrap();
    assert!(after < 5.0, "closed only after {after:.1} s: {got}");
}
