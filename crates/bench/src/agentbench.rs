//! The agent's own benchmarks on real cgroups: how fast offline gets out of online's CPUs after an
//! online load step (`reaction`), and what the agent costs per tick with many workloads (`agent-cost`).

use super::env::BenchEnv;
use super::hist::percentile;
use crate::cli::{parse_counts, AgentCostArgs, BenchGlobal, ReactionArgs};
use crate::{fail, failed};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidal_model::CpuSet;

fn free_addr() -> Result<String, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .map_err(|e| format!("no free port: {e}"))
}

pub(crate) fn start_agent(env: &mut BenchEnv, config: &str) -> Result<(u32, String), String> {
    let addr = free_addr()?;
    let cfg = env.state_dir().join("agent.yaml");
    std::fs::write(&cfg, config).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let mut c = env.tidal_cmd();
    c.arg("agent")
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", &addr]);
    let log = env.state_dir().join("agent.log");
    let f = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    c.stderr(f).env("TIDAL_LOG", "info");
    let pid = env.spawn_home(c)?;
    super::env::wait_healthz(&addr, &env.stop)?;
    // Where production puts it (its own group in the tree); one left outside is brought in.
    env.adopt_unless_inside(pid)?;
    Ok((pid, addr))
}

/// Polls `f` every `every` until it holds or `secs` pass (or the bench is interrupted). Polling costs
/// CPU the agent counts as online usage, so waits that are not measured poll slowly.
pub(crate) fn wait_for(
    stop: &AtomicBool,
    secs: f64,
    every: Duration,
    mut f: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        if f() {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

#[derive(Serialize)]
struct ReactionReport {
    cpus: usize,
    steps: usize,
    reaction_ms: Vec<f64>,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    missed: usize,
}

/// Online load steps from idle to every CPU (a stopped spinner gets SIGCONT); the time until the
/// offline parent's cpuset has shrunk is the reaction.
pub fn reaction(g: &BenchGlobal, a: &ReactionArgs, stop: &Arc<AtomicBool>) -> i32 {
    let mut env = match BenchEnv::new("reaction", g, Arc::clone(stop)) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let n = env.caps.cpus.len();
    let all = env.caps.cpus.clone();
    let exe = env.exe.display().to_string();
    let result = (|| -> Result<ReactionReport, String> {
        // Confinement on any machine size: this measures how fast it acts.
        start_agent(
            &mut env,
            "cpu:\n  grow_after: 300ms\n  confine_min_cpus: 1\n",
        )?;
        env.tidal_run(
            "offline",
            "hog",
            &[
                exe.clone(),
                "worker".into(),
                "cpu".into(),
                "--threads".into(),
                (2 * n).to_string(),
            ],
        )?;
        let load = env.tidal_run(
            "online",
            "load",
            &[
                exe.clone(),
                "worker".into(),
                "cpu".into(),
                "--threads".into(),
                n.to_string(),
            ],
        )?;
        std::thread::sleep(Duration::from_millis(300));
        env.signal_own(load, libc::SIGSTOP)?;
        // The agent learns of new workloads once per stats interval (1 s): let it see these first.
        std::thread::sleep(Duration::from_millis(1500));
        let file = env
            .dir("cpuset", "tidal/offline")
            .map(|d| d.join("cpuset.cpus"))
            .ok_or("no cpuset hierarchy: the reaction benchmark needs one")?;
        let cpus = || -> CpuSet {
            std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_default()
        };
        let mut times = Vec::new();
        let mut missed = 0;
        for i in 0..a.steps {
            // Start each step from offline holding every CPU, steadily for 200 ms.
            if env.interrupted() {
                return Err("interrupted".into());
            }
            let settled = wait_for(stop, 15.0, Duration::from_millis(20), || {
                cpus() == all && {
                    std::thread::sleep(Duration::from_millis(200));
                    cpus() == all
                }
            });
            if !settled {
                return Err(format!("step {i}: offline never got every CPU back"));
            }
            let t0 = Instant::now();
            env.signal_own(load, libc::SIGCONT)?;
            if wait_for(stop, 2.0, Duration::from_micros(250), || {
                cpus().len() < all.len()
            }) {
                times.push(t0.elapsed().as_secs_f64() * 1000.0);
            } else {
                missed += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
            env.signal_own(load, libc::SIGSTOP)?;
            eprint!("\rstep {}/{}", i + 1, a.steps);
        }
        eprintln!();
        Ok(ReactionReport {
            cpus: n,
            steps: a.steps,
            p50_ms: percentile(&times, 50.0),
            p99_ms: percentile(&times, 99.0),
            max_ms: percentile(&times, 100.0),
            reaction_ms: times,
            missed,
        })
    })();
    env.cleanup();
    match result {
        Ok(r) => {
            println!(
                "reaction ({} CPUs, {} steps idle → all CPUs busy online): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, missed {}",
                r.cpus, r.steps, r.p50_ms, r.p99_ms, r.max_ms, r.missed
            );
            println!(
                "goal ≤ 100 ms p99: {}",
                if r.reaction_ms.is_empty() {
                    "n/a (no step measured)"
                } else if r.p99_ms <= 100.0 && r.missed == 0 {
                    "met"
                } else {
                    "NOT met"
                }
            );
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
        Err(_) if stop.load(Ordering::Relaxed) => {
            eprintln!("tidal: bench interrupted; every group it made was removed");
            130
        }
        Err(e) => failed(e),
    }
}

#[derive(Serialize)]
struct CostRow {
    workloads: usize,
    seconds: f64,
    cpu_percent_of_one_core: f64,
    rss_mib: Option<f64>,
    tick_us_mean: Option<f64>,
    /// The agent's longest tick since it started.
    tick_worst_us: Option<f64>,
    ticks: Option<f64>,
}

pub(crate) fn proc_cpu_s(pid: u32) -> Option<f64> {
    tidal_cgroupfs::proc::task_stat(pid as i32)
        .ok()
        .map(|s| s.cpu_seconds)
}

fn proc_rss_mib(pid: u32) -> Option<f64> {
    tidal_cgroupfs::proc::task_stat(pid as i32)
        .ok()
        .map(|s| s.rss_bytes as f64 / (1 << 20) as f64)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

fn scrape(addr: &str) -> Option<String> {
    ureq::get(&format!("http://{addr}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
}

/// Agent CPU and memory at a 100 ms tick with W workloads (¾ offline, ¼ online, all sleeping).
pub fn cost(g: &BenchGlobal, a: &AgentCostArgs, stop: &Arc<AtomicBool>) -> i32 {
    let counts = match parse_counts(&a.workloads) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut rows = Vec::new();
    for w in counts {
        let mut env = match BenchEnv::new(&format!("cost{w}"), g, Arc::clone(stop)) {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let res = (|| -> Result<CostRow, String> {
            for i in 0..w {
                if env.interrupted() {
                    return Err("interrupted".into());
                }
                let level = if i % 4 == 3 { "online" } else { "offline" };
                env.tidal_run(level, &format!("w{i}"), &["sleep", "3600"])?;
            }
            let (pid, addr) = start_agent(&mut env, "tick: 100ms\n")?;
            eprintln!("{w} workloads: warming up");
            wait_for(stop, 3.0, Duration::from_millis(100), || false);
            let m0 = scrape(&addr).ok_or("cannot read the agent's /metrics")?;
            let (c0, t0) = (proc_cpu_s(pid), Instant::now());
            wait_for(stop, a.seconds, Duration::from_millis(100), || false);
            if env.interrupted() {
                return Err("interrupted".into());
            }
            let (c1, dt) = (proc_cpu_s(pid), t0.elapsed().as_secs_f64());
            let m1 = scrape(&addr).ok_or("cannot read the agent's /metrics")?;
            let delta = |name: &str| Some(metric(&m1, name)? - metric(&m0, name)?);
            let ticks = delta("tidal_tick_duration_seconds_count");
            let tick_s = delta("tidal_tick_duration_seconds_sum");
            let (Some(c0), Some(c1)) = (c0, c1) else {
                return Err(format!(
                    "cannot read the agent's CPU time (/proc/{pid}/stat)"
                ));
            };
            Ok(CostRow {
                workloads: w,
                seconds: dt,
                cpu_percent_of_one_core: (c1 - c0) / dt * 100.0,
                rss_mib: proc_rss_mib(pid),
                tick_us_mean: match (ticks, tick_s) {
                    (Some(n), Some(s)) if n > 0.0 => Some(s / n * 1e6),
                    _ => None,
                },
                tick_worst_us: metric(&m1, "tidal_tick_worst_seconds").map(|s| s * 1e6),
                ticks,
            })
        })();
        // Cleanup finishes even if a second signal arrives: the flag only stops new work.
        env.cleanup();
        match res {
            Ok(r) => rows.push(r),
            Err(_) if stop.load(Ordering::Relaxed) => {
                eprintln!("tidal: bench interrupted; every group it made was removed");
                return 130;
            }
            Err(e) => return failed(e),
        }
    }
    let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |x| format!("{x:.d$}"));
    println!("| workloads | agent CPU (% of one core) | RSS MiB | mean tick µs | worst tick µs | ticks |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2}% | {} | {} | {} | {} |",
            r.workloads,
            r.cpu_percent_of_one_core,
            opt(r.rss_mib, 1),
            opt(r.tick_us_mean, 0),
            opt(r.tick_worst_us, 0),
            opt(r.ticks, 0)
        );
    }
    if let Some(p) = &a.json {
        let text = match serde_json::to_string_pretty(&rows) {
            Ok(t) => t,
            Err(e) => return failed(format!("report JSON: {e}")),
        };
        if let Err(e) = std::fs::write(p, text) {
            return failed(format!("{}: {e}", p.display()));
        }
    }
    0
}
