//! Memory QoS: online workloads' protection and offline work's ceiling.
//!
//! - Protection (cgroup v2): an online workload with a declared request (`tidal run
//!   --memory-request`, a pod's memory requests) gets `memory.min`/`memory.low` as configured shares
//!   of it. Protection only holds as far as every ancestor is protected too, so the online level
//!   group and the tidal root get the sums of their online workloads'. A pod's ancestors are the
//!   kubelet's tiers: not tidal's to write (`tidal doctor` says when they lack protection).
//! - Ceiling: the offline parent's `memory.high` (v2; the hard limit on v1) stays between
//!   `min_fraction` and `max_fraction` of RAM. When node memory runs short or online memory
//!   pressure rises it is cut at once to a step over offline's working set (or a step, if lower);
//!   when the kernel starts reclaiming (offline's page cache pushing out everyone's) it is trimmed
//!   to a step over that working set, no lower. Raised half a step after a calm period. Offline pods
//!   (v2) share it: each gets `memory.high` at an equal part of it.

use super::state::PolicyState;
use crate::config::Config;
use std::collections::BTreeMap;
use tidal_model::{
    Action, Capabilities, Cause, GroupPath, Knob, KnobValue, Plan, QosLevel, Snapshot, Target,
};

fn set(t: Target, knob: Knob, v: Option<u64>, why: String, cause: Cause) -> Action {
    Action::set(t, knob, KnobValue::Bytes(v), why).because(cause)
}

/// `memory.min` and `memory.low` for an online workload that declares `request` bytes: the
/// configured shares of it (`memory.min_ratio`, `memory.low_ratio`).
pub fn protection_of(request: u64, cfg: &Config) -> (u64, u64) {
    let share = |f: f64| (request as f64 * f) as u64;
    (share(cfg.memory.min_ratio), share(cfg.memory.low_ratio))
}

/// `memory.min`/`memory.low` for online workloads with a request, and their ancestors' sums.
pub fn protection(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    static_due: bool,
    st: &mut PolicyState,
    plan: &mut Plan,
) {
    if !(caps.has(Knob::MemoryLow) && caps.has(Knob::MemoryMin)) {
        return;
    }
    let mut want: BTreeMap<Target, (u64, u64, String)> = BTreeMap::new();
    let mut levels: BTreeMap<QosLevel, (u64, u64)> = BTreeMap::new();
    for w in snap.workloads.iter().filter(|w| w.level.is_online()) {
        let Some(r) = w.memory_request else { continue };
        let (mn, lo) = protection_of(r, cfg);
        want.insert(
            w.group.clone(),
            (
                mn,
                lo,
                format!("{} declares {} MiB: protected", w.name, r >> 20),
            ),
        );
        if w.managed {
            let e = levels.entry(w.level).or_default();
            *e = (e.0.saturating_add(mn), e.1.saturating_add(lo));
        }
    }
    let mut root = (0u64, 0u64);
    for (l, (mn, lo)) in &levels {
        root = (root.0.saturating_add(*mn), root.1.saturating_add(*lo));
        want.insert(
            Target::Tidal(l.group_path()),
            (
                *mn,
                *lo,
                format!("level {l}: the sum of its workloads' protection"),
            ),
        );
    }
    // Levels that no longer have protected workloads lose theirs.
    for l in QosLevel::ALL.into_iter().filter(|l| l.is_online()) {
        let t = Target::Tidal(l.group_path());
        if st.mem_protect.contains_key(&t)
            && !want.contains_key(&t)
            && snap.levels_present.contains(&l)
        {
            want.insert(t, (0, 0, format!("level {l}: no protected workload left")));
        }
    }
    if root != (0, 0)
        || st
            .mem_protect
            .contains_key(&Target::Tidal(GroupPath::root()))
    {
        want.insert(
            Target::Tidal(GroupPath::root()),
            (
                root.0,
                root.1,
                "tidal root: the sum of every online workload's protection".into(),
            ),
        );
    }
    let mut next = BTreeMap::new();
    for (t, (mn, lo, why)) in want {
        let prev = st.mem_protect.get(&t).copied();
        if static_due || prev != Some((mn, lo)) {
            // Parents are listed before children (paths sort so), and low before min: the kernel
            // takes any order, and a reader of the plan sees the chain top-down.
            plan.push(set(
                t.clone(),
                Knob::MemoryLow,
                Some(lo),
                why.clone(),
                Cause::Static,
            ));
            plan.push(set(
                t.clone(),
                Knob::MemoryMin,
                Some(mn),
                why,
                Cause::Static,
            ));
        }
        if (mn, lo) != (0, 0) {
            next.insert(t, (mn, lo));
        }
    }
    st.mem_protect = next;
}

