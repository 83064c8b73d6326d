//! Live changes and balancing under load from `ringload`, the bundled
//! load generator, against `ringload serve` origins.

use std::time::Duration;

use crate::ringload::{self, Origin};
use crate::support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// 100 rewrites of the file (routes and endpoints changing, a bad file in
/// the middle) while ringload drives traffic: no request fails.
#[test]
fn ringload_sees_no_error_through_a_hundred_rewrites() {
    let origins: Vec<Origin> = (0..4)
        .map(|i| Origin::start(&format!("o{i}"), &[]))
        .collect();
    let version = |i: usize| {
        let pair = [origins[i % 4].addr, origins[(i + 1) % 4].addr];
        format!(
            "{ADMIN}{EDGE}[[route]]\nname = \"v{i}\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"c{i}\"\n{}",
            cluster(&format!("c{i}"), &pair)
        )
    };
    let gw = Binary::start(&version(0), &["--workers", "2"]);
    let g0 = gw.generation();
    let load_started = std::time::Instant::now();
    // Long enough that 100 reloads fit on a busy 2-core machine.
    let load_for = Duration::from_secs(8);
    let load = ringload::run(
        &format!("http://{}/", gw.addr),
        &["-c", "8", "-d", "8s", "--timeout", "5s"],
    );
    // Let the load get going before the first rewrite.
    assert!(wait_until(Duration::from_secs(5), || {
        let (_, m) = gw.admin("GET", "/metrics");
        m.contains("code=\"2xx\"} ") && !m.contains("code=\"2xx\"} 0\n")
    }));
    for i in 1..=100 {
        if i == 50 {
            gw.write_config("[[listener]]\nname = \"edge\"\nlisten = \"nowhere\"\n");
            let (status, body) = gw.admin("POST", "/reload");
            assert_eq!(status, 400, "{body}");
        }
        gw.write_config(&version(i));
        assert!(
            wait_until(Duration::from_secs(5), || gw.generation() >= g0 + i as u64),
            "version {i} not loaded"
        );
    }
    assert!(
        load_started.elapsed() < load_for,
        "the rewrites took longer than the load ran: they were not all under load"
    );
    let report = ringload::report(load);
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 1000, "only {requests} requests: {report}");
    assert_eq!(report["errors"]["total"], 0, "{report}");
    assert_eq!(report["status"]["200"].as_u64(), Some(requests), "{report}");
}

/// Least-request against a slow `ringload serve --delay` origin and a
/// fast one: the slow one gets a small share.
#[test]
fn least_request_avoids_a_slow_ringload_origin() {
    let slow = Origin::start("slow", &["--delay", "20ms"]);
    let fast = Origin::start("fast", &[]);
    let toml = format!(
        "{ADMIN}{EDGE}[[route]]\nname = \"lr\"\ncluster = \"app\"\n{}balancer = \"least-request\"\n",
        cluster("app", &[slow.addr, fast.addr])
    );
    let gw = Binary::start(&toml, &["--workers", "1"]);
    let report = ringload::report(ringload::run(
        &format!("http://{}/", gw.addr),
        &["-c", "16", "-n", "4000"],
    ));
    assert_eq!(report["errors"]["total"], 0, "{report}");
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(clusters.contains("app"), "{clusters}");
    // Which origin answered is counted by the origins themselves.
    let served = |o: &Origin| -> u64 {
        let stats = get(o.addr, "a", "/__ringload/stats").text();
        let json: serde_json::Value = serde_json::from_str(&stats).unwrap();
        json["requests"].as_u64().unwrap()
    };
    let (s, f) = (served(&slow), served(&fast));
    assert!(s + f >= 4000, "slow {s} + fast {f}");
    // Round-robin would give the slow one half; it should get under 15%.
    assert!(s * 100 < (s + f) * 15, "slow {s}, fast {f}");
}
