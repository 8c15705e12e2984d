//! The benchmark report: per-scenario summary over rounds, the goal check, markdown, JSON and an SVG
//! chart of online tail against offline throughput.

use super::colo::{RunResult, Scenario, StepResult};
use super::hist::{median, spread};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    pub scenario: Scenario,
    pub rounds: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Per-round p99 / alone's p99 of the same round: median and (min, max).
    pub p99_inflation: f64,
    pub p99_inflation_spread: (f64, f64),
    pub p999_inflation: f64,
    pub p999_inflation_spread: (f64, f64),
    /// Offline work per second (built-in units, else offline CPUs), median over rounds.
    pub offline_work_per_s: f64,
    pub offline_cpus: f64,
    /// Offline work as a fraction of what `no-isolation` got.
    pub offline_vs_no_isolation: f64,
    pub utilisation: f64,
    pub lost_requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub p99_ratio: f64,
    pub p999_ratio: f64,
    pub offline_vs_kubelet: f64,
    pub reaction_ms: Option<f64>,
    pub p99_ok: bool,
    pub p999_ok: bool,
    pub offline_ok: bool,
    pub reaction_ok: bool,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub cgroup_mode: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub machine: Machine,
    pub rate_per_s: f64,
    pub work_us: u64,
    pub cost_per_request_us: f64,
    /// CPUs were held out of deep idle states (/dev/cpu_dma_latency = 0).
    pub pm_qos: bool,
    pub offline: String,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub rounds: usize,
    pub scenarios: Vec<ScenarioSummary>,
    pub step: Vec<StepResult>,
    pub goal: Option<Goal>,
    pub runs: Vec<RunResult>,
}

fn work(r: &RunResult) -> f64 {
    r.offline_units_per_s.unwrap_or(r.offline_cpus)
}

