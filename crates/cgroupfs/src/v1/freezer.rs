//! v1 `freezer` controller: `freezer.state` (THAWED / FREEZING / FROZEN).

use crate::knobs::{bad, one, KnobSpec};
use tidal_model::{Knob, KnobValue};

pub fn spec(knob: Knob) -> Option<KnobSpec> {
    match knob {
        Knob::Freeze => Some(KnobSpec {
            controller: Some("freezer"),
            files: &["freezer.state"],
        }),
        _ => None,
    }
}

pub fn encode(knob: Knob, v: &KnobValue) -> Option<Result<Vec<String>, String>> {
    spec(knob)?;
    Some(match v {
        KnobValue::Bool(true) => Ok(vec!["FROZEN".to_string()]),
        KnobValue::Bool(false) => Ok(vec!["THAWED".to_string()]),
        _ => Err(bad(knob, v)),
    })
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(one(c).and_then(|s| match s {
        "THAWED" => Ok(KnobValue::Bool(false)),
        // FREEZING is on its way to FROZEN: wanting it frozen again is a no-op.
        "FROZEN" | "FREEZING" => Ok(KnobValue::Bool(true)),
        o => Err(format!("unknown freezer state '{o}'")),
    }))
}
