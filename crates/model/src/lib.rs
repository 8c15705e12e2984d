//! The vocabulary every stage of tidal shares: QoS levels, semantic cgroup knobs and their typed values,
//! CPU sets, and the plan that the pure policy hands to the actuator. No IO lives here.

pub mod caps;
pub mod cpuset;
pub mod knob;
pub mod level;
pub mod path;
pub mod plan;
pub mod pod;
pub mod signal;
pub mod snapshot;

pub use caps::Capabilities;
pub use cpuset::CpuSet;
pub use knob::{canonical_io_limits, DevNum, IoLimit, Knob, KnobValue};
pub use level::{QosLevel, UnknownLevel};
pub use path::{BadPath, ForeignGroup, GroupPath, Target};
pub use plan::{Action, Cause, Op, Plan, Remember};
pub use pod::{CpuManagerPolicy, KubeletFacts, PodInfo, PodRef, PodSlo, QosClass};
pub use signal::{Signal, SignalKind};
pub use snapshot::{Pressure, Snapshot, WorkloadPressure, WorkloadSnapshot};
