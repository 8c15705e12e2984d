//! v1 `memory` controller: the hard limit, the soft limit (reclaim order under contention),
//! `memory.high` where a vendor kernel backports it (upstream v1 has no such file), openEuler's
//! `memory.qos_level`, and the working set as the kubelet counts it: `memory.usage_in_bytes` less
//! `total_inactive_file` of `memory.stat`.

use crate::spec::{bad, int, not_mine, one, page_floor, Controller};
use crate::stat::flat_key;
use tidal_model::{Knob, KnobValue};

pub const LIMIT: &str = "memory.limit_in_bytes";
pub const SOFT_LIMIT: &str = "memory.soft_limit_in_bytes";
pub const HIGH: &str = "memory.high";
pub const QOS_LEVEL: &str = "memory.qos_level";
pub const USAGE: &str = "memory.usage_in_bytes";
pub const STAT: &str = "memory.stat";

/// v1 reports "unlimited" as the largest page-aligned i64.
pub const UNLIMITED: u64 = 9_223_372_036_854_771_712;

pub struct Memory;

impl Controller for Memory {
    fn controller(&self) -> Option<&'static str> {
        Some("memory")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[
            Knob::MemoryMax,
            Knob::MemorySoftLimit,
            Knob::MemoryHigh,
            Knob::MemoryQosLevel,
        ]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::MemoryMax => &[LIMIT],
            Knob::MemorySoftLimit => &[SOFT_LIMIT],
            Knob::MemoryHigh => &[HIGH],
            Knob::MemoryQosLevel => &[QOS_LEVEL],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::MemoryQosLevel, KnobValue::Level(l)) => Ok(vec![l.to_string()]),
            (
                Knob::MemoryMax | Knob::MemorySoftLimit | Knob::MemoryHigh,
                KnobValue::Bytes(Some(b)),
            ) => Ok(vec![page_floor(*b).to_string()]),
            (Knob::MemoryMax | Knob::MemorySoftLimit, KnobValue::Bytes(None)) => {
                Ok(vec!["-1".to_string()])
            }
            (Knob::MemoryHigh, KnobValue::Bytes(None)) => Ok(vec!["max".to_string()]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        if knob == Knob::MemoryQosLevel {
            return one(c).and_then(|s| int(s, "level")).map(KnobValue::Level);
        }
        if knob == Knob::MemoryHigh && one(c) == Ok("max") {
            return Ok(KnobValue::Bytes(None));
        }
        if !matches!(
            knob,
            Knob::MemoryMax | Knob::MemorySoftLimit | Knob::MemoryHigh
        ) {
            return Err(not_mine(knob, "v1 memory"));
        }
        one(c).and_then(|s| {
            let v: i64 = int(s, "bytes")?;
            Ok(KnobValue::Bytes(match u64::try_from(v) {
                Ok(b) if b < UNLIMITED => Some(b),
                _ => None,
            }))
        })
    }
}

/// Working set from `memory.usage_in_bytes` and `memory.stat` contents.
pub fn working_set(usage: &str, stat: &str) -> Result<u64, String> {
    let usage: u64 = int(usage, "bytes")?;
    let inactive =
        flat_key(stat, "total_inactive_file").ok_or("memory.stat has no total_inactive_file")?;
    Ok(usage.saturating_sub(inactive))
}

#[cfg(test)]
mod tests {
    #[test]
    fn working_set_leaves_out_inactive_file_cache() {
        let stat = "cache 1000\nrss 500\ntotal_inactive_file 300\ntotal_active_file 100\n";
        assert_eq!(super::working_set("2000\n", stat), Ok(1700));
        assert_eq!(super::working_set("100\n", stat), Ok(0));
        assert!(super::working_set("2000\n", "rss 1\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn working_set_never_panics(u in "\\PC{0,30}", st in "\\PC{0,120}") {
            let _ = super::working_set(&u, &st);
        }
    }
}
