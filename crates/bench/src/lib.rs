//! `tidal bench`: a reproducible co-location benchmark on this machine (online service under
//! open-loop load next to offline antagonists, per isolation scenario), plus the agent's own
//! benchmarks (`reaction`, `agent-cost`), and the built-in workloads they run (`tidal worker`).
//! Every group it makes is made, killed and removed through the actuator, in a sandbox of its own,
//! and removed at the end, also on Ctrl-C.

pub mod agentbench;
pub mod bpfcost;
pub mod cli;
pub mod client;
pub mod colo;
pub mod env;
pub mod hist;
pub mod loadgen;
pub mod mono;
pub mod report;
pub mod worker;

pub use cli::{BenchArgs, BenchCommand, BenchGlobal, WorkerArgs};

use cli::BenchLayout;
use colo::{Opts, Scenario};
use env::BenchEnv;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Usage or environment errors.
pub const USAGE: i32 = 2;
/// A failure while benchmarking.
pub const FAILURE: i32 = 1;

pub fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("tidal: {msg}");
    USAGE
}

pub fn failed(msg: impl std::fmt::Display) -> i32 {
    eprintln!("tidal: {msg}");
    FAILURE
}

fn machine(env: &BenchEnv) -> report::Machine {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    report::Machine {
        cpus: env.caps.cpus.len(),
        kernel: tidal_cgroupfs::caps::kernel_release().unwrap_or_default(),
        preemption: tidal_cgroupfs::caps::preemption().0,
        cpu_model: model,
        cgroup_mode: env.layout.hierarchies.mode().to_string(),
    }
}

/// Asks the kernel for 0 µs wake-up latency while the file stays open (PM QoS): CPUs then poll instead
/// of entering deep idle states. None (and a note) where that is not possible.
fn hold_pm_qos() -> Option<std::fs::File> {
    use std::io::Write;
    let p = "/dev/cpu_dma_latency";
    match std::fs::OpenOptions::new().write(true).open(p) {
        Ok(mut f) => {
            match f.write_all(&0i32.to_ne_bytes()) {
                Ok(()) => Some(f),
                Err(e) => {
                    eprintln!("tidal: note: cannot set {p} to 0 ({e}); idle-state wake-ups will add noise");
                    None
                }
            }
        }
        Err(e) => {
            eprintln!("tidal: note: cannot open {p} ({e}); idle-state wake-ups will add noise");
            None
        }
    }
}

/// SIGINT/SIGTERM set a flag: the bench stops where it is and cleans up. The bench's children run in
/// their own process group, so a terminal's Ctrl-C reaches only the bench, which then stops them.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let f = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&f));
    }
    f
}

