//! A snapshot: what the node and each workload looked like at one instant, as plain data. The
//! snapshot stage fills it; the pure policy reads it. Time is in it as data (`now_ms`). A reading that
//! could not be taken is `None`, never 0: the policy then holds its last decision for that input.

use crate::{CpuSet, DevNum, KubeletFacts, PodInfo, QosLevel, Signal, Target};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// `some`/`full` avg10 of one resource, in percent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    pub some_avg10: f64,
    /// None where the kernel has no `full` line (cpu before 5.13).
    pub full_avg10: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadPressure {
    pub cpu: Option<Pressure>,
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSnapshot {
    /// Where the workload's group is: under the tidal root, or in another manager's tree.
    pub group: Target,
    pub level: QosLevel,
    pub name: String,
    /// Tidal may create, move into, freeze, kill and remove this workload's groups (local workloads).
    /// Pods live in the kubelet's tree: tidal only sets values there.
    #[serde(default = "yes")]
    pub managed: bool,
    /// Tasks in the group (None: the count could not be read).
    pub procs: Option<usize>,
    /// CPUs used over the last stats window.
    pub cpu_usage_cpus: Option<f64>,
    /// Working set (usage less inactive file cache, as the kubelet counts it).
    pub memory_bytes: Option<u64>,
    pub pressure: WorkloadPressure,
    pub nr_throttled: Option<u64>,
    pub throttled_us: Option<u64>,
    /// The pod, for a workload that is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
    /// The group's `cpuset.cpus` as last read (pods only: tidal orders v1 cpuset writes by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<CpuSet>,
    /// The declared memory request (`tidal run --memory-request`, a pod's requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<u64>,
    /// Open file descriptors of all its tasks (full readings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// Tasks of its tree killed by an OOM killer since its group was made (full readings only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
}

fn yes() -> bool {
    true
}

impl WorkloadSnapshot {
    /// A workload with nothing read yet: every reading missing, not managed.
    pub fn unread(group: Target, level: QosLevel, name: impl Into<String>) -> WorkloadSnapshot {
        WorkloadSnapshot {
            group,
            level,
            name: name.into(),
            managed: false,
            procs: None,
            cpu_usage_cpus: None,
            memory_bytes: None,
            pressure: WorkloadPressure::default(),
            nr_throttled: None,
            throttled_us: None,
            pod: None,
            cpuset: None,
            memory_request: None,
            open_files: None,
            oom_kills: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Monotonic milliseconds.
    pub now_ms: u64,
    /// CPUs available to tidal's root.
    pub cpus: CpuSet,
    /// Busy CPUs on the node over the last tick window, and over the last short sample.
    pub node_busy_cpus: Option<f64>,
    pub node_busy_short_cpus: Option<f64>,
    /// CPUs used by all offline work over the same windows.
    pub offline_usage_cpus: Option<f64>,
    pub offline_usage_short_cpus: Option<f64>,
    /// Highest `cpu.pressure` some avg10 among the online level groups.
    pub online_cpu_psi: Option<f64>,
    /// Highest `cpu.pressure` full avg10 among the online level groups: time when every online task
    /// of a level waited at once (no online task ran), so online's own queueing does not count.
    #[serde(default)]
    pub online_cpu_psi_full: Option<f64>,
    /// The same two lines over about the last second (from the `total` counters): percent of time.
    #[serde(default)]
    pub online_cpu_psi_1s: Option<f64>,
    #[serde(default)]
    pub online_cpu_psi_full_1s: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    /// Level groups that exist under the tidal root.
    pub levels_present: BTreeSet<QosLevel>,
    pub workloads: Vec<WorkloadSnapshot>,
    /// Which reading of the workload list `workloads` is (the collector counts them): the same
    /// number, the same list and readings. None where the reader does not count (every tick is
    /// then taken as a new reading).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads_seq: Option<u64>,
    /// The kubelet's facts, when pods are the workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<KubeletFacts>,
    /// The offline parent's working set (its memory ceiling is judged against it).
    #[serde(default)]
    pub offline_memory_bytes: Option<u64>,
    /// Highest `memory.pressure` some avg10 among online groups (levels and pods).
    #[serde(default)]
    pub online_mem_psi: Option<f64>,
    /// Fresh readings of the signals beside PSI (latency objectives, run-queue latency). A stale
    /// or unreachable source has no reading here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<Signal>,
    /// Pages the kernel scanned for reclaim per second (kswapd and direct), over about the last
    /// stats interval: the node is short of free memory and taking pages from whoever has them.
    #[serde(default)]
    pub reclaim_scan_per_s: Option<f64>,
    /// The node's real block devices (what IO limits apply to unless the config names devices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub block_devices: Vec<DevNum>,
}

impl Snapshot {
    /// The CPUs offline work may use: every CPU but those the kubelet gave exclusively to
    /// Guaranteed containers.
    pub fn offline_pool(&self) -> CpuSet {
        match &self.kubelet {
            Some(k) if !k.exclusive_cpus.is_empty() => {
                let pool = self.cpus.difference(&k.exclusive_cpus);
                // Never nothing: a state file that claims every CPU leaves offline the last one.
                if pool.is_empty() {
                    self.cpus.last_n(1)
                } else {
                    pool
                }
            }
            _ => self.cpus.clone(),
        }
    }
    /// CPUs used by everything that is not offline (tidal's online levels, and unmanaged processes,
    /// which tidal protects as if online). None when either counter is missing.
    pub fn protected_usage(&self) -> Option<f64> {
        Some((self.node_busy_cpus? - self.offline_usage_cpus?).max(0.0))
    }
    pub fn protected_usage_short(&self) -> Option<f64> {
        Some((self.node_busy_short_cpus? - self.offline_usage_short_cpus?).max(0.0))
    }
}
