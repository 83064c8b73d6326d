//! Builders for the real processes the tests drive: `ringload serve`,
//! `ringload run`, an independent Python origin, and test certificates.
//! Every wait has a deadline; every child is killed (by its own handle)
//! when its guard drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const RINGLOAD: &str = env!("CARGO_BIN_EXE_ringload");

/// A child process killed on drop, with its stdout lines on a channel.
pub(crate) struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning a child process");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// The next stdout line matching `pred`, within `within`.
    pub(crate) fn line(&self, within: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => continue,
                Err(e) => panic!("no matching line within {within:?}: {e}"),
            }
        }
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// Waits for exit within `within` (killing it and failing otherwise).
    pub(crate) fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("process did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `ringload serve`.
pub(crate) struct Serve {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Serve {
    /// Starts `ringload serve --listen 127.0.0.1:0 ARGS` and waits for its
    /// "listening on" line.
    pub(crate) fn start(args: &[&str]) -> Serve {
        let proc = Proc::spawn(
            Command::new(RINGLOAD)
                .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1"])
                .args(args),
        );
        let line = proc.line(Duration::from_secs(10), |l| l.contains("listening on"));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Serve { proc, addr }
    }

    pub(crate) fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/", self.addr)
    }

    /// The origin's counters from `/__ringload/stats`.
    pub(crate) fn stats(&self) -> Value {
        let (head, body) = http_get(self.addr, "/__ringload/stats");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_slice(&body).unwrap()
    }

    /// SIGINT, then the stats line the origin prints on its way out.
    pub(crate) fn stop(mut self) -> Value {
        self.proc.signal(libc::SIGINT);
        let line = self
            .proc
            .line(Duration::from_secs(10), |l| l.contains("stats {"));
        let status = self.proc.wait(Duration::from_secs(10));
        assert!(status.success(), "serve exited with {status}");
        let json = line.split("stats ").nth(1).unwrap();
        serde_json::from_str(json).unwrap()
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`, read to the end with a
/// deadline: (head, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n").as_bytes(),
    )
}

/// Sends `request` as is and reads until the server closes: (head, body).
pub(crate) fn http_raw(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    (head, all[split + 4..].to_vec())
}

/// Runs `ringload run ARGS --json -q` to completion within `within` and
/// returns its JSON summary and its exit status.
pub(crate) fn run(args: &[&str], within: Duration) -> (Value, std::process::ExitStatus) {
    let mut p = Proc::spawn(
        Command::new(RINGLOAD)
            .arg("run")
            .args(args)
            .args(["--json", "-q"]),
    );
    let status = p.wait(within);
    let line = p.line(Duration::from_secs(2), |l| l.starts_with('{'));
    let v: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}\n{}", p.stderr()));
    (v, status)
}

pub(crate) fn num(v: &Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('/') {
        cur = cur.get(key).unwrap_or_else(|| panic!("no {path} in {v}"));
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number in {v}"))
}

/// A temporary directory removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ringload-it-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key).
pub(crate) fn test_cert(dir: &TempDir) -> (PathBuf, PathBuf) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (c, k) = (dir.path("cert.pem"), dir.path("key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, signing_key.serialize_pem()).unwrap();
    (c, k)
}

/// An independent origin: Python's http.server speaking HTTP/1.1
/// keep-alive, counting every GET except `/count`, which answers the
/// count. With `close_every = N` every Nth response says
/// `Connection: close` and the server closes.
pub(crate) struct PyOrigin {
    _proc: Proc,
    pub addr: SocketAddr,
    _dir: TempDir,
}

const PY_ORIGIN: &str = r#"
import http.server, socketserver, sys, threading
close_every = int(sys.argv[1])
lock = threading.Lock()
count = 0
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_GET(self):
        global count
        if self.path == "/count":
            with lock:
                body = str(count).encode()
            close = True
        else:
            with lock:
                count += 1
                n = count
            body = b"x" * 64
            close = close_every > 0 and n % close_every == 0
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print("listening on 127.0.0.1:%d" % s.server_address[1], flush=True)
s.serve_forever()
"#;

impl PyOrigin {
    pub(crate) fn start(close_every: u32) -> PyOrigin {
        let dir = TempDir::new("py");
        let script = dir.path("origin.py");
        std::fs::write(&script, PY_ORIGIN).unwrap();
        let proc = Proc::spawn(
            Command::new("python3")
                .arg(&script)
                .arg(close_every.to_string()),
        );
        let line = proc.line(Duration::from_secs(10), |l| l.contains("listening on"));
        let addr = line
            .split("listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        PyOrigin {
            _proc: proc,
            addr,
            _dir: dir,
        }
    }

    pub(crate) fn count(&self) -> u64 {
        let (_, body) = http_get(self.addr, "/count");
        String::from_utf8(body).unwrap().trim().parse().unwrap()
    }
}
