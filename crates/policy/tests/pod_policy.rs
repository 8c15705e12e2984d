//! The policy for pods in the kubelet's tree (pure: no root, no cgroups, no apiserver).

use proptest::prelude::*;
use std::collections::BTreeSet;
use tidal_model::{
    Capabilities, Cause, CpuManagerPolicy, CpuSet, ForeignGroup, Knob, KnobValue, KubeletFacts, Op,
    Plan, PodInfo, PodRef, QosClass, QosLevel, Snapshot, Target, WorkloadSnapshot,
};
use tidal_policy::{decide, release_plan, Config, PolicyState, PsiLine, Step};

const TIERS: [&str; 6] = [
    "kubepods",
    "kubepods/burstable",
    "kubepods/besteffort",
    "kubepods.slice",
    "kubepods.slice/kubepods-burstable.slice",
    "kubepods.slice/kubepods-besteffort.slice",
];

fn pod(level: QosLevel, uid: &str, liveness: bool, limit: Option<u64>) -> WorkloadSnapshot {
    let g = ForeignGroup::new(&format!("kubepods/besteffort/pod{uid}")).unwrap();
    WorkloadSnapshot {
        group: Target::Foreign(g.clone()),
        level,
        name: format!("default/p-{uid}"),
        managed: false,
        procs: Some(2),
        cpu_usage_cpus: Some(0.5),
        memory_bytes: Some(100 << 20),
        pressure: Default::default(),
        nr_throttled: None,
        throttled_us: None,
        pod: Some(PodInfo {
            pod: PodRef {
                namespace: "default".into(),
                name: format!("p-{uid}"),
                uid: uid.into(),
            },
            qos_class: QosClass::BestEffort,
            containers: vec![g.join("pause1").unwrap(), g.join("ctr1").unwrap()],
            liveness_probe: liveness,
            tier_idle: false,
            cpu_limit_milli: limit,
            terminating: false,
            node_daemon: false,
            eviction_refused: false,
            memory_request: None,
            ip: None,
            slo: None,
        }),
        cpuset: Some(CpuSet::first_n(8)),
        memory_request: None,
        open_files: None,
        oom_kills: None,
    }
}

fn snapshot(workloads: Vec<WorkloadSnapshot>) -> Snapshot {
    Snapshot {
        now_ms: 0,
        cpus: CpuSet::first_n(8),
        node_busy_cpus: Some(6.0),
        node_busy_short_cpus: Some(6.0),
        offline_usage_cpus: Some(4.0),
        offline_usage_short_cpus: Some(4.0),
        online_cpu_psi: Some(0.0),
        online_cpu_psi_full: Some(0.0),
        online_cpu_psi_1s: None,
        online_cpu_psi_full_1s: None,
        mem_total_bytes: Some(16 << 30),
        mem_available_bytes: Some(8 << 30),
        levels_present: BTreeSet::new(),
        workloads,
        workloads_seq: None,
        kubelet: Some(KubeletFacts {
            cpu_manager: Some(CpuManagerPolicy::None),
            exclusive_cpus: CpuSet::new(),
        }),
        signals: Vec::new(),
        online_mem_psi: None,
        offline_memory_bytes: None,
        block_devices: vec![],
        reclaim_scan_per_s: None,
    }
}

fn sets(p: &Plan, knob: Knob) -> Vec<(&Target, &KnobValue)> {
    p.actions
        .iter()
        .filter_map(|a| match &a.op {
            Op::Set {
                target,
                knob: k,
                value,
            } if *k == knob => Some((target, value)),
            _ => None,
        })
        .collect()
}

fn foreign(s: &str) -> Target {
    Target::Foreign(ForeignGroup::new(s).unwrap())
}

#[test]
fn offline_pods_are_idle_at_the_pod_level_and_tiers_are_never_written() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = snapshot(vec![
        pod(QosLevel::Offline, "a", false, None),
        pod(QosLevel::Online, "b", false, None),
    ]);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    let idle = sets(&d.plan, Knob::CpuIdle);
    assert_eq!(
        idle,
        vec![(&foreign("kubepods/besteffort/poda"), &KnobValue::Bool(true))]
    );
    for a in &d.plan.actions {
        let t = a.op.target();
        if let Target::Foreign(g) = &t {
            assert!(!TIERS.contains(&g.as_str()), "{a}");
            // An online pod only gets what protects it: a lower oom_score_adj.
            assert!(
                !g.as_str().contains("podb") || matches!(a.op, Op::OomScoreAdj { .. }),
                "online pod tightened: {a}"
            );
        }
    }
    // The kubelet set the tier idle itself: tidal relies on it and writes nothing of the kind.
    if let Some(p) = s.workloads[0].pod.as_mut() {
        p.tier_idle = true;
    }
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert!(sets(&d.plan, Knob::CpuIdle).is_empty());
}