pub fn main(g: &BenchGlobal, a: &BenchArgs) -> i32 {
    if let Err(errs) = a.validate() {
        for e in errs {
            eprintln!("tidal: {e}");
        }
        return USAGE;
    }
    if g.dry_run {
        return fail("bench creates and measures real groups: --dry-run does not apply to it");
    }
    let stop = interrupt_flag();
    match &a.command {
        Some(BenchCommand::Reaction(r)) => return agentbench::reaction(g, r, &stop),
        Some(BenchCommand::AgentCost(c)) => return agentbench::cost(g, c, &stop),
        Some(BenchCommand::BpfCost(c)) => return bpfcost::bpf_cost(g, c, &stop),
        None => {}
    }
    let scenarios: Vec<Scenario> = match &a.scenarios {
        Some(list) => {
            let mut v = Vec::new();
            for s in list.split(',').filter(|s| !s.trim().is_empty()) {
                match Scenario::parse(s) {
                    Some(x) => v.push(x),
                    None => {
                        let valid: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                        return fail(format!(
                            "unknown scenario '{s}'; valid: {}",
                            valid.join(", ")
                        ));
                    }
                }
            }
            if !v.contains(&Scenario::Alone) {
                v.insert(0, Scenario::Alone);
            }
            v
        }
        None if a.layout == BenchLayout::KubeletTree => Scenario::KUBELET_TREE.to_vec(),
        None => Scenario::ALL.to_vec(),
    };
    if a.layout == BenchLayout::KubeletTree {
        if let Some(s) = scenarios
            .iter()
            .find(|s| !Scenario::KUBELET_TREE.contains(s))
        {
            return fail(format!(
                "scenario '{}' has no kubelet-tree form; that layout runs: {}",
                s.name(),
                Scenario::KUBELET_TREE.map(|s| s.name()).join(", ")
            ));
        }
    }
    let pm_qos = if a.no_pm_qos { None } else { hold_pm_qos() };
    let mut env = match BenchEnv::new("colo", g, Arc::clone(&stop)) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let n = env.caps.cpus.len();
    let mut o = Opts::from_args(a, n);
    if let Some(f) = a.memory_share {
        let meminfo = std::path::Path::new("/proc/meminfo");
        match std::fs::read_to_string(meminfo)
            .map_err(|e| e.to_string())
            .and_then(|t| tidal_cgroupfs::proc::parse_meminfo(&t))
        {
            Ok(m) => o.memory_bytes = Some((m.total as f64 * f) as u64),
            Err(e) => {
                return fail(format!(
                    "--memory-share: cannot read MemTotal from {}: {e}",
                    meminfo.display()
                ))
            }
        }
    }
    let rounds = a.rounds.unwrap_or(if a.quick { 2 } else { 10 });
    let steps: Vec<Scenario> = if a.no_step {
        Vec::new()
    } else {
        // The step runs where the scenario list has them (kubelet-tree has no quota-suppress).
        [Scenario::Kubelet, Scenario::QuotaSuppress, Scenario::Tidal]
            .into_iter()
            .filter(|s| scenarios.contains(s))
            .collect()
    };
    let step_runs = a.step_runs.unwrap_or(if a.quick { 1 } else { 3 });
    let total = (rounds * scenarios.len() + step_runs * steps.len() + 1) as u64;
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let interrupted = |env: &mut BenchEnv, pb: &ProgressBar| {
        pb.abandon();
        env.cleanup();
        eprintln!("tidal: bench interrupted; every group it made was removed");
        130
    };
    pb.set_message("calibrating the online service");
    let cost = match colo::calibrate(&mut env, &o) {
        Ok(c) => c,
        Err(_) if stop.load(Ordering::Relaxed) => return interrupted(&mut env, &pb),
        Err(e) => {
            pb.abandon();
            return failed(format!("calibration failed: {e}"));
        }
    };
    pb.inc(1);
    if o.rate <= 0.0 {
        o.rate = (0.3 * n as f64 / cost).clamp(50.0, colo::MAX_DERIVED_RATE);
    }
    // The alone p99: the base of the agent's objective, and what a settling wait waits for (an
    // antagonist that can give back much memory: the memory one, or any command).
    let slo = o
        .slo_factor
        .filter(|_| scenarios.contains(&Scenario::Tidal));
    let may_settle = a.settle_max > 0.0 && (o.offline_kind == "memory" || o.offline_cmd.is_some());
    let mut alone_p99 = None;
    let mut probes = Vec::new();
    if slo.is_some() || may_settle {
        pb.set_message("measuring the alone p99 (the agent's objective, settling)");
        // The median of the probes: one disturbed probe (this VM's host taking back memory an
        // earlier run freed, say) once made an objective of 44 ms where the service answers in
        // 0.5, and the lowest of three sat under the alone rounds' own p99 (0.43 ms against
        // 0.47), an objective that quiet rounds missed.
        match colo::alone_probes(&mut env, &o) {
            Ok(p) => {
                alone_p99 = report::median(&p);
                probes = p;
            }
            Err(_) if stop.load(Ordering::Relaxed) => return interrupted(&mut env, &pb),
            Err(e) => {
                pb.abandon();
                return failed(format!("alone p99: {e}"));
            }
        }
    }
    o.slo_target_s = slo.zip(alone_p99).map(|(f, p)| p * f);
    let mut settles = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let mut runs = Vec::new();
    let mut step_results = Vec::new();
    for round in 0..rounds {
        let mut order = scenarios.clone();
        order.shuffle(&mut rng);
        let n_order = order.len();
        for (at, s) in order.into_iter().enumerate() {
            // Nothing follows the very last run when there is no step: no need to settle after it.
            let last = round + 1 == rounds && at + 1 == n_order && steps.is_empty();
            if stop.load(Ordering::Relaxed) {
                return interrupted(&mut env, &pb);
            }
            pb.set_message(format!("round {}/{rounds}: {}", round + 1, s.name()));
            match colo::run_once(&mut env, s, &o, round) {
                Ok(r) => {
                    let released = r.released_bytes.unwrap_or(0);
                    runs.push(r);
                    if let (true, Some(base)) = (
                        !last && a.settle_max > 0.0 && released >= colo::SETTLE_AFTER_BYTES,
                        alone_p99,
                    ) {
                        pb.set_message(format!(
                            "round {}/{rounds}: settling after {} gave back {} MiB",
                            round + 1,
                            s.name(),
                            released >> 20
                        ));
                        match colo::settle(&mut env, &o, base, a.settle_max) {
                            Ok((waited_s, last_p99_ms, settled)) => settles.push(colo::Settle {
                                after: s,
                                round,
                                released_bytes: released,
                                waited_s,
                                last_p99_ms,
                                settled,
                            }),
                            Err(_) if stop.load(Ordering::Relaxed) => {
                                return interrupted(&mut env, &pb);
                            }
                            Err(e) => {
                                pb.abandon();
                                return failed(format!("settling after {}: {e}", s.name()));
                            }
                        }
                    }
                }
                Err(_) if stop.load(Ordering::Relaxed) => return interrupted(&mut env, &pb),
                Err(e) => {
                    pb.abandon();
                    return failed(format!("{} (round {}): {e}", s.name(), round + 1));
                }
            }
            pb.inc(1);
        }
    }
    // Interleaved, the order turned by one each run, so no scenario always follows the same one.
    for run in 0..step_runs {
        for &s in steps.iter().cycle().skip(run).take(steps.len()) {
            if stop.load(Ordering::Relaxed) {
                return interrupted(&mut env, &pb);
            }
            pb.set_message(format!("step {}/{step_runs}: {}", run + 1, s.name()));
            match colo::run_step(&mut env, s, &o, cost, run) {
                Ok(r) => step_results.push(r),
                Err(_) if stop.load(Ordering::Relaxed) => return interrupted(&mut env, &pb),
                Err(e) => {
                    pb.abandon();
                    return failed(format!("step {} (run {}): {e}", s.name(), run + 1));
                }
            }
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    let summaries = report::summarize(&runs, &scenarios);
    let more = report::MoreGoals {
        // A command given instead of a built-in antagonist is judged by the CPU goals alone.
        memory: o.working_set.is_some()
            || (o.offline_cmd.is_none()
                && (o.offline_kind == "memory" || o.offline_kind == "pagecache")),
        stream: o.offline_cmd.is_none() && o.offline_kind == "stream",
    };
    let goals = report::goals(&summaries, &step_results, &runs, more);
    let rep = report::Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        slo_factor: o.slo_factor,
        slo_target_ms: o.slo_target_s.map(|t| t * 1e3),
        layout: match a.layout {
            BenchLayout::Local => "local".into(),
            BenchLayout::KubeletTree => "kubelet-tree".into(),
        },
        machine: machine(&env),
        bench_oom_score_adj: std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|v| v.trim().parse().ok()),
        rate_per_s: o.rate,
        work_us: o.work_us,
        cost_per_request_us: cost * 1e6,
        pm_qos: pm_qos.is_some(),
        offline: match &o.offline_cmd {
            Some(c) => format!("`{c}`"),
            None => format!("{} × {} threads", o.offline_kind, o.offline_threads),
        },
        warmup_s: o.warmup_s,
        duration_s: o.duration_s,
        rounds,
        indicative: a.quick,
        scenarios: summaries,
        step: step_results,
        goals,
        runs,
        alone_p99_ms: alone_p99.map(|p| p * 1e3),
        alone_probes_ms: probes.iter().map(|p| p * 1e3).collect(),
        settles,
        rerun_steal_ms: o.rerun_steal_ms,
    };
    env.cleanup();
    drop(pm_qos);
    print!("{}", report::markdown(&rep));
    if let Some(p) = &a.json {
        let text = match serde_json::to_string_pretty(&rep) {
            Ok(t) => t,
            Err(e) => return failed(format!("report JSON: {e}")),
        };
        if let Err(e) = std::fs::write(p, text) {
            return failed(format!("cannot write {}: {e}", p.display()));
        }
    }
    if let Some(p) = &a.svg {
        if let Err(e) = report::svg(&rep, p) {
            return failed(e);
        }
    }
    0
}

