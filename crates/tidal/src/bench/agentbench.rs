//! The agent's own benchmarks on real cgroups: how fast offline gets out of online's CPUs after an
//! online load step (`reaction`), and what the agent costs per tick with many workloads (`agent-cost`).

use super::env::BenchEnv;
use super::hist::percentile;
use crate::cli::{AgentCostArgs, ReactionArgs};
use crate::exit::fail;
use serde::Serialize;
use std::time::{Duration, Instant};
use tidal_model::CpuSet;

fn free_addr() -> Result<String, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .map_err(|e| format!("no free port: {e}"))
}

fn start_agent(env: &mut BenchEnv, config: &str) -> Result<(u32, String), String> {
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
    let pid = env.spawn(c)?;
    super::env::wait_healthz(&addr)?;
    Ok((pid, addr))
}

/// Polls `f` every `every` until it holds or `secs` pass. Polling costs CPU the agent counts as
/// online usage, so waits that are not measured poll slowly.
fn wait_for(secs: f64, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < deadline {
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
pub fn reaction(a: &ReactionArgs) -> i32 {
    let mut env = match BenchEnv::new("reaction") {
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
        // SAFETY: kill(2) on the load process this bench started.
        unsafe { libc::kill(load as i32, libc::SIGSTOP) };
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
            let settled = wait_for(15.0, Duration::from_millis(20), || {
                cpus() == all && {
                    std::thread::sleep(Duration::from_millis(200));
                    cpus() == all
                }
            });
            if !settled {
                return Err(format!("step {i}: offline never got every CPU back"));
            }
            let t0 = Instant::now();
            // SAFETY: as above.
            unsafe { libc::kill(load as i32, libc::SIGCONT) };
            if wait_for(2.0, Duration::from_micros(250), || cpus().len() < all.len()) {
                times.push(t0.elapsed().as_secs_f64() * 1000.0);
            } else {
                missed += 1;
            }
            std::thread::sleep(Duration::from_millis(100));
            // SAFETY: as above.
            unsafe { libc::kill(load as i32, libc::SIGSTOP) };
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
                if r.p99_ms <= 100.0 && r.missed == 0 {
                    "met"
                } else {
                    "NOT met"
                }
            );
            if let Some(p) = &a.json {
                if let Err(e) =
                    std::fs::write(p, serde_json::to_string_pretty(&r).unwrap_or_default())
                {
                    return fail(format!("{}: {e}", p.display()));
                }
            }
            0
        }
        Err(e) => fail(e),
    }
}

#[derive(Serialize)]
struct CostRow {
    workloads: usize,
    seconds: f64,
    cpu_percent_of_one_core: f64,
    rss_mib: f64,
    tick_us_mean: f64,
    ticks: f64,
}

fn proc_cpu_s(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<String> = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .map(String::from)
                .collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / hz)
        })
        .unwrap_or(0.0)
}

fn proc_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

/// Agent CPU and memory at a 100 ms tick with W workloads (¾ offline, ¼ online, all sleeping).
pub fn cost(a: &AgentCostArgs) -> i32 {
    let counts: Vec<usize> = a
        .workloads
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    if counts.is_empty() {
        return fail(format!(
            "--workloads '{}' holds no counts (e.g. 50,100,200)",
            a.workloads
        ));
    }
    let mut rows = Vec::new();
    for w in counts {
        let mut env = match BenchEnv::new(&format!("cost{w}")) {
            Ok(e) => e,
            Err(e) => return fail(e),
        };
        let res = (|| -> Result<CostRow, String> {
            for i in 0..w {
                let level = if i % 4 == 3 { "online" } else { "offline" };
                env.tidal_run(level, &format!("w{i}"), &["sleep", "3600"])?;
            }
            let (pid, addr) = start_agent(&mut env, "tick: 100ms\n")?;
            eprintln!("{w} workloads: warming up");
            std::thread::sleep(Duration::from_secs(3));
            let m0 = ureq::get(&format!("http://{addr}/metrics"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default();
            let (c0, t0) = (proc_cpu_s(pid), Instant::now());
            std::thread::sleep(Duration::from_secs_f64(a.seconds));
            let (c1, dt) = (proc_cpu_s(pid), t0.elapsed().as_secs_f64());
            let m1 = ureq::get(&format!("http://{addr}/metrics"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default();
            let ticks = metric(&m1, "tidal_tick_duration_seconds_count")
                - metric(&m0, "tidal_tick_duration_seconds_count");
            let tick_s = metric(&m1, "tidal_tick_duration_seconds_sum")
                - metric(&m0, "tidal_tick_duration_seconds_sum");
            Ok(CostRow {
                workloads: w,
                seconds: dt,
                cpu_percent_of_one_core: (c1 - c0) / dt * 100.0,
                rss_mib: proc_rss_mib(pid),
                tick_us_mean: if ticks > 0.0 {
                    tick_s / ticks * 1e6
                } else {
                    f64::NAN
                },
                ticks,
            })
        })();
        env.cleanup();
        match res {
            Ok(r) => rows.push(r),
            Err(e) => return fail(e),
        }
    }
    println!("| workloads | agent CPU (% of one core) | RSS MiB | mean tick µs | ticks |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.2}% | {:.1} | {:.0} | {:.0} |",
            r.workloads, r.cpu_percent_of_one_core, r.rss_mib, r.tick_us_mean, r.ticks
        );
    }
    if let Some(p) = &a.json {
        if let Err(e) = std::fs::write(p, serde_json::to_string_pretty(&rows).unwrap_or_default()) {
            return fail(format!("{}: {e}", p.display()));
        }
    }
    0
}
