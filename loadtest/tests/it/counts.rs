//! What `ringload run` reports equals what the servers received.

use std::time::Duration;

use crate::support::{PyOrigin, Serve, num, run};

#[test]
fn counts_match_serve_with_n_and_pipelining() {
    let serve = Serve::start(&[]);
    let (v, status) = run(
        &[
            &serve.url("http"),
            "-c",
            "4",
            "-n",
            "3000",
            "--pipeline",
            "4",
        ],
        Duration::from_secs(60),
    );
    assert!(status.success());
    assert_eq!(num(&v, "requests"), 3000.0, "{v}");
    assert_eq!(num(&v, "status/200"), 3000.0);
    assert_eq!(num(&v, "errors/total"), 0.0);
    assert_eq!(num(&serve.stats(), "requests"), 3000.0);
    // The stats line printed on SIGINT agrees (stats requests are not counted).
    let last = serve.stop();
    assert_eq!(num(&last, "requests"), 3000.0);
    assert_eq!(num(&last, "h1_requests"), 3000.0);
}

#[test]
fn counts_match_serve_over_a_duration_with_warmup() {
    let serve = Serve::start(&[]);
    let (v, _) = run(
        &[
            &serve.url("http"),
            "-c",
            "3",
            "-d",
            "1s",
            "--warmup",
            "300ms",
        ],
        Duration::from_secs(60),
    );
    let measured = num(&v, "requests");
    let warmup = num(&v, "warmup_requests");
    assert!(measured > 100.0 && warmup > 10.0, "{v}");
    assert_eq!(num(&v, "errors/total"), 0.0, "{v}");
    assert_eq!(measured + warmup, num(&serve.stats(), "requests"));
}

#[test]
fn counts_match_an_independent_python_origin_that_closes_connections() {
    // Every 7th response closes its connection: ringload must reconnect
    // and keep counting exactly.
    let py = PyOrigin::start(7);
    let url = format!("http://{}/", py.addr);
    let (v, status) = run(&[&url, "-c", "2", "-n", "700"], Duration::from_secs(60));
    assert!(status.success());
    assert_eq!(num(&v, "requests"), 700.0, "{v}");
    assert_eq!(num(&v, "errors/total"), 0.0, "{v}");
    assert!(
        num(&v, "connects") >= 100.0,
        "reconnects after each close: {v}"
    );
    assert_eq!(py.count(), 700);

    let (v, _) = run(&[&url, "-c", "2", "-d", "500ms"], Duration::from_secs(60));
    assert_eq!(num(&v, "errors/total"), 0.0, "{v}");
    assert_eq!(num(&v, "requests") + 700.0, py.count() as f64);
}
