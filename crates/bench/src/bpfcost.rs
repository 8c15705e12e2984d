//! `tidal bench bpf-cost`: what the run-queue latency program costs under a context-switch-heavy
//! load. A ping-pong worker (two threads on one CPU bouncing a byte over pipes) switches at a set
//! rate; the agent runs with BPF and with `bpf.enabled: false` in alternating rounds. Reported: the
//! BPF run time per event from the kernel's BPF statistics, the in-kernel total as a share of one
//! core, and the agent's user-space extra CPU (with minus without, per round).

use super::agentbench::{proc_cpu_s, start_agent, wait_for};
use super::env::BenchEnv;
use super::report::{interval, judge, Interval, Want};
use crate::cli::{BenchGlobal, BpfCostArgs};
use crate::{fail, failed};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Goal: BPF run time per event.
const NS_PER_EVENT_GOAL: f64 = 500.0;
/// Goal: the agent's user-space extra, % of one core.
const AGENT_EXTRA_GOAL: f64 = 1.0;

#[derive(Debug, Clone, Serialize)]
struct Phase {
    round: usize,
    bpf: bool,
    seconds: f64,
    /// "tp_btf" or "raw_tp": which of the program's paths the agent attached.
    attach: Option<String>,
    /// Context switches per second on the whole machine (/proc/stat `ctxt`).
    switches_per_s: Option<f64>,
    agent_cpu_percent: Option<f64>,
    /// The ping-pong group's CPU, % of one core: the scheduler's work on its switches, BPF included.
    load_cpu_percent: Option<f64>,
    /// Per tracepoint: (events, run time ns) over the phase; empty without BPF.
    programs: BTreeMap<String, (u64, u64)>,
}

#[derive(Debug, Serialize)]
struct BpfCostReport {
    rate: f64,
    sample: u32,
    phases: Vec<Phase>,
    ns_per_event: Option<Interval>,
    ns_per_event_by_tracepoint: BTreeMap<String, Interval>,
    events_per_s: Option<Interval>,
    kernel_percent_of_one_core: Option<Interval>,
    agent_extra_percent_of_one_core: Option<Interval>,
    /// The ping-pong load's CPU with BPF minus without, per round: the whole in-kernel cost
    /// (programs and tracepoint dispatch), charged to the tasks that switch.
    load_extra_percent_of_one_core: Option<Interval>,
    switches_per_s: Option<Interval>,
}

/// The first CPU this process may run on (the ping-pong worker is pinned there).
fn first_allowed_cpu() -> Result<usize, String> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it for this process.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(format!(
            "cannot read this process's CPU affinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: CPU_ISSET reads the set filled above; the index is below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .find(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .ok_or_else(|| "this process may run on no CPU".to_string())
}

fn ctxt() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("ctxt ")?.trim().parse().ok())
}

/// Run counts and run times by (tracepoint, attach kind).
fn totals(stats: &[tidal_bpf::ProgStats]) -> BTreeMap<(String, String), (u64, u64)> {
    let mut m: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for s in stats {
        let e = m
            .entry((s.tracepoint.to_string(), s.attach.to_string()))
            .or_default();
        e.0 = e.0.saturating_add(s.run_cnt);
        e.1 = e.1.saturating_add(s.run_time_ns);
    }
    m
}

