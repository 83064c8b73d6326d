//! The upstream side: connections to endpoints (plain or TLS), the two
//! per-worker pools (HTTP/1.1 keep-alive connections, multiplexed HTTP/2
//! connections), and each worker's state of each cluster (balancer,
//! health, in-flight counts, breakers, outlier ejection).
//!
//! Everything here belongs to one worker: `Rc`, `Cell`, `RefCell`, no
//! lock. A connection returns to the HTTP/1.1 pool only through
//! [`pool::Pool::give_back`], which refuses one that is out of step.

pub(crate) mod cluster;
pub(crate) mod conn;
pub(crate) mod h2_pool;
pub(crate) mod pool;
pub(crate) mod proxy_protocol;
pub(crate) mod target;

/// A worker's upstream connections, kept across reloads.
#[derive(Debug, Default)]
pub(crate) struct Upstreams {
    /// Idle HTTP/1.1 keep-alive connections.
    pub(crate) h1: pool::Pool,
    /// HTTP/2 connections, shared by many streams.
    pub(crate) h2: h2_pool::H2Pool,
}
