//! Offline pods in the kubelet's tree. tidal only sets values on pod and container groups, never on
//! the kubelet's QoS-tier groups (`kubepods`, `burstable`, `besteffort`), whose `cpu.shares` the
//! kubelet rewrites and which `cpu.idle=1` would make it fail on.
//!
//! - `cpu.idle=1` on each offline pod group (unless its tier already has it, set by the kubelet).
//! - Confinement: the pod's cpuset follows offline's CPUs (v1: containers shrink before the pod,
//!   the pod grows first). Where the kubelet owns cpusets (CPU manager `static`) or quota
//!   suppression is configured, a CPU-time cap on the pod group stands in for the cpuset.
//! - The ladder's freeze steps freeze a pod, except a pod whose containers have liveness or startup
//!   probes: a frozen pod fails them and the kubelet restarts it, so it is capped at `probe_pod_cap_cpus`.
//!   Under the duty-cycle cap such a pod gets one steady quota of the same share instead.
//! - A cap tidal lifts returns to the pod's own CPU limit, never to "unlimited".
//!
//! What was last decided per pod is in [`PolicyState::pods`]; a pod first seen (or one whose write
//! failed) gets every setting at once, and the static interval re-applies them all (drift).

use super::state::{PodApplied, PolicyState};
use crate::config::{Config, Suppression};
use crate::levels::CFS_PERIOD_US;
use tidal_model::{
    Action, Capabilities, Cause, CpuSet, ForeignGroup, Knob, KnobValue, Plan, PodInfo, QosLevel,
    Remember, Snapshot, Target, WorkloadSnapshot,
};

/// The offline pods of a snapshot, with their groups.
pub fn offline(
    snap: &Snapshot,
) -> impl Iterator<Item = (&WorkloadSnapshot, &ForeignGroup, &PodInfo)> {
    snap.workloads
        .iter()
        .filter_map(|w| match (&w.group, &w.pod) {
            (Target::Foreign(g), Some(p)) if !w.level.is_online() => Some((w, g, p)),
            _ => None,
        })
}

/// Whether any offline pod is at `level`.
pub fn present(snap: &Snapshot, level: QosLevel) -> bool {
    offline(snap).any(|(w, _, _)| w.level == level)
}

/// Pods are confined by a CPU-time cap rather than cpusets: the kubelet owns their cpusets (CPU
/// manager `static`), or quota suppression is configured.
pub fn capped_not_pinned(snap: &Snapshot, cfg: &Config) -> bool {
    cfg.cpu.suppression == Suppression::Quota
        || snap.kubelet.as_ref().is_some_and(|k| k.owns_cpusets())
}

fn quota_of_cpus(cpus: f64) -> u64 {
    ((cpus * CFS_PERIOD_US as f64).round() as u64).max(1000)
}

/// The pod's own limit as a quota (None: unlimited).
fn limit_quota(p: &PodInfo) -> Option<u64> {
    p.cpu_limit_milli
        .map(|m| (m.saturating_mul(CFS_PERIOD_US) / 1000).max(1000))
}

fn min_quota(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// What tidal wants of the offline pods this tick.
pub struct Want<'a> {
    /// Offline's CPUs, and how many that is of the offline pool.
    pub cpus: &'a CpuSet,
    pub pool_len: u32,
    /// Each offline level frozen now (the ladder's freeze steps, starvation, or the duty cycle's
    /// frozen part), and frozen by the steps or starvation alone.
    pub freeze_low: bool,
    pub freeze_off: bool,
    pub freeze_low_held: bool,
    pub freeze_off_held: bool,
    /// The duty cycle in force (the cap step): its description.
    pub duty: Option<&'a str>,
    pub reason: &'a str,
    pub freeze_reason: &'a str,
    pub cause: Cause,
    pub freeze_cause: Cause,
    pub static_due: bool,
    /// The ladder's CPU-time cap step (quota µs per period), when in force.
    pub cap_quota: Option<u64>,
}

