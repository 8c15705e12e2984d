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
        workloads_seq: None,
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

/// The reasons of a plan's actions with this cause.
fn reasons(plan: &tidal_model::Plan, cause: tidal_model::Cause) -> Vec<&str> {
    plan.actions
        .iter()
        .filter(|a| a.cause == cause)
        .map(|a| a.reason.as_str())
        .collect()
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
    let why = reasons(&d.plan, tidal_model::Cause::Interference);
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
fn a_released_cpuset_step_says_why_offline_gets_its_cpu_back() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = snapshot(Some(-0.4));
    let mut st = decide(&s, &cfg, &caps, &PolicyState::default()).state;
    assert_eq!(st.interference.steps, vec![Step::ShrinkCpuset]);
    let mut released = Vec::new();
    for t in 1..=5u64 {
        s = snapshot(Some(0.5));
        s.now_ms = t * 1_000;
        let d = decide(&s, &cfg, &caps, &st);
        released.extend(
            reasons(&d.plan, tidal_model::Cause::Release)
                .into_iter()
                .map(String::from),
        );
        st = d.state;
    }
    assert_eq!(st.interference.level(), 0);
    assert!(
        released.iter().any(
            |r| r.contains("interference calm (") && r.contains("): offline gets its CPU back")
        ),
        "{released:?}"
    );
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
    let mut cfg = Config::default();
    cfg.interference.cap_mode = tidal_policy::CapMode::Quota;
    let d = decide(&s, &cfg, &caps, &st);
    assert!(d.plan.actions.iter().any(|a| matches!(
        &a.op,
        Op::Set { knob: Knob::CpuMax, value: KnobValue::Quota { quota_us: Some(_), .. }, target }
            if target.to_string() == "offline"
    )));
    // The default.
    let cfg = Config::default();
    assert_eq!(cfg.interference.cap_mode, tidal_policy::CapMode::DutyCycle);
    let mut frozen_at = Vec::new();
    let mut toggles = Vec::new();
    for t in (0..20).map(|i| i * 100) {
        let mut s = snapshot(Some(0.05));
        s.now_ms = t;
        let d = decide(&s, &cfg, &caps, &st);
        frozen_at.push(d.state.frozen.offline);
        toggles.extend(
            d.plan
                .actions
                .iter()
                .filter(|a| {
                    matches!(
                        a.op,
                        Op::Set {
                            knob: Knob::Freeze,
                            ..
                        }
                    )
                })
                // The first tick's static pass ("runs") is not a toggle.
                .filter(|a| a.cause != tidal_model::Cause::Static)
                .map(|a| (a.cause, a.reason.clone())),
        );
        st = d.state;
        st.interference.steps = vec![Step::ShrinkCpuset, Step::CapCpu];
    }
    // Each toggle is the cap at work, quoting the objective that keeps it, never "calm".
    assert!(toggles.len() >= 3, "{toggles:?}");
    for (cause, why) in &toggles {
        assert_eq!(*cause, tidal_model::Cause::Interference, "{why}");
        assert!(
            why.contains("objective online-critical/web")
                && why.contains("duty cycle (50% of every 1s)")
                && !why.contains("calm"),
            "{why}"
        );
    }
    let share = frozen_at.iter().filter(|f| **f).count() as f64 / frozen_at.len() as f64;
    assert!(
        (share - 0.5).abs() < 0.11,
        "frozen {share} of the time: {frozen_at:?}"
    );
}

#[test]
fn without_a_freezer_the_duty_cycle_cap_is_a_quota() {
    let mut caps = Capabilities::full(8);
    caps.knobs.remove(&Knob::Freeze);
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::ShrinkCpuset];
    let cfg = Config::default();
    assert_eq!(cfg.interference.cap_mode, tidal_policy::CapMode::DutyCycle);
    assert_eq!(
        tidal_policy::agent::cap::mode(&cfg, &caps),
        tidal_policy::CapMode::Quota
    );
    // The objective still violated: the ladder takes the cap step (not skipped as ineffective)
    // and the cap is a quota on the offline parent.
    let mut s = snapshot(Some(-0.5));
    s.now_ms = 5_000;
    let d = decide(&s, &cfg, &caps, &st);
    assert!(
        d.state.interference.has(Step::CapCpu),
        "{:?}",
        d.state.interference
    );
    assert!(d.plan.actions.iter().any(|a| matches!(
        &a.op,
        Op::Set { knob: Knob::CpuMax, value: KnobValue::Quota { quota_us: Some(_), .. }, target }
            if target.to_string() == "offline"
    )));
    assert!(!d.plan.actions.iter().any(|a| matches!(
        &a.op,
        Op::Set {
            knob: Knob::Freeze,
            ..
        }
    )));
}

fn arb_state() -> impl Strategy<Value = PolicyState> {
    (
        proptest::sample::subsequence(Step::LADDER.to_vec(), 0..=4),
        0u64..20_000,
        prop::option::of(0.0f64..0.05),
        any::<bool>(),
        (
            prop::option::of(0u64..20_000),
            prop::option::of(0u64..20_000),
            prop_oneof![Just(0u64), 30_000u64..240_000],
            prop::option::of(0u64..20_000),
            0u64..=8,
        ),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                steps,
                at,
                base,
                calming,
                (hold, probe, wait, rel_at, rel_wait),
                (per_tick, quick),
            )| {
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
                st.interference.hold_since_ms = hold;
                st.interference.probe_at_ms = probe;
                st.interference.probe_wait_ms = wait;
                st.interference.released_at_ms = rel_at;
                st.interference.release_wait = rel_wait;
                st.interference.per_tick = per_tick;
                st.interference.quick_probe = quick;
                st
            },
        )
}

/// Ample slack (over `release_above`): calm.
const AMPLE: f64 = 0.4;

/// Calm readings every 500 ms from `from` until a step is released: (when, the release's reasons).
fn calm_until_release(cfg: &Config, st: &mut PolicyState, from: u64) -> (u64, Vec<String>) {
    until_release(cfg, st, from, Some(AMPLE))
}

/// Readings of `slack` (None: no objective) every 500 ms from `from`, for at most 10 minutes,
/// until a step is released: (how long after `from`, the release's reasons).
fn until_release(
    cfg: &Config,
    st: &mut PolicyState,
    from: u64,
    slack: Option<f64>,
) -> (u64, Vec<String>) {
    let caps = Capabilities::full(8);
    let level = st.interference.level();
    for t in (0..1_200).map(|i| from + i * 500) {
        let mut s = snapshot(slack);
        s.now_ms = t;
        let d = decide(&s, cfg, &caps, st);
        *st = d.state;
        if st.interference.level() < level {
            let why = reasons(&d.plan, tidal_model::Cause::Release)
                .into_iter()
                .map(String::from)
                .collect();
            return (t - from, why);
        }
    }
    panic!("no release in 10 minutes: {:?}", st.interference);
}

