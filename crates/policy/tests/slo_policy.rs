//! The latency-objective signal and the one ladder it drives (pure).

use proptest::prelude::*;
use tidal_model::{
    Capabilities, CpuSet, Knob, KnobValue, Op, QosLevel, Signal, SignalKind, Snapshot, Target,
    WorkloadSnapshot,
};
use tidal_policy::{decide, Config, Millis, Phase, PolicyState, Step};

fn workload(level: QosLevel, name: &str) -> WorkloadSnapshot {
    WorkloadSnapshot {
        managed: true,
        procs: Some(1),
        cpu_usage_cpus: Some(0.5),
        memory_bytes: Some(100 << 20),
        ..WorkloadSnapshot::unread(
            Target::Tidal(level.group_path().join(name).unwrap()),
            level,
            name,
        )
    }
}

fn snapshot(slack: Option<f64>) -> Snapshot {
    let workloads = vec![
        workload(QosLevel::OnlineCritical, "web"),
        workload(QosLevel::Offline, "etl"),
        workload(QosLevel::OfflineLow, "scan"),
    ];
    Snapshot {
        now_ms: 0,
        cpus: CpuSet::first_n(8),
        node_busy_cpus: Some(5.0),
        node_busy_short_cpus: Some(5.0),
        offline_usage_cpus: Some(3.0),
        offline_usage_short_cpus: Some(3.0),
        // Pressure alone says nothing is wrong: the objective is what speaks.
        online_cpu_psi: Some(0.0),
        online_cpu_psi_full: Some(0.0),
        online_cpu_psi_1s: Some(0.0),
        online_cpu_psi_full_1s: Some(0.0),
        mem_total_bytes: Some(16 << 30),
        mem_available_bytes: Some(8 << 30),
        levels_present: workloads.iter().map(|w| w.level).collect(),
        workloads,
        kubelet: None,
        signals: slack
            .map(|s| {
                vec![Signal {
                    kind: SignalKind::Slo,
                    workload: "online-critical/web".into(),
                    what: "p99 of request_duration_seconds".into(),
                    observed: 0.005 * (1.0 - s),
                    target: 0.005,
                    slack: s,
                }]
            })
            .unwrap_or_default(),
        online_mem_psi: None,
        offline_memory_bytes: None,
        block_devices: vec![],
        reclaim_scan_per_s: None,
    }
}

fn level_of_target(t: &Target) -> Option<QosLevel> {
    let Target::Tidal(g) = t else { return None };
    let mut cur = Some(g.clone());
    while let Some(p) = cur {
        if let Some(l) = QosLevel::from_group(p.as_str()) {
            return Some(l);
        }
        cur = p.parent();
    }
    None
}

#[test]
fn a_missed_objective_tightens_at_once_and_says_why() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let s = snapshot(Some(-0.4));
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(
        d.state.interference.level(),
        1,
        "first step on the first reading"
    );
    let why: Vec<&str> = d
        .plan
        .actions
        .iter()
        .filter(|a| a.cause == tidal_model::Cause::Interference)
        .map(|a| a.reason.as_str())
        .collect();
    assert!(!why.is_empty());
    for r in why {
        assert!(
            r.contains("objective online-critical/web")
                && r.contains("slack -40%")
                && r.contains("observed 7.00ms"),
            "{r}"
        );
    }
}

#[test]
fn little_slack_holds_growth_and_release_ample_slack_releases_after_grow_after() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    // Two steps in force, the last long ago.
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::ShrinkCpuset, Step::CapCpu];
    st.interference.phase = Phase::Tightened {
        at_ms: 0,
        baseline: Some(0.007),
    };
    // Slack 5%: held, nothing released however long.
    let mut s = snapshot(Some(0.05));
    for t in (1..=30).map(|i| i * 1_000) {
        s.now_ms = t;
        st = decide(&s, &cfg, &caps, &st).state;
        assert_eq!(st.interference.level(), 2, "t={t}");
    }
    // Slack 50%: one step released after cpu.grow_after (2 s), not before.
    s = snapshot(Some(0.5));
    let start = 31_000;
    s.now_ms = start;
    st = decide(&s, &cfg, &caps, &st).state;
    s.now_ms = start + cfg.cpu.grow_after.0 - 100;
    st = decide(&s, &cfg, &caps, &st).state;
    assert_eq!(st.interference.level(), 2);
    s.now_ms = start + cfg.cpu.grow_after.0;
    st = decide(&s, &cfg, &caps, &st).state;
    assert_eq!(st.interference.level(), 1);
}

#[test]
fn a_stale_objective_leaves_pressure_alone_in_charge() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = snapshot(None);
    s.online_cpu_psi_full_1s = Some(30.0);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.interference.level(), 1);
    assert!(d
        .plan
        .actions
        .iter()
        .any(|a| a.reason.contains("online cpu pressure")));
}

