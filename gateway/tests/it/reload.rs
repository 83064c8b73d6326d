//! Live configuration: reloads from the file, SIGHUP and POST /reload,
//! refused bad files, listeners opened and closed, requests finishing on
//! the snapshot they started with.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn direct(body: &str) -> String {
    format!("{ADMIN}{EDGE}[[route]]\nrespond = {{ status = 200, body = \"{body}\" }}\n")
}

fn served(addr: std::net::SocketAddr) -> String {
    get(addr, "a", "/").text()
}

#[test]
fn file_changes_sighup_and_post_reload_apply_a_new_generation() {
    let gw = Binary::start(&direct("v1"), &["--workers", "2"]);
    assert_eq!(served(gw.addr), "v1");
    let g0 = gw.generation();

    // Rename over the file, as editors do.
    gw.write_config(&direct("v2"));
    // One worker may serve v2 before the other has switched; the
    // generation is published once both have, and it is one more.
    assert!(wait_until(Duration::from_secs(5), || {
        served(gw.addr) == "v2" && gw.generation() == g0 + 1
    }));

    // Rewrite in place, as `echo > file` does.
    std::fs::write(&gw.config, direct("v3")).unwrap();
    // Likewise for v3.
    assert!(wait_until(Duration::from_secs(5), || {
        served(gw.addr) == "v3" && gw.generation() >= g0 + 2
    }));

    // SIGHUP reloads even an unchanged file.
    let before = gw.generation();
    gw.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || gw.generation() == before + 1),
        "SIGHUP: generation {} after {before}",
        gw.generation()
    );

    // An in-place write can reach inotify as two events (truncate, then
    // write), so a late reload of the same file may land meanwhile: the
    // POST must add one at least.
    let before_post = gw.generation();
    let (status, body) = gw.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert!(gw.generation() > before_post);
    assert_eq!(gw.admin("GET", "/reload").0, 405);
    assert!(gw.admin("GET", "/config").1.contains("body = \"v3\""));
}

#[test]
fn a_bad_file_is_refused_with_its_line_and_the_running_config_stays() {
    let gw = Binary::start(&direct("good"), &["--workers", "1"]);
    let g0 = gw.generation();
    let bad = format!("{ADMIN}{EDGE}[[route]]\ncluster = \"nowhere\"\n");
    gw.write_config(&bad);
    let (status, body) = gw.admin("POST", "/reload");
    assert_eq!(status, 400);
    assert!(
        body.contains("ringway.toml:7:11: no cluster named \"nowhere\""),
        "{body}"
    );
    assert_eq!(served(gw.addr), "good");
    assert_eq!(gw.generation(), g0);
    assert!(gw.admin("GET", "/config").1.contains("last reload refused"));

    gw.write_config("this is [not toml");
    let (status, body) = gw.admin("POST", "/reload");
    assert_eq!(status, 400);
    assert!(body.contains("ringway.toml:1:"), "{body}");
    assert_eq!(served(gw.addr), "good");

    gw.write_config(&direct("fixed"));
    assert!(wait_until(Duration::from_secs(5), || served(gw.addr) == "fixed"));
}

#[test]
fn a_configmap_style_symlink_swap_is_seen() {
    // Kubernetes mounts: ringway.toml -> ..data/ringway.toml,
    // ..data -> ..v1; an update renames a new ..data link into place.
    let dir = TempDir::new();
    let d = &dir.path;
    std::fs::create_dir(d.join("..v1")).unwrap();
    std::fs::write(d.join("..v1/ringway.toml"), direct("one")).unwrap();
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/ringway.toml", d.join("ringway.toml")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("--config")
        .arg(d.join("ringway.toml"))
        .args(["--workers", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() > 0);
        if let Some(rest) = line.trim().strip_prefix("ringway: listener edge on ") {
            break rest.parse().unwrap();
        }
    };
    assert_eq!(served(addr), "one");
    std::fs::create_dir(d.join("..v2")).unwrap();
    std::fs::write(d.join("..v2/ringway.toml"), direct("two")).unwrap();
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let switched = wait_until(Duration::from_secs(5), || served(addr) == "two");
    let _ = child.kill();
    let _ = child.wait();
    assert!(switched);
}

