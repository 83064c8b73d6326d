//! The JSON object and the histogram export hold every field.

use std::time::Duration;

use crate::support::{Serve, TempDir, num, run};

#[test]
fn json_holds_every_field_and_hist_is_hdrhistogram_text() {
    let serve = Serve::start(&[]);
    let dir = TempDir::new("json");
    let hist = dir.path("latency.hgrm");
    let (v, status) = run(
        &[
            &serve.url("http"),
            "-c",
            "4",
            "-d",
            "1s",
            "-R",
            "500",
            "--hist",
            hist.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(status.success());
    for key in [
        "url",
        "protocol",
        "tls",
        "mode",
        "connections",
        "threads",
        "pipeline",
        "streams",
        "warmup_s",
        "duration_s",
        "offered_rate",
        "achieved_rate",
        "target_held",
        "requests",
        "unsent",
        "warmup_requests",
        "connects",
        "body_bytes",
        "status",
        "errors",
        "first_errors",
        "latency_us",
        "send_lag_us",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    for kind in ["connect", "timeout", "reset", "protocol", "total"] {
        assert!(v["errors"][kind].is_u64(), "errors/{kind}: {v}");
    }
    for p in [
        "p50", "p90", "p99", "p99.9", "p99.99", "min", "max", "mean", "stdev", "count",
    ] {
        assert!(v["latency_us"][p].is_number(), "latency_us/{p}: {v}");
    }
    assert_eq!(v["mode"], "open");
    assert_eq!(num(&v, "offered_rate"), 500.0);
    assert_eq!(v["target_held"], true, "{v}");
    let achieved = num(&v, "achieved_rate");
    assert!((495.0..=505.0).contains(&achieved), "{v}");
    assert_eq!(num(&v, "latency_us/count"), num(&v, "requests"));
    assert!(num(&v, "latency_us/p50") <= num(&v, "latency_us/p99"));
    // Requests leave on time to well under a millisecond (timerfd pacing,
    // not monoio's 1 ms timer tick, which put the median lag near 0.8 ms).
    assert!(num(&v, "send_lag_us/p50") < 500.0, "{v}");

    let text = std::fs::read_to_string(&hist).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.contains("Value") && first.contains("Percentile") && first.contains("TotalCount"),
        "{text}"
    );
    let total = format!("Total count    = {:>12}", num(&v, "requests") as u64);
    assert!(text.contains(&total), "{text}");
    assert!(text.contains("#[Buckets ="), "{text}");
}

#[test]
fn table_names_the_figures_and_warns_when_the_rate_is_not_held() {
    // One connection to a server that takes 20 ms per answer cannot carry
    // 200 requests per second.
    let serve = Serve::start(&["--delay", "20ms"]);
    let out = std::process::Command::new(crate::support::RINGLOAD)
        .args([
            "run",
            &serve.url("http"),
            "-c",
            "1",
            "-d",
            "500ms",
            "-R",
            "200",
            "-q",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    for word in [
        "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean", "stdev", "offered", "achieved",
        "errors",
    ] {
        assert!(table.contains(word), "{word} missing in\n{table}");
    }
    assert!(
        table.contains("WARNING: the offered rate was NOT held"),
        "{table}"
    );
}
