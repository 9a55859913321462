//! Per-operation latency: an HDR histogram in nanoseconds, summarised in microseconds.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency the histogram resolves, in nanoseconds (one hour); longer ones saturate.
pub const LATENCY_MAX_NS: u64 = 3_600_000_000_000;
/// Significant decimal digits the histogram keeps (0.1% relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// Records one latency per operation.
#[derive(Debug)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_MAX_NS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        LatencyRecorder { histogram }
    }

    /// Records one operation that took `ns` nanoseconds.
    pub fn record_ns(&mut self, ns: u64) {
        self.histogram.saturating_record(ns);
    }

    /// Count, mean, percentiles and maximum.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.histogram;
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            mean_us: h.mean() / 1000.0,
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// What a benchmark's latencies looked like, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Operations recorded.
    pub count: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest operation.
    pub max_us: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) -> bool {
        // The histogram keeps 3 significant digits: 0.1% relative error, plus rounding.
        (got - want).abs() <= want * 0.002
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut r = LatencyRecorder::new();
        // 1 µs, 2 µs, …, 10,000 µs, once each.
        for us in 1..=10_000u64 {
            r.record_ns(us * 1000);
        }
        let s = r.summary();
        assert_eq!(s.count, 10_000);
        assert!(close(s.p50_us, 5_000.0), "p50 {}", s.p50_us);
        assert!(close(s.p99_us, 9_900.0), "p99 {}", s.p99_us);
        assert!(close(s.p999_us, 9_990.0), "p99.9 {}", s.p999_us);
        assert!(close(s.max_us, 10_000.0), "max {}", s.max_us);
        assert!(close(s.mean_us, 5_000.5), "mean {}", s.mean_us);
    }

    #[test]
    fn a_rare_slow_operation_shows_only_in_the_tail() {
        let mut r = LatencyRecorder::new();
        for _ in 0..999 {
            r.record_ns(2_000);
        }
        r.record_ns(5_000_000);
        let s = r.summary();
        assert!(close(s.p50_us, 2.0) && close(s.p99_us, 2.0));
        assert!(close(s.max_us, 5_000.0));
    }

    #[test]
    fn empty_and_zero_latencies_are_fine() {
        assert_eq!(LatencyRecorder::new().summary(), LatencySummary::default());
        let mut r = LatencyRecorder::new();
        r.record_ns(0);
        assert_eq!(r.summary().count, 1);
        assert_eq!(r.summary().p99_us, 0.0);
    }

    #[test]
    fn latencies_beyond_the_bound_saturate() {
        let mut r = LatencyRecorder::new();
        r.record_ns(u64::MAX);
        assert!(r.summary().max_us >= LATENCY_MAX_NS as f64 / 1000.0 * 0.999);
    }
}
