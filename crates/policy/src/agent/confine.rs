//! CPU confinement: offline work gets the CPUs online does not need. Online need is the CPU used by
//! everything that is not offline plus headroom, in whole CPUs; offline shrinks at once and grows
//! back one step after `grow_after` of lower need. Below `confine_min_cpus` (or with suppression
//! `none`) offline keeps every CPU and the idle class alone protects online.

use super::state::{PolicyState, Step};
use super::tick::{CpuDecision, LadderTick};
use crate::config::{CapMode, Config, Suppression};
use crate::levels::CFS_PERIOD_US;
use tidal_model::{
    Action, Capabilities, Cause, CpuSet, Knob, KnobValue, Plan, QosLevel, Remember, Snapshot,
    Target,
};

/// Whole CPUs covering `usage + headroom` (a hair of tolerance keeps 1.0000001 from becoming 2).
/// Usage below `floor` (the agent, kernel threads, shells) is an idle online side: it needs no CPU.
pub fn cpus_needed(usage: f64, headroom: f64, floor: f64, n: u32) -> u32 {
    if !usage.is_finite() || usage < floor {
        return 0;
    }
    let x = (usage + headroom - 1e-6).clamp(0.0, f64::from(n));
    (x.ceil() as u32).min(n)
}

/// Whether a light sample of online usage (`usage`, CPUs) calls for a tick at once: only when
/// online now needs more CPUs than at the last tick, confinement can act on that (cpusets with at
/// least `confine_min_cpus`, or a quota) and offline holds more than it may keep, above
/// `min_offline_cpus`. Anything else waits for the next tick: an early one could change nothing.
pub fn early_tick(usage: f64, cfg: &Config, caps: &Capabilities, st: &PolicyState) -> bool {
    // The pool the last tick counted (the kubelet's exclusive CPUs are never offline's).
    let n = st
        .pool_cpus
        .unwrap_or(caps.cpus.len().min(u32::MAX as usize) as u32);
    let need = cpus_needed(
        usage.max(0.0),
        cfg.cpu.headroom_cpus,
        cfg.cpu.noise_floor_cpus,
        n,
    );
    let writable = match cfg.cpu.suppression {
        Suppression::Cpuset => caps.has(Knob::CpusetCpus),
        Suppression::Quota => caps.has(Knob::CpuMax),
        Suppression::None => false,
    };
    let keep = n.saturating_sub(need).max(cfg.cpu.min_offline_cpus.min(n));
    confines(cfg, n)
        && writable
        && need > st.online_need
        && st.offline_cpus.is_some()
        && keep < st.base_offline.unwrap_or(n).min(n)
}

/// Whether offline's CPUs follow online's need on a pool of `n` (`suppression`, and cpusets only
/// from `confine_min_cpus`).
fn confines(cfg: &Config, n: u32) -> bool {
    match cfg.cpu.suppression {
        Suppression::Cpuset => n >= cfg.cpu.confine_min_cpus,
        Suppression::Quota => true,
        Suppression::None => false,
    }
}

/// Online's need and offline's share; state keeps the hysteresis. Missing CPU readings hold the last
/// decision; `no_growth` (a latency objective with little slack) holds offline where it is.
pub fn need(snap: &Snapshot, cfg: &Config, no_growth: bool, st: &mut PolicyState) -> CpuDecision {
    let now = snap.now_ms;
    // Offline's pool: CPUs the kubelet gave exclusively to Guaranteed containers are never offered.
    let n = snap.offline_pool().len().min(u32::MAX as usize) as u32;
    st.pool_cpus = Some(n);
    let headroom = cfg.cpu.headroom_cpus;
    let floor = cfg.cpu.noise_floor_cpus;
    let min_off = cfg.cpu.min_offline_cpus.min(n);
    let cur_count = st.base_offline.unwrap_or(n).min(n);
    let confine = confines(cfg, n);
    let mut d = CpuDecision {
        n,
        confine,
        min_off,
        target: cur_count,
        why: String::new(),
        cause: Cause::Confine,
    };
    let long = snap.protected_usage();
    let short = snap.protected_usage_short();
    let need_long = long.map(|u| cpus_needed(u, headroom, floor, n));
    let need_short = short.map(|u| cpus_needed(u, headroom, floor, n));
    let Some(need_now) = need_long.max(need_short) else {
        // No CPU reading this tick: hold the last decision rather than guess.
        return d;
    };
    st.online_need = need_now;
    let room_now = n.saturating_sub(need_now);
    if !confine {
        d.target = n;
        st.grow_since_ms = None;
        if cur_count < n {
            d.cause = Cause::Release;
            d.why = format!(
                "no dynamic confinement on {n} CPUs (confine_min_cpus {}, suppression {:?}): offline gets every CPU",
                cfg.cpu.confine_min_cpus, cfg.cpu.suppression
            );
        }
    } else if cur_count < min_off {
        // Below a floor raised since (a config reload): back up to it at once.
        d.target = min_off;
        st.grow_since_ms = None;
        d.cause = Cause::Release;
        d.why = format!("offline keeps min_offline_cpus ({min_off})");
    } else if room_now < cur_count {
        // Never below min_offline_cpus: at that floor there is nothing to shrink or to say.
        let target = room_now.max(min_off);
        st.grow_since_ms = None;
        let usage = long.into_iter().chain(short).fold(0.0, f64::max);
        let needs =
            format!("online needs {need_now} of {n} CPUs (usage {usage:.2} + headroom {headroom})");
        if target < cur_count {
            d.target = target;
            d.why = if target > room_now {
                format!("{needs}: offline shrinks at once to min_offline_cpus ({min_off})")
            } else {
                format!("{needs}: offline shrinks at once")
            };
        }
    } else {
        let room = n.saturating_sub(need_long.unwrap_or(need_now));
        if room > cur_count && no_growth {
            st.grow_since_ms = None;
        } else if room > cur_count {
            let since = *st.grow_since_ms.get_or_insert(now);
            if now.saturating_sub(since) >= cfg.cpu.grow_after.0 {
                d.target = cur_count.saturating_add(cfg.cpu.grow_step).min(room);
                st.grow_since_ms = Some(now);
                d.cause = Cause::Release;
                d.why = format!(
                    "online needs {} of {n} CPUs for {}: offline grows by {}",
                    n - room,
                    cfg.cpu.grow_after,
                    d.target - cur_count
                );
            }
        } else {
            st.grow_since_ms = None;
        }
    }
    d
}

