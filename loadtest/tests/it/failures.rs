//! Servers that refuse, reset or never answer: counted, reported, and the
//! run still ends on time.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::{num, run};

#[test]
fn refused_connections_are_connect_errors_and_the_run_ends() {
    // Bind then drop: nothing listens on the port afterwards.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let began = Instant::now();
    let (v, status) = run(
        &[
            &format!("http://127.0.0.1:{port}/"),
            "-c",
            "2",
            "-d",
            "500ms",
        ],
        Duration::from_secs(20),
    );
    assert!(!status.success());
    assert!(num(&v, "errors/connect") >= 2.0, "{v}");
    assert_eq!(num(&v, "requests"), 0.0);
    assert!(began.elapsed() < Duration::from_secs(10));
}

#[test]
fn resets_are_counted_and_reconnected() {
    // Reads each request, then closes without answering.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { break };
            let mut buf = [0u8; 1024];
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = s.read(&mut buf);
        }
    });
    let (v, _) = run(
        &[&format!("http://{addr}/"), "-c", "1", "-d", "500ms"],
        Duration::from_secs(20),
    );
    assert!(num(&v, "errors/reset") >= 5.0, "{v}");
    assert!(num(&v, "connects") >= 5.0, "{v}");
    assert!(v["first_errors"]["reset"].is_string(), "{v}");
}

#[test]
fn a_server_that_never_answers_times_out_within_the_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            let Ok(s) = s else { break };
            held.push(s); // accepted, never read, never answered
        }
    });
    let began = Instant::now();
    let (v, _) = run(
        &[
            &format!("http://{addr}/"),
            "-c",
            "2",
            "-d",
            "1s",
            "--timeout",
            "300ms",
        ],
        Duration::from_secs(20),
    );
    let took = began.elapsed();
    assert!(num(&v, "errors/timeout") >= 4.0, "{v}");
    assert_eq!(num(&v, "requests"), 0.0);
    // 1s of run plus at most one timeout of drain, plus process start-up.
    assert!(took < Duration::from_secs(4), "took {took:?}");
}
