//! Property and unit tests of the agent policy (pure: no root, no cgroups).

use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use tidal_model::{
    Capabilities, Cause, CpuSet, GroupPath, Knob, KnobValue, Op, Plan, QosLevel, Snapshot, Target,
    WorkloadSnapshot,
};
use tidal_policy::agent::cpus_needed;
use tidal_policy::{decide, release_plan, Config, Millis, PolicyState, PsiLine, Step, Suppression};

fn workload(level: QosLevel, name: &str, procs: usize, mem: u64) -> WorkloadSnapshot {
    WorkloadSnapshot {
        managed: true,
        procs: Some(procs),
        cpu_usage_cpus: Some(0.1),
        memory_bytes: Some(mem),
        ..WorkloadSnapshot::unread(
            Target::Tidal(level.group_path().join(name).unwrap()),
            level,
            name,
        )
    }
}

fn level_of(g: Option<&GroupPath>) -> Option<QosLevel> {
    let mut cur = g.cloned();
    while let Some(p) = cur {
        if let Some(l) = QosLevel::from_group(p.as_str()) {
            return Some(l);
        }
        cur = p.parent();
    }
    None
}

fn arb_level() -> impl Strategy<Value = QosLevel> {
    prop::sample::select(QosLevel::ALL.to_vec())
}

prop_compose! {
    fn arb_snapshot()(
        n in 1u32..=16,
        busy_frac in 0.0f64..=1.0,
        off_frac in 0.0f64..=1.0,
        short_frac in 0.0f64..=1.0,
        psi in prop::option::of(0.0f64..60.0),
        avail_frac in 0.0f64..=1.0,
        now in 0u64..1_000_000,
        ws in prop::collection::vec((arb_level(), 0usize..3, 0u64..(8u64 << 30)), 0..12),
    ) -> Snapshot {
        let nf = f64::from(n);
        let busy = busy_frac * nf;
        let offline = busy * off_frac;
        let workloads: Vec<WorkloadSnapshot> = ws
            .iter()
            .enumerate()
            .map(|(i, (l, p, m))| workload(*l, &format!("w{i}"), *p, *m))
            .collect();
        let levels_present: BTreeSet<QosLevel> = workloads.iter().map(|w| w.level).collect();
        Snapshot {
            now_ms: now,
            cpus: CpuSet::first_n(n),
            node_busy_cpus: Some(busy),
            node_busy_short_cpus: Some(short_frac * nf),
            offline_usage_cpus: Some(offline),
            offline_usage_short_cpus: Some(offline.min(short_frac * nf)),
            online_cpu_psi: psi,
            online_cpu_psi_full: psi.map(|p| p / 2.0),
            online_cpu_psi_1s: None,
            online_cpu_psi_full_1s: None,
            mem_total_bytes: Some(16 << 30),
            mem_available_bytes: Some((avail_frac * (16u64 << 30) as f64) as u64),
            levels_present,
            workloads,
            workloads_seq: None,
            kubelet: None,
            signals: Vec::new(),
            online_mem_psi: None,
            offline_memory_bytes: None,
            block_devices: vec![],
            reclaim_scan_per_s: None,
        }
    }
}

fn arb_config() -> impl Strategy<Value = Config> {
    (0.0f64..2.0, 0u32..3, any::<bool>(), 1u32..8).prop_map(|(h, min, freeze, confine)| {
        let mut c = Config::default();
        c.cpu.headroom_cpus = h;
        c.cpu.allow_freeze = freeze || min == 0;
        c.cpu.min_offline_cpus = min;
        c.cpu.confine_min_cpus = confine;
        c
    })
}

/// The plan's actions that match `f`.
fn picked(p: &Plan, f: impl Fn(&&tidal_model::Action) -> bool) -> Vec<&tidal_model::Action> {
    p.actions.iter().filter(f).collect()
}

