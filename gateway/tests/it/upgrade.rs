//! Hot upgrade: a new process takes the running one's listening sockets
//! (`ringway --upgrade`, or SIGUSR2 to the running one) while clients keep
//! coming, and not one of them notices.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// A configuration on fixed ports (a new process must find the same
/// addresses), with its upgrade socket in `dir`.
fn config(
    dir: &Path,
    up: &Upstream,
    listen: SocketAddr,
    admin: SocketAddr,
    workers: usize,
) -> String {
    format!(
        "[runtime]\nworkers = {workers}\ndrain_timeout = \"5s\"\nupgrade_socket = {:?}\n\
         [admin]\nlisten = \"{admin}\"\n\
         [[listener]]\nname = \"edge\"\nlisten = \"{listen}\"\n\
         [[route]]\ncluster = \"app\"\n{}",
        dir.join("upgrade.sock"),
        cluster("app", &[up.addr])
    )
}

fn write(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

/// Clients that keep coming until stopped: one opens a new connection
/// every 3 ms, one sends request after request on a keep-alive connection
/// (opening another when the gateway answers `Connection: close`).
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    /// Served by the client that opens a connection per request.
    by_new: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let by_new = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for keep_alive in [false, true] {
            let (stop, served, failed, failures) = (
                stop.clone(),
                served.clone(),
                failed.clone(),
                failures.clone(),
            );
            let by_new = by_new.clone();
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::Relaxed) {
                    let outcome = one_request(addr, keep_alive, &mut conn);
                    match outcome {
                        Ok(()) => {
                            if !keep_alive {
                                by_new.fetch_add(1, Ordering::Relaxed);
                            }
                            served.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            let kind = if keep_alive {
                                "keep-alive"
                            } else {
                                "new connection"
                            };
                            failures.lock().unwrap().push(format!("{kind}: {e}"));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    if !keep_alive {
                        std::thread::sleep(Duration::from_millis(3));
                    }
                }
            }));
        }
        Load {
            stop,
            served,
            by_new,
            failed,
            failures,
            threads,
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Waits until both clients have had `more` more requests served.
    fn progresses(&self, more: u64) -> bool {
        let total = self.served();
        let by_new = self.by_new.load(Ordering::Relaxed);
        let moved = wait_until(IO_TIMEOUT, || {
            let new_now = self.by_new.load(Ordering::Relaxed);
            new_now >= by_new + more && self.served() - new_now >= total - by_new + more
        });
        if !moved {
            // Who holds which connection, for whoever reads this failure.
            if let Ok(ss) = std::process::Command::new("ss").args(["-tanp"]).output() {
                eprintln!(
                    "sockets at the stall:\n{}",
                    String::from_utf8_lossy(&ss.stdout)
                );
            }
            eprintln!(
                "stalled: new-connection client {} -> {}, keep-alive client {} -> {}",
                by_new,
                self.by_new.load(Ordering::Relaxed),
                total - by_new,
                self.served() - self.by_new.load(Ordering::Relaxed)
            );
        }
        moved
    }

    /// Stops; (served, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        assert_eq!(failures.len() as u64, self.failed.load(Ordering::Relaxed));
        (self.served.load(Ordering::Relaxed), failures)
    }
}

fn one_request(
    addr: SocketAddr,
    keep_alive: bool,
    conn: &mut Option<BufReader<TcpStream>>,
) -> Result<(), String> {
    let reused = conn.is_some();
    if conn.is_none() {
        let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        *conn = Some(BufReader::new(stream));
    }
    let reader = conn.as_mut().unwrap();
    let close = if keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    reader
        .get_mut()
        .write_all(format!("GET /load HTTP/1.1\r\nHost: a\r\n{close}\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let response = read_response(reader, false).map_err(|e| format!("read (reused {reused}): {e}"));
    let closing = !keep_alive
        || response
            .as_ref()
            .map_or(true, |r| r.header("connection") == Some("close"));
    if closing {
        *conn = None;
    }
    let response = response?;
    if response.status != 200 {
        return Err(format!("status {}", response.status));
    }
    Ok(())
}

/// Waits for `binary` to print a line containing `want`; the line.
fn stderr_line(binary: &mut Binary, want: &str) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no line with {want:?}");
        let mut line = String::new();
        if binary.stderr.read_line(&mut line).unwrap() == 0 {
            panic!("stderr closed before a line with {want:?}");
        }
        if line.contains(want) {
            return line;
        }
    }
}

/// Runs `ringway --upgrade --config config` to its end (it fails here).
fn upgrade_to(config: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["--upgrade", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

fn refuses(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).is_err()
}

/// Ends a process this test started through ringway's SIGUSR2 (so not
/// its child): SIGTERM, then waits for it to be gone.
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the PID of the process this test made start.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
        wait_until(Duration::from_secs(10), || {
            // SAFETY: signal 0 only asks whether the process exists.
            unsafe { libc::kill(self.0, 0) != 0 }
        });
    }
}

