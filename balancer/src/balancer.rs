//! One front for every algorithm: what a cluster's configuration compiles
//! to, and what a worker calls per request.

use std::sync::Arc;

use crate::bounded_load::BoundedLoad;
use crate::consistent_hash::HashBalancer;
use crate::{
    EndpointId, EndpointSpec, EndpointState, Ketama, LeastRequest, Maglev, Random, Result,
    RoundRobin,
};

/// Which algorithm a cluster uses, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BalancerKind {
    /// Smooth weighted round robin ([`RoundRobin`]).
    RoundRobin,
    /// Weighted random ([`Random`]).
    Random,
    /// Least request ([`LeastRequest`]).
    LeastRequest {
        /// Envoy's `active_request_bias` (>= 0, default 1.0); used only
        /// when weights differ.
        active_request_bias: f64,
    },
    /// Ring hash ([`Ketama`]).
    RingHash {
        /// Smallest number of virtual nodes (Envoy's default 1024).
        min_ring_size: usize,
        /// Largest number of virtual nodes; `None` is
        /// [`Ketama::DEFAULT_MAX_RING_SIZE`].
        max_ring_size: Option<usize>,
        /// Bounded-load factor `c` (>= 1), if the load is to be bounded.
        bounded_load: Option<f64>,
    },
    /// Maglev ([`Maglev`]).
    Maglev {
        /// Prime number of slots (default 65537).
        table_size: usize,
        /// Bounded-load factor `c` (>= 1), if the load is to be bounded.
        bounded_load: Option<f64>,
    },
}

impl BalancerKind {
    /// Least request with Envoy's default bias.
    pub fn least_request() -> BalancerKind {
        BalancerKind::LeastRequest {
            active_request_bias: LeastRequest::DEFAULT_ACTIVE_REQUEST_BIAS,
        }
    }

    /// Ring hash with Envoy's default sizes, no load bound.
    pub fn ring_hash() -> BalancerKind {
        BalancerKind::RingHash {
            min_ring_size: Ketama::DEFAULT_MIN_RING_SIZE,
            max_ring_size: None,
            bounded_load: None,
        }
    }

    /// Maglev with the default table size, no load bound.
    pub fn maglev() -> BalancerKind {
        BalancerKind::Maglev {
            table_size: Maglev::DEFAULT_TABLE_SIZE,
            bounded_load: None,
        }
    }

    /// Checks the parameters as building would, without building anything
    /// (a Maglev table costs a millisecond; a config may name thousands).
    pub fn check(&self) -> Result<()> {
        let bound = |c: Option<f64>| c.map(BoundedLoad::new).transpose().map(|_| ());
        match *self {
            BalancerKind::RoundRobin | BalancerKind::Random => Ok(()),
            BalancerKind::LeastRequest {
                active_request_bias,
            } => LeastRequest::check_bias(active_request_bias),
            BalancerKind::RingHash {
                min_ring_size,
                max_ring_size,
                bounded_load,
            } => {
                let max = max_ring_size.unwrap_or(Ketama::DEFAULT_MAX_RING_SIZE);
                Ketama::check_ring_sizes(min_ring_size, max)?;
                bound(bounded_load)
            }
            BalancerKind::Maglev {
                table_size,
                bounded_load,
            } => {
                Maglev::check_table_size(table_size, 1)?;
                bound(bounded_load)
            }
        }
    }
}

/// Everything needed to build a [`Balancer`] besides the endpoints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalancerSpec {
    /// The algorithm.
    pub kind: BalancerKind,
    /// Seed for the random choices (random, least request, hashes without
    /// a key). Give each worker its own, e.g. its core index.
    pub seed: u64,
}

impl BalancerSpec {
    /// A spec for `kind` with seed 0.
    pub fn new(kind: BalancerKind) -> BalancerSpec {
        BalancerSpec { kind, seed: 0 }
    }

    /// The same spec with another seed.
    pub fn with_seed(self, seed: u64) -> BalancerSpec {
        BalancerSpec { seed, ..self }
    }
}

impl From<BalancerKind> for BalancerSpec {
    fn from(kind: BalancerKind) -> BalancerSpec {
        BalancerSpec::new(kind)
    }
}

/// What a hashing kind precomputes from the endpoint set alone: built once
/// (off the request path) and shared read-only by every balancer of that
/// endpoint set, whichever worker it is on.
#[derive(Debug, Clone)]
pub enum SharedTable {
    /// A ring-hash ring.
    RingHash(Arc<Ketama>),
    /// A Maglev table.
    Maglev(Arc<Maglev>),
}

