//! v1 `memory` controller: only the hard limit has a v1 equivalent.

use crate::knobs::{bad, int, one, KnobSpec};
use tidal_model::{Knob, KnobValue};

/// v1 reports "unlimited" as the largest page-aligned i64.
pub const UNLIMITED: u64 = 9_223_372_036_854_771_712;

pub fn spec(knob: Knob) -> Option<KnobSpec> {
    match knob {
        Knob::MemoryMax => Some(KnobSpec {
            controller: Some("memory"),
            files: &["memory.limit_in_bytes"],
        }),
        _ => None,
    }
}

pub fn encode(knob: Knob, v: &KnobValue) -> Option<Result<Vec<String>, String>> {
    spec(knob)?;
    Some(match v {
        KnobValue::Bytes(Some(b)) => Ok(vec![b.to_string()]),
        KnobValue::Bytes(None) => Ok(vec!["-1".to_string()]),
        _ => Err(bad(knob, v)),
    })
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(one(c).and_then(|s| {
        let v: i64 = int(s, "bytes")?;
        Ok(KnobValue::Bytes(match u64::try_from(v) {
            Ok(b) if b < UNLIMITED => Some(b),
            _ => None,
        }))
    }))
}
