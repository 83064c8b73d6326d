//! Coordinated omission: a stalled server shows in an open-loop run's
//! tail, and hides in a closed-loop run's.

use std::process::Command;
use std::time::Duration;

use crate::support::{Proc, RINGLOAD, Serve, num};
use serde_json::Value;

/// Runs ringload against `serve` and stops the server for `stall` once the
/// run has printed its first progress line.
fn run_with_stall(serve: &Serve, args: &[&str], stall: Duration) -> Value {
    let mut p = Proc::spawn(
        Command::new(RINGLOAD)
            .arg("run")
            .arg(serve.url("http"))
            .args(args)
            .arg("--json"),
    );
    // The progress line on stderr says the run is under way.
    let stderr = p.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a progress line");
    assert!(first.contains("req/s"), "{first}");
    serve.proc.signal(libc::SIGSTOP);
    std::thread::sleep(stall); // the injected stall itself, not a wait for a condition
    serve.proc.signal(libc::SIGCONT);
    p.wait(Duration::from_secs(30));
    let line = p.line(Duration::from_secs(2), |l| l.starts_with('{'));
    serde_json::from_str(&line).unwrap()
}

#[test]
fn open_loop_shows_a_stall_that_closed_loop_hides() {
    let stall = Duration::from_millis(500);
    let serve = Serve::start(&[]);
    let open = run_with_stall(&serve, &["-c", "4", "-d", "3s", "-R", "1000"], stall);
    let closed = run_with_stall(&serve, &["-c", "4", "-d", "3s"], stall);
    for v in [&open, &closed] {
        assert_eq!(num(v, "errors/total"), 0.0, "{v}");
        // Both runs saw the stall...
        assert!(num(v, "latency_us/max") >= 400_000.0, "{v}");
    }
    // ...but only the open loop reports it beyond its few stuck requests:
    // about 500 of 3000 requests were due during the stall, so its p99 is
    // near the stall itself, while the closed loop's 4 stuck requests are
    // lost among tens of thousands.
    assert!(num(&open, "latency_us/p99") >= 250_000.0, "open: {open}");
    assert!(num(&open, "latency_us/p90") >= 50_000.0, "open: {open}");
    assert!(
        num(&closed, "latency_us/p99") < 50_000.0,
        "closed: {closed}"
    );
    // The open loop still delivered what it offered.
    assert!(num(&open, "requests") >= 2970.0, "open: {open}");
}