/// Sets for the offline pods, in an order the kernel accepts.
pub fn apply(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    want: &Want,
    st: &mut PolicyState,
    plan: &mut Plan,
) {
    let by_cap = capped_not_pinned(snap, cfg);
    let target = want.cpus.len().min(u32::MAX as usize) as u32;
    let mut seen = Vec::new();
    let mut io_seen = std::collections::BTreeSet::new();
    for (w, g, p) in offline(snap) {
        seen.push(g.clone());
        let prev = st.pods.get(g).cloned();
        let all = want.static_due || prev.is_none();
        let prev = prev.unwrap_or_default();
        let (frozen_wanted, frozen_held) = match w.level {
            QosLevel::OfflineLow => (want.freeze_low, want.freeze_low_held),
            _ => (want.freeze_off, want.freeze_off_held),
        };
        let mut next = PodApplied::default();
        let t = Target::Foreign(g.clone());
        let set = |knob: Knob, value: KnobValue, reason: String, cause: Cause| {
            Action::set(t.clone(), knob, value, reason).because(cause)
        };
        // The idle class, at the pod level only.
        if caps.has(Knob::CpuIdle) && !p.tier_idle {
            next.idle = true;
            if all {
                plan.push(set(
                    Knob::CpuIdle,
                    KnobValue::Bool(true),
                    format!(
                        "offline pod {} is idle class (at the pod level, never the tier)",
                        p.pod
                    ),
                    Cause::Static,
                ));
            }
        }
        if all {
            let iow = crate::levels::pod_io_weight(w.level);
            let mut io = Plan::default();
            crate::levels::io_weight(
                &mut io,
                &t,
                iow,
                &format!(
                    "offline pod {}: IO weight {iow}, below its tier's other pods",
                    p.pod
                ),
                caps,
            );
            for a in io.actions {
                plan.push(a.because(Cause::Static));
            }
        }
        if caps.has(Knob::IoMax) {
            // v1 throttling is flat: the containers, where the tasks are, need their own (a new
            // container at once).
            let name = p.pod.to_string();
            let mut groups = vec![g.clone()];
            if caps.io_flat {
                groups.extend(p.containers.iter().cloned());
            }
            for c in groups {
                if all || !st.io_limited_foreign.contains(&c) {
                    plan.push(
                        super::io::pod(snap, cfg, w.level, Target::Foreign(c.clone()), &name)
                            .because(Cause::Static),
                    );
                }
                io_seen.insert(c);
            }
        }
        // Freeze, or the cap that stands in for it.
        let freeze_by_cap = p.liveness_probe || !caps.has(Knob::Freeze);
        let mut quota = limit_quota(p);
        let mut quota_reason = format!("pod {} keeps its own CPU limit", p.pod);
        let mut quota_cause = Cause::Release;
        if by_cap && target < want.pool_len {
            quota = min_quota(quota, Some(quota_of_cpus(f64::from(target.max(1)))));
            quota_reason = format!(
                "{}: pod {} capped at {} CPUs",
                want.reason,
                p.pod,
                target.max(1)
            );
            quota_cause = want.cause;
        }
        if let Some(c) = want.cap_quota {
            quota = min_quota(quota, Some(c));
            quota_reason = format!("{}: pod {} CPU time capped", want.freeze_reason, p.pod);
            quota_cause = Cause::Interference;
        }
        // A pod that cannot be frozen takes the duty cycle as a steady quota of the same share,
        // not one switched on and off twice a second.
        if let (Some(duty), true) = (want.duty, freeze_by_cap) {
            let share = super::cap::cap_quota(target.max(1) as usize, cfg);
            quota = min_quota(quota, Some(share));
            quota_reason = format!(
                "{duty}: pod {} capped at {:.2} CPUs instead ({})",
                p.pod,
                share as f64 / CFS_PERIOD_US as f64,
                if p.liveness_probe {
                    "it has liveness or startup probes"
                } else {
                    "no freezer"
                }
            );
            quota_cause = Cause::Interference;
        }
        if frozen_held && freeze_by_cap {
            quota = min_quota(
                quota,
                Some(quota_of_cpus(cfg.kubernetes.probe_pod_cap_cpus)),
            );
            quota_reason = format!(
                "{}: pod {} capped at {} CPUs instead of frozen ({})",
                want.freeze_reason,
                p.pod,
                cfg.kubernetes.probe_pod_cap_cpus,
                if p.liveness_probe {
                    "it has liveness or startup probes"
                } else {
                    "no freezer"
                }
            );
            quota_cause = want.freeze_cause;
        }
        if caps.has(Knob::CpuMax) {
            next.quota_us = Some(quota);
            if all || prev.quota_us != Some(quota) {
                plan.push(set(
                    Knob::CpuMax,
                    KnobValue::Quota {
                        quota_us: quota,
                        period_us: CFS_PERIOD_US,
                    },
                    quota_reason,
                    if all && prev.quota_us == Some(quota) {
                        Cause::Static
                    } else {
                        quota_cause
                    },
                ));
            }
        }
        if !freeze_by_cap {
            next.frozen = frozen_wanted;
            if all || prev.frozen != frozen_wanted {
                let (reason, cause) = match (frozen_wanted, frozen_held, want.duty) {
                    (true, false, Some(duty)) => (
                        format!("{duty}: pod {} frozen for the rest of the period", p.pod),
                        Cause::Interference,
                    ),
                    (true, _, _) => (
                        format!("{}: pod {} frozen", want.freeze_reason, p.pod),
                        want.freeze_cause,
                    ),
                    (false, _, Some(duty)) if prev.frozen => (
                        format!("{duty}: pod {} runs its share", p.pod),
                        Cause::Interference,
                    ),
                    (false, _, None) if prev.frozen => {
                        (format!("pod {} thawed", p.pod), Cause::Release)
                    }
                    _ => (format!("pod {} runs", p.pod), Cause::Static),
                };
                plan.push(set(
                    Knob::Freeze,
                    KnobValue::Bool(frozen_wanted),
                    reason,
                    cause,
                ));
            }
        }
        // The cpuset, pod and containers.
        if !by_cap && caps.has(Knob::CpusetCpus) {
            next.cpus = Some(want.cpus.clone());
            if all || prev.cpus.as_ref() != Some(want.cpus) {
                let old = prev.cpus.clone().or_else(|| w.cpuset.clone());
                let shrinking = old.as_ref().is_none_or(|o| !o.is_subset(want.cpus));
                let reason = format!("{}: pod {} on CPUs [{}]", want.reason, p.pod, want.cpus);
                let cause = if all && prev.cpus.as_ref() == Some(want.cpus) {
                    Cause::Static
                } else {
                    want.cause
                };
                let mk = |t: Target| {
                    Action::set(
                        t,
                        Knob::CpusetCpus,
                        KnobValue::Cpus(want.cpus.clone()),
                        reason.clone(),
                    )
                    .because(cause)
                };
                let mut order = vec![mk(Target::Foreign(g.clone()))];
                // v1 gives every container its own cpuset, a subset of its pod's; v2 containers
                // inherit the pod's unless the kubelet pinned them (it does so only under the
                // static policy, where tidal does not pin).
                if caps.cpuset_v1 {
                    order.extend(p.containers.iter().map(|c| mk(Target::Foreign(c.clone()))));
                    if shrinking {
                        order.reverse();
                    }
                }
                plan.actions.extend(order);
            }
        }
        st.pods.insert(g.clone(), next);
    }
    st.pods.retain(|g, _| seen.contains(g));
    st.io_limited_foreign = io_seen;
}

