//! The interference ladder. Signals of online suffering (the online groups' CPU pressure, latency
//! objectives' slack, run-queue latency, and a stall of the agent's own loop) each give a [`Verdict`]; all of them drive one
//! ladder of tightening steps ([`Step::LADDER`]) with one escalation and release logic. A new signal
//! adds a rule to [`rules`], not a path through `decide`.
//!
//! - A step is taken at most once per `escalate_every`, and only if it would change something now
//!   (shrinking the cpuset needs confinement on and a CPU to spare; freezing a level needs the level).
//!   A reading renewed less often than every tick (a latency objective) takes at most one step:
//!   the next needs a reading taken after it.
//!   A signal that reads only the last tick (run-queue latency) takes none in a tick in which
//!   confinement shrinks offline: the next tick's reading shows what the shrink did (once; never
//!   two such waits in a row).
//! - A step taken for pressure that has not fallen by a fifth one interval later did not help: it
//!   is undone and the ladder backs off for `calm_period`. Pressure read through avg10 (no
//!   one-second window) cannot fall that fast, so such a step is not judged.
//! - A quantile signal (an objective, run-queue latency) misses its target only beyond sampling
//!   noise: its window's count over the target must be as unlikely by chance as a normal deviate
//!   of `interference.min_excess_z` ([`tidal_model::Signal::excess_z`]: the exact binomial tail
//!   where few are expected over). A miss within the noise holds growth instead.
//!   A fresh miss deeper than `interference.freeze_below` freezes every offline level left at
//!   once, passing over a cpuset shrink and the CPU-time cap (whose running part lets the tail
//!   through at a load step). Noise is judged at the target; the depth is the observed quantile's.
//! - A signal that holds (a latency objective with little slack) stops offline growing and any
//!   release. A stretch of `slo.probe_first` with room (every hold with slack of `slo.hold_below`
//!   or more, or every signal calm with an objective among them) releases one step to probe: an
//!   objective whose target is too close to the quiet latency for ample slack would otherwise keep
//!   offline tightened for good, and a passing miss (a batch job starting) would cost minutes of
//!   offline work. One probe at a time: the next waits until the last is judged. Tightening
//!   within `slo.probe_after` of a probe doubles the wait before the next (up to
//!   `PROBE_BACKOFF_MAX` × `slo.probe_after`); a probe that lasts `slo.probe_after` resets it.
//! - Steps taken on run-queue readings alone (each reads the last tick) are probed once those
//!   readings have been calm for the same stretch, even while an objective that meets its target
//!   holds growth: the watch after a release sees a returning wait within a `watch_tick`, so a
//!   passing burst (a host stall, a start-up) costs seconds of offline work at most, not a calm
//!   period. Such a probe is judged over `release_watch` (`escalate_every` at least). A signal
//!   with a longer window that tightens makes the ladder its own.
//! - When every signal that speaks is calm, one step is released after a calm objective's time
//!   (`cpu.grow_after` of ample slack: it measures the latency itself), else the shortest calm time
//!   the others ask (`calm_period`), quoting it. Tightening within `slo.probe_after` of such a
//!   release doubles that time before the next (up to `PROBE_BACKOFF_MAX` times), and the wait
//!   before a probe; a release that lasts until the next halves the calm time (the probe's wait
//!   resets only after `slo.probe_after`).

use super::state::{Phase, PolicyState, Step};
use super::tick::{CpuDecision, LadderTick};
use crate::config::{CapMode, Config, Millis, PsiLine};
use tidal_model::{
    Action, Capabilities, Cause, Knob, KnobValue, Plan, QosLevel, SignalKind, Snapshot,
};

/// What one signal says this tick.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Online suffers: tighten. `reason` quotes the signal; `baseline` is a value that must fall after
    /// the step, or the step is undone. `per_tick`: the reading is of the last tick, so the next one
    /// shows what a confinement change in this tick did.
    Tighten {
        reason: String,
        baseline: Option<f64>,
        per_tick: bool,
        /// When the reading was taken, for one renewed less often than every tick (a latency
        /// objective, every `slo.interval`): a step needs a reading taken after the last step, so
        /// one reading never climbs the ladder twice.
        measured_at_ms: Option<u64>,
        /// The miss is deep (slack below `interference.freeze_below`, beyond noise): every
        /// offline level left is frozen at once.
        deep: bool,
    },
    /// Met, without room to give: no release; with `stop_growth`, offline does not grow either.
    Hold { reason: String, stop_growth: bool },
    /// Fine; one step may be released once it has been so for `after_ms`. `reason` quotes it.
    /// `governs`: the signal measures online's latency itself (an objective), so when it is calm its
    /// wait is the wait, shorter or longer than the others'.
    Calm {
        after_ms: u64,
        reason: String,
        governs: bool,
    },
    /// The signal has nothing to say (no data).
    Silent,
}

