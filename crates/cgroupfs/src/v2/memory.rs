//! v2 `memory` controller: `memory.max`, `memory.high`, `memory.low`, `memory.min` ("max" =
//! unlimited), and the working set as the kubelet counts it: `memory.current` less `inactive_file`.

use crate::spec::{bad, int, not_mine, one, page_floor, Controller};
use crate::stat::flat_key;
use tidal_model::{Knob, KnobValue};

pub const MAX: &str = "memory.max";
pub const HIGH: &str = "memory.high";
pub const LOW: &str = "memory.low";
pub const MIN: &str = "memory.min";
pub const CURRENT: &str = "memory.current";
pub const STAT: &str = "memory.stat";

pub struct Memory;

impl Controller for Memory {
    fn controller(&self) -> Option<&'static str> {
        Some("memory")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[
            Knob::MemoryMax,
            Knob::MemoryHigh,
            Knob::MemoryLow,
            Knob::MemoryMin,
        ]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::MemoryMax => &[MAX],
            Knob::MemoryHigh => &[HIGH],
            Knob::MemoryLow => &[LOW],
            Knob::MemoryMin => &[MIN],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        if self.files(knob).is_empty() {
            return Err(not_mine(knob, "v2 memory"));
        }
        match v {
            KnobValue::Bytes(Some(b)) => Ok(vec![page_floor(*b).to_string()]),
            KnobValue::Bytes(None) => Ok(vec!["max".to_string()]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        if self.files(knob).is_empty() {
            return Err(not_mine(knob, "v2 memory"));
        }
        one(c).and_then(|s| {
            if s == "max" {
                Ok(KnobValue::Bytes(None))
            } else {
                int(s, "bytes or 'max'").map(|b| KnobValue::Bytes(Some(b)))
            }
        })
    }
}

/// Working set from `memory.current` and `memory.stat` contents.
pub fn working_set(current: &str, stat: &str) -> Result<u64, String> {
    let current: u64 = int(current, "bytes")?;
    let inactive = flat_key(stat, "inactive_file").ok_or("memory.stat has no inactive_file")?;
    Ok(current.saturating_sub(inactive))
}

#[cfg(test)]
mod tests {
    #[test]
    fn working_set_leaves_out_inactive_file_cache() {
        let stat = "anon 4096\nfile 8192\nactive_file 4096\ninactive_file 4096\n";
        assert_eq!(super::working_set("12288\n", stat), Ok(8192));
        assert!(super::working_set("x", stat).is_err());
    }
}
