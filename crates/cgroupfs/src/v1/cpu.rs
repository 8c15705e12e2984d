//! v1 `cpu` controller: `cpu.shares`, `cpu.idle`, CFS quota/period/burst, openEuler `cpu.qos_level`,
//! `cpu.rt_runtime_us` (RT group scheduling), and the bandwidth statistics in `cpu.stat` (`throttled_time` in nanoseconds).

use crate::spec::{bad, bool01, int, not_mine, one, Controller};
use crate::stat::{flat_key, Throttling};
use tidal_model::{Knob, KnobValue};

pub const SHARES: &str = "cpu.shares";
pub const IDLE: &str = "cpu.idle";
pub const PERIOD: &str = "cpu.cfs_period_us";
pub const QUOTA: &str = "cpu.cfs_quota_us";
pub const BURST: &str = "cpu.cfs_burst_us";
pub const QOS_LEVEL: &str = "cpu.qos_level";
pub const RT_RUNTIME: &str = "cpu.rt_runtime_us";
pub const STAT: &str = "cpu.stat";

pub struct Cpu;

impl Controller for Cpu {
    fn controller(&self) -> Option<&'static str> {
        Some("cpu")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[
            Knob::CpuWeight,
            Knob::CpuIdle,
            Knob::CpuMax,
            Knob::CpuBurst,
            Knob::CpuQosLevel,
            Knob::CpuRtRuntime,
        ]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::CpuWeight => &[SHARES],
            Knob::CpuIdle => &[IDLE],
            // Period first: a quota is checked against the period in force.
            Knob::CpuMax => &[PERIOD, QUOTA],
            Knob::CpuBurst => &[BURST],
            Knob::CpuQosLevel => &[QOS_LEVEL],
            Knob::CpuRtRuntime => &[RT_RUNTIME],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::CpuWeight, KnobValue::Shares(s)) => Ok(vec![(*s).clamp(2, 262_144).to_string()]),
            (Knob::CpuIdle, KnobValue::Bool(b)) => Ok(vec![u8::from(*b).to_string()]),
            (
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us,
                    period_us,
                },
            ) => Ok(vec![
                period_us.to_string(),
                quota_us.map_or("-1".to_string(), |q| q.to_string()),
            ]),
            (Knob::CpuBurst, KnobValue::Micros(us)) => Ok(vec![us.to_string()]),
            (Knob::CpuQosLevel, KnobValue::Level(l)) => Ok(vec![l.to_string()]),
            (Knob::CpuRtRuntime, KnobValue::Micros(us)) => Ok(vec![us.to_string()]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        match knob {
            Knob::CpuWeight => one(c).and_then(|s| int(s, "shares")).map(KnobValue::Shares),
            Knob::CpuIdle => bool01(c),
            Knob::CpuMax => {
                let period: u64 = c
                    .first()
                    .ok_or_else(|| "no period".to_string())
                    .and_then(|s| int(s, "period"))?;
                let quota: i64 = c
                    .get(1)
                    .ok_or_else(|| "no quota".to_string())
                    .and_then(|s| int(s, "quota"))?;
                Ok(KnobValue::Quota {
                    quota_us: u64::try_from(quota).ok(),
                    period_us: period,
                })
            }
            Knob::CpuBurst => one(c)
                .and_then(|s| int(s, "microseconds"))
                .map(KnobValue::Micros),
            Knob::CpuQosLevel => one(c).and_then(|s| int(s, "level")).map(KnobValue::Level),
            // -1 (no limit) is the root's alone, which tidal never writes.
            Knob::CpuRtRuntime => one(c)
                .and_then(|s| int(s, "microseconds"))
                .map(KnobValue::Micros),
            _ => Err(not_mine(knob, "v1 cpu")),
        }
    }
}

/// v1 `cpu.stat` → throttling (its `throttled_time` is in nanoseconds).
pub fn parse_throttling(text: &str) -> Option<Throttling> {
    Some(Throttling {
        nr_periods: flat_key(text, "nr_periods")?,
        nr_throttled: flat_key(text, "nr_throttled")?,
        throttled_us: flat_key(text, "throttled_time")? / 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_cpu_stat() {
        let t =
            "nr_periods 10\nnr_throttled 3\nthrottled_time 5000000\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            parse_throttling(t),
            Some(Throttling {
                nr_periods: 10,
                nr_throttled: 3,
                throttled_us: 5000
            })
        );
        assert_eq!(parse_throttling("nr_periods 1\n"), None);
    }
}