#[test]
fn a_release_that_brings_the_violation_back_doubles_the_calm_before_the_next() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let grow = cfg.cpu.grow_after.0;
    let mut st = PolicyState::default();
    st.interference.steps = Step::LADDER.to_vec();
    let mut t = 10_000;
    let mut waits = Vec::new();
    for _ in 0..5 {
        let (after, _) = calm_until_release(&cfg, &mut st, t);
        waits.push(after);
        t += after + 500;
        // The release brings the violation back at once: the step is taken again.
        let mut s = snapshot(Some(-0.2));
        s.now_ms = t;
        let d = decide(&s, &cfg, &caps, &st);
        st = d.state;
        assert_eq!(st.interference.level(), 4, "{:?}", st.interference);
        t += 1_000;
    }
    // Twice as long each time, up to PROBE_BACKOFF_MAX times the objective's calm time.
    let max = tidal_policy::PROBE_BACKOFF_MAX * grow;
    assert_eq!(
        waits,
        vec![grow, 2 * grow, 4 * grow, max, max],
        "calm before each release"
    );
    // Each failed release backed the probe off as well: no probe cuts the calm wait short.
    assert_eq!(st.interference.probe_wait_ms, 32 * cfg.slo.probe_first().0);
    // Calm from now on: each release that lasts until the next halves the wait.
    // (Each wait counts from the last release; the helper starts a tick after it.)
    let mut calm_waits = Vec::new();
    let mut last_why = Vec::new();
    let mut since_release = 0;
    while st.interference.level() > 0 {
        let (after, why) = calm_until_release(&cfg, &mut st, t);
        calm_waits.push(after + since_release);
        since_release = 500;
        last_why = why;
        t += after + 500;
    }
    assert_eq!(calm_waits, vec![max, max, max / 2, max / 4]);
    // The last release (the cpuset step) quotes the calm objective and how long it was calm.
    assert!(
        last_why.iter().any(
            |w| w.contains("interference calm (objective online-critical/web")
                && w.contains("slack 40% for 4s): offline gets its CPU back")
        ),
        "{last_why:?}"
    );
    // The last release lasted the judging time (slo.probe_after): the next episode starts afresh.
    let mut s = snapshot(Some(-0.2));
    s.now_ms = t + cfg.slo.probe_after.0;
    st = decide(&s, &cfg, &caps, &st).state;
    assert_eq!(st.interference.release_wait, 0, "{:?}", st.interference);
}

/// Slack with room but not ample: between `hold_below` and `release_above` (defaults).
const ROOMY: f64 = 0.2;

#[test]
fn an_objective_met_with_some_room_probes_a_release_and_backs_off_when_it_fails() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let probe = cfg.slo.probe_first().0;
    let judge = cfg.slo.probe_after.0;
    assert!(probe < judge);
    // Tightened to the top, then met with 20% slack: the quiet latency, under a target too tight
    // for ample slack ever.
    let mut st = PolicyState::default();
    st.interference.steps = Step::LADDER.to_vec();
    let mut s = snapshot(Some(ROOMY));
    let start = 10_000;
    let mut released_at = None;
    for t in (0..=probe / 1_000 + 1).map(|i| start + i * 1_000) {
        s.now_ms = t;
        let d = decide(&s, &cfg, &caps, &st);
        if d.state.interference.level() < 4 && released_at.is_none() {
            released_at = Some(t);
            let thawed = reasons(&d.plan, tidal_model::Cause::Release);
            assert!(
                thawed.iter().any(|r| r.contains("to probe")
                    && r.contains("slack 20%")
                    && r.contains("offline thawed")),
                "{thawed:?}"
            );
        }
        st = d.state;
    }
    assert_eq!(
        released_at,
        Some(start + probe),
        "one step after probe_first"
    );
    assert_eq!(st.interference.level(), 3);
    // The objective is missed within the judging time: tightened again, and the next probe waits
    // twice as long.
    s = snapshot(Some(-0.2));
    s.now_ms = start + probe + 2_000;
    st = decide(&s, &cfg, &caps, &st).state;
    assert_eq!(st.interference.level(), 4);
    assert_eq!(st.interference.probe_wait_ms, 2 * probe);
    s = snapshot(Some(ROOMY));
    let back = start + probe + 3_000;
    for t in (0..=2 * probe / 1_000).map(|i| back + i * 1_000) {
        s.now_ms = t;
        st = decide(&s, &cfg, &caps, &st).state;
        let want = if t < back + 2 * probe { 4 } else { 3 };
        assert_eq!(st.interference.level(), want, "t={t}");
    }
    // This probe lasts the judging time: the wait goes back to probe_first.
    s.now_ms = back + 2 * probe + judge - 1;
    st = decide(&s, &cfg, &caps, &st).state;
    assert_eq!(st.interference.probe_wait_ms, 2 * probe);
    s.now_ms = back + 2 * probe + judge;
    st = decide(&s, &cfg, &caps, &st).state;
    assert_eq!(st.interference.probe_wait_ms, 0);
    // Room for 3 s, then one calm reading: neither grow_after of calm nor probe_first of room.
    let mut slow = cfg.clone();
    slow.slo.probe_first = Some(Millis(5_000));
    let mut st = PolicyState::default();
    st.interference.steps = Step::LADDER.to_vec();
    for (i, slack) in [ROOMY, ROOMY, ROOMY, 0.5].into_iter().enumerate() {
        let mut s = snapshot(Some(slack));
        s.now_ms = 500_000 + i as u64 * 1_000;
        st = decide(&s, &slow, &caps, &st).state;
    }
    assert_eq!(st.interference.level(), 4);
    // probe_after 0: never.
    let mut cfg0 = Config::default();
    cfg0.slo.probe_after = Millis(0);
    let mut st = PolicyState::default();
    st.interference.steps = Step::LADDER.to_vec();
    for t in (0..600).map(|i| i * 1_000) {
        s.now_ms = t;
        st = decide(&s, &cfg0, &caps, &st).state;
    }
    assert_eq!(st.interference.level(), 4);
}

/// Under interference that comes back after every probe, the waits double from `probe_first` up to
/// eight `probe_after`s and stay there; a tightening for a passing miss costs `probe_first`.
#[test]
fn failed_probes_double_the_wait_from_probe_first_up_to_eight_judging_times() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let (first, judge) = (cfg.slo.probe_first().0, cfg.slo.probe_after.0);
    let mut st = PolicyState::default();
    let frozen = vec![Step::FreezeOfflineLow, Step::FreezeOffline];
    st.interference.steps = frozen.clone();
    let mut t = 100_000;
    let mut waits = Vec::new();
    for _ in 0..10 {
        // Room until the probe releases the freeze.
        let (after, _) = until_release(&cfg, &mut st, t, Some(ROOMY));
        waits.push(after);
        t += after;
        // The miss comes back a second later, deep: frozen again.
        t += 1_000;
        let mut s = snapshot(Some(-0.8));
        s.now_ms = t;
        st = decide(&s, &cfg, &caps, &st).state;
        assert_eq!(st.interference.steps, frozen, "t={t}");
        t += 1_000;
    }
    let max = tidal_policy::PROBE_BACKOFF_MAX * judge;
    let want: Vec<u64> = (0..10u32).map(|i| (first << i).min(max)).collect();
    assert_eq!(waits, want);
    assert_eq!(waits[0], 2_000);
    assert_eq!(*waits.last().unwrap_or(&0), 240_000);
}

/// One probe at a time: after the first (`probe_first` of room), the next waits until it is judged,
/// so a steady hold with room releases one step per `probe_after`.
#[test]
fn probes_come_one_at_a_time() {
    let cfg = Config::default();
    let (first, judge) = (cfg.slo.probe_first().0, cfg.slo.probe_after.0);
    let mut st = PolicyState::default();
    st.interference.steps = Step::LADDER.to_vec();
    let start = 100_000;
    let mut releases = Vec::new();
    let mut t = start;
    for _ in 0..3 {
        let (after, _) = until_release(&cfg, &mut st, t, Some(ROOMY));
        releases.push(t + after - start);
        t += after + 500;
    }
    // The room after the first probe counts from the tick after it; the probe is judged (lasted)
    // `probe_after` after it was made, and the next comes then.
    assert_eq!(
        releases,
        vec![first, first + judge, first + 2 * judge],
        "{:?}",
        st.interference
    );
}

