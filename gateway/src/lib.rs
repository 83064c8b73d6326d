//! ringway's data plane: everything that does I/O.
//!
//! [`Gateway::start`] takes a compiled [`Snapshot`] and starts one worker
//! thread per core. Each worker is pinned to its core, runs its own monoio
//! runtime on io_uring, accepts on its own `SO_REUSEPORT` socket of every
//! listener, and owns its upstream pool and balancer state: nothing is
//! shared between workers on the request path. The control thread (the
//! caller) owns configuration and signals and reaches the workers only
//! through channels.
//!
//! This crate depends on `ringway-config`, `ringway-router` and
//! `ringway-balancer`, never the other way round.

/// Writes one line to standard error, as `eprintln!` does, but never
/// panics: `eprintln!` panics when stderr is a pipe whose reader has gone
/// (a log shipper that died), and that took down the thread that wanted
/// to report something — the signal thread then no longer drained on
/// SIGTERM, a worker stopped serving while its listener kept accepting.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod access_log;
pub mod allocator;
mod buffer;
mod clock;
pub mod control;
mod deadline;
mod discovery;
mod downstream;
mod drain;
mod failure;
mod forward;
mod gateway;
mod h2_io;
mod health;
mod limit;
mod memory;
mod metrics;
pub mod notify;
mod runtime;
mod spare_box;
mod splice;
pub mod tickets;
mod tls;
mod trace;
pub mod upgrade;
mod upstream;
mod watch;
mod worker;

pub use discovery::resolve_once;
pub use gateway::{Error, Gateway, Options, Result};
pub use runtime::DriverInfo;