pub fn summarize(runs: &[RunResult], order: &[Scenario]) -> Vec<ScenarioSummary> {
    let rounds: Vec<usize> = {
        let mut v: Vec<usize> = runs.iter().map(|r| r.round).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let alone_of = |round: usize| {
        runs.iter()
            .find(|r| r.round == round && r.scenario == Scenario::Alone)
    };
    let noiso_work = median(
        &runs
            .iter()
            .filter(|r| r.scenario == Scenario::NoIsolation)
            .map(work)
            .collect::<Vec<_>>(),
    );
    order
        .iter()
        .filter_map(|s| {
            let rs: Vec<&RunResult> = runs.iter().filter(|r| r.scenario == *s).collect();
            if rs.is_empty() {
                return None;
            }
            let col = |f: &dyn Fn(&RunResult) -> f64| {
                median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let infl = |f: &dyn Fn(&RunResult) -> f64| -> Vec<f64> {
                rs.iter()
                    .filter_map(|r| alone_of(r.round).map(|a| f(r) / f(a)))
                    .collect()
            };
            let i99 = infl(&|r| r.latency.p99_us);
            let i999 = infl(&|r| r.latency.p999_us);
            let w = col(&work);
            let _ = &rounds;
            Some(ScenarioSummary {
                scenario: *s,
                rounds: rs.len(),
                p50_us: col(&|r| r.latency.p50_us),
                p99_us: col(&|r| r.latency.p99_us),
                p999_us: col(&|r| r.latency.p999_us),
                max_us: col(&|r| r.latency.max_us),
                p99_inflation: median(&i99),
                p99_inflation_spread: spread(&i99),
                p999_inflation: median(&i999),
                p999_inflation_spread: spread(&i999),
                offline_work_per_s: w,
                offline_cpus: col(&|r| r.offline_cpus),
                offline_vs_no_isolation: if noiso_work > 0.0 {
                    w / noiso_work
                } else {
                    f64::NAN
                },
                utilisation: col(&|r| r.utilisation),
                lost_requests: rs.iter().map(|r| r.lost).sum(),
            })
        })
        .collect()
}

/// The goal: tidal's p99 ≤ 1.05× alone, p99.9 ≤ 1.2× alone, offline ≥ 95% of kubelet, reaction ≤ 100 ms.
pub fn goal(sum: &[ScenarioSummary], step: &[StepResult]) -> Option<Goal> {
    let get = |s| sum.iter().find(|x| x.scenario == s);
    let (t, k) = (get(Scenario::Tidal)?, get(Scenario::Kubelet)?);
    get(Scenario::Alone)?;
    let reaction_ms = step
        .iter()
        .find(|x| x.scenario == Scenario::Tidal)
        .and_then(|x| x.reaction_ms);
    let ov = if k.offline_work_per_s > 0.0 {
        t.offline_work_per_s / k.offline_work_per_s
    } else {
        f64::NAN
    };
    let g = Goal {
        p99_ratio: t.p99_inflation,
        p999_ratio: t.p999_inflation,
        offline_vs_kubelet: ov,
        reaction_ms,
        p99_ok: t.p99_inflation <= 1.05,
        p999_ok: t.p999_inflation <= 1.2,
        offline_ok: ov >= 0.95,
        reaction_ok: reaction_ms.is_some_and(|r| r <= 100.0),
        text: String::new(),
    };
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    let text = format!(
        "goal (2-CPU target): tidal p99 ≤ 1.05× alone: {:.2}× ({}, {}); p99.9 ≤ 1.2× alone: {:.2}× ({}, {}); \
         offline work ≥ 95% of kubelet: {:.1}% ({}, {}); reaction to the step ≤ 100 ms: {} ({})",
        g.p99_ratio,
        mark(g.p99_ok),
        if g.p99_ok { "ok".to_string() } else { format!("short by {:.0}%", (g.p99_ratio / 1.05 - 1.0) * 100.0) },
        g.p999_ratio,
        mark(g.p999_ok),
        if g.p999_ok { "ok".to_string() } else { format!("short by {:.0}%", (g.p999_ratio / 1.2 - 1.0) * 100.0) },
        ov * 100.0,
        mark(g.offline_ok),
        if g.offline_ok { "ok".to_string() } else { format!("short by {:.1} points", (0.95 - ov) * 100.0) },
        reaction_ms.map_or("n/a".to_string(), |r| format!("{r:.0} ms")),
        mark(g.reaction_ok),
    );
    Some(Goal { text, ..g })
}

fn ms(us: f64) -> String {
    if us.is_nan() {
        "-".into()
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

fn x(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.2}×")
    }
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "## tidal bench: {} CPUs, {} ({}), kernel {}, {} cgroups\n\n",
        r.machine.cpus, r.machine.cpu_model, r.command, r.machine.kernel, r.machine.cgroup_mode
    ));
    s.push_str(&format!(
        "Online: {:.0} req/s (Poisson, open loop), ~{} µs of CPU each (measured {:.0} µs), {:.0}% of the machine. \
         Offline: {}. {} round(s) of {:.0} s (+{:.0} s warm-up) per scenario, order shuffled per round. \
         CPU idle states: {}.\n\n",
        r.rate_per_s,
        r.work_us,
        r.cost_per_request_us,
        r.rate_per_s * r.cost_per_request_us / 1e6 / r.machine.cpus as f64 * 100.0,
        r.offline,
        r.rounds,
        r.duration_s,
        r.warmup_s,
        if r.pm_qos { "held at 0 µs wake-up latency (PM QoS)" } else { "left to the kernel" }
    ));
    s.push_str("| scenario | p50 ms | p99 ms | p99.9 ms | max ms | p99 vs alone (min–max) | p99.9 vs alone (min–max) | offline work/s | vs no-isolation | offline CPUs | machine util |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for x_ in &r.scenarios {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} ({}–{}) | {} ({}–{}) | {:.1} | {:.0}% | {:.2} | {:.0}% |\n",
            x_.scenario.name(),
            ms(x_.p50_us),
            ms(x_.p99_us),
            ms(x_.p999_us),
            ms(x_.max_us),
            x(x_.p99_inflation),
            x(x_.p99_inflation_spread.0),
            x(x_.p99_inflation_spread.1),
            x(x_.p999_inflation),
            x(x_.p999_inflation_spread.0),
            x(x_.p999_inflation_spread.1),
            x_.offline_work_per_s,
            x_.offline_vs_no_isolation * 100.0,
            x_.offline_cpus,
            x_.utilisation * 100.0
        ));
    }
    if !r.step.is_empty() {
        s.push_str("\n**Step: online rate 10% → 60% of the machine**\n\n");
        s.push_str("| scenario | reaction | p99 ms before | p99 ms in the 1st s after | p99.9 ms after | note |\n|---|---|---|---|---|---|\n");
        for st in &r.step {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                st.scenario.name(),
                st.reaction_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
                ms(st.before.p99_us),
                ms(st.after_first_second.p99_us),
                ms(st.after_first_second.p999_us),
                st.note
            ));
        }
    }
    if let Some(g) = &r.goal {
        s.push_str(&format!("\n{}\n", g.text));
    }
    s
}