/// `tidal worker …`: the built-in workloads the benchmark runs in their own cgroups.
pub fn run_worker(a: &WorkerArgs) -> i32 {
    if let Some(cpu) = a.pin {
        if let Err(e) = worker::pin(cpu) {
            return crate::fail(format!("cannot pin to CPU {cpu}: {e}"));
        }
    }
    match a.kind {
        cli::WorkerKind::Pingpong => match worker::pingpong(a.rate) {
            Ok(()) => 0,
            Err(e) => crate::fail(format!("ping-pong worker: {e}")),
        },
        cli::WorkerKind::Prober => {
            worker::prober(a.work_us);
            0
        }
        cli::WorkerKind::Server => {
            match worker::serve(a.port, a.work_us, a.ready_file.as_deref(), a.working_set) {
                Ok(()) => 0,
                Err(e) => crate::fail(format!("server on port {}: {e}", a.port)),
            }
        }
        cli::WorkerKind::Loadgen => match client::worker_main(a) {
            Ok(()) => 0,
            Err(e) => crate::fail(format!("load generator: {e}")),
        },
        cli::WorkerKind::Cpu => {
            match worker::antagonist(a.threads, a.report.clone(), worker::cpu_unit) {
                Ok(()) => 0,
                Err(e) => crate::fail(e),
            }
        }
        cli::WorkerKind::Stream => {
            match worker::antagonist(a.threads, a.report.clone(), worker::stream_unit) {
                Ok(()) => 0,
                Err(e) => crate::fail(e),
            }
        }
        cli::WorkerKind::Cache => {
            match worker::antagonist(a.threads, a.report.clone(), worker::cache_unit) {
                Ok(()) => 0,
                Err(e) => crate::fail(e),
            }
        }
        cli::WorkerKind::Memory => {
            match worker::memory_hog(a.bytes, a.margin, a.threads, a.report.clone()) {
                Ok(()) => 0,
                Err(e) => crate::fail(e),
            }
        }
        cli::WorkerKind::Pagecache => {
            let Some(f) = &a.file else {
                return crate::fail("the page-cache antagonist needs --file");
            };
            match worker::pagecache(f, a.bytes, a.threads, a.report.clone()) {
                Ok(()) => 0,
                Err(e) => crate::fail(format!("page-cache antagonist on {f}: {e}")),
            }
        }
    }
}
