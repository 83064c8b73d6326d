//! Latency histograms: HdrHistogram with 3 significant digits over
//! microseconds, the percentiles ringload reports, and the
//! percentile-distribution text export that HdrHistogram's plotters read.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Significant digits kept: 0.1% relative error at every magnitude.
pub const SIGFIG: u8 = 3;
/// Longest latency recorded (one hour, in µs); longer samples saturate.
const HIGHEST_US: u64 = 3_600_000_000;

/// A histogram of microseconds.
pub type Latency = Histogram<u64>;

/// A new, empty latency histogram.
pub fn new() -> Latency {
    // Constant bounds that HdrHistogram accepts: this cannot fail at run time.
    Histogram::new_with_bounds(1, HIGHEST_US, SIGFIG).expect("constant histogram bounds are valid")
}

/// Records `us` microseconds, clamped into range.
pub fn record(h: &mut Latency, us: u64) {
    h.saturating_record(us.max(1));
}

/// The percentiles ringload reports, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    /// 99.99th percentile.
    #[serde(rename = "p99.99")]
    pub p99_99: u64,
    /// Smallest sample.
    pub min: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Samples.
    pub count: u64,
}

/// The percentiles of `h` (all zero when it is empty).
pub fn percentiles(h: &Latency) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p99_9: h.value_at_quantile(0.999),
        p99_99: h.value_at_quantile(0.9999),
        min: h.min(),
        max: h.max(),
        mean: h.mean(),
        stdev: h.stdev(),
        count: h.len(),
    }
}

/// The histogram in HdrHistogram's percentile-distribution text format
/// (as `outputPercentileDistribution` writes it, 5 ticks per half
/// distance, values in milliseconds), for HdrHistogram's plotter.
pub fn percentile_distribution(h: &Latency) -> String {
    let scale = 1000.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total: u64 = 0;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / scale, h.stdev() / scale, h.max() as f64 / scale)
    };
    let sub_buckets = (2 * 10u64.pow(u32::from(SIGFIG))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_samples() {
        let mut h = new();
        for us in 1..=10_000 {
            record(&mut h, us);
        }
        let p = percentiles(&h);
        assert!((4990..=5010).contains(&p.p50), "{p:?}");
        assert!((9890..=9910).contains(&p.p99), "{p:?}");
        assert_eq!(p.count, 10_000);
        assert!(p.max >= 10_000 && p.max <= 10_010);
    }

    #[test]
    fn distribution_text_has_header_rows_and_footer() {
        let mut h = new();
        for us in [100, 200, 300, 5000] {
            record(&mut h, us);
        }
        let text = percentile_distribution(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("Value") && lines[0].contains("1/(1-Percentile)"));
        assert!(
            lines.iter().any(
                |l| l.starts_with("#[Max     =") && l.contains("Total count    =            4")
            )
        );
        // The last data row reaches percentile 1.0 with every sample counted.
        let last_row = lines.iter().rev().find(|l| !l.starts_with('#')).unwrap();
        let cols: Vec<&str> = last_row.split_whitespace().collect();
        assert_eq!(cols[1].parse::<f64>().unwrap(), 1.0);
        assert_eq!(cols[2], "4");
    }
}
