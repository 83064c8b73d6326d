//! A run as the command line describes it.

use std::time::Duration;

use bytes::Bytes;

use crate::tls::Trust;

/// A run as the command line describes it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Connections in total (`-c`).
    pub connections: usize,
    /// Threads (`-t`).
    pub threads: usize,
    /// Measured duration (`-d`).
    pub duration: Option<Duration>,
    /// Measured requests (`-n`).
    pub requests: Option<u64>,
    /// Open loop: total requests per second (`-R`).
    pub rate: Option<f64>,
    /// HTTP/1.1 pipeline depth.
    pub pipeline: usize,
    /// Speak HTTP/2 (h2c prior knowledge, or h2 by ALPN over TLS).
    pub h2: bool,
    /// h2 streams per connection (`-m`).
    pub streams: usize,
    /// Method.
    pub method: String,
    /// Headers, `Name: value`.
    pub headers: Vec<String>,
    /// Body.
    pub body: Bytes,
    /// How to check certificates (https).
    pub trust: Option<Trust>,
    /// Excluded from the figures.
    pub warmup: Duration,
    /// Per-request deadline; also how long in-flight requests get after
    /// the end.
    pub timeout: Duration,
    /// Per-connection deadline for TCP, TLS and h2 handshakes.
    pub connect_timeout: Duration,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
}
