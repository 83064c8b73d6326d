//! What the control thread is told, by signals, the file watcher and the
//! admin listener, and what it tells back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

/// What the control thread is asked to do.
#[derive(Debug)]
pub enum Event {
    /// Read, validate and apply the configuration file. `reply` hears the
    /// new generation or the error.
    Reload {
        /// Why.
        cause: Cause,
        /// Where to send the outcome.
        reply: Option<mpsc::Sender<Result<u64, String>>>,
    },
    /// Stop accepting and finish in-flight requests, but keep the process
    /// (and its admin listener) up.
    Drain,
    /// Reopen the access log (SIGUSR1, after rotation).
    ReopenLogs,
    /// A DNS answer changed: apply the endpoints it makes.
    Resolved,
    /// Drain and stop.
    Shutdown,
    /// A new process is taking over (`ringway --upgrade`): send copies of
    /// every listening socket to `reply`.
    Handover {
        /// Where the sockets go.
        reply: mpsc::Sender<crate::upgrade::Sockets>,
    },
    /// The new process serves on the sockets handed over: stop the admin
    /// listener accepting, answer what it accepted, then tell `done`.
    StopAdmin {
        /// Hears that the admin listener no longer accepts.
        done: mpsc::Sender<()>,
    },
    /// The hand-over is confirmed to the new process: drain and stop.
    Upgraded,
}

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The file (or the symlink it hangs on) changed.
    FileChanged,
    /// SIGHUP.
    Signal,
    /// `POST /reload` on the admin listener.
    Admin,
}

/// Reload outcomes, read by the admin listener.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads applied.
    pub succeeded: AtomicU64,
    /// Reloads refused (the running configuration stayed).
    pub failed: AtomicU64,
    /// The last refusal, cleared by the next success.
    pub last_error: Mutex<Option<String>>,
    /// `POST /drain` was asked: not ready any more.
    pub draining: std::sync::atomic::AtomicBool,
    /// Balancer tables built since start (at start and by reloads).
    pub tables_built: AtomicU64,
    /// Balancer tables a reload took over unchanged.
    pub tables_kept: AtomicU64,
    /// Heap bytes of the served configuration's tables (each once).
    pub table_bytes: AtomicU64,
}

impl ReloadStats {
    /// Adds what a start or a reload did to the balancer tables.
    pub(crate) fn count_tables(&self, build: &ringway_config::TableBuild) {
        self.tables_built
            .fetch_add(build.built as u64, Ordering::Relaxed);
        self.tables_kept
            .fetch_add(build.reused as u64, Ordering::Relaxed);
        self.table_bytes
            .store(build.bytes as u64, Ordering::Relaxed);
    }
}
