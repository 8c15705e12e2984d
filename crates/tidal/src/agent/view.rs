//! What `/state` shows: the node, every workload with its last action and why, and the last plan.

use serde::Serialize;
use std::collections::BTreeMap;
use tidal_model::{Action, Capabilities, CpuSet, GroupPath, Snapshot, WorkloadSnapshot};
use tidal_policy::{Config, PolicyState};

#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    pub at_ms: u64,
    pub action: String,
    pub reason: String,
    pub cause: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadView {
    #[serde(flatten)]
    pub snap: WorkloadSnapshot,
    /// The CPUs the workload may use (offline: the agent's confinement).
    pub allowed_cpus: Option<CpuSet>,
    pub frozen: bool,
    pub last_action: Option<ActionRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub cpus: CpuSet,
    pub busy_cpus: f64,
    pub offline_usage_cpus: f64,
    pub online_need_cpus: u32,
    pub offline_cpus: Option<CpuSet>,
    pub online_cpu_pressure: Option<f64>,
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    pub interference_step: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanView {
    pub at_ms: u64,
    pub actions: Vec<ActionRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StateView {
    pub now_ms: u64,
    pub ticks: u64,
    pub dry_run: bool,
    pub cgroup_mode: String,
    pub capabilities: Capabilities,
    pub config: Config,
    pub node: Option<NodeView>,
    pub workloads: Vec<WorkloadView>,
    pub last_plan: Option<PlanView>,
    pub policy: PolicyState,
}

/// The latest action that touched `group` or one of its ancestors (a confinement of the offline
/// parent applies to every offline workload).
pub fn last_for(
    history: &BTreeMap<GroupPath, ActionRecord>,
    group: &GroupPath,
) -> Option<ActionRecord> {
    let mut best: Option<&ActionRecord> = None;
    let mut cur = Some(group.clone());
    while let Some(g) = cur {
        if let Some(r) = history.get(&g) {
            if best.is_none_or(|b| r.at_ms > b.at_ms) {
                best = Some(r);
            }
        }
        cur = g.parent();
    }
    best.cloned()
}

pub fn record(a: &Action, at_ms: u64, outcome: &str) -> ActionRecord {
    ActionRecord {
        at_ms,
        action: a.to_string(),
        reason: a.reason.clone(),
        cause: a.cause.clone(),
        outcome: outcome.to_string(),
    }
}

pub fn node_view(s: &Snapshot, p: &PolicyState) -> NodeView {
    NodeView {
        cpus: s.cpus.clone(),
        busy_cpus: s.node_busy_cpus,
        offline_usage_cpus: s.offline_usage_cpus,
        online_need_cpus: p.online_need,
        offline_cpus: p.offline_cpus.clone(),
        online_cpu_pressure: s.online_cpu_psi,
        mem_total_bytes: s.mem_total_bytes,
        mem_available_bytes: s.mem_available_bytes,
        interference_step: p.tighten,
    }
}
