//! v2 `io` controller: `io.weight` (blk-iocost's; "default N" plus optional per-device lines),
//! `io.bfq.weight` (BFQ's, [1, 1000]; read as "default N" plus per-device lines, written as a bare
//! number, which kernels before 5.4 require; present only while BFQ is in the kernel) and
//! `io.max` (per-device limits, see [`crate::iolimit`]).

use crate::iolimit;
use crate::spec::{bad, int, not_mine, one, Controller};
use tidal_model::{Knob, KnobValue};

pub const WEIGHT: &str = "io.weight";
pub const BFQ_WEIGHT: &str = "io.bfq.weight";

pub struct Io;

impl Controller for Io {
    fn controller(&self) -> Option<&'static str> {
        Some("io")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[Knob::IoWeight, Knob::IoBfqWeight, Knob::IoMax]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::IoWeight => &[WEIGHT],
            Knob::IoBfqWeight => &[BFQ_WEIGHT],
            Knob::IoMax => &[iolimit::V2_MAX],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::IoWeight, KnobValue::Weight(w)) => {
                Ok(vec![format!("default {}", (*w).clamp(1, 10_000))])
            }
            // v2 scale [1, 10000] → BFQ's [1, 1000].
            (Knob::IoBfqWeight, KnobValue::Weight(w)) => {
                Ok(vec![(w / 10).clamp(1, 1000).to_string()])
            }
            (Knob::IoMax, KnobValue::IoMax(l)) => Ok(vec![iolimit::encode_v2(l)]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        if knob == Knob::IoMax {
            return iolimit::decode_v2(c.first().map_or("", |s| s.as_str())).map(KnobValue::IoMax);
        }
        let scale = match knob {
            Knob::IoWeight => 1,
            Knob::IoBfqWeight => 10,
            _ => return Err(not_mine(knob, "v2 io")),
        };
        one(c).and_then(|s| {
            let line = s
                .lines()
                .find(|l| l.starts_with("default"))
                .unwrap_or(s)
                .trim();
            let n = line.split_whitespace().last().unwrap_or(line);
            int::<u64>(n, "weight").map(|w| KnobValue::Weight(w.saturating_mul(scale)))
        })
    }
}
