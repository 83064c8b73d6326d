//! What ringway tells its operators: metrics that match the traffic sent,
//! valid for promtool; the admin listener's readiness, clusters and drain.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// Parses the text format into `name{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_count_exactly_the_requests_sent_and_pass_promtool() {
    let up = Upstream::start("app");
    let toml = format!(
        "{ADMIN}{EDGE}[[route]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api/\" }}\ncluster = \"app\"\n[[route]]\nname = \"hello\"\nmatch = {{ path = \"/hello\" }}\nrespond = {{ status = 200, body = \"hi\" }}\n{}",
        cluster("app", &[up.addr])
    );
    let gw = Binary::start(&toml, &["--workers", "2"]);
    for i in 0..37 {
        assert_eq!(get(gw.addr, "a", &format!("/api/{i}")).status, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "a", "/nowhere").status, 404);
    }
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "a", "/hello").status, 200);
    }
    // A worker counts a request just after writing its response, so the
    // scrape waits until all 45 are counted (the other worker may still be
    // between the two), then checks every figure.
    let mut text = String::new();
    let counted = wait_until(Duration::from_secs(5), || {
        let (status, body) = gw.admin("GET", "/metrics");
        assert_eq!(status, 200);
        text = body;
        let total: f64 = samples(&text)
            .iter()
            .filter(|(k, _)| k.starts_with("ringway_requests_total{"))
            .map(|(_, v)| v)
            .sum();
        total >= 45.0
    });
    assert!(counted, "45 requests were not all counted:\n{text}");
    let m = samples(&text);
    let api = "listener=\"edge\",route=\"api\",cluster=\"app\"";
    assert_eq!(
        m[&format!("ringway_requests_total{{{api},code=\"2xx\"}}")],
        37.0,
        "{text}"
    );
    assert_eq!(
        m[&format!("ringway_requests_total{{{api},code=\"5xx\"}}")],
        0.0
    );
    assert_eq!(
        m[&format!("ringway_request_duration_seconds_count{{{api}}}")],
        37.0
    );
    assert_eq!(
        m[&format!("ringway_upstream_response_seconds_count{{{api}}}")],
        37.0
    );
    let none = "listener=\"edge\",route=\"\",cluster=\"\"";
    assert_eq!(
        m[&format!("ringway_requests_total{{{none},code=\"4xx\"}}")],
        5.0
    );
    let hello = "listener=\"edge\",route=\"hello\",cluster=\"\"";
    assert_eq!(
        m[&format!("ringway_requests_total{{{hello},code=\"2xx\"}}")],
        3.0
    );
    let opened = m["ringway_upstream_connections_opened_total"];
    let reused = m["ringway_upstream_connections_reused_total"];
    assert_eq!(opened + reused, 37.0);
    assert!(
        opened <= 2.0,
        "one pooled connection per worker at most: {opened}"
    );
    assert_eq!(m["ringway_downstream_connections_total"], 45.0);
    let healthy = format!(
        "ringway_endpoint_healthy{{cluster=\"app\",endpoint=\"{}\"}}",
        up.addr
    );
    assert_eq!(m[&healthy], 1.0);
    assert_eq!(m["ringway_config_generation"], 0.0);

    // promtool (Debian's prometheus package) agrees it is valid.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clusters_ready_and_drain() {
    let up = Upstream::start("app");
    let toml = format!(
        "{ADMIN}{EDGE}[[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr, closed_port()])
    );
    let mut gw = Binary::start(&toml, &["--workers", "1"]);
    assert_eq!(gw.admin("GET", "/ready"), (200, "ready\n".to_owned()));
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(
        clusters.contains(&format!("app {} weight=1 health=healthy", up.addr)),
        "{clusters}"
    );

    // A request in flight survives the drain; new connections are refused.
    let addr = gw.addr;
    let slow =
        std::thread::spawn(move || exchange(addr, b"GET /delay/800 HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(wait_until(Duration::from_secs(5), || up
        .count("/delay/800")
        == 1));
    assert_eq!(gw.admin("POST", "/drain").0, 200);
    assert_eq!(gw.admin("GET", "/ready").0, 503);
    assert!(wait_until(Duration::from_secs(5), || TcpStream::connect(
        addr
    )
    .is_err()));
    assert_eq!(slow.join().unwrap().text(), "slow");
    // Still up, still answering its admin listener, until told to stop.
    assert_eq!(gw.admin("GET", "/healthz").0, 200);
    gw.signal(libc::SIGTERM);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

/// A real Prometheus server (Debian's package) scrapes the admin listener.
#[test]
fn a_real_prometheus_scrapes_the_metrics() {
    let up = Upstream::start("app");
    let toml = format!(
        "{ADMIN}{EDGE}[[route]]\nname = \"api\"\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    );
    let gw = Binary::start(&toml, &["--workers", "2"]);
    for i in 0..10 {
        assert_eq!(get(gw.addr, "a", &format!("/p/{i}")).status, 200);
    }
    let dir = TempDir::new();
    let config = dir.path.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ringway\n    static_configs:\n      - targets: ['{}']\n",
            gw.admin.unwrap()
        ),
    )
    .unwrap();
    let web = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (apt-get install prometheus)");
    let query = |q: &str| -> Option<f64> {
        let mut c = std::net::TcpStream::connect(web).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let path = format!(
            "/api/v1/query?query={}",
            q.replace(' ', "%20")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22")
                .replace('=', "%3D")
        );
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let resp = read_response(&mut std::io::BufReader::new(c), false).ok()?;
        let json: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let scraped = wait_until(Duration::from_secs(30), || {
        query("sum(ringway_requests_total{job=\"ringway\",code=\"2xx\"})") == Some(10.0)
    });
    let up_value = query("up{job=\"ringway\"}");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert!(scraped, "Prometheus never saw the 10 requests");
    assert_eq!(up_value, Some(1.0));
}
