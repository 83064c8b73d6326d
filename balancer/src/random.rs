//! Weighted random: each pick is independent, endpoint `i` is chosen with
//! probability `weight[i] / sum(weights of eligible endpoints)`.
//!
//! A draw is O(1) when all weights are equal and a binary search over the
//! cumulative weights otherwise. Ineligible endpoints are handled by
//! rejection (a few redraws), then by one exact weighted draw over the
//! eligible ones, so the distribution among eligible endpoints is exact and
//! the worst case is two passes over the endpoints.

use crate::rng::Rng;
use crate::{EndpointId, EndpointState, Result, check_weights};

/// Redraws before falling back to the exact scan over eligible endpoints.
/// With a fraction `f` of the weight ineligible, the scan runs with
/// probability `f^REDRAWS`.
pub(crate) const REDRAWS: usize = 4;

/// Weighted random selector for one endpoint set.
#[derive(Debug, Clone)]
pub struct Random {
    weights: Vec<u32>,
    /// `cumulative[i]` is the sum of `weights[..=i]`; empty when all
    /// weights are equal (a uniform draw is enough then).
    cumulative: Vec<u64>,
    total: u64,
    rng: Rng,
}

impl Random {
    /// Builds the selector from endpoint weights, in endpoint order; `seed`
    /// starts its random stream.
    pub fn new(weights: &[u32], seed: u64) -> Result<Random> {
        check_weights(weights.iter().copied())?;
        let uniform = weights.iter().all(|&w| w == weights[0]);
        let mut total = 0u64;
        let cumulative = if uniform {
            Vec::new()
        } else {
            weights
                .iter()
                .map(|&w| {
                    total += u64::from(w);
                    total
                })
                .collect()
        };
        Ok(Random {
            weights: weights.to_vec(),
            cumulative,
            total,
            rng: Rng::new(seed),
        })
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Always false: a selector has at least one endpoint.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Picks an eligible endpoint at random, in proportion to weight.
    /// Returns `None` when no endpoint is eligible.
    pub fn pick<S: EndpointState + ?Sized>(&mut self, state: &S) -> Option<EndpointId> {
        for _ in 0..REDRAWS {
            let id = self.draw();
            if state.eligible(id) {
                return Some(id);
            }
        }
        weighted_among_eligible(&self.weights, &mut self.rng, state)
    }

    /// One draw over all endpoints, ignoring eligibility.
    fn draw(&mut self) -> EndpointId {
        let n = self.weights.len();
        let i = if self.cumulative.is_empty() {
            self.rng.below(n as u64) as usize
        } else {
            let r = self.rng.below(self.total);
            // `r < total == cumulative[n - 1]`, so the index is below n.
            self.cumulative.partition_point(|&c| c <= r)
        };
        EndpointId(i.min(n.saturating_sub(1)) as u32)
    }
}

/// Exact weighted draw among eligible endpoints: one pass to sum their
/// weights, one to find the drawn one. `None` when none is eligible.
pub(crate) fn weighted_among_eligible<S: EndpointState + ?Sized>(
    weights: &[u32],
    rng: &mut Rng,
    state: &S,
) -> Option<EndpointId> {
    let ids = (0..weights.len() as u32).map(EndpointId);
    let sum: u64 = ids
        .clone()
        .zip(weights)
        .filter(|&(id, _)| state.eligible(id))
        .map(|(_, &w)| u64::from(w))
        .sum();
    if sum == 0 {
        return None;
    }
    let mut r = rng.below(sum);
    for (id, &w) in ids.zip(weights) {
        if !state.eligible(id) {
            continue;
        }
        if r < u64::from(w) {
            return Some(id);
        }
        r -= u64::from(w);
    }
    // Only reachable when the state changed its answers mid-pick.
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::test_state::{TestState, histogram};

    #[test]
    fn weights_are_honoured_within_one_percent() {
        // 200k picks: the share of each endpoint has a standard deviation
        // below 0.11 percentage points, so 1 point is > 9 sigma.
        let weights = [1, 2, 3, 4];
        let mut random = Random::new(&weights, 42).unwrap();
        let state = TestState::idle(4);
        let rounds = 200_000;
        let counts = histogram(4, rounds, || random.pick(&state));
        for (i, &c) in counts.iter().enumerate() {
            let share = c as f64 / rounds as f64;
            let want = f64::from(weights[i]) / 10.0;
            assert!(
                (share - want).abs() < 0.01,
                "endpoint {i}: {share} vs {want}"
            );
        }
    }

    #[test]
    fn equal_weights_are_uniform() {
        let mut random = Random::new(&[3, 3, 3], 1).unwrap();
        let state = TestState::idle(3);
        let counts = histogram(3, 30_000, || random.pick(&state));
        // 10k expected each, sigma about 82.
        assert!(
            counts.iter().all(|&c| (9_500..10_500).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn ineligible_endpoints_are_skipped_and_the_rest_keep_their_ratio() {
        let weights = [1, 1, 8, 2];
        let mut random = Random::new(&weights, 9).unwrap();
        let mut state = TestState::idle(4);
        // The heavy endpoint is down: 80% of draws miss, so the exact
        // fallback runs often; the others must still split 1:1:2.
        state.eligible[2] = false;
        let rounds = 40_000;
        let counts = histogram(4, rounds, || random.pick(&state));
        assert_eq!(counts[2], 0);
        let share = |i: usize| counts[i] as f64 / rounds as f64;
        assert!((share(0) - 0.25).abs() < 0.015, "{counts:?}");
        assert!((share(1) - 0.25).abs() < 0.015, "{counts:?}");
        assert!((share(3) - 0.50).abs() < 0.015, "{counts:?}");
    }

    #[test]
    fn all_ineligible_gives_none() {
        let mut random = Random::new(&[1, 2], 0).unwrap();
        let mut state = TestState::idle(2);
        state.eligible = vec![false, false];
        assert_eq!(random.pick(&state), None);
        state.eligible[1] = true;
        assert_eq!(random.pick(&state), Some(EndpointId(1)));
    }

    #[test]
    fn empty_and_zero_weight_are_refused() {
        assert_eq!(Random::new(&[], 0).unwrap_err(), Error::NoEndpoints);
        assert_eq!(Random::new(&[2, 0], 0).unwrap_err(), Error::ZeroWeight(1));
    }

    #[test]
    fn same_seed_same_picks() {
        let state = TestState::idle(5);
        let mut a = Random::new(&[1, 2, 3, 4, 5], 77).unwrap();
        let mut b = Random::new(&[1, 2, 3, 4, 5], 77).unwrap();
        for _ in 0..100 {
            assert_eq!(a.pick(&state), b.pick(&state));
        }
    }
}