#[test]
fn v1_pod_cpusets_shrink_containers_first_and_grow_the_pod_first() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let s = snapshot(vec![pod(QosLevel::Offline, "a", false, None)]);
    // Online uses 2 CPUs (+ headroom): offline shrinks to 5.
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    let cs = sets(&d.plan, Knob::CpusetCpus);
    let order: Vec<String> = cs.iter().map(|(t, _)| t.to_string()).collect();
    assert_eq!(order.len(), 3, "{order:?}");
    assert!(
        order[2].ends_with("poda"),
        "pod last when shrinking: {order:?}"
    );
    let KnobValue::Cpus(c) = cs[0].1 else {
        panic!()
    };
    assert_eq!(c.len(), 5);
    // Online goes quiet: after grow_after offline grows, and the pod goes first.
    let mut s2 = s.clone();
    s2.node_busy_cpus = Some(4.0);
    s2.node_busy_short_cpus = Some(4.0);
    let mut st = d.state;
    for now in [1_000, 3_100] {
        s2.now_ms = now;
        let d = decide(&s2, &cfg, &caps, &st);
        st = d.state;
        let cs = sets(&d.plan, Knob::CpusetCpus);
        if !cs.is_empty() {
            assert!(
                cs[0].0.to_string().ends_with("poda"),
                "pod first when growing"
            );
            assert_eq!(cs.len(), 3);
        }
    }
    assert_eq!(st.offline_cpus.map(|c| c.len()), Some(6));
}

#[test]
fn static_cpu_manager_means_a_cap_and_exclusive_cpus_never_run_offline_work() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = snapshot(vec![pod(QosLevel::Offline, "a", false, Some(3000))]);
    s.levels_present = [QosLevel::Offline].into_iter().collect();
    s.kubelet = Some(KubeletFacts {
        cpu_manager: Some(CpuManagerPolicy::Static),
        exclusive_cpus: "6-7".parse().unwrap(),
    });
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    // No pod or container cpuset: the kubelet owns them.
    for (t, _) in sets(&d.plan, Knob::CpusetCpus) {
        assert!(matches!(t, Target::Tidal(_)), "{t}");
    }
    // tidal's own offline tree never gets CPUs 6-7.
    let off = d.state.offline_cpus.clone().unwrap();
    assert!(!off.contains(6) && !off.contains(7), "{off}");
    for (_, v) in sets(&d.plan, Knob::CpusetCpus) {
        let KnobValue::Cpus(c) = v else { panic!() };
        assert!(!c.contains(6) && !c.contains(7), "{c}");
    }
    // The pod is capped at what confinement leaves offline (pool of 6, online needs 2 → 3 CPUs),
    // below its own 3-CPU limit only when confinement asks for less.
    let caps_ = sets(&d.plan, Knob::CpuMax);
    let pod_cap = caps_
        .iter()
        .find(|(t, _)| matches!(t, Target::Foreign(_)))
        .expect("pod capped");
    let KnobValue::Quota { quota_us, .. } = pod_cap.1 else {
        panic!()
    };
    assert!(quota_us.is_some_and(|q| q <= 300_000), "{quota_us:?}");
}