/// Keeps the offline memory ceiling between its bounds, moved by memory shortage and online memory
/// pressure.
pub fn ceiling(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    static_due: bool,
    st: &mut PolicyState,
    plan: &mut Plan,
) {
    let c = &cfg.memory.ceiling;
    let knob = if caps.has(Knob::MemoryHigh) {
        Knob::MemoryHigh
    } else if caps.has(Knob::MemoryMax) {
        Knob::MemoryMax
    } else {
        return;
    };
    let tidal_offline = super::confine::tidal_offline_present(snap);
    let pods: Vec<Target> = super::pods::offline(snap)
        .map(|(_, g, _)| Target::Foreign(g.clone()))
        .collect();
    // Pods carry only memory.high (v2): on v1 a pod-only node has no ceiling to report.
    let pods_carry = knob == Knob::MemoryHigh && !pods.is_empty();
    if !c.enabled || (!tidal_offline && !pods_carry) {
        st.ceiling = None;
        return;
    }
    let (Some(total), Some(avail)) = (snap.mem_total_bytes, snap.mem_available_bytes) else {
        return;
    };
    let now = snap.now_ms;
    let frac = |f: f64| (total as f64 * f) as u64;
    let (lo, hi, step) = (
        frac(c.min_fraction),
        frac(c.max_fraction),
        frac(c.step_fraction).max(1),
    );
    let cur = st.ceiling.unwrap_or(hi).clamp(lo, hi);
    let short = avail < frac(c.reserve_percent / 100.0);
    let pressed = snap
        .online_mem_psi
        .is_some_and(|p| p > c.online_psi_threshold);
    let reclaiming = c.reclaim_scan_threshold > 0.0
        && snap
            .reclaim_scan_per_s
            .is_some_and(|r| r > c.reclaim_scan_threshold);
    let mut next = cur;
    let mut why = String::new();
    let mut cause = Cause::Static;
    if short || pressed || reclaiming {
        st.ceiling_calm_since_ms = None;
        let may = st
            .ceiling_cut_ms
            .is_none_or(|t| now.saturating_sub(t) >= c.interval.0);
        // A cut must bite: from a ceiling far above what offline holds, straight down to a step
        // over its working set (its page cache is then reclaimed in its own group, not across the
        // node). Kernel reclaim alone goes no lower: anonymous memory has nowhere to go without
        // swap, so a ceiling under it would only make an eviction due. Pods: a step at a time.
        let over_ws = snap
            .offline_memory_bytes
            .filter(|_| tidal_offline)
            .map(|u| u.saturating_add(step));
        let target = match over_ws {
            Some(w) if !short && !pressed => w,
            Some(w) => w.min(cur.saturating_sub(step)),
            None => cur.saturating_sub(step),
        };
        if may && cur > lo && target < cur {
            next = target.max(lo);
            st.ceiling_cut_ms = Some(now);
            cause = Cause::Memory;
            why = if reclaiming && !short && !pressed {
                format!(
                    "the kernel reclaims {:.0} pages/s (over {:.0}): offline memory ceiling cut to {} MiB",
                    snap.reclaim_scan_per_s.unwrap_or(0.0),
                    c.reclaim_scan_threshold,
                    next >> 20
                )
            } else if short {
                format!(
                    "MemAvailable {} MiB under the {}% reserve: offline memory ceiling cut to {} MiB",
                    avail >> 20,
                    c.reserve_percent,
                    next >> 20
                )
            } else {
                format!(
                    "online memory pressure {:.1}% over {}%: offline memory ceiling cut to {} MiB",
                    snap.online_mem_psi.unwrap_or(0.0),
                    c.online_psi_threshold,
                    next >> 20
                )
            };
        }
    } else {
        let since = *st.ceiling_calm_since_ms.get_or_insert(now);
        if cur < hi && now.saturating_sub(since) >= c.calm_period.0 {
            next = cur.saturating_add(step / 2).min(hi);
            st.ceiling_calm_since_ms = Some(now);
            cause = Cause::Release;
            why = format!(
                "memory calm for {}: offline memory ceiling raised to {} MiB",
                c.calm_period,
                next >> 20
            );
        }
    }
    // Offline held above its ceiling (v1: the limit could not go below what it held): a write is due
    // every interval until it is under again.
    let over = snap
        .offline_memory_bytes
        .is_some_and(|u| u > next && knob == Knob::MemoryMax);
    let retry = over
        && st
            .ceiling_cut_ms
            .is_none_or(|t| now.saturating_sub(t) >= c.interval.0);
    if over && retry {
        st.ceiling_cut_ms = Some(now);
    }
    // Offline pods have no common parent to hold the ceiling: each gets an equal share of it, so
    // together they stay under it (written again when their number changes).
    let pods_changed = st.ceiling_pods != pods.len();
    st.ceiling_pods = pods.len();
    if st.ceiling != Some(next) || static_due || retry || pods_changed {
        if why.is_empty() {
            why = format!("offline memory ceiling {} MiB", next >> 20);
        }
        if tidal_offline {
            // A v1 limit below what offline holds is refused (EBUSY: anonymous memory cannot be
            // reclaimed without swap): stop it growing where it is; eviction takes it down.
            let value = match (knob, snap.offline_memory_bytes) {
                (Knob::MemoryMax, Some(u)) if u > next => u.saturating_add(4 << 20),
                _ => next,
            };
            plan.push(set(
                Target::Tidal(QosLevel::offline_parent()),
                knob,
                Some(value),
                why.clone(),
                cause,
            ));
        }
        // Pods: memory.high only (a hard limit would OOM-kill inside the pod).
        if knob == Knob::MemoryHigh {
            let share = next / pods.len().max(1) as u64;
            for p in &pods {
                plan.push(set(
                    p.clone(),
                    Knob::MemoryHigh,
                    Some(share),
                    format!(
                        "{why}: {} MiB for each of {} offline pod(s)",
                        share >> 20,
                        pods.len()
                    ),
                    cause,
                ));
            }
        }
    }
    st.ceiling = Some(next);
}