#[test]
fn listeners_open_and_close_on_reload() {
    let one = format!("{EDGE}[[route]]\nrespond = {{ status = 200, body = \"x\" }}\n");
    let mut gw = InProcess::start(&one);
    let two = format!("{one}[[listener]]\nname = \"extra\"\nlisten = \"127.0.0.1:0\"\n");
    let edge = gw.addr();
    gw.gateway
        .reload(ringway_config::compile_str("t.toml", &two).unwrap())
        .unwrap();
    let extra = gw.gateway.listener_addr("extra").unwrap();
    assert_eq!(get(extra, "a", "/").text(), "x");
    // The edge listener was kept, not reopened.
    assert_eq!(gw.gateway.listener_addr("edge"), Some(edge));

    gw.gateway
        .reload(ringway_config::compile_str("t.toml", &one).unwrap())
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || TcpStream::connect(
        extra
    )
    .is_err()));
    assert_eq!(get(edge, "a", "/").text(), "x");

    // A listener that cannot bind fails the reload; nothing changes.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clash = format!(
        "{one}[[listener]]\nname = \"clash\"\nlisten = \"{}\"\n",
        taken.local_addr().unwrap()
    );
    let generation = gw.gateway.published().generation();
    assert!(
        gw.gateway
            .reload(ringway_config::compile_str("t.toml", &clash).unwrap())
            .is_err()
    );
    assert_eq!(gw.gateway.published().generation(), generation);
}

#[test]
fn a_request_finishes_on_the_snapshot_it_started_with_and_pools_survive() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let config = |up: &Upstream, extra: &str| {
        format!(
            "{EDGE}{extra}[[route]]\ncluster = \"app\"\n{}",
            cluster("app", &[up.addr])
        )
    };
    let mut gw = InProcess::start(&config(&a, ""));
    let addr = gw.addr();
    assert_eq!(get(addr, "x", "/warm").text(), "a GET /warm");
    let slow = std::thread::spawn(move || get(addr, "x", "/delay/500"));
    assert!(wait_until(Duration::from_secs(5), || a
        .seen()
        .iter()
        .any(|s| s.target == "/delay/500")));
    gw.gateway
        .reload(ringway_config::compile_str("t.toml", &config(&b, "")).unwrap())
        .unwrap();
    assert_eq!(get(addr, "x", "/new").text(), "b GET /new");
    assert_eq!(slow.join().unwrap().text(), "slow");
    // `a` left every cluster: its pooled connection is closed, and the
    // one busy with the slow request is closed when it ends, not pooled.
    assert!(
        wait_until(Duration::from_secs(5), || a.open() == 0),
        "{} connections to a still open",
        a.open()
    );

    // A reload that keeps `b`: its pooled connection is reused, not
    // reopened.
    let before = b.connections();
    let other = "[[route]]\nmatch = { path = \"/other\" }\nrespond = { status = 204 }\n";
    gw.gateway
        .reload(ringway_config::compile_str("t.toml", &config(&b, other)).unwrap())
        .unwrap();
    assert_eq!(get(addr, "x", "/again").text(), "b GET /again");
    assert_eq!(b.connections(), before);
}

/// 100 rewrites of the file under continuous traffic: no request fails,
/// and every response comes from an endpoint of a snapshot that was live
/// while the request ran.
#[test]
fn a_hundred_rewrites_under_load_lose_nothing() {
    let ups: Vec<Upstream> = (0..4)
        .map(|i| Upstream::start(["u0", "u1", "u2", "u3"][i]))
        .collect();
    let version = |i: usize| {
        // Each version routes to a different pair of upstreams.
        let pair = [ups[i % 4].addr, ups[(i + 1) % 4].addr];
        format!(
            "{ADMIN}{EDGE}[[route]]\nmatch = {{ path = \"/version\" }}\nrespond = {{ status = 200, body = \"{i}\" }}\n[[route]]\ncluster = \"app\"\n{}",
            cluster("app", &pair)
        )
    };
    let gw = Binary::start(&version(0), &["--workers", "2"]);
    let g0 = gw.generation();
    let addr = gw.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // (start, end, upstream name or version) per request.
                let mut log = Vec::new();
                let mut c = Conn::open(addr);
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let path = if n.is_multiple_of(2) {
                        "/p"
                    } else {
                        "/version"
                    };
                    n += 1;
                    let start = t0.elapsed();
                    c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
                    let resp = c.response(false);
                    let end = t0.elapsed();
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    let what = resp
                        .header("x-upstream")
                        .map_or_else(|| resp.text(), str::to_owned);
                    log.push((start, end, path, what));
                }
                log
            })
        })
        .collect();

    // live[i] = (written, confirmed) times of version i.
    let mut live = vec![(Duration::ZERO, Duration::ZERO)];
    for i in 1..=100 {
        if i == 50 {
            // A bad file in the middle changes nothing.
            gw.write_config("[[route]]\nmatch = { path = \"/x\" \n");
            let (status, body) = gw.admin("POST", "/reload");
            assert_eq!(status, 400);
            assert!(body.contains("ringway.toml:2:"), "{body}");
        }
        let written = t0.elapsed();
        gw.write_config(&version(i));
        assert!(
            wait_until(Duration::from_secs(5), || gw.generation() >= g0 + i as u64),
            "version {i} not loaded"
        );
        live.push((written, t0.elapsed()));
    }
    stop.store(true, Ordering::SeqCst);
    let logs: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(
        gw.generation(),
        g0 + 100,
        "each rewrite is one generation; the bad file none"
    );

    let total: usize = logs.iter().map(Vec::len).sum();
    assert!(total > 1000, "only {total} requests ran");
    // Version i is live from when it was written (at the earliest) until
    // version i+1 was confirmed (at the latest).
    let window = |i: usize| (live[i].0, live.get(i + 1).map_or(Duration::MAX, |n| n.1));
    for log in &logs {
        for (start, end, path, what) in log {
            let valid = (0..=100).any(|i| {
                let (from, to) = window(i);
                let overlaps = from <= *end && *start <= to;
                let matches = if *path == "/version" {
                    *what == i.to_string()
                } else {
                    *what == format!("u{}", i % 4) || *what == format!("u{}", (i + 1) % 4)
                };
                overlaps && matches
            });
            assert!(valid, "{path} answered by {what} during {start:?}..{end:?}");
        }
    }
}