/// Online CPU pressure: the configured line over the last second (avg10 as a fallback) above the
/// threshold. Only when per-cgroup PSI exists.
fn psi_rule(snap: &Snapshot, cfg: &Config, caps: &Capabilities) -> Verdict {
    if !caps.psi {
        return Verdict::Silent;
    }
    let (win, avg) = match cfg.interference.psi_line {
        PsiLine::Some => (snap.online_cpu_psi_1s, snap.online_cpu_psi),
        PsiLine::Full => (snap.online_cpu_psi_full_1s, snap.online_cpu_psi_full),
    };
    let Some(p) = win.or(avg) else {
        return Verdict::Silent;
    };
    let thr = cfg.interference.psi_threshold;
    if p > thr {
        Verdict::Tighten {
            reason: format!("online cpu pressure {p:.1}% over {thr}%"),
            // A step is judged by the pressure falling a fifth within `escalate_every`, which the
            // one-second window can show; avg10 (the fallback) decays over ten seconds and never
            // could, so a step read through it is not judged.
            baseline: win.map(|_| p),
            // A window of about a second (avg10 as a fallback): one tick later it barely moved.
            per_tick: false,
            measured_at_ms: None,
            deep: false,
        }
    } else {
        Verdict::Calm {
            governs: false,
            after_ms: cfg.interference.calm_period.0,
            reason: format!("online cpu pressure {p:.1}% under {thr}%"),
        }
    }
}

fn ms(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0}us", s * 1e6)
    } else {
        format!("{:.2}ms", s * 1e3)
    }
}

/// A miss deeper than `interference.freeze_below` (−1000 or less: never).
fn deep_miss(slack: f64, cfg: &Config) -> bool {
    let line = cfg.interference.freeze_below;
    line > -1000.0 && slack < line
}

/// A missed quantile whose window's count over the target is within sampling noise of what the
/// quantile allows (`interference.min_excess_z`; 0: no test); unknown counts are not noise.
fn within_noise(s: &tidal_model::Signal, cfg: &Config) -> bool {
    let min = cfg.interference.min_excess_z;
    min > 0.0 && s.excess_z.is_some_and(|z| z < min)
}

/// The signal of `kind` that speaks: the least slack among misses beyond noise (below `miss`),
/// else the least slack of all.
fn speaker<'a>(
    snap: &'a Snapshot,
    kind: SignalKind,
    miss: f64,
    cfg: &Config,
) -> Option<&'a tidal_model::Signal> {
    let of_kind = || {
        snap.signals
            .iter()
            .filter(move |s| s.kind == kind && s.slack.is_finite())
    };
    let least = |a: &&tidal_model::Signal, b: &&tidal_model::Signal| a.slack.total_cmp(&b.slack);
    of_kind()
        .filter(|s| s.slack < miss && !within_noise(s, cfg))
        .min_by(least)
        .or_else(|| of_kind().min_by(least))
}

fn noise_note(quote: &str, s: &tidal_model::Signal, cfg: &Config) -> String {
    format!(
        "{quote}, within sampling noise (excess {:.1} sd, under {}): offline does not grow",
        s.excess_z.unwrap_or(0.0),
        cfg.interference.min_excess_z
    )
}

/// Latency objectives: the objective with the least slack speaks (slack = (target − observed) /
/// target over the last `slo.interval`), a miss beyond sampling noise before any other. Stale or unreachable objectives have no reading, so this
/// rule is then silent and the pressure rule alone acts.
fn slo_rule(snap: &Snapshot, cfg: &Config) -> Verdict {
    let slo = &cfg.slo;
    let Some(worst) = speaker(snap, SignalKind::Slo, slo.tighten_below, cfg) else {
        return Verdict::Silent;
    };
    let quote = format!(
        "objective {} {} ≤ {}: observed {}, slack {:.0}%",
        worst.workload,
        worst.what,
        ms(worst.target),
        ms(worst.observed),
        worst.slack * 100.0
    );
    if worst.slack < slo.tighten_below && within_noise(worst, cfg) {
        Verdict::Hold {
            reason: noise_note(&quote, worst, cfg),
            stop_growth: true,
        }
    } else if worst.slack < slo.tighten_below {
        // No baseline: a missed objective tightens one step per interval until it is met (a
        // latency quantile need not fall by a fifth within one interval of a step that helps).
        Verdict::Tighten {
            reason: quote,
            baseline: None,
            per_tick: false,
            measured_at_ms: Some(snap.now_ms.saturating_sub(worst.age_ms.unwrap_or(0))),
            deep: deep_miss(worst.slack, cfg),
        }
    } else if worst.slack < slo.hold_below {
        Verdict::Hold {
            reason: quote,
            stop_growth: true,
        }
    } else if worst.slack <= slo.release_above {
        Verdict::Hold {
            reason: quote,
            stop_growth: false,
        }
    } else {
        Verdict::Calm {
            after_ms: cfg.cpu.grow_after.0,
            reason: quote,
            governs: true,
        }
    }
}