#[test]
fn two_upgrades_under_load_lose_nothing_and_move_the_admin_port() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let listen = unshared_port();
    let (admin1, admin2) = (unshared_port(), unshared_port());
    let first = write(
        &dir.path,
        "first.toml",
        &config(&dir.path, &up, listen, admin1, 2),
    );
    let mut old = Binary::start_at(first, Path::new("."), &[]);
    let load = Load::start(listen);
    assert!(load.progresses(20));

    // Upgrade 1: `--upgrade`, with three workers (two inherited sockets
    // and one new) and the admin listener on another port.
    let second = write(
        &dir.path,
        "second.toml",
        &config(&dir.path, &up, listen, admin2, 3),
    );
    let started = Instant::now();
    let mut new = Binary::start_at(second, Path::new("."), &["--upgrade"]);
    let listening = started.elapsed();
    assert_eq!(new.admin, Some(admin2));
    assert_eq!(
        old.wait_exit(Duration::from_secs(15)),
        Some(0),
        "old process"
    );
    let old_gone = started.elapsed();
    eprintln!(
        "upgrade 1: new process listening after {listening:?}, old exited after {old_gone:?}"
    );
    assert!(refuses(admin1), "the old admin port is still open");
    assert_eq!(new.admin("GET", "/ready"), (200, "ready\n".to_owned()));
    assert!(load.progresses(20));

    // Upgrade 2: SIGUSR2 to the running process, which starts its own
    // binary with its own arguments.
    new.signal(libc::SIGUSR2);
    let line = stderr_line(&mut new, "SIGUSR2: started process");
    let pid: i32 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("a PID in the line");
    let successor = Successor(pid);
    stderr_line(&mut new, "upgrade: the new process serves");
    assert_eq!(
        new.wait_exit(Duration::from_secs(15)),
        Some(0),
        "second process"
    );
    assert!(load.progresses(20));
    assert_eq!(
        exchange(admin2, b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n").status,
        200
    );

    let (served, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {served} failed: {failures:?}",
        failures.len()
    );
    drop(successor);
    assert!(up.count("/load") as u64 >= served);
}

#[test]
fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let listen = unshared_port();
    let admin = unshared_port();
    let running = config(&dir.path, &up, listen, admin, 1);
    let path = write(&dir.path, "running.toml", &running);
    let mut old = Binary::start_at(path, Path::new("."), &[]);

    // A configuration that does not compile: refused before anything.
    let bad = write(
        &dir.path,
        "bad.toml",
        &format!("{running}\n[[route]]\nbogus = 1\n"),
    );
    let out = upgrade_to(&bad);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:"));

    // Another instance's configuration (none of its listeners): refused
    // before anything is taken.
    let stranger = write(
        &dir.path,
        "stranger.toml",
        &config(&dir.path, &up, unshared_port(), unshared_port(), 1),
    );
    let out = upgrade_to(&stranger);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("serves none of this configuration's listeners"),
        "{said}"
    );

    // One that compiles but cannot start after taking the sockets over: a
    // second listener on a port something else holds.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = taken.local_addr().unwrap();
    let clash = write(
        &dir.path,
        "clash.toml",
        &format!("{running}[[listener]]\nname = \"other\"\nlisten = \"{held}\"\n"),
    );
    let out = upgrade_to(&clash);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("took 2 listening socket(s) over"), "{said}");
    stderr_line(&mut old, "still serving");

    // The old process serves on, and can still be upgraded.
    assert_eq!(old.wait_exit(Duration::ZERO), None);
    assert_eq!(get(listen, "a", "/after").status, 200);
    assert_eq!(old.admin("GET", "/ready").0, 200);
    let mut next = Binary::start_at(
        dir.path.join("running.toml"),
        Path::new("."),
        &["--upgrade"],
    );
    assert_eq!(old.wait_exit(Duration::from_secs(15)), Some(0));
    assert_eq!(get(listen, "a", "/next").status, 200);
    assert_eq!(next.admin("GET", "/ready").0, 200);
    next.signal(libc::SIGTERM);
    assert_eq!(next.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn a_fresh_start_beside_a_running_process_does_not_take_its_upgrade_socket() {
    let up = Upstream::start("app");
    let dir = TempDir::new();
    let running = config(&dir.path, &up, unshared_port(), unshared_port(), 1);
    let path = write(&dir.path, "a.toml", &running);
    let _first = Binary::start_at(path, Path::new("."), &[]);
    // Same upgrade socket, other ports: starts, but without hot upgrade.
    let other = config(&dir.path, &up, unshared_port(), unshared_port(), 1);
    let mut second = Binary::start_at(write(&dir.path, "b.toml", &other), Path::new("."), &[]);
    let line = stderr_line(&mut second, "hot upgrade off");
    assert!(line.contains("another ringway listens there"), "{line}");
}

#[test]
fn health_verdicts_survive_an_upgrade() {
    let up = Upstream::start("app");
    // Accepted by the kernel, never answered: each check times out.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = black_hole.local_addr().unwrap();
    let dir = TempDir::new();
    let toml = format!(
        "[runtime]\nworkers = 1\nupgrade_socket = {:?}\n[admin]\nlisten = \"{}\"\n\
         [[listener]]\nname = \"edge\"\nlisten = \"{}\"\n[[route]]\ncluster = \"app\"\n{}\
         health = {{ path = \"/health\", interval = \"200ms\", timeout = \"8s\", unhealthy_threshold = 1, healthy_threshold = 1 }}\n",
        dir.path.join("upgrade.sock"),
        unshared_port(),
        unshared_port(),
        cluster("app", &[up.addr, hole])
    );
    let path = write(&dir.path, "ringway.toml", &toml);
    let mut old = Binary::start_at(path.clone(), Path::new("."), &[]);
    let unhealthy = format!("app {hole} weight=1 health=unhealthy");
    assert!(wait_until(Duration::from_secs(20), || old
        .admin("GET", "/clusters")
        .1
        .contains(&unhealthy)));
    // The new process's own first check of the hole takes 8 s to fail;
    // until then it goes by the verdict handed over. Asked once the old
    // process is gone, so that the new one answers.
    let new = Binary::start_at(path, Path::new("."), &["--upgrade"]);
    assert_eq!(old.wait_exit(Duration::from_secs(6)), Some(0));
    let (status, clusters) = new.admin("GET", "/clusters");
    assert!(clusters.contains(&unhealthy), "{status}: {clusters}");
    assert!(clusters.contains(&format!("app {} weight=1 health=healthy", up.addr)));
}