fn phase(
    g: &BenchGlobal,
    a: &BpfCostArgs,
    stop: &Arc<AtomicBool>,
    round: usize,
    bpf: bool,
) -> Result<Phase, String> {
    let tag = format!("bpfcost{round}{}", if bpf { "b" } else { "n" });
    let mut env = BenchEnv::new(&tag, g, Arc::clone(stop))?;
    // The bench's own run-queue reader would add a second program to the count.
    env.runq = None;
    let res = (|| -> Result<Phase, String> {
        let exe = env.exe.display().to_string();
        let cpu = first_allowed_cpu()?;
        let load = env.tidal_run(
            "online",
            "pingpong",
            &[
                exe,
                "worker".into(),
                "pingpong".into(),
                "--rate".into(),
                a.rate.to_string(),
                "--pin".into(),
                cpu.to_string(),
            ],
        )?;
        let cfg = format!(
            "tick: 100ms\nbpf:\n  enabled: {bpf}\n  sample: {}\n",
            a.sample
        );
        let (pid, _) = start_agent(&mut env, &cfg)?;
        wait_for(stop, 2.0, Duration::from_millis(100), || false);
        // The agent's own programs only: another tidal on this machine loads the same names.
        let ids = tidal_bpf::prog_ids_of(pid)?;
        if bpf && ids.is_empty() {
            return Err(
                "the agent loaded no BPF program (is BPF available? see `tidal doctor`)".into(),
            );
        }
        if !bpf && !ids.is_empty() {
            return Err(format!(
                "the agent holds BPF programs {ids:?} with bpf.enabled: false"
            ));
        }
        let stats = || tidal_bpf::loaded_stats(Some(&ids)).map(|s| totals(&s));
        let p0 = stats()?;
        let load_ns = |env: &BenchEnv| env.usage_ns("tidal/online/pingpong");
        let (c0, x0, l0, t0) = (proc_cpu_s(pid), ctxt(), load_ns(&env), Instant::now());
        wait_for(stop, a.seconds, Duration::from_millis(100), || false);
        if env.interrupted() {
            return Err("interrupted".into());
        }
        let (c1, x1, l1, dt) = (
            proc_cpu_s(pid),
            ctxt(),
            load_ns(&env),
            t0.elapsed().as_secs_f64(),
        );
        let p1 = stats()?;
        for (who, p) in [("the ping-pong worker", load), ("the agent", pid)] {
            if let Some(st) = env.exited(p) {
                return Err(format!("{who} (pid {p}) exited during the phase: {st}"));
            }
        }
        let mut programs = BTreeMap::new();
        for (k, (n1, ns1)) in &p1 {
            let (n0, ns0) = p0.get(k).copied().unwrap_or_default();
            programs.insert(
                k.0.clone(),
                (n1.saturating_sub(n0), ns1.saturating_sub(ns0)),
            );
        }
        if bpf && programs.is_empty() {
            return Err(format!(
                "none of the agent's BPF programs {ids:?} is tidal's run-queue program"
            ));
        }
        let switches_per_s = x0.zip(x1).map(|(a, b)| b.saturating_sub(a) as f64 / dt);
        if let Some(s) = switches_per_s.filter(|s| *s < 0.5 * a.rate) {
            return Err(format!(
                "the machine switched {s:.0} times a second, under half the {:.0} asked: the ping-pong load did not run as set",
                a.rate
            ));
        }
        Ok(Phase {
            round,
            bpf,
            seconds: dt,
            attach: p1.keys().next().map(|(_, at)| at.to_string()),
            switches_per_s,
            agent_cpu_percent: c0.zip(c1).map(|(a, b)| (b - a) / dt * 100.0),
            load_cpu_percent: l0
                .zip(l1)
                .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9 / dt * 100.0),
            programs,
        })
    })();
    env.cleanup();
    res
}

