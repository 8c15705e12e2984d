//! What the policy remembers between ticks, typed. Serialisable so `/state` can show it.

use crate::config::io::IoLimits;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tidal_model::{CpuSet, ForeignGroup, GroupPath, QosLevel};

/// One tightening step of the interference ladder, in the order they are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Offline's cpuset loses one more CPU (only while confinement is on).
    ShrinkCpuset,
    /// Offline's CPU time is capped (`interference.cap_mode`: CFS quota, or a freeze duty cycle).
    CapCpu,
    /// `offline-low` is frozen.
    FreezeOfflineLow,
    /// `offline` is frozen.
    FreezeOffline,
}

impl Step {
    /// The name the config and `/state` use.
    pub fn name(self) -> &'static str {
        match self {
            Step::ShrinkCpuset => "shrink-cpuset",
            Step::CapCpu => "cap-cpu",
            Step::FreezeOfflineLow => "freeze-offline-low",
            Step::FreezeOffline => "freeze-offline",
        }
    }

    /// A freeze step (of either offline level).
    pub fn freezes(self) -> bool {
        matches!(self, Step::FreezeOfflineLow | Step::FreezeOffline)
    }

    pub const LADDER: [Step; 4] = [
        Step::ShrinkCpuset,
        Step::CapCpu,
        Step::FreezeOfflineLow,
        Step::FreezeOffline,
    ];
}

/// Where the interference ladder is between steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// Nothing pending.
    #[default]
    Idle,
    /// A step was taken at `at_ms`; `baseline` is the pressure that called for it, which must fall
    /// by the next interval or the step is judged useless.
    Tightened { at_ms: u64, baseline: Option<f64> },
    /// Every signal calm since `since_ms`: one step is released per calm period.
    Calming { since_ms: u64 },
    /// The last step did not lower the pressure and was undone: no step before `until_ms`.
    BackedOff { until_ms: u64 },
}

/// The interference ladder: the steps in force, in the order taken (that of [`Step::LADDER`], less
/// the steps that would have changed nothing, except that a deep miss takes the freezes before a
/// cpuset shrink or cap left behind) and its phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interference {
    pub steps: Vec<Step>,
    pub phase: Phase,
    /// Since when every signal has left room (an objective holding with slack of `slo.hold_below`
    /// or more, or every signal calm with an objective among them) while steps are in force:
    /// after `slo.probe_first` (or `probe_wait_ms`) one is released to probe.
    #[serde(default)]
    pub hold_since_ms: Option<u64>,
    /// When the last probe or calm release was made, until it is judged: it failed (tightening
    /// within `slo.probe_after`) or lasted that long. No probe while it is pending.
    #[serde(default)]
    pub probe_at_ms: Option<u64>,
    /// The hold before the next probe (0: `slo.probe_first`); doubled by each probe that was
    /// followed by tightening within `slo.probe_after`, up to [`PROBE_BACKOFF_MAX`] ×
    /// `slo.probe_after`.
    #[serde(default)]
    pub probe_wait_ms: u64,
    /// Last tick a per-tick signal waited for a confinement shrink instead of stepping; the next
    /// does not wait again (a shrink that keeps failing to be written must not stall the ladder).
    #[serde(default)]
    pub waited: bool,
    /// When the last release for calm was made, until it is judged (see `release_wait`).
    #[serde(default)]
    pub released_at_ms: Option<u64>,
    /// The calm time before the next release, as a multiple of what the calm signal asks (0 or
    /// 1: once). A release followed by tightening within `slo.probe_after` (`calm_period` with
    /// probes off) doubles it, up to [`PROBE_BACKOFF_MAX`]; one that lasts until the next release
    /// halves it, one that lasts the whole time resets it. Without
    /// it a signal whose calm is only the steps' doing flaps: release, violation, step, release.
    #[serde(default)]
    pub release_wait: u64,
    /// Where the duty cycle in force (the cap step) counts its periods from (modulo its period):
    /// frozen part first when the step is taken, so it acts at once rather than whenever the
    /// clock's period says; running part first after a release.
    #[serde(default)]
    pub duty_from_ms: Option<u64>,
    /// Every step in force was taken on a reading of the last tick alone (run-queue latency): once
    /// those readings are calm for `slo.probe_first`, one is released to probe, whatever an
    /// objective that still meets its target says about growth. The watch after a release sees a
    /// wait come back within `interference.watch_tick`, so such a probe costs online little, while
    /// a freeze for a passing burst would otherwise cost seconds of offline work.
    #[serde(default)]
    pub per_tick: bool,
    /// The pending probe or release was made for a per-tick ladder: it is judged over
    /// `interference.release_watch` (`escalate_every` at least), not `slo.probe_after`.
    #[serde(default)]
    pub quick_probe: bool,
    /// The steps in force that a stall of the agent's own loop took (its stall guard froze
    /// offline): while the top step is one of them, the loop coming round is a calm signal, so
    /// they are released even where no other signal speaks; steps other signals took are theirs.
    #[serde(default)]
    pub stall_steps: Vec<Step>,
}

