//! Peers, scripts and a test CA: python peers driven over stdin/stdout,
//! commands with a deadline, and certificates made with rcgen.

#![allow(dead_code)]

use super::*;

/// A helper process (a python peer, an origin) killed by its PID on drop.
/// A thread collects its stdout lines, so that a test can wait for one with
/// a deadline instead of blocking on the pipe.
pub(crate) struct Peer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    /// Starts `program args...` and waits up to [`IO_TIMEOUT`] for its
    /// first line on stdout (peers announce themselves there).
    pub(crate) fn start(program: &str, args: &[&str]) -> Peer {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push(line);
            }
        });
        let peer = Peer { child, lines };
        assert!(
            wait_until(IO_TIMEOUT, || !peer.lines().is_empty()),
            "{program} {args:?} announced nothing"
        );
        peer
    }

    /// Writes `line` and a newline to its stdin (peers that take
    /// commands read them there).
    pub(crate) fn tell(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Every stdout line so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits up to `limit` for a stdout line that satisfies `want`.
    pub(crate) fn wait_line(&self, limit: Duration, want: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        wait_until(limit, || {
            found = self.lines().into_iter().find(|l| want(l));
            found.is_some()
        });
        found
    }

    /// The port in the first line, the last word of it (`listening PORT`).
    pub(crate) fn port(&self) -> u16 {
        let first = self.lines().remove(0);
        first
            .split_whitespace()
            .last()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of a helper script beside these tests.
pub(crate) fn script(name: &str) -> String {
    format!("{}/tests/it/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `command` to completion, its stdout and stderr captured, within
/// `limit`: past it the process is killed by its PID and the test fails.
/// Its stdin is what the caller set (inherited otherwise).
pub(crate) fn output_within(command: &mut Command, limit: Duration) -> std::process::Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pid = child.id() as i32;
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match result.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: plain kill(2) on our own child's pid, not yet reaped
            // (the waiting thread reaps it after this).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("{command:?} still running after {limit:?}: killed");
        }
    }
}

/// Runs `python3 SCRIPT args...` to completion within `limit` (killed by
/// its PID past it, and the test fails) and parses the last line it
/// printed as JSON.
pub(crate) fn python_json(name: &str, args: &[&str], limit: Duration) -> serde_json::Value {
    let out = output_within(
        Command::new("python3")
            .arg(script(name))
            .args(args)
            .stdin(Stdio::null()),
        limit,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("{name} {args:?} printed no JSON: {stdout}\n{stderr}"))
}

/// A test certificate authority in a temporary folder (`ca.pem`, and
/// `NAME.pem`/`NAME.key` per leaf), for the suites that need TLS beside
/// the TLS suite's own.
pub(crate) struct TestCa {
    pub dir: TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = TempDir::new();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ringway test CA (support)");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.path.join("ca.pem"), ca.pem()).unwrap();
        TestCa {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// The path of `file` in the CA's folder.
    pub(crate) fn path(&self, file: &str) -> String {
        self.dir.path.join(file).display().to_string()
    }

    /// Writes `NAME.pem` and `NAME.key`: a leaf for the DNS names `names`.
    pub(crate) fn leaf(&self, name: &str, names: &[&str]) {
        let sans = names
            .iter()
            .map(|n| rcgen::SanType::DnsName((*n).to_owned().try_into().unwrap()))
            .collect();
        self.leaf_with(name, "ringway-test-leaf", sans, None);
    }

    /// Writes `NAME.pem` and `NAME.key`: a leaf with common name `cn` and
    /// the given SANs, valid until the start of `not_after_year` if given.
    pub(crate) fn leaf_with(
        &self,
        name: &str,
        cn: &str,
        sans: Vec<rcgen::SanType>,
        not_after_year: Option<i32>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        if let Some(year) = not_after_year {
            params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            params.not_after = rcgen::date_time_ymd(year, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.dir.path.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(
            self.dir.path.join(format!("{name}.key")),
            key.serialize_pem(),
        )
        .unwrap();
    }

    /// A listener's `tls = { cert, key }` for leaf `name`, and `extra` keys.
    pub(crate) fn listener_tls(&self, name: &str, extra: &str) -> String {
        format!(
            "tls = {{ cert = {:?}, key = {:?}{extra} }}",
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        )
    }
}
