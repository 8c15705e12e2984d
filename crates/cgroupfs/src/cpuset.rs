//! The `cpuset` controller, the same files and format on v1 and v2. On v1 a new group starts with
//! empty `cpuset.cpus`/`cpuset.mems` and refuses tasks until both are set, and a parent can only shrink
//! below a child's set after the child shrank (EBUSY otherwise). On v2 an empty `cpuset.cpus` means
//! "inherit the parent's".

use crate::spec::{bad, cpus_decode, not_mine, Controller};
use tidal_model::{Knob, KnobValue};

pub const CPUS: &str = "cpuset.cpus";
pub const MEMS: &str = "cpuset.mems";
/// The CPUs a group may really use (v1 and v2 name them differently).
pub const V1_EFFECTIVE_CPUS: &str = "cpuset.effective_cpus";
pub const V1_EFFECTIVE_MEMS: &str = "cpuset.effective_mems";
pub const V2_EFFECTIVE_CPUS: &str = "cpuset.cpus.effective";
pub const V2_EFFECTIVE_MEMS: &str = "cpuset.mems.effective";

pub struct Cpuset;

impl Controller for Cpuset {
    fn controller(&self) -> Option<&'static str> {
        Some("cpuset")
    }
    fn knobs(&self) -> &'static [Knob] {
        &[Knob::CpusetCpus, Knob::CpusetMems]
    }
    fn files(&self, knob: Knob) -> &'static [&'static str] {
        match knob {
            Knob::CpusetCpus => &[CPUS],
            Knob::CpusetMems => &[MEMS],
            _ => &[],
        }
    }
    fn encode(&self, knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
        match (knob, v) {
            (Knob::CpusetCpus | Knob::CpusetMems, KnobValue::Cpus(c)) => Ok(vec![c.to_string()]),
            _ => Err(bad(knob, v)),
        }
    }
    fn decode(&self, knob: Knob, c: &[String]) -> Result<KnobValue, String> {
        match knob {
            Knob::CpusetCpus | Knob::CpusetMems => cpus_decode(c),
            _ => Err(not_mine(knob, "cpuset")),
        }
    }
}