/// A failed probe doubles the wait before the next one, up to this many times `slo.probe_after`.
pub const PROBE_BACKOFF_MAX: u64 = 8;

impl Interference {
    /// How many steps are in force.
    pub fn level(&self) -> u8 {
        self.steps.len().min(u8::MAX as usize) as u8
    }
    pub fn has(&self, s: Step) -> bool {
        self.steps.contains(&s)
    }

    /// A step released at `now` (for calm, or to probe) is judged both as a probe and as a calm
    /// release: a failed one must not be retried by the other path sooner than the wait it
    /// doubled, nor a calm wait it cut short stick. A per-tick ladder's is judged quickly.
    pub fn judge_release_from(&mut self, now: u64) {
        self.probe_at_ms = Some(now);
        self.released_at_ms = Some(now);
        self.quick_probe = self.per_tick;
    }
}

/// Which offline levels the agent keeps frozen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frozen {
    pub offline: bool,
    pub offline_low: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Offline's current CPUs (None before the first tick: offline has every CPU).
    pub offline_cpus: Option<CpuSet>,
    /// How many CPUs online's need leaves offline, after hysteresis and before interference.
    pub base_offline: Option<u32>,
    /// Since when online need has been low enough for offline to grow.
    pub grow_since_ms: Option<u64>,
    pub interference: Interference,
    /// Frozen because online needs every CPU and `allow_freeze` is on.
    pub starved: bool,
    pub frozen: Frozen,
    pub last_kill_ms: Option<u64>,
    pub last_static_ms: Option<u64>,
    /// Offline level groups whose IO limits are set (v2): a new one gets them at once.
    #[serde(default)]
    pub io_levels: BTreeSet<QosLevel>,
    /// Offline workloads whose IO limits are set (v1, where each workload gets its own).
    #[serde(default)]
    pub io_limited: Arc<BTreeSet<GroupPath>>,
    /// The limits (`io.offline_max`, `io.offline_low_max`) last sent to v1 workloads: a level
    /// without limits is sent to each workload when it is new and when these change (lifting
    /// what an earlier config set), not with every static pass.
    #[serde(default)]
    pub io_config: Option<(IoLimits, IoLimits)>,
    /// Offline pods and (v1) their containers whose IO limits are set.
    #[serde(default)]
    pub io_limited_foreign: BTreeSet<ForeignGroup>,
    /// Empty workload groups and since when.
    pub empty_since_ms: BTreeMap<GroupPath, u64>,
    /// CPUs online needs now (for reports).
    pub online_need: u32,
    /// CPUs offline may be given at the last tick (the node's, less the kubelet's exclusive ones):
    /// what an early tick counts against.
    #[serde(default)]
    pub pool_cpus: Option<u32>,
    /// What was last decided for each offline pod.
    #[serde(default)]
    pub pods: BTreeMap<ForeignGroup, PodApplied>,
    #[serde(default)]
    pub last_evict_ms: Option<u64>,
    /// The CPU-time cap (quota mode) is written on the offline parent.
    #[serde(default)]
    pub capped: bool,
    /// Workloads whose tasks got their level's `oom_score_adj` (new ones get it at once). This and
    /// `io_limited` are pruned by counting the snapshot's workloads, one per group (the collector
    /// keeps the first of any two at one group). These three sets are shared (`Arc`) with the
    /// state's copies until one changes them (`Arc::make_mut`): the state is copied each tick,
    /// and they change only with a new reading of the workload list.
    #[serde(default)]
    pub oom_set: Arc<BTreeSet<tidal_model::Target>>,
    /// Each such workload's task count when it last got it: more tasks means new ones to set.
    #[serde(default, with = "shared_pairs")]
    pub oom_tasks: Arc<BTreeMap<tidal_model::Target, usize>>,
    /// The reading of the workload list (`Snapshot::workloads_seq`) the last tick went through:
    /// what looks only at the list and its task counts (OOM ordering, v1 IO limits, the
    /// originals to journal ahead) waits for the next reading or the static pass.
    #[serde(default)]
    pub workloads_seq: Option<u64>,
    /// The (memory.min, memory.low) last set per group.
    #[serde(default, with = "pairs")]
    pub mem_protect: BTreeMap<tidal_model::Target, (u64, u64)>,
    /// The offline memory ceiling in force (bytes), when and why it last moved.
    #[serde(default)]
    pub ceiling: Option<u64>,
    #[serde(default)]
    pub ceiling_cut_ms: Option<u64>,
    #[serde(default)]
    pub ceiling_calm_since_ms: Option<u64>,
    /// How many offline pods shared the ceiling at its last write.
    #[serde(default)]
    pub ceiling_pods: usize,
    /// Workloads over their level's open-files ceiling, by group, with their count.
    #[serde(default)]
    pub files_over: BTreeMap<String, u64>,
}