/// Run-queue latency (eBPF): an online workload whose tasks waited longer than the threshold at
/// p99 over the last tick has interference, seen as it happens.
fn runq_rule(snap: &Snapshot, cfg: &Config) -> Verdict {
    let Some(worst) = speaker(snap, SignalKind::RunqLatency, 0.0, cfg) else {
        return Verdict::Silent;
    };
    let quote = format!(
        "run-queue p99 of {} {} over {}",
        worst.workload,
        ms(worst.observed),
        ms(worst.target)
    );
    if worst.slack < 0.0 && within_noise(worst, cfg) {
        Verdict::Hold {
            reason: noise_note(&quote, worst, cfg),
            stop_growth: true,
        }
    } else if worst.slack < 0.0 {
        Verdict::Tighten {
            reason: quote,
            baseline: None,
            per_tick: true,
            measured_at_ms: None,
            deep: deep_miss(worst.slack, cfg),
        }
    } else {
        Verdict::Calm {
            governs: false,
            after_ms: cfg.interference.calm_period.0,
            reason: format!(
                "run-queue p99 of {} {} under {}",
                worst.workload,
                ms(worst.observed),
                ms(worst.target)
            ),
        }
    }
}

/// Whether a tick brought forward could take a step for a deep miss: the ladder may step (its last
/// step `escalate_every` ago or more) and a freeze step is left that would stop something in
/// `snap` (the last tick's). Cheap: the agent asks it before reading the run-queue waits.
pub fn may_hurry(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    st: &PolicyState,
    now_ms: u64,
) -> bool {
    let may_step = match st.interference.phase {
        Phase::Tightened { at_ms, .. } => {
            now_ms.saturating_sub(at_ms) >= cfg.interference.escalate_every.0
        }
        Phase::BackedOff { until_ms } => now_ms >= until_ms,
        Phase::Idle | Phase::Calming { .. } => true,
    };
    let freeze_left = super::confine::offline_present(snap)
        && [QosLevel::OfflineLow, QosLevel::Offline]
            .into_iter()
            .any(|l| !st.interference.has(freeze_step(l)) && freezable(snap, cfg, caps, l));
    may_step && freeze_left && cfg.interference.freeze_below > -1000.0
}

/// Whether run-queue readings taken between ticks (a light sample) show a wait deeper than
/// `interference.freeze_below`, beyond sampling noise (judged at the threshold). Where
/// [`may_hurry`] too, a tick now reads the same waits and freezes, tens of milliseconds sooner.
pub fn deep_wait(signals: &[tidal_model::Signal], cfg: &Config) -> bool {
    signals.iter().any(|s| {
        s.kind == SignalKind::RunqLatency
            && s.slack.is_finite()
            && deep_miss(s.slack, cfg)
            && !within_noise(s, cfg)
    })
}

/// Every signal's rule, in order of precedence.
pub fn rules(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    prev: &PolicyState,
) -> Vec<Verdict> {
    // The stall rule last: a release quotes the first of the signals calm for as long.
    vec![
        slo_rule(snap, cfg),
        runq_rule(snap, cfg),
        psi_rule(snap, cfg, caps),
        stall_rule(snap, cfg, prev),
    ]
}

/// The stall signal: the agent's stall guard froze offline because the loop had not come round
/// for its limit (the agent adds one only after such a pull), the longest if several.
fn stalled(snap: &Snapshot) -> Option<&tidal_model::Signal> {
    snap.signals
        .iter()
        .filter(|s| s.kind == SignalKind::Stall)
        .max_by(|a, b| a.observed.total_cmp(&b.observed))
}

/// Steps a stall took, once it is over: calm after `calm_period` while the top step is one of
/// them, so they are released even where no other signal speaks (no online workload, or the guard
/// turned off since). Silent otherwise: steps other signals took stay theirs, and a ladder whose
/// signals all fell silent keeps them. A stall itself is the ladder's to meet ([`decide`]).
fn stall_rule(snap: &Snapshot, cfg: &Config, prev: &PolicyState) -> Verdict {
    let lad = &prev.interference;
    let top_is_stalls = lad
        .steps
        .last()
        .is_some_and(|s| lad.stall_steps.contains(s));
    if !top_is_stalls || stalled(snap).is_some() {
        return Verdict::Silent;
    }
    Verdict::Calm {
        after_ms: cfg.interference.calm_period.0,
        reason: "the agent's loop comes round again".into(),
        governs: false,
    }
}

