//! What this node can do, as plain data the pure policy can branch on.

use crate::{CpuSet, Knob};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Knobs that have a file on this host.
    pub knobs: BTreeSet<Knob>,
    /// Per-cgroup PSI files exist.
    pub psi: bool,
    /// A whole group can be killed at once (`cgroup.kill`).
    pub group_kill: bool,
    /// v1 cpuset semantics: every group needs its own cpus/mems, parents shrink after children.
    pub cpuset_v1: bool,
    /// v1 `blkio` throttling: a group's limit holds for its own tasks only, not its children's (the
    /// kernel's flat v1 behaviour), so limits go on each workload's group.
    #[serde(default)]
    pub io_flat: bool,
    /// CPUs and memory nodes available to tidal's root.
    pub cpus: CpuSet,
    pub mems: CpuSet,
}

impl Capabilities {
    pub fn has(&self, k: Knob) -> bool {
        self.knobs.contains(&k)
    }
    /// Everything supported: for tests of the policy.
    pub fn full(n_cpus: u32) -> Self {
        Capabilities {
            knobs: Knob::ALL.into_iter().collect(),
            psi: true,
            group_kill: true,
            cpuset_v1: true,
            io_flat: false,
            cpus: CpuSet::first_n(n_cpus),
            mems: CpuSet::first_n(1),
        }
    }
}
