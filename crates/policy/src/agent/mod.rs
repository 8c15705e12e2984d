//! The agent's control policy: one pure step from (snapshot, config, capabilities, previous state) to
//! (plan, next state), composed of one function per concern: static settings and drift
//! ([`statics`]), CPU confinement ([`confine`]), the interference ladder ([`interference`]), memory
//! ([`memory`]) and cleanup ([`cleanup`]). No IO and no clock: time is in the snapshot.

pub mod cap;
pub mod cleanup;
pub mod confine;
pub mod files;
pub mod interference;
pub mod io;
pub mod memory;
pub mod memqos;
pub mod oom;
pub mod pods;
pub mod state;
pub mod statics;
pub mod tick;

use crate::config::Config;
use crate::levels::CFS_PERIOD_US;
use std::sync::Arc;
use tidal_model::{
    Action, Capabilities, Cause, Knob, KnobValue, Op, Plan, QosLevel, Snapshot, Target,
};

pub use confine::cpus_needed;
pub use state::{Frozen, Interference, Phase, PolicyState, Step, PROBE_BACKOFF_MAX};

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub plan: Plan,
    pub state: PolicyState,
}

/// One control step. Pure: everything it knows is in its arguments.
pub fn decide(snap: &Snapshot, cfg: &Config, caps: &Capabilities, prev: &PolicyState) -> Decision {
    let mut st = prev.clone();
    let mut plan = Plan::default();
    let new_list = new_list(snap, prev);
    st.workloads_seq = snap.workloads_seq;
    let static_due = statics::decide(snap, cfg, caps, &mut st, &mut plan);
    io::decide(snap, cfg, caps, static_due, new_list, &mut st, &mut plan);
    let verdicts = interference::rules(snap, cfg, caps, prev);
    let cpu = confine::need(snap, cfg, interference::stops_growth(&verdicts), &mut st);
    let verdict = interference::decide(snap, cfg, caps, &cpu, &verdicts, &mut st);
    let confined = confine::apply(
        snap, cfg, caps, &cpu, &verdict, static_due, &mut st, &mut plan,
    );
    let freezing = interference::freeze(
        snap, cfg, caps, &verdict, static_due, prev, &mut st, &mut plan,
    );
    pods::apply(
        snap,
        cfg,
        caps,
        &pods::Want {
            cpus: &confined.cpus,
            pool_len: confined.pool_len,
            freeze_low: freezing.offline_low,
            freeze_off: freezing.offline,
            freeze_low_held: freezing.offline_low_held,
            freeze_off_held: freezing.offline_held,
            duty: freezing.duty.as_deref(),
            reason: &confined.reason,
            freeze_reason: &freezing.reason,
            cause: confined.cause,
            freeze_cause: freezing.cause,
            static_due,
            cap_quota: confined.cap_quota,
        },
        &mut st,
        &mut plan,
    );
    memory::decide(snap, cfg, &mut st, &mut plan);
    memqos::protection(snap, cfg, caps, static_due, &mut st, &mut plan);
    memqos::ceiling(snap, cfg, caps, static_due, &mut st, &mut plan);
    oom::decide(snap, cfg, static_due, new_list, &mut st, &mut plan);
    files::decide(snap, cfg, caps, &mut st, &mut plan);
    cleanup::decide(snap, cfg, prev, &mut st, &mut plan);
    // Ask the actuator to journal, ahead of time, the originals of what confinement and the ladder
    // write, so those urgent writes need no fsync (with each reading of the workload list).
    if new_list {
        plan.remember = confine::remembered(snap, cfg, caps);
    }
    Decision { plan, state: st }
}

/// Whether `snap` holds a reading of the workload list the last tick (`prev`) did not see: between
/// readings the list and its task counts are the same. Readers that do not number their
/// readings make every tick a new one.
pub(crate) fn new_list(snap: &Snapshot, prev: &PolicyState) -> bool {
    snap.workloads_seq.is_none() || snap.workloads_seq != prev.workloads_seq
}

