//! What ring hash and Maglev share: a cyclic sequence of positions, each
//! owned by an endpoint, and the pick policy around it (skipping ineligible
//! endpoints, bounded load, a random position when the request has no key).
//!
//! Skipping walks forward from the key's position to the next position owned
//! by an eligible endpoint. Only the keys of the ineligible endpoints move,
//! and they spread over the others in proportion to their share of
//! positions (the positions are pseudo-random), which is what consistent
//! hashing promises when an endpoint leaves.

use std::sync::Arc;

use crate::bounded_load::BoundedLoad;
use crate::rng::Rng;
use crate::{EndpointId, EndpointState};

/// Keeps [`ConsistentHash`] implemented by this crate's tables only, so
/// that the pick code can rely on what they promise.
pub trait Sealed {}

/// A consistent-hash lookup structure: [`Ketama`](crate::Ketama) or
/// [`Maglev`](crate::Maglev).
///
/// Positions are `0..positions()`; every endpoint owns at least one.
pub trait ConsistentHash: Sealed {
    /// Number of endpoints the table was built from.
    fn endpoints(&self) -> usize;
    /// Weight the endpoint was built with (0 for an unknown id).
    fn weight(&self, id: EndpointId) -> u32;
    /// Number of positions (ring nodes or table slots); at least 1.
    fn positions(&self) -> usize;
    /// The position a key hash lands on, below `positions()`.
    fn position(&self, key_hash: u64) -> usize;
    /// The endpoint owning a position.
    fn endpoint_at(&self, position: usize) -> EndpointId;
}

/// A consistent-hash table with its pick policy: skip ineligible endpoints,
/// optionally bound the load, and hash a random position for requests
/// without a key.
///
/// The table is shared (`Arc`), read-only: every worker's balancer for the
/// same endpoint set can use one table built once for the process. What
/// is per balancer (the random state) stays per balancer.
#[derive(Debug, Clone)]
pub struct HashBalancer<T> {
    table: Arc<T>,
    bounded_load: Option<BoundedLoad>,
    rng: Rng,
}

impl<T: ConsistentHash> HashBalancer<T> {
    /// Wraps a built table (owned, or already shared); `seed` drives the
    /// random position used for requests without a key.
    pub fn new(
        table: impl Into<Arc<T>>,
        bounded_load: Option<BoundedLoad>,
        seed: u64,
    ) -> HashBalancer<T> {
        HashBalancer {
            table: table.into(),
            bounded_load,
            rng: Rng::new(seed),
        }
    }

    /// The table.
    pub fn table(&self) -> &Arc<T> {
        &self.table
    }

    /// The bounded-load factor, if any.
    pub fn bounded_load(&self) -> Option<BoundedLoad> {
        self.bounded_load
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.table.endpoints()
    }

    /// Always false: a table has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Picks the endpoint for `key_hash` (see [`hash_key`](crate::hash_key)),
    /// or for a random position when there is no key, which amounts to a
    /// weighted random pick. `None` when no endpoint is eligible.
    pub fn pick<S: EndpointState + ?Sized>(
        &mut self,
        key_hash: Option<u64>,
        state: &S,
    ) -> Option<EndpointId> {
        let key_hash = key_hash.unwrap_or_else(|| self.rng.next_u64());
        self.pick_hashed(key_hash, state)
    }

    /// Picks the endpoint for `key_hash`; read-only, so one table can serve
    /// several callers.
    ///
    /// Without bounded load: the owner of the key's position if eligible,
    /// else the next eligible owner along the ring or table (checking that
    /// any endpoint is eligible first, so the walk is bounded by what it has
    /// to skip). With bounded load: the owner of the key's position if it is
    /// eligible and idle; otherwise one pass over the endpoints to sum loads
    /// and weights (O(n)), then the first eligible owner along the walk
    /// whose load is under its [capacity](BoundedLoad::capacity).
    pub fn pick_hashed<S: EndpointState + ?Sized>(
        &self,
        key_hash: u64,
        state: &S,
    ) -> Option<EndpointId> {
        match self.bounded_load {
            None => self.next_eligible(key_hash, state),
            Some(bound) => self.next_under_capacity(bound, key_hash, state),
        }
    }

    fn next_eligible<S: EndpointState + ?Sized>(
        &self,
        key_hash: u64,
        state: &S,
    ) -> Option<EndpointId> {
        // A plain reference, not the Arc: lets the compiler keep the
        // table's fields in registers across the loops.
        let table: &T = &self.table;
        let start = table.position(key_hash);
        let home = table.endpoint_at(start);
        if state.eligible(home) {
            return Some(home);
        }
        if !self.ids().any(|id| state.eligible(id)) {
            return None;
        }
        let mut last = home;
        for position in self.walk(start).skip(1) {
            let id = table.endpoint_at(position);
            if id == last {
                continue;
            }
            last = id;
            if state.eligible(id) {
                return Some(id);
            }
        }
        None
    }

