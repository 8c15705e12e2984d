//! v2 `io` controller: `io.weight` ("default N" plus optional per-device lines) and `io.max`
//! (per-device limits, see [`crate::iolimit`]).

use crate::iolimit;
use crate::spec::{bad, int, not_mine, one, Controller};
use tidal_model::{Knob, KnobValue};

pub const WEIGHT: &str = "io.weight";

pub struct Io;

impl Controller for Io {
    fn controller(&self) -> Option<&'static str> {
        Some("io")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[Knob::IoWeight, Knob::IoMax]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::IoWeight => &[WEIGHT],
            Knob::IoMax => &[iolimit::V2_MAX],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::IoWeight, KnobValue::Weight(w)) => {
                Ok(vec![format!("default {}", (*w).clamp(1, 10_000))])
            }
            (Knob::IoMax, KnobValue::IoMax(l)) => Ok(vec![iolimit::encode_v2(l)]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        if knob == Knob::IoMax {
            return iolimit::decode_v2(c.first().map_or("", |s| s.as_str())).map(KnobValue::IoMax);
        }
        if knob != Knob::IoWeight {
            return Err(not_mine(knob, "v2 io"));
        }
        one(c).and_then(|s| {
            let line = s
                .lines()
                .find(|l| l.starts_with("default"))
                .unwrap_or(s)
                .trim();
            let n = line.split_whitespace().last().unwrap_or(line);
            int(n, "weight").map(KnobValue::Weight)
        })
    }
}
