//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as
//! Envoy weights it.
//!
//! The lookup table has a prime number `M` of slots. Each endpoint owns a
//! permutation of the slots, `(offset + j * skip) mod M` for `j = 0, 1, ...`,
//! with `offset = xxh64(key, 0) mod M` and `skip = xxh64(key, 1) mod (M - 1)
//! + 1` (a prime `M` makes every skip coprime with it). Endpoints take turns
//! claiming their next still-empty slot until the table is full. A request
//! key hash is served by `table[hash mod M]`: one division and one load.
//!
//! Weights (Envoy's weighted Maglev): in turn `t` an endpoint of weight `w`
//! claims a slot only if `t * w >= claimed_so_far * max_weight`, so the
//! heaviest endpoint claims one slot per turn and one of a third of its
//! weight claims one every third turn. Every endpoint claims a slot in the
//! first turn, so each has at least one slot (the table must have at least
//! as many slots as endpoints).
//!
//! Turns visit endpoints sorted by key, so the table does not depend on the
//! order endpoints are listed in. Equal weights give each endpoint
//! `floor(M / n)` or `ceil(M / n)` slots; removing one of n endpoints moves
//! its keys plus a small fraction of the others (Maglev trades strict
//! minimal disruption for perfect balance; the paper measures it and the
//! property tests bound it). Building is O(M log M) expected.
//!
//! The built table is stored compactly: each slot holds its endpoint id in
//! as few bits as the endpoint count needs (2 bits for 3 endpoints), so a
//! default table for a small cluster takes 16 KiB, not 256 KiB.

use crate::consistent_hash::{ConsistentHash, Sealed};
use crate::hash::xxh64;
use crate::packed::PackedIds;
use crate::{EndpointId, EndpointSpec, Error, Result, check_endpoints};

/// Marks a slot not yet claimed while building.
const EMPTY: u32 = u32::MAX;

/// A Maglev lookup table for one endpoint set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    table: PackedIds,
    weights: Vec<u32>,
}

/// An endpoint's progress through its permutation while building.
struct Claimant {
    id: u32,
    weight: u64,
    offset: u64,
    skip: u64,
    next: u64,
    /// `claimed * max_weight`: the endpoint claims in turn `t` when
    /// `t * weight >= target`.
    target: u64,
}

impl Maglev {
    /// Envoy's default table size (a prime).
    pub const DEFAULT_TABLE_SIZE: usize = 65_537;
    /// Largest table accepted (Envoy's limit, a prime).
    pub const MAX_TABLE_SIZE: usize = 5_000_011;

    /// Builds the table. Endpoint keys must be unique and weights at least
    /// 1; `table_size` must be a prime between the number of endpoints and
    /// `MAX_TABLE_SIZE`. For good balance it should be much larger than the
    /// number of endpoints (the paper uses at least 100 times).
    pub fn new(endpoints: &[EndpointSpec], table_size: usize) -> Result<Maglev> {
        check_endpoints(endpoints)?;
        Self::check_table_size(table_size, endpoints.len())?;
        let m = table_size as u64;
        let max_weight = endpoints
            .iter()
            .map(|e| u64::from(e.weight))
            .max()
            .unwrap_or(1);
        let mut claimants: Vec<Claimant> = endpoints
            .iter()
            .enumerate()
            .map(|(id, e)| Claimant {
                id: id as u32,
                weight: u64::from(e.weight),
                offset: xxh64(e.key.as_bytes(), 0) % m,
                skip: xxh64(e.key.as_bytes(), 1) % (m - 1).max(1) + 1,
                next: 0,
                target: 0,
            })
            .collect();
        claimants.sort_unstable_by(|a, b| {
            endpoints[a.id as usize]
                .key
                .cmp(&endpoints[b.id as usize].key)
        });

        let mut table = vec![EMPTY; table_size];
        let mut filled = 0;
        // The heaviest endpoint claims a slot every turn, so this ends
        // within `table_size` turns.
        let mut turn = 1u64;
        while filled < table_size {
            for c in &mut claimants {
                if filled == table_size {
                    break;
                }
                if turn * c.weight < c.target {
                    continue;
                }
                c.target += max_weight;
                // The permutation visits every slot within M steps and one
                // is still empty.
                loop {
                    let slot = ((c.offset + c.next * c.skip) % m) as usize;
                    c.next += 1;
                    if table[slot] == EMPTY {
                        table[slot] = c.id;
                        break;
                    }
                }
                filled += 1;
            }
            turn += 1;
        }
        Ok(Maglev {
            table: PackedIds::new(&table, endpoints.len()),
            weights: endpoints.iter().map(|e| e.weight).collect(),
        })
    }

