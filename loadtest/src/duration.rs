//! Durations (`10ms`, `1.5s`, `250us`) and delay distributions
//! (`10ms`, `uniform:1ms..20ms`, `exp:5ms`) from the command line, and the
//! small generator that samples them.

use std::time::Duration;

use crate::{Error, Result};

/// Parses `N[unit]` with unit `ns`, `us`, `µs`, `ms`, `s`, `m` or `h`; a bare
/// number is seconds. Fractions are allowed (`1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| Error::invalid("duration", s, "expected a number and a unit, like 10ms"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(Error::invalid(
                "duration",
                s,
                "unit must be one of ns, us, ms, s, m, h",
            ));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(Error::invalid("duration", s, "out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// How long the origin waits before answering each request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delay {
    /// Always the same (zero: answer at once).
    Fixed(Duration),
    /// Uniform between two bounds.
    Uniform(Duration, Duration),
    /// Exponential with the given mean, as a service with Poisson-like
    /// service times; capped at 100 means so that one sample cannot stall
    /// a benchmark for minutes.
    Exp(Duration),
}

impl Delay {
    /// Parses `10ms`, `uniform:1ms..20ms` or `exp:5ms`.
    pub fn parse(s: &str) -> Result<Delay> {
        if let Some(range) = s.strip_prefix("uniform:") {
            let (lo, hi) = range.split_once("..").ok_or_else(|| {
                Error::invalid(
                    "delay",
                    s,
                    "expected uniform:LOW..HIGH, like uniform:1ms..20ms",
                )
            })?;
            let (lo, hi) = (parse_duration(lo)?, parse_duration(hi)?);
            if hi < lo {
                return Err(Error::invalid("delay", s, "HIGH is below LOW"));
            }
            Ok(Delay::Uniform(lo, hi))
        } else if let Some(mean) = s.strip_prefix("exp:") {
            Ok(Delay::Exp(parse_duration(mean)?))
        } else {
            Ok(Delay::Fixed(parse_duration(s)?))
        }
    }

    /// True when every sample is zero.
    pub fn is_zero(&self) -> bool {
        matches!(self, Delay::Fixed(d) if d.is_zero())
    }

    /// One sample.
    pub fn sample(&self, rng: &mut Rng) -> Duration {
        match *self {
            Delay::Fixed(d) => d,
            Delay::Uniform(lo, hi) => lo + (hi - lo).mul_f64(rng.unit()),
            Delay::Exp(mean) => {
                // Inverse transform; 1 - u is in (0, 1], so ln never sees 0.
                let x = -(1.0 - rng.unit()).ln();
                mean.mul_f64(x.min(100.0))
            }
        }
    }
}

/// SplitMix64: tiny, fast and good enough to spread delays; not for
/// anything that needs to be unpredictable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Formats a duration for people: `850µs`, `12.30ms`, `1.50s`.
pub fn human(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    human_us(us)
}

/// Formats microseconds for people.
pub fn human_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn delays_parse_and_sample_within_bounds() {
        let mut rng = Rng::new(7);
        assert_eq!(
            Delay::parse("10ms").unwrap().sample(&mut rng),
            Duration::from_millis(10)
        );
        let u = Delay::parse("uniform:1ms..20ms").unwrap();
        for _ in 0..1000 {
            let d = u.sample(&mut rng);
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(20));
        }
        let e = Delay::parse("exp:5ms").unwrap();
        let mean: f64 = (0..20_000)
            .map(|_| e.sample(&mut rng).as_secs_f64())
            .sum::<f64>()
            / 20_000.0;
        assert!((mean - 0.005).abs() < 0.0005, "mean {mean}");
        assert!(Delay::parse("uniform:5ms..1ms").is_err());
        assert!(Delay::parse("uniform:5ms").is_err());
        assert!(Delay::parse("0").unwrap().is_zero());
    }
}