/// Without an objective, calm signals wait their own calm time: no probe cuts it short.
#[test]
fn pressure_alone_releases_after_its_calm_period_not_a_probe() {
    let cfg = Config::default();
    let calm = cfg.interference.calm_period.0;
    assert!(calm > cfg.slo.probe_first().0);
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::FreezeOfflineLow, Step::FreezeOffline];
    let (after, _) = until_release(&cfg, &mut st, 100_000, None);
    assert_eq!(after, calm, "{:?}", st.interference);
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
        // Nor a level left running that less slack would have frozen (a deep miss's freezes
        // against the cap's frozen part).
        for (l, h) in [
            (d_lo.state.frozen.offline, d_hi.state.frozen.offline),
            (d_lo.state.frozen.offline_low, d_hi.state.frozen.offline_low),
        ] {
            prop_assert!(l || !h, "slack {} froze less than slack {}: {:?} vs {:?}", lo, hi, d_lo.state.frozen, d_hi.state.frozen);
        }
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
    fn nothing_is_released_before_grow_after_of_slack_with_room(st in arb_state(), slack in 0.1f64..1.0, dt in 0u64..1_999, probe in prop_oneof![Just(0u64), 1_000u64..60_000], calm in 100u64..20_000) {
        let mut cfg = Config::default();
        cfg.cpu.grow_after = Millis(2_000);
        cfg.slo.probe_after = Millis(probe);
        // Pressure is calm too, with a calm period of its own (shorter or longer): the objective's
        // wait is the one that counts.
        cfg.interference.calm_period = Millis(calm);
        let caps = Capabilities::full(8);
        let mut s = snapshot(Some(slack));
        s.now_ms = 50_000;
        // The first reading with room starts the count (a phase already calming keeps its own
        // start, and so does a hold with room already under way).
        let mut st = st;
        st.interference.phase = Phase::Idle;
        st.interference.hold_since_ms = None;
        let level = st.interference.level();
        let st1 = decide(&s, &cfg, &caps, &st).state;
        s.now_ms += dt;
        let st2 = decide(&s, &cfg, &caps, &st1).state;
        prop_assert_eq!(st2.interference.level(), level);
    }

    #[test]
    fn a_probe_comes_only_after_the_wait_and_releases_one_step(st in arb_state(), hold in 0u64..300_000, (probe, first) in (1_000u64..60_000).prop_flat_map(|p| (Just(p), 1_000..=p))) {
        let mut cfg = Config::default();
        cfg.slo.probe_after = Millis(probe);
        cfg.slo.probe_first = Some(Millis(first));
        let caps = Capabilities::full(8);
        let mut st = st;
        st.interference.phase = Phase::Idle;
        st.interference.probe_at_ms = None;
        let now = 400_000;
        st.interference.hold_since_ms = Some(now - hold);
        let level = st.interference.level();
        let mut s = snapshot(Some(ROOMY));
        s.now_ms = now;
        let d = decide(&s, &cfg, &caps, &st);
        let max = tidal_policy::PROBE_BACKOFF_MAX * probe;
        let wait = st.interference.probe_wait_ms.min(max).max(first).max(cfg.cpu.grow_after.0);
        let want = if hold >= wait && level > 0 { level - 1 } else { level };
        prop_assert_eq!(d.state.interference.level(), want);
    }

    #[test]
    fn a_failed_probe_backs_off_within_bounds(st in arb_state(), dt in 0u64..120_000, (probe, first) in (1_000u64..60_000).prop_flat_map(|p| (Just(p), 1_000..=p))) {
        let mut cfg = Config::default();
        cfg.slo.probe_after = Millis(probe);
        cfg.slo.probe_first = Some(Millis(first));
        let caps = Capabilities::full(8);
        let mut st = st;
        let at = 100_000;
        st.interference.probe_at_ms = Some(at);
        let before = st.interference.probe_wait_ms;
        let mut s = snapshot(Some(-0.3));
        s.now_ms = at + dt;
        let d = decide(&s, &cfg, &caps, &st);
        let w = d.state.interference.probe_wait_ms;
        let max = tidal_policy::PROBE_BACKOFF_MAX * probe;
        prop_assert!(w <= max, "wait {} over the bound", w);
        // A per-tick ladder's probe is judged by the watch after it.
        let judge = if st.interference.quick_probe {
            cfg.interference.release_watch.0.max(cfg.interference.escalate_every.0)
        } else {
            probe
        };
        if dt < judge {
            let unit = first.max(cfg.cpu.grow_after.0);
            prop_assert_eq!(w, (before.max(unit) * 2).min(max), "doubled from {}", before);
        } else {
            prop_assert_eq!(w, 0, "a probe that lasted resets the wait");
        }
        prop_assert_eq!(d.state.interference.probe_at_ms, None);
    }

    #[test]
    fn a_failed_release_backs_off_within_bounds_and_calm_always_releases_in_the_end(
        st in arb_state(),
        dt in 0u64..120_000,
    ) {
        let cfg = Config::default();
        let caps = Capabilities::full(8);
        // A per-tick ladder's release is judged by the watch after it.
        let judge = if st.interference.quick_probe {
            cfg.interference.release_watch.0.max(cfg.interference.escalate_every.0)
        } else {
            cfg.slo.probe_after.0
        };
        let max = tidal_policy::PROBE_BACKOFF_MAX;
        let at = 100_000;
        // Tightening `dt` after a release: doubled within the judging time, reset after it.
        let mut failed = st.clone();
        failed.interference.released_at_ms = Some(at);
        let before = failed.interference.release_wait;
        let mut s = snapshot(Some(-0.3));
        s.now_ms = at + dt;
        let d = decide(&s, &cfg, &caps, &failed);
        let w = d.state.interference.release_wait;
        prop_assert!(w <= max, "wait {} over the bound", w);
        if dt < judge {
            prop_assert_eq!(w, (before.max(1) * 2).min(max), "doubled from {}", before);
        } else {
            prop_assert_eq!(w, 0, "a release that lasted resets the wait");
        }
        prop_assert_eq!(d.state.interference.released_at_ms, None);
        // However far it backed off, unbroken calm releases a step within the bound, with
        // probes off so that only the calm release can do it.
        let mut st = d.state;
        let level = st.interference.level();
        prop_assume!(level > 0);
        let mut calm_only = cfg.clone();
        calm_only.slo.probe_after = Millis(0);
        let bound = max * cfg.cpu.grow_after.0.max(cfg.interference.calm_period.0);
        let mut released = false;
        for t in (1..=bound / 500 + 2).map(|i| at + dt + i * 500) {
            let mut s = snapshot(Some(0.5));
            s.now_ms = t;
            st = decide(&s, &calm_only, &caps, &st).state;
            if st.interference.level() < level {
                released = true;
                break;
            }
        }
        prop_assert!(released, "no release in {} ms of calm: {:?}", bound, st.interference);
    }

    #[test]
    fn room_mixed_with_short_calm_releases_nothing_before_probe_first(calm in proptest::collection::vec(any::<bool>(), 1..29)) {
        // 1-s readings, never three calm in a row (2 s of calm is cpu.grow_after), fewer than
        // probe_first (30 s here) of them.
        prop_assume!(!calm.windows(3).any(|w| w.iter().all(|c| *c)));
        let mut cfg = Config::default();
        cfg.slo.probe_first = Some(Millis(30_000));
        let caps = Capabilities::full(8);
        let mut st = PolicyState::default();
        st.interference.steps = Step::LADDER.to_vec();
        for (i, c) in calm.iter().enumerate() {
            let mut s = snapshot(Some(if *c { 0.5 } else { ROOMY }));
            s.now_ms = 100_000 + i as u64 * 1_000;
            st = decide(&s, &cfg, &caps, &st).state;
        }
        prop_assert_eq!(st.interference.level(), 4);
    }
}