#[test]
fn liveness_pods_are_capped_never_frozen_and_get_their_own_limit_back() {
    let mut cfg = Config::default();
    cfg.interference.psi_line = PsiLine::Some;
    let caps = Capabilities::full(8);
    let mut s = snapshot(vec![
        pod(QosLevel::Offline, "live", true, Some(2000)),
        pod(QosLevel::Offline, "plain", false, None),
    ]);
    // No confinement (so the ladder caps, then freezes) and pressure over the threshold.
    cfg.cpu.confine_min_cpus = 64;
    let mut st = PolicyState::default();
    let mut frozen_plain = false;
    let mut capped_live = false;
    for i in 0..6u64 {
        s.now_ms = i * 1_100;
        s.online_cpu_psi = Some(50.0 + i as f64);
        s.online_cpu_psi_1s = Some(50.0 / (i + 1) as f64);
        let d = decide(&s, &cfg, &caps, &st);
        for a in &d.plan.actions {
            let t = a.op.target().to_string();
            if let Some((Knob::Freeze, KnobValue::Bool(true))) = a.setting() {
                assert!(!t.contains("podlive"), "liveness pod frozen: {a}");
                frozen_plain |= t.contains("podplain");
            }
            if let Some((
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us: Some(q), ..
                },
            )) = a.setting()
            {
                if t.contains("podlive") && *q == 10_000 {
                    capped_live = true;
                    assert_eq!(a.cause, Cause::Interference);
                }
            }
        }
        st = d.state;
    }
    assert!(
        frozen_plain && capped_live,
        "frozen {frozen_plain}, capped {capped_live}"
    );
    // Stopping: the cap returns to the pod's own 2-CPU limit, not to unlimited; the other is thawed.
    let rel = release_plan(&s, &cfg, &caps, &st);
    let live = foreign("kubepods/besteffort/podlive");
    assert!(rel.actions.iter().any(|a| a.op.target() == live
        && a.setting()
            == Some((
                Knob::CpuMax,
                &KnobValue::Quota {
                    quota_us: Some(200_000),
                    period_us: 100_000
                }
            ))));
    assert!(!rel
        .actions
        .iter()
        .any(|a| a.op.target() == live && a.setting().is_some_and(|(k, _)| k == Knob::Freeze)));
    let plain = foreign("kubepods/besteffort/podplain");
    assert!(rel
        .actions
        .iter()
        .any(|a| a.op.target() == plain
            && a.setting() == Some((Knob::Freeze, &KnobValue::Bool(false)))));
}

#[test]
fn under_the_duty_cycle_a_liveness_pod_keeps_one_steady_quota_and_the_others_toggle() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = snapshot(vec![
        pod(QosLevel::Offline, "live", true, None),
        pod(QosLevel::Offline, "plain", false, None),
    ]);
    let mut st = PolicyState::default();
    let mut live_quotas = Vec::new();
    let mut plain_toggles = Vec::new();
    for i in 0..20u64 {
        s.now_ms = 50 + i * 100;
        // The cap step is in force (the default duty cycle); nothing tightens or releases.
        st.interference.steps = vec![Step::CapCpu];
        let d = decide(&s, &cfg, &caps, &st);
        for a in &d.plan.actions {
            let t = a.op.target().to_string();
            match a.setting() {
                Some((Knob::CpuMax, KnobValue::Quota { quota_us, .. }))
                    if t.contains("podlive") =>
                {
                    live_quotas.push((*quota_us, a.cause, a.reason.clone()));
                }
                Some((Knob::Freeze, KnobValue::Bool(f))) if t.contains("podplain") && i > 0 => {
                    plain_toggles.push((*f, a.cause, a.reason.clone()));
                }
                Some((Knob::Freeze, _)) if t.contains("podlive") => {
                    panic!("liveness pod frozen: {a}")
                }
                _ => {}
            }
        }
        st = d.state;
    }
    // One quota for the whole run: half of offline's CPUs, never switched twice a second.
    let offline_cpus = st.offline_cpus.as_ref().map_or(0, |c| c.len()) as u64;
    assert_eq!(live_quotas.len(), 1, "{live_quotas:?}");
    assert_eq!(live_quotas[0].0, Some(offline_cpus * 50_000));
    assert_eq!(live_quotas[0].1, Cause::Interference);
    assert!(
        live_quotas[0]
            .2
            .contains("instead (it has liveness or startup probes)"),
        "{:?}",
        live_quotas[0]
    );
    // The other pod follows the duty cycle, and each toggle says so.
    assert!(plain_toggles.len() >= 3, "{plain_toggles:?}");
    for (_, cause, why) in &plain_toggles {
        assert_eq!(*cause, Cause::Interference, "{why}");
        assert!(why.contains("duty cycle (50% of every 1s)"), "{why}");
    }
}