/// Lifts the ceiling (agent stopping).
pub fn release(snap: &Snapshot, caps: &Capabilities, plan: &mut Plan) {
    let reason = "agent stopping: offline memory ceiling lifted";
    if super::confine::tidal_offline_present(snap) {
        let knob = if caps.has(Knob::MemoryHigh) {
            Knob::MemoryHigh
        } else {
            Knob::MemoryMax
        };
        if caps.has(knob) {
            plan.push(set(
                Target::Tidal(QosLevel::offline_parent()),
                knob,
                None,
                reason.into(),
                Cause::Shutdown,
            ));
        }
    }
    if caps.has(Knob::MemoryHigh) {
        for (_, g, _) in super::pods::offline(snap) {
            plan.push(set(
                Target::Foreign(g.clone()),
                Knob::MemoryHigh,
                None,
                reason.into(),
                Cause::Shutdown,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::{Op, WorkloadSnapshot};

    const GIB: u64 = 1 << 30;

    fn snap(now_ms: u64, offline_bytes: u64, reclaim: Option<f64>) -> Snapshot {
        Snapshot {
            now_ms,
            mem_total_bytes: Some(20 * GIB),
            mem_available_bytes: Some(15 * GIB),
            levels_present: [QosLevel::Offline].into_iter().collect(),
            offline_memory_bytes: Some(offline_bytes),
            reclaim_scan_per_s: reclaim,
            ..Default::default()
        }
    }

    fn ceiling_set(p: &Plan) -> Option<u64> {
        p.actions.iter().find_map(|a| match &a.op {
            Op::Set {
                knob: Knob::MemoryHigh,
                value: KnobValue::Bytes(b),
                ..
            } => *b,
            _ => None,
        })
    }

    fn step(s: &Snapshot, cfg: &Config, st: &mut PolicyState) -> (Option<u64>, Plan) {
        let mut p = Plan::default();
        ceiling(s, cfg, &Capabilities::full(2), false, st, &mut p);
        (st.ceiling, p)
    }

    fn online(
        level: QosLevel,
        name: &str,
        request: Option<u64>,
        managed: bool,
    ) -> WorkloadSnapshot {
        WorkloadSnapshot {
            managed,
            memory_request: request,
            ..WorkloadSnapshot::unread(
                Target::Tidal(level.group_path().join(name).unwrap()),
                level,
                name,
            )
        }
    }

    fn protected(p: &Plan) -> BTreeMap<(String, Knob), u64> {
        p.actions
            .iter()
            .filter_map(|a| match &a.op {
                Op::Set {
                    target,
                    knob: k @ (Knob::MemoryLow | Knob::MemoryMin),
                    value: KnobValue::Bytes(Some(b)),
                } => Some(((target.to_string(), *k), *b)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn protection_goes_up_the_chain_from_the_workload_to_the_tidal_root() {
        let mut cfg = Config::default();
        cfg.memory.min_ratio = 0.5;
        cfg.memory.low_ratio = 1.0;
        let caps = Capabilities::full(2);
        let mut s = snap(0, 0, None);
        s.workloads = vec![
            online(QosLevel::OnlineCritical, "db", Some(4 * GIB), true),
            online(QosLevel::Online, "web", Some(2 * GIB), true),
            // Not tidal's to sum into a level (a pod's group): protected itself, not summed.
            online(QosLevel::Online, "pod", Some(GIB), false),
            // No request: nothing.
            online(QosLevel::OnlineHigh, "cache", None, true),
            // Offline work is never protected.
            online(QosLevel::Offline, "etl", Some(8 * GIB), true),
        ];
        s.levels_present = s.workloads.iter().map(|w| w.level).collect();
        let mut st = PolicyState::default();
        let mut p = Plan::default();
        protection(&s, &cfg, &caps, false, &mut st, &mut p);
        let got = protected(&p);
        let want = |t: &str, k: Knob| got.get(&(t.to_string(), k)).copied();
        assert_eq!(want("online-critical/db", Knob::MemoryLow), Some(4 * GIB));
        assert_eq!(want("online-critical/db", Knob::MemoryMin), Some(2 * GIB));
        assert_eq!(want("online-critical", Knob::MemoryLow), Some(4 * GIB));
        assert_eq!(want("online", Knob::MemoryLow), Some(2 * GIB));
        assert_eq!(want("online", Knob::MemoryMin), Some(GIB));
        assert_eq!(want("online/pod", Knob::MemoryLow), Some(GIB));
        // The root holds the sum of the levels (the unmanaged pod is not in a level's sum).
        let root = Target::Tidal(GroupPath::root()).to_string();
        assert_eq!(want(&root, Knob::MemoryLow), Some(6 * GIB));
        assert!(want("online-high/cache", Knob::MemoryLow).is_none());
        assert!(want("offline/offline/etl", Knob::MemoryLow).is_none());
        assert!(
            !got.keys().any(|(t, _)| t.starts_with("offline")),
            "{got:?}"
        );
        // Nothing changed: nothing written again until the static pass.
        let mut p = Plan::default();
        protection(&s, &cfg, &caps, false, &mut st, &mut p);
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        // The web workload ends: its level's protection is taken back to 0, the root's shrinks.
        s.workloads.retain(|w| w.name != "web" && w.name != "pod");
        let mut p = Plan::default();
        protection(&s, &cfg, &caps, false, &mut st, &mut p);
        let zeroed = p.actions.iter().any(|a| {
            matches!(&a.op,
            Op::Set { target, knob: Knob::MemoryLow, value: KnobValue::Bytes(Some(0)) }
                if target.to_string() == "online")
        });
        assert!(zeroed, "{:?}", p.actions);
        // Without memory.min/memory.low (v1): nothing at all.
        let mut v1 = caps.clone();
        v1.knobs.remove(&Knob::MemoryMin);
        let mut p = Plan::default();
        protection(&s, &cfg, &v1, true, &mut PolicyState::default(), &mut p);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn kernel_reclaim_trims_the_ceiling_to_a_step_over_offline_s_working_set() {
        let cfg = Config::default();
        let mut st = PolicyState::default();
        // Quiet: the ceiling sits at max_fraction (18 GiB of 20).
        let (c, _) = step(&snap(0, 6 * GIB, Some(0.0)), &cfg, &mut st);
        assert_eq!(c, Some(18 * GIB));
        // The kernel reclaims: cut at once to a step (1 GiB) over the 6 GiB offline's working set
        // holds, never under it (that would only make an eviction due).
        let (c, p) = step(&snap(1_000, 6 * GIB, Some(50_000.0)), &cfg, &mut st);
        assert_eq!(c, Some(7 * GIB));
        assert_eq!(ceiling_set(&p), Some(7 * GIB));
        let why = &p.actions[0].reason;
        assert!(why.contains("reclaims 50000 pages/s"), "{why}");
        // Not again within the interval; after it, only if offline's working set shrank.
        let (c, _) = step(&snap(1_500, 3 * GIB, Some(50_000.0)), &cfg, &mut st);
        assert_eq!(c, Some(7 * GIB));
        let (c, _) = step(&snap(2_100, 6 * GIB, Some(50_000.0)), &cfg, &mut st);
        assert_eq!(c, Some(7 * GIB));
        let (c, _) = step(&snap(3_200, 3 * GIB, Some(50_000.0)), &cfg, &mut st);
        assert_eq!(c, Some(4 * GIB));
        // Memory short: a step under the ceiling each interval (eviction's business below).
        let mut short = snap(4_300, 4 * GIB, None);
        short.mem_available_bytes = Some(GIB);
        let (c, _) = step(&short, &cfg, &mut st);
        assert_eq!(c, Some(3 * GIB));
        // Never under min_fraction.
        short.now_ms = 5_400;
        step(&short, &cfg, &mut st);
        short.now_ms = 6_500;
        let (c, _) = step(&short, &cfg, &mut st);
        assert_eq!(c, Some(2 * GIB));
        // Calm (below the threshold) for calm_period: half a step up.
        step(&snap(7_000, GIB, Some(100.0)), &cfg, &mut st);
        let (c, _) = step(&snap(17_100, GIB, Some(100.0)), &cfg, &mut st);
        assert_eq!(c, Some(2 * GIB + GIB / 2));
    }

    #[test]
    fn online_memory_pressure_cuts_the_ceiling_each_interval_and_unknown_pressure_does_not() {
        let cfg = Config::default();
        let threshold = cfg.memory.ceiling.online_psi_threshold;
        let mut st = PolicyState::default();
        let (c, _) = step(&snap(0, 6 * GIB, Some(0.0)), &cfg, &mut st);
        assert_eq!(c, Some(18 * GIB));
        // At the threshold, or not read: no cut.
        let mut s = snap(1_000, 6 * GIB, Some(0.0));
        s.online_mem_psi = Some(threshold);
        assert_eq!(step(&s, &cfg, &mut st).0, Some(18 * GIB));
        s.online_mem_psi = None;
        assert_eq!(step(&s, &cfg, &mut st).0, Some(18 * GIB));
        // Over it: at once to a step over offline's working set (6 GiB + 1), quoting the pressure.
        s.now_ms = 2_000;
        s.online_mem_psi = Some(threshold + 1.0);
        let (c, p) = step(&s, &cfg, &mut st);
        assert_eq!(c, Some(7 * GIB));
        let why = &p.actions[0].reason;
        assert!(why.contains("online memory pressure"), "{why}");
        // Still pressed: nothing within the interval, then a step under the ceiling, below what
        // offline holds (unlike kernel reclaim, which stops over the working set).
        s.now_ms = 2_500;
        assert_eq!(step(&s, &cfg, &mut st).0, Some(7 * GIB));
        s.now_ms = 3_100;
        assert_eq!(step(&s, &cfg, &mut st).0, Some(6 * GIB));
        s.now_ms = 4_200;
        assert_eq!(step(&s, &cfg, &mut st).0, Some(5 * GIB));
    }

    #[test]
    fn a_zero_reclaim_threshold_turns_the_trigger_off() {
        let mut cfg = Config::default();
        cfg.memory.ceiling.reclaim_scan_threshold = 0.0;
        let mut st = PolicyState::default();
        step(&snap(0, 6 * GIB, Some(0.0)), &cfg, &mut st);
        let (c, _) = step(&snap(1_000, 6 * GIB, Some(1e9)), &cfg, &mut st);
        assert_eq!(c, Some(18 * GIB));
    }
}
