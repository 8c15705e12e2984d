//! v1 `cpuset` controller. A new v1 group starts with empty `cpuset.cpus`/`cpuset.mems`; a parent can
//! only shrink below a child's set after the child shrank (EBUSY otherwise).

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
