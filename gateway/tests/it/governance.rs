//! Policy on real sockets: rate limits, circuit breakers, header and path
//! rules, redirects, body limits, fault injection.

use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn a_rate_limit_lets_through_its_rate_and_answers_429_to_the_rest() {
    let up = Upstream::start("app");
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\nrate_limit = {{ requests = 40, per = \"1s\", burst = 10 }}\n{}",
            cluster("app", &[up.addr])
        ),
        1,
    );
    let addr = gw.addr();
    let started = Instant::now();
    let run_for = Duration::from_millis(2500);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut limited) = (0u32, 0u32);
                let mut c = Conn::open(addr);
                while started.elapsed() < run_for {
                    c.send(b"GET /rl HTTP/1.1\r\nHost: a\r\n\r\n");
                    let resp = c.response(false);
                    match resp.status {
                        200 => ok += 1,
                        429 => {
                            assert!(
                                resp.header("retry-after")
                                    .is_some_and(|v| v.parse::<u64>().is_ok())
                            );
                            limited += 1;
                        }
                        other => panic!("unexpected {other}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for c in clients {
        let (o, l) = c.join().unwrap();
        ok += o;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Burst 10, then 40 per second: within 10% of what the bucket allows.
    let expected = 10.0 + 40.0 * elapsed;
    assert!(
        (f64::from(ok) - expected).abs() <= expected * 0.1,
        "{ok} let through in {elapsed:.2}s, expected {expected:.0}; {limited} limited"
    );
    assert!(
        limited > ok,
        "the clients asked for far more than the limit"
    );
    assert_eq!(
        up.count("/rl") as u32,
        ok,
        "a limited request never reaches the upstream"
    );
}

#[test]
fn a_tripped_breaker_answers_503_without_touching_the_upstream() {
    let up = Upstream::start_with_delay("app", Duration::from_millis(400));
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\n{}limits = {{ max_requests = 2 }}\n",
            cluster("app", &[up.addr])
        ),
        1,
    );
    let addr = gw.addr();
    let slow: Vec<_> = (0..2)
        .map(|i| std::thread::spawn(move || get(addr, "a", &format!("/held/{i}")).status))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || up.count("/held/") == 2));
    let started = Instant::now();
    for i in 0..3 {
        let resp = get(addr, "a", &format!("/over/{i}"));
        assert_eq!(resp.status, 503);
        assert_eq!(resp.header("x-ringway-overflow"), Some("max_requests"));
    }
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "answered at once"
    );
    assert_eq!(up.count("/over/"), 0);
    for s in slow {
        assert_eq!(s.join().unwrap(), 200);
    }
    // Closed again once the held requests finished.
    assert_eq!(get(addr, "a", "/after").status, 200);
}

#[test]
fn fault_injection_aborts_its_share() {
    let up = Upstream::start("app");
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\nfault = {{ abort = {{ percent = 10, status = 503 }} }}\n{}",
            cluster("app", &[up.addr])
        ),
        1,
    );
    let mut c = Conn::open(gw.addr());
    let mut aborted = 0;
    for _ in 0..2000 {
        c.send(b"GET /f HTTP/1.1\r\nHost: a\r\n\r\n");
        let resp = c.response(false);
        if resp.status == 503 {
            assert_eq!(resp.header("x-ringway-fault"), Some("abort"));
            aborted += 1;
        }
    }
    // 10% of 2000 = 200; binomial sd ~13.4, so ±50 is over 3.5 sd.
    assert!((150..=250).contains(&aborted), "{aborted} of 2000 aborted");
    assert_eq!(up.count("/f"), 2000 - aborted);
}

#[test]
fn fault_injection_delays_its_share() {
    let up = Upstream::start("app");
    let gw = InProcess::with_workers(
        &format!(
            "{EDGE}[[route]]\ncluster = \"app\"\nfault = {{ delay = {{ percent = 100, duration = \"200ms\" }} }}\n{}",
            cluster("app", &[up.addr])
        ),
        1,
    );
    let started = Instant::now();
    assert_eq!(get(gw.addr(), "a", "/d").status, 200);
    assert!(started.elapsed() >= Duration::from_millis(195));
}

#[test]
fn header_and_path_rules_redirects_and_body_limits() {
    let up = Upstream::start("app");
    let gw = InProcess::with_workers(
        &format!(
            r#"{EDGE}
[[route]]
match = {{ path_prefix = "/old/" }}
cluster = "app"
rewrite = {{ path_prefix = "/new/", host = "internal.example" }}
request_headers = {{ add = {{ "x-added" = "a" }}, set = {{ "x-env" = "prod" }}, remove = ["x-secret"] }}
response_headers = {{ add = {{ "x-served-by" = "ringway" }}, remove = ["x-upstream"] }}
max_body = "1KiB"

[[route]]
match = {{ path_prefix = "/moved/" }}
redirect = {{ to = "https://new.example.com", status = 308, keep_path = true }}

{}"#,
            cluster("app", &[up.addr])
        ),
        1,
    );
    let resp = exchange(
        gw.addr(),
        b"GET /old/x?q=1 HTTP/1.1\r\nHost: public.example\r\nX-Env: dev\r\nX-Secret: s\r\n\r\n",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-served-by"), Some("ringway"));
    assert_eq!(resp.header("x-upstream"), None);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.target, "/new/x?q=1");
    assert_eq!(seen.header("host"), Some("internal.example"));
    assert_eq!(seen.header("x-forwarded-host"), Some("public.example"));
    assert_eq!(seen.header("x-env"), Some("prod"));
    assert_eq!(seen.header("x-added"), Some("a"));
    assert_eq!(seen.header("x-secret"), None);

    let moved = get(gw.addr(), "a", "/moved/page?x=1");
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        Some("https://new.example.com/moved/page?x=1")
    );

    // Over the limit by its length: refused before any upstream contact.
    let before = up.seen().len();
    let big = format!(
        "POST /old/up HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n{}",
        "x".repeat(2000)
    );
    assert_eq!(exchange(gw.addr(), big.as_bytes()).status, 413);
    // Over the limit as it streams (chunked).
    let mut c = Conn::open(gw.addr());
    c.send(b"POST /old/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    let piece = format!("200\r\n{}\r\n", "y".repeat(0x200));
    for _ in 0..4 {
        c.send(piece.as_bytes());
    }
    c.send(b"0\r\n\r\n");
    assert_eq!(c.response(false).status, 413);
    assert_eq!(
        up.seen().len(),
        before,
        "no over-limit request completed upstream"
    );
    // Under the limit passes.
    let small = "POST /old/up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789";
    assert_eq!(exchange(gw.addr(), small.as_bytes()).status, 200);
}