impl SharedTable {
    /// The table `kind` needs for `endpoints`; `None` for the kinds that
    /// precompute nothing.
    pub fn build(kind: BalancerKind, endpoints: &[EndpointSpec]) -> Result<Option<SharedTable>> {
        Ok(match kind {
            BalancerKind::RoundRobin | BalancerKind::Random | BalancerKind::LeastRequest { .. } => {
                None
            }
            BalancerKind::RingHash {
                min_ring_size,
                max_ring_size,
                ..
            } => {
                let max = max_ring_size.unwrap_or(Ketama::DEFAULT_MAX_RING_SIZE);
                Some(SharedTable::RingHash(Arc::new(Ketama::new(
                    endpoints,
                    min_ring_size,
                    max,
                )?)))
            }
            BalancerKind::Maglev { table_size, .. } => Some(SharedTable::Maglev(Arc::new(
                Maglev::new(endpoints, table_size)?,
            ))),
        })
    }

    /// Heap bytes the table holds (once, however many share it).
    pub fn heap_bytes(&self) -> usize {
        match self {
            SharedTable::RingHash(ring) => ring.heap_bytes(),
            SharedTable::Maglev(maglev) => maglev.heap_bytes(),
        }
    }

    /// Which table in memory this is: equal for two handles on one table.
    pub fn identity(&self) -> usize {
        match self {
            SharedTable::RingHash(ring) => Arc::as_ptr(ring) as usize,
            SharedTable::Maglev(maglev) => Arc::as_ptr(maglev) as usize,
        }
    }

    /// True when both are the same table in memory.
    pub fn same(&self, other: &SharedTable) -> bool {
        self.identity() == other.identity()
    }
}

/// Equal when built from the same input: the same table in memory, or
/// equal contents.
impl PartialEq for SharedTable {
    fn eq(&self, other: &SharedTable) -> bool {
        self.same(other)
            || match (self, other) {
                (SharedTable::RingHash(a), SharedTable::RingHash(b)) => a == b,
                (SharedTable::Maglev(a), SharedTable::Maglev(b)) => a == b,
                _ => false,
            }
    }
}

/// A built selector of any kind.
#[derive(Debug, Clone)]
pub enum Balancer {
    /// Smooth weighted round robin.
    RoundRobin(RoundRobin),
    /// Weighted random.
    Random(Random),
    /// Least request.
    LeastRequest(LeastRequest),
    /// Ring hash.
    RingHash(HashBalancer<Ketama>),
    /// Maglev.
    Maglev(HashBalancer<Maglev>),
}

impl Balancer {
    /// Builds the selector for `endpoints` (ids are their indices). Fails on
    /// an empty list, a zero weight, duplicate keys (hash kinds) or invalid
    /// parameters.
    pub fn build(spec: BalancerSpec, endpoints: &[EndpointSpec]) -> Result<Balancer> {
        Balancer::with_table(spec, endpoints, None)
    }

    /// Builds the selector around `table` when it was built for this kind
    /// and endpoint count ([`SharedTable::build`], once for every worker);
    /// otherwise (no table, or one for something else) builds its own.
    pub fn with_table(
        spec: BalancerSpec,
        endpoints: &[EndpointSpec],
        table: Option<&SharedTable>,
    ) -> Result<Balancer> {
        let weights = || endpoints.iter().map(|e| e.weight).collect::<Vec<_>>();
        let bound = |c: Option<f64>| c.map(BoundedLoad::new).transpose();
        let fits = |n: usize| n == endpoints.len();
        Ok(match spec.kind {
            BalancerKind::RoundRobin => Balancer::RoundRobin(RoundRobin::new(&weights())?),
            BalancerKind::Random => Balancer::Random(Random::new(&weights(), spec.seed)?),
            BalancerKind::LeastRequest {
                active_request_bias,
            } => Balancer::LeastRequest(LeastRequest::new(
                &weights(),
                active_request_bias,
                spec.seed,
            )?),
            BalancerKind::RingHash {
                min_ring_size,
                max_ring_size,
                bounded_load,
            } => {
                let bounded_load = bound(bounded_load)?;
                let ring = match table {
                    Some(SharedTable::RingHash(ring)) if fits(ring.len()) => ring.clone(),
                    _ => Arc::new(Ketama::new(
                        endpoints,
                        min_ring_size,
                        max_ring_size.unwrap_or(Ketama::DEFAULT_MAX_RING_SIZE),
                    )?),
                };
                Balancer::RingHash(HashBalancer::new(ring, bounded_load, spec.seed))
            }
            BalancerKind::Maglev {
                table_size,
                bounded_load,
            } => {
                let bounded_load = bound(bounded_load)?;
                let maglev = match table {
                    Some(SharedTable::Maglev(maglev))
                        if fits(maglev.len()) && maglev.table_size() == table_size =>
                    {
                        maglev.clone()
                    }
                    _ => Arc::new(Maglev::new(endpoints, table_size)?),
                };
                Balancer::Maglev(HashBalancer::new(maglev, bounded_load, spec.seed))
            }
        })
    }

