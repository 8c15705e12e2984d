//! v2 `cpuset` controller. An empty `cpuset.cpus` means "inherit the parent's".

use crate::knobs::{cpus_decode, cpus_encode, KnobSpec};
use tidal_model::{Knob, KnobValue};

pub fn spec(knob: Knob) -> Option<KnobSpec> {
    let files: &'static [&'static str] = match knob {
        Knob::CpusetCpus => &["cpuset.cpus"],
        Knob::CpusetMems => &["cpuset.mems"],
        _ => return None,
    };
    Some(KnobSpec {
        controller: Some("cpuset"),
        files,
    })
}

pub fn encode(knob: Knob, v: &KnobValue) -> Option<Result<Vec<String>, String>> {
    spec(knob)?;
    Some(cpus_encode(knob, v))
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(cpus_decode(c))
}
