//! Properties of the interference ladder's fixes, each from arbitrary (non-default) policy states:
//! a step that would change nothing is skipped, never taken and judged; a released step takes its
//! baseline with it; policy state keeps only what took effect; an early tick comes only when a
//! confinement change follows.

use proptest::prelude::*;
use std::collections::BTreeSet;
use tidal_model::{
    Capabilities, CpuSet, Knob, Op, Plan, QosLevel, Signal, SignalKind, Snapshot, Target,
    WorkloadSnapshot,
};
use tidal_policy::agent::confine::early_tick;
use tidal_policy::{
    decide, settle, CapMode, Config, Millis, Phase, PolicyState, Step, Suppression,
};

fn workload(level: QosLevel, name: &str) -> WorkloadSnapshot {
    WorkloadSnapshot {
        managed: true,
        procs: Some(1),
        cpu_usage_cpus: Some(0.2),
        memory_bytes: Some(64 << 20),
        ..WorkloadSnapshot::unread(
            Target::Tidal(level.group_path().join(name).unwrap()),
            level,
            name,
        )
    }
}

/// The world a tick sees: which levels have work, online usage, pressure and an objective.
#[derive(Debug, Clone)]
struct World {
    n: u32,
    levels: BTreeSet<QosLevel>,
    online_usage: f64,
    offline_usage: f64,
    psi_1s: Option<f64>,
    psi_avg10: Option<f64>,
    slack: Option<f64>,
    now: u64,
}

fn arb_world() -> impl Strategy<Value = World> {
    (
        1u32..=16,
        proptest::sample::subsequence(
            vec![
                QosLevel::OnlineCritical,
                QosLevel::Online,
                QosLevel::Offline,
                QosLevel::OfflineLow,
            ],
            0..=4,
        ),
        (0.0f64..=1.0, 0.0f64..=1.0),
        prop::option::of(0.0f64..80.0),
        prop::option::of(0.0f64..80.0),
        prop::option::of(-1.0f64..1.0),
        0u64..200_000,
    )
        .prop_map(|(n, levels, (on, off), psi_1s, psi_avg10, slack, now)| {
            let nf = f64::from(n);
            World {
                n,
                levels: levels.into_iter().collect(),
                online_usage: on * nf,
                offline_usage: off * nf * (1.0 - on),
                psi_1s,
                psi_avg10,
                slack,
                now,
            }
        })
}

fn snapshot(w: &World) -> Snapshot {
    let workloads: Vec<WorkloadSnapshot> = w
        .levels
        .iter()
        .map(|l| workload(*l, &format!("w-{}", l.name())))
        .collect();
    Snapshot {
        now_ms: w.now,
        cpus: CpuSet::first_n(w.n),
        node_busy_cpus: Some(w.online_usage + w.offline_usage),
        node_busy_short_cpus: Some(w.online_usage + w.offline_usage),
        offline_usage_cpus: Some(w.offline_usage),
        offline_usage_short_cpus: Some(w.offline_usage),
        online_cpu_psi: w.psi_avg10,
        online_cpu_psi_full: w.psi_avg10,
        online_cpu_psi_1s: w.psi_1s,
        online_cpu_psi_full_1s: w.psi_1s,
        mem_total_bytes: Some(16 << 30),
        mem_available_bytes: Some(8 << 30),
        levels_present: w.levels.clone(),
        workloads,
        workloads_seq: None,
        kubelet: None,
        signals: w
            .slack
            .map(|s| {
                vec![Signal {
                    kind: SignalKind::Slo,
                    workload: "online-critical/w".into(),
                    what: "p99 of request_duration_seconds".into(),
                    observed: 0.005 * (1.0 - s),
                    target: 0.005,
                    slack: s,
                    age_ms: None,
                    excess_z: None,
                }]
            })
            .unwrap_or_default(),
        online_mem_psi: None,
        offline_memory_bytes: None,
        block_devices: vec![],
        reclaim_scan_per_s: None,
    }
}

