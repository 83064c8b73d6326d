//! Smooth weighted round-robin, as nginx does it: over any window of
//! `sum(weights)` picks each endpoint is chosen exactly `weight` times, and
//! heavy endpoints are interleaved with light ones instead of bunched.

use crate::{EndpointId, Error, Result};

/// Smooth weighted round-robin state for one endpoint set.
#[derive(Debug, Clone)]
pub struct RoundRobin {
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl RoundRobin {
    /// Builds the selector from endpoint weights, in endpoint order.
    pub fn new(weights: &[u32]) -> Result<RoundRobin> {
        if weights.is_empty() {
            return Err(Error::NoEndpoints);
        }
        if let Some(i) = weights.iter().position(|&w| w == 0) {
            return Err(Error::ZeroWeight(i as u32));
        }
        let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w)).collect();
        Ok(RoundRobin {
            total: weights.iter().sum(),
            current: vec![0; weights.len()],
            weights,
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

    /// Picks the next endpoint among those for which `eligible` is true
    /// (for example, healthy ones). Returns `None` when none is eligible.
    pub fn pick(&mut self, mut eligible: impl FnMut(EndpointId) -> bool) -> Option<EndpointId> {
        let mut best: Option<usize> = None;
        let mut total = 0;
        for i in 0..self.weights.len() {
            if !eligible(EndpointId(i as u32)) {
                continue;
            }
            self.current[i] += self.weights[i];
            total += self.weights[i];
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        debug_assert!(total <= self.total);
        Some(EndpointId(best as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_honoured_exactly_per_cycle() {
        let mut rr = RoundRobin::new(&[5, 1, 1]).unwrap();
        let picks: Vec<u32> = (0..7).map(|_| rr.pick(|_| true).unwrap().0).collect();
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 5);
        assert_eq!(picks.iter().filter(|&&p| p == 1).count(), 1);
        // Smooth: the heavy endpoint is not picked five times in a row.
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn ineligible_endpoints_are_skipped() {
        let mut rr = RoundRobin::new(&[1, 1, 1]).unwrap();
        for _ in 0..10 {
            assert_ne!(rr.pick(|e| e.0 != 1), Some(EndpointId(1)));
        }
        assert_eq!(rr.pick(|_| false), None);
    }

    #[test]
    fn empty_and_zero_weight_are_refused() {
        assert_eq!(RoundRobin::new(&[]).unwrap_err(), Error::NoEndpoints);
        assert_eq!(RoundRobin::new(&[1, 0]).unwrap_err(), Error::ZeroWeight(1));
    }
}
