//! The agent's control policy: one pure step from (snapshot, config, capabilities, previous state) to
//! (plan, next state). It confines offline work to the CPUs online work does not need (shrinking at
//! once, growing after a calm spell), tightens under online CPU pressure, kills offline work under
//! memory pressure, re-applies static settings, and removes groups whose workload ended.

use crate::config::{Config, Suppression};
use crate::levels::{level_plan, offline_parent_plan, CFS_PERIOD_US};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tidal_model::level::OFFLINE_PARENT;
use tidal_model::{
    Action, Capabilities, CpuSet, GroupPath, Knob, KnobValue, Plan, QosLevel, Snapshot,
};

/// What the policy remembers between ticks. Serialisable so `/state` can show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    /// Offline's current CPUs (None before the first tick: offline has every CPU).
    pub offline_cpus: Option<CpuSet>,
    /// How many CPUs online's need leaves offline, after hysteresis and before interference.
    pub base_offline: Option<u32>,
    /// Since when online need has been low enough for offline to grow.
    pub grow_since_ms: Option<u64>,
    /// Tightening under interference: 0 none, 1 one CPU less, 2 offline-low frozen, 3 offline frozen.
    pub tighten: u8,
    pub last_escalate_ms: Option<u64>,
    /// Online pressure when the last tightening step was taken (to check the step helped).
    pub escalated_at_psi: Option<f64>,
    /// No tightening before this time: the last step did not lower online pressure.
    pub backoff_until_ms: Option<u64>,
    pub calm_since_ms: Option<u64>,
    /// Frozen because online needs every CPU and `allow_freeze` is on.
    pub starved: bool,
    pub frozen_offline: bool,
    pub frozen_offline_low: bool,
    pub last_kill_ms: Option<u64>,
    pub last_static_ms: Option<u64>,
    /// Empty workload groups and since when.
    pub empty_since_ms: BTreeMap<GroupPath, u64>,
    /// CPUs online needs now (for reports).
    pub online_need: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub plan: Plan,
    pub state: PolicyState,
}

/// Whole CPUs covering `usage + headroom` (a hair of tolerance keeps 1.0000001 from becoming 2).
/// Usage below `floor` (the agent, kernel threads, shells) is an idle online side: it needs no CPU.
pub fn cpus_needed(usage: f64, headroom: f64, floor: f64, n: u32) -> u32 {
    if usage < floor {
        return 0;
    }
    let x = (usage + headroom - 1e-6).max(0.0);
    (x.ceil() as u32).min(n)
}

fn offline_levels() -> [QosLevel; 2] {
    [QosLevel::Offline, QosLevel::OfflineLow]
}

/// Cpuset writes that move the offline subtree from `old` to `new`, in an order v1 accepts:
/// shrinking goes leaves first, growing goes parent first. On v2 children inherit the parent's.
fn cpuset_actions(
    snap: &Snapshot,
    caps: &Capabilities,
    old: &CpuSet,
    new: &CpuSet,
    reason: &str,
    cause: &str,
) -> Vec<Action> {
    let value = KnobValue::Cpus(new.clone());
    let mk = |g: GroupPath| Action::set(g, Knob::CpusetCpus, value.clone(), reason).because(cause);
    let parent = GroupPath::new(OFFLINE_PARENT).unwrap_or_default();
    let mut top_down = vec![mk(parent)];
    if caps.cpuset_v1 {
        for l in offline_levels() {
            if snap.levels_present.contains(&l) {
                top_down.push(mk(GroupPath::new(l.group()).unwrap_or_default()));
            }
        }
        for w in snap.workloads.iter().filter(|w| !w.level.is_online()) {
            top_down.push(mk(w.group.clone()));
        }
    }
    if new.is_subset(old) && new != old {
        top_down.reverse();
    }
    top_down
}