    fn next_under_capacity<S: EndpointState + ?Sized>(
        &self,
        bound: BoundedLoad,
        key_hash: u64,
        state: &S,
    ) -> Option<EndpointId> {
        // A plain reference, not the Arc: lets the compiler keep the
        // table's fields in registers across the loops.
        let table: &T = &self.table;
        let start = table.position(key_hash);
        let home = table.endpoint_at(start);
        // Every capacity is at least 1, so an idle home is under it: no need
        // to sum the loads.
        if state.eligible(home) && state.active(home) == 0 {
            return Some(home);
        }
        let mut total_load = 0u64;
        let mut total_weight = 0u64;
        for id in self.ids().filter(|&id| state.eligible(id)) {
            total_load = total_load.saturating_add(u64::from(state.active(id)));
            total_weight = total_weight.saturating_add(u64::from(table.weight(id)));
        }
        if total_weight == 0 {
            return None;
        }
        let mut first_eligible = None;
        let mut last = None;
        for position in self.walk(start) {
            let id = table.endpoint_at(position);
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            if !state.eligible(id) {
                continue;
            }
            first_eligible.get_or_insert(id);
            let capacity = bound.capacity(total_load, table.weight(id), total_weight);
            if u64::from(state.active(id)) < capacity {
                return Some(id);
            }
        }
        // Unreachable for a consistent state (see `bounded_load`); stay on
        // the key's first eligible endpoint rather than fail the request.
        first_eligible
    }

    fn ids(&self) -> impl Iterator<Item = EndpointId> + use<T> {
        (0..self.table.endpoints() as u32).map(EndpointId)
    }

    /// Every position once, starting at `start` and wrapping.
    fn walk(&self, start: usize) -> impl Iterator<Item = usize> + use<T> {
        let len = self.table.positions();
        let start = start.min(len.saturating_sub(1));
        (start..len).chain(0..start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_state::{TestState, histogram};
    use crate::{EndpointSpec, Ketama, Maglev, hash_key};

    fn endpoints(n: usize) -> Vec<EndpointSpec> {
        (0..n)
            .map(|i| EndpointSpec::new(format!("10.0.0.{}:8080", i + 1), 1))
            .collect()
    }

    fn both(n: usize, bound: Option<f64>) -> (HashBalancer<Ketama>, HashBalancer<Maglev>) {
        let eps = endpoints(n);
        let bound = bound.map(|c| BoundedLoad::new(c).unwrap());
        (
            HashBalancer::new(Ketama::new(&eps, 1024, 1 << 20).unwrap(), bound, 1),
            HashBalancer::new(Maglev::new(&eps, 65_537).unwrap(), bound, 1),
        )
    }

    /// Runs the same checks against both tables.
    macro_rules! for_both {
        ($n:expr, $bound:expr, |$b:ident| $body:block) => {{
            let (ketama, maglev) = both($n, $bound);
            {
                let mut $b = ketama;
                $body
            }
            {
                let mut $b = maglev;
                $body
            }
        }};
    }

    #[test]
    fn only_the_keys_of_an_ineligible_endpoint_move() {
        for_both!(5, None, |b| {
            let mut state = TestState::idle(5);
            let keys: Vec<u64> = (0..5_000)
                .map(|k| hash_key(format!("k{k}").as_bytes()))
                .collect();
            let before: Vec<_> = keys.iter().map(|&h| b.pick(Some(h), &state)).collect();
            state.eligible[2] = false;
            let mut moved_to = [0usize; 5];
            for (&h, &old) in keys.iter().zip(&before) {
                let new = b.pick(Some(h), &state);
                assert_ne!(new, Some(EndpointId(2)));
                if old == Some(EndpointId(2)) {
                    moved_to[new.unwrap().0 as usize] += 1;
                } else {
                    assert_eq!(new, old, "a key on a healthy endpoint moved");
                }
            }
            // Endpoint 2's ~1000 keys spread over the four others (250
            // expected each; at least 100 each).
            assert!(
                moved_to
                    .iter()
                    .enumerate()
                    .all(|(i, &c)| i == 2 || c >= 100),
                "{moved_to:?}"
            );
        });
    }

    #[test]
    fn all_ineligible_gives_none() {
        for bound in [None, Some(1.25)] {
            for_both!(3, bound, |b| {
                let mut state = TestState::idle(3);
                state.eligible = vec![false; 3];
                assert_eq!(b.pick(Some(42), &state), None);
                assert_eq!(b.pick(None, &state), None);
                state.eligible[1] = true;
                assert_eq!(b.pick(Some(42), &state), Some(EndpointId(1)));
            });
        }
    }

    #[test]
    fn no_key_is_a_weighted_random_pick() {
        for_both!(4, None, |b| {
            let state = TestState::idle(4);
            let counts = histogram(4, 40_000, || b.pick(None, &state));
            // 10k expected each; ring shares vary by ~1/sqrt(256) nodes.
            assert!(
                counts.iter().all(|&c| (8_000..12_000).contains(&c)),
                "{counts:?}"
            );
        });
    }

    #[test]
    fn an_overloaded_home_sends_the_key_to_the_next_endpoint() {
        for_both!(4, Some(1.25), |b| {
            let mut state = TestState::idle(4);
            let key = hash_key(b"user-17");
            let home = b.pick(Some(key), &state).unwrap();
            // Home holds 10 of 10 in flight: cap = ceil(1.25 * 11 / 4) = 4.
            state.active[home.0 as usize] = 10;
            let next = b.pick(Some(key), &state).unwrap();
            assert_ne!(next, home);
            // The walk is deterministic: the same key goes to the same
            // second choice.
            assert_eq!(b.pick(Some(key), &state), Some(next));
            // Under the cap, it comes home.
            state.active[home.0 as usize] = 3;
            state.active[next.0 as usize] = 7;
            // total 10: cap 4, home has 3 < 4.
            assert_eq!(b.pick(Some(key), &state), Some(home));
        });
    }
}