/// A stand-in kernel: the value last set per (group, knob).
fn apply(kernel: &mut BTreeMap<(Target, Knob), KnobValue>, plan: &Plan) {
    for a in &plan.actions {
        if let Op::Set {
            target,
            knob,
            value,
        } = &a.op
        {
            kernel.insert((target.clone(), *knob), value.clone());
        }
    }
}

proptest! {
    #[test]
    fn offline_never_gets_a_cpu_online_needs(snap in arb_snapshot(), cfg in arb_config()) {
        let caps = Capabilities::full(snap.cpus.len() as u32);
        let d = decide(&snap, &cfg, &caps, &PolicyState::default());
        let n = snap.cpus.len() as u32;
        let need = d.state.online_need;
        if n < cfg.cpu.confine_min_cpus {
            // Too small a machine to confine: offline keeps every CPU (the idle class protects online).
            if let Some(off) = &d.state.offline_cpus {
                prop_assert_eq!(off, &snap.cpus);
            }
            return Ok(());
        }
        prop_assert!(need >= cpus_needed(snap.protected_usage().unwrap_or(0.0), cfg.cpu.headroom_cpus, cfg.cpu.noise_floor_cpus, n));
        let Some(off) = d.state.offline_cpus.clone() else {
            // No offline group: nothing is confined.
            prop_assert!(!snap.levels_present.iter().any(|l| !l.is_online()));
            return Ok(());
        };
        let allowed = n.saturating_sub(need).max(cfg.cpu.min_offline_cpus.min(n)).max(1);
        prop_assert!(off.len() as u32 <= allowed, "offline {} > allowed {}", off, allowed);
        // Offline takes the highest CPUs, so online's need is met from the lowest ones.
        prop_assert_eq!(off.clone(), snap.cpus.last_n(off.len()));
        if n.saturating_sub(need) >= cfg.cpu.min_offline_cpus.max(1) {
            let online_part = CpuSet::first_n(need);
            prop_assert!(off.intersection(&online_part).is_empty());
        }
        // With no CPU to spare and freezing allowed, offline is frozen rather than left a CPU.
        if d.state.starved {
            prop_assert!(cfg.cpu.allow_freeze);
        }
    }

    #[test]
    fn a_tick_between_readings_of_the_workload_list_acts_as_one_on_a_new_reading(
        snap in arb_snapshot(),
        cfg in arb_config(),
    ) {
        // What is looked at only with a new reading (OOM ordering, v1 IO limits) has nothing to
        // do on a tick between readings: numbered readings act as unnumbered ones, which are
        // each looked at.
        let caps = Capabilities::full(snap.cpus.len() as u32);
        let (mut numbered, mut plain) = (snap.clone(), snap);
        numbered.workloads_seq = Some(1);
        plain.workloads_seq = None;
        let (mut sn, mut sp) = (PolicyState::default(), PolicyState::default());
        for tick in 0..3 {
            let dn = decide(&numbered, &cfg, &caps, &sn);
            let dp = decide(&plain, &cfg, &caps, &sp);
            prop_assert_eq!(&dn.plan.actions, &dp.plan.actions, "tick {}", tick);
            (sn, sp) = (dn.state, dp.state);
            numbered.now_ms += 100;
            plain.now_ms += 100;
        }
    }

    #[test]
    fn same_input_same_plan_and_reapplying_writes_nothing(snap in arb_snapshot(), cfg in arb_config()) {
        let caps = Capabilities::full(snap.cpus.len() as u32);
        let d1 = decide(&snap, &cfg, &caps, &PolicyState::default());
        prop_assert_eq!(&d1, &decide(&snap, &cfg, &caps, &PolicyState::default()));
        let mut kernel = BTreeMap::new();
        apply(&mut kernel, &d1.plan);
        let d2 = decide(&snap, &cfg, &caps, &d1.state);
        for a in &d2.plan.actions {
            if let Op::Set { target, knob, value } = &a.op {
                prop_assert_eq!(
                    kernel.get(&(target.clone(), *knob)), Some(value),
                    "second plan changes {}", a
                );
            }
        }
    }

    #[test]
    fn online_work_is_never_frozen_or_killed_and_every_action_says_why(
        snaps in prop::collection::vec(arb_snapshot(), 1..8), cfg in arb_config()
    ) {
        let mut st = PolicyState::default();
        let mut now = 0;
        for mut s in snaps {
            now += 150;
            s.now_ms = now;
            let caps = Capabilities::full(s.cpus.len() as u32);
            let d = decide(&s, &cfg, &caps, &st);
            for a in &d.plan.actions {
                prop_assert!(!a.reason.is_empty() && Cause::ALL.contains(&a.cause), "{:?}", a);
                let freezes = matches!(&a.op, Op::Set { knob: Knob::Freeze, value: KnobValue::Bool(true), .. });
                if freezes || matches!(a.op, Op::Kill { .. }) {
                    let level = level_of(a.group());
                    prop_assert!(level.is_some_and(|l| !l.is_online()), "{} hits {:?}", a, level);
                }
            }
            st = d.state;
        }
    }
}

