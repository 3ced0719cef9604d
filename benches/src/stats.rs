//! Summaries: medians with min–max over runs, latency percentiles, ratios against a baseline.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The median of several runs with their range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// None for no samples; NaN samples (a run that measured nothing) are left out.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// True when the runs disagree enough for the range to be worth printing.
    pub fn is_spread(&self) -> bool {
        self.max > self.min
    }
}

/// A latency histogram in nanoseconds, 1 ns to 100 s at three significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// The value at quantile `q` (0..=1) in milliseconds; NaN for an empty histogram.
pub fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return f64::NAN;
    }
    h.value_at_quantile(q) as f64 / 1e6
}

/// `value / base`, NaN when the base is zero or missing.
pub fn ratio(value: f64, base: f64) -> f64 {
    if base == 0.0 || base.is_nan() {
        f64::NAN
    } else {
        value / base
    }
}

/// `total / count`, NaN when nothing was counted (so a run with no requests is not "free").
pub fn per(total: f64, count: u64) -> f64 {
    if count == 0 {
        f64::NAN
    } else {
        total / count as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_runs() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 10.0]).expect("samples");
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 10.0));
        assert!(s.is_spread());
        assert!(!Spread::of(&[5.0]).expect("one").is_spread());
    }

    #[test]
    fn runs_that_measured_nothing_do_not_count() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
        let s = Spread::of(&[f64::NAN, 7.0]).expect("one sample");
        assert_eq!(s.median, 7.0);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = latency_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("in range");
        }
        let p50 = quantile_ms(&h, 0.5);
        let p99 = quantile_ms(&h, 0.99);
        let p999 = quantile_ms(&h, 0.999);
        assert!((p50 - 0.5).abs() < 0.001, "p50 {p50}");
        assert!((p99 - 0.99).abs() < 0.001, "p99 {p99}");
        assert!((p999 - 0.999).abs() < 0.002, "p99.9 {p999}");
        assert!(quantile_ms(&latency_histogram(), 0.5).is_nan());
    }

    #[test]
    fn ratios_and_per_request_figures_refuse_empty_bases() {
        assert_eq!(ratio(3.0, 4.0), 0.75);
        assert!(ratio(1.0, 0.0).is_nan());
        assert!(ratio(1.0, f64::NAN).is_nan());
        assert_eq!(per(2.0, 4), 0.5);
        assert!(per(2.0, 0).is_nan());
    }
}