/// One control step. Pure: everything it knows is in its arguments.
pub fn decide(snap: &Snapshot, cfg: &Config, caps: &Capabilities, prev: &PolicyState) -> Decision {
    let mut st = prev.clone();
    let mut plan = Plan::default();
    let now = snap.now_ms;
    let n = snap.cpus.len() as u32;
    let offline_present = offline_levels()
        .iter()
        .any(|l| snap.levels_present.contains(l));
    let parent = GroupPath::new(OFFLINE_PARENT).unwrap_or_default();

    // 1. Static settings, re-applied periodically so drift is repaired.
    let static_due = st
        .last_static_ms
        .is_none_or(|t| now.saturating_sub(t) >= cfg.static_interval.0);
    if static_due {
        st.last_static_ms = Some(now);
        if offline_present {
            plan.extend(offline_parent_plan(caps));
        }
        for l in QosLevel::ALL {
            if snap.levels_present.contains(&l) {
                let mut lp = level_plan(l, caps);
                // The offline parent was handled once above.
                lp.actions.retain(|a| a.group != parent);
                plan.extend(lp);
            }
        }
    }

    // 2. CPU need and offline's share.
    let headroom = cfg.cpu.headroom_cpus;
    let floor = cfg.cpu.noise_floor_cpus;
    let need_long = cpus_needed(snap.protected_usage(), headroom, floor, n);
    let need_short = cpus_needed(snap.protected_usage_short(), headroom, floor, n);
    let need_now = need_long.max(need_short);
    st.online_need = need_now;
    let min_off = cfg.cpu.min_offline_cpus.min(n);
    let cur_count = st.base_offline.unwrap_or(n).min(n);
    let mut target = cur_count;
    let mut why = String::new();
    let mut cause = "confine";
    let room_now = n.saturating_sub(need_now);
    // Dynamic confinement, if this machine is big enough for it to pay (see `confine_min_cpus`).
    let confine = match cfg.cpu.suppression {
        Suppression::Cpuset => n >= cfg.cpu.confine_min_cpus,
        Suppression::Quota => true,
        Suppression::None => false,
    };
    if !confine {
        target = n;
        st.grow_since_ms = None;
        if cur_count < n {
            cause = "release";
            why = format!(
                "no dynamic confinement on {n} CPUs (confine_min_cpus {}, suppression {:?}): offline gets every CPU",
                cfg.cpu.confine_min_cpus, cfg.cpu.suppression
            );
        }
    } else if room_now < cur_count {
        target = room_now.max(min_off);
        st.grow_since_ms = None;
        why = format!(
            "online needs {need_now} of {n} CPUs (usage {:.2} + headroom {headroom}): offline shrinks at once",
            snap.protected_usage().max(snap.protected_usage_short())
        );
    } else {
        let room = n.saturating_sub(need_long);
        if room > cur_count {
            let since = *st.grow_since_ms.get_or_insert(now);
            if now.saturating_sub(since) >= cfg.cpu.grow_after.0 {
                target = (cur_count + cfg.cpu.grow_step).min(room);
                st.grow_since_ms = Some(now);
                cause = "release";
                why = format!(
                    "online needs {need_long} of {n} CPUs for {}ms: offline grows by {}",
                    cfg.cpu.grow_after.0,
                    target - cur_count
                );
            }
        } else {
            st.grow_since_ms = None;
        }
    }

    // 3. Interference: online CPU pressure tightens offline one step at a time.
    let online_psi = match cfg.interference.psi_line {
        crate::config::PsiLine::Some => snap.online_cpu_psi,
        crate::config::PsiLine::Full => snap.online_cpu_psi_full,
    };
    // The 1 s windowed value reacts within a second; avg10 is the fallback.
    let online_psi = match cfg.interference.psi_line {
        crate::config::PsiLine::Some => snap.online_cpu_psi_1s.or(online_psi),
        crate::config::PsiLine::Full => snap.online_cpu_psi_full_1s.or(online_psi),
    };
    let mut undone = false;
    if let Some(p) = online_psi.filter(|_| caps.psi) {
        let thr = cfg.interference.psi_threshold;
        let every = cfg.interference.escalate_every.0;
        let since_step = st.last_escalate_ms.map(|t| now.saturating_sub(t));
        // A step that did not lower the pressure was not about offline work: undo it and back off.
        if st.tighten > 0
            && since_step.is_some_and(|d| d >= every)
            && st
                .escalated_at_psi
                .is_some_and(|before| p >= 0.8 * before && p > thr)
        {
            st.tighten -= 1;
            st.escalated_at_psi = None;
            st.backoff_until_ms = Some(now + cfg.interference.calm_period.0);
            undone = true;
        } else if p > thr {
            st.calm_since_ms = None;
            let may = since_step.is_none_or(|d| d >= every)
                && st.backoff_until_ms.is_none_or(|b| now >= b);
            if may && st.tighten < 3 && offline_present {
                st.tighten += 1;
                st.last_escalate_ms = Some(now);
                st.escalated_at_psi = Some(p);
            }
        } else if st.tighten > 0 {
            let since = *st.calm_since_ms.get_or_insert(now);
            if now.saturating_sub(since) >= cfg.interference.calm_period.0 {
                st.tighten -= 1;
                st.calm_since_ms = Some(now);
            }
        }
    }
    st.base_offline = Some(target);
    let psi_txt = online_psi.map_or("n/a".to_string(), |p| format!("{p:.1}%"));
    if confine && st.tighten >= 1 && target > min_off.max(1) {
        target -= 1;
        cause = "interference";
        why = format!(
            "online cpu pressure {psi_txt} over {}%: offline gets one CPU less",
            cfg.interference.psi_threshold
        );
    } else if undone {
        cause = "release";
        why = format!(
            "online cpu pressure {psi_txt} did not fall after tightening: not offline's doing, step undone"
        );
    }

    // 4. Apply the CPU decision.
    let suppress = cfg.cpu.suppression;
    let starved = target == 0;
    let cpus_target = snap.cpus.last_n(target.max(1) as usize);
    let old = st.offline_cpus.clone().unwrap_or_else(|| snap.cpus.clone());
    if offline_present && (cpus_target != old || static_due) {
        let reason = if why.is_empty() {
            format!("offline keeps CPUs [{cpus_target}]")
        } else {
            why.clone()
        };
        let c = if why.is_empty() { "static" } else { cause };
        match suppress {
            Suppression::Cpuset if caps.has(Knob::CpusetCpus) => {
                plan.actions
                    .extend(cpuset_actions(snap, caps, &old, &cpus_target, &reason, c));
            }
            Suppression::Quota if caps.has(Knob::CpuMax) => {
                let quota = if target >= n {
                    None
                } else {
                    Some((u64::from(target.max(1)) * CFS_PERIOD_US).max(1000))
                };
                plan.push(
                    Action::set(
                        parent.clone(),
                        Knob::CpuMax,
                        KnobValue::Quota {
                            quota_us: quota,
                            period_us: CFS_PERIOD_US,
                        },
                        reason,
                    )
                    .because(c),
                );
            }
            _ => {}
        }
    }
    // With no offline group there is nothing confined: start from every CPU when one appears.
    if offline_present {
        st.offline_cpus = Some(cpus_target);
        st.starved = starved;
    } else {
        st.offline_cpus = None;
        st.base_offline = None;
        st.starved = false;
        st.grow_since_ms = None;
    }

    // 5. Freezing: for interference (levels 2, 3) or when online needs every CPU and that is allowed.
    if caps.has(Knob::Freeze) {
        let want_low = st.tighten >= 2 || starved;
        let want_off = st.tighten >= 3 || starved;
        for (level, want, was) in [
            (QosLevel::OfflineLow, want_low, prev.frozen_offline_low),
            (QosLevel::Offline, want_off, prev.frozen_offline),
        ] {
            if !snap.levels_present.contains(&level) {
                continue;
            }
            if want != was || static_due {
                let (reason, cause) = match (want, starved) {
                    (true, true) => (
                        format!("online needs all {n} CPUs and allow_freeze is on: {level} frozen"),
                        "confine",
                    ),
                    (true, false) => (
                        format!(
                            "online cpu pressure {psi_txt} over {}%: {level} frozen",
                            cfg.interference.psi_threshold
                        ),
                        "interference",
                    ),
                    (false, _) if was && undone => (
                        format!("tightening did not lower online pressure: {level} thawed"),
                        "release",
                    ),
                    (false, _) if was => (format!("pressure calm: {level} thawed"), "release"),
                    (false, _) => (format!("{level} runs"), "static"),
                };
                plan.push(
                    Action::set(
                        GroupPath::new(level.group()).unwrap_or_default(),
                        Knob::Freeze,
                        KnobValue::Bool(want),
                        reason,
                    )
                    .because(cause),
                );
            }
        }
        st.frozen_offline_low = want_low && snap.levels_present.contains(&QosLevel::OfflineLow);
        st.frozen_offline = want_off && snap.levels_present.contains(&QosLevel::Offline);
    }

    // 6. Memory: below the watermark, kill the largest offline-low workload, else the largest offline.
    let mark = cfg.low_watermark(snap.mem_total_bytes);
    if snap.mem_total_bytes > 0 && snap.mem_available_bytes < mark {
        let may = st
            .last_kill_ms
            .is_none_or(|t| now.saturating_sub(t) >= cfg.memory.kill_interval.0);
        if may {
            let victim = [QosLevel::OfflineLow, QosLevel::Offline]
                .iter()
                .find_map(|l| {
                    snap.workloads
                        .iter()
                        .filter(|w| w.level == *l && w.procs > 0)
                        .max_by_key(|w| (w.memory_bytes.unwrap_or(0), w.group.clone()))
                });
            if let Some(v) = victim {
                st.last_kill_ms = Some(now);
                plan.push(
                    Action::kill(
                        v.group.clone(),
                        format!(
                            "node MemAvailable {} MiB below watermark {} MiB: largest {} workload ({} MiB)",
                            snap.mem_available_bytes >> 20,
                            mark >> 20,
                            v.level,
                            v.memory_bytes.unwrap_or(0) >> 20
                        ),
                    )
                    .because("memory"),
                );
            }
        }
    }

    // 7. Cleanup of groups whose workload ended.
    let mut empty = BTreeMap::new();
    for w in &snap.workloads {
        if w.procs == 0 {
            let since = prev.empty_since_ms.get(&w.group).copied().unwrap_or(now);
            if now.saturating_sub(since) >= cfg.cleanup.remove_empty_after.0 {
                plan.push(
                    Action::remove(
                        w.group.clone(),
                        format!(
                            "empty for {}s: its workload ended",
                            now.saturating_sub(since) / 1000
                        ),
                    )
                    .because("cleanup"),
                );
            } else {
                empty.insert(w.group.clone(), since);
            }
        }
    }
    st.empty_since_ms = empty;

    Decision { plan, state: st }
}

