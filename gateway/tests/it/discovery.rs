//! Endpoints that follow the fleet: `discovery = { file = ... }` re-read
//! when the file changes (rename-over, symlink swap, in place), a bad file
//! keeping the last good set with its `file:line:col` on `/clusters`;
//! endpoints that join under load, with slow start, and after their first
//! passing health check. (Names that follow DNS: `dns.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

/// Requests until one is answered by `up` (within 5 s).
fn reaches(gw: &Binary, up: &Upstream) -> bool {
    wait_until(Duration::from_secs(5), || {
        get(gw.addr, "a", "/who").text().starts_with(up.name)
    })
}

/// Writes `text` to `path` the way publishing tools do: a new file renamed
/// over the old one.
fn publish(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn endpoints(ups: &[&Upstream]) -> String {
    let list: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!("endpoints = [{}]\n", list.join(", "))
}

/// A gateway (2 workers) run from `/` on a config whose cluster reads
/// `endpoints/api.toml`, relative to the config file.
fn start(dir: &Path) -> (Binary, PathBuf) {
    start_with(dir, 2, "")
}

/// As [`start`], with `workers` and `extra` lines for the cluster.
fn start_with(dir: &Path, workers: usize, extra: &str) -> (Binary, PathBuf) {
    let config = dir.join("ringway.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{EDGE}[[route]]\ncluster = \"api\"\n[cluster.api]\n\
             discovery = {{ file = \"endpoints/api.toml\" }}\n{extra}"
        ),
    )
    .unwrap();
    let workers = workers.to_string();
    (
        Binary::start_at(config, Path::new("/"), &["--workers", &workers]),
        dir.join("endpoints/api.toml"),
    )
}

#[test]
fn a_changed_endpoints_file_moves_traffic_without_a_reload_of_the_config() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path.join("endpoints")).unwrap();
    publish(&dir.path.join("endpoints/api.toml"), &endpoints(&[&a]));
    let (gw, file) = start(&dir.path);
    assert!(reaches(&gw, &a));
    let generation = gw.generation();

    // Renamed over: within a second or so, b serves and a does not.
    publish(&file, &endpoints(&[&b]));
    assert!(reaches(&gw, &b), "traffic did not move to b");
    // Published once every worker confirmed it, a moment after the first
    // worker serves it.
    assert!(wait_until(Duration::from_secs(5), || gw.generation() > generation));
    let seen_by_a = a.count("/who");
    for _ in 0..10 {
        assert_eq!(get(gw.addr, "a", "/who").text(), "b GET /who");
    }
    assert_eq!(a.count("/who"), seen_by_a);
    // a left the cluster: its pooled keep-alive connections are closed,
    // not kept for their idle timeout.
    assert!(
        wait_until(Duration::from_secs(5), || a.open() == 0),
        "{} connections to a still open",
        a.open()
    );

    // Written in place.
    std::fs::write(&file, endpoints(&[&a])).unwrap();
    assert!(reaches(&gw, &a), "traffic did not move back to a");
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(
        clusters.contains(&format!("api {} weight=1", a.addr)),
        "{clusters}"
    );
    assert!(!clusters.contains(&b.addr.to_string()), "{clusters}");
    assert!(
        clusters.contains("cluster api reads its endpoints from /"),
        "{clusters}"
    );
    assert_eq!(gw.metric("ringway_discovery_endpoints{cluster=\"api\"}"), 1);
}

#[test]
fn a_symlink_swap_is_followed() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let dir = TempDir::new();
    let folder = dir.path.join("endpoints");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("v1.toml"), endpoints(&[&a])).unwrap();
    std::fs::write(folder.join("v2.toml"), endpoints(&[&b])).unwrap();
    std::os::unix::fs::symlink("v1.toml", folder.join("api.toml")).unwrap();
    let (gw, file) = start(&dir.path);
    assert!(reaches(&gw, &a));
    // A new link renamed over the old one, as `ln -sfn` + `mv -T` do.
    std::os::unix::fs::symlink("v2.toml", folder.join("api.next")).unwrap();
    std::fs::rename(folder.join("api.next"), &file).unwrap();
    assert!(reaches(&gw, &b), "the swapped link was not followed");
}

#[test]
fn a_bad_endpoints_file_keeps_the_last_good_set_and_says_where() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path.join("endpoints")).unwrap();
    publish(&dir.path.join("endpoints/api.toml"), &endpoints(&[&a]));
    let (gw, file) = start(&dir.path);
    assert!(reaches(&gw, &a));
    let failures = gw.metric("ringway_config_reload_failures_total");

    publish(
        &file,
        "endpoints = [\n  \"127.0.0.1:1\",\n  \"not an address\",\n]\n",
    );
    assert!(wait_until(Duration::from_secs(5), || gw
        .metric("ringway_config_reload_failures_total")
        > failures));
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(
        clusters.contains("endpoints/api.toml:3:3:") && clusters.contains("last reload refused"),
        "{clusters}"
    );
    // Still a's, the last good set.
    for _ in 0..5 {
        assert_eq!(get(gw.addr, "a", "/who").text(), "a GET /who");
    }

    // Fixed: applied, and the complaint is gone.
    publish(&file, &endpoints(&[&b]));
    assert!(reaches(&gw, &b));
    let (_, clusters) = gw.admin("GET", "/clusters");
    assert!(!clusters.contains("last reload refused"), "{clusters}");
}