    /// Checks a table size for `endpoints` endpoints without building the
    /// table (as [`Maglev::new`] checks it).
    pub fn check_table_size(table_size: usize, endpoints: usize) -> Result<()> {
        if table_size < endpoints || table_size > Self::MAX_TABLE_SIZE {
            return Err(Error::InvalidTableSize {
                table_size,
                endpoints,
            });
        }
        if !is_prime(table_size as u64) {
            return Err(Error::TableSizeNotPrime(table_size));
        }
        Ok(())
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Always false: a table has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Number of slots in the table.
    pub fn table_size(&self) -> usize {
        self.table.len()
    }

    /// The endpoint that owns `key_hash`, ignoring eligibility and load.
    pub fn lookup(&self, key_hash: u64) -> EndpointId {
        self.endpoint_at(self.position(key_hash))
    }

    /// Heap bytes the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.weights.capacity() * std::mem::size_of::<u32>()
    }
}

impl Sealed for Maglev {}

impl ConsistentHash for Maglev {
    fn endpoints(&self) -> usize {
        self.weights.len()
    }

    fn weight(&self, id: EndpointId) -> u32 {
        self.weights.get(id.0 as usize).copied().unwrap_or(0)
    }

    fn positions(&self) -> usize {
        self.table.len()
    }

    fn position(&self, key_hash: u64) -> usize {
        // `table` is never empty (table_size >= endpoints >= 1).
        (key_hash % (self.table.len().max(1) as u64)) as usize
    }

    fn endpoint_at(&self, position: usize) -> EndpointId {
        EndpointId(self.table.get(position))
    }
}

/// Deterministic primality by trial division; table sizes are at most
/// about 5 million, so at most ~1100 odd divisors.
fn is_prime(n: u64) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
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

    fn slots(table: &Maglev) -> Vec<usize> {
        let mut counts = vec![0; table.len()];
        for id in table.table.iter() {
            counts[id as usize] += 1;
        }
        counts
    }

    #[test]
    fn equal_weights_split_the_table_evenly() {
        let table = Maglev::new(&endpoints(&[1; 7]), Maglev::DEFAULT_TABLE_SIZE).unwrap();
        // 65537 / 7 = 9362.4: every endpoint has 9362 or 9363 slots.
        assert!(
            slots(&table).iter().all(|&c| c == 9362 || c == 9363),
            "{:?}",
            slots(&table)
        );
        assert_eq!(
            slots(&table).iter().sum::<usize>(),
            Maglev::DEFAULT_TABLE_SIZE
        );
    }

    #[test]
    fn weights_scale_the_share_of_slots() {
        let weights = [1, 2, 3, 4];
        let table = Maglev::new(&endpoints(&weights), Maglev::DEFAULT_TABLE_SIZE).unwrap();
        for (i, &c) in slots(&table).iter().enumerate() {
            let share = c as f64 / 65_537.0;
            let want = f64::from(weights[i]) / 10.0;
            assert!(
                (share - want).abs() < 0.001,
                "endpoint {i}: {share} vs {want}"
            );
        }
        // And keys follow slots: 20k keys within 1.5 points.
        let mut counts = [0usize; 4];
        for k in 0..20_000 {
            counts[table.lookup(hash_key(format!("key-{k}").as_bytes())).0 as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let share = c as f64 / 20_000.0;
            let want = f64::from(weights[i]) / 10.0;
            assert!(
                (share - want).abs() < 0.015,
                "endpoint {i}: {share} vs {want}"
            );
        }
    }

    #[test]
    fn every_endpoint_gets_a_slot_even_when_tiny() {
        let table = Maglev::new(&endpoints(&[1, 1_000_000, 1_000_000]), 7).unwrap();
        assert!(slots(&table)[0] >= 1);
        assert_eq!(slots(&table).iter().sum::<usize>(), 7);
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(Maglev::new(&[], 65_537).unwrap_err(), Error::NoEndpoints);
        assert_eq!(
            Maglev::new(&endpoints(&[0]), 65_537).unwrap_err(),
            Error::ZeroWeight(0)
        );
        let dup = vec![EndpointSpec::new("a", 1), EndpointSpec::new("a", 2)];
        assert_eq!(
            Maglev::new(&dup, 65_537).unwrap_err(),
            Error::DuplicateKey(1)
        );
        for size in [65_536, 65_535, 1_000_000, 9, 1] {
            let err = Maglev::new(&endpoints(&[1]), size).unwrap_err();
            assert_eq!(err, Error::TableSizeNotPrime(size), "{size}");
        }
        assert_eq!(
            Maglev::new(&endpoints(&[1, 1, 1]), 2).unwrap_err(),
            Error::InvalidTableSize {
                table_size: 2,
                endpoints: 3
            }
        );
        assert_eq!(
            Maglev::new(&endpoints(&[1]), 5_000_101).unwrap_err(),
            Error::InvalidTableSize {
                table_size: 5_000_101,
                endpoints: 1
            }
        );
    }

    #[test]
    fn primality() {
        let primes: Vec<u64> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(65_537) && is_prime(5_000_011) && is_prime(2_147_483_647));
        assert!(!is_prime(65_539 * 3) && !is_prime(4_999_999 + 1));
    }
}