#[test]
fn memory_pressure_evicts_the_largest_lowest_pod_once_per_interval() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut big = pod(QosLevel::Offline, "big", false, None);
    big.memory_bytes = Some(4 << 30);
    let mut low = pod(QosLevel::OfflineLow, "low", false, None);
    low.memory_bytes = Some(1 << 20);
    let mut gone = pod(QosLevel::OfflineLow, "gone", false, None);
    gone.memory_bytes = Some(8 << 30);
    if let Some(p) = gone.pod.as_mut() {
        p.terminating = true;
    }
    // A DaemonSet's pod (marked offline-low) is never evicted: it would come straight back.
    let mut daemon = pod(QosLevel::OfflineLow, "daemon", false, None);
    daemon.memory_bytes = Some(6 << 30);
    if let Some(p) = daemon.pod.as_mut() {
        p.node_daemon = true;
    }
    // One a disruption budget just refused gives way to the next.
    let mut refused = pod(QosLevel::OfflineLow, "refused", false, None);
    refused.memory_bytes = Some(5 << 30);
    if let Some(p) = refused.pod.as_mut() {
        p.eviction_refused = true;
    }
    let online = {
        let mut o = pod(QosLevel::Online, "web", false, None);
        o.memory_bytes = Some(12 << 30);
        o
    };
    let mut s = snapshot(vec![big, low, gone, daemon, refused, online]);
    s.mem_available_bytes = Some(100 << 20);
    let evicts = |p: &Plan| -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match &a.op {
                Op::Evict { pod, .. } => Some(pod.name.clone()),
                _ => None,
            })
            .collect()
    };
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(
        evicts(&d.plan),
        vec!["p-low".to_string()],
        "lowest level first; terminating, node daemons and refused ones skipped"
    );
    assert!(d
        .plan
        .actions
        .iter()
        .all(|a| !matches!(a.op, Op::Kill { .. })));
    s.now_ms = 10_000;
    let d2 = decide(&s, &cfg, &caps, &d.state);
    assert!(
        evicts(&d2.plan).is_empty(),
        "at most one per eviction_interval"
    );
    s.now_ms = 31_000;
    assert_eq!(evicts(&decide(&s, &cfg, &caps, &d2.state).plan).len(), 1);
}

prop_compose! {
    fn arb_pods()(
        spec in prop::collection::vec((0usize..5, any::<bool>(), prop::option::of(100u64..8000)), 0..8),
        static_policy in any::<bool>(),
        exclusive in prop::option::of(0u32..8),
        psi in 0.0f64..80.0,
        avail in 0u64..(16u64 << 30),
        busy in 0.0f64..8.0,
    ) -> Snapshot {
        let ws = spec
            .iter()
            .enumerate()
            .map(|(i, (l, live, lim))| pod(QosLevel::ALL[*l], &format!("u{i}"), *live, *lim))
            .collect();
        let mut s = snapshot(ws);
        s.online_cpu_psi_full = Some(psi);
        s.mem_available_bytes = Some(avail);
        s.node_busy_cpus = Some(busy);
        s.offline_usage_cpus = Some(busy / 2.0);
        s.kubelet = Some(KubeletFacts {
            cpu_manager: Some(if static_policy { CpuManagerPolicy::Static } else { CpuManagerPolicy::None }),
            exclusive_cpus: exclusive.map(|c| CpuSet::from_ids([c])).unwrap_or_default(),
        });
        s
    }
}

proptest! {
    #[test]
    fn pods_only_get_sets_and_evictions_on_their_own_groups(
        snaps in prop::collection::vec(arb_pods(), 1..8),
    ) {
        let cfg = Config::default();
        let mut st = PolicyState::default();
        for (i, mut s) in snaps.into_iter().enumerate() {
            s.now_ms = i as u64 * 700;
            let caps = Capabilities::full(8);
            let d = decide(&s, &cfg, &caps, &st);
            let exclusive = s.kubelet.as_ref().map(|k| k.exclusive_cpus.clone()).unwrap_or_default();
            for a in &d.plan.actions {
                let Target::Foreign(g) = a.op.target() else { continue };
                prop_assert!(!TIERS.contains(&g.as_str()), "tier written: {}", a);
                let owner = s.workloads.iter().find(|w| {
                    let Target::Foreign(pg) = &w.group else { return false };
                    g == *pg || g.as_str().starts_with(&format!("{}/", pg.as_str()))
                });
                let w = owner.expect("a pod's own group");
                // Online pods only get what protects them (OOM order, memory protection).
                let protective = matches!(
                    &a.op,
                    Op::OomScoreAdj { .. } | Op::Set { knob: Knob::MemoryLow | Knob::MemoryMin, .. }
                );
                prop_assert!(!w.level.is_online() || protective, "online pod tightened: {}", a);
                if let Op::OomScoreAdj { value, .. } = &a.op {
                    prop_assert!(w.level.is_online() == (*value < 999), "{}", a);
                    continue;
                }
                let p = w.pod.as_ref().unwrap();
                match &a.op {
                    Op::Set { knob: Knob::Freeze, value: KnobValue::Bool(true), .. } => {
                        prop_assert!(!p.liveness_probe, "liveness pod frozen: {}", a);
                    }
                    Op::Set { knob: Knob::CpusetCpus, value: KnobValue::Cpus(c), .. } => {
                        prop_assert!(c.intersection(&exclusive).is_empty() || exclusive.len() == 8, "{}", a);
                        prop_assert!(!s.kubelet.as_ref().unwrap().owns_cpusets(), "static policy pinned: {}", a);
                    }
                    Op::Set { .. } | Op::Evict { .. } | Op::OomScoreAdj { .. } => {}
                    _ => prop_assert!(false, "not a set on a foreign group: {}", a),
                }
            }
            st = d.state;
        }
    }
}