/// What the stall guard freezes when the agent's loop stops: the groups the ladder's freeze steps
/// would freeze now (the tidal offline levels present, and offline pods that may be frozen: not
/// those with liveness or startup probes, which a freeze would get restarted). Empty without a
/// freezer.
pub fn brake_targets(snap: &Snapshot, caps: &Capabilities) -> Vec<tidal_model::Target> {
    if !caps.has(Knob::Freeze) {
        return Vec::new();
    }
    let mut out: Vec<tidal_model::Target> = [QosLevel::OfflineLow, QosLevel::Offline]
        .into_iter()
        .filter(|l| snap.levels_present.contains(l))
        .map(|l| tidal_model::Target::Tidal(l.group_path()))
        .collect();
    out.extend(
        super::pods::offline(snap)
            .filter(|(_, _, p)| !p.liveness_probe)
            .map(|(_, g, _)| tidal_model::Target::Foreign(g.clone())),
    );
    out
}

/// Whether any signal asks offline not to grow.
pub fn stops_growth(verdicts: &[Verdict]) -> bool {
    verdicts.iter().any(|v| {
        matches!(
            v,
            Verdict::Hold {
                stop_growth: true,
                ..
            }
        )
    })
}

/// Would `step` change anything now, with `taken` in force?
fn effective(
    step: Step,
    taken: &[Step],
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    cpu: &CpuDecision,
) -> bool {
    match step {
        Step::ShrinkCpuset => cpu.confine && cpu.target > cpu.min_off.max(1),
        // Nothing to cap where every offline level is frozen by its own step (a deep miss froze
        // them before the cap).
        Step::CapCpu
            if !taken.is_empty()
                && [QosLevel::OfflineLow, QosLevel::Offline].iter().all(|l| {
                    taken.contains(&freeze_step(*l))
                        || !(snap.levels_present.contains(l) || super::pods::present(snap, *l))
                }) =>
        {
            false
        }
        Step::CapCpu => match super::cap::mode(cfg, caps) {
            CapMode::Quota => {
                (caps.has(Knob::CpuMax) && super::confine::tidal_offline_present(snap))
                    || (caps.has(Knob::CpuMax) && super::pods::offline(snap).next().is_some())
            }
            CapMode::DutyCycle => caps.has(Knob::Freeze) && super::confine::offline_present(snap),
        },
        Step::FreezeOfflineLow => freezable(snap, cfg, caps, QosLevel::OfflineLow),
        Step::FreezeOffline => freezable(snap, cfg, caps, QosLevel::Offline),
    }
}

/// Whether freezing `level` would stop something: its tidal group, or its pods (frozen, or capped
/// where they have liveness or startup probes).
fn freezable(snap: &Snapshot, cfg: &Config, caps: &Capabilities, level: QosLevel) -> bool {
    let _ = cfg;
    (caps.has(Knob::Freeze) && snap.levels_present.contains(&level))
        || ((caps.has(Knob::Freeze) || caps.has(Knob::CpuMax)) && super::pods::present(snap, level))
}

/// Judges a release made at `at` (a probe, or one for calm) by what followed it: after `window`
/// without tightening it lasted and `wait` goes back to 0; tightening within `window` doubles
/// `wait` (from at least `unit`, up to `max`). Either way it is then judged.
fn judge_release(
    at: &mut Option<u64>,
    wait: &mut u64,
    now: u64,
    window: u64,
    tightened: bool,
    (unit, max): (u64, u64),
) {
    let Some(t) = *at else { return };
    if now.saturating_sub(t) >= window {
        *wait = 0;
        *at = None;
    } else if tightened {
        *wait = (*wait).max(unit).saturating_mul(2).min(max);
        *at = None;
    }
}

