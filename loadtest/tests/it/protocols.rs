//! h1, h2c and h2 over TLS (and h1 over TLS) complete with no errors.

use std::time::Duration;

use crate::support::{Serve, TempDir, http_raw, num, run, test_cert};

fn clean(v: &serde_json::Value, protocol: &str) {
    assert_eq!(v["protocol"], protocol, "{v}");
    assert_eq!(num(v, "errors/total"), 0.0, "{v}");
    assert!(num(v, "requests") >= 100.0, "{v}");
    assert_eq!(num(v, "requests"), num(v, "status/200"), "{v}");
}

#[test]
fn h1_and_h2c_on_one_port() {
    let serve = Serve::start(&["--name", "origin-a"]);
    let (h1, _) = run(
        &[&serve.url("http"), "-c", "2", "-d", "500ms"],
        Duration::from_secs(30),
    );
    clean(&h1, "http/1.1");
    let (h2, _) = run(
        &[
            &serve.url("http"),
            "-c",
            "2",
            "-d",
            "500ms",
            "--h2",
            "-m",
            "8",
        ],
        Duration::from_secs(30),
    );
    clean(&h2, "h2");
    let stats = serve.stats();
    assert_eq!(num(&stats, "h1_requests"), num(&h1, "requests"));
    assert_eq!(num(&stats, "h2_requests"), num(&h2, "requests"));
}

#[test]
fn h2_and_h1_over_tls() {
    let dir = TempDir::new("tls");
    let (cert, key) = test_cert(&dir);
    let serve = Serve::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let url = serve.url("https");
    // h2 chosen by ALPN, the certificate checked against its own CA file.
    let (h2, _) = run(
        &[
            &url,
            "-c",
            "2",
            "-d",
            "500ms",
            "--h2",
            "-m",
            "4",
            "--cacert",
            cert.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    clean(&h2, "h2");
    assert_eq!(h2["tls"], true);
    let (h1, _) = run(
        &[&url, "-c", "2", "-d", "500ms", "--insecure"],
        Duration::from_secs(30),
    );
    clean(&h1, "http/1.1");
    let stats = serve.stop(); // its stats path speaks TLS here: use the exit line
    assert_eq!(num(&stats, "h2_requests"), num(&h2, "requests"));
    assert_eq!(num(&stats, "h1_requests"), num(&h1, "requests"));
    assert!(num(&stats, "tls_connections") >= 4.0);
}

#[test]
fn tls_without_trust_settings_is_refused_and_a_wrong_ca_fails_to_connect() {
    let dir = TempDir::new("tls-bad");
    let (cert, key) = test_cert(&dir);
    let other = TempDir::new("tls-other");
    let (other_cert, _) = test_cert(&other);
    let serve = Serve::start(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    let (v, status) = run(
        &[
            &serve.url("https"),
            "-c",
            "1",
            "-d",
            "300ms",
            "--cacert",
            other_cert.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(!status.success(), "no response can arrive: {v}");
    assert!(num(&v, "errors/connect") >= 1.0, "{v}");
    assert_eq!(num(&v, "requests"), 0.0);
}

#[test]
fn echo_status_name_and_delay() {
    let serve = Serve::start(&["--echo", "--name", "echo-1", "--status", "201"]);
    let (head, body) = http_raw(
        serve.addr,
        b"POST /e HTTP/1.1\r\nhost: t\r\nx-probe: 42\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    );
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(head.contains("x-ringload-server: echo-1"), "{head}");
    let body = String::from_utf8(body).unwrap();
    assert!(body.starts_with("POST /e HTTP/1.1\r\n"), "{body}");
    assert!(body.contains("x-probe: 42\r\n"), "{body}");
    assert!(body.ends_with("\r\n\r\nhello"), "{body}");

    let slow = Serve::start(&["--delay", "20ms", "--status", "503"]);
    let (v, _) = run(
        &[&slow.url("http"), "-c", "2", "-n", "40"],
        Duration::from_secs(30),
    );
    assert_eq!(num(&v, "status/503"), 40.0, "{v}");
    assert!(num(&v, "latency_us/p50") >= 19_000.0, "{v}");
}
