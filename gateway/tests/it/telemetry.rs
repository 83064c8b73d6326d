//! Access log lines and exported spans, checked on real sockets: one log
//! line per request with the right fields, reopened on SIGUSR1; spans
//! decoded with the official OpenTelemetry protobuf definitions, with the
//! parent and child ids the upstream saw.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[test]
fn the_access_log_has_one_line_per_request_and_reopens_on_sigusr1() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let log = dir.path.join("access.log");
    let toml = format!(
        "[access_log]\npath = \"{}\"\n{EDGE}[[route]]\nname = \"api\"\nmatch = {{ path_prefix = \"/api/\" }}\ncluster = \"app\"\n{}",
        log.display(),
        cluster("app", &[up.addr])
    );
    let gw = Binary::start(&toml, &["--workers", "2"]);
    for i in 0..20 {
        assert_eq!(
            get(gw.addr, "shop.example", &format!("/api/{i}?x=1")).status,
            200
        );
    }
    let resp = exchange(
        gw.addr,
        b"POST /api/post HTTP/1.1\r\nHost: a\r\nX-Request-Id: my-id-1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(resp.status, 200);
    for _ in 0..4 {
        assert_eq!(get(gw.addr, "a", "/missing").status, 404);
    }
    assert!(
        wait_until(Duration::from_secs(5), || log_lines(&log).len() == 25),
        "{} lines",
        log_lines(&log).len()
    );
    let all = log_lines(&log);
    let api: Vec<_> = all
        .iter()
        .filter(|l| l["path"].as_str().unwrap().starts_with("/api/"))
        .collect();
    assert_eq!(api.len(), 21);
    let first = all.iter().find(|l| l["path"] == "/api/0?x=1").unwrap();
    assert_eq!(first["method"], "GET");
    assert_eq!(first["host"], "shop.example");
    assert_eq!(first["status"], 200);
    assert_eq!(first["upstream"], up.addr.to_string());
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(first["duration_ms"].as_f64().unwrap() >= first["upstream_time_ms"].as_f64().unwrap());
    assert!(first["bytes_out"].as_u64().unwrap() > 0);
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(first["trace_id"].as_str().unwrap().len(), 32);
    // A generated request id reached the upstream; a client's passed on.
    let id = first["request_id"].as_str().unwrap();
    assert_eq!(id.len(), 32);
    assert!(
        up.seen()
            .iter()
            .any(|s| s.header("x-request-id") == Some(id))
    );
    let post = all.iter().find(|l| l["path"] == "/api/post").unwrap();
    assert_eq!(post["request_id"], "my-id-1");
    assert_eq!(
        post["bytes_in"].as_u64().unwrap(),
        102,
        "head 97 bytes + body 5"
    );
    assert_eq!(
        up.seen()
            .iter()
            .find(|s| s.target == "/api/post")
            .unwrap()
            .header("x-request-id"),
        Some("my-id-1")
    );
    let missing = all.iter().filter(|l| l["status"] == 404).count();
    assert_eq!(missing, 4);

    // Rotation: move the file away, SIGUSR1, new lines go to a new file.
    let rotated = dir.path.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    gw.signal(libc::SIGUSR1);
    assert!(wait_until(Duration::from_secs(5), || {
        get(gw.addr, "a", "/api/after");
        !log_lines(&log).is_empty()
    }));
    assert_eq!(
        log_lines(&rotated).len(),
        25,
        "nothing more went to the rotated file"
    );
}