/// Non-default configs: confinement on or off, either cap mode, freezing allowed or not, where a
/// deep miss passes over the cap, and timings (probes included) of their own.
fn arb_config() -> impl Strategy<Value = Config> {
    (
        (1u32..8, 0u32..3, any::<bool>()),
        prop::sample::select(vec![
            Suppression::Cpuset,
            Suppression::Quota,
            Suppression::None,
        ]),
        prop::sample::select(vec![CapMode::DutyCycle, CapMode::Quota]),
        (200u64..5_000, 200u64..20_000, 200u64..5_000),
        (0.0f64..1.5, 0.0f64..0.5),
        prop::sample::select(vec![-0.2f64, -0.5, -1000.0]),
        // (slo.probe_after, slo.probe_first): off, the defaults, short, and one wait throughout.
        prop::sample::select(vec![
            (0u64, 2_000u64),
            (30_000, 2_000),
            (5_000, 1_000),
            (60_000, 60_000),
        ]),
    )
        .prop_map(
            |(
                (confine, min_off, freeze),
                supp,
                cap,
                (every, calm, grow),
                (head, floor),
                deep,
                (probe, first),
            )| {
                let mut c = Config::default();
                c.cpu.confine_min_cpus = confine;
                c.cpu.min_offline_cpus = min_off;
                c.cpu.allow_freeze = freeze || min_off == 0;
                c.cpu.suppression = supp;
                c.cpu.grow_after = Millis(grow);
                c.cpu.headroom_cpus = head;
                c.cpu.noise_floor_cpus = floor;
                c.interference.cap_mode = cap;
                c.interference.escalate_every = Millis(every);
                c.interference.calm_period = Millis(calm);
                c.interference.freeze_below = deep;
                c.slo.probe_after = Millis(probe);
                c.slo.probe_first = Some(Millis(first));
                c
            },
        )
}

/// Capabilities with some knobs missing (no freezer, no cpu.max, no cpuset).
fn arb_caps(n: u32) -> impl Strategy<Value = Capabilities> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(move |(fz, max, set)| {
        let mut c = Capabilities::full(n);
        for (keep, k) in [
            (fz, Knob::Freeze),
            (max, Knob::CpuMax),
            (set, Knob::CpusetCpus),
        ] {
            if !keep {
                c.knobs.remove(&k);
            }
        }
        c
    })
}

/// A policy state reached by running the policy over a few arbitrary ticks, each of whose writes
/// took effect or not: the states the agent really carries, not the default.
fn reached(
    cfg: &Config,
    caps: &Capabilities,
    worlds: &[World],
    oks: &[bool],
    start: u64,
) -> PolicyState {
    let mut st = PolicyState::default();
    let mut ok = oks.iter().cycle();
    for (i, w) in worlds.iter().enumerate() {
        let mut w = w.clone();
        w.n = caps.cpus.len() as u32;
        w.now = start + i as u64 * 700;
        let s = snapshot(&w);
        let d = decide(&s, cfg, caps, &st);
        let took: Vec<bool> = d
            .plan
            .actions
            .iter()
            .map(|_| *ok.next().unwrap_or(&true))
            .collect();
        st = settle(d.state, &st, &d.plan, &took);
    }
    st
}

/// Arbitrary ladder bookkeeping on top of a reached state.
fn with_ladder(mut st: PolicyState, steps: Vec<Step>, at: u64, base: Option<f64>) -> PolicyState {
    st.interference.steps = steps;
    st.interference.phase = Phase::Tightened {
        at_ms: at,
        baseline: base,
    };
    st
}

fn offline_level_present(w: &World) -> bool {
    w.levels.iter().any(|l| !l.is_online())
}

/// A test of an action: it sets `k` on `t`.
fn on(t: &Target, k: Knob) -> impl Fn(&Op) -> bool + '_ {
    move |op| matches!(op, Op::Set { target, knob, .. } if target == t && *knob == k)
}

