//! v1 `blkio` controller: the BFQ weight (present only when BFQ schedules some device) and the
//! throttle limits (`blkio.throttle.*_device`, see [`crate::iolimit`]).

use crate::iolimit;
use crate::spec::{bad, int, not_mine, one, Controller};
use tidal_model::{Knob, KnobValue};

pub const BFQ_WEIGHT: &str = "blkio.bfq.weight";

pub struct Blkio;

impl Controller for Blkio {
    fn controller(&self) -> Option<&'static str> {
        Some("blkio")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[Knob::IoWeight, Knob::IoMax]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::IoWeight => &[BFQ_WEIGHT],
            Knob::IoMax => &iolimit::V1_FILES,
            _ => &[],
        }
    }
    /// v2 scale [1, 10000] → BFQ v1 scale [1, 1000].
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::IoWeight, KnobValue::Weight(w)) => Ok(vec![(w / 10).clamp(1, 1000).to_string()]),
            (Knob::IoMax, KnobValue::IoMax(l)) => Ok(iolimit::encode_v1(l)),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        if knob == Knob::IoMax {
            return iolimit::decode_v1(c).map(KnobValue::IoMax);
        }
        if knob != Knob::IoWeight {
            return Err(not_mine(knob, "v1 blkio"));
        }
        one(c).and_then(|s| {
            // Some kernels print "default N".
            let n = s.split_whitespace().last().unwrap_or(s);
            int::<u64>(n, "weight").map(|w| KnobValue::Weight(w.saturating_mul(10)))
        })
    }
}
