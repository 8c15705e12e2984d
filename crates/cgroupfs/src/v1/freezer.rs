//! v1 `freezer` controller: `freezer.state` (THAWED / FREEZING / FROZEN; a group whose parent is
//! frozen reads FROZEN too), and `freezer.self_freezing` (1: frozen by its own state).

use crate::spec::{bad, not_mine, one, Controller};
use tidal_model::{Knob, KnobValue};

pub const STATE: &str = "freezer.state";
pub const SELF_FREEZING: &str = "freezer.self_freezing";

pub struct Freezer;

impl Controller for Freezer {
    fn controller(&self) -> Option<&'static str> {
        Some("freezer")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[Knob::Freeze]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::Freeze => &[STATE],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::Freeze, KnobValue::Bool(true)) => Ok(vec!["FROZEN".to_string()]),
            (Knob::Freeze, KnobValue::Bool(false)) => Ok(vec!["THAWED".to_string()]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        if knob != Knob::Freeze {
            return Err(not_mine(knob, "v1 freezer"));
        }
        one(c).and_then(|s| match s {
            "THAWED" => Ok(KnobValue::Bool(false)),
            // FREEZING is on its way to FROZEN: wanting it frozen again is a no-op.
            "FROZEN" | "FREEZING" => Ok(KnobValue::Bool(true)),
            o => Err(format!("unknown freezer state '{o}'")),
        })
    }
}