/// A run-queue latency reading of the online workload over the last tick.
fn runq(observed_s: f64) -> Signal {
    Signal {
        kind: SignalKind::RunqLatency,
        workload: "online-critical/web".into(),
        what: "run-queue p99".into(),
        observed: observed_s,
        target: 0.001,
        slack: Signal::slack_of(observed_s, 0.001),
        age_ms: None,
        excess_z: None,
    }
}

/// 16 CPUs; online uses 2 (need 3 with headroom), so confinement leaves offline 13.
fn wide(signals: Vec<Signal>) -> Snapshot {
    let mut s = snapshot(None);
    s.cpus = CpuSet::first_n(16);
    s.signals = signals;
    s
}

/// The reason of the write to the offline parent's cpuset.
fn cpuset_reason(plan: &tidal_model::Plan) -> String {
    plan.actions
        .iter()
        .find(|a| {
            a.group().is_some_and(|g| g.as_str() == "offline")
                && matches!(
                    a.op,
                    Op::Set {
                        knob: Knob::CpusetCpus,
                        ..
                    }
                )
        })
        .map(|a| a.reason.clone())
        .unwrap_or_default()
}

#[test]
fn a_run_queue_reading_taken_while_confinement_shrinks_offline_waits_one_tick() {
    let cfg = Config::default();
    let caps = Capabilities::full(16);
    let mut s = wide(vec![runq(0.0015)]);
    // First tick: confinement takes offline from 16 CPUs to 13; the reading predates that.
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.interference.level(), 0);
    assert_eq!(d.state.offline_cpus.as_ref().map(|c| c.len()), Some(13));
    assert!(cpuset_reason(&d.plan).contains("online needs 3 of 16"));
    // Next tick, confinement holds and online still waits: the ladder steps.
    s.now_ms = 100;
    let d = decide(&s, &cfg, &caps, &d.state);
    assert_eq!(d.state.interference.level(), 1);
    assert_eq!(d.state.offline_cpus.as_ref().map(|c| c.len()), Some(12));
    let why = cpuset_reason(&d.plan);
    assert!(
        why.contains(
            "run-queue p99 of online-critical/web 1.50ms over 1.00ms: offline gets one CPU less"
        ),
        "{why}"
    );
    // Online load rises while the step holds: confinement's reason and the signal's, both.
    s.now_ms = 200;
    s.node_busy_short_cpus = Some(7.0);
    s.offline_usage_short_cpus = Some(2.0);
    let d = decide(&s, &cfg, &caps, &d.state);
    assert_eq!(d.state.offline_cpus.as_ref().map(|c| c.len()), Some(9));
    let why = cpuset_reason(&d.plan);
    assert!(
        why.contains("online needs 6 of 16")
            && why.contains("run-queue p99 of online-critical/web"),
        "{why}"
    );
    // Only an objective with little slack keeps the step now: its quote is the reason.
    s.now_ms = 300;
    s.signals = snapshot(Some(0.05)).signals;
    s.node_busy_short_cpus = Some(9.0);
    let d = decide(&s, &cfg, &caps, &d.state);
    assert_eq!(d.state.interference.level(), 1);
    assert_eq!(d.state.offline_cpus.as_ref().map(|c| c.len()), Some(7));
    let why = cpuset_reason(&d.plan);
    assert!(
        why.contains("online needs 8 of 16")
            && why.contains("objective online-critical/web")
            && why.contains("slack 5%"),
        "{why}"
    );
}

#[test]
fn a_missed_objective_does_not_wait_for_confinement() {
    let cfg = Config::default();
    let caps = Capabilities::full(16);
    // The objective's window spans many ticks: it steps at once, beside a run-queue reading too.
    let mut signals = snapshot(Some(-0.4)).signals;
    signals.push(runq(0.002));
    let d = decide(&wide(signals), &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.interference.level(), 1);
    assert_eq!(d.state.offline_cpus.as_ref().map(|c| c.len()), Some(12));
    assert!(cpuset_reason(&d.plan).contains("slack -40%"));
}

#[test]
fn a_shrink_that_keeps_failing_does_not_hold_the_ladder_back() {
    let cfg = Config::default();
    let caps = Capabilities::full(16);
    let mut s = wide(vec![runq(0.0015)]);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.interference.level(), 0);
    // The cpuset write failed: offline still has every CPU, so confinement shrinks again.
    let mut st = d.state;
    st.base_offline = None;
    s.now_ms = 100;
    let d = decide(&s, &cfg, &caps, &st);
    assert_eq!(d.state.interference.level(), 1, "no second wait in a row");
}

proptest! {
    #[test]
    fn a_run_queue_reading_never_steps_in_a_tick_in_which_confinement_shrinks_offline(
        st in arb_state(), from in 14u32..=16, waited in any::<bool>(), now in 0u64..60_000
    ) {
        let cfg = Config::default();
        let caps = Capabilities::full(16);
        let mut st = st;
        st.base_offline = Some(from);
        st.interference.waited = waited;
        let mut s = wide(vec![runq(0.003)]);
        s.now_ms = now;
        let d = decide(&s, &cfg, &caps, &st);
        if waited {
            // At most one wait in a row: this tick may step.
            prop_assert!(!d.state.interference.waited);
        } else {
            prop_assert!(
                d.state.interference.level() <= st.interference.level(),
                "{:?} → {:?}", st.interference.steps, d.state.interference.steps
            );
            prop_assert!(d.state.interference.waited);
        }
    }
}

#[test]
fn step_names_are_the_serialised_ones() {
    for s in Step::LADDER {
        let text = serde_yaml_ng::to_string(&s).unwrap();
        assert_eq!(text.trim(), s.name());
    }
}

#[test]
fn one_reading_of_a_missed_objective_takes_one_step_however_long_it_is_read() {
    let mut cfg = Config::default();
    // Scraped every 3 s, ticks stepping every second: each new reading steps once.
    cfg.slo.interval = Millis(3_000);
    let caps = Capabilities::full(8);
    let mut st = PolicyState::default();
    let mut levels = Vec::new();
    for t in (0..=7).map(|i| i * 1_000) {
        let mut s = snapshot(Some(-0.4));
        s.now_ms = t;
        // The reading was taken at the last multiple of 3 s.
        s.signals[0].age_ms = Some(t % 3_000);
        st = decide(&s, &cfg, &caps, &st).state;
        levels.push(st.interference.level());
    }
    assert_eq!(levels, vec![1, 1, 1, 2, 2, 2, 3, 3]);
}

