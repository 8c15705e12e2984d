//! v2 `memory` controller: `memory.max`, `memory.high`, `memory.low`, `memory.min` ("max" = unlimited).

use crate::knobs::{bad, int, one, KnobSpec};
use tidal_model::{Knob, KnobValue};

pub fn spec(knob: Knob) -> Option<KnobSpec> {
    let files: &'static [&'static str] = match knob {
        Knob::MemoryMax => &["memory.max"],
        Knob::MemoryHigh => &["memory.high"],
        Knob::MemoryLow => &["memory.low"],
        Knob::MemoryMin => &["memory.min"],
        _ => return None,
    };
    Some(KnobSpec {
        controller: Some("memory"),
        files,
    })
}

pub fn encode(knob: Knob, v: &KnobValue) -> Option<Result<Vec<String>, String>> {
    spec(knob)?;
    Some(match v {
        KnobValue::Bytes(Some(b)) => Ok(vec![b.to_string()]),
        KnobValue::Bytes(None) => Ok(vec!["max".to_string()]),
        _ => Err(bad(knob, v)),
    })
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(one(c).and_then(|s| {
        if s == "max" {
            Ok(KnobValue::Bytes(None))
        } else {
            int(s, "bytes or 'max'").map(|b| KnobValue::Bytes(Some(b)))
        }
    }))
}
