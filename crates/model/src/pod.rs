//! What the policy knows of a Kubernetes pod and of the kubelet on its node. Pods live in the
//! kubelet's cgroup tree: tidal sets values on their groups (always [`ForeignGroup`]s) and asks the
//! apiserver to evict them; it never creates, moves, kills or removes anything there.

use crate::{CpuSet, ForeignGroup};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The pod's Kubernetes QoS class (`status.qosClass`), which decides its tier group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn parse(s: &str) -> Option<QosClass> {
        match s {
            "Guaranteed" => Some(QosClass::Guaranteed),
            "Burstable" => Some(QosClass::Burstable),
            "BestEffort" => Some(QosClass::BestEffort),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A pod as the apiserver names it (what an eviction addresses).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A pod workload: its identity and what decides how tidal may act on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodInfo {
    #[serde(flatten)]
    pub pod: PodRef,
    pub qos_class: QosClass,
    /// The container groups under the pod group (the pause sandbox's included) that exist now.
    pub containers: Vec<ForeignGroup>,
    /// A container (or sidecar) has a liveness probe, or a startup probe it has not passed yet:
    /// freezing the pod would fail it and the kubelet would restart the container, so the pod is
    /// capped instead.
    pub liveness_probe: bool,
    /// The pod's tier group already has `cpu.idle=1` (set by the kubelet): the pod inherits it.
    pub tier_idle: bool,
    /// The pod-level CPU limit the kubelet set (the sum of the containers' limits when every
    /// container has one), in milli-CPUs; None: unlimited. A cap tidal lifts returns to this.
    pub cpu_limit_milli: Option<u64>,
    /// Being deleted (an eviction or deletion is under way): never chosen again.
    pub terminating: bool,
    /// A node daemon (a DaemonSet's pod, a static pod's mirror): never evicted, since it comes
    /// straight back.
    #[serde(default)]
    pub node_daemon: bool,
    /// A PodDisruptionBudget refused its eviction a moment ago: the next candidate goes first.
    #[serde(default)]
    pub eviction_refused: bool,
    /// The sum of its containers' memory requests (what protection is sized from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<u64>,
    /// The pod's IP (where a declared latency objective is fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// A latency objective the pod declares (annotations), checked against its own spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<PodSlo>,
}

/// A pod's latency objective: a histogram on a port its spec declares, fetched on the pod's own IP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodSlo {
    pub port: u16,
    pub path: String,
    pub metric: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub quantile: f64,
    /// Seconds.
    pub target: f64,
}

/// Which CPU manager policy the kubelet runs (`policyName` in its state file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuManagerPolicy {
    None,
    /// The kubelet writes container cpusets itself whenever its shared pool changes.
    Static,
}

/// Facts about the kubelet on this node, from its files and its tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeletFacts {
    /// None: the CPU manager state file could not be read (tidal then assumes `none`).
    pub cpu_manager: Option<CpuManagerPolicy>,
    /// CPUs the CPU manager gave exclusively to Guaranteed containers: offline work never runs there.
    pub exclusive_cpus: CpuSet,
}

impl KubeletFacts {
    /// Pod cpusets belong to the kubelet (static policy): confine pods by a CPU-time cap instead.
    pub fn owns_cpusets(&self) -> bool {
        self.cpu_manager == Some(CpuManagerPolicy::Static)
    }
}
