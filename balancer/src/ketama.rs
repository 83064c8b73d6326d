//! Ring hash ("ketama"), sized the way Envoy sizes it.
//!
//! Every endpoint is placed on a 64-bit ring many times (virtual nodes): its
//! `i`-th node sits at `xxh64("{key}_{i}", 0)`. A request key hash is served
//! by the first node at or after it, wrapping at the top (a binary search,
//! O(log ring size)).
//!
//! Ring size follows Envoy's `minimum_ring_size` / `maximum_ring_size`: the
//! ring gets the smallest number of nodes that is at least `min_ring_size`
//! and gives the lightest endpoint a whole number of nodes
//! (`scale = ceil(min_weight_share * min) / min_weight_share`, capped at
//! `max`), and endpoint `i` gets `round(scale * weight_share_i)` nodes, at
//! least one. Node counts depend only on each endpoint's own weight share, so
//! the ring does not depend on the order endpoints are listed in.
//!
//! What that sizing costs, and what the property tests check: with equal
//! weights each endpoint gets `k = ceil(min / n)` nodes. Removing one of n
//! endpoints moves its own keys (1/n of them) and, because the survivors
//! grow from `k` to `k' = ceil(min / (n - 1))` nodes, up to `(k' - k) / k'`
//! of the rest (the keys that land on the new nodes; about 1/n again while
//! `min / n` is large, nothing when `k' == k`, as once `n` exceeds `min`).
//! This is the price of a fixed minimum ring size, and Envoy pays it too;
//! Maglev moves close to 1/n. Nodes are named by index, so growing a ring
//! only adds nodes and shrinking only removes them: no key moves between
//! two endpoints whose node sets did not change. An endpoint's share of
//! the keys varies by about `1 / sqrt(k)` around its weight share, so small
//! rings balance coarsely (±40% for 10 endpoints on the default 1024
//! nodes); raise `min_ring_size` for better spread.

use crate::consistent_hash::{ConsistentHash, Sealed};
use crate::hash::xxh64;
use crate::{EndpointId, EndpointSpec, Error, Result, check_endpoints};

/// A ring of virtual nodes for one endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ketama {
    /// Node positions, ascending.
    hashes: Vec<u64>,
    /// Endpoint of each node, parallel to `hashes`.
    ids: Vec<u32>,
    weights: Vec<u32>,
}

impl Ketama {
    /// Envoy's default `minimum_ring_size`.
    pub const DEFAULT_MIN_RING_SIZE: usize = 1024;
    /// Envoy's default (and largest) `maximum_ring_size`.
    pub const DEFAULT_MAX_RING_SIZE: usize = 8 * 1024 * 1024;
    /// Largest ring accepted.
    pub const MAX_RING_SIZE: usize = 8 * 1024 * 1024;

    /// Checks ring sizes without building a ring (as [`Ketama::new`]
    /// checks them).
    pub fn check_ring_sizes(min_ring_size: usize, max_ring_size: usize) -> Result<()> {
        if !(1 <= min_ring_size && min_ring_size <= max_ring_size)
            || max_ring_size > Self::MAX_RING_SIZE
        {
            return Err(Error::InvalidRingSize {
                min: min_ring_size,
                max: max_ring_size,
            });
        }
        Ok(())
    }

    /// Builds the ring. Endpoint keys must be unique and weights at least 1;
    /// `1 <= min_ring_size <= max_ring_size <= MAX_RING_SIZE`.
    pub fn new(
        endpoints: &[EndpointSpec],
        min_ring_size: usize,
        max_ring_size: usize,
    ) -> Result<Ketama> {
        check_endpoints(endpoints)?;
        Self::check_ring_sizes(min_ring_size, max_ring_size)?;
        let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
        let share = |w: u32| f64::from(w) / total as f64;
        let min_share = endpoints
            .iter()
            .map(|e| share(e.weight))
            .fold(1.0, f64::min);
        let scale =
            ((min_share * min_ring_size as f64).ceil() / min_share).min(max_ring_size as f64);
        let counts: Vec<usize> = endpoints
            .iter()
            .map(|e| ((scale * share(e.weight)).round() as usize).max(1))
            .collect();

        let mut nodes: Vec<(u64, u32)> = Vec::with_capacity(counts.iter().sum());
        let mut name = String::new();
        for (id, (endpoint, &count)) in endpoints.iter().zip(&counts).enumerate() {
            for i in 0..count {
                name.clear();
                name.push_str(&endpoint.key);
                name.push('_');
                name.push_str(&i.to_string());
                nodes.push((xxh64(name.as_bytes(), 0), id as u32));
            }
        }
        // Ties (two nodes on one position) go to the smaller key, so that
        // the order of the endpoint list cannot matter.
        let key = |id: u32| endpoints.get(id as usize).map(|e| e.key.as_str());
        nodes.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| key(a.1).cmp(&key(b.1))));
        let (hashes, ids) = nodes.into_iter().unzip();
        Ok(Ketama {
            hashes,
            ids,
            weights: endpoints.iter().map(|e| e.weight).collect(),
        })
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Always false: a ring has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of virtual nodes on the ring.
    pub fn ring_size(&self) -> usize {
        self.hashes.len()
    }

    /// The endpoint that owns `key_hash`, ignoring eligibility and load.
    pub fn lookup(&self, key_hash: u64) -> EndpointId {
        self.endpoint_at(self.position(key_hash))
    }

    /// Heap bytes the ring holds.
    pub fn heap_bytes(&self) -> usize {
        self.hashes.capacity() * std::mem::size_of::<u64>()
            + (self.ids.capacity() + self.weights.capacity()) * std::mem::size_of::<u32>()
    }
}