fn base_snapshot() -> Snapshot {
    let workloads = vec![
        workload(QosLevel::Online, "web", 1, 100 << 20),
        workload(QosLevel::Offline, "batch", 1, 500 << 20),
        workload(QosLevel::OfflineLow, "scan", 1, 300 << 20),
    ];
    Snapshot {
        now_ms: 0,
        cpus: CpuSet::first_n(8),
        node_busy_cpus: Some(6.0),
        node_busy_short_cpus: Some(6.0),
        offline_usage_cpus: Some(5.0),
        offline_usage_short_cpus: Some(5.0),
        online_cpu_psi: Some(0.0),
        online_cpu_psi_full: Some(0.0),
        online_cpu_psi_1s: None,
        online_cpu_psi_full_1s: None,
        mem_total_bytes: Some(16 << 30),
        mem_available_bytes: Some(8 << 30),
        levels_present: workloads.iter().map(|w| w.level).collect(),
        workloads,
        workloads_seq: None,
        kubelet: None,
        signals: Vec::new(),
        online_mem_psi: None,
        offline_memory_bytes: None,
        block_devices: vec![],
        reclaim_scan_per_s: None,
    }
}

#[test]
fn shrinks_at_once_grows_after_hysteresis() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = base_snapshot();
    // Online uses 1 CPU: need 2 (1 + 0.25 headroom, rounded up), offline gets 6.
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.offline_cpus.as_ref().unwrap().to_string(), "2-7");
    // Online load jumps to 5 CPUs (seen in the short window first): offline drops to 2 CPUs this tick.
    s.now_ms = 100;
    s.node_busy_short_cpus = Some(7.5);
    s.offline_usage_short_cpus = Some(2.5);
    let d = decide(&s, &cfg, &caps, &d.state);
    assert_eq!(d.state.offline_cpus.as_ref().unwrap().to_string(), "6-7");
    let confine: Vec<_> = picked(&d.plan, |a| a.cause == Cause::Confine);
    assert!(!confine.is_empty());
    // v1 order when shrinking: workload groups first, the offline parent last.
    assert_eq!(confine.last().unwrap().group().unwrap().as_str(), "offline");
    assert!(
        confine[0].reason.contains("online needs 6 of 8"),
        "{}",
        confine[0].reason
    );
    // Load falls back: no growth until grow_after (2 s) has passed, then one CPU per step.
    s.node_busy_short_cpus = Some(6.0);
    s.offline_usage_short_cpus = Some(5.0);
    let mut st = d.state;
    for t in [200, 1000, 2100] {
        s.now_ms = t;
        st = decide(&s, &cfg, &caps, &st).state;
        assert_eq!(st.offline_cpus.as_ref().unwrap().len(), 2, "t={t}");
    }
    s.now_ms = 2300;
    let d = decide(&s, &cfg, &caps, &st);
    assert_eq!(d.state.offline_cpus.as_ref().unwrap().to_string(), "5-7");
    let grow: Vec<_> = picked(&d.plan, |a| a.cause == Cause::Release);
    // Growing goes parent first.
    assert_eq!(grow[0].group().unwrap().as_str(), "offline");
}

