//! Rate and window arithmetic on cumulative counters, pure so it can be tested with a fake clock.

use std::collections::VecDeque;

/// One reading of a cumulative counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at_ns: u64,
    pub value: u64,
}

/// CPUs busy between two readings of a nanosecond CPU-time counter. None when no time passed or the
/// counter went backwards (its group was recreated): no rate is better than a wrong one.
pub fn cpu_rate(a: Sample, b: Sample) -> Option<f64> {
    let dt = b.at_ns.checked_sub(a.at_ns).filter(|d| *d > 0)?;
    let dv = b.value.checked_sub(a.value)?;
    Some(dv as f64 / dt as f64)
}

/// PSI over about the last second from the `total` stall counters (µs): percent of wall time.
#[derive(Debug, Default, Clone)]
pub struct PsiWindow {
    hist: VecDeque<(u64, u64, Option<u64>)>,
}

/// The shortest window that gives a percentage (shorter ones are noise).
const MIN_WINDOW_NS: u64 = 200_000_000;
const WINDOW_NS: u64 = 1_000_000_000;

impl PsiWindow {
    /// Adds a reading at `at_ns` and returns (some, full) percent over the window ending there. A
    /// counter that went backwards restarts the window.
    pub fn push(
        &mut self,
        at_ns: u64,
        some_us: u64,
        full_us: Option<u64>,
    ) -> (Option<f64>, Option<f64>) {
        if self
            .hist
            .back()
            .is_some_and(|(t, s, _)| at_ns < *t || some_us < *s)
        {
            self.hist.clear();
        }
        self.hist.push_back((at_ns, some_us, full_us));
        while self.hist.len() > 2
            && self
                .hist
                .get(1)
                .is_some_and(|(t, _, _)| at_ns.saturating_sub(*t) >= WINDOW_NS)
        {
            self.hist.pop_front();
        }
        let Some((t0, s0, f0)) = self.hist.front().copied() else {
            return (None, None);
        };
        let dt_us = at_ns.saturating_sub(t0) as f64 / 1000.0;
        if at_ns.saturating_sub(t0) < MIN_WINDOW_NS {
            return (None, None);
        }
        let pct = |a: u64, b: u64| {
            b.checked_sub(a)
                .map(|d| (d as f64 / dt_us * 100.0).min(100.0))
        };
        let full = match (f0, full_us) {
            (Some(a), Some(b)) => pct(a, b),
            _ => None,
        };
        (pct(s0, some_us), full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_rate_is_cpus_and_refuses_resets() {
        let a = Sample { at_ns: 0, value: 0 };
        let b = Sample {
            at_ns: 100_000_000,
            value: 150_000_000,
        };
        assert_eq!(cpu_rate(a, b), Some(1.5));
        assert_eq!(cpu_rate(b, a), None, "time went backwards");
        let reset = Sample {
            at_ns: 200_000_000,
            value: 10,
        };
        assert_eq!(cpu_rate(b, reset), None, "counter reset");
        assert_eq!(cpu_rate(a, a), None, "no time passed");
    }

    #[test]
    fn psi_window_covers_about_a_second() {
        let mut w = PsiWindow::default();
        // 100 ms steps; 50 ms of stall per step = 50%.
        let mut out = (None, None);
        for i in 0..=20u64 {
            out = w.push(i * 100_000_000, i * 50_000, Some(i * 10_000));
            if i == 1 {
                assert_eq!(out, (None, None), "100 ms is too short a window");
            }
        }
        let (s, f) = out;
        assert!((s.unwrap() - 50.0).abs() < 1e-9, "{s:?}");
        assert!((f.unwrap() - 10.0).abs() < 1e-9, "{f:?}");
        // The window is a second long, not since the start: a calm second reads 0.
        for i in 21..=32u64 {
            out = w.push(i * 100_000_000, 20 * 50_000, Some(20 * 10_000));
        }
        assert_eq!(out.0, Some(0.0));
        // A counter reset restarts the window instead of reading as a huge stall or as zero.
        assert_eq!(w.push(33 * 100_000_000, 5, None), (None, None));
    }

    proptest! {
        #[test]
        fn rates_are_finite_and_non_negative(t0 in 0u64..1 << 40, dt in 0u64..1 << 40, v0 in any::<u64>(), v1 in any::<u64>()) {
            if let Some(r) = cpu_rate(Sample { at_ns: t0, value: v0 }, Sample { at_ns: t0 + dt, value: v1 }) {
                prop_assert!(r.is_finite() && r >= 0.0);
            }
        }
    }
}
