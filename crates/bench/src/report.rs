//! The benchmark report: per-scenario medians of per-round values with 95% bootstrap intervals over
//! rounds, the goals with verdicts that carry their uncertainty ("met" only when the interval's bound
//! meets the goal, "unclear" when the interval straddles it, "n/a" when nothing was measured), and
//! markdown, JSON and an SVG chart with the intervals as error bars.

use super::colo::{RunResult, Scenario, StepResult};
use crate::hist::Latency;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// A median of per-round values and its 95% bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    /// Rounds it rests on.
    pub n: usize,
}

impl Interval {
    /// One value with no spread (a single run, or a total over `n` rounds).
    pub fn point(v: f64, n: usize) -> Interval {
        Interval {
            median: v,
            lo: v,
            hi: v,
            n,
        }
    }
}

/// Resamples drawn for a bootstrap interval.
const RESAMPLES: usize = 2000;

pub fn median(xs: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The median of `xs` with a percentile-bootstrap 95% interval (resampling rounds with replacement;
/// fixed seed, so a report is reproducible from its runs). None with no finite value.
pub fn interval(xs: &[f64]) -> Option<Interval> {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    let med = median(&v)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x71da1);
    let mut meds = Vec::with_capacity(RESAMPLES);
    let mut sample = vec![0.0; v.len()];
    for _ in 0..RESAMPLES {
        for s in sample.iter_mut() {
            *s = v[rng.random_range(0..v.len())];
        }
        if let Some(m) = median(&sample) {
            meds.push(m);
        }
    }
    meds.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| meds[((q * (meds.len() - 1) as f64).round() as usize).min(meds.len() - 1)];
    Some(Interval {
        median: med,
        lo: at(0.025),
        hi: at(0.975),
        n: v.len(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The interval's bound meets the goal.
    Met,
    /// The whole interval misses it.
    NotMet,
    /// The interval straddles it.
    Unclear,
    /// Nothing was measured.
    NotApplicable,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "NOT met",
            Verdict::Unclear => "unclear",
            Verdict::NotApplicable => "n/a",
        }
    }
}

/// Which side of the bound the goal wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Want {
    AtMost,
    AtLeast,
}

pub fn judge(v: Option<&Interval>, want: Want, bound: f64) -> Verdict {
    let Some(v) = v else {
        return Verdict::NotApplicable;
    };
    match want {
        Want::AtMost if v.hi <= bound => Verdict::Met,
        Want::AtMost if v.lo > bound => Verdict::NotMet,
        Want::AtLeast if v.lo >= bound => Verdict::Met,
        Want::AtLeast if v.hi < bound => Verdict::NotMet,
        _ => Verdict::Unclear,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GoalLine {
    pub goal: String,
    pub value: Option<Interval>,
    pub want: Want,
    pub bound: f64,
    pub verdict: Verdict,
    /// How far off, when not met.
    pub gap: Option<String>,
    /// What the value is: how the report prints it.
    pub unit: Unit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// A ratio (×).
    Ratio,
    /// A share (%).
    Share,
    /// Milliseconds.
    Ms,
    /// A count or a difference of counts.
    Count,
}

fn line(goal: &str, value: Option<Interval>, want: Want, bound: f64) -> GoalLine {
    let verdict = judge(value.as_ref(), want, bound);
    let gap = match (verdict, value) {
        (Verdict::NotMet | Verdict::Unclear, Some(v)) => Some(match want {
            // A bound of 0 (a count or a difference): say by how much, not by what share.
            Want::AtMost if v.median > bound && bound == 0.0 => {
                format!("median {:.1} over", v.median)
            }
            Want::AtMost if v.median <= bound => {
                format!(
                    "median meets it; the interval reaches {}",
                    near(v.hi, bound, 2)
                )
            }
            Want::AtLeast if v.median >= bound => {
                format!(
                    "median meets it; the interval reaches {}",
                    near(v.lo, bound, 2)
                )
            }
            // Whole percent, or as many decimals as a gap under 1% needs not to read "0%".
            Want::AtMost => format!(
                "median {}% over",
                near((v.median / bound - 1.0) * 100.0, 0.0, 0)
            ),
            Want::AtLeast => format!(
                "median {}% under",
                near((1.0 - v.median / bound) * 100.0, 0.0, 0)
            ),
        }),
        _ => None,
    };
    GoalLine {
        goal: goal.to_string(),
        value,
        want,
        bound,
        verdict,
        gap,
        unit: match want {
            _ if bound >= 10.0 => Unit::Ms,
            Want::AtLeast => Unit::Share,
            Want::AtMost => Unit::Ratio,
        },
    }
}

/// `v` with `decimals`, or more (up to 4) where fewer would print it as the bound it misses or
/// meets only just: 0.9465 against 0.95 reads 0.946, not 0.95.
fn near(v: f64, bound: f64, decimals: usize) -> String {
    let mut d = decimals;
    while d < 4 && v != bound && format!("{v:.d$}") == format!("{bound:.d$}") {
        d += 1;
    }
    format!("{v:.d$}")
}

fn count_line(goal: &str, value: Option<Interval>, bound: f64) -> GoalLine {
    GoalLine {
        unit: Unit::Count,
        ..line(goal, value, Want::AtMost, bound)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    pub scenario: Scenario,
    pub rounds: usize,
    /// Medians of per-round values (each with its interval).
    pub p50_us: Option<Interval>,
    pub p99_us: Option<Interval>,
    pub p999_us: Option<Interval>,
    pub max_us: Option<Interval>,
    /// Per-round p99 / alone's p99 of the same round.
    pub p99_vs_alone: Option<Interval>,
    pub p999_vs_alone: Option<Interval>,
    /// Per-round p99 / kubelet's p99 of the same round.
    pub p99_vs_kubelet: Option<Interval>,
    pub p999_vs_kubelet: Option<Interval>,
    /// CPUs offline used (CPU-seconds per second, from its cgroup).
    pub offline_cpus: Option<Interval>,
    /// Per-round offline CPU-seconds / no-isolation's (and kubelet's) of the same round.
    pub offline_vs_no_isolation: Option<Interval>,
    pub offline_vs_kubelet: Option<Interval>,
    /// Built-in antagonists' work units per second (noisier than CPU-seconds).
    pub work_units_per_s: Option<Interval>,
    pub utilisation: Option<Interval>,
    pub lost_requests: u64,
    /// The online server's major faults per run (medians), and tasks OOM-killed over all rounds.
    pub online_major_faults: Option<Interval>,
    pub oom_kills_online: u64,
    pub oom_kills_offline: u64,
    /// The online server's run-queue p99 per run (eBPF), µs.
    pub online_runq_p99_us: Option<Interval>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    /// The kernel's preemption model ("none", "voluntary", "full", "lazy"), where it could be read.
    pub preemption: Option<String>,
    pub cpu_model: String,
    pub cgroup_mode: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    /// Where the scenarios' groups were: tidal's tree, or the kubelet's.
    pub layout: String,
    /// The `tidal` scenario's latency objective: p99 ≤ alone p99 × factor (None: no objective).
    pub slo_factor: Option<f64>,
    pub slo_target_ms: Option<f64>,
    pub machine: Machine,
    /// The bench's own `oom_score_adj` (its online processes inherit it; -999 keeps the OOM
    /// killer off them), None where it could not be read.
    pub bench_oom_score_adj: Option<i32>,
    pub rate_per_s: f64,
    pub work_us: u64,
    pub cost_per_request_us: f64,
    /// CPUs were held out of deep idle states (/dev/cpu_dma_latency = 0).
    pub pm_qos: bool,
    pub offline: String,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub rounds: usize,
    /// `--quick`: too few rounds for firm verdicts; they are labelled indicative.
    pub indicative: bool,
    pub scenarios: Vec<ScenarioSummary>,
    pub step: Vec<StepResult>,
    pub goals: Vec<GoalLine>,
    pub runs: Vec<RunResult>,
    /// The alone p99 measured before the rounds (ms), which settling waits for: the median of
    /// the probes.
    pub alone_p99_ms: Option<f64>,
    /// Each alone probe's p99 (ms), in the order taken.
    pub alone_probes_ms: Vec<f64>,
    /// Settling waits after runs that gave back much memory.
    pub settles: Vec<crate::colo::Settle>,
    /// A run whose window lost more CPU time than this to the host (ms) was run again, once
    /// (None: never).
    pub rerun_steal_ms: Option<f64>,
}

/// What the `tidal` scenario's objective was, from which probes, and how it stands against the
/// alone rounds' own p99: probes a host disturbed make it looser (or tighter) than its factor says.
fn objective_note(r: &Report, factor: f64, target_ms: f64) -> String {
    let probes = match r.alone_probes_ms.as_slice() {
        [] => "its probes".to_string(),
        p => format!(
            "{} probes ({} ms)",
            p.len(),
            p.iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut s = format!(
        "The agent (`tidal`) has a latency objective on the server's own histogram: p99 ≤ {target_ms:.2} ms \
         (the alone p99 at this rate, the median of {probes}, × {factor})."
    );
    let rounds_ms = r
        .scenarios
        .iter()
        .find(|x| x.scenario == Scenario::Alone)
        .and_then(|x| x.p99_us)
        .map(|i| i.median / 1e3)
        .filter(|m| *m > 0.0);
    if let Some(m) = rounds_ms {
        let of_rounds = target_ms / m;
        s.push_str(&format!(
            " That is {of_rounds:.2}× the alone rounds' p99 ({m:.2} ms, median)"
        ));
        if (of_rounds / factor - 1.0).abs() > OBJECTIVE_DRIFT {
            s.push_str(&format!(
                ": **the probes and the alone rounds disagree ({} than the rounds), so the objective was {} than {factor}× \
                 the rounds' alone p99**; tidal's verdicts are against that objective",
                if of_rounds > factor { "the probes higher" } else { "the probes lower" },
                if of_rounds > factor { "looser" } else { "tighter" },
            ));
        }
        s.push('.');
    }
    s.push_str("\n\n");
    s
}

/// How far the objective over the alone rounds' p99 may stray from its factor before the report
/// says the probes were off.
const OBJECTIVE_DRIFT: f64 = 0.2;

/// Per-round `f(run) / f(reference run of the same round)` for scenario `s`.
fn per_round_ratio(
    runs: &[RunResult],
    s: Scenario,
    reference: Scenario,
    f: &dyn Fn(&RunResult) -> Option<f64>,
) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.scenario == s)
        .filter_map(|r| {
            let base = runs
                .iter()
                .find(|x| x.round == r.round && x.scenario == reference)?;
            let (a, b) = (f(r)?, f(base)?);
            (b > 0.0).then(|| a / b)
        })
        .collect()
}

pub fn summarize(runs: &[RunResult], order: &[Scenario]) -> Vec<ScenarioSummary> {
    order
        .iter()
        .filter_map(|s| {
            let rs: Vec<&RunResult> = runs.iter().filter(|r| r.scenario == *s).collect();
            if rs.is_empty() {
                return None;
            }
            let col = |f: &dyn Fn(&RunResult) -> Option<f64>| {
                interval(&rs.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
            };
            let ratio = |reference: Scenario, f: &dyn Fn(&RunResult) -> Option<f64>| {
                interval(&per_round_ratio(runs, *s, reference, f))
            };
            let p99 = |r: &RunResult| Some(r.latency.p99_us).filter(|_| r.latency.count > 0);
            let p999 = |r: &RunResult| Some(r.latency.p999_us).filter(|_| r.latency.count > 0);
            let off = |r: &RunResult| r.offline_cpus;
            Some(ScenarioSummary {
                scenario: *s,
                rounds: rs.len(),
                p50_us: col(&|r| Some(r.latency.p50_us).filter(|_| r.latency.count > 0)),
                p99_us: col(&p99),
                p999_us: col(&p999),
                max_us: col(&|r| Some(r.latency.max_us).filter(|_| r.latency.count > 0)),
                p99_vs_alone: ratio(Scenario::Alone, &p99),
                p999_vs_alone: ratio(Scenario::Alone, &p999),
                p99_vs_kubelet: ratio(Scenario::Kubelet, &p99),
                p999_vs_kubelet: ratio(Scenario::Kubelet, &p999),
                offline_cpus: col(&off),
                offline_vs_no_isolation: ratio(Scenario::NoIsolation, &off),
                offline_vs_kubelet: ratio(Scenario::Kubelet, &off),
                work_units_per_s: col(&|r| r.offline_units_per_s),
                utilisation: col(&|r| r.utilisation),
                lost_requests: rs.iter().map(|r| r.lost).sum(),
                online_major_faults: col(&|r| r.memory.online_major_faults.map(|v| v as f64)),
                oom_kills_online: rs.iter().filter_map(|r| r.memory.oom_kills_online).sum(),
                oom_kills_offline: rs.iter().filter_map(|r| r.memory.oom_kills_offline).sum(),
                online_runq_p99_us: col(&|r| r.online_runq_p99_us),
            })
        })
        .collect()
}

/// Tidal's p99 in the first second after the step over kubelet's, one ratio per step run in which
/// both answered requests.
fn step_ratios(step: &[StepResult]) -> Vec<f64> {
    let first = |x: &StepResult| {
        Some(x.after_first_second.p99_us).filter(|p| x.after_first_second.count > 0 && *p > 0.0)
    };
    step.iter()
        .filter(|a| a.scenario == Scenario::Tidal)
        .filter_map(|a| {
            let b = step
                .iter()
                .find(|b| b.scenario == Scenario::Kubelet && b.run == a.run)?;
            Some(first(a)? / first(b)?)
        })
        .collect()
}

/// The goals this run can judge. The CPU antagonist's: tidal p99 ≤ 1.05× and p99.9 ≤ 1.2× alone,
/// at or below kubelet and tidal-static at both, offline CPU-seconds ≥ 95% of kubelet's, and in the
/// step, the first second's p99 no worse than kubelet's. A goal whose scenarios did not run is n/a.
/// The goal lines; `more` adds the goals of the run's antagonist.
pub fn goals(
    sum: &[ScenarioSummary],
    step: &[StepResult],
    runs: &[RunResult],
    more: MoreGoals,
) -> Vec<GoalLine> {
    let get = |s| sum.iter().find(|x| x.scenario == s);
    let t = get(Scenario::Tidal);
    let tidal_vs_static = |f: &dyn Fn(&RunResult) -> Option<f64>| {
        interval(&per_round_ratio(
            runs,
            Scenario::Tidal,
            Scenario::TidalStatic,
            f,
        ))
    };
    let p99 = |r: &RunResult| Some(r.latency.p99_us).filter(|_| r.latency.count > 0);
    let p999 = |r: &RunResult| Some(r.latency.p999_us).filter(|_| r.latency.count > 0);
    // Per step run, tidal's first second against kubelet's in the same run.
    let step_ratio = interval(&step_ratios(step));
    // Runs in which nothing changed have no reaction: they are not counted as fast.
    let reaction = interval(
        &step
            .iter()
            .filter(|x| x.scenario == Scenario::Tidal)
            .filter_map(|x| x.reaction_ms)
            .collect::<Vec<_>>(),
    );
    let mut lines = vec![
        line(
            "tidal p99 ≤ 1.05× alone",
            t.and_then(|t| t.p99_vs_alone),
            Want::AtMost,
            1.05,
        ),
        line(
            "tidal p99.9 ≤ 1.2× alone",
            t.and_then(|t| t.p999_vs_alone),
            Want::AtMost,
            1.2,
        ),
        line(
            "tidal p99 ≤ kubelet's",
            t.and_then(|t| t.p99_vs_kubelet),
            Want::AtMost,
            1.0,
        ),
        line(
            "tidal p99.9 ≤ kubelet's",
            t.and_then(|t| t.p999_vs_kubelet),
            Want::AtMost,
            1.0,
        ),
        line(
            "tidal p99 ≤ tidal-static's",
            tidal_vs_static(&p99),
            Want::AtMost,
            1.0,
        ),
        line(
            "tidal p99.9 ≤ tidal-static's",
            tidal_vs_static(&p999),
            Want::AtMost,
            1.0,
        ),
        line(
            "tidal offline CPU-seconds ≥ 95% of kubelet's",
            t.and_then(|t| t.offline_vs_kubelet),
            Want::AtLeast,
            0.95,
        ),
        line(
            "step: tidal p99 in the 1st second ≤ kubelet's",
            step_ratio,
            Want::AtMost,
            1.0,
        ),
        line(
            "step: tidal reaction ≤ 100 ms",
            reaction,
            Want::AtMost,
            100.0,
        ),
    ];
    if more.stream {
        lines.extend(stream_goals(t));
    }
    if more.memory {
        lines.extend(memory_goals(runs, t.and_then(|t| t.p99_vs_alone)));
    }
    lines
}

/// Goals a run adds to the CPU antagonist's, by what it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoreGoals {
    /// The memory goals: a memory or page-cache antagonist, or an online working set.
    pub memory: bool,
    /// The memory-bandwidth antagonist's (`--offline stream`).
    pub stream: bool,
}

/// How the memory-bandwidth goals begin.
const STREAM_GOAL: &str = "stream:";

/// The memory-bandwidth antagonist's goals: tidal p99 ≤ 1.3× alone while offline keeps ≥ 50% of
/// no-isolation's CPU-seconds (the static scenarios give about 1.7× there).
fn stream_goals(t: Option<&ScenarioSummary>) -> [GoalLine; 2] {
    [
        line(
            &format!("{STREAM_GOAL} tidal p99 ≤ 1.3× alone"),
            t.and_then(|t| t.p99_vs_alone),
            Want::AtMost,
            1.3,
        ),
        line(
            &format!("{STREAM_GOAL} tidal offline CPU-seconds ≥ 50% of no-isolation's"),
            t.and_then(|t| t.offline_vs_no_isolation),
            Want::AtLeast,
            0.5,
        ),
    ]
}

/// How the memory goals' first line begins (the report shows the memory table when it is there).
const MEMORY_GOAL: &str = "memory:";

/// Online tasks OOM-killed under tidal (all rounds together), and per round the online server's
/// major faults under tidal less 1.2× alone's (a difference: alone often has none, so a ratio
/// would be undefined).
fn memory_goals(runs: &[RunResult], p99_vs_alone: Option<Interval>) -> [GoalLine; 3] {
    let tidal = || runs.iter().filter(|r| r.scenario == Scenario::Tidal);
    let kills: Option<u64> = tidal().map(|r| r.memory.oom_kills_online).sum();
    let kills = kills
        .filter(|_| tidal().next().is_some())
        .map(|k| Interval::point(k as f64, tidal().count()));
    let faults: Vec<f64> = tidal()
        .filter_map(|r| {
            let alone = runs
                .iter()
                .find(|x| x.round == r.round && x.scenario == Scenario::Alone)?;
            let (t, a) = (
                r.memory.online_major_faults?,
                alone.memory.online_major_faults?,
            );
            Some(t as f64 - 1.2 * a as f64)
        })
        .collect();
    [
        line(
            &format!("{MEMORY_GOAL} tidal p99 ≤ 1.2× alone"),
            p99_vs_alone,
            Want::AtMost,
            1.2,
        ),
        count_line(
            "tidal: online tasks OOM-killed (all rounds) = 0",
            kills,
            0.0,
        ),
        count_line(
            "tidal online major faults − 1.2× alone's ≤ 0 (per round)",
            interval(&faults),
            0.0,
        ),
    ]
}

fn ms(v: Option<Interval>) -> String {
    v.map_or("-".into(), |i| format!("{:.2}", i.median / 1000.0))
}

fn xi(v: Option<Interval>) -> String {
    v.map_or("-".into(), |i| {
        format!("{:.2}× [{:.2}–{:.2}]", i.median, i.lo, i.hi)
    })
}

fn pct(v: Option<Interval>) -> String {
    v.map_or("-".into(), |i| {
        format!(
            "{:.0}% [{:.0}–{:.0}]",
            i.median * 100.0,
            i.lo * 100.0,
            i.hi * 100.0
        )
    })
}

fn num(v: Option<Interval>, digits: usize) -> String {
    v.map_or("-".into(), |i| format!("{:.digits$}", i.median))
}

/// Runs the host stole CPU time from, most first, at most this many named.
const STEAL_NAMED: usize = 5;

/// The host-steal paragraph: which runs this VM's host took CPU time from. A stall the host causes
/// hits whatever scenario runs then; the reader can tell it from what a scenario did.
fn host_steal(r: &Report) -> String {
    let runs: Vec<(String, f64)> = r
        .runs
        .iter()
        .filter_map(|x| {
            let ms = x.host_steal_ms?;
            Some((format!("{} round {}", x.scenario.name(), x.round + 1), ms))
        })
        .chain(r.step.iter().filter_map(|x| {
            let ms = x.host_steal_ms?;
            Some((format!("{} step run {}", x.scenario.name(), x.run + 1), ms))
        }))
        .collect();
    let total = r.runs.len() + r.step.len();
    if total == 0 {
        return String::new();
    }
    if runs.is_empty() {
        return "Host steal: not readable here (/proc/stat has no steal column).\n\n".into();
    }
    let unread = match total - runs.len() {
        0 => String::new(),
        n => format!(", {n} unreadable"),
    };
    let mut stolen: Vec<&(String, f64)> = runs.iter().filter(|(_, ms)| *ms > 0.0).collect();
    if stolen.is_empty() {
        return format!(
            "Host steal: none in any of the {} runs read{unread} (CPU time this VM waited for its host, from /proc/stat).{}\n\n",
            runs.len(),
            reruns(r).map(|s| format!(" {s}")).unwrap_or_default()
        );
    }
    stolen.sort_by(|a, b| b.1.total_cmp(&a.1));
    let named: Vec<String> = stolen
        .iter()
        .take(STEAL_NAMED)
        .map(|(run, ms)| format!("{run} ({ms:.0} ms)"))
        .collect();
    format!(
        "Host steal (CPU time this VM waited for its host, from /proc/stat, in whole clock ticks, over each run's \
         measured window; a step run over the whole run): {} of {} runs read{unread}, {:.0} ms in all; the most: {}{}. \
         A stall the host causes hits whatever runs then{}\n\n",
        stolen.len(),
        runs.len(),
        stolen.iter().map(|(_, ms)| ms).sum::<f64>(),
        named.join(", "),
        match stolen.len().saturating_sub(STEAL_NAMED) {
            0 => String::new(),
            more => format!(" and {more} more"),
        },
        match (reruns(r), r.rerun_steal_ms) {
            (Some(s), _) => format!(". {s} The rest stay in the intervals."),
            (None, None) => "; every run stays in the intervals (runs are not run again for steal).".into(),
            (None, Some(l)) => format!(
                "; every run stays in the intervals (none lost more than {l:.0} ms, past which a run is run again, once)."
            ),
        }
    )
}

/// The runs run again for steal (`--rerun-steal-ms`), named with what their first tries lost;
/// None when there were none.
fn reruns(r: &Report) -> Option<String> {
    let again: Vec<String> = r
        .runs
        .iter()
        .filter_map(|x| {
            let ms = x.rerun_for_steal_ms?;
            Some(format!(
                "{} round {} ({ms:.0} ms)",
                x.scenario.name(),
                x.round + 1
            ))
        })
        .collect();
    if again.is_empty() {
        return None;
    }
    Some(format!(
        "{} run(s) lost more than {:.0} ms and were run again, once; the second tries count, whatever they \
         lost: {}.",
        again.len(),
        r.rerun_steal_ms.unwrap_or(0.0),
        again.join(", ")
    ))
}

/// The settling paragraph: how long the bench waited after runs that gave back much memory.
fn settling(r: &Report) -> String {
    if r.settles.is_empty() {
        return String::new();
    }
    let mut waits: Vec<f64> = r.settles.iter().map(|x| x.waited_s).collect();
    waits.sort_by(|a, b| a.total_cmp(b));
    let unsettled = r.settles.iter().filter(|x| !x.settled).count();
    let mut s = format!(
        "Settling: {} run(s) gave back {} MiB of memory or more; before the next run the bench waited until \
         the online service alone was back within 2× of its alone p99 ({}): waits median {:.0} s, longest {:.0} s",
        r.settles.len(),
        crate::colo::SETTLE_AFTER_BYTES >> 20,
        r.alone_p99_ms.map_or("-".into(), |p| format!("{p:.2} ms")),
        median(&waits).unwrap_or(0.0),
        waits.last().copied().unwrap_or(0.0),
    );
    if unsettled > 0 {
        s.push_str(&format!(
            "; {unsettled} did not settle in time and the next run started disturbed"
        ));
    }
    s.push_str(".\n\n");
    s
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "## tidal bench: {} CPUs, {} ({}), kernel {}{}, {} cgroups, {} layout\n\n",
        r.machine.cpus,
        r.machine.cpu_model,
        r.command,
        r.machine.kernel,
        r.machine
            .preemption
            .as_deref()
            .map(|m| format!(" (preempt={m})"))
            .unwrap_or_default(),
        r.machine.cgroup_mode,
        r.layout
    ));
    if let (Some(f), Some(t)) = (r.slo_factor, r.slo_target_ms) {
        s.push_str(&objective_note(r, f, t));
    }
    if r.layout == "kubelet-tree" {
        s.push_str(
            "Layout kubelet-tree: the kubelet's tiers and pods (online in a Burstable pod with its request's shares, \
             offline in a BestEffort pod under the shares-2 tier); tidal-static is pod-level idle alone, tidal is the agent \
             in pod mode.\n\n",
        );
    }
    s.push_str(&format!(
        "Online: {:.0} req/s (open loop), ~{} µs of CPU each (measured {:.0} µs), {:.0}% of the machine. \
         Offline: {}. {} interleaved round(s) of {:.1} s (+{:.1} s warm-up) per scenario, order shuffled per round. \
         CPU idle states: {}.\n\n",
        r.rate_per_s,
        r.work_us,
        r.cost_per_request_us,
        r.rate_per_s * r.cost_per_request_us / 1e6 / r.machine.cpus.max(1) as f64 * 100.0,
        r.offline,
        r.rounds,
        r.duration_s,
        r.warmup_s,
        if r.pm_qos { "held at 0 µs wake-up latency (PM QoS)" } else { "left to the kernel" }
    ));
    s.push_str(&settling(r));
    s.push_str(&host_steal(r));
    s.push_str("Every number is the median over rounds of per-round values; [lo–hi] is its 95% bootstrap interval. Ratios are taken per round against the reference run of the same round.\n\n");
    s.push_str("| scenario | p50 ms | p99 ms | p99.9 ms | max ms | p99 vs alone | p99.9 vs alone | offline CPUs | offline vs no-isolation (CPU-s) | offline work units/s | machine util |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for x in &r.scenarios {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            x.scenario.name(),
            ms(x.p50_us),
            ms(x.p99_us),
            ms(x.p999_us),
            ms(x.max_us),
            xi(x.p99_vs_alone),
            xi(x.p999_vs_alone),
            num(x.offline_cpus, 2),
            pct(x.offline_vs_no_isolation),
            num(x.work_units_per_s, 1),
            x.utilisation
                .map_or("-".into(), |u| format!("{:.0}%", u.median * 100.0)),
        ));
    }
    if r.scenarios.iter().any(|x| x.online_runq_p99_us.is_some()) {
        s.push_str("\n**Run-queue latency** (eBPF: how long the online server's threads waited to run after waking, p99 per run, median [95% interval]; it shows *why* the tail moved)\n\n| scenario | online run-queue p99 |\n|---|---|\n");
        for x in &r.scenarios {
            s.push_str(&format!(
                "| {} | {} |\n",
                x.scenario.name(),
                x.online_runq_p99_us.map_or("-".into(), |m| format!(
                    "{:.0} µs [{:.0}–{:.0}]",
                    m.median, m.lo, m.hi
                ))
            ));
        }
    }
    // Always with a memory antagonist or a working set (their goals are there): none is a result.
    let memory_run = r.goals.iter().any(|g| g.goal.starts_with(MEMORY_GOAL));
    let memory_seen = r.scenarios.iter().any(|x| {
        x.oom_kills_online + x.oom_kills_offline > 0
            || x.online_major_faults.is_some_and(|m| m.hi > 0.0)
    });
    if memory_run || memory_seen {
        s.push_str("\n**Memory** (the online server's major faults in the measured window, median of runs [95% interval]; tasks the OOM killer took over all rounds, warm-up included, by level: the server and its client run at online-critical under tidal and tidal-static, the antagonist at offline; the other scenarios put them in their own online and offline groups)\n\n");
        s.push_str(&match r.bench_oom_score_adj {
            Some(v) if v <= -999 => format!("The bench and its online processes ran at oom_score_adj {v}: the OOM killer takes anything else first.\n\n"),
            Some(v) => format!("The bench and its online processes ran at oom_score_adj {v}, unprotected from the OOM killer (lowering it needs CAP_SYS_RESOURCE).\n\n"),
            None => "The bench's own oom_score_adj could not be read.\n\n".into(),
        });
        s.push_str("| scenario | online major faults | OOM kills online-critical | OOM kills offline |\n|---|---|---|---|\n");
        for x in &r.scenarios {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                x.scenario.name(),
                x.online_major_faults.map_or("-".into(), |m| format!(
                    "{:.0} [{:.0}–{:.0}]",
                    m.median, m.lo, m.hi
                )),
                x.oom_kills_online,
                x.oom_kills_offline
            ));
        }
    }
    if !r.step.is_empty() {
        step_table(&mut s, &r.step);
    }
    if !r.goals.is_empty() {
        s.push_str(&format!(
            "\n**Goals**{}\n\n| goal | value [95% interval] | verdict |\n|---|---|---|\n",
            if r.indicative {
                " (indicative: --quick has too few rounds for firm verdicts)"
            } else {
                ""
            }
        ));
        for g in &r.goals {
            let value = match (g.value, g.unit) {
                (None, _) => "not measured".to_string(),
                (Some(v), Unit::Ms) if v.lo == v.hi => format!("{:.0}", v.median),
                (Some(v), Unit::Ms) => format!("{:.0} [{:.0}–{:.0}]", v.median, v.lo, v.hi),
                (Some(v), Unit::Share) => {
                    let pc = |x: f64| near(x * 100.0, g.bound * 100.0, 0);
                    format!("{}% [{}–{}]", pc(v.median), pc(v.lo), pc(v.hi))
                }
                (Some(v), Unit::Ratio) => {
                    let r = |x: f64| near(x, g.bound, 2);
                    format!("{}× [{}–{}]", r(v.median), r(v.lo), r(v.hi))
                }
                (Some(v), Unit::Count) if v.lo == v.hi => format!("{:.1}", v.median),
                (Some(v), Unit::Count) => format!("{:.1} [{:.1}–{:.1}]", v.median, v.lo, v.hi),
            };
            s.push_str(&format!(
                "| {} | {} | {}{} |\n",
                g.goal,
                value,
                g.verdict.text(),
                g.gap.as_ref().map_or(String::new(), |x| format!(" ({x})"))
            ));
        }
    }
    s
}