/// The settings last decided for one offline pod (re-sent when they change, and all of them when
/// the pod is new, a write failed, or the static interval is due).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodApplied {
    pub idle: bool,
    pub cpus: Option<CpuSet>,
    /// The pod's `cpu.max` quota (inner None: unlimited); None: not managed here.
    pub quota_us: Option<Option<u64>>,
    pub frozen: bool,
}

/// A map keyed by [`tidal_model::Target`] as a list of pairs: a foreign target is an object in
/// JSON, which cannot be a JSON object's key (`/state` would fail to serialise in pod mode).
mod pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

/// [`pairs`] for a map shared between states.
mod shared_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        m: &Arc<BTreeMap<K, V>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        super::pairs::serialize(m, s)
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<Arc<BTreeMap<K, V>>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        super::pairs::deserialize(d).map(Arc::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::{ForeignGroup, Target};

    #[test]
    fn a_shared_set_is_copied_only_by_the_state_that_changes_it() {
        let mut a = PolicyState::default();
        Arc::make_mut(&mut a.oom_set).insert(Target::Tidal(QosLevel::Offline.group_path()));
        let mut b = a.clone();
        assert!(std::ptr::eq(&*a.oom_set, &*b.oom_set), "a copy shares it");
        Arc::make_mut(&mut b.oom_set).clear();
        assert_eq!(a.oom_set.len(), 1, "the other keeps its own");
        assert!(b.oom_set.is_empty());
        assert_ne!(a, b);
        // Serialised as the set itself.
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["oom_set"], serde_json::json!(["offline/offline"]));
    }

    #[test]
    fn state_with_pods_in_its_maps_round_trips_through_json() {
        let pod = Target::Foreign(ForeignGroup::new("kubepods/burstable/podabc").unwrap());
        let own = Target::Tidal(tidal_model::GroupPath::new("online/db").unwrap());
        let mut st = PolicyState::default();
        st.mem_protect.insert(pod.clone(), (1, 2));
        st.mem_protect.insert(own.clone(), (3, 4));
        Arc::make_mut(&mut st.oom_tasks).insert(pod.clone(), 5);
        let json = serde_json::to_string(&st).unwrap();
        let back: PolicyState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.mem_protect, st.mem_protect);
        assert_eq!(back.oom_tasks, st.oom_tasks);
    }
}