#[test]
fn a_calm_objective_releases_after_grow_after_even_when_pressure_would_wait_less() {
    let mut cfg = Config::default();
    cfg.cpu.grow_after = Millis(5_000);
    cfg.interference.calm_period = Millis(1_000);
    let caps = Capabilities::full(8);
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::ShrinkCpuset];
    let (after, why) = calm_until_release(&cfg, &mut st, 10_000);
    assert_eq!(after, 5_000, "{why:?}");
    assert!(why.iter().any(|w| w.contains("objective")), "{why:?}");
    // Without an objective, pressure's calm period is the wait.
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::ShrinkCpuset];
    let mut released = None;
    for t in (0..20).map(|i| 10_000 + i * 500) {
        let mut s = snapshot(None);
        s.now_ms = t;
        st = decide(&s, &cfg, &caps, &st).state;
        if st.interference.level() == 0 {
            released = Some(t - 10_000);
            break;
        }
    }
    assert_eq!(released, Some(1_000));
}

/// An objective's reading with the excess of its window's count over the target, in sd.
fn with_z(slack: f64, z: Option<f64>) -> Snapshot {
    let mut s = snapshot(Some(slack));
    s.signals[0].excess_z = z;
    s
}

#[test]
fn a_miss_within_sampling_noise_holds_growth_and_one_beyond_it_tightens() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    // 3% over the target, but the window's count over it is one sd above what p99 allows.
    let d = decide(
        &with_z(-0.03, Some(1.0)),
        &cfg,
        &caps,
        &PolicyState::default(),
    );
    assert_eq!(d.state.interference.level(), 0);
    let held = d.state.interference.phase;
    assert!(!matches!(held, Phase::Tightened { .. }), "{held:?}");
    // Offline does not grow while it holds.
    let mut st = PolicyState {
        base_offline: Some(4),
        offline_cpus: Some(CpuSet::first_n(4)),
        ..PolicyState::default()
    };
    let mut s = with_z(-0.03, Some(1.0));
    for t in [0u64, 5_000, 10_000] {
        s.now_ms = t;
        st = decide(&s, &cfg, &caps, &st).state;
    }
    assert_eq!(st.base_offline, Some(4), "grew during a noisy miss");
    // Beyond the noise, or with the count unknown: a step, quoting the objective.
    for z in [Some(3.0), None] {
        let d = decide(&with_z(-0.03, z), &cfg, &caps, &PolicyState::default());
        assert_eq!(d.state.interference.level(), 1, "z {z:?}");
        assert!(reasons(&d.plan, tidal_model::Cause::Interference)
            .iter()
            .all(|r| r.contains("slack -3%")));
    }
    // min_excess_z 0: every miss tightens.
    let mut any = Config::default();
    any.interference.min_excess_z = 0.0;
    let d = decide(
        &with_z(-0.03, Some(0.5)),
        &any,
        &caps,
        &PolicyState::default(),
    );
    assert_eq!(d.state.interference.level(), 1);
}

#[test]
fn a_significant_miss_speaks_before_a_larger_noisy_one() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut s = with_z(-0.6, Some(0.8));
    let mut other = s.signals[0].clone();
    other.workload = "online-critical/api".into();
    other.slack = -0.1;
    other.observed = 0.0055;
    other.excess_z = Some(6.0);
    s.signals.push(other);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.interference.level(), 1);
    let why = reasons(&d.plan, tidal_model::Cause::Interference);
    assert!(
        why.iter()
            .all(|r| r.contains("objective online-critical/api") && r.contains("slack -10%")),
        "{why:?}"
    );
}

#[test]
fn a_run_queue_miss_within_noise_takes_no_step() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut noisy = runq(0.0012);
    noisy.excess_z = Some(0.5);
    // Two ticks each (a reading taken while confinement shrinks offline waits one).
    let two_ticks = |sig: &Signal| {
        let mut st = PolicyState::default();
        for t in [0u64, 100] {
            let mut s = snapshot(None);
            s.signals = vec![sig.clone()];
            s.now_ms = t;
            st = decide(&s, &cfg, &caps, &st).state;
        }
        st.interference.level()
    };
    assert_eq!(two_ticks(&noisy), 0);
    noisy.excess_z = Some(4.0);
    assert_eq!(two_ticks(&noisy), 1);
}

proptest! {
    #[test]
    fn a_miss_further_beyond_noise_never_means_fewer_steps(
        st in arb_state(),
        slack in -1.0f64..0.0,
        a in -3.0f64..10.0,
        b in -3.0f64..10.0,
        now in 20_000u64..40_000,
    ) {
        let cfg = Config::default();
        let caps = Capabilities::full(8);
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let mut s_lo = with_z(slack, Some(lo));
        let mut s_hi = with_z(slack, Some(hi));
        s_lo.now_ms = now;
        s_hi.now_ms = now;
        let l_lo = decide(&s_lo, &cfg, &caps, &st).state.interference.level();
        let l_hi = decide(&s_hi, &cfg, &caps, &st).state.interference.level();
        prop_assert!(l_hi >= l_lo, "z {} gave {} steps, z {} gave {}", hi, l_hi, lo, l_lo);
    }
}

#[test]
fn a_reading_already_stepped_on_gives_way_to_fresh_pressure() {
    let mut cfg = Config::default();
    cfg.slo.interval = Millis(3_000);
    let caps = Capabilities::full(8);
    let mut s = snapshot(Some(-0.4));
    let st = decide(&s, &cfg, &caps, &PolicyState::default()).state;
    assert_eq!(st.interference.level(), 1);
    // A second later the objective's reading is the same one; pressure is over its threshold now.
    s.now_ms = 1_000;
    s.signals[0].age_ms = Some(1_000);
    s.online_cpu_psi_full_1s = Some(40.0);
    s.online_cpu_psi_full = Some(40.0);
    let d = decide(&s, &cfg, &caps, &st);
    assert_eq!(
        d.state.interference.level(),
        2,
        "{:?}",
        d.state.interference
    );
    // (The objective's reading alone could not step again: one step per reading.)
}

/// A ladder with a cpuset shrink taken at 0.
fn shrunk() -> PolicyState {
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::ShrinkCpuset];
    st.interference.phase = Phase::Tightened {
        at_ms: 0,
        baseline: None,
    };
    st
}

/// The ladder a deep miss leaves after a shrink: every offline level frozen.
fn shrunk_then_frozen() -> Vec<Step> {
    vec![
        Step::ShrinkCpuset,
        Step::FreezeOfflineLow,
        Step::FreezeOffline,
    ]
}

/// The ladder after `slack` is read at `now_ms`, from a shrink taken at 0.
fn step_after_shrink(cfg: &Config, slack: f64, now_ms: u64) -> tidal_policy::agent::Decision {
    let caps = Capabilities::full(8);
    let st = shrunk();
    let mut s = snapshot(Some(slack));
    s.now_ms = now_ms;
    decide(&s, cfg, &caps, &st)
}

fn frozen_by(plan: &tidal_model::Plan, level: QosLevel) -> Vec<&str> {
    plan.actions
        .iter()
        .filter(|a| {
            matches!(&a.op, Op::Set { target, knob: Knob::Freeze, value: KnobValue::Bool(true) }
                if *target == Target::Tidal(level.group_path()))
        })
        .map(|a| a.reason.as_str())
        .collect()
}

