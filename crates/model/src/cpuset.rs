//! CPU/memory-node lists in the kernel's list format (`0-3,6`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CpuSet(BTreeSet<u32>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cpu list '{0}'")]
pub struct BadCpuList(pub String);

/// Most ids a list may hold (the kernel's NR_CPUS tops out far below).
const MAX_IDS: usize = 65_536;

impl CpuSet {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn from_ids(ids: impl IntoIterator<Item = u32>) -> Self {
        CpuSet(ids.into_iter().collect())
    }
    /// CPUs `0..n`.
    pub fn first_n(n: u32) -> Self {
        CpuSet((0..n).collect())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Adds `other`'s CPUs to this set.
    pub fn union_with(&mut self, other: &CpuSet) {
        self.0.extend(other.0.iter().copied());
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }
    /// The `n` highest CPUs of the set.
    pub fn last_n(&self, n: usize) -> CpuSet {
        CpuSet(self.0.iter().rev().take(n).copied().collect())
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut it = self.0.iter().copied().peekable();
        while let Some(start) = it.next() {
            let mut end = start;
            while let Some(next) = end.checked_add(1).filter(|n| it.peek() == Some(n)) {
                end = next;
                it.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CpuSet {
    type Err = BadCpuList;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCpuList(s.chars().take(200).collect());
        let mut set = BTreeSet::new();
        for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: u32 = a.trim().parse().map_err(|_| bad())?;
                    let b: u32 = b.trim().parse().map_err(|_| bad())?;
                    if b < a || b - a > 65_536 {
                        return Err(bad());
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(part.parse().map_err(|_| bad())?);
                }
            }
            // No machine has more CPUs than this: a longer list is not a CPU list.
            if set.len() > MAX_IDS {
                return Err(bad());
            }
        }
        Ok(CpuSet(set))
    }
}

impl From<CpuSet> for String {
    fn from(c: CpuSet) -> String {
        c.to_string()
    }
}

impl TryFrom<String> for CpuSet {
    type Error = BadCpuList;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_kernel_format() {
        let c: CpuSet = "0-2,5,7-8\n".parse().unwrap();
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![0, 1, 2, 5, 7, 8]);
        assert_eq!(c.to_string(), "0-2,5,7-8");
        assert!("".parse::<CpuSet>().unwrap().is_empty());
        assert!("3-1".parse::<CpuSet>().is_err());
        // A range too wide to be CPUs is refused, not allocated.
        assert!("0-4294967295".parse::<CpuSet>().is_err());
        assert!("x".parse::<CpuSet>().is_err());
    }

    proptest! {
        #[test]
        fn any_text_parses_or_names_itself(t in "\\PC{0,60}") {
            match t.parse::<CpuSet>() {
                Ok(c) => prop_assert!(c.len() <= MAX_IDS),
                Err(e) => prop_assert!(e.to_string().contains(&t)),
            }
        }

        #[test]
        fn display_parse_round_trip(ids in proptest::collection::btree_set(0u32..256, 0..40)) {
            let c = CpuSet(ids);
            prop_assert_eq!(c.to_string().parse::<CpuSet>().unwrap(), c);
        }

        /// Ids at the top of the range too (a list that ends at u32::MAX).
        #[test]
        fn display_parse_round_trip_at_the_top(ids in proptest::collection::btree_set(u32::MAX - 300..=u32::MAX, 0..40)) {
            let c = CpuSet(ids);
            prop_assert_eq!(c.to_string().parse::<CpuSet>().unwrap(), c);
        }
    }
}