/// Moves the ladder one tick on this tick's verdicts.
pub fn decide(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    cpu: &CpuDecision,
    verdicts: &[Verdict],
    st: &mut PolicyState,
) -> LadderTick {
    let now = snap.now_ms;
    // The agent's loop stopped and its stall guard froze offline meanwhile: every freeze step is
    // taken at once, whatever the ladder's phase, so that the guard's freeze is the ladder's and
    // is released like any step.
    let stall = stalled(snap).map(|s| {
        let taken = &st.interference.steps;
        let freezes: Vec<Step> = Step::LADDER
            .into_iter()
            .filter(|x| x.freezes() && !taken.contains(x))
            .filter(|x| effective(*x, taken, snap, cfg, caps, cpu))
            .collect();
        (s, freezes)
    });
    // With no freeze left to take (offline frozen already, or nothing to freeze) the tick goes on.
    if let Some((s, freezes)) = stall.filter(|(_, f)| !f.is_empty()) {
        let lad = &mut st.interference;
        lad.steps.extend(freezes.iter().copied());
        lad.stall_steps.extend(freezes);
        lad.phase = Phase::Tightened {
            at_ms: now,
            baseline: None,
        };
        lad.per_tick = false;
        lad.hold_since_ms = None;
        lad.waited = false;
        return LadderTick {
            pressure: Some(format!(
                "the agent's loop stopped for {} (its stall guard freezes offline past {}): every offline level frozen at once",
                ms(s.observed),
                ms(s.target)
            )),
            ..LadderTick::default()
        };
    }
    let every = cfg.interference.escalate_every.0;
    // Back off for the pressure rule's calm period after a useless step.
    let backoff = cfg.interference.calm_period.0;
    let tightens = || {
        verdicts.iter().filter_map(|v| match v {
            Verdict::Tighten {
                reason,
                baseline,
                measured_at_ms,
                deep,
                per_tick,
            } => Some((reason.clone(), *baseline, *measured_at_ms, *deep, *per_tick)),
            _ => None,
        })
    };
    // The first signal whose reading may step: one already stepped on (taken before the last
    // step) gives way to a fresher one behind it, and speaks only if none is fresher.
    let last_step = match st.interference.phase {
        Phase::Tightened { at_ms, .. } => Some(at_ms),
        _ => None,
    };
    let fresh = |m: &Option<u64>| match (m, last_step) {
        (Some(m), Some(at)) => *m > at,
        _ => true,
    };
    let tighten = tightens()
        .find(|(_, _, m, _, _)| fresh(m))
        .or_else(|| tightens().next());
    // Every signal that tightens reads the last tick alone (run-queue latency).
    let all_per_tick = tightens().all(|t| t.4);
    // Confinement shrinking offline this tick is already the answer to online needing more: when
    // every tightening signal reads the last tick only (run-queue latency), wait a tick to see what
    // the shrink did rather than take a CPU on top of it. Windows spanning many ticks (pressure, a
    // latency objective) would not show it by then. Never two waits in a row.
    let confining = cpu.confine && cpu.target < st.base_offline.unwrap_or(cpu.n).min(cpu.n);
    // Deep when any fresh reading is, whichever signal speaks; a reading of the last tick alone
    // not while confinement shrinks offline (the next tick's shows what the shrink did), unless
    // the last tick already waited for that.
    let settled = !confining || st.interference.waited;
    let deep = verdicts.iter().any(|v| match v {
        Verdict::Tighten {
            deep,
            measured_at_ms,
            per_tick,
            ..
        } => *deep && fresh(measured_at_ms) && (settled || !*per_tick),
        _ => false,
    });
    let wait_a_tick = confining
        && tighten.is_some()
        && !st.interference.waited
        && verdicts.iter().all(|v| match v {
            Verdict::Tighten { per_tick, .. } => *per_tick,
            _ => true,
        });
    let held = verdicts.iter().find_map(|v| match v {
        Verdict::Hold { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    // Every hold leaves room (none stops growth): a stretch of these may probe a release.
    let roomy = held.is_some() && !stops_growth(verdicts);
    // Released after the calm time of a calm objective (it measures the latency itself), else the
    // shortest a calm signal asks, when no signal holds; that signal is quoted.
    let calms = verdicts.iter().filter_map(|v| match v {
        Verdict::Calm {
            after_ms,
            reason,
            governs,
        } => Some((*after_ms, reason, *governs)),
        _ => None,
    });
    let objective_calm = calms.clone().any(|c| c.2);
    let calm_by = calms
        .clone()
        .find(|c| c.2)
        .or_else(|| calms.min_by_key(|c| c.0))
        .map(|(after, reason, _)| (after, reason));
    let any_calm = calm_by.is_some() && held.is_none();
    let lad = &mut st.interference;
    // A probe or release for a per-tick ladder is judged by the watch after it: a wait that comes
    // back shows within `release_watch` (a tick at least between steps).
    let quick = cfg.interference.release_watch.0.max(every);
    let quick_probe = lad.quick_probe;
    // A release for calm is judged like a probe: tightening soon after it doubles the calm time
    // before the next one (up to PROBE_BACKOFF_MAX times); one that lasts until the next release
    // halves it, one that lasts the judging time resets it.
    let judge = if cfg.slo.probe_after.0 > 0 {
        cfg.slo.probe_after.0
    } else {
        backoff
    };
    judge_release(
        &mut lad.released_at_ms,
        &mut lad.release_wait,
        now,
        if quick_probe { quick } else { judge },
        tighten.is_some(),
        (1, super::state::PROBE_BACKOFF_MAX),
    );
    let calm = calm_by
        .map_or(backoff, |(after, _)| after)
        .saturating_mul(lad.release_wait.max(1));
    lad.waited = wait_a_tick;
    let mut tick = LadderTick {
        held: held.clone(),
        ..LadderTick::default()
    };
    let offline_present = super::confine::offline_present(snap);
    let probe_after = cfg.slo.probe_after.0;
    // Never under the calm objective's own wait, so that a probe cannot cut short the calm wait a
    // failed release doubled (both double from here).
    let probe_first = cfg.slo.probe_first().0.max(cfg.cpu.grow_after.0);
    // A probe is judged by what follows it within `probe_after`: tightening doubles the wait
    // before the next one (from `probe_first`), a quiet stretch resets it.
    judge_release(
        &mut lad.probe_at_ms,
        &mut lad.probe_wait_ms,
        now,
        if quick_probe { quick } else { probe_after },
        tighten.is_some(),
        (
            probe_first,
            probe_after.saturating_mul(super::state::PROBE_BACKOFF_MAX),
        ),
    );
    // The stretch with room (every signal calm, or holding with room) counts towards a probe,
    // whichever of the two each tick was: more slack never releases later. Probes are for
    // objectives: pressure calm without one waits its calm time; steps taken on run-queue
    // latency alone are probed on its calm (below).
    let tightening = tighten.is_some();
    if lad.probe_at_ms.is_none() && lad.released_at_ms.is_none() {
        lad.quick_probe = false;
    }
    // Steps taken on run-queue readings alone have room once none of those readings is over its
    // threshold (a tick without one breaks nothing), while every objective meets its target
    // (growth held or not; a miss within sampling noise is still a miss).
    let runq_calm = snap
        .signals
        .iter()
        .filter(|s| s.kind == SignalKind::RunqLatency)
        .all(|s| s.slack >= 0.0);
    let objectives_met = snap
        .signals
        .iter()
        .filter(|s| s.kind == SignalKind::Slo)
        .all(|s| s.slack >= cfg.slo.tighten_below);
    let per_tick_room = lad.per_tick && !tightening && runq_calm && objectives_met;
    let room = !tightening && (roomy || (any_calm && objective_calm) || per_tick_room);
    // Bounded again here: a reload may have shortened `probe_after`.
    let probe_wait = lad
        .probe_wait_ms
        .min(probe_after.saturating_mul(super::state::PROBE_BACKOFF_MAX))
        .max(probe_first);
    let hold_since = if room && !lad.steps.is_empty() {
        Some(*lad.hold_since_ms.get_or_insert(now))
    } else {
        lad.hold_since_ms = None;
        None
    };
    // One probe at a time: the next waits until the last is judged (it failed, or lasted
    // `probe_after`), so a steady hold with room releases one step per `probe_after`, not per
    // `probe_first`.
    let probe_due = probe_after > 0
        && lad.probe_at_ms.is_none()
        && offline_present
        && hold_since.is_some_and(|t| now.saturating_sub(t) >= probe_wait);
    let probe_note = |why: &str, since: u64| {
        format!(
            "{why}, with room for {:.0}s: one step released to probe",
            now.saturating_sub(since) as f64 / 1000.0
        )
    };
    match tighten {
        Some((reason, baseline, measured_at, _, _)) => {
            tick.pressure = Some(reason);
            // A signal with a longer window tightening too now speaks for the steps: its probes,
            // not quick ones.
            if !all_per_tick {
                lad.per_tick = false;
            }
            let may_step = match lad.phase {
                Phase::Tightened { at_ms, baseline: b } => {
                    if now.saturating_sub(at_ms) < every || measured_at.is_some_and(|m| m <= at_ms)
                    {
                        false
                    } else if let (Some(before), Some(p)) = (b, baseline) {
                        if !lad.steps.is_empty() && p >= 0.8 * before {
                            // The step did not lower the pressure: not offline's doing.
                            lad.steps.pop();
                            lad.phase = Phase::BackedOff {
                                until_ms: now.saturating_add(backoff),
                            };
                            tick.undone = true;
                            false
                        } else {
                            true
                        }
                    } else {
                        true
                    }
                }
                Phase::BackedOff { until_ms } => now >= until_ms,
                Phase::Idle | Phase::Calming { .. } => true,
            };
            if may_step && offline_present && !wait_a_tick {
                let open: Vec<Step> = Step::LADDER
                    .into_iter()
                    .filter(|s| !lad.steps.contains(s))
                    .filter(|s| effective(*s, &lad.steps, snap, cfg, caps, cpu))
                    .collect();
                // A deep miss freezes every offline level left at once, passing over a cpuset
                // shrink and the cap; without a freeze left it takes the next step.
                let freezes: Vec<Step> = open
                    .iter()
                    .copied()
                    .filter(|s| deep && s.freezes())
                    .collect();
                let take = if freezes.is_empty() {
                    open.first().copied().into_iter().collect()
                } else {
                    freezes
                };
                if take.len() > 1 || take.first().is_some_and(|s| open.first() != Some(s)) {
                    if let Some(p) = tick.pressure.as_mut() {
                        p.push_str(&format!(
                            " (below {:.0}%: every offline level frozen at once)",
                            cfg.interference.freeze_below * 100.0
                        ));
                    }
                }
                if !take.is_empty() {
                    if lad.steps.is_empty() {
                        lad.per_tick = all_per_tick;
                    }
                    lad.steps.extend(take);
                    lad.phase = Phase::Tightened {
                        at_ms: now,
                        baseline,
                    };
                }
            }
        }
        None if any_calm => {
            if let Phase::BackedOff { until_ms } = lad.phase {
                if now < until_ms && lad.steps.is_empty() {
                    return tick;
                }
            }
            if lad.steps.is_empty() {
                lad.phase = Phase::Idle;
            } else {
                let since = match lad.phase {
                    Phase::Calming { since_ms } => since_ms,
                    _ => now,
                };
                let released = now.saturating_sub(since) >= calm;
                if released || probe_due {
                    if released {
                        // The last release has lasted until this one: half the wait back.
                        if lad.released_at_ms.is_some() {
                            lad.release_wait /= 2;
                        }
                        tick.calm = Some(format!(
                            "{} for {:.0}s",
                            calm_by.map_or("every signal calm", |(_, r)| r.as_str()),
                            now.saturating_sub(since) as f64 / 1000.0
                        ));
                    } else {
                        tick.probe =
                            Some(probe_note("every signal calm", hold_since.unwrap_or(now)));
                    }
                    lad.judge_release_from(now);
                    // Released: the baseline of the step goes with it.
                    tick.released = lad.steps.pop();
                    lad.hold_since_ms = None;
                    lad.phase = if lad.steps.is_empty() {
                        Phase::Idle
                    } else {
                        Phase::Calming { since_ms: now }
                    };
                } else {
                    lad.phase = Phase::Calming { since_ms: since };
                }
            }
        }
        None => {
            // A holding signal restarts the calm count: release needs an unbroken calm stretch.
            if let Phase::Calming { .. } = lad.phase {
                lad.phase = Phase::Idle;
            }
            if (roomy || per_tick_room) && probe_due {
                tick.released = lad.steps.pop();
                // The popped step's baseline goes with it.
                lad.phase = Phase::Idle;
                lad.judge_release_from(now);
                lad.hold_since_ms = None;
                let why = match (roomy, held.as_deref()) {
                    (true, h) => h.unwrap_or("objective met").to_string(),
                    (false, h) => format!(
                        "run-queue latency calm, the steps taken on it alone{}",
                        h.map(|h| format!(" ({h})")).unwrap_or_default()
                    ),
                };
                tick.probe = Some(probe_note(&why, hold_since.unwrap_or(now)));
            }
        }
    }
    // A ladder emptied with no probe pending starts its next episode from the plain wait.
    if lad.steps.is_empty() && lad.probe_at_ms.is_none() && !tightening {
        lad.probe_wait_ms = 0;
    }
    if lad.steps.is_empty() {
        lad.per_tick = false;
    }
    lad.stall_steps.retain(|s| lad.steps.contains(s));
    tick
}

/// What the freeze steps want this tick, for the offline pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Freezing {
    /// Each offline level frozen now: by its freeze step, starvation, or the duty cycle's frozen part.
    pub offline_low: bool,
    pub offline: bool,
    /// Frozen by the freeze step or starvation alone (not the duty cycle).
    pub offline_low_held: bool,
    pub offline_held: bool,
    pub reason: String,
    pub cause: Cause,
    /// The duty cycle, while the cap step is in force: its description, quoting the signal.
    pub duty: Option<String>,
}

/// The ladder step that freezes `level`.
fn freeze_step(level: QosLevel) -> Step {
    if level == QosLevel::OfflineLow {
        Step::FreezeOfflineLow
    } else {
        Step::FreezeOffline
    }
}

/// Freezes or thaws the offline levels: for the ladder's freeze steps, or when online needs every CPU
/// and freezing is allowed (starved).
#[allow(clippy::too_many_arguments)]
pub fn freeze(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    tick: &LadderTick,
    static_due: bool,
    prev: &PolicyState,
    st: &mut PolicyState,
    plan: &mut Plan,
) -> Freezing {
    let n = snap.cpus.len();
    let starved = st.starved;
    // The CPU-time cap as a duty cycle: offline frozen for the rest of each period.
    let duty =
        st.interference.has(Step::CapCpu) && super::cap::mode(cfg, caps) == CapMode::DutyCycle;
    let from = if duty {
        let released = tick.released.is_some() || tick.undone;
        let start = || super::cap::duty_start(snap.now_ms, released, cfg);
        match st.interference.duty_from_ms {
            Some(f) if !released => f,
            _ => *st.interference.duty_from_ms.insert(start()),
        }
    } else {
        st.interference.duty_from_ms = None;
        snap.now_ms
    };
    let duty_frozen = duty && super::cap::duty_off(snap.now_ms, from, cfg);
    let held_low = st.interference.has(Step::FreezeOfflineLow) || starved;
    let held_off = st.interference.has(Step::FreezeOffline) || starved;
    let want_low = held_low || duty_frozen;
    let want_off = held_off || duty_frozen;
    // The signal that tightens now, else the one that keeps the steps in force.
    let pressure = tick
        .pressure
        .clone()
        .or_else(|| tick.held.clone())
        .unwrap_or_else(|| "the ladder's steps held until the calm period ends".to_string());
    let share = format!(
        "offline CPU time capped by a duty cycle ({:.0}% of every {})",
        cfg.interference.cap_fraction * 100.0,
        Millis(cfg.tick.0.saturating_mul(10))
    );
    let freezing = Freezing {
        offline_low: want_low,
        offline: want_off,
        offline_low_held: held_low,
        offline_held: held_off,
        duty: duty.then(|| format!("{pressure}: {share}")),
        reason: if starved {
            format!("online needs all {n} CPUs and allow_freeze is on")
        } else {
            pressure.clone()
        },
        cause: if starved {
            Cause::Confine
        } else {
            Cause::Interference
        },
    };
    if !caps.has(Knob::Freeze) {
        return freezing;
    }
    // A thaw is a release only when this level's own freeze step went.
    let own_step_left = |level: QosLevel| {
        prev.interference.has(freeze_step(level)) && !st.interference.has(freeze_step(level))
    };
    for (level, want, held, was) in [
        (
            QosLevel::OfflineLow,
            want_low,
            held_low,
            prev.frozen.offline_low,
        ),
        (QosLevel::Offline, want_off, held_off, prev.frozen.offline),
    ] {
        if !snap.levels_present.contains(&level) {
            continue;
        }
        if want != was || static_due {
            let (reason, cause) = if want && starved {
                (
                    format!("online needs all {n} CPUs and allow_freeze is on: {level} frozen"),
                    Cause::Confine,
                )
            } else if want && !held {
                (
                    format!("{pressure}: {share}: {level} frozen for the rest of the period"),
                    Cause::Interference,
                )
            } else if want {
                (format!("{pressure}: {level} frozen"), Cause::Interference)
            } else if !was {
                (format!("{level} runs"), Cause::Static)
            } else if prev.starved && !starved && !own_step_left(level) {
                (
                    format!("online no longer needs all {n} CPUs: {level} thawed"),
                    Cause::Confine,
                )
            } else if duty && !own_step_left(level) {
                // The duty cycle's running part, not a release.
                (
                    format!("{pressure}: {share}: {level} runs its share"),
                    Cause::Interference,
                )
            } else if let Some(probe) = &tick.probe {
                (format!("{probe}: {level} thawed"), Cause::Release)
            } else if tick.undone {
                (
                    format!("tightening did not lower online pressure: {level} thawed"),
                    Cause::Release,
                )
            } else {
                let calm = tick.calm.as_deref().unwrap_or("every signal calm");
                (
                    format!("interference calm ({calm}): {level} thawed"),
                    Cause::Release,
                )
            };
            plan.push(
                Action::set(
                    level.group_path(),
                    Knob::Freeze,
                    KnobValue::Bool(want),
                    reason,
                )
                .because(cause),
            );
        }
    }
    st.frozen.offline_low = want_low && snap.levels_present.contains(&QosLevel::OfflineLow);
    st.frozen.offline = want_off && snap.levels_present.contains(&QosLevel::Offline);
    freezing
}