#[test]
fn confinement_at_min_offline_cpus_shrinks_no_further_and_says_nothing() {
    let mut cfg = Config::default();
    cfg.cpu.min_offline_cpus = 2;
    let caps = Capabilities::full(8);
    let mut s = base_snapshot();
    // Online needs every CPU: offline shrinks, but only to the floor, and says so.
    s.node_busy_short_cpus = Some(8.0);
    s.offline_usage_short_cpus = Some(0.5);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.offline_cpus.as_ref().unwrap().len(), 2);
    let confine: Vec<_> = picked(&d.plan, |a| a.cause == Cause::Confine);
    assert!(
        confine[0]
            .reason
            .contains("shrinks at once to min_offline_cpus (2)"),
        "{}",
        confine[0].reason
    );
    // A floor raised since (a config reload), online quiet: offline is back at it at once.
    let mut quiet = base_snapshot();
    quiet.now_ms = 50;
    let mut low = PolicyState {
        base_offline: Some(1),
        ..Default::default()
    };
    low.offline_cpus = Some(CpuSet::first_n(8).last_n(1));
    let mut raised = cfg.clone();
    raised.cpu.min_offline_cpus = 3;
    let back = decide(&quiet, &raised, &caps, &low);
    assert!(back.state.offline_cpus.as_ref().unwrap().len() >= 3);
    assert!(
        back.plan
            .actions
            .iter()
            .any(|a| a.reason.contains("offline keeps min_offline_cpus (3)")),
        "{:?}",
        back.plan.actions
    );
    // Still busy: at the floor nothing shrinks, nothing is written, nothing claims a shrink.
    s.now_ms = 100;
    let d = decide(&s, &cfg, &caps, &d.state);
    assert_eq!(d.state.offline_cpus.as_ref().unwrap().len(), 2);
    assert!(
        !d.plan.actions.iter().any(|a| a.reason.contains("shrinks")),
        "{:?}",
        d.plan.actions
    );
}

#[test]
fn pressure_tightens_step_by_step_and_releases_after_calm() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = base_snapshot();
    // Online's own queueing ("some") alone does not tighten anything: only "full" does by default.
    s.online_cpu_psi = Some(40.0);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.interference.level(), 0);
    let mut st = PolicyState::default();
    let mut frozen = Vec::new();
    // Each step lowers the pressure, but not yet below the threshold: keep tightening.
    for (t, p) in [(0u64, 20.0), (1, 15.0), (2, 11.0), (3, 8.0)] {
        s.now_ms = t * 1000;
        s.online_cpu_psi_full = Some(p);
        let d = decide(&s, &cfg, &caps, &st);
        for a in &d.plan.actions {
            if let Op::Set {
                knob: Knob::Freeze,
                value: KnobValue::Bool(true),
                ..
            } = a.op
            {
                frozen.push((t, a.group().unwrap().as_str().to_string()));
            }
        }
        st = d.state;
    }
    // Shrink the cpuset, cap offline CPU time, freeze offline-low, freeze offline.
    assert_eq!(
        st.interference.steps,
        vec![
            Step::ShrinkCpuset,
            Step::CapCpu,
            Step::FreezeOfflineLow,
            Step::FreezeOffline
        ]
    );
    // The cap's duty cycle starts with its frozen part, so the cap acts in the tick it is taken;
    // the freeze steps then hold what it froze.
    assert_eq!(
        frozen,
        vec![
            (1, "offline/offline-low".to_string()),
            (1, "offline/offline".to_string())
        ]
    );
    assert!(st.frozen.offline && st.frozen.offline_low);
    // Calm: one step back per calm period (10 s), not sooner (no objective: no probe).
    s.online_cpu_psi_full = Some(0.5);
    let mut levels = Vec::new();
    for t in [4_000u64, 9_000, 14_000] {
        s.now_ms = t;
        st = decide(&s, &cfg, &caps, &st).state;
        levels.push(st.interference.level());
    }
    assert_eq!(levels, vec![4, 4, 3]);
    // Offline's own freeze went, and the cap's duty cycle starts with its running part.
    assert!(!st.frozen.offline && st.frozen.offline_low);
}