#[test]
fn endpoints_added_and_removed_under_load_fail_no_request() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path.join("endpoints")).unwrap();
    publish(&dir.path.join("endpoints/api.toml"), &endpoints(&[&a]));
    let (gw, file) = start(&dir.path);
    let addr = gw.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|keep_alive| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut served, mut failed) = (0u32, Vec::new());
                let mut conn = Conn::open(addr);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if keep_alive == 0 {
                        conn = Conn::open(addr);
                    }
                    conn.send(b"GET /load HTTP/1.1\r\nHost: a\r\n\r\n");
                    let r = conn.response(false);
                    if r.status == 200 {
                        served += 1;
                    } else {
                        failed.push(r.status);
                    }
                }
                (served, failed)
            })
        })
        .collect();
    let grows = |set: &[&Upstream]| {
        let before: Vec<usize> = set.iter().map(|u| u.count("/load")).collect();
        wait_until(Duration::from_secs(5), || {
            set.iter()
                .zip(&before)
                .all(|(u, n)| u.count("/load") > n + 5)
        })
    };
    for set in [vec![&a, &b], vec![&b], vec![&a], vec![&a, &b]] {
        let generation = gw.generation();
        publish(&file, &endpoints(&set));
        // Every worker serves the new set (one that has not switched yet
        // may still send a request to an endpoint that left) ...
        assert!(wait_until(Duration::from_secs(5), || gw.generation() > generation));
        // ... each endpoint of the new set serves ...
        assert!(grows(&set), "not every endpoint of the new set serves");
        // ... and one left out gets nothing more.
        for out in [&a, &b]
            .into_iter()
            .filter(|u| !set.iter().any(|s| s.addr == u.addr))
        {
            let seen = out.count("/load");
            assert!(grows(&set));
            assert_eq!(out.count("/load"), seen, "{} still served", out.name);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let (served, failed) = c.join().unwrap();
        assert!(served > 20, "{served}");
        assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    }
}

/// Slow start: an endpoint that joins takes a small share at first, then
/// the whole of it once the ramp is over.
#[test]
fn a_joining_endpoint_ramps_up_with_slow_start() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path.join("endpoints")).unwrap();
    publish(&dir.path.join("endpoints/api.toml"), &endpoints(&[&a]));
    let (gw, file) = start_with(&dir.path, 1, "slow_start = \"4s\"\n");
    assert!(reaches(&gw, &a));
    // The share b gets of `n` requests in a row.
    let share_of_b = |n: usize| {
        let before = b.count("/ramp");
        for _ in 0..n {
            assert_eq!(get(gw.addr, "a", "/ramp").status, 200);
        }
        (b.count("/ramp") - before) as f64 / n as f64
    };
    publish(&file, &endpoints(&[&a, &b]));
    assert!(reaches(&gw, &b), "b never joined");
    let joined = std::time::Instant::now();
    // Round-robin would give b half at once; in the ramp's first second
    // it gets 10-25% of what it would (5-13% of the requests).
    let early = share_of_b(200);
    assert!(
        joined.elapsed() < Duration::from_millis(1500),
        "too slow to measure the ramp's start"
    );
    assert!(early < 0.25, "b took {early} of the requests at once");
    while joined.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let late = share_of_b(200);
    assert!(
        (0.45..=0.55).contains(&late),
        "b's share after the ramp: {late}"
    );
}

/// In a cluster with health checks, an endpoint that joins takes traffic
/// after its first passing check, not before: a sick newcomer is never
/// sent a request.
#[test]
fn a_joining_endpoint_waits_for_its_first_passing_check() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    b.set_sick(true);
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path.join("endpoints")).unwrap();
    publish(&dir.path.join("endpoints/api.toml"), &endpoints(&[&a]));
    let (gw, file) = start_with(
        &dir.path,
        2,
        "health = { path = \"/health\", interval = \"200ms\", unhealthy_threshold = 3 }\n",
    );
    assert!(reaches(&gw, &a));
    let generation = gw.generation();
    publish(&file, &endpoints(&[&a, &b]));
    assert!(wait_until(Duration::from_secs(5), || gw.generation() > generation));
    // b is checked (and fails) while every request goes to a.
    let checks = b.count("/health");
    for _ in 0..100 {
        assert_eq!(get(gw.addr, "a", "/who").text(), "a GET /who");
    }
    assert!(wait_until(Duration::from_secs(5), || b.count("/health") > checks + 1));
    assert_eq!(b.count("/who"), 0, "the sick newcomer was sent requests");
    // Its check passes: it joins.
    b.set_sick(false);
    assert!(reaches(&gw, &b), "b never joined once healthy");
}
