//! Flat-keyed stat files (`cpu.stat`, `memory.stat`) and the CPU/memory readings tidal takes from them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Parses `key value` lines; lines that do not fit are skipped (kernels add keys over time).
pub fn parse_flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// CFS bandwidth statistics, normalised to microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttling {
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_us: u64,
}

/// v1 `cpu.stat` reports `throttled_time` in ns; v2 reports `throttled_usec`.
pub fn throttling_from(map: &BTreeMap<String, u64>) -> Option<Throttling> {
    let nr_periods = *map.get("nr_periods")?;
    let nr_throttled = *map.get("nr_throttled")?;
    let throttled_us = map
        .get("throttled_usec")
        .copied()
        .or_else(|| map.get("throttled_time").map(|ns| ns / 1000))?;
    Some(Throttling {
        nr_periods,
        nr_throttled,
        throttled_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_cpu_stat() {
        let t =
            "nr_periods 10\nnr_throttled 3\nthrottled_time 5000000\nnr_bursts 0\nburst_time 0\n";
        let th = throttling_from(&parse_flat_keyed(t)).unwrap();
        assert_eq!(
            th,
            Throttling {
                nr_periods: 10,
                nr_throttled: 3,
                throttled_us: 5000
            }
        );
    }

    #[test]
    fn v2_cpu_stat() {
        let t = "usage_usec 23027870\nuser_usec 10696102\nsystem_usec 12331767\nnice_usec 0\nnr_periods 4\nnr_throttled 1\nthrottled_usec 77\n";
        let m = parse_flat_keyed(t);
        assert_eq!(m["usage_usec"], 23_027_870);
        assert_eq!(throttling_from(&m).unwrap().throttled_us, 77);
        // The unified cpu.stat without the cpu controller has no bandwidth lines.
        assert!(throttling_from(&parse_flat_keyed("usage_usec 1\n")).is_none());
    }
}
