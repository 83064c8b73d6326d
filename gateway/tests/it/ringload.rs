//! The bundled load generator and origin, `ringload`, driven from the
//! gateway's tests. Its binary is built by `cargo test --workspace` (the
//! loadtest package's own tests need it) next to `ringway`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Where the `ringload` binary is.
pub(crate) fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_ringway")).with_file_name("ringload");
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test --workspace` (or `cargo build -p ringway-loadtest`)",
        path.display()
    );
    path
}

/// A `ringload serve` origin on 127.0.0.1:0, stopped on drop.
pub(crate) struct Origin {
    child: Child,
    pub addr: SocketAddr,
}

impl Origin {
    /// Starts `ringload serve --name NAME extra...`.
    pub(crate) fn start(name: &str, extra: &[&str]) -> Origin {
        Origin::start_on(name, "127.0.0.1:0", extra)
    }

    /// Starts `ringload serve --listen LISTEN --name NAME extra...` (other
    /// loopback addresses stand in for other hosts).
    pub(crate) fn start_on(name: &str, listen: &str, extra: &[&str]) -> Origin {
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--listen",
                listen,
                "--workers",
                "1",
                "--name",
                name,
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // It announces its address on stdout.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .split_whitespace()
            .find_map(|w| {
                w.trim_end_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("ringload serve said: {line}"));
        Origin { child, addr }
    }

    /// Requests it has answered, from its own counter.
    pub(crate) fn served(&self) -> u64 {
        let stats = crate::support::get(self.addr, "a", "/__ringload/stats").text();
        let json: serde_json::Value = serde_json::from_str(&stats).unwrap();
        json["requests"].as_u64().unwrap()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ringload run URL args... --json -q` and returns the child; its
/// stdout holds the JSON report once it exits.
pub(crate) fn run(url: &str, args: &[&str]) -> Child {
    Command::new(binary())
        .arg("run")
        .arg(url)
        .args(args)
        .args(["--json", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a `run` child and parses its report.
pub(crate) fn report(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ringload run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
