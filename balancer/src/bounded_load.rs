//! Consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam, SODA 2018; the scheme Google Cloud Pub/Sub and Envoy's
//! `hash_balance_factor` use).
//!
//! The exact bound. With `L` the requests in flight summed over the eligible
//! endpoints, `W` the sum of their weights and `c` the load factor, endpoint
//! `i` (weight `w_i`) has capacity
//!
//! ```text
//! cap_i = ceil(c * (L + 1) * w_i / W)
//! ```
//!
//! and accepts the request only if `active_i < cap_i`, so that with the new
//! request it holds at most `cap_i`. With equal weights this is the paper's
//! `ceil(c * (m + 1) / n)` for the `(m + 1)`-th ball. The pick walks from the
//! key's position on the ring (or table) to the first eligible endpoint
//! under its capacity. For `c >= 1` one always exists: if every eligible
//! endpoint had `active_i >= cap_i >= c (L + 1) w_i / W`, summing would give
//! `L >= c (L + 1) > L`. So no endpoint ever exceeds `cap_i` through this
//! selector's picks, and when requests only arrive, the largest load after
//! `m` of them is at most `ceil(c * m * w_i / W)`.
//!
//! `c` close to 1 balances tightly but moves more keys off their home
//! endpoint; Envoy's docs suggest 1.25 (`hash_balance_factor: 125`) as a
//! start.

use crate::{Error, Result};

/// The load factor `c` of bounded-load consistent hashing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundedLoad {
    factor: f64,
}

impl BoundedLoad {
    /// A bound with load factor `factor`, which must be finite and >= 1
    /// (1.25 lets an endpoint carry 25% more than its fair share).
    pub fn new(factor: f64) -> Result<BoundedLoad> {
        if factor.is_finite() && factor >= 1.0 {
            Ok(BoundedLoad { factor })
        } else {
            Err(Error::InvalidLoadFactor)
        }
    }

    /// The load factor.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// `ceil(c * (total_load + 1) * weight / total_weight)`: the most
    /// requests an endpoint of `weight` may hold once the next one is placed,
    /// when the eligible endpoints hold `total_load` and weigh
    /// `total_weight`. Never below 1.
    pub fn capacity(&self, total_load: u64, weight: u32, total_weight: u64) -> u64 {
        let share = f64::from(weight) / total_weight.max(1) as f64;
        // f64 -> u64 saturates; the value is finite and positive here.
        ((self.factor * (total_load as f64 + 1.0) * share).ceil() as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_the_papers_bound() {
        let b = BoundedLoad::new(1.25).unwrap();
        // 10 in flight over 4 equal endpoints: ceil(1.25 * 11 / 4) = 4.
        assert_eq!(b.capacity(10, 1, 4), 4);
        // Nothing in flight: ceil(1.25 / 4) = 1.
        assert_eq!(b.capacity(0, 1, 4), 1);
        // Weighted: half the weight, ceil(1.25 * 101 * 0.5) = 64.
        assert_eq!(b.capacity(100, 5, 10), 64);
        // c = 1 on 100 in flight over 3: ceil(101 / 3) = 34.
        assert_eq!(BoundedLoad::new(1.0).unwrap().capacity(100, 1, 3), 34);
    }

    #[test]
    fn bad_factors_are_refused() {
        for f in [0.99, 0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(BoundedLoad::new(f).unwrap_err(), Error::InvalidLoadFactor);
        }
    }
}
