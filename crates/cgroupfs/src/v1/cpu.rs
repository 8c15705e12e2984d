//! v1 `cpu` controller: `cpu.shares`, `cpu.idle`, CFS quota/period/burst, openEuler `cpu.qos_level`.

use crate::knobs::{bad, bool01, int, one, KnobSpec};
use tidal_model::{Knob, KnobValue};

pub fn spec(knob: Knob) -> Option<KnobSpec> {
    let files: &'static [&'static str] = match knob {
        Knob::CpuWeight => &["cpu.shares"],
        Knob::CpuIdle => &["cpu.idle"],
        // Period first: a quota is checked against the period in force.
        Knob::CpuMax => &["cpu.cfs_period_us", "cpu.cfs_quota_us"],
        Knob::CpuBurst => &["cpu.cfs_burst_us"],
        Knob::CpuQosLevel => &["cpu.qos_level"],
        _ => return None,
    };
    Some(KnobSpec {
        controller: Some("cpu"),
        files,
    })
}

pub fn encode(knob: Knob, v: &KnobValue) -> Option<Result<Vec<String>, String>> {
    spec(knob)?;
    Some(match (knob, v) {
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
        _ => Err(bad(knob, v)),
    })
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(match knob {
        Knob::CpuWeight => one(c).and_then(|s| int(s, "shares")).map(KnobValue::Shares),
        Knob::CpuIdle => bool01(c),
        Knob::CpuMax => {
            let period: Result<u64, String> = c
                .first()
                .ok_or_else(|| "no period".to_string())
                .and_then(|s| int(s, "period"));
            let quota: Result<i64, String> = c
                .get(1)
                .ok_or_else(|| "no quota".to_string())
                .and_then(|s| int(s, "quota"));
            period.and_then(|period_us| {
                quota.map(|q| KnobValue::Quota {
                    quota_us: u64::try_from(q).ok(),
                    period_us,
                })
            })
        }
        Knob::CpuBurst => one(c)
            .and_then(|s| int(s, "microseconds"))
            .map(KnobValue::Micros),
        Knob::CpuQosLevel => one(c).and_then(|s| int(s, "level")).map(KnobValue::Level),
        _ => Err(format!("{knob} is not a v1 cpu knob")),
    })
}
