//! v1 `cpuset` controller. A new v1 group starts with empty `cpuset.cpus`/`cpuset.mems`; a parent can
//! only shrink below a child's set after the child shrank (EBUSY otherwise).

use crate::knobs::{bad, one, KnobSpec};
use tidal_model::{CpuSet, Knob, KnobValue};

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
    Some(match v {
        KnobValue::Cpus(c) => Ok(vec![c.to_string()]),
        _ => Err(bad(knob, v)),
    })
}

pub fn decode(knob: Knob, c: &[String]) -> Option<Result<KnobValue, String>> {
    spec(knob)?;
    Some(one(c).and_then(|s| {
        s.parse::<CpuSet>()
            .map(KnobValue::Cpus)
            .map_err(|e| e.to_string())
    }))
}
