//! What `/state` shows, typed both ways: the node, every workload with its last action and why, the
//! last plan, the policy state. `tidal status` and the tests read it back through these types, and
//! `tidal apply --plan` takes the `last_plan` object as it is.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use tidal_model::{
    Action, Capabilities, CpuSet, Plan, QosLevel, Remember, Snapshot, Target, WorkloadSnapshot,
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

/// Workloads' tasks the kernel's OOM killer took, and workloads tidal evicted or stopped, by
/// level, since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub oom_kills: BTreeMap<QosLevel, u64>,
    pub evictions: BTreeMap<QosLevel, u64>,
    /// Each workload's OOM-kill count as last read: kills count from a change.
    #[serde(skip)]
    seen: HashMap<Target, u64>,
    #[serde(skip)]
    started: bool,
}

impl Tally {
    /// Adds the OOM kills read since the last call. Kills before the agent's first reading are not
    /// counted; a workload that appears later counts from zero. A count that went down (a group
    /// made again) starts over.
    pub fn oom(&mut self, workloads: &[WorkloadSnapshot]) {
        let first = !std::mem::replace(&mut self.started, true);
        let mut seen = HashMap::with_capacity(workloads.len());
        for w in workloads {
            let Some(n) = w.oom_kills else {
                if let Some(p) = self.seen.get(&w.group) {
                    seen.insert(w.group.clone(), *p);
                }
                continue;
            };
            let before = match self.seen.get(&w.group) {
                Some(p) => *p,
                None if first => n,
                None => 0,
            };
            if n > before {
                *self.oom_kills.entry(w.level).or_default() += n - before;
            }
            seen.insert(w.group.clone(), n);
        }
        self.seen = seen;
    }

    /// One workload evicted or stopped by tidal.
    pub fn evicted(&mut self, level: QosLevel) {
        *self.evictions.entry(level).or_default() += 1;
    }
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
    /// OOM kills and tidal's evictions by level since the agent started.
    #[serde(default)]
    pub tally: Tally,
    /// Whether the level IO weights act here, and through what (BFQ, blk-iocost).
    #[serde(default)]
    pub io_weights: Option<IoWeights>,
    /// Pod mode: the kubelet's tiers that lack the memory protection online pods' needs (its
    /// MemoryQoS gate sets it); empty when they have it or it cannot be read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unprotected_tiers: Vec<String>,
}

/// Whether the level IO weights act, and how (as `tidal doctor` says it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoWeights {
    pub in_force: bool,
    pub detail: String,
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

#[cfg(test)]
mod tally_tests {
    use super::*;
    use tidal_model::GroupPath;

    fn w(group: &str, level: QosLevel, kills: Option<u64>) -> WorkloadSnapshot {
        WorkloadSnapshot {
            oom_kills: kills,
            ..WorkloadSnapshot::unread(Target::Tidal(GroupPath::new(group).unwrap()), level, group)
        }
    }

    #[test]
    fn oom_kills_count_from_the_agents_first_reading_by_level() {
        let mut t = Tally::default();
        // Kills before the agent started are not its to report.
        t.oom(&[w("offline/offline/a", QosLevel::Offline, Some(3))]);
        assert!(t.oom_kills.is_empty());
        t.oom(&[
            w("offline/offline/a", QosLevel::Offline, Some(5)),
            // New after the start: every kill counts.
            w("online/b", QosLevel::Online, Some(1)),
        ]);
        assert_eq!(t.oom_kills.get(&QosLevel::Offline), Some(&2));
        assert_eq!(t.oom_kills.get(&QosLevel::Online), Some(&1));
        // A reading missing keeps the last count; a group made again starts over.
        t.oom(&[
            w("offline/offline/a", QosLevel::Offline, None),
            w("online/b", QosLevel::Online, Some(0)),
        ]);
        t.oom(&[
            w("offline/offline/a", QosLevel::Offline, Some(6)),
            w("online/b", QosLevel::Online, Some(2)),
        ]);
        assert_eq!(t.oom_kills.get(&QosLevel::Offline), Some(&3));
        assert_eq!(t.oom_kills.get(&QosLevel::Online), Some(&3));
        t.evicted(QosLevel::OfflineLow);
        t.evicted(QosLevel::OfflineLow);
        assert_eq!(t.evictions.get(&QosLevel::OfflineLow), Some(&2));
    }
}
