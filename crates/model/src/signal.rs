//! Signals: per-workload measurements that say online work suffers, beside the node's CPU pressure.
//! Each source (a latency objective today, run-queue latency next) adds readings here and one rule in
//! the policy; every signal drives the same interference ladder.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalKind {
    /// A latency objective's slack: (target − observed quantile) / target.
    Slo,
    /// Run-queue latency of a workload's tasks (eBPF).
    RunqLatency,
}

/// One reading of one signal for one online workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub kind: SignalKind,
    /// The workload (or objective) it speaks for.
    pub workload: String,
    /// What was measured, as a reason quotes it (`p99 of http_request_duration_seconds`).
    pub what: String,
    /// The observed value and its target, in seconds.
    pub observed: f64,
    pub target: f64,
    /// (target − observed) / target: below 0 the objective is missed.
    pub slack: f64,
    /// How old the reading is, for one renewed less often than every tick (None: of this tick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
    /// How far the window's count of samples over the target exceeds what the quantile allows, in
    /// standard deviations of that count ([`Signal::excess_z`]); None where it is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excess_z: Option<f64>,
}

impl Signal {
    /// `over` of `n` samples above the target, where the `q` quantile allows (1 − q)·n: the excess
    /// in standard deviations of a binomial count, so a miss within sampling noise reads small.
    /// None without samples or for a `q` outside (0, 1).
    pub fn excess_z(over: f64, n: f64, q: f64) -> Option<f64> {
        if !(n > 0.0 && n.is_finite() && over.is_finite() && q > 0.0 && q < 1.0) {
            return None;
        }
        let allowed = (1.0 - q) * n;
        let sd = (n * q * (1.0 - q)).sqrt();
        (sd > 0.0).then(|| (over.clamp(0.0, n) - allowed) / sd)
    }

    pub fn slack_of(observed: f64, target: f64) -> f64 {
        if target > 0.0 && observed.is_finite() {
            (target - observed) / target
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excess_is_counted_in_standard_deviations_of_the_allowed_count() {
        // p99 of 10 000: 100 allowed over, sd √99 ≈ 9.95.
        let z = Signal::excess_z(130.0, 10_000.0, 0.99).unwrap();
        assert!((z - 30.0 / 99f64.sqrt()).abs() < 1e-9, "{z}");
        // As allowed: 0; fewer: negative.
        assert!(Signal::excess_z(100.0, 10_000.0, 0.99).unwrap().abs() < 1e-12);
        assert!(Signal::excess_z(50.0, 10_000.0, 0.99).unwrap() < 0.0);
        // The same share over the target weighs more with more samples.
        let few = Signal::excess_z(2.0, 100.0, 0.99).unwrap();
        let many = Signal::excess_z(200.0, 10_000.0, 0.99).unwrap();
        assert!(many > few);
        assert_eq!(Signal::excess_z(1.0, 0.0, 0.99), None);
        assert_eq!(Signal::excess_z(1.0, 10.0, 1.0), None);
        assert_eq!(Signal::excess_z(f64::NAN, 10.0, 0.5), None);
    }
}