/// Gives offline everything back: all CPUs, no quota, thawed. Used on shutdown.
pub fn release_plan(snap: &Snapshot, caps: &Capabilities, prev: &PolicyState) -> Plan {
    let mut plan = Plan::default();
    if !offline_levels()
        .iter()
        .any(|l| snap.levels_present.contains(l))
    {
        return plan;
    }
    let reason = "agent stopping: offline gets every CPU back";
    if caps.has(Knob::CpusetCpus) {
        let old = prev
            .offline_cpus
            .clone()
            .unwrap_or_else(|| snap.cpus.clone());
        plan.actions.extend(cpuset_actions(
            snap, caps, &old, &snap.cpus, reason, "shutdown",
        ));
    }
    if caps.has(Knob::CpuMax) {
        plan.push(
            Action::set(
                GroupPath::new(OFFLINE_PARENT).unwrap_or_default(),
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us: None,
                    period_us: CFS_PERIOD_US,
                },
                reason,
            )
            .because("shutdown"),
        );
    }
    if caps.has(Knob::Freeze) {
        for l in offline_levels() {
            if snap.levels_present.contains(&l) {
                plan.push(
                    Action::set(
                        GroupPath::new(l.group()).unwrap_or_default(),
                        Knob::Freeze,
                        KnobValue::Bool(false),
                        "agent stopping: offline thawed",
                    )
                    .because("shutdown"),
                );
            }
        }
    }
    plan
}