#[test]
fn offline_pods_carry_the_memory_ceiling_on_v2_and_a_v1_pod_node_reports_none() {
    let cfg = Config::default();
    let s = snapshot(vec![pod(QosLevel::Offline, "batch", false, None)]);
    // v2: each offline pod gets memory.high, and the ceiling in force is reported.
    let d = decide(&s, &cfg, &Capabilities::full(8), &PolicyState::default());
    let (plan, st) = (d.plan, d.state);
    let high = sets(&plan, Knob::MemoryHigh);
    assert_eq!(high.len(), 1, "{high:?}");
    assert_eq!(high[0].0, &foreign("kubepods/besteffort/podbatch"));
    let c = st.ceiling.expect("a ceiling");
    assert_eq!(high[0].1, &KnobValue::Bytes(Some(c)));
    // Two pods share it, and together stay under it; when one goes, the other gets it all back.
    let two = snapshot(vec![
        pod(QosLevel::Offline, "batch", false, None),
        pod(QosLevel::OfflineLow, "scavenger", false, None),
    ]);
    let d2 = decide(&two, &cfg, &Capabilities::full(8), &st);
    let high = sets(&d2.plan, Knob::MemoryHigh);
    assert_eq!(high.len(), 2, "{high:?}");
    assert!(
        high.iter()
            .all(|(_, v)| **v == KnobValue::Bytes(Some(c / 2))),
        "{high:?}"
    );
    let d1 = decide(&s, &cfg, &Capabilities::full(8), &d2.state);
    assert_eq!(
        sets(&d1.plan, Knob::MemoryHigh),
        vec![(
            &foreign("kubepods/besteffort/podbatch"),
            &KnobValue::Bytes(Some(c))
        )]
    );
    // v1 (no memory.high): a hard limit would OOM-kill inside the pod, so pods get none, and
    // no ceiling is reported that nothing carries.
    let mut v1 = Capabilities::full(8);
    v1.knobs.remove(&Knob::MemoryHigh);
    let d = decide(&s, &cfg, &v1, &PolicyState::default());
    let (plan, st) = (d.plan, d.state);
    assert!(sets(&plan, Knob::MemoryMax).is_empty());
    assert!(sets(&plan, Knob::MemoryHigh).is_empty());
    assert_eq!(st.ceiling, None);
}

#[test]
fn offline_pods_get_an_io_weight_below_online_s_in_every_file_a_scheduler_reads() {
    let cfg = Config::default();
    let s = snapshot(vec![
        pod(QosLevel::Offline, "batch", false, None),
        pod(QosLevel::OfflineLow, "scavenger", false, None),
        pod(QosLevel::Online, "web", false, None),
    ]);
    let d = decide(&s, &cfg, &Capabilities::full(8), &PolicyState::default());
    for knob in [Knob::IoWeight, Knob::IoBfqWeight] {
        let w = sets(&d.plan, knob);
        assert_eq!(
            w,
            vec![
                (
                    &foreign("kubepods/besteffort/podbatch"),
                    &KnobValue::Weight(20)
                ),
                (
                    &foreign("kubepods/besteffort/podscavenger"),
                    &KnobValue::Weight(10)
                ),
            ],
            "{knob}"
        );
    }
    // Set once, and again with the static settings.
    let again = decide(&s, &cfg, &Capabilities::full(8), &d.state);
    assert!(sets(&again.plan, Knob::IoWeight).is_empty());
}

/// The stall guard's brake holds offline pods, but not those with liveness or startup probes (a
/// freeze would get them restarted; the ladder caps those instead), nor online ones.
#[test]
fn the_stall_brake_holds_offline_pods_without_probes() {
    let caps = Capabilities::full(8);
    let s = snapshot(vec![
        pod(QosLevel::Offline, "a", false, None),
        pod(QosLevel::Offline, "b", true, None),
        pod(QosLevel::OfflineLow, "c", false, None),
        pod(QosLevel::Online, "d", false, None),
    ]);
    let t = tidal_policy::agent::interference::brake_targets(&s, &caps);
    let names: Vec<String> = t.iter().map(ToString::to_string).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("poda")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("podc")), "{names:?}");
    let mut no_freezer = caps.clone();
    no_freezer.knobs.remove(&Knob::Freeze);
    assert!(tidal_policy::agent::interference::brake_targets(&s, &no_freezer).is_empty());
}