/// The pods' knobs whose originals the actuator should journal ahead of urgent writes.
pub fn remembered(snap: &Snapshot, out: &mut Vec<Remember>) {
    for (_, g, p) in offline(snap) {
        for knob in [Knob::CpusetCpus, Knob::CpuMax, Knob::Freeze, Knob::CpuIdle] {
            out.push(Remember {
                target: Target::Foreign(g.clone()),
                knob,
            });
        }
        for c in &p.containers {
            out.push(Remember {
                target: Target::Foreign(c.clone()),
                knob: Knob::CpusetCpus,
            });
        }
    }
}

/// Gives every offline pod its CPUs and its own limit back, thawed (agent stopping).
pub fn release(snap: &Snapshot, cfg: &Config, caps: &Capabilities, plan: &mut Plan) {
    let pool = snap.offline_pool();
    let by_cap = capped_not_pinned(snap, cfg);
    for (_, g, p) in offline(snap) {
        let t = Target::Foreign(g.clone());
        let reason = format!("agent stopping: pod {} gets its CPUs back", p.pod);
        if caps.has(Knob::Freeze) && !p.liveness_probe {
            plan.push(
                Action::set(
                    t.clone(),
                    Knob::Freeze,
                    KnobValue::Bool(false),
                    reason.clone(),
                )
                .because(Cause::Shutdown),
            );
        }
        if caps.has(Knob::CpuMax) {
            plan.push(
                Action::set(
                    t.clone(),
                    Knob::CpuMax,
                    KnobValue::Quota {
                        quota_us: limit_quota(p),
                        period_us: CFS_PERIOD_US,
                    },
                    reason.clone(),
                )
                .because(Cause::Shutdown),
            );
        }
        if !by_cap && caps.has(Knob::CpusetCpus) {
            let mk = |t: Target| {
                Action::set(
                    t,
                    Knob::CpusetCpus,
                    KnobValue::Cpus(pool.clone()),
                    reason.clone(),
                )
                .because(Cause::Shutdown)
            };
            plan.push(mk(t.clone()));
            if caps.cpuset_v1 {
                for c in &p.containers {
                    plan.push(mk(Target::Foreign(c.clone())));
                }
            }
        }
    }
}
