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

/// One key of a flat-keyed file, as [`parse_flat_keyed`] would give it, without building the map
/// (read per workload every tick).
pub fn flat_key(text: &str, key: &str) -> Option<u64> {
    text.lines().rev().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next()? != key {
            return None;
        }
        it.next()?.parse().ok()
    })
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

        #[test]
        fn one_key_reads_as_the_map_has_it(
            lines in proptest::collection::vec(("[abc]{1,2}", "[0-9x]{0,3}", " ?[a-z0-9]{0,2}"), 0..12),
            k in "[abc]{1,2}",
        ) {
            let t: String = lines.iter().map(|(a, b, c)| format!("{a} {b}{c}\n")).collect();
            prop_assert_eq!(flat_key(&t, &k), parse_flat_keyed(&t).get(&k).copied());
        }
    }
}