/// Offline work of either kind exists: tidal's offline levels or offline pods.
pub fn offline_present(snap: &Snapshot) -> bool {
    tidal_offline_present(snap) || super::pods::offline(snap).next().is_some()
}

/// tidal's own offline levels exist (under the tidal root).
pub fn tidal_offline_present(snap: &Snapshot) -> bool {
    QosLevel::OFFLINE
        .iter()
        .any(|l| snap.levels_present.contains(l))
}

/// Where confinement left offline this tick, for the offline pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Confined {
    pub cpus: CpuSet,
    pub pool_len: u32,
    pub reason: String,
    pub cause: Cause,
    /// The ladder's CPU-time cap in force (quota mode), in quota µs per period.
    pub cap_quota: Option<u64>,
}

/// Cpuset writes that move the offline subtree from `old` to `new`, in an order v1 accepts:
/// shrinking goes leaves first, growing goes parent first. On v2 children inherit the parent's.
pub fn cpuset_actions(
    snap: &Snapshot,
    caps: &Capabilities,
    old: &CpuSet,
    new: &CpuSet,
    reason: &str,
    cause: Cause,
) -> Vec<Action> {
    let value = KnobValue::Cpus(new.clone());
    let mk = |t: Target| Action::set(t, Knob::CpusetCpus, value.clone(), reason).because(cause);
    let mut top_down = vec![mk(Target::Tidal(QosLevel::offline_parent()))];
    if caps.cpuset_v1 {
        for l in QosLevel::OFFLINE {
            if snap.levels_present.contains(&l) {
                top_down.push(mk(Target::Tidal(l.group_path())));
            }
        }
        for w in snap
            .workloads
            .iter()
            .filter(|w| !w.level.is_online() && w.managed)
        {
            top_down.push(mk(w.group.clone()));
        }
    }
    if new.is_subset(old) && new != old {
        top_down.reverse();
    }
    top_down
}

