//! The built `ringway` binary in its own process: its config file, its
//! admin listener, signals and exit.

#![allow(dead_code)]

use super::*;

/// The built `ringway` binary running in its own process.
pub(crate) struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin listener, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    /// The configuration file it runs.
    pub config: std::path::PathBuf,
    pub stderr: BufReader<std::process::ChildStderr>,
    pub log: Vec<String>,
    _dir: Option<TempDir>,
}

impl Binary {
    /// Starts `ringway --config FILE extra...` and waits for its `edge`
    /// listener to be announced.
    pub(crate) fn start(toml: &str, extra: &[&str]) -> Binary {
        let dir = TempDir::new();
        let path = dir.path.join("ringway.toml");
        std::fs::write(&path, toml).unwrap();
        let mut binary = Binary::start_at(path, std::path::Path::new("."), extra);
        binary._dir = Some(dir);
        binary
    }

    /// [`Binary::start`] with `env` added to the process's environment.
    pub(crate) fn start_with_env(toml: &str, env: &[(&str, &str)], extra: &[&str]) -> Binary {
        let dir = TempDir::new();
        let path = dir.path.join("ringway.toml");
        std::fs::write(&path, toml).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringway"));
        command.envs(env.iter().copied());
        let mut binary = Binary::launch(command, path, extra);
        binary._dir = Some(dir);
        binary
    }

    /// Starts `ringway --config FILE extra...` with at most `nofile` open
    /// descriptors (soft and hard limit, by `prlimit`), so that it cannot
    /// raise its own.
    pub(crate) fn start_with_nofile(toml: &str, nofile: u32, extra: &[&str]) -> Binary {
        let dir = TempDir::new();
        let path = dir.path.join("ringway.toml");
        std::fs::write(&path, toml).unwrap();
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg(env!("CARGO_BIN_EXE_ringway"));
        let mut binary = Binary::launch(command, path, extra);
        binary._dir = Some(dir);
        binary
    }

    /// Starts `ringway --config CONFIG extra...` from the working
    /// directory `cwd`, on a config file the caller wrote (and keeps).
    pub(crate) fn start_at(
        path: std::path::PathBuf,
        cwd: &std::path::Path,
        extra: &[&str],
    ) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringway"));
        command.current_dir(cwd);
        Binary::launch(command, path, extra)
    }

    /// Runs `command --config CONFIG extra...` and waits for the `edge`
    /// listener (and the admin listener, if configured) to be announced.
    fn launch(mut command: Command, path: std::path::PathBuf, extra: &[&str]) -> Binary {
        let toml = std::fs::read_to_string(&path).unwrap();
        // The default upgrade socket lives in the runtime directory: the
        // config's own folder, never the host's /run/ringway.
        if let Some(dir) = path.parent() {
            command.env("RUNTIME_DIRECTORY", dir);
        }
        let mut child = command
            .arg("--config")
            .arg(&path)
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = Vec::new();
        let wants_admin = toml.contains("[admin]");
        let mut addr = None;
        let mut admin = None;
        while addr.is_none() || (wants_admin && admin.is_none()) {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("ringway exited before listening: {log:?}");
            }
            log.push(line.clone());
            if let Some(rest) = line.trim().strip_prefix("ringway: listener edge on ") {
                addr = Some(rest.parse().unwrap());
            }
            if let Some(rest) = line.trim().strip_prefix("ringway: admin on ") {
                admin = Some(rest.parse().unwrap());
            }
        }
        keep_config(&toml);
        Binary {
            child,
            addr: addr.unwrap(),
            admin,
            config: path,
            stderr,
            log,
            _dir: None,
        }
    }

    /// Replaces the configuration file atomically, as editors and
    /// deployment tools do: write a new file, rename it over the old.
    pub(crate) fn write_config(&self, toml: &str) {
        let tmp = self.config.with_extension("tmp");
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// A request to the admin listener: (status, body).
    pub(crate) fn admin(&self, method: &str, path: &str) -> (u16, String) {
        let addr = self.admin.expect("config has [admin]");
        let resp = exchange(
            addr,
            format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n\r\n")
                .as_bytes(),
        );
        (resp.status, resp.text())
    }

    /// The value of a metric without labels, from `/metrics`.
    pub(crate) fn metric(&self, name: &str) -> u64 {
        let (status, body) = self.admin("GET", "/metrics");
        assert_eq!(status, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {body}"))
    }

    /// The generation the admin listener reports, on `/healthz` (the
    /// cheap way a deploy script watches for it) and on `/config`, which
    /// must agree.
    pub(crate) fn generation(&self) -> u64 {
        let addr = self.admin.expect("config has [admin]");
        let of = |request: &[u8]| -> u64 {
            exchange(addr, request)
                .header("x-ringway-generation")
                .unwrap()
                .parse()
                .unwrap()
        };
        let healthz = of(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n");
        let config = of(b"GET /config HTTP/1.1\r\nHost: admin\r\n\r\n");
        // A reload may land between the two reads, never go back.
        assert!(config >= healthz, "/healthz {healthz}, /config {config}");
        healthz
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// A value from /proc/PID/status, in kB (VmRSS, VmHWM, ...).
    pub(crate) fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Waits (with a deadline) for the process to exit; returns its code.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