#[test]
fn a_deep_miss_freezes_every_offline_level_at_once() {
    let cfg = Config::default();
    assert_eq!(cfg.interference.freeze_below, -0.5);
    // 1.6× the target: past the cap, every offline level frozen at once.
    let d = step_after_shrink(&cfg, -0.6, 2_000);
    assert_eq!(d.state.interference.steps, shrunk_then_frozen());
    for level in [QosLevel::OfflineLow, QosLevel::Offline] {
        let why = frozen_by(&d.plan, level);
        assert_eq!(why.len(), 1, "{level}: {:?}", d.plan.actions);
        assert!(
            why[0].contains("slack -60%")
                && why[0].contains("below -50%: every offline level frozen at once")
                && !why[0].contains("duty cycle"),
            "{}",
            why[0]
        );
    }
    // A miss above the line takes the cap, as does a deep one with the line moved out of reach.
    let d = step_after_shrink(&cfg, -0.4, 2_000);
    assert_eq!(
        d.state.interference.steps,
        vec![Step::ShrinkCpuset, Step::CapCpu]
    );
    let mut never = Config::default();
    never.interference.freeze_below = -1000.0;
    let d = step_after_shrink(&never, -0.6, 2_000);
    assert_eq!(
        d.state.interference.steps,
        vec![Step::ShrinkCpuset, Step::CapCpu]
    );
    // With every offline level frozen by its own step, the cap passed over changes nothing and is
    // not taken by a later miss.
    let mut st = PolicyState::default();
    st.interference.steps = shrunk_then_frozen();
    st.interference.phase = Phase::Tightened {
        at_ms: 0,
        baseline: None,
    };
    let mut s = snapshot(Some(-0.2));
    s.now_ms = 5_000;
    let d = decide(&s, &cfg, &Capabilities::full(8), &st);
    assert_eq!(d.state.interference.steps, st.interference.steps);
    // With offline-low frozen alone, the cap still has offline to act on; a deep miss freezes it.
    st.interference.steps = vec![Step::ShrinkCpuset, Step::FreezeOfflineLow];
    let d = decide(&s, &cfg, &Capabilities::full(8), &st);
    assert_eq!(
        d.state.interference.steps,
        vec![Step::ShrinkCpuset, Step::FreezeOfflineLow, Step::CapCpu]
    );
    let mut deep = snapshot(Some(-0.7));
    deep.now_ms = 5_000;
    let d = decide(&deep, &cfg, &Capabilities::full(8), &st);
    assert_eq!(d.state.interference.steps, shrunk_then_frozen());
    // Without a freezer a deep miss takes the next step, the cap (a quota then).
    let mut no_freezer = Capabilities::full(8);
    no_freezer.knobs.remove(&Knob::Freeze);
    let d = decide(&deep, &cfg, &no_freezer, &shrunk());
    assert_eq!(
        d.state.interference.steps,
        vec![Step::ShrinkCpuset, Step::CapCpu]
    );
    // A deep miss within sampling noise still only holds growth.
    let caps = Capabilities::full(8);
    let mut s = snapshot(Some(-0.6));
    s.signals[0].excess_z = Some(1.0);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.interference.level(), 0);
}

#[test]
fn a_deep_run_queue_wait_freezes_at_once_too() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut st = shrunk();
    // The last tick waited for confinement's shrink: this one steps.
    st.interference.waited = true;
    let mut s = snapshot(None);
    s.now_ms = 2_000;
    s.signals = vec![Signal {
        kind: SignalKind::RunqLatency,
        workload: "online-critical/web".into(),
        what: "run-queue p99".into(),
        observed: 0.00164,
        target: 0.001,
        slack: -0.64,
        age_ms: None,
        excess_z: Some(5.0),
    }];
    let d = decide(&s, &cfg, &caps, &st);
    assert_eq!(d.state.interference.steps, shrunk_then_frozen());
    // Behind a fresh shallow objective miss that speaks first, the deep wait still freezes.
    let mut both = s.clone();
    both.signals.extend(snapshot(Some(-0.1)).signals);
    let d = decide(&both, &cfg, &caps, &st);
    assert!(
        d.plan.actions.iter().any(|a| a.reason.contains("objective")
            && a.reason.contains("every offline level frozen at once")),
        "{:?}",
        d.plan.actions
    );
    assert_eq!(d.state.interference.level(), 3);
    // 1.3× the threshold: the cap.
    s.signals[0].observed = 0.0013;
    s.signals[0].slack = -0.3;
    let d = decide(&s, &cfg, &caps, &st);
    assert_eq!(
        d.state.interference.steps,
        vec![Step::ShrinkCpuset, Step::CapCpu]
    );
}

#[test]
fn the_duty_cycle_starts_with_its_frozen_part_in_the_tick_the_cap_is_taken() {
    let cfg = Config::default();
    let period = cfg.tick.0 * 10;
    let frozen_part = period - (cfg.interference.cap_fraction * period as f64) as u64;
    let caps = Capabilities::full(8);
    // Taken at any point of the clock's period, the cap freezes offline in that same tick.
    for at in [2_000u64, 2_300, 2_500, 2_900] {
        let d = step_after_shrink(&cfg, -0.4, at);
        assert!(d.state.interference.has(Step::CapCpu));
        assert!(d.state.frozen.offline, "cap taken at {at}");
        assert_eq!(frozen_by(&d.plan, QosLevel::Offline).len(), 1, "at {at}");
        // It runs once the frozen part has passed, and is frozen again a period after the step.
        let mut st = d.state;
        let mut s = snapshot(Some(0.05));
        for (dt, frozen) in [
            (frozen_part - cfg.tick.0, true),
            (frozen_part, false),
            (period - cfg.tick.0, false),
            (period, true),
        ] {
            s.now_ms = at + dt;
            let d = decide(&s, &cfg, &caps, &st);
            assert_eq!(d.state.frozen.offline, frozen, "cap at {at}, +{dt} ms");
            st = d.state;
        }
        // Released, the cycle forgets where it began.
        st.interference.steps = vec![Step::ShrinkCpuset];
        s.now_ms = at + period + 1;
        let d = decide(&s, &cfg, &caps, &st);
        assert_eq!(d.state.interference.duty_from_ms, None);
    }
}

#[test]
fn a_light_sample_calls_a_tick_for_a_deep_run_queue_wait_only_where_the_ladder_can_step() {
    use tidal_policy::agent::interference::{deep_wait, may_hurry};
    // What the agent's sample asks: a tick could step, and the waits so far miss deeply.
    let urgent =
        |w: &[Signal], s: &Snapshot, cfg: &Config, caps: &Capabilities, st: &PolicyState, now| {
            may_hurry(s, cfg, caps, st, now) && deep_wait(w, cfg)
        };
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let every = cfg.interference.escalate_every.0;
    let wait = |observed: f64, z: Option<f64>| Signal {
        kind: SignalKind::RunqLatency,
        workload: "online-critical/web".into(),
        what: "run-queue p99".into(),
        observed,
        target: 0.001,
        slack: (0.001 - observed) / 0.001,
        age_ms: None,
        excess_z: z,
    };
    // The last tick's snapshot: offline and offline-low at work, both freezable.
    let s = snapshot(None);
    let deep = [wait(0.003, Some(6.0))];
    let idle = PolicyState::default();
    // 3 ms against 1 ms, beyond noise: a tick now.
    assert!(may_hurry(&s, &cfg, &caps, &idle, 10_000));
    assert!(urgent(&deep, &s, &cfg, &caps, &idle, 10_000));
    // Within noise, shallow (1.3×), or not a run-queue reading: the tick can wait.
    assert!(!urgent(
        &[wait(0.003, Some(1.0))],
        &s,
        &cfg,
        &caps,
        &idle,
        10_000
    ));
    assert!(!urgent(
        &[wait(0.0013, Some(6.0))],
        &s,
        &cfg,
        &caps,
        &idle,
        10_000
    ));
    let mut slo = wait(0.003, Some(6.0));
    slo.kind = SignalKind::Slo;
    assert!(!urgent(&[slo], &s, &cfg, &caps, &idle, 10_000));
    assert!(!urgent(&[], &s, &cfg, &caps, &idle, 10_000));
    // Stepped within escalate_every: the ladder could not step, so no tick; after it, a tick
    // (offline itself is still running).
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::FreezeOfflineLow];
    st.interference.phase = Phase::Tightened {
        at_ms: 10_000,
        baseline: None,
    };
    assert!(!urgent(&deep, &s, &cfg, &caps, &st, 10_000 + every - 1));
    assert!(urgent(&deep, &s, &cfg, &caps, &st, 10_000 + every));
    // Every offline level frozen by its own step: no freeze left, no tick, however deep.
    st.interference.steps.push(Step::FreezeOffline);
    assert!(!urgent(&deep, &s, &cfg, &caps, &st, 30_000));
    // Nor with no offline work.
    let mut online_only = s.clone();
    online_only.workloads.retain(|w| w.level.is_online());
    online_only.levels_present.retain(|l| l.is_online());
    assert!(!urgent(&deep, &online_only, &cfg, &caps, &idle, 10_000));
    // Nor without a freezer.
    let mut no_freezer = caps.clone();
    no_freezer.knobs.remove(&Knob::Freeze);
    assert!(!urgent(&deep, &s, &cfg, &no_freezer, &idle, 10_000));
    // With the deep line out of reach, never.
    let mut never = Config::default();
    never.interference.freeze_below = -1000.0;
    assert!(!urgent(&deep, &s, &never, &caps, &idle, 10_000));
}

