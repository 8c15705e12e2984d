//! Flat-keyed stat files (`cpu.stat`, `memory.stat`): `key value` per line. The per-version meaning of
//! each key lives with its controller (`v1::cpu`, `v2::cpu`, `v1::memory`, `v2::memory`).

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn skips_lines_that_do_not_fit() {
        let m = parse_flat_keyed("a 1\nb x\n\nc 3 extra\nd\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m["c"], 3);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(t in "\\PC{0,200}") {
            let _ = parse_flat_keyed(&t);
        }
    }
}