/// Applies the CPU decision, one CPU less while the ladder's first step is in force.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    cpu: &CpuDecision,
    tick: &LadderTick,
    static_due: bool,
    st: &mut PolicyState,
    plan: &mut Plan,
) -> Confined {
    let n = cpu.n;
    let offline_present = offline_present(snap);
    let tidal_present = tidal_offline_present(snap);
    let pool = snap.offline_pool();
    st.base_offline = Some(cpu.target);
    let mut target = cpu.target;
    let mut why = cpu.why.clone();
    let mut cause = cpu.cause;
    if cpu.confine && st.interference.has(Step::ShrinkCpuset) && target > cpu.min_off.max(1) {
        target -= 1;
        // The signal that tightens now, else the one that keeps the step; when confinement moved
        // too, both are said (the cause is interference while a signal tightens).
        let signal = tick
            .pressure
            .as_deref()
            .or(tick.held.as_deref())
            .unwrap_or("online interference");
        if why.is_empty() {
            cause = Cause::Interference;
            why = format!("{signal}: offline gets one CPU less");
        } else {
            if tick.pressure.is_some() {
                cause = Cause::Interference;
            }
            why = format!("{why}; {signal}: one CPU less");
        }
    } else if tick.undone {
        cause = Cause::Release;
        why = format!(
            "{}, and it did not fall after tightening: not offline's doing, step undone",
            tick.pressure.as_deref().unwrap_or("online pressure")
        );
    } else if tick.released == Some(Step::ShrinkCpuset) && why.is_empty() {
        cause = Cause::Release;
        why = match &tick.probe {
            Some(p) => format!("{p}: offline gets its CPU back"),
            None => format!(
                "interference calm ({}): offline gets its CPU back",
                tick.calm.as_deref().unwrap_or("every signal calm")
            ),
        };
    }
    let starved = target == 0;
    let cpus_target = pool.last_n(target.max(1) as usize);
    // A new offline group starts with every CPU (not the pool, which may lack exclusive CPUs).
    let old = st.offline_cpus.clone().unwrap_or_else(|| snap.cpus.clone());
    let reason = if why.is_empty() {
        format!("offline keeps CPUs [{cpus_target}]")
    } else {
        why.clone()
    };
    let c = if why.is_empty() { Cause::Static } else { cause };
    let confined = Confined {
        cpus: cpus_target.clone(),
        pool_len: n,
        reason: reason.clone(),
        cause: c,
        cap_quota: super::cap::cap_quota_now(cfg, caps, st, &cpus_target),
    };
    if tidal_present && (cpus_target != old || static_due) {
        match cfg.cpu.suppression {
            Suppression::Cpuset if caps.has(Knob::CpusetCpus) => {
                plan.actions
                    .extend(cpuset_actions(snap, caps, &old, &cpus_target, &reason, c));
            }
            Suppression::Quota if caps.has(Knob::CpuMax) => {
                let quota = if target >= n {
                    None
                } else {
                    Some(
                        u64::from(target.max(1))
                            .saturating_mul(CFS_PERIOD_US)
                            .max(1000),
                    )
                };
                let quota = match super::cap::cap_quota_now(cfg, caps, st, &cpus_target) {
                    Some(c) => Some(quota.map_or(c, |q| q.min(c))),
                    None => quota,
                };
                plan.push(
                    Action::set(
                        QosLevel::offline_parent(),
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
    // The ladder's CPU-time cap (quota mode), when quota suppression does not already write cpu.max.
    let cap = super::cap::cap_quota_now(cfg, caps, st, &cpus_target);
    if tidal_present
        && caps.has(Knob::CpuMax)
        && cfg.cpu.suppression != Suppression::Quota
        && (cap.is_some() != st.capped
            || (static_due && cap.is_some())
            || (cap.is_some() && cpus_target != old))
    {
        let (reason, cause) = match cap {
            Some(q) => (
                format!(
                    "{}: offline CPU time capped at {:.2} CPUs",
                    tick.pressure.as_deref().unwrap_or("online interference"),
                    q as f64 / CFS_PERIOD_US as f64
                ),
                Cause::Interference,
            ),
            None => (
                match &tick.probe {
                    Some(p) => format!("{p}: offline CPU-time cap released"),
                    None => "offline CPU-time cap released".to_string(),
                },
                Cause::Release,
            ),
        };
        plan.push(
            Action::set(
                QosLevel::offline_parent(),
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us: cap,
                    period_us: CFS_PERIOD_US,
                },
                reason,
            )
            .because(cause),
        );
    }
    st.capped = tidal_present && cap.is_some() && caps.has(Knob::CpuMax);
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
    confined
}

/// The knobs whose originals should be journalled ahead of confinement and the ladder: cpusets of
/// the offline subtree, the offline parent's quota (quota mode) and the offline levels' freezers.
pub fn remembered(snap: &Snapshot, cfg: &Config, caps: &Capabilities) -> Vec<Remember> {
    let mut out = Vec::new();
    super::pods::remembered(snap, &mut out);
    if !tidal_offline_present(snap) {
        return out;
    }
    let parent = Target::Tidal(QosLevel::offline_parent());
    out.push(Remember {
        target: parent.clone(),
        knob: Knob::CpusetCpus,
    });
    if cfg.cpu.suppression == Suppression::Quota || super::cap::mode(cfg, caps) == CapMode::Quota {
        out.push(Remember {
            target: parent,
            knob: Knob::CpuMax,
        });
    }
    for l in QosLevel::OFFLINE {
        if snap.levels_present.contains(&l) {
            for knob in [Knob::CpusetCpus, Knob::Freeze] {
                out.push(Remember {
                    target: Target::Tidal(l.group_path()),
                    knob,
                });
            }
        }
    }
    for w in snap
        .workloads
        .iter()
        .filter(|w| !w.level.is_online() && w.managed)
    {
        out.push(Remember {
            target: w.group.clone(),
            knob: Knob::CpusetCpus,
        });
    }
    out
}
