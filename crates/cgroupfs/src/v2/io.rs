//! v2 `io` controller: `io.weight` ("default N" plus optional per-device lines).

use crate::knobs::{bad, int, one, KnobSpec};
use tidal_model::{Knob, KnobValue};

pub fn spec(knob: Knob) -> Option<KnobSpec> {
    match knob {
        Knob::IoWeight => Some(KnobSpec {
            controller: Some("io"),
            files: &["io.weight"],
        }),
        _ => None,
    }
}

pub fn encode(knob: Knob, v: &KnobValue) -> Option<Result<Vec<String>, String>> {
    spec(knob)?;
    Some(match v {
        KnobValue::Weight(w) => Ok(vec![format!("default {}", (*w).clamp(1, 10_000))]),
        _ => Err(bad(knob, v)),
    })
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(one(c).and_then(|s| {
        let line = s
            .lines()
            .find(|l| l.starts_with("default"))
            .unwrap_or(s)
            .trim();
        let n = line.split_whitespace().last().unwrap_or(line);
        int(n, "weight").map(KnobValue::Weight)
    }))
}
