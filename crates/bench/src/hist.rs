//! Latency histograms (HdrHistogram, nanoseconds) and the statistics the report prints.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Tracks 1 µs … 60 s with 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    match Histogram::new_with_bounds(1_000, 60_000_000_000, 3) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts; this cannot happen at run time.
        Err(e) => unreachable!("fixed histogram bounds rejected: {e}"),
    }
}

/// Records `v` ns, clamping to the histogram's range rather than dropping the sample.
pub fn record(h: &mut Histogram<u64>, v: u64) {
    let v = v.clamp(h.low(), h.high());
    let _ = h.record(v);
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

pub fn summarize(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

/// p-th percentile (0..=100) of raw values by nearest rank, for small samples (reaction times).
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = new_hist();
        for us in 1..=10_000u64 {
            record(&mut h, us * 1000);
        }
        let l = summarize(&h);
        assert_eq!(l.count, 10_000);
        // 3 significant digits: within 0.1%.
        assert!((l.p50_us - 5_000.0).abs() <= 5.0, "{l:?}");
        assert!((l.p99_us - 9_900.0).abs() <= 10.0, "{l:?}");
        assert!((l.p999_us - 9_990.0).abs() <= 10.0, "{l:?}");
        assert!((l.max_us - 10_000.0).abs() <= 10.0, "{l:?}");
    }

    #[test]
    fn percentiles_of_a_bimodal_distribution() {
        // 98.9% at 100 µs, 1.1% at 50 ms: p50 is fast, p99 lands in the slow mode.
        let mut h = new_hist();
        for _ in 0..9_890 {
            record(&mut h, 100_000);
        }
        for _ in 0..110 {
            record(&mut h, 50_000_000);
        }
        let l = summarize(&h);
        assert!((l.p50_us - 100.0).abs() < 1.0, "{l:?}");
        assert!((l.p99_us - 50_000.0).abs() < 50.0, "{l:?}");
        assert_eq!(summarize(&new_hist()), Latency::default());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = new_hist();
        record(&mut h, 1);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn percentiles_of_raw_values() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
    }
}