#[test]
fn spans_are_exported_over_otlp_with_parent_and_child_ids() {
    let receiver_script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/otlp_receiver.py");
    let mut receiver = Command::new("python3")
        .arg(receiver_script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with opentelemetry-proto (pip install opentelemetry-proto)");
    let mut spans = BufReader::new(receiver.stdout.take().unwrap());
    let mut line = String::new();
    spans.read_line(&mut line).unwrap();
    let port: u16 = line
        .trim()
        .strip_prefix("listening ")
        .expect("receiver started")
        .parse()
        .unwrap();

    let up = Upstream::start("app");
    let toml = format!(
        "[tracing]\notlp_endpoint = \"http://127.0.0.1:{port}/v1/traces\"\nsample_rate = 0.0\nservice_name = \"edge-test\"\n{EDGE}[[route]]\nname = \"api\"\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    );
    let gw = Binary::start(&toml, &["--workers", "1"]);
    // Sampled by the client: exported. Not sampled, and no traceparent
    // with a sample rate of 0: not exported, but still propagated.
    let parent = "b7ad6b7169203331";
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let sampled = exchange(
        gw.addr,
        format!("GET /traced HTTP/1.1\r\nHost: a\r\ntraceparent: 00-{trace}-{parent}-01\r\ntracestate: v=1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(sampled.status, 200);
    assert_eq!(get(gw.addr, "a", "/untraced").status, 200);

    line.clear();
    spans.read_line(&mut line).unwrap();
    let span: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(span["service"], "edge-test");
    assert_eq!(span["trace_id"], trace);
    assert_eq!(span["parent_span_id"], parent);
    assert_eq!(span["name"], "api");
    assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER");
    assert_eq!(span["attributes"]["http.response.status_code"], 200);
    assert_eq!(span["attributes"]["url.path"], "/traced");
    assert!(span["end"].as_u64().unwrap() >= span["start"].as_u64().unwrap());
    // The upstream got ringway's span as its parent, same trace, and the
    // tracestate untouched.
    let seen = up.seen();
    let traced = seen.iter().find(|s| s.target == "/traced").unwrap();
    let child = format!("00-{trace}-{}-01", span["span_id"].as_str().unwrap());
    assert_eq!(traced.header("traceparent"), Some(child.as_str()));
    assert_eq!(traced.header("tracestate"), Some("v=1"));
    let untraced = seen.iter().find(|s| s.target == "/untraced").unwrap();
    let tp = untraced.header("traceparent").unwrap();
    assert!(tp.starts_with("00-") && tp.ends_with("-00"), "{tp}");

    drop(gw);
    // Only the sampled request was exported.
    drop(receiver.stdin.take());
    let rest: Vec<String> = spans.lines().map(Result::unwrap).collect();
    let _ = receiver.wait();
    assert!(rest.is_empty(), "unexpected spans: {rest:?}");
}

/// The combined format carries the real protocol, Referer and User-Agent,
/// over HTTP/1.1 and over HTTP/2 (h2c here).
#[test]
fn combined_log_lines_show_protocol_referer_and_agent() {
    let dir = TempDir::new();
    let log = dir.path.join("access.log");
    let toml = format!(
        "[access_log]\npath = \"{}\"\nformat = \"combined\"\n{EDGE}[[route]]\nrespond = {{ status = 200, body = \"ok\" }}\n",
        log.display(),
    );
    let gw = Binary::start(&toml, &["--workers", "1"]);
    let url = format!("http://{}/page", gw.addr);
    for (flags, want) in [
        (
            &["--http1.1", "-e", "https://ref.example/a", "-A", "agent/1"][..],
            (
                "\"GET /page HTTP/1.1\" 200 ",
                "\"https://ref.example/a\" \"agent/1\"",
            ),
        ),
        (
            &["--http2-prior-knowledge", "-A", "agent/2"][..],
            ("\"GET /page HTTP/2.0\" 200 ", "\"-\" \"agent/2\""),
        ),
    ] {
        let mut args = vec!["-s", "-o", "/dev/null"];
        args.extend_from_slice(flags);
        args.push(&url);
        assert!(curl(&args).0);
        assert!(
            wait_until(Duration::from_secs(5), || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .any(|l| l.contains(want.0) && l.ends_with(want.1))
            }),
            "no line with {want:?}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().all(|l| l.starts_with("127.0.0.1 - - [")),
        "{text}"
    );
}