#[test]
fn a_tightening_step_that_does_not_lower_pressure_is_undone_and_backs_off() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = base_snapshot();
    s.online_cpu_psi_full = Some(20.0);
    s.online_cpu_psi_full_1s = Some(20.0);
    let mut st = PolicyState::default();
    let mut steps = Vec::new();
    for t in [0u64, 1_000, 2_000, 5_000, 11_000] {
        s.now_ms = t;
        let d = decide(&s, &cfg, &caps, &st);
        if t == 1_000 {
            assert!(
                d.plan
                    .actions
                    .iter()
                    .any(|a| a.reason.contains("did not fall")),
                "{:?}",
                d.plan.actions
            );
        }
        st = d.state;
        steps.push((t, st.interference.level()));
    }
    // Tighten, find it useless and undo, hold off for the calm period, then try again.
    assert_eq!(
        steps,
        vec![(0, 1), (1_000, 0), (2_000, 0), (5_000, 0), (11_000, 1)]
    );
    // Read through avg10 alone (no one-second window), pressure cannot fall a fifth in a second:
    // the step is not judged, and the ladder goes on climbing.
    s.online_cpu_psi_full_1s = None;
    let mut st = PolicyState::default();
    for t in [0u64, 1_000, 2_000] {
        s.now_ms = t;
        let d = decide(&s, &cfg, &caps, &st);
        assert!(
            !d.plan
                .actions
                .iter()
                .any(|a| a.reason.contains("did not fall")),
            "{:?}",
            d.plan.actions
        );
        st = d.state;
    }
    assert_eq!(st.interference.level(), 3, "{:?}", st.interference);
}

#[test]
fn memory_pressure_kills_largest_offline_low_first_once_per_interval() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = base_snapshot();
    s.workloads
        .push(workload(QosLevel::OfflineLow, "big", 2, 900 << 20));
    s.workloads
        .push(workload(QosLevel::OnlineCritical, "huge-db", 2, 9 << 30));
    s.mem_available_bytes = Some(100 << 20);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    let kills: Vec<_> = picked(&d.plan, |a| matches!(a.op, Op::Kill { .. }));
    assert_eq!(kills.len(), 1);
    assert_eq!(
        kills[0].group().unwrap().as_str(),
        "offline/offline-low/big"
    );
    assert!(kills[0].reason.contains("watermark"));
    s.now_ms = 5_000;
    let d2 = decide(&s, &cfg, &caps, &d.state);
    assert!(d2
        .plan
        .actions
        .iter()
        .all(|a| !matches!(a.op, Op::Kill { .. })));
    // With no offline-low left, the largest offline goes; never the online one.
    s.now_ms = 20_000;
    s.workloads.retain(|w| w.level != QosLevel::OfflineLow);
    let d3 = decide(&s, &cfg, &caps, &d2.state);
    let k: Vec<_> = picked(&d3.plan, |a| matches!(a.op, Op::Kill { .. }));
    assert_eq!(k[0].group().unwrap().as_str(), "offline/offline/batch");
}

#[test]
fn empty_groups_are_removed_after_the_grace_period_and_release_gives_all_back() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = base_snapshot();
    s.workloads[1].procs = Some(0);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert!(d
        .plan
        .actions
        .iter()
        .all(|a| !matches!(a.op, Op::RemoveGroup { .. })));
    s.now_ms = 31_000;
    let d = decide(&s, &cfg, &caps, &d.state);
    let rm: Vec<_> = picked(&d.plan, |a| matches!(a.op, Op::RemoveGroup { .. }));
    assert_eq!(rm.len(), 1);
    assert_eq!(rm[0].group().unwrap().as_str(), "offline/offline/batch");
    let rel = release_plan(&s, &cfg, &caps, &d.state);
    assert!(rel.actions.iter().any(|a| matches!(&a.op,
        Op::Set { knob: Knob::CpusetCpus, value: KnobValue::Cpus(c), .. } if c.len() == 8)));
    assert!(rel.actions.iter().any(|a| matches!(
        &a.op,
        Op::Set {
            knob: Knob::Freeze,
            value: KnobValue::Bool(false),
            ..
        }
    )));
}