fn plan_sets(plan: &Plan, t: &Target, k: Knob) -> bool {
    plan.actions
        .iter()
        .any(|a| matches!(&a.op, Op::Set { target, knob, .. } if target == t && *knob == k))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A step is taken only where it changes something now; one that would not is skipped, so it
    /// is never taken, judged useless and undone.
    #[test]
    fn a_step_is_taken_only_where_it_changes_something(
        cfg in arb_config(),
        (n, caps) in (1u32..=16).prop_flat_map(|n| (Just(n), arb_caps(n))),
        history in prop::collection::vec(arb_world(), 0..6),
        oks in prop::collection::vec(any::<bool>(), 1..8),
        steps in proptest::sample::subsequence(Step::LADDER.to_vec(), 0..=3),
        base in prop::option::of(0.0f64..80.0),
        w in arb_world(),
    ) {
        let prev = with_ladder(reached(&cfg, &caps, &history, &oks, 0), steps, 0, base);
        let mut w = w;
        w.n = n;
        w.now = 500_000;
        let d = decide(&snapshot(&w), &cfg, &caps, &prev);
        let before = &prev.interference.steps;
        let after = &d.state.interference.steps;
        if after.len() > before.len() {
            prop_assert_eq!(&after[..before.len()], &before[..]);
            let new = &after[before.len()..];
            // One step a tick, or a deep miss's freezes together.
            prop_assert!(new.len() == 1 || new.iter().all(|s| s.freezes()), "{:?}", new);
            prop_assert!(offline_level_present(&w), "{:?} with no offline work", new);
        }
        for &s in after.iter().skip(before.len()) {
            let freezer = caps.has(Knob::Freeze);
            let duty = cfg.interference.cap_mode == CapMode::DutyCycle && freezer;
            match s {
                Step::ShrinkCpuset => {
                    let on = match cfg.cpu.suppression {
                        Suppression::Cpuset => n >= cfg.cpu.confine_min_cpus,
                        Suppression::Quota => true,
                        Suppression::None => false,
                    };
                    prop_assert!(on, "cpuset step with confinement off");
                    // It took a CPU from offline, never below one.
                    let left = d.state.offline_cpus.as_ref().map(CpuSet::len);
                    prop_assert!(left.is_some_and(|l| l >= 1 && l < n as usize), "left {:?} of {}", left, n);
                }
                Step::CapCpu => prop_assert!(duty || caps.has(Knob::CpuMax)),
                Step::FreezeOfflineLow => {
                    prop_assert!(freezer && w.levels.contains(&QosLevel::OfflineLow));
                    prop_assert!(d.state.frozen.offline_low);
                }
                Step::FreezeOffline => {
                    prop_assert!(freezer && w.levels.contains(&QosLevel::Offline));
                    prop_assert!(d.state.frozen.offline);
                }
            }
        }
        // Undoing judges a step that was taken: a step is never undone in the tick it is taken.
        prop_assert!(after.len() + 1 >= before.len());
    }

    /// A released step takes its baseline with it: the next step is judged against its own
    /// reading, never against the pressure before an earlier step.
    #[test]
    fn a_released_step_leaves_no_baseline_behind(
        cfg in arb_config(),
        history in prop::collection::vec(arb_world(), 0..6),
        oks in prop::collection::vec(any::<bool>(), 1..8),
        steps in proptest::sample::subsequence(Step::LADDER.to_vec(), 1..=4),
        base in 0.0f64..80.0,
        calm_for in 0u64..60_000,
        w in arb_world(),
    ) {
        let caps = Capabilities::full(8);
        let mut prev = with_ladder(reached(&cfg, &caps, &history, &oks, 0), steps, 0, Some(base));
        prev.interference.phase = Phase::Calming { since_ms: 0 };
        let mut w = w;
        w.n = 8;
        w.now = calm_for;
        let d = decide(&snapshot(&w), &cfg, &caps, &prev);
        if d.state.interference.level() < prev.interference.level() {
            prop_assert!(
                !matches!(d.state.interference.phase, Phase::Tightened { baseline: Some(_), .. }),
                "{:?}", d.state.interference
            );
        }
        // Also from a tightened phase with a baseline (a probe releases from there).
        prev.interference.phase = Phase::Tightened { at_ms: 0, baseline: Some(base) };
        let d = decide(&snapshot(&w), &cfg, &caps, &prev);
        if d.state.interference.level() < prev.interference.level() {
            prop_assert!(
                !matches!(d.state.interference.phase, Phase::Tightened { baseline: Some(_), .. }),
                "{:?}", d.state.interference
            );
        }
    }

    /// What the policy assumed of a write that did not take effect is taken back: offline's CPUs
    /// and cap after a failed cpuset or quota write, a level's frozen flag after a failed freeze,
    /// a task's score after a failed oom_score_adj write. With every write taken, nothing is.
    #[test]
    fn policy_state_keeps_only_what_took_effect(
        cfg in arb_config(),
        (n, caps) in (1u32..=16).prop_flat_map(|n| (Just(n), arb_caps(n))),
        history in prop::collection::vec(arb_world(), 0..6),
        oks in prop::collection::vec(any::<bool>(), 1..8),
        w in arb_world(),
        took in prop::collection::vec(any::<bool>(), 0..40),
    ) {
        let prev = reached(&cfg, &caps, &history, &oks, 0);
        let mut w = w;
        w.n = n;
        w.now = 500_000;
        let d = decide(&snapshot(&w), &cfg, &caps, &prev);
        let ok: Vec<bool> = (0..d.plan.actions.len()).map(|i| took.get(i).copied().unwrap_or(true)).collect();
        let all = vec![true; d.plan.actions.len()];
        prop_assert_eq!(&settle(d.state.clone(), &prev, &d.plan, &all), &d.state);
        let next = settle(d.state.clone(), &prev, &d.plan, &ok);
        let failed = |pred: &dyn Fn(&Op) -> bool| d.plan.actions.iter().zip(&ok).any(|(a, ok)| !ok && pred(&a.op));
        let parent = Target::Tidal(QosLevel::offline_parent());
        if failed(&on(&parent, Knob::CpusetCpus)) || failed(&on(&parent, Knob::CpuMax)) {
            prop_assert_eq!(&next.offline_cpus, &prev.offline_cpus);
            prop_assert_eq!(next.base_offline, prev.base_offline);
            prop_assert_eq!(next.capped, prev.capped);
        }
        let off = Target::Tidal(QosLevel::Offline.group_path());
        let low = Target::Tidal(QosLevel::OfflineLow.group_path());
        if failed(&on(&off, Knob::Freeze)) {
            prop_assert_eq!(next.frozen.offline, prev.frozen.offline);
        }
        if failed(&on(&low, Knob::Freeze)) {
            prop_assert_eq!(next.frozen.offline_low, prev.frozen.offline_low);
        }
        for (a, ok) in d.plan.actions.iter().zip(&ok) {
            if let (false, Op::OomScoreAdj { target, .. }) = (ok, &a.op) {
                prop_assert!(!next.oom_set.contains(target), "{} kept after a failed write", target);
            }
        }
        // A freeze that was written stays recorded.
        if plan_sets(&d.plan, &off, Knob::Freeze) && !failed(&on(&off, Knob::Freeze)) {
            prop_assert_eq!(next.frozen.offline, d.state.frozen.offline);
        }
    }

    /// An early tick (between ticks, on a light sample) comes only when the tick it brings
    /// changes confinement: offline ends with fewer CPUs than it had.
    #[test]
    fn an_early_tick_comes_only_when_confinement_changes(
        cfg in arb_config(),
        (n, caps) in (1u32..=16).prop_flat_map(|n| (Just(n), arb_caps(n))),
        history in prop::collection::vec(arb_world(), 0..6),
        oks in prop::collection::vec(any::<bool>(), 1..8),
        usage_frac in 0.0f64..=1.0,
        w in arb_world(),
    ) {
        let prev = reached(&cfg, &caps, &history, &oks, 0);
        let usage = usage_frac * f64::from(n);
        if early_tick(usage, &cfg, &caps, &prev) {
            let mut w = w;
            w.n = n;
            w.now = 500_000;
            w.online_usage = usage;
            w.offline_usage = 0.0;
            w.levels.insert(QosLevel::Offline);
            let d = decide(&snapshot(&w), &cfg, &caps, &prev);
            let had = prev.base_offline.unwrap_or(n).min(n);
            let has = d.state.base_offline.unwrap_or(n).min(n);
            prop_assert!(has < had, "early tick, offline {} -> {}", had, has);
        }
    }
}

