//! wyrand: a 64-bit generator with one word of state, fast enough to call
//! twice per pick and good enough for load balancing (it passes BigCrush and
//! PractRand). Not for anything an attacker must not predict.

/// Per-selector pseudo-random generator, seeded by the caller so that tests
/// are reproducible and workers can be given different streams.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0).wrapping_mul(u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below
    /// `n / 2^64`). Returns 0 when `n` is 0.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            let v = rng.below(5);
            assert!(v < 5);
            seen[v as usize] += 1;
        }
        // Each value has p = 0.2: 2000 expected, sigma = 40.
        assert!(seen.iter().all(|&c| (1800..2200).contains(&c)), "{seen:?}");
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn different_seeds_give_different_streams() {
        let a: Vec<u64> = {
            let mut r = Rng::new(1);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = Rng::new(2);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_ne!(a, b);
        let u = Rng::new(3).unit();
        assert!((0.0..1.0).contains(&u));
    }
}