    /// Picks an endpoint for one request. `key_hash` is the request's
    /// [`hash_key`](crate::hash_key) for the hash kinds (ignored by the
    /// others; without it they pick at random). `None` when no endpoint is
    /// eligible. Never allocates, never panics.
    pub fn pick<S: EndpointState + ?Sized>(
        &mut self,
        key_hash: Option<u64>,
        state: &S,
    ) -> Option<EndpointId> {
        match self {
            Balancer::RoundRobin(rr) => rr.pick(|id| state.eligible(id)),
            Balancer::Random(random) => random.pick(state),
            Balancer::LeastRequest(lr) => lr.pick(state),
            Balancer::RingHash(ring) => ring.pick(key_hash, state),
            Balancer::Maglev(maglev) => maglev.pick(key_hash, state),
        }
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        match self {
            Balancer::RoundRobin(rr) => rr.len(),
            Balancer::Random(random) => random.len(),
            Balancer::LeastRequest(lr) => lr.len(),
            Balancer::RingHash(ring) => ring.len(),
            Balancer::Maglev(maglev) => maglev.len(),
        }
    }

    /// Always false: a balancer has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the kind uses the request's key hash.
    pub fn uses_key(&self) -> bool {
        matches!(self, Balancer::RingHash(_) | Balancer::Maglev(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::test_state::{TestState, histogram};

    fn endpoints(weights: &[u32]) -> Vec<EndpointSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| EndpointSpec::new(format!("10.0.0.{}:8080", i + 1), w))
            .collect()
    }

    fn kinds() -> Vec<BalancerKind> {
        vec![
            BalancerKind::RoundRobin,
            BalancerKind::Random,
            BalancerKind::least_request(),
            BalancerKind::ring_hash(),
            BalancerKind::maglev(),
            BalancerKind::RingHash {
                min_ring_size: 1024,
                max_ring_size: Some(4096),
                bounded_load: Some(1.25),
            },
            BalancerKind::Maglev {
                table_size: 65_537,
                bounded_load: Some(1.25),
            },
        ]
    }

    #[test]
    fn every_kind_honours_weights_skips_ineligible_and_can_say_none() {
        let weights = [1, 3];
        for kind in kinds() {
            let mut b = Balancer::build(BalancerSpec::new(kind).with_seed(4), &endpoints(&weights))
                .unwrap();
            assert_eq!(b.len(), 2);
            let mut state = TestState::idle(2);
            // Without keys every kind spreads by weight: 25% / 75%, within
            // 3 points (ring hash's node noise included).
            let counts = histogram(2, 20_000, || b.pick(None, &state));
            let share = counts[1] as f64 / 20_000.0;
            assert!((share - 0.75).abs() < 0.03, "{kind:?}: {counts:?}");

            state.eligible[1] = false;
            for k in 0..100 {
                assert_eq!(b.pick(Some(k), &state), Some(EndpointId(0)), "{kind:?}");
            }
            state.eligible[0] = false;
            assert_eq!(b.pick(Some(7), &state), None, "{kind:?}");
        }
    }

    #[test]
    fn hash_kinds_are_sticky_and_others_ignore_the_key() {
        let state = TestState::idle(5);
        for kind in kinds() {
            let mut b = Balancer::build(kind.into(), &endpoints(&[1; 5])).unwrap();
            let first = b.pick(Some(99), &state);
            let same = (0..50).all(|_| b.pick(Some(99), &state) == first);
            assert_eq!(same, b.uses_key(), "{kind:?}");
        }
    }

    #[test]
    fn build_reports_bad_parameters() {
        let eps = endpoints(&[1, 1]);
        let build = |kind| Balancer::build(BalancerSpec::new(kind), &eps).unwrap_err();
        assert_eq!(
            build(BalancerKind::LeastRequest {
                active_request_bias: -1.0
            }),
            Error::InvalidActiveRequestBias
        );
        assert_eq!(
            build(BalancerKind::Maglev {
                table_size: 65_536,
                bounded_load: None
            }),
            Error::TableSizeNotPrime(65_536)
        );
        assert_eq!(
            build(BalancerKind::Maglev {
                table_size: 65_537,
                bounded_load: Some(0.5)
            }),
            Error::InvalidLoadFactor
        );
        assert_eq!(
            build(BalancerKind::RingHash {
                min_ring_size: 0,
                max_ring_size: None,
                bounded_load: None
            }),
            Error::InvalidRingSize {
                min: 0,
                max: Ketama::DEFAULT_MAX_RING_SIZE
            }
        );
        for kind in kinds() {
            let spec = BalancerSpec::new(kind);
            assert_eq!(Balancer::build(spec, &[]).unwrap_err(), Error::NoEndpoints);
            assert_eq!(
                Balancer::build(spec, &endpoints(&[1, 0])).unwrap_err(),
                Error::ZeroWeight(1)
            );
        }
    }
}
