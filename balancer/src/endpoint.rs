//! The selectors' common vocabulary: endpoint ids and specs, the state a
//! pick reads, and the build errors.

/// Index of an endpoint in the list a selector was built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointId(pub u32);

/// One endpoint as the selectors see it when they are built.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    /// Stable identity for hashing, for example `"10.0.0.1:8080"`. Keys must
    /// be unique within a hash-based selector.
    pub key: String,
    /// Relative weight, at least 1.
    pub weight: u32,
}

impl EndpointSpec {
    /// An endpoint with the given key and weight.
    pub fn new(key: impl Into<String>, weight: u32) -> EndpointSpec {
        EndpointSpec {
            key: key.into(),
            weight,
        }
    }
}

/// The per-request view of endpoints that a pick consults: the worker's
/// health and in-flight counters.
///
/// Ids passed in are always below the number of endpoints the selector was
/// built from.
pub trait EndpointState {
    /// Whether the endpoint may receive this request (healthy, not ejected,
    /// not already tried by this request's retries...).
    fn eligible(&self, id: EndpointId) -> bool;
    /// Requests this worker has in flight to the endpoint. Least request
    /// compares it; bounded load uses it as the endpoint's load.
    fn active(&self, id: EndpointId) -> u32;
}

impl<S: EndpointState + ?Sized> EndpointState for &S {
    fn eligible(&self, id: EndpointId) -> bool {
        (**self).eligible(id)
    }
    fn active(&self, id: EndpointId) -> u32 {
        (**self).active(id)
    }
}

/// Errors found while building a selector.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A selector needs at least one endpoint.
    #[error("no endpoints")]
    NoEndpoints,
    /// Weights must be at least 1.
    #[error("endpoint {0} has weight 0")]
    ZeroWeight(u32),
    /// Endpoint ids are `u32`.
    #[error("{0} endpoints is more than a selector can index")]
    TooManyEndpoints(usize),
    /// Two endpoints of a hash-based selector share a key (the second one's
    /// index is given); they would be indistinguishable on the ring.
    #[error("endpoint {0} has the same key as an earlier endpoint")]
    DuplicateKey(u32),
    /// Ring sizes must satisfy `1 <= min <= max <= Ketama::MAX_RING_SIZE`.
    #[error("ring size bounds {min}..={max} are invalid (need 1 <= min <= max <= 8388608)")]
    InvalidRingSize {
        /// The minimum ring size asked for.
        min: usize,
        /// The maximum ring size asked for.
        max: usize,
    },
    /// Maglev's table size must be prime.
    #[error("maglev table size {0} is not prime")]
    TableSizeNotPrime(usize),
    /// Maglev's table size must be at least the number of endpoints and at
    /// most `Maglev::MAX_TABLE_SIZE`.
    #[error(
        "maglev table size {table_size} does not fit {endpoints} endpoints (need endpoints <= size <= 5000011)"
    )]
    InvalidTableSize {
        /// The table size asked for.
        table_size: usize,
        /// The number of endpoints.
        endpoints: usize,
    },
    /// Least request's active-request bias must be finite and at least 0.
    #[error("active request bias must be a finite number >= 0")]
    InvalidActiveRequestBias,
    /// Bounded load's factor must be finite and at least 1.
    #[error("bounded load factor must be a finite number >= 1")]
    InvalidLoadFactor,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks what every selector needs of its weights: at least one, none zero,
/// ids that fit in `u32`.
pub(crate) fn check_weights(weights: impl ExactSizeIterator<Item = u32>) -> Result<()> {
    let len = weights.len();
    if len == 0 {
        return Err(Error::NoEndpoints);
    }
    if u32::try_from(len).is_err() {
        return Err(Error::TooManyEndpoints(len));
    }
    for (i, w) in weights.enumerate() {
        if w == 0 {
            return Err(Error::ZeroWeight(i as u32));
        }
    }
    Ok(())
}

/// [`check_weights`] plus unique keys, for the hash-based selectors.
pub(crate) fn check_endpoints(endpoints: &[EndpointSpec]) -> Result<()> {
    check_weights(endpoints.iter().map(|e| e.weight))?;
    let mut seen = std::collections::HashSet::with_capacity(endpoints.len());
    for (i, e) in endpoints.iter().enumerate() {
        if !seen.insert(e.key.as_str()) {
            return Err(Error::DuplicateKey(i as u32));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_state {
    use super::{EndpointId, EndpointState};

    /// Endpoint state for unit tests: explicit eligibility and counters.
    #[derive(Debug, Clone)]
    pub(crate) struct TestState {
        pub(crate) eligible: Vec<bool>,
        pub(crate) active: Vec<u32>,
    }

    impl TestState {
        /// `n` endpoints, all eligible, none busy.
        pub(crate) fn idle(n: usize) -> TestState {
            TestState {
                eligible: vec![true; n],
                active: vec![0; n],
            }
        }
    }

    impl EndpointState for TestState {
        fn eligible(&self, id: EndpointId) -> bool {
            self.eligible.get(id.0 as usize).copied().unwrap_or(false)
        }
        fn active(&self, id: EndpointId) -> u32 {
            self.active.get(id.0 as usize).copied().unwrap_or(0)
        }
    }

    /// Picks per endpoint over `rounds` picks.
    pub(crate) fn histogram(
        n: usize,
        rounds: usize,
        mut pick: impl FnMut() -> Option<EndpointId>,
    ) -> Vec<usize> {
        let mut counts = vec![0; n];
        for _ in 0..rounds {
            if let Some(id) = pick() {
                counts[id.0 as usize] += 1;
            }
        }
        counts
    }
}