#[test]
fn the_cap_step_writes_a_quota_and_the_duty_cycle_freezes_part_of_each_period() {
    let caps = Capabilities::full(8);
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::ShrinkCpuset, Step::CapCpu];
    let s = snapshot(Some(-0.5));
    let cfg = Config::default();
    let d = decide(&s, &cfg, &caps, &st);
    assert!(d.plan.actions.iter().any(|a| matches!(
        &a.op,
        Op::Set { knob: Knob::CpuMax, value: KnobValue::Quota { quota_us: Some(_), .. }, target }
            if target.to_string() == "offline"
    )));
    let mut cfg = Config::default();
    cfg.interference.cap_mode = tidal_policy::CapMode::DutyCycle;
    let mut frozen_at = Vec::new();
    for t in (0..20).map(|i| i * 100) {
        let mut s = snapshot(Some(0.05));
        s.now_ms = t;
        let d = decide(&s, &cfg, &caps, &st);
        frozen_at.push(d.state.frozen.offline);
        st = d.state;
        st.interference.steps = vec![Step::ShrinkCpuset, Step::CapCpu];
    }
    let share = frozen_at.iter().filter(|f| **f).count() as f64 / frozen_at.len() as f64;
    assert!(
        (share - 0.5).abs() < 0.11,
        "frozen {share} of the time: {frozen_at:?}"
    );
}

fn arb_state() -> impl Strategy<Value = PolicyState> {
    (
        proptest::sample::subsequence(Step::LADDER.to_vec(), 0..=4),
        0u64..20_000,
        prop::option::of(0.0f64..0.05),
        any::<bool>(),
    )
        .prop_map(|(steps, at, base, calming)| {
            let mut st = PolicyState::default();
            st.interference.steps = steps;
            st.interference.phase = if calming {
                Phase::Calming { since_ms: at }
            } else {
                Phase::Tightened {
                    at_ms: at,
                    baseline: base,
                }
            };
            st
        })
}

proptest! {
    #[test]
    fn less_slack_never_means_fewer_steps(st in arb_state(), a in -1.0f64..1.0, b in -1.0f64..1.0, now in 20_000u64..40_000) {
        let cfg = Config::default();
        let caps = Capabilities::full(8);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut s_lo = snapshot(Some(lo));
        let mut s_hi = snapshot(Some(hi));
        s_lo.now_ms = now;
        s_hi.now_ms = now;
        let d_lo = decide(&s_lo, &cfg, &caps, &st);
        let d_hi = decide(&s_hi, &cfg, &caps, &st);
        prop_assert!(
            d_lo.state.interference.level() >= d_hi.state.interference.level(),
            "slack {} gave {} steps, slack {} gave {}", lo, d_lo.state.interference.level(), hi, d_hi.state.interference.level()
        );
    }

    #[test]
    fn objectives_never_tighten_online_work(st in arb_state(), slack in -1.0f64..1.0, now in 0u64..60_000) {
        let mut cfg = Config::default();
        cfg.cpu.allow_freeze = true;
        let caps = Capabilities::full(8);
        let mut s = snapshot(Some(slack));
        s.now_ms = now;
        let d = decide(&s, &cfg, &caps, &st);
        for a in &d.plan.actions {
            let tightening = matches!(&a.op,
                Op::Set { knob: Knob::Freeze, value: KnobValue::Bool(true), .. }
                | Op::Set { knob: Knob::CpuMax, value: KnobValue::Quota { quota_us: Some(_), .. }, .. }
                | Op::Kill { .. });
            if tightening {
                let l = level_of_target(&a.op.target());
                prop_assert!(
                    l.is_none_or(|l| !l.is_online()) && a.op.target().to_string().starts_with("offline"),
                    "{} tightens {:?}", a, l
                );
            }
        }
    }

    #[test]
    fn nothing_is_released_before_grow_after_of_ample_slack(st in arb_state(), slack in 0.31f64..1.0, dt in 0u64..1_999) {
        let mut cfg = Config::default();
        cfg.cpu.grow_after = Millis(2_000);
        let caps = Capabilities::full(8);
        let mut s = snapshot(Some(slack));
        s.now_ms = 50_000;
        // The first calm reading starts the count (a phase already calming keeps its own start).
        let mut st = st;
        st.interference.phase = Phase::Idle;
        let level = st.interference.level();
        let st1 = decide(&s, &cfg, &caps, &st).state;
        s.now_ms += dt;
        let st2 = decide(&s, &cfg, &caps, &st1).state;
        prop_assert_eq!(st2.interference.level(), level);
    }
}
