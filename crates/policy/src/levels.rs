//! Static per-level settings: what each QoS level gets from the kernel with no agent running.
//! Online levels are weighted 4× / 2× / 1×; offline levels live under one shared parent in the idle
//! class (or openEuler `cpu.qos_level=-1`), where `offline-low` yields to `offline`.

use tidal_model::{Action, Capabilities, GroupPath, Knob, KnobValue, Plan, QosLevel, Target};

/// `cpu.shares` of a normal group (v2 weight 100).
pub const BASE_SHARES: u64 = 1024;
/// Weight of `offline-low` inside the offline parent: it yields to `offline`.
pub const OFFLINE_LOW_SHARES: u64 = 2;
/// IO weight of the offline parent where an IO weight file exists (v2 scale).
pub const OFFLINE_IO_WEIGHT: u64 = 10;

/// IO weight of an offline pod against the other pods of its tier (the kubelet leaves them at the
/// kernel's 100): 20 for `offline`, 10 for `offline-low`, apart still on BFQ's scale (a tenth).
pub fn pod_io_weight(level: QosLevel) -> u64 {
    match level {
        QosLevel::OfflineLow => 10,
        _ => 20,
    }
}

/// IO weight of each level's group (v2 scale; 100 is the kernel's default). Inside the offline
/// parent, `offline-low` yields to `offline`.
pub fn level_io_weight(level: QosLevel) -> u64 {
    match level {
        QosLevel::OnlineCritical => 400,
        QosLevel::OnlineHigh => 200,
        QosLevel::Online | QosLevel::Offline => 100,
        QosLevel::OfflineLow => 10,
    }
}
pub const CFS_PERIOD_US: u64 = 100_000;

pub fn level_shares(level: QosLevel) -> u64 {
    match level {
        QosLevel::OnlineCritical => 4 * BASE_SHARES,
        QosLevel::OnlineHigh => 2 * BASE_SHARES,
        QosLevel::Online | QosLevel::Offline => BASE_SHARES,
        QosLevel::OfflineLow => OFFLINE_LOW_SHARES,
    }
}

/// The settings of the offline parent group, chosen by what the kernel offers.
pub fn offline_parent_plan(caps: &Capabilities) -> Plan {
    let g = QosLevel::offline_parent();
    let mut p = Plan::default();
    p.push(Action::ensure(
        g.clone(),
        "shared parent of the offline levels",
    ));
    if caps.has(Knob::CpuQosLevel) {
        p.push(Action::set(
            g.clone(),
            Knob::CpuQosLevel,
            KnobValue::Level(-1),
            "openEuler kernel: offline parent gets cpu.qos_level=-1",
        ));
    } else if caps.has(Knob::CpuIdle) {
        p.push(Action::set(
            g.clone(),
            Knob::CpuIdle,
            KnobValue::Bool(true),
            "offline parent in the idle class: waking online tasks preempt it at once",
        ));
    } else if caps.has(Knob::CpuWeight) {
        p.push(Action::set(
            g.clone(),
            Knob::CpuWeight,
            KnobValue::Shares(2),
            "degraded: no cpu.idle or cpu.qos_level here, offline parent gets the minimum weight",
        ));
    }
    io_weight(
        &mut p,
        &g,
        OFFLINE_IO_WEIGHT,
        "offline IO yields to online IO",
        caps,
    );
    if caps.has(Knob::MemorySoftLimit) {
        p.push(Action::set(
            g.clone(),
            Knob::MemorySoftLimit,
            KnobValue::Bytes(Some(0)),
            "v1: offline memory is over its soft limit from the first page, so reclaim takes it first",
        ));
    }
    if caps.has(Knob::MemoryQosLevel) {
        p.push(Action::set(
            g,
            Knob::MemoryQosLevel,
            KnobValue::Level(-1),
            "openEuler kernel: offline memory is reclaimed and killed first (memory.qos_level=-1)",
        ));
    }
    p
}

/// Creates a level's group (and the offline parent for offline levels) with the level's settings.
pub fn level_plan(level: QosLevel, caps: &Capabilities) -> Plan {
    let mut p = Plan::default();
    if !level.is_online() {
        p.extend(offline_parent_plan(caps));
    }
    let g = level.group_path();
    p.push(Action::ensure(g.clone(), format!("group of level {level}")));
    if caps.has(Knob::CpuWeight) {
        let shares = level_shares(level);
        let why = match level {
            QosLevel::OnlineCritical => "online-critical: 4x the weight of online".to_string(),
            QosLevel::OnlineHigh => "online-high: 2x the weight of online".to_string(),
            QosLevel::Online => "online: base weight".to_string(),
            QosLevel::Offline => "offline: base weight inside the idle offline parent".to_string(),
            QosLevel::OfflineLow => {
                "offline-low: minimum weight, yields to offline inside the offline parent"
                    .to_string()
            }
        };
        p.push(Action::set(
            g.clone(),
            Knob::CpuWeight,
            KnobValue::Shares(shares),
            why,
        ));
    }
    let w = level_io_weight(level);
    io_weight(&mut p, &g, w, &format!("{level}: IO weight {w}"), caps);
    p
}