fn summarize(rate: f64, sample: u32, phases: Vec<Phase>) -> BpfCostReport {
    let with: Vec<&Phase> = phases.iter().filter(|p| p.bpf).collect();
    let per_event = |p: &Phase, tp: Option<&str>| {
        let (n, ns) = p
            .programs
            .iter()
            .filter(|(k, _)| tp.is_none_or(|t| t == k.as_str()))
            .fold((0u64, 0u64), |(n, ns), (_, (a, b))| {
                (n.saturating_add(*a), ns.saturating_add(*b))
            });
        (n > 0).then(|| ns as f64 / n as f64)
    };
    let ns_per_event = interval(
        &with
            .iter()
            .filter_map(|p| per_event(p, None))
            .collect::<Vec<_>>(),
    );
    let mut by_tp = BTreeMap::new();
    let tps: std::collections::BTreeSet<&String> =
        with.iter().flat_map(|p| p.programs.keys()).collect();
    for tp in tps {
        let xs: Vec<f64> = with.iter().filter_map(|p| per_event(p, Some(tp))).collect();
        if let Some(iv) = interval(&xs) {
            by_tp.insert(tp.clone(), iv);
        }
    }
    let events_per_s = interval(
        &with
            .iter()
            .map(|p| p.programs.values().map(|v| v.0 as f64).sum::<f64>() / p.seconds)
            .collect::<Vec<_>>(),
    );
    let kernel = interval(
        &with
            .iter()
            .map(|p| p.programs.values().map(|v| v.1 as f64).sum::<f64>() / p.seconds / 1e7)
            .collect::<Vec<_>>(),
    );
    // Per round: with minus without.
    let paired = |f: fn(&Phase) -> Option<f64>| {
        let mut out = Vec::new();
        for w in &with {
            if let Some(n) = phases.iter().find(|p| !p.bpf && p.round == w.round) {
                if let (Some(a), Some(b)) = (f(w), f(n)) {
                    out.push(a - b);
                }
            }
        }
        out
    };
    let extra = paired(|p| p.agent_cpu_percent);
    let load_extra = interval(&paired(|p| p.load_cpu_percent));
    let switches = interval(
        &phases
            .iter()
            .filter_map(|p| p.switches_per_s)
            .collect::<Vec<_>>(),
    );
    BpfCostReport {
        rate,
        sample,
        phases,
        ns_per_event,
        ns_per_event_by_tracepoint: by_tp,
        events_per_s,
        kernel_percent_of_one_core: kernel,
        agent_extra_percent_of_one_core: interval(&extra),
        load_extra_percent_of_one_core: load_extra,
        switches_per_s: switches,
    }
}

fn iv(v: Option<&Interval>, d: usize) -> String {
    v.map_or("n/a".to_string(), |v| {
        format!("{:.d$} [{:.d$}–{:.d$}]", v.median, v.lo, v.hi)
    })
}

fn print(r: &BpfCostReport) {
    let attach: std::collections::BTreeSet<&str> = r
        .phases
        .iter()
        .filter_map(|p| p.attach.as_deref())
        .collect();
    println!(
        "Run-queue latency program cost: ping-pong at {:.0} switches/s asked, {} round(s), agent tick 100 ms, sampling 1 in {}, attached as {}. Medians over rounds, [95% bootstrap interval].\n",
        r.rate,
        r.phases.iter().filter(|p| p.bpf).count(),
        r.sample,
        if attach.is_empty() { "n/a".to_string() } else { attach.into_iter().collect::<Vec<_>>().join(", ") }
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| context switches/s (whole machine) | {} |",
        iv(r.switches_per_s.as_ref(), 0)
    );
    println!(
        "| BPF program runs/s (all tracepoints) | {} |",
        iv(r.events_per_s.as_ref(), 0)
    );
    println!(
        "| BPF run time per event, ns | {} |",
        iv(r.ns_per_event.as_ref(), 0)
    );
    for (tp, v) in &r.ns_per_event_by_tracepoint {
        println!("| — {tp}, ns | {} |", iv(Some(v), 0));
    }
    println!(
        "| BPF program run time, % of one core (the programs alone, not the tracepoint dispatch) | {} |",
        iv(r.kernel_percent_of_one_core.as_ref(), 2)
    );
    println!(
        "| ping-pong load's CPU with BPF minus without, % of one core (programs and dispatch) | {} |",
        iv(r.load_extra_percent_of_one_core.as_ref(), 2)
    );
    println!(
        "| agent user-space extra, % of one core | {} |",
        iv(r.agent_extra_percent_of_one_core.as_ref(), 2)
    );
    println!();
    let v1 = judge(r.ns_per_event.as_ref(), Want::AtMost, NS_PER_EVENT_GOAL);
    let v2 = judge(
        r.agent_extra_percent_of_one_core.as_ref(),
        Want::AtMost,
        AGENT_EXTRA_GOAL,
    );
    println!(
        "goal ≤ {NS_PER_EVENT_GOAL:.0} ns of BPF run time per event: {}; agent extra ≤ {AGENT_EXTRA_GOAL}% of one core: {}",
        v1.text(),
        v2.text()
    );
}