#[test]
fn quota_mode_sets_cfs_quota_on_the_offline_parent() {
    let mut cfg = Config::default();
    cfg.cpu.suppression = tidal_policy::Suppression::Quota;
    let caps = Capabilities::full(8);
    let d = decide(&base_snapshot(), &cfg, &caps, &PolicyState::default());
    let q: Vec<_> = d
        .plan
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a.op,
                Op::Set {
                    knob: Knob::CpuMax,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].group().unwrap().as_str(), "offline");
    assert!(d.plan.actions.iter().all(|a| !matches!(
        a.op,
        Op::Set {
            knob: Knob::CpusetCpus,
            ..
        }
    )));
}

#[test]
fn small_machines_keep_every_cpu_for_offline_and_say_why() {
    let cfg = Config::default();
    let caps = Capabilities::full(2);
    let mut s = base_snapshot();
    s.cpus = CpuSet::first_n(2);
    // Confined by an earlier config: released with a reason.
    let prev = PolicyState {
        offline_cpus: Some(CpuSet::from_ids([1])),
        base_offline: Some(1),
        ..Default::default()
    };
    let d = decide(&s, &cfg, &caps, &prev);
    assert_eq!(d.state.offline_cpus, Some(CpuSet::first_n(2)));
    let grow: Vec<_> = picked(&d.plan, |a| a.cause == Cause::Release);
    assert!(
        grow.iter().any(|a| a.reason.contains("confine_min_cpus")),
        "{:?}",
        d.plan.actions
    );
    // With confinement asked for on any size, the same load confines.
    let mut cfg1 = Config::default();
    cfg1.cpu.confine_min_cpus = 1;
    let d = decide(&s, &cfg1, &caps, &PolicyState::default());
    assert_eq!(d.state.offline_cpus, Some(CpuSet::from_ids([1])));
}

prop_compose! {
    /// Any config validation accepts, every field drawn across (and beyond) its bounds.
    fn arb_valid_config()(
        tick in 10u64..=10_000,
        sample in 5u64..=10_000,
        stats in 10u64..=60_000,
        stat in 10u64..=3_600_000,
        headroom in 0.0f64..=1024.0,
        floor in 0.0f64..=1.0,
        min_off in 0u32..=1024,
        freeze in any::<bool>(),
        grow_after in 0u64..=600_000,
        grow_step in 1u32..=1024,
        confine in 1u32..=4096,
        supp in prop::sample::select(vec![Suppression::Cpuset, Suppression::Quota, Suppression::None]),
        psi in 0.001f64..=100.0,
        line in prop::sample::select(vec![PsiLine::Some, PsiLine::Full]),
        every in 10u64..=600_000,
        calm in 1_000u64..=3_600_000,
        wm_pct in 0.0f64..=50.0,
        wm_bytes in prop::option::of(0u64..=(1u64 << 40)),
        kill in 1_000u64..=3_600_000,
        empty in 1_000u64..=86_400_000,
    ) -> Config {
        let mut c = Config {
            tick: Millis(tick),
            ..Config::default()
        };
        c.sample_interval = Millis(sample.min(tick));
        c.stats_interval = Millis(stats.max(tick));
        c.static_interval = Millis(stat.max(tick));
        c.cpu.headroom_cpus = headroom;
        c.cpu.noise_floor_cpus = floor;
        c.cpu.min_offline_cpus = min_off;
        c.cpu.allow_freeze = freeze || min_off == 0;
        c.cpu.grow_after = Millis(grow_after);
        c.cpu.grow_step = grow_step;
        c.cpu.confine_min_cpus = confine;
        c.cpu.suppression = supp;
        c.interference.psi_threshold = psi;
        c.interference.psi_line = line;
        c.interference.escalate_every = Millis(every.max(tick));
        c.interference.calm_period = Millis(calm);
        c.memory.low_watermark_percent = wm_pct;
        c.memory.low_watermark_bytes = wm_bytes;
        c.memory.kill_interval = Millis(kill);
        c.cleanup.remove_empty_after = Millis(empty);
        c
    }
}

