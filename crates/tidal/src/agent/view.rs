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

/// How long a workload's last OOM-kill count is kept after it was last read: one that drops out of
/// a reading and comes back is not counted twice.
const SEEN_KEEP_MS: u64 = 600_000;

/// By level, since the agent started: tasks the kernel's OOM killer took from workloads, local
/// workloads tidal killed for memory, and pods it asked the Eviction API to evict.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    /// None until some workload's count could be read (a v1 kernel before 4.13 has none).
    pub oom_kills: Option<BTreeMap<QosLevel, u64>>,
    /// Local workloads killed (their group was empty after).
    pub evictions: BTreeMap<QosLevel, u64>,
    /// Pods whose eviction was requested (the API may refuse one: a disruption budget).
    #[serde(default)]
    pub eviction_requests: BTreeMap<QosLevel, u64>,
}

/// Keeps the [`Tally`]: it remembers each workload's last OOM-kill count, which the view does not
/// carry.
#[derive(Debug, Default)]
pub struct Counter {
    pub tally: Tally,
    /// Each workload's OOM-kill count as last read, and when (ms).
    seen: HashMap<Target, (u64, u64)>,
    /// The first reading after the source answered was taken.
    started: bool,
}

impl Counter {
    /// Adds the OOM kills read since the last call. The workloads of the first reading once the
    /// source has answered (`synced`: local at once, pods with their first list) start from their
    /// counts: kills before the agent started are not its to report. A workload that appears later
    /// counts from zero. A count that went down is a group made again: all of it is new.
    pub fn oom(&mut self, workloads: &[WorkloadSnapshot], now_ms: u64, synced: bool) {
        if !synced && !self.started {
            return;
        }
        let first = !std::mem::replace(&mut self.started, true);
        for w in workloads {
            let Some(n) = w.oom_kills else { continue };
            let kills = self.tally.oom_kills.get_or_insert_with(BTreeMap::new);
            let new = match self.seen.get(&w.group) {
                None if first => 0,
                None => n,
                Some((p, _)) if n >= *p => n - p,
                Some(_) => n,
            };
            if new > 0 {
                let e = kills.entry(w.level).or_default();
                *e = e.saturating_add(new);
            }
            self.seen.insert(w.group.clone(), (n, now_ms));
        }
        self.seen
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) <= SEEN_KEEP_MS);
    }

    /// A local workload killed for memory.
    pub fn evicted(&mut self, level: QosLevel) {
        *self.tally.evictions.entry(level).or_default() += 1;
    }

    /// A pod's eviction requested.
    pub fn eviction_requested(&mut self, level: QosLevel) {
        *self.tally.eviction_requests.entry(level).or_default() += 1;
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
    /// The stall guard's priority, as its thread found it (None: not started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_guard: Option<String>,
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
    /// Local mode, v2: the ancestor of the tidal root where online memory protection stops (it
    /// has no memory.min/low; on systemd a slice), as `tidal doctor` finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection_gap: Option<String>,
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
    fn oom_kills_count_from_the_agents_start_by_level() {
        let mut t = Counter::default();
        let k = |t: &Counter, l| t.tally.oom_kills.as_ref().and_then(|m| m.get(&l).copied());
        // A pod source that has not answered yet: nothing is a baseline.
        t.oom(&[], 0, false);
        assert_eq!(t.tally.oom_kills, None);
        // The first reading is the baseline: earlier kills are not the agent's to report.
        t.oom(
            &[w("offline/offline/a", QosLevel::Offline, Some(3))],
            1,
            true,
        );
        assert_eq!(t.tally.oom_kills, Some(BTreeMap::new()));
        t.oom(
            &[
                w("offline/offline/a", QosLevel::Offline, Some(5)),
                // New since the start: every kill counts.
                w("online/b", QosLevel::Online, Some(1)),
            ],
            2,
            true,
        );
        assert_eq!(k(&t, QosLevel::Offline), Some(2));
        assert_eq!(k(&t, QosLevel::Online), Some(1));
        // Gone from one reading and back, or unreadable once: not counted again.
        t.oom(&[w("online/b", QosLevel::Online, None)], 3, true);
        t.oom(
            &[
                w("offline/offline/a", QosLevel::Offline, Some(5)),
                w("online/b", QosLevel::Online, Some(2)),
            ],
            4,
            true,
        );
        assert_eq!(k(&t, QosLevel::Offline), Some(2));
        assert_eq!(k(&t, QosLevel::Online), Some(2));
        // A count that went down is a group made again: its kills are all new.
        t.oom(
            &[w("offline/offline/a", QosLevel::Offline, Some(1))],
            5,
            true,
        );
        assert_eq!(k(&t, QosLevel::Offline), Some(3));
        // Long gone, then back: a group made again, counted from zero.
        t.oom(&[], 5 + SEEN_KEEP_MS + 1, true);
        t.oom(
            &[w("offline/offline/a", QosLevel::Offline, Some(2))],
            5 + SEEN_KEEP_MS + 2,
            true,
        );
        assert_eq!(k(&t, QosLevel::Offline), Some(5));
        t.evicted(QosLevel::OfflineLow);
        t.evicted(QosLevel::OfflineLow);
        t.eviction_requested(QosLevel::Offline);
        assert_eq!(t.tally.evictions.get(&QosLevel::OfflineLow), Some(&2));
        assert_eq!(t.tally.eviction_requests.get(&QosLevel::Offline), Some(&1));
    }
}