#[test]
fn no_early_tick_where_confinement_cannot_act() {
    let caps = Capabilities::full(2);
    let mut st = PolicyState {
        offline_cpus: Some(CpuSet::first_n(2)),
        base_offline: Some(2),
        ..PolicyState::default()
    };
    let mut cfg = Config::default();
    // Two CPUs, confinement from four (the default): a tick would change nothing.
    assert!(!early_tick(2.0, &cfg, &caps, &st));
    cfg.cpu.confine_min_cpus = 1;
    assert!(early_tick(2.0, &cfg, &caps, &st));
    // Offline already at its floor: nothing to take.
    st.base_offline = Some(1);
    assert!(!early_tick(2.0, &cfg, &caps, &st));
    // No cpuset file, or suppression off.
    st.base_offline = Some(2);
    let mut no_set = caps.clone();
    no_set.knobs.remove(&Knob::CpusetCpus);
    assert!(!early_tick(2.0, &cfg, &no_set, &st));
    cfg.cpu.suppression = Suppression::None;
    assert!(!early_tick(2.0, &cfg, &caps, &st));
}

#[test]
fn an_early_tick_counts_the_pool_the_last_tick_counted() {
    // Eight CPUs, two of them the kubelet's exclusive ones: offline's pool is six.
    let caps = Capabilities::full(8);
    let mut cfg = Config::default();
    cfg.cpu.confine_min_cpus = 1;
    let mut st = PolicyState {
        offline_cpus: Some(CpuSet::first_n(4)),
        base_offline: Some(4),
        online_need: 1,
        pool_cpus: Some(6),
        ..PolicyState::default()
    };
    // Online needs 4 of the pool's 6: offline keeps 2 of its 4, a tick is due.
    assert!(early_tick(3.0, &cfg, &caps, &st));
    // Counted against all 8 it would keep 4: nothing to do.
    st.pool_cpus = None;
    assert!(!early_tick(3.0, &cfg, &caps, &st));
}