proptest! {
    /// Whatever valid config and whatever sequence of snapshots (times far apart or not at all,
    /// readings missing or extreme): decide, settle and release never panic or overflow.
    #[test]
    fn arbitrary_valid_configs_never_panic_or_overflow(
        cfg in arb_valid_config(),
        snaps in prop::collection::vec(arb_snapshot(), 1..6),
        gaps in prop::collection::vec(prop::sample::select(vec![0u64, 1, 100, u64::MAX / 4, u64::MAX]), 6),
        missing in prop::collection::vec(any::<bool>(), 6),
        failed in any::<bool>(),
    ) {
        prop_assert!(cfg.validate().is_ok(), "{:?}", cfg.validate());
        let mut st = PolicyState::default();
        let mut now = 0u64;
        for (i, mut s) in snaps.into_iter().enumerate() {
            now = now.saturating_add(gaps[i]);
            s.now_ms = now;
            if missing[i] {
                s.node_busy_cpus = None;
                s.mem_available_bytes = None;
                s.online_cpu_psi_full_1s = Some(100.0);
            }
            let caps = Capabilities::full(s.cpus.len() as u32);
            let d = decide(&s, &cfg, &caps, &st);
            let ok = vec![!failed; d.plan.actions.len()];
            st = tidal_policy::settle(d.state, &st, &d.plan, &ok);
            let _ = release_plan(&s, &cfg, &caps, &st);
        }
    }

    #[test]
    fn config_parsing_never_panics_on_any_text(t in "\\PC{0,300}") {
        let _ = Config::from_yaml(&t);
    }

    #[test]
    fn config_parsing_never_panics_on_any_yaml_shape(
        keys in prop::collection::vec(prop::sample::select(vec![
            "tick", "cpu", "headroom_cpus", "memory", "interference", "listen", "x",
        ]), 0..6),
        vals in prop::collection::vec(prop::sample::select(vec![
            "1", "-1", "1e400", "nan", "[1, 2]", "{a: 1}", "\"10ms\"", "~", "99999999999999999999999",
        ]), 6),
    ) {
        let doc: String = keys.iter().zip(vals.iter()).map(|(k, v)| format!("{k}: {v}\n")).collect();
        if let Err(errs) = Config::from_yaml(&doc) {
            prop_assert!(!errs.is_empty());
        }
    }
}

#[test]
fn an_emptied_victim_is_not_killed_again() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = base_snapshot();
    s.mem_available_bytes = Some(100 << 20);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    let first: Vec<_> = picked(&d.plan, |a| matches!(a.op, Op::Kill { .. }));
    assert_eq!(
        first[0].group().unwrap().as_str(),
        "offline/offline-low/scan"
    );
    // The victim died but its group stays a moment, empty; memory is still short. Next interval:
    // the empty group is no candidate, the next offline workload is.
    for w in s.workloads.iter_mut() {
        if w.name == "scan" {
            w.procs = Some(0);
        }
    }
    s.now_ms = 11_000;
    let d = decide(&s, &cfg, &caps, &d.state);
    let next: Vec<_> = picked(&d.plan, |a| matches!(a.op, Op::Kill { .. }));
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].group().unwrap().as_str(), "offline/offline/batch");
    // A workload whose size could not be read is no candidate either (no guessing).
    for w in s.workloads.iter_mut() {
        w.memory_bytes = None;
    }
    s.now_ms = 30_000;
    let d = decide(&s, &cfg, &caps, &d.state);
    assert!(picked(&d.plan, |a| matches!(a.op, Op::Kill { .. })).is_empty());
}