/// Online p99 inflation (y) against offline CPU-seconds relative to no-isolation (x), per scenario,
/// with each interval as an error bar.
pub fn svg(r: &Report, path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    struct Pt {
        name: String,
        x: Interval,
        y: Interval,
    }
    let zero = Interval {
        median: 0.0,
        lo: 0.0,
        hi: 0.0,
        n: 0,
    };
    let pts: Vec<Pt> = r
        .scenarios
        .iter()
        .filter_map(|s| {
            let y = s.p99_vs_alone?;
            let x = s
                .offline_vs_no_isolation
                .map(|i| Interval {
                    median: i.median * 100.0,
                    lo: i.lo * 100.0,
                    hi: i.hi * 100.0,
                    n: i.n,
                })
                .unwrap_or(zero);
            Some(Pt {
                name: s.scenario.name().to_string(),
                x,
                y,
            })
        })
        .collect();
    let ymax = pts.iter().map(|p| p.y.hi).fold(1.5f64, f64::max) * 1.15;
    let xmax = pts.iter().map(|p| p.x.hi).fold(110.0f64, f64::max) + 5.0;
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "online p99 vs offline CPU-seconds (median, 95% interval)",
            ("sans-serif", 20),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-5f64..xmax, 0f64..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("offline CPU-seconds, % of no-isolation")
        .y_desc("online p99 / alone p99")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(pts.iter().map(|p| {
            ErrorBar::new_vertical(p.x.median, p.y.lo, p.y.median, p.y.hi, BLUE.filled(), 8)
        }))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(pts.iter().map(|p| {
            ErrorBar::new_horizontal(p.y.median, p.x.lo, p.x.median, p.x.hi, BLUE.filled(), 8)
        }))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(pts.iter().map(|p| {
            Text::new(
                p.name.clone(),
                (p.x.median + 1.5, p.y.median + ymax * 0.02),
                ("sans-serif", 15),
            )
        }))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(
            vec![(-5.0, 1.05), (xmax, 1.05)],
            RED.mix(0.5),
        ))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// The load step's table: one row per scenario, each number the median over its step runs with
