//! Endpoint selection for ringway.
//!
//! Pure algorithms: given a set of endpoints (and, for some, per-core
//! counters or a hash key), pick one. No I/O, no runtime, no clock, no
//! knowledge of the router or of TOML; this crate depends on nothing else in
//! the workspace.
//!
//! # The algorithms
//!
//! | kind | type | what it does |
//! |---|---|---|
//! | round robin | [`RoundRobin`] | smooth weighted round robin, as nginx does it |
//! | random | [`Random`] | weighted random |
//! | least request | [`LeastRequest`] | power of two choices on in-flight counts; Envoy's active-request bias when weights differ |
//! | ring hash | [`Ketama`] in a [`HashBalancer`] | consistent hashing on a ring of virtual nodes, sized like Envoy's |
//! | maglev | [`Maglev`] in a [`HashBalancer`] | Google's Maglev lookup table, weighted as Envoy does it |
//! | bounded load | [`BoundedLoad`] | "consistent hashing with bounded loads" on top of either hash |
//!
//! [`Balancer`] puts them behind one enum built from a [`BalancerSpec`], which
//! is what the configuration compiles to.
//!
//! # Build, then pick
//!
//! *Building* happens once per endpoint set (at startup and on reload): it
//! validates the input, allocates, hashes the endpoint keys and fills rings
//! and tables. Errors are reported then, as [`Error`].
//!
//! *Picking* happens per request. It never allocates, never blocks and never
//! panics: it returns `Some(endpoint)` or `None` when no endpoint is
//! eligible. Pick reads the per-request view of the endpoints through
//! [`EndpointState`] (is this endpoint eligible — healthy, not ejected — and
//! how many requests does it have in flight). The state is asked only about
//! ids below the number of endpoints the selector was built from, and should
//! answer consistently for the duration of one pick; if it does not, pick
//! still terminates and does not panic, but may return `None`. The pick cost
//! is O(1) or O(log n) in the common case (round robin, which is O(n), is
//! the exception); skipping ineligible endpoints adds work proportional to
//! what has to be skipped, and bounded load one O(n) pass to sum the loads
//! unless the key's endpoint is idle (see each type).
//!
//! # Determinism
//!
//! The hash-based selectors are functions of the endpoint *keys* (for
//! example `"10.0.0.1:8080"`), their weights and the configured sizes: the
//! same inputs give the same key-to-endpoint mapping in every process and
//! every release, whatever order the endpoints are listed in. The key hash is
//! [`hash_key`] (XXH64, seed 0), implemented in this crate; golden files in
//! `tests/golden/` hold the mapping for a fixed endpoint list so that any
//! change to it is deliberate (regenerate with `RINGWAY_BLESS=1`).
//!
//! The randomised selectors take a seed ([`BalancerSpec::seed`]); the same
//! seed and the same sequence of states give the same picks. Give each
//! worker its own seed (its core index will do) so that workers do not move
//! in lock-step.
//!
//! # Least request with per-worker counters
//!
//! ringway is shared-nothing: each worker has its own balancer and counts
//! only the requests *it* has in flight to each endpoint. A worker's
//! [`LeastRequest`] therefore balances that worker's share of the traffic,
//! not the global one. The error this introduces is bounded:
//!
//! * Power of two choices keeps one balancer's in-flight counts within an
//!   additive gap of the mean that does not grow with the load (O(log log n)
//!   for n endpoints in the balls-into-bins model, Berenbrink et al. 2006;
//!   the same order holds in steady state with departures, Mitzenmacher
//!   2001). With W workers, an endpoint's global in-flight count is the sum
//!   of W per-worker counts, so its distance from the global mean is at most
//!   the sum of the W per-worker gaps: O(W · log log n) requests. That is an
//!   additive constant, not a fraction of the load, and it holds however the
//!   traffic is split between workers.
//! * SO_REUSEPORT hashes connections evenly across workers, so each worker
//!   sees a statistically similar slice of requests, and the sum of the
//!   per-worker decisions approximates one global P2C: an endpoint that is
//!   slow accumulates in-flight requests in every worker at once, so every
//!   worker steers away from it at about the same time.
//!
//! What a worker cannot see is a burst that another worker alone has sent to
//! an endpoint; it reacts to slowness (which every worker observes), not to
//! another worker's queue. With W = cores this costs a few requests of
//! imbalance per endpoint, which is why ringway does not share counters
//! across cores (that would cost an atomic write per request).
//!
//! # Panic-free contract
//!
//! Every `pick` in this crate, for any endpoint state and any key hash,
//! returns without panicking and without allocating. Building validates its
//! input and returns [`Error`] rather than panicking. `#![forbid(unsafe_code)]`.
#![forbid(unsafe_code)]

mod balancer;
mod bounded_load;
mod consistent_hash;
mod endpoint;
mod hash;
mod ketama;
mod least_request;
mod maglev;
mod packed;
mod random;
mod rng;
mod round_robin;

pub use balancer::{Balancer, BalancerKind, BalancerSpec, SharedTable};
pub use bounded_load::BoundedLoad;
pub use consistent_hash::{ConsistentHash, HashBalancer};
#[cfg(test)]
use endpoint::test_state;
pub use endpoint::{EndpointId, EndpointSpec, EndpointState, Error, Result};
use endpoint::{check_endpoints, check_weights};
pub use hash::hash_key;
pub use ketama::Ketama;
pub use least_request::LeastRequest;
pub use maglev::Maglev;
pub use random::Random;
pub use round_robin::RoundRobin;
