//! Traffic management on real sockets: weighted splits, retries and their
//! budget, passive ejection and its end, active health checks.

use std::time::Duration;

use crate::support::*;

#[test]
fn a_90_10_split_lands_within_one_percent() {
    let blue = Upstream::start("blue");
    let green = Upstream::start("green");
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\nsplit = [{{ cluster = \"blue\", weight = 90 }}, {{ cluster = \"green\", weight = 10 }}]\n{}{}",
            cluster("blue", &[blue.addr]),
            cluster("green", &[green.addr])
        ),
        1,
    );
    let mut c = Conn::open(gw.addr());
    for _ in 0..1000 {
        c.send(b"GET /s HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(c.response(false).status, 200);
    }
    // Smooth weighted round-robin per worker: exact over every 100.
    let (b, g) = (blue.count("/s"), green.count("/s"));
    assert_eq!(b + g, 1000);
    assert!((890..=910).contains(&b), "blue {b}, green {g}");
}

#[test]
fn a_refused_connection_is_retried_on_another_endpoint_by_default() {
    let live = Upstream::start("live");
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\n{}",
            cluster("app", &[closed_port(), live.addr])
        ),
        1,
    );
    for i in 0..20 {
        let resp = get(gw.addr(), "a", &format!("/r/{i}"));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    assert_eq!(live.count("/r/"), 20);
}

#[test]
fn retries_move_5xx_to_a_live_endpoint_and_the_budget_caps_them() {
    let sick = Upstream::start("sick");
    let well = Upstream::start("well");
    sick.set_sick(true);
    let config = |retry: &str| {
        format!(
            "{EDGE}[[route]]\ncluster = \"app\"\nretry = {retry}\n{}[cluster.app.outlier]\nconsecutive_failures = 0\n",
            cluster("app", &[sick.addr, well.addr])
        )
    };
    let gw = InProcess::with_workers(&config("{ attempts = 2, on = [\"503\"] }"), 1);
    for i in 0..20 {
        assert_eq!(get(gw.addr(), "a", &format!("/t/{i}")).status, 200);
    }
    // Round-robin sent half the first tries to the sick endpoint.
    assert_eq!(sick.count("/t/"), 10);
    assert_eq!(well.count("/t/"), 20);
    drop(gw);

    // A budget that allows no retry at all: the 503s come through.
    let gw = InProcess::with_workers(
        &config("{ attempts = 2, on = [\"503\"], budget = 0.0, min_retries = 0 }"),
        1,
    );
    let statuses: Vec<u16> = (0..20)
        .map(|i| get(gw.addr(), "a", &format!("/u/{i}")).status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 503).count(),
        10,
        "{statuses:?}"
    );

    // POST is not idempotent: not retried on a 503 once it was sent.
    let gw2 = InProcess::with_workers(&config("{ attempts = 2, on = [\"503\"] }"), 1);
    let posts: Vec<u16> = (0..4)
        .map(|_| {
            exchange(
                gw2.addr(),
                b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx",
            )
            .status
        })
        .collect();
    assert_eq!(posts.iter().filter(|&&s| s == 503).count(), 2, "{posts:?}");
}

#[test]
fn a_failing_endpoint_is_ejected_and_comes_back() {
    let flaky = Upstream::start("flaky");
    let steady = Upstream::start("steady");
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\n{}[cluster.app.outlier]\nconsecutive_failures = 3\nbase_ejection_time = \"300ms\"\n",
            cluster("app", &[flaky.addr, steady.addr])
        ),
        1,
    );
    flaky.set_sick(true);
    let mut c = Conn::open(gw.addr());
    let mut send = |path: &str| {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        c.response(false).status
    };
    let first: Vec<u16> = (0..6).map(|_| send("/e")).collect();
    assert_eq!(first.iter().filter(|&&s| s == 503).count(), 3, "{first:?}");
    // Ejected: everything goes to the steady endpoint now.
    for _ in 0..20 {
        assert_eq!(send("/f"), 200);
    }
    assert_eq!(flaky.count("/f"), 0);
    // Healed and past its ejection, it gets traffic again.
    flaky.set_sick(false);
    assert!(wait_until(Duration::from_secs(5), || {
        send("/g");
        flaky.count("/g") > 0
    }));
}

#[test]
fn a_failed_health_check_takes_the_endpoint_out_for_every_worker() {
    let a = Upstream::start("a");
    let b = Upstream::start("b");
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\n{}health = {{ path = \"/health\", interval = \"100ms\", timeout = \"500ms\", unhealthy_threshold = 1, healthy_threshold = 1 }}\n",
            cluster("app", &[a.addr, b.addr])
        ),
        2,
    );
    // One check per endpoint per interval for the whole process, not one
    // per worker: over ~1 s at 100 ms, about 10 checks, not 20.
    let before = a.count("/health");
    std::thread::sleep(Duration::from_millis(1000));
    let checks = a.count("/health") - before;
    assert!((7..=13).contains(&checks), "{checks} checks in 1 s");

    a.set_sick(true);
    let marked = a.count("/health");
    assert!(wait_until(Duration::from_secs(5), || a.count("/health") >= marked + 2));
    // Many new connections, spread by the kernel over both workers.
    for i in 0..40 {
        assert_eq!(get(gw.addr(), "x", &format!("/h/{i}")).status, 200);
    }
    assert_eq!(a.count("/h/"), 0);
    assert_eq!(b.count("/h/"), 40);

    a.set_sick(false);
    assert!(wait_until(Duration::from_secs(5), || {
        get(gw.addr(), "x", "/back");
        a.count("/back") > 0
    }));
}

#[test]
fn least_request_sends_most_traffic_away_from_a_slow_endpoint() {
    let slow = Upstream::start_with_delay("slow", Duration::from_millis(50));
    let fast = Upstream::start("fast");
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\n{}balancer = \"least-request\"\n",
            cluster("app", &[slow.addr, fast.addr])
        ),
        1,
    );
    let addr = gw.addr();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for _ in 0..40 {
                    c.send(b"GET /lr HTTP/1.1\r\nHost: a\r\n\r\n");
                    assert_eq!(c.response(false).status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let (s, f) = (slow.count("/lr"), fast.count("/lr"));
    assert_eq!(s + f, 320);
    // Round-robin would give the slow endpoint half; least-request keeps
    // it to the requests it can finish (here under a fifth).
    assert!(s * 5 < s + f, "slow {s}, fast {f}");
}

#[test]
fn maglev_keeps_a_key_on_one_endpoint_and_spreads_keys() {
    let ups: Vec<Upstream> = ["m0", "m1", "m2"]
        .into_iter()
        .map(Upstream::start)
        .collect();
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\n{}balancer = {{ kind = \"maglev\", key = \"header:x-user\" }}\n",
            cluster("app", &addrs)
        ),
        2,
    );
    let mut owner = std::collections::HashMap::new();
    for round in 0..3 {
        for user in 0..60 {
            let resp = exchange(
                gw.addr(),
                format!("GET /k HTTP/1.1\r\nHost: a\r\nX-User: user-{user}\r\n\r\n").as_bytes(),
            );
            let by = resp.header("x-upstream").unwrap().to_owned();
            let first = owner.entry(user).or_insert_with(|| by.clone());
            assert_eq!(*first, by, "user-{user} moved in round {round}");
        }
    }
    for u in &ups {
        let keys = owner.values().filter(|o| *o == u.name).count();
        assert!(
            (8..=32).contains(&keys),
            "{} owns {keys} of 60 keys",
            u.name
        );
    }
}