/// The next state once the plan was applied: what the policy assumed of writes that did not take
/// effect is taken back, so a failed confinement (v1 EBUSY) or freeze is tried again next tick.
pub fn settle(mut next: PolicyState, prev: &PolicyState, plan: &Plan, ok: &[bool]) -> PolicyState {
    let failed =
        |pred: &dyn Fn(&Action) -> bool| plan.actions.iter().zip(ok).any(|(a, ok)| !ok && pred(a));
    let offline_parent = Target::Tidal(QosLevel::offline_parent());
    let is_set = |a: &Action, t: &Target, k: Knob| matches!(&a.op, Op::Set { target, knob, .. } if target == t && *knob == k);
    if failed(&|a| {
        is_set(a, &offline_parent, Knob::CpusetCpus) || is_set(a, &offline_parent, Knob::CpuMax)
    }) {
        next.offline_cpus = prev.offline_cpus.clone();
        next.base_offline = prev.base_offline;
        next.capped = prev.capped;
    }
    for (level, flag) in [
        (QosLevel::Offline, &mut next.frozen.offline),
        (QosLevel::OfflineLow, &mut next.frozen.offline_low),
    ] {
        let t = Target::Tidal(level.group_path());
        if failed(&|a| is_set(a, &t, Knob::Freeze)) {
            *flag = match level {
                QosLevel::Offline => prev.frozen.offline,
                _ => prev.frozen.offline_low,
            };
        }
    }
    // What did not take effect is tried again: memory protection next tick, OOM ordering and v1
    // IO limits with the next reading of the workload list (what they look at).
    for (a, ok) in plan.actions.iter().zip(ok) {
        if *ok {
            continue;
        }
        match &a.op {
            Op::OomScoreAdj { target, .. } => {
                if next.oom_set.contains(target) {
                    Arc::make_mut(&mut next.oom_set).remove(target);
                }
                if next.oom_tasks.contains_key(target) {
                    Arc::make_mut(&mut next.oom_tasks).remove(target);
                }
            }
            Op::Set {
                target,
                knob: Knob::MemoryLow | Knob::MemoryMin,
                ..
            } => {
                next.mem_protect.remove(target);
            }
            // IO limits that did not take: tried again (the actuator itself holds back a knob
            // the kernel refused until its re-probe).
            Op::Set {
                target,
                knob: Knob::IoMax,
                ..
            } => match target {
                Target::Tidal(g) if next.io_limited.contains(g) => {
                    Arc::make_mut(&mut next.io_limited).remove(g);
                }
                Target::Tidal(_) => {}
                Target::Foreign(g) => {
                    next.io_limited_foreign.remove(g);
                }
            },
            // A refused ceiling (v1 EBUSY) stays recorded: it is written again after its
            // interval while offline is over it, or at the static interval, never every tick.
            _ => {}
        }
    }
    // A pod whose write failed gets every setting again next tick (IO limits are retried on
    // their own, above, and IO weights with the static settings: a pod group without those files
    // must not replan the pod every tick).
    for (a, ok) in plan.actions.iter().zip(ok) {
        if a.setting()
            .is_some_and(|(k, _)| matches!(k, Knob::IoMax | Knob::IoWeight | Knob::IoBfqWeight))
        {
            continue;
        }
        if let (false, Target::Foreign(g)) = (*ok, a.op.target()) {
            next.pods
                .retain(|p, _| *p != g && !g.as_str().starts_with(&format!("{}/", p.as_str())));
        }
    }
    next
}

/// Gives offline everything back: all CPUs, no quota, thawed; offline pods their own limits.
/// Used on shutdown.
pub fn release_plan(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    prev: &PolicyState,
) -> Plan {
    let mut plan = Plan::default();
    pods::release(snap, cfg, caps, &mut plan);
    memqos::release(snap, caps, &mut plan);
    if !confine::tidal_offline_present(snap) {
        return plan;
    }
    let reason = "agent stopping: offline gets every CPU back";
    if caps.has(Knob::CpusetCpus) {
        let old = prev
            .offline_cpus
            .clone()
            .unwrap_or_else(|| snap.cpus.clone());
        plan.actions.extend(confine::cpuset_actions(
            snap,
            caps,
            &old,
            &snap.offline_pool(),
            reason,
            Cause::Shutdown,
        ));
    }
    if caps.has(Knob::CpuMax) {
        plan.push(
            Action::set(
                QosLevel::offline_parent(),
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us: None,
                    period_us: CFS_PERIOD_US,
                },
                reason,
            )
            .because(Cause::Shutdown),
        );
    }
    if caps.has(Knob::Freeze) {
        for l in QosLevel::OFFLINE {
            if snap.levels_present.contains(&l) {
                plan.push(
                    Action::set(
                        l.group_path(),
                        Knob::Freeze,
                        KnobValue::Bool(false),
                        "agent stopping: offline thawed",
                    )
                    .because(Cause::Shutdown),
                );
            }
        }
        // Workloads stopped for their open files (`files.stop`) run again without the agent.
        for w in snap
            .workloads
            .iter()
            .filter(|w| w.managed && !w.level.is_online())
        {
            if prev.files_over.contains_key(&w.group.to_string()) {
                plan.push(
                    Action::set(
                        w.group.clone(),
                        Knob::Freeze,
                        KnobValue::Bool(false),
                        format!(
                            "agent stopping: {} thawed (stopped for its open files)",
                            w.name
                        ),
                    )
                    .because(Cause::Shutdown),
                );
            }
        }
    }
    plan
}
