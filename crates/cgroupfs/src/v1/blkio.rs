//! v1 `blkio` controller: the BFQ weight (present only when BFQ schedules some device).

use crate::knobs::{bad, int, one, KnobSpec};
use tidal_model::{Knob, KnobValue};

pub fn spec(knob: Knob) -> Option<KnobSpec> {
    match knob {
        Knob::IoWeight => Some(KnobSpec {
            controller: Some("blkio"),
            files: &["blkio.bfq.weight"],
        }),
        _ => None,
    }
}

/// v2 scale [1, 10000] → BFQ v1 scale [1, 1000].
pub fn encode(knob: Knob, v: &KnobValue) -> Option<Result<Vec<String>, String>> {
    spec(knob)?;
    Some(match v {
        KnobValue::Weight(w) => Ok(vec![(w / 10).clamp(1, 1000).to_string()]),
        _ => Err(bad(knob, v)),
    })
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(one(c).and_then(|s| {
        // Some kernels print "default N".
        let n = s.split_whitespace().last().unwrap_or(s);
        int::<u64>(n, "weight").map(|w| KnobValue::Weight(w * 10))
    }))
}