/// A group's IO weight in every file that can carry it: `io.weight` (blk-iocost's on v2; BFQ's on
/// v1) and, on v2, BFQ's own `io.bfq.weight`.
pub(crate) fn io_weight(
    p: &mut Plan,
    g: &(impl Into<Target> + Clone),
    w: u64,
    why: &str,
    caps: &Capabilities,
) {
    if caps.has(Knob::IoWeight) {
        p.push(Action::set(
            g.clone(),
            Knob::IoWeight,
            KnobValue::Weight(w),
            format!("{why} (acts under blk-iocost on v2, BFQ on v1)"),
        ));
    }
    if caps.has(Knob::IoBfqWeight) {
        p.push(Action::set(
            g.clone(),
            Knob::IoBfqWeight,
            KnobValue::Weight(w),
            format!("{why} (acts on devices BFQ schedules)"),
        ));
    }
}

/// Per-workload limits given by the user (`tidal run --cpus/--memory`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
}

/// Bounds of `--cpus`: at least a millicore, at most 4096 CPUs.
pub const CPUS_LIMIT: (f64, f64) = (0.001, 4096.0);

pub fn workload_limits(group: &GroupPath, limits: Limits, caps: &Capabilities) -> Plan {
    let mut p = Plan::default();
    if let Some(c) = limits.cpus {
        if caps.has(Knob::CpuMax) {
            let c = c.clamp(CPUS_LIMIT.0, CPUS_LIMIT.1);
            let quota = ((c * CFS_PERIOD_US as f64).round() as u64).max(1000);
            p.push(Action::set(
                group.clone(),
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us: Some(quota),
                    period_us: CFS_PERIOD_US,
                },
                format!("--cpus {c}: limit to {c} CPUs"),
            ));
        }
    }
    if let Some(m) = limits.memory {
        if caps.has(Knob::MemoryMax) {
            p.push(Action::set(
                group.clone(),
                Knob::MemoryMax,
                KnobValue::Bytes(Some(m)),
                format!("--memory {m}: hard memory limit"),
            ));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::Op;

    fn find(p: &Plan, group: &str, knob: Knob) -> Option<KnobValue> {
        p.actions.iter().find_map(|a| match &a.op {
            Op::Set {
                knob: k,
                value,
                target,
            } if *k == knob && target.tidal().is_some_and(|g| g.as_str() == group) => {
                Some(value.clone())
            }
            _ => None,
        })
    }

    #[test]
    fn online_levels_are_weighted_4_2_1() {
        let caps = Capabilities::full(2);
        let w = |l| find(&level_plan(l, &caps), l.group(), Knob::CpuWeight);
        assert_eq!(w(QosLevel::OnlineCritical), Some(KnobValue::Shares(4096)));
        assert_eq!(w(QosLevel::OnlineHigh), Some(KnobValue::Shares(2048)));
        assert_eq!(w(QosLevel::Online), Some(KnobValue::Shares(1024)));
        // Online levels never touch the offline parent.
        assert!(level_plan(QosLevel::Online, &caps)
            .actions
            .iter()
            .all(|a| !a.group().is_some_and(|g| g.as_str().starts_with("offline"))));
    }

    #[test]
    fn offline_levels_sit_under_an_idle_parent() {
        let mut caps = Capabilities::full(2);
        caps.knobs.remove(&Knob::CpuQosLevel);
        let p = level_plan(QosLevel::Offline, &caps);
        assert_eq!(
            find(&p, "offline", Knob::CpuIdle),
            Some(KnobValue::Bool(true))
        );
        // The idle parent itself must not get a weight: v1 refuses cpu.shares on an idle group.
        assert_eq!(find(&p, "offline", Knob::CpuWeight), None);
        let low = level_plan(QosLevel::OfflineLow, &caps);
        match (
            find(&p, "offline/offline", Knob::CpuWeight),
            find(&low, "offline/offline-low", Knob::CpuWeight),
        ) {
            (Some(KnobValue::Shares(a)), Some(KnobValue::Shares(b))) => assert!(b < a),
            other => panic!("weights missing: {other:?}"),
        }
        // Every action says why.
        assert!(p.actions.iter().all(|a| !a.reason.is_empty()));
    }

    #[test]
    fn openeuler_and_degraded_kernels() {
        let caps = Capabilities::full(2);
        let p = offline_parent_plan(&caps);
        assert_eq!(
            find(&p, "offline", Knob::CpuQosLevel),
            Some(KnobValue::Level(-1))
        );
        let mut bare = Capabilities::full(2);
        bare.knobs.remove(&Knob::CpuQosLevel);
        bare.knobs.remove(&Knob::CpuIdle);
        let p = offline_parent_plan(&bare);
        assert_eq!(
            find(&p, "offline", Knob::CpuWeight),
            Some(KnobValue::Shares(2))
        );
        assert!(p.actions.iter().any(|a| a.reason.contains("degraded")));
    }

    #[test]
    fn limits_become_quota_and_memory_max() {
        let caps = Capabilities::full(2);
        let g = GroupPath::new("online/db").unwrap();
        let p = workload_limits(
            &g,
            Limits {
                cpus: Some(1.5),
                memory: Some(1 << 30),
            },
            &caps,
        );
        assert_eq!(
            find(&p, "online/db", Knob::CpuMax),
            Some(KnobValue::Quota {
                quota_us: Some(150_000),
                period_us: 100_000
            })
        );
        assert_eq!(
            find(&p, "online/db", Knob::MemoryMax),
            Some(KnobValue::Bytes(Some(1 << 30)))
        );
    }
}