/// the 95% bootstrap interval where there are several; the notes of each run.
fn step_table(s: &mut String, step: &[StepResult]) {
    let runs = step.iter().map(|x| x.run + 1).max().unwrap_or(0);
    s.push_str(&if runs > 1 {
        format!(
            "\n**Step: online rate 10% → 60% of the machine** ({runs} interleaved runs each; \
             median [95% interval] over runs)\n\n"
        )
    } else {
        "\n**Step: online rate 10% → 60% of the machine** (one run each)\n\n".to_string()
    });
    s.push_str("| scenario | reaction | p99 ms before | p99 ms in the 1st s after | p99.9 ms after | note |\n|---|---|---|---|---|---|\n");
    let mut order: Vec<Scenario> = Vec::new();
    for x in step {
        if !order.contains(&x.scenario) {
            order.push(x.scenario);
        }
    }
    let ms = |v: Option<Interval>| match v {
        None => "-".to_string(),
        Some(v) if v.lo == v.hi => format!("{:.2}", v.median),
        Some(v) => format!("{:.2} [{:.2}–{:.2}]", v.median, v.lo, v.hi),
    };
    for sc in order {
        let of: Vec<&StepResult> = step.iter().filter(|x| x.scenario == sc).collect();
        let lat = |f: &dyn Fn(&StepResult) -> &Latency, q: &dyn Fn(&Latency) -> f64| {
            let v: Vec<f64> = of
                .iter()
                .map(|x| f(x))
                .filter(|l| l.count > 0)
                .map(|l| q(l) / 1000.0)
                .collect();
            interval(&v)
        };
        let reacted: Vec<f64> = of.iter().filter_map(|x| x.reaction_ms).collect();
        let reaction = match interval(&reacted) {
            None => "n/a".to_string(),
            Some(v) if of.len() == 1 => format!("{:.0} ms", v.median),
            Some(v) => format!(
                "{:.0} ms [{:.0}–{:.0}] ({} of {} runs)",
                v.median,
                v.lo,
                v.hi,
                reacted.len(),
                of.len()
            ),
        };
        // A static scenario says the same every run: once.
        let first = of.first().map(|x| x.note.clone());
        let notes: Vec<String> = if of.iter().all(|x| Some(&x.note) == first.as_ref()) {
            first.into_iter().collect()
        } else {
            of.iter()
                .map(|x| format!("run {}: {}", x.run + 1, x.note))
                .collect()
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            sc.name(),
            reaction,
            ms(lat(&|x| &x.before, &|l| l.p99_us)),
            ms(lat(&|x| &x.after_first_second, &|l| l.p99_us)),
            ms(lat(&|x| &x.after_first_second, &|l| l.p999_us)),
            notes.join("; ")
        ));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_gap_under_one_percent_never_reads_zero() {
        let iv = |median| Interval {
            median,
            lo: 0.9,
            hi: 1.3,
            n: 10,
        };
        let gap = |v, want, bound| line("g", Some(iv(v)), want, bound).gap;
        assert_eq!(
            gap(1.054, Want::AtMost, 1.05).as_deref(),
            Some("median 0.4% over")
        );
        assert_eq!(
            gap(1.2, Want::AtMost, 1.05).as_deref(),
            Some("median 14% over")
        );
        assert_eq!(
            gap(0.9499, Want::AtLeast, 0.95).as_deref(),
            Some("median 0.01% under")
        );
    }

    use super::*;

    fn run(s: Scenario, round: usize, p99: f64, cpus: f64) -> RunResult {
        RunResult {
            scenario: s,
            round,
            latency: Latency {
                count: 1000,
                p50_us: p99 / 2.0,
                p99_us: p99,
                p999_us: p99 * 2.0,
                max_us: p99 * 3.0,
            },
            sent: 1000,
            lost: 0,
            offline_units_per_s: Some(cpus * 100.0),
            offline_cpus: Some(cpus),
            online_cpus: Some(0.6),
            utilisation: Some(0.9),
            memory: Default::default(),
            online_runq_p99_us: None,
            released_bytes: None,
            host_steal_ms: Some(0.0),
            rerun_for_steal_ms: None,
        }
    }

    fn report(rounds: &[(f64, f64, f64, f64)]) -> Report {
        // Per round: alone p99, tidal p99, tidal offline CPUs, kubelet offline CPUs.
        let mut runs = Vec::new();
        for (i, (alone, tidal, t_off, k_off)) in rounds.iter().enumerate() {
            runs.push(run(Scenario::Alone, i, *alone, 0.0));
            runs.push(run(Scenario::NoIsolation, i, alone * 5.0, 1.4));
            runs.push(run(Scenario::Kubelet, i, alone * 1.1, *k_off));
            runs.push(run(Scenario::Tidal, i, *tidal, *t_off));
        }
        let order = [
            Scenario::Alone,
            Scenario::NoIsolation,
            Scenario::Kubelet,
            Scenario::Tidal,
        ];
        let scenarios = summarize(&runs, &order);
        let step = vec![StepResult {
            scenario: Scenario::Tidal,
            run: 0,
            reaction_ms: Some(40.0),
            note: "x".into(),
            before: Latency::default(),
            after_first_second: Latency::default(),
            host_steal_ms: None,
        }];
        let goals = goals(&scenarios, &step, &runs, MoreGoals::default());
        Report {
            layout: "local".into(),
            slo_factor: None,
            slo_target_ms: None,
            command: "tidal bench".into(),
            machine: Machine {
                cpus: 2,
                kernel: "6.18".into(),
                preemption: Some("none".into()),
                cpu_model: "test".into(),
                cgroup_mode: "hybrid".into(),
            },
            bench_oom_score_adj: Some(-999),
            rate_per_s: 6000.0,
            work_us: 100,
            cost_per_request_us: 100.0,
            pm_qos: true,
            offline: "cpu".into(),
            warmup_s: 1.0,
            duration_s: 3.0,
            rounds: rounds.len(),
            indicative: false,
            scenarios,
            step,
            goals,
            runs,
            alone_p99_ms: Some(0.4),
            alone_probes_ms: vec![0.39, 0.4, 0.42],
            settles: Vec::new(),
            rerun_steal_ms: Some(100.0),
        }
    }

    #[test]
    fn the_objective_is_set_against_the_alone_rounds_and_a_drifted_one_is_flagged() {
        // Alone rounds at 0.4 ms p99; an objective of 1.25 × the probes' 0.4 ms.
        let mut r = report(&[(400.0, 410.0, 1.2, 1.3); 3]);
        r.slo_factor = Some(1.25);
        r.slo_target_ms = Some(0.5);
        let md = markdown(&r);
        assert!(
            md.contains("the median of 3 probes (0.39, 0.40, 0.42 ms), × 1.25). That is 1.25× the alone rounds' p99 (0.40 ms, median)."),
            "{md}"
        );
        assert!(!md.contains("disagree"), "{md}");
        // Probes a host disturbed: twice the rounds' p99, so the objective is 2.5× alone.
        r.alone_probes_ms = vec![0.41, 0.8, 0.82, 0.79, 0.85];
        r.slo_target_ms = Some(1.0);
        let md = markdown(&r);
        assert!(md.contains("the median of 5 probes"), "{md}");
        assert!(
            md.contains("That is 2.50× the alone rounds' p99 (0.40 ms, median): **the probes and the alone rounds disagree (the probes higher than the rounds), so the objective was looser than 1.25× the rounds' alone p99**"),
            "{md}"
        );
        r.slo_target_ms = Some(0.3);
        assert!(markdown(&r)
            .contains("(the probes lower than the rounds), so the objective was tighter"));
    }

    #[test]
    fn probes_that_disagree_are_joined_by_more() {
        use crate::colo::probes_agree;
        assert!(probes_agree(&[0.4, 0.42, 0.45]));
        assert!(probes_agree(&[0.4, 0.5]));
        assert!(!probes_agree(&[0.41, 0.8, 0.82]));
        assert!(!probes_agree(&[0.0, 0.4]));
        assert!(!probes_agree(&[]));
    }

    fn goal<'a>(r: &'a Report, name: &str) -> &'a GoalLine {
        r.goals.iter().find(|g| g.goal.starts_with(name)).unwrap()
    }

    #[test]
    fn inflation_is_per_round_against_alone_with_an_interval() {
        let r = report(&[(400.0, 410.0, 1.2, 1.3), (500.0, 520.0, 1.26, 1.3)]);
        let t = r
            .scenarios
            .iter()
            .find(|s| s.scenario == Scenario::Tidal)
            .unwrap();
        let i = t.p99_vs_alone.unwrap();
        // Rounds: 410/400 = 1.025 and 520/500 = 1.04 → median 1.0325, interval within them.
        assert!((i.median - 1.0325).abs() < 1e-9, "{i:?}");
        assert!(i.lo >= 1.025 - 1e-9 && i.hi <= 1.04 + 1e-9, "{i:?}");
        assert_eq!(goal(&r, "tidal p99 ≤ 1.05×").verdict, Verdict::Met);
        assert_eq!(goal(&r, "step: tidal reaction").verdict, Verdict::Met);
        // 1.2/1.3 = 92% and 1.26/1.3 = 97%: straddles 95%, so unclear, not "NOT met".
        let off = goal(&r, "tidal offline CPU-seconds");
        assert_eq!(off.verdict, Verdict::Unclear, "{off:?}");
        assert!(markdown(&r).contains("unclear"));
    }

    #[test]
    fn a_bound_missed_by_a_hair_is_not_printed_as_the_bound() {
        assert_eq!(near(0.9464, 0.95, 2), "0.946");
        assert_eq!(near(94.64, 95.0, 0), "94.6");
        assert_eq!(near(1.0049, 1.0, 2), "1.005");
        assert_eq!(near(0.87, 0.95, 2), "0.87");
        assert_eq!(near(95.0, 95.0, 0), "95");
        // Offline at 99% [94.6–100] of kubelet's against 95%: the low end shows it misses.
        let mut r = report(&[(400.0, 410.0, 1.2, 1.3)]);
        let value = Interval {
            median: 0.99,
            lo: 0.9464,
            hi: 1.0,
            n: 10,
        };
        let g = line("offline ≥ 95%", Some(value), Want::AtLeast, 0.95);
        assert_eq!(g.verdict, Verdict::Unclear);
        assert_eq!(
            g.gap.as_deref(),
            Some("median meets it; the interval reaches 0.946")
        );
        r.goals = vec![g];
        let md = markdown(&r);
        assert!(
            md.contains("| offline ≥ 95% | 99% [94.6–100] | unclear"),
            "{md}"
        );
    }

    #[test]
    fn verdicts_follow_the_interval_bounds() {
        let iv = |lo, hi| Interval {
            median: (lo + hi) / 2.0,
            lo,
            hi,
            n: 10,
        };
        assert_eq!(judge(Some(&iv(0.9, 1.0)), Want::AtMost, 1.05), Verdict::Met);
        assert_eq!(
            judge(Some(&iv(1.0, 1.1)), Want::AtMost, 1.05),
            Verdict::Unclear
        );
        assert_eq!(
            judge(Some(&iv(1.1, 1.3)), Want::AtMost, 1.05),
            Verdict::NotMet
        );
        assert_eq!(
            judge(Some(&iv(0.96, 1.0)), Want::AtLeast, 0.95),
            Verdict::Met
        );
        assert_eq!(
            judge(Some(&iv(0.5, 0.9)), Want::AtLeast, 0.95),
            Verdict::NotMet
        );
        assert_eq!(judge(None, Want::AtMost, 1.0), Verdict::NotApplicable);
    }

    #[test]
    fn a_scenario_with_no_change_reports_n_a_never_met() {
        let mut r = report(&[(400.0, 410.0, 1.3, 1.3)]);
        r.step[0].reaction_ms = None;
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MoreGoals::default());
        let g = goal(&r, "step: tidal reaction");
        assert_eq!(g.verdict, Verdict::NotApplicable);
        assert!(markdown(&r).contains("| step: tidal reaction ≤ 100 ms | not measured | n/a |"));
        // A goal whose scenario did not run is n/a too.
        assert_eq!(
            goal(&r, "tidal p99 ≤ tidal-static's").verdict,
            Verdict::NotApplicable
        );
    }

    /// A step run: the first second's p99 (µs) and tidal's reaction.
    fn step_run(s: Scenario, run: usize, p99: f64, reaction_ms: Option<f64>) -> StepResult {
        StepResult {
            scenario: s,
            run,
            reaction_ms,
            note: format!("{} run {run}", s.name()),
            before: Latency {
                count: 100,
                p99_us: 300.0,
                ..Latency::default()
            },
            after_first_second: Latency {
                count: 1000,
                p50_us: p99 / 3.0,
                p99_us: p99,
                p999_us: p99 * 2.0,
                max_us: p99 * 3.0,
            },
            host_steal_ms: Some(0.0),
        }
    }

    #[test]
    fn repeated_step_runs_give_an_interval_paired_by_run() {
        let mut r = report(&[(400.0, 410.0, 1.3, 1.3)]);
        // Tidal under kubelet in two runs of three, over it in one: the median meets the goal,
        // the interval does not.
        r.step = vec![
            step_run(Scenario::Kubelet, 0, 1000.0, None),
            step_run(Scenario::Tidal, 0, 500.0, Some(30.0)),
            step_run(Scenario::Tidal, 1, 4000.0, Some(500.0)),
            step_run(Scenario::Kubelet, 1, 2000.0, None),
            step_run(Scenario::Kubelet, 2, 1000.0, None),
            step_run(Scenario::Tidal, 2, 800.0, None),
        ];
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MoreGoals::default());
        let g = goal(&r, "step: tidal p99 in the 1st second");
        let v = g.value.as_ref().map(|v| (v.median, v.lo, v.hi, v.n));
        assert_eq!(v, Some((0.8, 0.5, 2.0, 3)), "ratios per run: 0.5, 2, 0.8");
        assert_eq!(g.verdict, Verdict::Unclear);
        // Only the runs with a reaction count towards it.
        let g = goal(&r, "step: tidal reaction");
        assert_eq!(g.value.as_ref().map(|v| v.n), Some(2));
        assert_eq!(g.verdict, Verdict::Unclear);
        let md = markdown(&r);
        assert!(
            md.contains("(3 interleaved runs each; median [95% interval] over runs)"),
            "{md}"
        );
        assert!(
            md.contains("| tidal | 265 ms [30–500] (2 of 3 runs) | 0.30 | 0.80 [0.50–4.00] |"),
            "{md}"
        );
        assert!(
            md.contains("run 1: tidal run 0; run 2: tidal run 1; run 3: tidal run 2"),
            "{md}"
        );
        assert!(
            md.contains("| step: tidal reaction ≤ 100 ms | 265 [30–500] | unclear"),
            "{md}"
        );
        // Every run under kubelet's: met.
        r.step[2] = step_run(Scenario::Tidal, 1, 1500.0, Some(40.0));
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MoreGoals::default());
        assert_eq!(
            goal(&r, "step: tidal p99 in the 1st second").verdict,
            Verdict::Met
        );
        // A run with no kubelet partner is not paired.
        r.step
            .retain(|x| !(x.scenario == Scenario::Kubelet && x.run == 2));
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MoreGoals::default());
        let g = goal(&r, "step: tidal p99 in the 1st second");
        assert_eq!(g.value.as_ref().map(|v| v.n), Some(2));
    }

    #[test]
    fn markdown_and_json_carry_every_scenario_and_the_chart_its_intervals() {
        let r = report(&[
            (400.0, 410.0, 1.2, 1.3),
            (500.0, 520.0, 1.26, 1.3),
            (450.0, 460.0, 1.3, 1.3),
        ]);
        let md = markdown(&r);
        for s in ["alone", "no-isolation", "kubelet", "tidal"] {
            assert!(md.contains(&format!("| {s} |")), "{md}");
        }
        assert!(md.contains("median over rounds"));
        assert!(md.contains("Step: online rate 10% → 60%"));
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["scenarios"].as_array().unwrap().len(), 4);
        assert_eq!(j["scenarios"][3]["scenario"], "tidal");
        assert!(j["goals"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["verdict"].is_string()));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("chart.svg");
        svg(&r, &p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("<svg") && text.contains("kubelet"),
            "{}",
            &text[..200.min(text.len())]
        );
        // Each scenario with a ratio gets two error bars (p99 and offline share): a median dot
        // and three strokes (the bar and its caps) each, and some bar spans its interval.
        let n = r
            .scenarios
            .iter()
            .filter(|s| s.p99_vs_alone.is_some())
            .count();
        let blue = |tag: &str| {
            text.lines()
                .filter(|l| l.starts_with(tag) && l.contains("#0000FF"))
                .count()
        };
        assert!(n >= 3);
        assert_eq!(blue("<circle"), 2 * n, "{text}");
        assert_eq!(blue("<line"), 6 * n, "{text}");
        let spans = text
            .lines()
            .filter(|l| l.starts_with("<line") && l.contains("#0000FF"))
            .any(|l| {
                let attr = |k: &str| {
                    l.split(&format!(" {k}=\""))
                        .nth(1)
                        .and_then(|v| v.split('"').next())
                        .map(str::to_string)
                };
                attr("x1") == attr("x2") && attr("y1") != attr("y2")
            });
        assert!(spans, "no error bar spans an interval: {text}");
    }

    #[test]
    fn intervals_need_values() {
        assert!(interval(&[]).is_none());
        assert!(interval(&[f64::NAN]).is_none());
        let i = interval(&[1.0]).unwrap();
        assert_eq!((i.lo, i.median, i.hi), (1.0, 1.0, 1.0));
    }

    const MEMORY: MoreGoals = MoreGoals {
        memory: true,
        stream: false,
    };

    #[test]
    fn a_stream_run_is_judged_by_the_memory_bandwidth_goals_as_well() {
        const STREAM: MoreGoals = MoreGoals {
            memory: false,
            stream: true,
        };
        // tidal at 1.2× alone, offline on 0.5 CPUs of no-isolation's 1.4.
        let mut r = report(&[(400.0, 480.0, 0.5, 1.3); 4]);
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MoreGoals::default());
        assert!(!r.goals.iter().any(|g| g.goal.starts_with(STREAM_GOAL)));
        r.goals = goals(&r.scenarios, &r.step, &r.runs, STREAM);
        assert_eq!(goal(&r, "tidal p99 ≤ 1.05×").verdict, Verdict::NotMet);
        assert_eq!(goal(&r, "stream: tidal p99 ≤ 1.3×").verdict, Verdict::Met);
        let off = goal(&r, "stream: tidal offline CPU-seconds");
        assert_eq!(off.verdict, Verdict::NotMet);
        assert_eq!(off.gap.as_deref(), Some("median 29% under"));
        let md = markdown(&r);
        assert!(
            md.contains("| stream: tidal offline CPU-seconds ≥ 50% of no-isolation's | 36% [36–36] | NOT met (median 29% under) |"),
            "{md}"
        );
        // Offline on 1.2 CPUs of 1.4 meets it; the p99 goal is judged on its own.
        let mut r = report(&[(400.0, 560.0, 1.2, 1.3); 4]);
        r.goals = goals(&r.scenarios, &r.step, &r.runs, STREAM);
        assert_eq!(
            goal(&r, "stream: tidal p99 ≤ 1.3×").verdict,
            Verdict::NotMet
        );
        assert_eq!(
            goal(&r, "stream: tidal offline CPU-seconds").verdict,
            Verdict::Met
        );
    }

    #[test]
    fn a_memory_run_shows_its_memory_table_even_when_nothing_was_killed_or_faulted() {
        let mut r = report(&[(400.0, 410.0, 1.2, 1.3), (400.0, 410.0, 1.2, 1.3)]);
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MoreGoals::default());
        assert!(!markdown(&r).contains("**Memory**"));
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MEMORY);
        let md = markdown(&r);
        assert!(
            md.contains("**Memory**") && md.contains("| OOM kills online-critical |"),
            "{md}"
        );
        // Whether the bench itself was out of the OOM killer's way.
        assert!(md.contains("ran at oom_score_adj -999: the OOM killer takes anything else first"));
        r.bench_oom_score_adj = Some(0);
        assert!(markdown(&r).contains("ran at oom_score_adj 0, unprotected"));
        r.bench_oom_score_adj = None;
        assert!(markdown(&r).contains("oom_score_adj could not be read"));
    }

    #[test]
    fn memory_goals_compare_faults_per_round_and_count_online_oom_kills() {
        let mut r = report(&[(400.0, 410.0, 1.2, 1.3), (400.0, 410.0, 1.2, 1.3)]);
        let set = |r: &mut Report, s: Scenario, faults: u64, kills: u64| {
            for x in r.runs.iter_mut().filter(|x| x.scenario == s) {
                x.memory.online_major_faults = Some(faults);
                x.memory.oom_kills_online = Some(kills);
            }
        };
        set(&mut r, Scenario::Alone, 10, 0);
        set(&mut r, Scenario::Tidal, 12, 0);
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MEMORY);
        assert_eq!(goal(&r, "tidal online major faults").verdict, Verdict::Met);
        assert_eq!(
            goal(&r, "tidal: online tasks OOM-killed").verdict,
            Verdict::Met
        );
        assert_eq!(goal(&r, "memory: tidal p99").verdict, Verdict::Met);
        // 13 faults against 10 alone is over 1.2×; one online kill fails the other goal.
        set(&mut r, Scenario::Tidal, 13, 1);
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MEMORY);
        let f = goal(&r, "tidal online major faults");
        assert_eq!(f.verdict, Verdict::NotMet);
        assert_eq!(f.gap.as_deref(), Some("median 1.0 over"));
        assert_eq!(
            goal(&r, "tidal: online tasks OOM-killed").verdict,
            Verdict::NotMet
        );
        // Counts print as counts, not as ratios.
        let md = markdown(&r);
        assert!(
            md.contains("| tidal: online tasks OOM-killed (all rounds) = 0 | 2.0 | NOT met (median 2.0 over) |"),
            "{md}"
        );
        // Faults not measured, or no tidal runs: n/a, never met.
        for x in r.runs.iter_mut() {
            x.memory.online_major_faults = None;
        }
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MEMORY);
        assert_eq!(
            goal(&r, "tidal online major faults").verdict,
            Verdict::NotApplicable
        );
        r.runs.retain(|x| x.scenario != Scenario::Tidal);
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MEMORY);
        assert_eq!(
            goal(&r, "tidal: online tasks OOM-killed").verdict,
            Verdict::NotApplicable
        );
        let md = markdown(&r);
        assert!(
            md.contains(
                "| tidal online major faults − 1.2× alone's ≤ 0 (per round) | not measured | n/a |"
            ),
            "{md}"
        );
        // Without a memory antagonist the lines are left out.
        r.goals = goals(&r.scenarios, &r.step, &r.runs, MoreGoals::default());
        assert!(!r.goals.iter().any(|g| g.goal.contains("OOM")));
    }

    #[test]
    fn settling_waits_are_reported_and_an_unsettled_one_is_named() {
        let mut r = report(&[(400.0, 410.0, 1.2, 1.3)]);
        assert!(!markdown(&r).contains("Settling"));
        let wait = |w: f64, settled: bool| crate::colo::Settle {
            after: Scenario::Kubelet,
            round: 0,
            released_bytes: 4 << 30,
            waited_s: w,
            last_p99_ms: Some(0.5),
            settled,
        };
        r.settles = vec![wait(10.0, true), wait(30.0, true), wait(120.0, false)];
        let md = markdown(&r);
        assert!(md.contains("Settling: 3 run(s)"), "{md}");
        assert!(
            md.contains("(0.40 ms): waits median 30 s, longest 120 s"),
            "{md}"
        );
        assert!(md.contains("1 did not settle in time"), "{md}");
    }

    #[test]
    fn host_steal_names_the_runs_it_hit_most_first_and_says_none_or_unreadable() {
        let mut r = report(&[(400.0, 410.0, 1.2, 1.3), (500.0, 520.0, 1.26, 1.3)]);
        // Eight runs read, none stolen; the step run's steal is unreadable.
        let md = markdown(&r);
        assert!(
            md.contains("Host steal: none in any of the 8 runs read"),
            "{md}"
        );
        r.runs[7].host_steal_ms = Some(120.0);
        r.runs[0].host_steal_ms = Some(30.0);
        r.step[0].host_steal_ms = Some(60.0);
        let md = markdown(&r);
        assert!(
            md.contains(
                "3 of 9 runs read, 210 ms in all; the most: tidal round 2 (120 ms), tidal step run 1 (60 ms), alone round 1 (30 ms)."
            ),
            "{md}"
        );
        for x in &mut r.runs {
            x.host_steal_ms = Some(10.0);
        }
        let md = markdown(&r);
        assert!(md.contains("9 of 9 runs read, 140 ms in all"), "{md}");
        assert!(md.contains("(10 ms) and 4 more."), "{md}");
        // Runs whose steal could not be read are counted apart, never as none.
        r.runs[1].host_steal_ms = None;
        r.step[0].host_steal_ms = None;
        let md = markdown(&r);
        assert!(md.contains("7 of 7 runs read, 2 unreadable, 70 ms"), "{md}");
        for x in &mut r.runs {
            x.host_steal_ms = Some(0.0);
        }
        r.runs[0].host_steal_ms = None;
        let md = markdown(&r);
        assert!(
            md.contains("Host steal: none in any of the 7 runs read, 2 unreadable"),
            "{md}"
        );
        for x in &mut r.runs {
            x.host_steal_ms = None;
        }
        let md = markdown(&r);
        assert!(md.contains("Host steal: not readable here"), "{md}");
    }

    #[test]
    fn host_steal_says_which_runs_were_run_again_for_it() {
        let mut r = report(&[(400.0, 410.0, 1.2, 1.3), (500.0, 520.0, 1.26, 1.3)]);
        r.runs[1].host_steal_ms = Some(30.0);
        let md = markdown(&r);
        assert!(
            md.contains("every run stays in the intervals (none lost more than 100 ms, past which a run is run again, once)."),
            "{md}"
        );
        // The second try of tidal's first round counts; its first try is named with what it lost.
        r.runs[1].rerun_for_steal_ms = Some(150.0);
        let md = markdown(&r);
        assert!(
            md.contains(&format!(
                "1 run(s) lost more than 100 ms and were run again, once; the second tries count, whatever they lost: {} round {} (150 ms).",
                r.runs[1].scenario.name(),
                r.runs[1].round + 1
            )),
            "{md}"
        );
        assert!(md.contains("The rest stay in the intervals."), "{md}");
        // Named even where the second tries, and every other run, lost nothing.
        for x in &mut r.runs {
            x.host_steal_ms = Some(0.0);
        }
        let md = markdown(&r);
        assert!(md.contains("Host steal: none in any of the"), "{md}");
        assert!(
            md.contains("1 run(s) lost more than 100 ms and were run again, once"),
            "{md}"
        );
        r.runs[1].host_steal_ms = Some(30.0);
        r.rerun_steal_ms = None;
        r.runs[1].rerun_for_steal_ms = None;
        let md = markdown(&r);
        assert!(md.contains("runs are not run again for steal"), "{md}");
    }
}
