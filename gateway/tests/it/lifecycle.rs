//! The built binary: start-up on io_uring, `ringway check`, bounded memory
//! under huge bodies, graceful drain.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn proxy_config(up: &Upstream, extra: &str) -> String {
    format!(
        "{extra}\n{EDGE}[[route]]\ncluster = \"app\"\n{}",
        cluster("app", &[up.addr])
    )
}

#[test]
fn check_accepts_good_files_and_points_at_bad_ones() {
    let dir = TempDir::new();
    let good = dir.path.join("good.toml");
    std::fs::write(
        &good,
        format!("{EDGE}[[route]]\nrespond = {{ status = 200 }}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("check")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1 listener(s), 1 route(s)"), "{text}");

    let bad = dir.path.join("bad.toml");
    std::fs::write(&bad, format!("{EDGE}[[route]]\ncluster = \"missing\"\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.toml:5:11: no cluster named \"missing\""),
        "{err}"
    );
}

#[test]
fn check_reports_the_memory_of_the_balancer_tables() {
    let dir = TempDir::new();
    let file = dir.path.join("tables.toml");
    let mut text = format!("{EDGE}[[route]]\ncluster = \"c0\"\n");
    // Three maglev clusters of three endpoints, two of them alike: two
    // tables of 65,537 slots at 2 bits, 16 KiB (and a few bytes) each.
    for (name, first) in [("c0", 1), ("c1", 1), ("c2", 4)] {
        text.push_str(&format!(
            "[cluster.{name}]\nbalancer = \"maglev\"\nendpoints = [\"127.0.0.1:{}\", \"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            9000 + first,
            9001 + first,
            9002 + first
        ));
    }
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("of which 33 KiB are 2 balancer table(s) built once"),
        "{text}"
    );
}

#[test]
fn a_bad_config_refuses_to_start() {
    let dir = TempDir::new();
    let bad = dir.path.join("bad.toml");
    std::fs::write(
        &bad,
        "[[listener]]\nname = \"edge\"\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.toml:3:10:"), "{err}");
}

#[test]
fn strace_shows_io_uring_and_no_epoll() {
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is not installed (apt-get install strace)");
    }
    let up = Upstream::start("app");
    for (io, expect_uring) in [("uring", true), ("epoll", false)] {
        let dir = TempDir::new();
        let config = dir.path.join("ringway.toml");
        let trace = dir.path.join("trace.txt");
        std::fs::write(&config, proxy_config(&up, "")).unwrap();
        let mut child = Command::new("strace")
            .args([
                "-f",
                "-e",
                "trace=io_uring_setup,epoll_wait,epoll_pwait",
                "-o",
            ])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_ringway"))
            .arg("--config")
            .arg(&config)
            .args(["--workers", "1", "--io", io])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let addr = read_listener_addr(&mut stderr);
        assert_eq!(get(addr, "a", "/traced").status, 200);
        // Stop ringway itself (strace's child) so that strace exits with it.
        let children =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id())).unwrap();
        let ringway_pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: kill(2) on the process this test started through strace.
        assert_eq!(unsafe { libc::kill(ringway_pid, libc::SIGTERM) }, 0);
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&trace).unwrap();
        let uring_ok = text
            .lines()
            .any(|l| l.contains("io_uring_setup(") && !l.contains("= -1"));
        let epoll = text.contains("epoll_wait(") || text.contains("epoll_pwait(");
        assert_eq!(uring_ok, expect_uring, "--io {io}:\n{text}");
        assert_eq!(epoll, !expect_uring, "--io {io}:\n{text}");
    }
}

