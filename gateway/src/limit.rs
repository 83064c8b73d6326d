//! Token-bucket rate limits, one per route per worker, and each
//! worker's retry budget.
//!
//! Shared-nothing: each worker holds `1 / workers` of a route's rate and
//! burst, so the process-wide total holds without a lock as long as the
//! kernel spreads connections over the workers (SO_REUSEPORT hashes them
//! evenly). A single client on one connection meets one worker and so gets
//! that worker's share; per-client limits (`key`) are meant for many
//! clients, where the spread evens out.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Instant;

use ringway_config::RateLimit;

/// Most per-key buckets a worker keeps for one route; beyond it, buckets
/// that have refilled (and so hold no state worth keeping) are dropped.
const MAX_KEYS: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One route's limit on one worker.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: RefCell<HashMap<u64, Bucket>>,
}

impl RateLimiter {
    /// This worker's share of `limit`.
    pub(crate) fn new(limit: &RateLimit, workers: u32) -> RateLimiter {
        let w = f64::from(workers.max(1));
        RateLimiter {
            per_second: limit.per_second / w,
            burst: (limit.burst / w).max(1.0),
            buckets: RefCell::new(HashMap::new()),
        }
    }

    /// Takes a token from the bucket of `key` (0 for an unkeyed limit).
    /// `Err` holds the whole seconds until a token is there, for
    /// `Retry-After`.
    pub(crate) fn take(&self, key: u64, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.borrow_mut();
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(&key) {
            let (rate, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.per_second;
        Err(wait.ceil().max(1.0) as u64)
    }
}

/// Requests and retries a worker has in flight: at most a route's
/// `budget` share of the requests may be retries at once.
#[derive(Debug, Default)]
pub(crate) struct RetryBudget {
    /// Proxied requests in flight.
    pub(crate) active_requests: Cell<u32>,
    /// Retries in flight.
    pub(crate) active_retries: Cell<u32>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 5.0,
            key: None,
        };
        let l = RateLimiter::new(&limit, 1);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.take(0, t0).is_ok());
        }
        assert_eq!(l.take(0, t0), Err(1));
        // 10 per second: one more every 100 ms.
        assert!(l.take(0, t0 + Duration::from_millis(100)).is_ok());
        assert!(l.take(0, t0 + Duration::from_millis(100)).is_err());
        // Keys have their own buckets.
        assert!(l.take(7, t0).is_ok());
    }

    #[test]
    fn workers_share_the_limit() {
        let limit = RateLimit {
            per_second: 100.0,
            burst: 10.0,
            key: None,
        };
        let l = RateLimiter::new(&limit, 2);
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| l.take(0, t0).is_ok()).count();
        assert_eq!(allowed, 5);
        let later = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| l.take(0, later).is_ok()).count();
        assert_eq!(
            allowed, 5,
            "the bucket holds at most its share of the burst"
        );
    }
}