pub fn bpf_cost(g: &BenchGlobal, a: &BpfCostArgs, stop: &Arc<AtomicBool>) -> i32 {
    if !tidal_bpf::BUILT_WITH_BPF {
        return fail("tidal was built without its BPF program: nothing to measure (apt-get install clang libelf-dev, rebuild)");
    }
    // Counting run time costs two clock reads per program run; it is on only while this runs.
    let _stats = match tidal_bpf::enable_stats() {
        Ok(fd) => fd,
        Err(e) => return fail(e),
    };
    let mut phases = Vec::new();
    for round in 0..a.rounds {
        // Alternate which goes first, so drift over the run does not favour one.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for bpf in order {
            eprintln!(
                "round {}/{}: agent {}",
                round + 1,
                a.rounds,
                if bpf { "with BPF" } else { "without BPF" }
            );
            match phase(g, a, stop, round, bpf) {
                Ok(p) => phases.push(p),
                Err(_) if stop.load(Ordering::Relaxed) => {
                    eprintln!("tidal: bench interrupted; every group it made was removed");
                    return 130;
                }
                Err(e) => return failed(e),
            }
        }
    }
    let r = summarize(a.rate, a.sample, phases);
    print(&r);
    if let Some(p) = &a.json {
        let text = match serde_json::to_string_pretty(&r) {
            Ok(t) => t,
            Err(e) => return failed(format!("report JSON: {e}")),
        };
        if let Err(e) = std::fs::write(p, text) {
            return failed(format!("{}: {e}", p.display()));
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(round: usize, bpf: bool, cpu: f64, progs: &[(&str, u64, u64)]) -> Phase {
        Phase {
            round,
            bpf,
            seconds: 10.0,
            attach: None,
            switches_per_s: Some(50_000.0),
            agent_cpu_percent: Some(cpu),
            load_cpu_percent: Some(if bpf { 31.0 } else { 30.0 }),
            programs: progs
                .iter()
                .map(|(t, n, ns)| (t.to_string(), (*n, *ns)))
                .collect(),
        }
    }

    #[test]
    fn cost_per_event_and_agent_extra_pair_rounds() {
        let phases = vec![
            phase(0, false, 0.5, &[]),
            phase(
                0,
                true,
                0.9,
                &[
                    ("sched_switch", 1000, 300_000),
                    ("sched_wakeup", 1000, 100_000),
                ],
            ),
            phase(
                1,
                true,
                1.1,
                &[
                    ("sched_switch", 1000, 300_000),
                    ("sched_wakeup", 1000, 100_000),
                ],
            ),
            phase(1, false, 0.6, &[]),
        ];
        let r = summarize(50_000.0, 1, phases);
        let ns = r.ns_per_event.unwrap();
        assert!((ns.median - 200.0).abs() < 1e-9, "{ns:?}");
        assert!((r.ns_per_event_by_tracepoint["sched_switch"].median - 300.0).abs() < 1e-9);
        let extra = r.agent_extra_percent_of_one_core.unwrap();
        assert!(
            (extra.lo - 0.4).abs() < 1e-9 && (extra.hi - 0.5).abs() < 1e-9,
            "{extra:?}"
        );
        assert!((r.load_extra_percent_of_one_core.unwrap().median - 1.0).abs() < 1e-9);
        // 400 µs of run time in 10 s = 0.004% of one core.
        assert!((r.kernel_percent_of_one_core.unwrap().median - 0.004).abs() < 1e-9);
    }

    #[test]
    fn nothing_measured_is_not_applicable() {
        let r = summarize(50_000.0, 1, vec![phase(0, false, 0.5, &[])]);
        assert!(r.ns_per_event.is_none());
        assert_eq!(
            judge(r.ns_per_event.as_ref(), Want::AtMost, NS_PER_EVENT_GOAL).text(),
            "n/a"
        );
        assert!(r.agent_extra_percent_of_one_core.is_none());
    }
}
