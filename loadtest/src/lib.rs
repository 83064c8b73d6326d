//! `ringload`: the load generator (`ringload run`) and benchmark origin
//! (`ringload serve`) that ship with ringway.
//!
//! Both sides share the gateway's runtime model: one monoio runtime on
//! io_uring per thread, each thread pinned to a core, nothing shared on the
//! request path. The origin opens one `SO_REUSEPORT` listener per worker;
//! the load generator gives each thread its own connections, histograms and
//! counters, and merges them only once a second (progress) and at the end.
//!
//! Invariants:
//! - every wait has a deadline: connects are bounded by a timeout, and a
//!   per-thread watchdog shuts down any socket whose request outlived
//!   `--timeout` or the end of the run, so `run` always returns;
//! - latency in open-loop mode is measured from the moment a request was
//!   *due*, not when it was sent (coordinated omission corrected);
//! - nothing read from the network can panic: malformed input is an error
//!   of kind `protocol`, counted and reported.
//!
//! This crate depends on nothing else in the workspace.

mod buf;
pub mod chunked;
pub mod duration;
pub mod histogram;
pub mod report;
pub mod run;
pub mod runtime;
pub mod serve;
pub mod tls;

use std::io;

/// What can go wrong before any traffic flows: bad arguments, files,
/// sockets or runtimes. Errors during a run are counted, not returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value that does not parse.
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        /// Which option.
        what: &'static str,
        /// What was given.
        value: String,
        /// What was expected.
        why: String,
    },
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// A TLS configuration problem (certificate, key, roots).
    #[error("TLS: {0}")]
    Tls(String),
    /// The io_uring runtime could not start, with what to change.
    #[error("{0}")]
    Runtime(String),
}

impl Error {
    /// An `Invalid` error.
    pub fn invalid(what: &'static str, value: impl Into<String>, why: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            value: value.into(),
            why: why.into(),
        }
    }

    /// An `Io` error with context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