/// A config with three Maglev clusters, two with the same endpoints;
/// `third` is the third cluster's first endpoint port.
fn hashing(third: u16) -> String {
    let mut text = format!("{ADMIN}{EDGE}[[route]]\ncluster = \"a\"\n");
    for (name, first) in [("a", 9101), ("b", 9101), ("c", third)] {
        text.push_str(&format!(
            "[cluster.{name}]\nbalancer = \"maglev\"\nendpoints = [\"127.0.0.1:{first}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            first + 1,
            first + 2
        ));
    }
    text
}

#[test]
fn a_reload_builds_only_the_tables_whose_endpoints_changed() {
    let gw = Binary::start(&hashing(9201), &["--workers", "2"]);
    // Two distinct endpoint sets: two tables, the copy shares one.
    assert_eq!(gw.metric("ringway_balancer_tables_built_total"), 2);
    assert_eq!(gw.metric("ringway_balancer_tables_kept_total"), 1);
    // 65,537 slots at 2 bits, twice, and a few bytes of weights.
    let bytes = gw.metric("ringway_balancer_table_bytes");
    assert!((32_768..33_000).contains(&bytes), "{bytes}");

    // Nothing changed: nothing built, all three taken over.
    let (status, body) = gw.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.metric("ringway_balancer_tables_built_total"), 2);
    assert_eq!(gw.metric("ringway_balancer_tables_kept_total"), 4);

    // One cluster's endpoints changed: only its table is built.
    let g = gw.generation();
    gw.write_config(&hashing(9301));
    assert!(wait_until(Duration::from_secs(5), || gw.generation() > g));
    // The counters follow the generation by a moment (the control thread
    // adds them once the workers have switched).
    assert!(wait_until(Duration::from_secs(5), || {
        gw.metric("ringway_balancer_tables_kept_total") == 6
    }));
    assert_eq!(gw.metric("ringway_balancer_tables_built_total"), 3);
    assert_eq!(gw.metric("ringway_balancer_table_bytes"), bytes);
}

#[test]
fn with_a_token_file_post_endpoints_need_the_bearer_token() {
    let dir = TempDir::new();
    std::fs::write(dir.path.join("admin.token"), "s3cret-token-0123456789\n").unwrap();
    let config = dir.path.join("ringway.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n{EDGE}[[route]]\nrespond = {{ status = 200 }}\n"
        ),
    )
    .unwrap();
    let gw = Binary::start_at(config, std::path::Path::new("/"), &["--workers", "1"]);
    let admin = gw.admin.unwrap();
    let post = |auth: &str| {
        exchange(
            admin,
            format!("POST /reload HTTP/1.1\r\nHost: a\r\n{auth}Content-Length: 0\r\n\r\n")
                .as_bytes(),
        )
    };
    let refused = post("");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        post("Authorization: Bearer wrong-token-0123456789\r\n").status,
        401
    );
    assert_eq!(
        post("Authorization: Bearer s3cret-token-012345678\r\n").status,
        401
    );
    let g = gw.generation();
    assert_eq!(
        post("Authorization: Bearer s3cret-token-0123456789\r\n").status,
        200
    );
    assert_eq!(gw.generation(), g + 1);
    // Reading needs no token.
    assert_eq!(gw.admin("GET", "/metrics").0, 200);
    assert_eq!(gw.admin("GET", "/ready").0, 200);
}
