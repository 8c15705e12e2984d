//! What `/state` shows, typed both ways: the node, every workload with its last action and why, the
//! last plan, the policy state. `tidal status` and the tests read it back through these types, and
//! `tidal apply --plan` takes the `last_plan` object as it is.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tidal_model::{
    Action, Capabilities, CpuSet, Plan, Remember, Snapshot, Target, WorkloadSnapshot,
};
use tidal_policy::{Config, PolicyState};

/// One action the agent applied, with when and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub at_ms: u64,
    /// The action as one line of text (`set offline cpuset-cpus=[1] (…)`).
    pub text: String,
    #[serde(flatten)]
    pub action: Action,
    /// `written`, `unchanged`, `unsupported`, … or `error: …`.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadView {
    #[serde(flatten)]
    pub snap: WorkloadSnapshot,
    /// The CPUs the workload may use (offline: the agent's confinement).
    pub allowed_cpus: Option<CpuSet>,
    pub frozen: bool,
    pub last_action: Option<ActionRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub cpus: CpuSet,
    pub busy_cpus: Option<f64>,
    pub offline_usage_cpus: Option<f64>,
    pub online_need_cpus: u32,
    pub offline_cpus: Option<CpuSet>,
    pub online_cpu_pressure: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    /// Tightening steps in force (0 none).
    pub interference_step: u8,
}

/// The last plan the agent applied: exactly a [`Plan`] (so `tidal apply --plan` takes it), with when
/// and each action's outcome alongside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanView {
    #[serde(default)]
    pub at_ms: u64,
    pub actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remember: Vec<Remember>,
    #[serde(default)]
    pub outcomes: Vec<String>,
}

impl PlanView {
    pub fn plan(&self) -> Plan {
        Plan {
            actions: self.actions.clone(),
            remember: self.remember.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateView {
    pub now_ms: u64,
    pub ticks: u64,
    pub dry_run: bool,
    pub cgroup_mode: String,
    /// Where workloads come from (`local`, `kubernetes`).
    pub source: String,
    pub capabilities: Capabilities,
    pub config: Config,
    pub node: Option<NodeView>,
    pub workloads: Vec<WorkloadView>,
    pub last_plan: Option<PlanView>,
    pub policy: PolicyState,
    /// Readings that failed since start, by kind.
    #[serde(default)]
    pub missing_readings: BTreeMap<String, u64>,
    /// The workload source's state (Kubernetes: the watch, batch resources with their formula).
    #[serde(default)]
    pub source_health: tidal_source::SourceHealth,
    /// Every latency objective's last reading.
    #[serde(default)]
    pub slo: Vec<super::slo::Reading>,
    /// Online workloads' run-queue p99 over the last tick that had waits, in µs (eBPF).
    #[serde(default)]
    pub runq_p99_us: BTreeMap<String, f64>,
    /// Why run-queue latency is not measured (None: it is).
    #[serde(default)]
    pub runq: Option<String>,
}

/// The latest action that touched `group` or one of its ancestors (a confinement of the offline
/// parent applies to every offline workload). An action with a reason beyond the static settings
/// (confinement, interference, memory) is preferred over a later static re-application: it says
/// why the workload is where it is.
pub fn last_for(
    history: &BTreeMap<(Target, bool), ActionRecord>,
    group: &Target,
) -> Option<ActionRecord> {
    let mut targets = vec![group.clone()];
    if let Target::Tidal(g) = group {
        let mut cur = g.parent();
        while let Some(p) = cur {
            targets.push(Target::Tidal(p.clone()));
            cur = p.parent();
        }
    }
    let seen: Vec<&ActionRecord> = targets
        .into_iter()
        .flat_map(|t| [history.get(&(t.clone(), false)), history.get(&(t, true))])
        .flatten()
        .collect();
    seen.iter()
        .filter(|r| r.action.cause != tidal_model::Cause::Static)
        .max_by_key(|r| r.at_ms)
        .or_else(|| seen.iter().max_by_key(|r| r.at_ms))
        .map(|r| (*r).clone())
}

pub fn record(a: &Action, at_ms: u64, outcome: &str) -> ActionRecord {
    ActionRecord {
        at_ms,
        text: a.to_string(),
        action: a.clone(),
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
        interference_step: p.interference.level(),
    }
}