/// A closed stderr (its reader, a log shipper say, has gone) costs the
/// log lines only: the gateway still serves, drains on SIGTERM and exits
/// 0. `eprintln!` panicked on the broken pipe, which killed the signal
/// thread, and the gateway then ignored SIGTERM.
#[test]
fn a_closed_stderr_does_not_stop_the_drain() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let config = dir.path.join("ringway.toml");
    std::fs::write(&config, proxy_config(&up, "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .arg("--config")
        .arg(&config)
        .args(["--workers", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = read_listener_addr(&mut stderr);
    drop(stderr);
    assert_eq!(get(addr, "a", "/after-close").status, 200);
    // SAFETY: kill(2) on the process this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    assert!(exited, "still running 10 s after SIGTERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

fn read_listener_addr(stderr: &mut impl std::io::BufRead) -> std::net::SocketAddr {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited early: {seen}"
        );
        seen.push_str(&line);
        if let Some(rest) = line.trim().strip_prefix("ringway: listener edge on ") {
            return rest.parse().unwrap();
        }
    }
}

#[test]
fn startup_log_names_the_driver() {
    let up = Upstream::start("app");
    let gw = Binary::start(&proxy_config(&up, ""), &["--workers", "2"]);
    assert!(
        gw.log.iter().any(|l| l.contains("2 worker(s) on io_uring")),
        "{:?}",
        gw.log
    );
}

/// Several hundred MiB each way through the real binary, byte for byte,
/// while its peak resident memory stays small.
#[test]
fn huge_bodies_stream_with_bounded_memory() {
    const SIZE: u64 = 512 * 1024 * 1024;
    let up = Upstream::start("app");
    let gw = Binary::start(&proxy_config(&up, ""), &["--workers", "1"]);
    let baseline_kb = gw.status_kb("VmHWM");

    // Upload with Content-Length.
    let mut c = Conn::open(gw.addr);
    c.send(
        format!("POST /verify/{SIZE} HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n")
            .as_bytes(),
    );
    send_pattern(c.reader.get_mut(), SIZE, None);
    let resp = c.response(false);
    assert_eq!(resp.text(), format!("ok {SIZE}"));

    // Upload chunked, on the same connection.
    c.send(
        format!("POST /verify/{SIZE} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    );
    send_pattern(c.reader.get_mut(), SIZE, Some(100_000));
    c.send(b"0\r\n\r\n");
    assert_eq!(c.response(false).text(), format!("ok {SIZE}"));

    // Download, checked as it arrives.
    c.send(format!("GET /stream/{SIZE} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        c.reader.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let pattern = Pattern::new();
    let mut scratch = Vec::new();
    let mut offset = 0u64;
    read_chunked(&mut c.reader, |piece| {
        assert!(
            pattern.matches(offset, piece, &mut scratch),
            "mismatch at {offset}"
        );
        offset += piece.len() as u64;
        Ok(())
    })
    .unwrap();
    assert_eq!(offset, SIZE);

    let peak_kb = gw.status_kb("VmHWM");
    eprintln!("ringway VmHWM: {baseline_kb} kB at start, {peak_kb} kB after 1.5 GiB of bodies");
    assert!(
        peak_kb < baseline_kb + 32 * 1024,
        "peak RSS grew from {baseline_kb} kB to {peak_kb} kB"
    );
}

/// Writes the pattern's first `size` bytes, raw or as chunks of `chunk`.
fn send_pattern(w: &mut TcpStream, size: u64, chunk: Option<usize>) {
    let pattern = Pattern::new();
    let piece = chunk.unwrap_or(1 << 20);
    let mut buf = vec![0u8; piece];
    let mut offset = 0u64;
    while offset < size {
        let n = (size - offset).min(piece as u64) as usize;
        pattern.fill(offset, &mut buf[..n]);
        if chunk.is_some() {
            write!(w, "{n:x}\r\n").unwrap();
            w.write_all(&buf[..n]).unwrap();
            w.write_all(b"\r\n").unwrap();
        } else {
            w.write_all(&buf[..n]).unwrap();
        }
        offset += n as u64;
    }
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let up = Upstream::start("app");
    let mut gw = Binary::start(
        &proxy_config(&up, "[runtime]\ndrain_timeout = \"10s\""),
        &["--workers", "2"],
    );
    let addr = gw.addr;
    let slow =
        std::thread::spawn(move || exchange(addr, b"GET /delay/1500 HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(wait_until(Duration::from_secs(10), || up
        .seen()
        .iter()
        .any(|s| s.target == "/delay/1500")));

    gw.signal(libc::SIGTERM);
    // New connections are refused once every worker stopped accepting.
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(addr).is_err()),
        "still accepting after SIGTERM"
    );
    // The request in flight is answered in full.
    let resp = slow.join().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "slow");
    assert_eq!(resp.header("connection"), Some("close"));
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let mut rest = String::new();
    let _ = gw.stderr.read_to_string(&mut rest);
    assert!(
        rest.contains("draining") && rest.contains("stopped"),
        "{rest}"
    );
}

/// A drain tells HTTP/2 clients with GOAWAY (NO_ERROR) and still finishes
/// the streams in flight. (curl, because hyper-h2 refuses the PING that
/// follows h2's graceful GOAWAY.)
#[test]
fn sigterm_sends_goaway_to_h2_clients_and_finishes_their_streams() {
    let up = Upstream::start("app");
    let mut gw = Binary::start(
        &proxy_config(&up, "[runtime]\ndrain_timeout = \"10s\""),
        &["--workers", "1"],
    );
    let url = format!("http://{}/delay/1500", gw.addr);
    let slow = std::thread::spawn(move || {
        Command::new("curl")
            .args(["-sv", "--max-time", "20", "--http2-prior-knowledge", &url])
            .output()
            .expect("curl is installed")
    });
    assert!(wait_until(Duration::from_secs(10), || up
        .seen()
        .iter()
        .any(|s| s.target == "/delay/1500")));
    gw.signal(libc::SIGTERM);
    let out = slow.join().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("GOAWAY, error=0"), "{log}");
    assert!(log.contains("< HTTP/2 200"), "{log}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "slow");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Kubernetes stops sending traffic on `/ready`: from the moment a SIGTERM
/// drain starts it must say 503, while the request in flight still gets
/// its answer.
#[test]
fn ready_answers_503_from_the_start_of_a_sigterm_drain() {
    let up = Upstream::start("app");
    let config = proxy_config(&up, "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let mut gw = Binary::start(&config, &["--workers", "1"]);
    assert_eq!(gw.admin("GET", "/ready").0, 200);
    let addr = gw.addr;
    let slow = std::thread::spawn(move || get(addr, "a", "/delay/1500"));
    assert!(wait_until(Duration::from_secs(5), || up.count("/delay") == 1));
    gw.signal(libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(1), || {
        gw.admin("GET", "/ready").0 == 503
    }));
    let answered = slow.join().unwrap();
    assert_eq!(answered.status, 200);
    assert_eq!(answered.text(), "slow");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Admin clients are served at once each: clients that connect and send
/// nothing (they would hold a sequential server for its 5 s read timeout)
/// do not delay `/ready` for anyone else.
#[test]
fn stalled_admin_clients_do_not_delay_ready() {
    let up = Upstream::start("app");
    let config = proxy_config(&up, "[admin]\nlisten = \"127.0.0.1:0\"\n");
    let gw = Binary::start(&config, &["--workers", "1"]);
    let admin = gw.admin.unwrap();
    let stalled: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(admin).unwrap()).collect();
    for _ in 0..5 {
        let asked = std::time::Instant::now();
        assert_eq!(gw.admin("GET", "/ready").0, 200);
        assert_eq!(gw.admin("GET", "/metrics").0, 200);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "took {:?} behind stalled clients",
            asked.elapsed()
        );
    }
    drop(stalled);
}

/// With more clients than `max_connections`, none is refused: the extra
/// ones wait in the backlog and are served as slots free.
#[test]
fn a_connection_cap_holds_extra_clients_in_the_backlog_and_serves_them_all() {
    let up = Upstream::start("app");
    let config = proxy_config(&up, "[admin]\nlisten = \"127.0.0.1:0\"\n").replace(
        "listen = \"127.0.0.1:0\"\n[[route]]",
        "listen = \"127.0.0.1:0\"\nmax_connections = 2\n[[route]]",
    );
    assert!(config.contains("max_connections = 2"), "{config}");
    let gw = Binary::start(&config, &["--workers", "1"]);
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let addr = gw.addr;
            std::thread::spawn(move || get(addr, "a", "/delay/300"))
        })
        .collect();
    for c in clients {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "slow");
    }
    // Two at a time: three rounds of 300 ms at least.
    assert!(
        started.elapsed() >= Duration::from_millis(850),
        "{:?}: the cap did not hold",
        started.elapsed()
    );
    assert!(gw.metric("ringway_accept_paused_total") > 0);
}

#[test]
fn out_of_descriptors_a_worker_backs_off_and_serves_again_when_they_free() {
    let up = Upstream::start("app");
    let config = proxy_config(&up, "[admin]\nlisten = \"127.0.0.1:0\"\n");
    // 64 descriptors, hard limit too: ringway cannot raise it.
    let gw = Binary::start_with_nofile(&config, 64, &["--workers", "1"]);
    // More idle clients than descriptors: the kernel completes their
    // handshakes into the backlog; the worker accepts until EMFILE.
    let idle: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(gw.addr).unwrap())
        .collect();
    // A client that arrives now waits in the backlog, unanswered ...
    let mut waiting = TcpStream::connect(gw.addr).unwrap();
    waiting
        .write_all(b"GET /after-emfile HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = waiting.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "answered while out of descriptors: {early:?}"
    );
    // ... until descriptors free up: then it is served.
    drop(idle);
    waiting.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let r = read_response(&mut BufReader::new(waiting), false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.count("/after-emfile"), 1);
    // The worker kept going, and counted the failed accepts.
    assert_eq!(get(gw.addr, "a", "/still").status, 200);
    assert!(gw.metric("ringway_accept_errors_total") > 0);
}