/// A 2-CPU node (confinement off) at `now`: the online workload's run-queue p99 (`runq_s`, if
/// read this tick) and its objective's slack (if any).
fn small_node(runq_s: Option<f64>, slack: Option<f64>, now: u64) -> Snapshot {
    let mut s = snapshot(slack);
    s.cpus = CpuSet::first_n(2);
    s.node_busy_cpus = Some(2.0);
    s.node_busy_short_cpus = Some(2.0);
    s.offline_usage_cpus = Some(1.5);
    s.offline_usage_short_cpus = Some(1.5);
    s.signals.extend(runq_s.map(runq));
    s.now_ms = now;
    s
}

/// The state after a deep run-queue wait at 1 s froze offline on a 2-CPU node (objective slack
/// `slack`, if any): a ladder of the run queue's.
fn frozen_by_a_burst(cfg: &Config, slack: Option<f64>) -> PolicyState {
    let caps = Capabilities::full(2);
    let d = decide(
        &small_node(Some(0.004), slack, 1_000),
        cfg,
        &caps,
        &PolicyState::default(),
    );
    assert_eq!(
        d.state.interference.steps,
        vec![Step::FreezeOfflineLow, Step::FreezeOffline],
        "{slack:?}"
    );
    assert!(d.state.interference.per_tick);
    d.state
}

/// Ticks of 100 ms from `from` (exclusive) to `until`, each reading `runq_s` and `slack`, until a
/// step is released: when, and the release's reasons.
fn ticks_until_release(
    cfg: &Config,
    st: &mut PolicyState,
    (from, until): (u64, u64),
    runq_s: f64,
    slack: Option<f64>,
) -> Option<(u64, Vec<String>)> {
    let caps = Capabilities::full(2);
    for t in (from + 100..=until).step_by(100) {
        let level = st.interference.level();
        let d = decide(&small_node(Some(runq_s), slack, t), cfg, &caps, st);
        *st = d.state;
        if st.interference.level() < level {
            let why = reasons(&d.plan, tidal_model::Cause::Release)
                .into_iter()
                .map(String::from)
                .collect();
            return Some((t, why));
        }
    }
    None
}

#[test]
fn a_freeze_for_a_run_queue_burst_is_probed_after_probe_first_of_calm_waits_not_a_calm_period() {
    let cfg = Config::default();
    let first = cfg.slo.probe_first().0.max(cfg.cpu.grow_after.0);
    assert!(first < cfg.interference.calm_period.0);
    // Without an objective, and with one that meets its target without room to give (it holds
    // growth): either way the run queue alone took the steps, and its calm is what counts.
    for slack in [None, Some(0.05)] {
        let mut st = frozen_by_a_burst(&cfg, slack);
        let (at, why) =
            ticks_until_release(&cfg, &mut st, (1_000, 20_000), 0.0003, slack).expect("a probe");
        // The first calm tick (1 100) starts the stretch.
        assert_eq!(at, 1_100 + first, "{slack:?}");
        assert!(why.iter().all(|w| w.contains("to probe")), "{why:?}");
        if slack.is_some() {
            assert!(
                why.iter()
                    .all(|w| w.contains("run-queue latency calm, the steps taken on it alone")),
                "{why:?}"
            );
        }
        assert!(st.interference.quick_probe);
    }
}

#[test]
fn a_run_queue_probe_is_judged_by_the_watch_after_it() {
    let cfg = Config::default();
    let caps = Capabilities::full(2);
    let first = cfg.slo.probe_first().0.max(cfg.cpu.grow_after.0);
    let watch = cfg
        .interference
        .release_watch
        .0
        .max(cfg.interference.escalate_every.0);
    let mut st = frozen_by_a_burst(&cfg, None);
    let (probe, _) = ticks_until_release(&cfg, &mut st, (1_000, 20_000), 0.0003, None).unwrap();
    // The waits come back within the watch: offline is frozen again and the next probe waits
    // twice as long.
    let back = probe + watch / 2;
    st = decide(&small_node(Some(0.004), None, back), &cfg, &caps, &st).state;
    assert_eq!(st.interference.level(), 2, "{:?}", st.interference);
    assert_eq!(st.interference.probe_wait_ms, 2 * first);
    let (probe, _) =
        ticks_until_release(&cfg, &mut st, (back, back + 20_000), 0.0003, None).unwrap();
    assert_eq!(probe, back + 100 + 2 * first);
    // This one outlasts the watch: a burst after it starts the next episode from the plain wait.
    let later = probe + watch + 100;
    st = decide(&small_node(Some(0.004), None, later), &cfg, &caps, &st).state;
    assert_eq!(st.interference.level(), 2);
    assert_eq!(st.interference.probe_wait_ms, 0);
    let (probe, _) =
        ticks_until_release(&cfg, &mut st, (later, later + 20_000), 0.0003, None).unwrap();
    assert_eq!(probe, later + 100 + first);
}

#[test]
fn an_objective_that_misses_after_a_run_queue_freeze_makes_the_ladder_its_own() {
    let cfg = Config::default();
    let caps = Capabilities::full(2);
    let mut st = frozen_by_a_burst(&cfg, Some(0.2));
    // The objective's next reading misses: nothing is left to freeze, but it now speaks.
    st = decide(
        &small_node(Some(0.0003), Some(-0.2), 1_500),
        &cfg,
        &caps,
        &st,
    )
    .state;
    assert_eq!(st.interference.level(), 2);
    assert!(!st.interference.per_tick);
    // Calm waits and an objective without room to give: no probe, however long.
    assert_eq!(
        ticks_until_release(&cfg, &mut st, (1_500, 60_000), 0.0003, Some(0.05)),
        None,
        "{:?}",
        st.interference
    );
}

#[test]
fn a_run_queue_ladder_is_not_probed_while_an_objective_misses_even_within_noise() {
    let cfg = Config::default();
    let caps = Capabilities::full(2);
    let mut st = frozen_by_a_burst(&cfg, Some(0.2));
    for t in (1_100..=30_000).step_by(100) {
        let mut s = small_node(Some(0.0003), Some(-0.05), t);
        // Over its target by a count within sampling noise: it holds, it does not tighten.
        s.signals[0].excess_z = Some(0.5);
        st = decide(&s, &cfg, &caps, &st).state;
        assert_eq!(st.interference.level(), 2, "at {t}: {:?}", st.interference);
    }
    assert!(
        st.interference.per_tick,
        "a hold is not a tightening signal"
    );
}

