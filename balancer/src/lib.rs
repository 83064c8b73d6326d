//! Endpoint selection for ringway.
//!
//! Pure algorithms: given a set of endpoints (and, for some, per-core
//! counters or a hash key), pick one. Building a selector happens once per
//! endpoint set; picking happens per request, allocates nothing and never
//! blocks. No I/O, no runtime, no knowledge of the router or of TOML.
#![forbid(unsafe_code)]

mod round_robin;

pub use round_robin::RoundRobin;

/// Index of an endpoint in the list a selector was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(pub u32);

/// Errors found while building a selector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A selector needs at least one endpoint.
    #[error("no endpoints")]
    NoEndpoints,
    /// Weights must be at least 1.
    #[error("endpoint {0} has weight 0")]
    ZeroWeight(u32),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