impl Sealed for Ketama {}

impl ConsistentHash for Ketama {
    fn endpoints(&self) -> usize {
        self.weights.len()
    }

    fn weight(&self, id: EndpointId) -> u32 {
        self.weights.get(id.0 as usize).copied().unwrap_or(0)
    }

    fn positions(&self) -> usize {
        self.hashes.len()
    }

    fn position(&self, key_hash: u64) -> usize {
        let i = self.hashes.partition_point(|&h| h < key_hash);
        if i == self.hashes.len() { 0 } else { i }
    }

    fn endpoint_at(&self, position: usize) -> EndpointId {
        EndpointId(self.ids.get(position).copied().unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash_key;

    fn endpoints(weights: &[u32]) -> Vec<EndpointSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| EndpointSpec::new(format!("10.0.0.{}:8080", i + 1), w))
            .collect()
    }

    fn shares(ring: &Ketama, keys: usize) -> Vec<f64> {
        let mut counts = vec![0usize; ring.len()];
        for k in 0..keys {
            counts[ring.lookup(hash_key(format!("key-{k}").as_bytes())).0 as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / keys as f64).collect()
    }

    #[test]
    fn ring_size_follows_envoy() {
        // Equal weights: ceil(1024 / 3) = 342 nodes each.
        let ring = Ketama::new(&endpoints(&[1, 1, 1]), 1024, Ketama::MAX_RING_SIZE).unwrap();
        assert_eq!(ring.ring_size(), 1026);
        // Weights 1:3: the light endpoint gets ceil(0.25 * 1024) = 256
        // nodes, the heavy one three times that.
        let ring = Ketama::new(&endpoints(&[1, 3]), 1024, Ketama::MAX_RING_SIZE).unwrap();
        assert_eq!(ring.ring_size(), 1024);
        assert_eq!(ring.ids.iter().filter(|&&id| id == 0).count(), 256);
        // The maximum caps it; every endpoint keeps at least one node.
        let ring = Ketama::new(&endpoints(&[1, 1000]), 64, 100).unwrap();
        assert_eq!(ring.ids.iter().filter(|&&id| id == 0).count(), 1);
        assert_eq!(ring.ring_size(), 101);
    }

    #[test]
    fn weights_scale_the_share_of_keys() {
        // 4096-node ring: shares within 3 points of the weight share over
        // 20k keys (node-count noise ~1/sqrt(nodes) dominates).
        let weights = [1, 2, 3, 4];
        let ring = Ketama::new(&endpoints(&weights), 4096, Ketama::MAX_RING_SIZE).unwrap();
        for (i, share) in shares(&ring, 20_000).into_iter().enumerate() {
            let want = f64::from(weights[i]) / 10.0;
            assert!(
                (share - want).abs() < 0.03,
                "endpoint {i}: {share} vs {want}"
            );
        }
    }

    #[test]
    fn lookup_wraps_past_the_last_node() {
        let ring = Ketama::new(&endpoints(&[1, 1]), 16, 16).unwrap();
        let last = *ring.hashes.last().unwrap();
        assert_eq!(ring.position(u64::MAX), 0, "last node at {last:#x}");
        assert_eq!(ring.position(0), 0);
        assert_eq!(ring.position(last), ring.ring_size() - 1);
        assert_eq!(ring.lookup(u64::MAX), EndpointId(ring.ids[0]));
    }

    #[test]
    fn bad_input_is_refused() {
        let max = Ketama::MAX_RING_SIZE;
        assert_eq!(Ketama::new(&[], 1024, max).unwrap_err(), Error::NoEndpoints);
        assert_eq!(
            Ketama::new(&endpoints(&[1, 0]), 1024, max).unwrap_err(),
            Error::ZeroWeight(1)
        );
        let dup = vec![EndpointSpec::new("a", 1), EndpointSpec::new("a", 1)];
        assert_eq!(
            Ketama::new(&dup, 1024, max).unwrap_err(),
            Error::DuplicateKey(1)
        );
        for (min, max) in [(0, 10), (20, 10), (1024, max + 1)] {
            assert_eq!(
                Ketama::new(&endpoints(&[1]), min, max).unwrap_err(),
                Error::InvalidRingSize { min, max }
            );
        }
    }
}