#[test]
fn pressure_tightening_beside_the_run_queue_makes_the_ladder_its_own() {
    let cfg = Config::default();
    let caps = Capabilities::full(2);
    let mut s = small_node(Some(0.004), None, 1_000);
    s.online_cpu_psi_full_1s = Some(50.0);
    s.online_cpu_psi_1s = Some(50.0);
    let d = decide(&s, &cfg, &caps, &PolicyState::default());
    assert!(d.state.interference.level() > 0);
    assert!(!d.state.interference.per_tick, "{:?}", d.state.interference);
}

/// The stall signal: the longest gap between the agent's rounds since the last tick, against the
/// guard's limit of 1 s.
fn stall(gap_s: f64) -> Signal {
    Signal {
        kind: SignalKind::Stall,
        workload: "agent".into(),
        what: "the agent's loop".into(),
        observed: gap_s,
        target: 1.0,
        slack: Signal::slack_of(gap_s, 1.0),
        age_ms: None,
        excess_z: None,
    }
}

/// No online workload: neither pressure nor an objective speaks; only the stall signal.
fn only_stall(gap_s: f64, now_ms: u64) -> Snapshot {
    let mut s = snapshot(None);
    s.workloads.retain(|w| !w.level.is_online());
    s.levels_present.retain(|l| !l.is_online());
    s.online_cpu_psi = None;
    s.online_cpu_psi_full = None;
    s.online_cpu_psi_1s = None;
    s.online_cpu_psi_full_1s = None;
    s.signals = vec![stall(gap_s)];
    s.now_ms = now_ms;
    s
}

/// The same with no stall: the agent adds the signal only after the guard pulled.
fn calm_loop(now_ms: u64) -> Snapshot {
    let mut s = only_stall(0.0, now_ms);
    s.signals.clear();
    s
}

fn frozen_targets(plan: &tidal_model::Plan) -> Vec<&Target> {
    plan.actions
        .iter()
        .filter_map(|a| match &a.op {
            Op::Set {
                target,
                knob: Knob::Freeze,
                value: KnobValue::Bool(true),
            } => Some(target),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stall_freezes_every_offline_level_at_once_and_a_calm_loop_releases_it_alone() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    // A gap at the limit is a stall: the guard acted on it.
    let d = decide(
        &only_stall(1.0, 1_000),
        &cfg,
        &caps,
        &PolicyState::default(),
    );
    assert_eq!(frozen_targets(&d.plan).len(), 2, "{:?}", d.plan.actions);
    for r in reasons(&d.plan, tidal_model::Cause::Interference) {
        assert!(r.contains("the agent's loop stopped for 1000.00ms"), "{r}");
    }
    assert!(d.state.interference.has(Step::FreezeOffline));
    assert!(d.state.interference.has(Step::FreezeOfflineLow));
    assert_eq!(
        d.state.interference.stall_steps,
        vec![Step::FreezeOfflineLow, Step::FreezeOffline]
    );
    // The loop comes round again: the steps go one by one after the calm period, with nothing
    // else to say so.
    let mut st = d.state;
    let calm = cfg.interference.calm_period.0;
    let mut released = Vec::new();
    for t in (1..400).map(|i| 1_000 + i * 100) {
        let d = decide(&calm_loop(t), &cfg, &caps, &st);
        st = d.state;
        if usize::from(st.interference.level()) + released.len() < 2 {
            let why = reasons(&d.plan, tidal_model::Cause::Release);
            assert!(
                why.iter()
                    .any(|r| r.contains("the agent's loop comes round")),
                "{why:?}"
            );
            released.push(t);
        }
        if st.interference.steps.is_empty() {
            break;
        }
    }
    assert_eq!(released.len(), 2, "{:?}", st.interference);
    assert!(
        released[0] - 1_000 >= calm,
        "released after {} ms",
        released[0] - 1_000
    );
    assert!(
        st.interference.stall_steps.is_empty(),
        "gone with the steps"
    );
    // Without a pull nothing tightens.
    let d = decide(&calm_loop(1_000), &cfg, &caps, &PolicyState::default());
    assert_eq!(d.state.interference.level(), 0);
}

#[test]
fn a_stall_freezes_at_once_whatever_the_ladders_phase() {
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    // A step was taken 100 ms ago (under escalate_every), or the ladder backs off after a useless
    // one: the guard froze offline all the same, and the ladder takes both freezes.
    for phase in [
        Phase::Tightened {
            at_ms: 4_900,
            baseline: None,
        },
        Phase::BackedOff { until_ms: 60_000 },
    ] {
        let mut st = PolicyState::default();
        st.interference.steps = vec![Step::CapCpu];
        st.interference.phase = phase;
        let d = decide(&only_stall(2.5, 5_000), &cfg, &caps, &st);
        assert!(
            d.state.interference.has(Step::FreezeOffline)
                && d.state.interference.has(Step::FreezeOfflineLow),
            "{phase:?}: {:?}",
            d.state.interference
        );
        assert_eq!(frozen_targets(&d.plan).len(), 2, "{phase:?}");
    }
}

#[test]
fn a_calm_loop_releases_nothing_a_stall_did_not_take() {
    // An objective took a step and then went stale (no reading: silent), and pressure is not
    // read: the loop coming round must not release the objective's step.
    let cfg = Config::default();
    let caps = Capabilities::full(8);
    let mut st = PolicyState::default();
    st.interference.steps = vec![Step::FreezeOfflineLow];
    st.interference.phase = Phase::Tightened {
        at_ms: 0,
        baseline: None,
    };
    for t in (1..600).map(|i| i * 100) {
        let d = decide(&calm_loop(t), &cfg, &caps, &st);
        st = d.state;
    }
    assert_eq!(st.interference.steps, vec![Step::FreezeOfflineLow]);
    // A stall on top of it takes the other freeze; the loop coming round releases that one
    // alone, and the objective's step stays.
    let d = decide(&only_stall(3.0, 60_000), &cfg, &caps, &st);
    st = d.state;
    assert_eq!(
        st.interference.steps,
        vec![Step::FreezeOfflineLow, Step::FreezeOffline]
    );
    assert_eq!(st.interference.stall_steps, vec![Step::FreezeOffline]);
    for t in (1..600).map(|i| 60_000 + i * 100) {
        let d = decide(&calm_loop(t), &cfg, &caps, &st);
        st = d.state;
    }
    assert_eq!(st.interference.steps, vec![Step::FreezeOfflineLow]);
    assert!(st.interference.stall_steps.is_empty());
}

#[test]
fn the_stall_brake_holds_the_offline_levels_present() {
    let caps = Capabilities::full(8);
    let mut s = snapshot(None);
    assert_eq!(
        tidal_policy::agent::interference::brake_targets(&s, &caps),
        vec![
            Target::Tidal(QosLevel::OfflineLow.group_path()),
            Target::Tidal(QosLevel::Offline.group_path()),
        ]
    );
    s.levels_present.retain(|l| *l != QosLevel::OfflineLow);
    assert_eq!(
        tidal_policy::agent::interference::brake_targets(&s, &caps),
        vec![Target::Tidal(QosLevel::Offline.group_path())]
    );
}
