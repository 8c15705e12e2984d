//! Signals: per-workload measurements that say online work suffers, beside the node's CPU pressure.
//! Each source (a latency objective, run-queue latency, the agent's own stalls) adds readings here and
//! one rule in the policy; every signal drives the same interference ladder.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalKind {
    /// A latency objective's slack: (target − observed quantile) / target.
    Slo,
    /// Run-queue latency of a workload's tasks (eBPF).
    RunqLatency,
    /// The agent's own loop stopped (observed: how long, target: the stall guard's limit): the
    /// guard froze offline meanwhile, and the ladder takes the freeze over.
    Stall,
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
    /// How far the window's count of samples over the target exceeds what the quantile allows, as
    /// the normal deviate of that count's chance ([`Signal::excess_z`]); None where it is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excess_z: Option<f64>,
}

/// Past this variance of the count over a target (n·q·(1 − q)), [`Signal::excess_z`] takes the
/// normal deviate: the binomial's skew is then under 0.04, and the incomplete beta function's
/// series converges within its bound.
pub const EXACT_TAIL_MAX_VARIANCE: f64 = 1_000.0;

impl Signal {
    /// `over` of `n` samples above the target, where the `q` quantile allows (1 − q)·n: the excess
    /// as the standard normal deviate with the same upper-tail chance as that count, so a miss
    /// within sampling noise reads small. None without samples or for a `q` outside (0, 1).
    ///
    /// The chance is the binomial tail, exact where few are expected over: there the normal
    /// approximation is far off (it puts one sample of 20 over a p99 target 1.8 deviations out, a
    /// 4% chance; the count's chance is 18%). Where the count's variance passes
    /// [`EXACT_TAIL_MAX_VARIANCE`] the two agree, and the normal deviate is taken as it is.
    pub fn excess_z(over: f64, n: f64, q: f64) -> Option<f64> {
        if !(n > 0.0 && n.is_finite() && over.is_finite() && q > 0.0 && q < 1.0) {
            return None;
        }
        let p = 1.0 - q;
        let variance = n * p * q;
        if variance <= 0.0 {
            return None;
        }
        let over = over.clamp(0.0, n);
        if variance > EXACT_TAIL_MAX_VARIANCE {
            return Some((over - p * n) / variance.sqrt());
        }
        let tail = Signal::tail_chance(over, n, p)?;
        // P(Z ≥ z) = tail: z = √2 · erfc⁻¹(2 · tail), bounded where the tail is 1 or vanishes.
        let tail = tail.clamp(f64::MIN_POSITIVE, 1.0 - 1e-15);
        let z = std::f64::consts::SQRT_2 * statrs::function::erf::erfc_inv(2.0 * tail);
        z.is_finite().then_some(z)
    }

    /// The chance that `over` or more of `n` samples fall above a target each passes with chance
    /// `p`: the binomial tail I_p(over, n − over + 1) (a count between two integers falls between
    /// their tails). None for values outside its domain.
    fn tail_chance(over: f64, n: f64, p: f64) -> Option<f64> {
        if over <= 0.0 {
            return Some(1.0);
        }
        statrs::function::beta::checked_beta_reg(over, n - over + 1.0, p).ok()
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
    fn excess_is_the_normal_deviate_of_the_exact_binomial_tail() {
        // One of 20 over a p99 target: 1 − 0.99²⁰ ≈ 18% by chance (the normal approximation said
        // 1.8 deviations): within the noise at one-sided 95%.
        let one = Signal::tail_chance(1.0, 20.0, 0.01).unwrap();
        assert!((one - (1.0 - 0.99f64.powi(20))).abs() < 1e-9, "{one}");
        let z1 = Signal::excess_z(1.0, 20.0, 0.99).unwrap();
        assert!((z1 - 0.907).abs() < 0.01, "{z1}");
        // Two of 20: 1 − 0.99²⁰ − 20 · 0.01 · 0.99¹⁹ ≈ 1.7%: beyond it.
        let two = Signal::tail_chance(2.0, 20.0, 0.01).unwrap();
        let want = 1.0 - 0.99f64.powi(20) - 20.0 * 0.01 * 0.99f64.powi(19);
        assert!((two - want).abs() < 1e-9, "{two}");
        let z2 = Signal::excess_z(2.0, 20.0, 0.99).unwrap();
        assert!((z2 - 2.124).abs() < 0.01, "{z2}");
        // A count between two integers falls between their deviates.
        let z15 = Signal::excess_z(1.5, 20.0, 0.99).unwrap();
        assert!(z1 < z15 && z15 < z2);
        // None over: far below; as many as allowed: about the middle; more: above.
        assert!(Signal::excess_z(0.0, 10_000.0, 0.99).unwrap() < -5.0);
        assert!(Signal::excess_z(100.0, 10_000.0, 0.99).unwrap().abs() < 0.1);
        assert!(Signal::excess_z(50.0, 10_000.0, 0.99).unwrap() < 0.0);
        // The same share over the target weighs more with more samples.
        let few = Signal::excess_z(2.0, 100.0, 0.99).unwrap();
        let many = Signal::excess_z(200.0, 10_000.0, 0.99).unwrap();
        assert!(many > few);
        // Far out the deviate stays finite.
        assert!(Signal::excess_z(20.0, 20.0, 0.99).unwrap().is_finite());
        assert_eq!(Signal::excess_z(1.0, 0.0, 0.99), None);
        assert_eq!(Signal::excess_z(1.0, 10.0, 1.0), None);
        assert_eq!(Signal::excess_z(f64::NAN, 10.0, 0.5), None);
    }

    #[test]
    fn past_the_exact_tails_bound_the_normal_deviate_agrees_with_it() {
        // p50 of 4 000 (variance 1 000) and p99 of 101 010 (1 000): exact on this side of the
        // bound, normal past it. The two agree within the skew's term ((z² − 1) · skew / 6, skew
        // under 0.04) and half a count: a twentieth of a deviation at the usual 1.645.
        for (n, q) in [(4_000.0f64, 0.5f64), (101_010.0, 0.99)] {
            let p = 1.0 - q;
            let sd = (n * p * q).sqrt();
            for dev in [-2.0f64, 0.0, 1.645, 3.0, 6.0] {
                let over = n * p + dev * sd;
                let exact = Signal::excess_z(over, n, q).unwrap();
                let within = 0.02 + 0.04 * (dev * dev - 1.0f64).abs() / 6.0;
                assert!(
                    (exact - dev).abs() < within,
                    "n {n} q {q}: {exact} vs {dev}"
                );
                let past = Signal::excess_z(over * 1.001, n * 1.001, q).unwrap();
                assert!(
                    (past - dev * 1.0005).abs() < 0.01,
                    "n {n} q {q}: {past} vs {dev}"
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn more_over_never_reads_as_less_excess(n in 1.0f64..200_000.0, a in 0.0f64..1.0, b in 0.0f64..1.0, q in 0.5f64..0.9999) {
            let (lo, hi) = if a < b { (a * n, b * n) } else { (b * n, a * n) };
            let zl = Signal::excess_z(lo, n, q);
            let zh = Signal::excess_z(hi, n, q);
            proptest::prop_assert!(zl.is_some() && zh.is_some(), "{:?} {:?}", zl, zh);
            proptest::prop_assert!(zh.unwrap_or(0.0) >= zl.unwrap_or(0.0) - 1e-6, "{} over: {:?}, {} over: {:?}", lo, zl, hi, zh);
        }
    }
}