/// Online p99 inflation (y) against offline throughput relative to no-isolation (x), per scenario.
pub fn svg(r: &Report, path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    let pts: Vec<(String, f64, f64)> = r
        .scenarios
        .iter()
        .filter(|s| s.p99_inflation.is_finite())
        .map(|s| {
            let x = if s.offline_vs_no_isolation.is_finite() {
                s.offline_vs_no_isolation * 100.0
            } else {
                0.0
            };
            (s.scenario.name().to_string(), x, s.p99_inflation)
        })
        .collect();
    let ymax = pts.iter().map(|p| p.2).fold(1.5f64, f64::max) * 1.15;
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("online p99 vs offline throughput", ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-5f64..115f64, 0f64..ymax)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("offline work, % of no-isolation")
        .y_desc("online p99 / alone p99")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(
            pts.iter()
                .map(|(_, x, y)| Circle::new((*x, *y), 6, BLUE.filled())),
        )
        .map_err(|x| e(&x))?;
    chart
        .draw_series(pts.iter().map(|(n, x, y)| {
            Text::new(n.clone(), (*x + 1.5, *y + ymax * 0.02), ("sans-serif", 15))
        }))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(
            vec![(-5.0, 1.05), (115.0, 1.05)],
            RED.mix(0.5),
        ))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::hist::Latency;

    fn run(s: Scenario, round: usize, p99: f64, units: f64) -> RunResult {
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
            offline_units_per_s: Some(units),
            offline_cpus: units / 100.0,
            online_cpus: 0.6,
            utilisation: 0.9,
        }
    }

    fn report() -> Report {
        let runs = vec![
            run(Scenario::Alone, 0, 400.0, 0.0),
            run(Scenario::Alone, 1, 500.0, 0.0),
            run(Scenario::NoIsolation, 0, 2000.0, 140.0),
            run(Scenario::NoIsolation, 1, 2500.0, 140.0),
            run(Scenario::Kubelet, 0, 440.0, 130.0),
            run(Scenario::Kubelet, 1, 550.0, 130.0),
            run(Scenario::Tidal, 0, 410.0, 120.0),
            run(Scenario::Tidal, 1, 520.0, 126.0),
        ];
        let order = [
            Scenario::Alone,
            Scenario::NoIsolation,
            Scenario::Kubelet,
            Scenario::Tidal,
        ];
        let scenarios = summarize(&runs, &order);
        let step = vec![StepResult {
            scenario: Scenario::Tidal,
            reaction_ms: Some(40.0),
            note: "x".into(),
            before: Latency::default(),
            after_first_second: Latency::default(),
        }];
        let goal = goal(&scenarios, &step);
        Report {
            command: "tidal bench --quick".into(),
            machine: Machine {
                cpus: 2,
                kernel: "6.18".into(),
                cpu_model: "test".into(),
                cgroup_mode: "hybrid".into(),
            },
            rate_per_s: 6000.0,
            work_us: 100,
            cost_per_request_us: 100.0,
            pm_qos: true,
            offline: "cpu".into(),
            warmup_s: 1.0,
            duration_s: 3.0,
            rounds: 2,
            scenarios,
            step,
            goal,
            runs,
        }
    }

    #[test]
    fn inflation_is_per_round_against_alone() {
        let r = report();
        let t = r
            .scenarios
            .iter()
            .find(|s| s.scenario == Scenario::Tidal)
            .unwrap();
        // Rounds: 410/400 = 1.025 and 520/500 = 1.04 → median 1.0325.
        assert!(
            (t.p99_inflation - 1.0325).abs() < 1e-9,
            "{}",
            t.p99_inflation
        );
        assert_eq!(t.p99_inflation_spread, (1.025, 1.04));
        assert!((t.offline_vs_no_isolation - 123.0 / 140.0).abs() < 1e-9);
        let g = r.goal.as_ref().unwrap();
        assert!(g.p99_ok && g.p999_ok && g.reaction_ok);
        // 123 / 130 = 94.6% of kubelet: just short.
        assert!(!g.offline_ok);
        assert!(g.text.contains("NOT met"), "{}", g.text);
    }

    #[test]
    fn markdown_and_json_carry_every_scenario() {
        let r = report();
        let md = markdown(&r);
        for s in ["alone", "no-isolation", "kubelet", "tidal"] {
            assert!(md.contains(&format!("| {s} |")), "{md}");
        }
        assert!(md.contains("Step: online rate 10% → 60%"));
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["scenarios"].as_array().unwrap().len(), 4);
        assert_eq!(j["scenarios"][3]["scenario"], "tidal");
        assert_eq!(j["goal"]["offline_ok"], false);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("chart.svg");
        svg(&r, &p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("<svg") && text.contains("kubelet"),
            "{}",
            &text[..200.min(text.len())]
        );
    }
}
