//! v2 `cpu` controller: `cpu.weight` (converted from shares), `cpu.idle`, `cpu.max`, `cpu.max.burst`.

use crate::spec::{bad, bool01, int, not_mine, one, Controller};
use crate::stat::{flat_key, Throttling};
use tidal_model::{Knob, KnobValue};

/// v1 shares [2, 262144] → v2 weight [1, 10000]: a quadratic in log2 space that maps 2→1, 1024→100 and
/// 262144→10000 exactly (the curve container runtimes use, so tidal agrees with the kubelet's groups).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

/// Inverse of [`shares_to_weight`], rounded to the nearest share.
pub fn weight_to_shares(weight: u64) -> u64 {
    if weight <= 1 {
        return 2;
    }
    if weight >= 10_000 {
        return 262_144;
    }
    // Solve l² + 125 l − 612 (e + 7/34) = 0 for l = log2(shares), e = log10(weight).
    let e = (weight as f64).log10();
    let c = 612.0 * (e + 7.0 / 34.0);
    let l = (-125.0 + (125.0f64 * 125.0 + 4.0 * c).sqrt()) / 2.0;
    (2f64.powf(l).round() as u64).clamp(2, 262_144)
}

pub const WEIGHT: &str = "cpu.weight";
pub const IDLE: &str = "cpu.idle";
pub const MAX: &str = "cpu.max";
pub const MAX_BURST: &str = "cpu.max.burst";
/// `usage_usec` (present even without the cpu controller) and the bandwidth statistics.
pub const STAT: &str = "cpu.stat";

pub struct Cpu;

impl Controller for Cpu {
    fn controller(&self) -> Option<&'static str> {
        Some("cpu")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[Knob::CpuWeight, Knob::CpuIdle, Knob::CpuMax, Knob::CpuBurst]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::CpuWeight => &[WEIGHT],
            Knob::CpuIdle => &[IDLE],
            Knob::CpuMax => &[MAX],
            Knob::CpuBurst => &[MAX_BURST],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::CpuWeight, KnobValue::Shares(s)) => Ok(vec![shares_to_weight(*s).to_string()]),
            (Knob::CpuIdle, KnobValue::Bool(b)) => Ok(vec![u8::from(*b).to_string()]),
            (
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us,
                    period_us,
                },
            ) => Ok(vec![format!(
                "{} {period_us}",
                quota_us.map_or("max".to_string(), |q| q.to_string())
            )]),
            (Knob::CpuBurst, KnobValue::Micros(us)) => Ok(vec![us.to_string()]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        match knob {
            Knob::CpuWeight => one(c)
                .and_then(|s| int(s, "weight"))
                .map(|w| KnobValue::Shares(weight_to_shares(w))),
            Knob::CpuIdle => bool01(c),
            Knob::CpuMax => one(c).and_then(|s| {
                let mut it = s.split_whitespace();
                let q = it.next().ok_or("empty cpu.max")?;
                let period_us = it.next().map_or(Ok(100_000), |p| int(p, "period"))?;
                let quota_us = if q == "max" {
                    None
                } else {
                    Some(int(q, "quota or 'max'")?)
                };
                Ok(KnobValue::Quota {
                    quota_us,
                    period_us,
                })
            }),
            Knob::CpuBurst => one(c)
                .and_then(|s| int(s, "microseconds"))
                .map(KnobValue::Micros),
            _ => Err(not_mine(knob, "v2 cpu")),
        }
    }
}

/// `cpu.stat` → cumulative CPU time in nanoseconds (from `usage_usec`).
pub fn parse_usage_ns(text: &str) -> Result<u64, String> {
    flat_key(text, "usage_usec")
        .map(|us| us.saturating_mul(1000))
        .ok_or_else(|| "no usage_usec".to_string())
}

/// `cpu.stat` → throttling, if the cpu controller is enabled (else the lines are absent).
pub fn parse_throttling(text: &str) -> Option<Throttling> {
    Some(Throttling {
        nr_periods: flat_key(text, "nr_periods")?,
        nr_throttled: flat_key(text, "nr_throttled")?,
        throttled_us: flat_key(text, "throttled_usec")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn anchor_points_convert_exactly() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(10_000), 262_144);
        // Below the minimum both clamp rather than wrap.
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn v2_cpu_stat() {
        let t = "usage_usec 23027870\nuser_usec 10696102\nsystem_usec 12331767\nnice_usec 0\nnr_periods 4\nnr_throttled 1\nthrottled_usec 77\n";
        assert_eq!(parse_usage_ns(t), Ok(23_027_870_000));
        assert_eq!(parse_throttling(t).map(|x| x.throttled_us), Some(77));
        // The unified cpu.stat without the cpu controller has no bandwidth lines.
        assert!(parse_throttling("usage_usec 1\n").is_none());
        assert!(parse_usage_ns("user_usec 1\n").is_err());
    }

    proptest! {
        #[test]
        fn conversion_is_monotonic(a in 2u64..262_144, b in 2u64..262_144) {
            if a <= b {
                prop_assert!(shares_to_weight(a) <= shares_to_weight(b));
            }
        }

        #[test]
        fn weight_survives_a_round_trip(w in 1u64..=10_000) {
            // Weight → shares → weight is stable to within one step of the curve.
            let back = shares_to_weight(weight_to_shares(w));
            prop_assert!(back.abs_diff(w) <= (w / 50).max(1), "{} -> {}", w, back);
        }
    }
}
