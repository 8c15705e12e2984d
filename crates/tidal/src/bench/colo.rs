//! The co-location benchmark: one online service under open-loop load next to offline antagonists,
//! in each isolation scenario, interleaved over shuffled rounds; plus the load-step scenario.

use super::env::BenchEnv;
use super::hist::{summarize, Latency};
use super::loadgen::{self, Arrivals, Schedule};
use super::worker::read_report;
use crate::cli::BenchArgs;
use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidal_actuator::Actuator;
use tidal_model::{GroupPath, Knob, KnobValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    Alone,
    NoIsolation,
    Kubelet,
    QuotaSuppress,
    TidalStatic,
    Tidal,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Alone,
        Scenario::NoIsolation,
        Scenario::Kubelet,
        Scenario::QuotaSuppress,
        Scenario::TidalStatic,
        Scenario::Tidal,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Alone => "alone",
            Scenario::NoIsolation => "no-isolation",
            Scenario::Kubelet => "kubelet",
            Scenario::QuotaSuppress => "quota-suppress",
            Scenario::TidalStatic => "tidal-static",
            Scenario::Tidal => "tidal",
        }
    }
    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s.trim())
    }
    fn uses_tidal(self) -> bool {
        matches!(self, Scenario::TidalStatic | Scenario::Tidal)
    }
}

/// What one measured run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub scenario: Scenario,
    pub round: usize,
    pub latency: Latency,
    pub sent: u64,
    pub lost: u64,
    /// Built-in antagonists' work units per second (None for an external command).
    pub offline_units_per_s: Option<f64>,
    /// CPUs the offline side used.
    pub offline_cpus: f64,
    /// CPUs the online server used.
    pub online_cpus: f64,
    /// Machine CPU utilisation, 0..1.
    pub utilisation: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub scenario: Scenario,
    /// Milliseconds from the step until offline was out of the CPUs online needs (its final
    /// post-step confinement); None when the scenario has no dynamic reaction or never got there.
    pub reaction_ms: Option<f64>,
    pub note: String,
    pub before: Latency,
    pub after_first_second: Latency,
}

/// Settings shared by every run.
pub struct Opts {
    pub rate: f64,
    pub work_us: u64,
    pub connections: usize,
    pub arrivals: Arrivals,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub offline_kind: String,
    pub offline_threads: usize,
    pub offline_cmd: Option<String>,
    pub agent_config: Option<PathBuf>,
    pub n_cpus: usize,
    pub seed: u64,
}

impl Opts {
    pub fn from_args(a: &BenchArgs, n_cpus: usize) -> Opts {
        let quick = a.quick;
        Opts {
            rate: a.rate.unwrap_or(0.0),
            work_us: a.work_us,
            connections: a.connections,
            arrivals: if a.constant {
                Arrivals::Constant
            } else {
                Arrivals::Poisson
            },
            warmup_s: a.warmup.unwrap_or(if quick { 1.0 } else { 2.0 }),
            duration_s: a.duration.unwrap_or(if quick { 3.0 } else { 10.0 }),
            offline_kind: a.offline.clone(),
            offline_threads: a.offline_threads.unwrap_or(2 * n_cpus),
            offline_cmd: a.offline_cmd.clone(),
            agent_config: a.agent_config.clone(),
            n_cpus,
            seed: a.seed,
        }
    }
}

/// A scenario's processes and groups for one run.
struct Setup {
    port: u16,
    reports: Vec<PathBuf>,
    online_group: String,
    offline_group: Option<String>,
    quota: Option<QuotaCtl>,
    groups: Vec<String>,
}

fn wait_file(p: &std::path::Path, secs: u64) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(p) {
            if !s.trim().is_empty() {
                return Ok(s);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("timed out waiting for {}", p.display()))
}

/// Starts `argv` stopped, moves it into `group`, then lets it run: nothing it forks escapes the group.
fn spawn_in(env: &mut BenchEnv, group: &GroupPath, argv: &[String]) -> Result<u32, String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("kill -STOP $$; exec \"$@\"")
        .arg("sh")
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let pid = env.spawn(c)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if st
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('T'))
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("process {pid} did not stop for placement"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    env.move_pid(group, pid)?;
    // SAFETY: kill(2) on a process this bench started.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    Ok(pid)
}

fn offline_argv(env: &BenchEnv, o: &Opts, report: &std::path::Path) -> Vec<Vec<String>> {
    let exe = env.exe.display().to_string();
    if let Some(cmd) = &o.offline_cmd {
        return vec![vec!["sh".into(), "-c".into(), cmd.clone()]];
    }
    let kinds: Vec<&str> = if o.offline_kind == "mix" {
        vec!["cpu", "stream", "cache"]
    } else {
        vec![o.offline_kind.as_str()]
    };
    let per = (o.offline_threads / kinds.len()).max(1);
    kinds
        .iter()
        .enumerate()
        .map(|(i, k)| {
            vec![
                exe.clone(),
                "worker".into(),
                (*k).into(),
                "--threads".into(),
                per.to_string(),
                "--report".into(),
                format!("{}.{i}", report.display()),
            ]
        })
        .collect()
}

fn setup(
    env: &mut BenchEnv,
    s: Scenario,
    o: &Opts,
    tag: &str,
    with_offline: bool,
) -> Result<Setup, String> {
    let dir = env.state_dir().join(tag);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ready = dir.join("port");
    let report = dir.join("offline");
    let exe = env.exe.display().to_string();
    let server = vec![
        exe.clone(),
        "worker".into(),
        "server".into(),
        "--work-us".into(),
        o.work_us.to_string(),
        "--ready-file".into(),
        ready.display().to_string(),
    ];
    let offline = if with_offline && s != Scenario::Alone {
        offline_argv(env, o, &report)
    } else {
        Vec::new()
    };
    let reports: Vec<PathBuf> = if o.offline_cmd.is_some() {
        Vec::new()
    } else {
        (0..offline.len())
            .map(|i| PathBuf::from(format!("{}.{i}", report.display())))
            .collect()
    };
    let mut st = Setup {
        port: 0,
        reports,
        online_group: format!("{tag}/online"),
        offline_group: None,
        quota: None,
        groups: Vec::new(),
    };
    if s.uses_tidal() {
        st.online_group = "tidal/online-critical/server".into();
        env.tidal_run("online-critical", "server", &server)?;
        for (i, argv) in offline.iter().enumerate() {
            env.tidal_run("offline", &format!("batch{i}"), argv)?;
        }
        if !offline.is_empty() {
            st.offline_group = Some("tidal/offline".into());
        }
        if s == Scenario::Tidal {
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .to_string();
            let mut c = env.tidal_cmd();
            c.arg("agent").args(["--listen", &addr]);
            if let Some(cfg) = &o.agent_config {
                c.arg("--config").arg(cfg);
            }
            c.stderr(std::process::Stdio::null());
            env.spawn(c)?;
            super::env::wait_healthz(&addr)?;
        }
    } else {
        // What the kubelet gives a Burstable online pod (shares by its request: the CPUs it uses at
        // the calibrated rate) and a BestEffort offline pod (shares 2).
        let (on_knobs, off_knobs) = match s {
            Scenario::Kubelet | Scenario::QuotaSuppress => {
                let req = (0.3 * o.n_cpus as f64 * 1024.0) as u64;
                (
                    vec![(Knob::CpuWeight, KnobValue::Shares(req.max(2)))],
                    vec![(Knob::CpuWeight, KnobValue::Shares(2))],
                )
            }
            _ => (Vec::new(), Vec::new()),
        };
        let og = env.group(&st.online_group, &on_knobs)?;
        st.groups.push(st.online_group.clone());
        spawn_in(env, &og, &server)?;
        if !offline.is_empty() {
            let name = format!("{tag}/offline");
            let g = env.group(&name, &off_knobs)?;
            for argv in &offline {
                spawn_in(env, &g, argv)?;
            }
            st.groups.push(name.clone());
            st.offline_group = Some(name.clone());
            if s == Scenario::QuotaSuppress {
                st.quota = Some(QuotaCtl::start(env, &name, &st.online_group, o.n_cpus)?);
            }
        }
        st.groups.push(tag.to_string());
    }
    st.port = wait_file(&ready, 15)?
        .trim()
        .parse()
        .map_err(|_| "bad port from the server".to_string())?;
    Ok(st)
}

/// Runs the load generator as a process in the scenario's online group (see `client.rs`); `on_start`
/// gets the instant its schedule started, as `loadgen::run` would give it.
fn client_run(
    env: &mut BenchEnv,
    st: &Setup,
    tidal: bool,
    conns: usize,
    sched: &Schedule,
    windows: &[(u64, u64)],
    on_start: impl FnOnce(Instant),
) -> Result<loadgen::LoadResult, String> {
    let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
    let dir = env.state_dir().to_path_buf();
    let (ready, out) = (
        dir.join(format!("client{n}.start")),
        dir.join(format!("client{n}.json")),
    );
    let mut argv = vec![
        env.exe.display().to_string(),
        "worker".into(),
        "loadgen".into(),
        "--port".into(),
        st.port.to_string(),
        "--connections".into(),
        conns.to_string(),
        "--segments".into(),
        super::client::segments_arg(sched),
        "--duration".into(),
        sched.duration_s.to_string(),
        "--seed".into(),
        sched.seed.to_string(),
        "--windows".into(),
        super::client::windows_arg(windows),
        "--ready-file".into(),
        ready.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    if sched.arrivals == Arrivals::Constant {
        argv.push("--constant".into());
    }
    let pid = if tidal {
        env.tidal_run("online-critical", "client", &argv)?
    } else {
        let g = GroupPath::new(&st.online_group).unwrap_or_default();
        spawn_in(env, &g, &argv)?
    };
    let start = wait_file(&ready, 20)?;
    let mono: u64 = start
        .trim()
        .parse()
        .map_err(|_| "bad client start time".to_string())?;
    on_start(super::client::instant_of(mono));
    let deadline = Instant::now() + Duration::from_secs_f64(sched.duration_s + 30.0);
    while !out.exists() || std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) == 0 {
        if Instant::now() > deadline || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The writer may still be finishing the file: give it a moment to exit.
    let end = Instant::now() + Duration::from_secs(2);
    while std::path::Path::new(&format!("/proc/{pid}/status")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !s.contains("State:\tZ"))
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    super::client::read_result(&out)
}

static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn teardown(env: &mut BenchEnv, st: Setup) {
    if let Some(q) = st.quota {
        q.stop();
    }
    env.stop_children();
    env.cleanup_groups(&st.groups);
}

impl BenchEnv {
    /// Removes the given groups (kills leftovers first), plus tidal's workload groups.
    pub fn cleanup_groups(&mut self, groups: &[String]) {
        self.stop_children();
        let mut all: Vec<String> = groups.to_vec();
        if let Ok(scan) = tidal_source::LocalSource::new(self.tidal_layout()).scan() {
            all.extend(scan.workloads.iter().map(|w| format!("tidal/{}", w.group)));
        }
        for g in all {
            if let Some(gp) = GroupPath::new(&g) {
                let _ = self.act.remove_group(&gp);
            }
        }
    }
}

/// Koordinator-style CFS-quota suppression of the offline group, once a second:
/// quota = max(CPUs × 65% − online used − system used, 2 ms per period), moving ≤ 10% of the CPUs
/// per round and skipping changes under 1%.
struct QuotaCtl {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    pub log: Arc<Mutex<Vec<(Instant, f64, f64)>>>,
}

impl QuotaCtl {
    fn start(env: &BenchEnv, offline: &str, online: &str, n: usize) -> Result<QuotaCtl, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut act =
            Actuator::new(env.layout.clone(), env.state_dir(), false).map_err(|e| e.to_string())?;
        let layout = env.layout.clone();
        let (off, on) = (
            GroupPath::new(offline).unwrap_or_default(),
            GroupPath::new(online).unwrap_or_default(),
        );
        let node_reader = BenchEnv::node_reader(env);
        let (s2, l2) = (Arc::clone(&stop), Arc::clone(&log));
        let handle = std::thread::spawn(move || {
            let period = 100_000u64;
            let nf = n as f64;
            let mut cur = nf;
            let mut prev: Option<(Instant, u64, u64, u64)> = None;
            while !s2.load(Ordering::Relaxed) {
                let now = Instant::now();
                let (node, on_ns, off_ns) = (
                    node_reader(),
                    layout.cpu_usage_ns(&on).unwrap_or(0),
                    layout.cpu_usage_ns(&off).unwrap_or(0),
                );
                if let Some((t, pn, pon, poff)) = prev {
                    let dt = now.duration_since(t).as_nanos().max(1) as f64;
                    let online = on_ns.saturating_sub(pon) as f64 / dt;
                    let offline = off_ns.saturating_sub(poff) as f64 / dt;
                    let system = (node.saturating_sub(pn) as f64 / dt - online - offline).max(0.0);
                    let target = (nf * 0.65 - online - system).max(0.02);
                    let step = 0.1 * nf;
                    let next = target.clamp(cur - step, cur + step);
                    if (next - cur).abs() / nf >= 0.01 {
                        cur = next;
                        let _ = act.set(
                            &off,
                            Knob::CpuMax,
                            &KnobValue::Quota {
                                quota_us: Some(((cur * period as f64) as u64).max(2000)),
                                period_us: period,
                            },
                        );
                    }
                    if let Ok(mut l) = l2.lock() {
                        l.push((now, cur, target));
                    }
                }
                prev = Some((now, node, on_ns, off_ns));
                let until = now + Duration::from_secs(1);
                while Instant::now() < until && !s2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Ok(QuotaCtl {
            stop,
            handle: Some(handle),
            log,
        })
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl BenchEnv {
    fn node_reader(env: &BenchEnv) -> impl Fn() -> u64 + Send + 'static {
        let layout = env.layout.clone();
        move || super::env::node_ns(&layout)
    }

    fn tidal_layout(&self) -> tidal_cgroupfs::Layout {
        tidal_cgroupfs::Layout::new(
            self.layout.hierarchies.clone(),
            &tidal_cgroupfs::RootSpec::Relative(self.tidal_root()),
        )
    }
}

#[derive(Clone, Copy, Default)]
struct Mark {
    units: u64,
    offline_ns: u64,
    online_ns: u64,
    node_ns: u64,
    at: Option<Instant>,
}

/// One measured run of scenario `s`.
pub fn run_once(
    env: &mut BenchEnv,
    s: Scenario,
    o: &Opts,
    round: usize,
) -> Result<RunResult, String> {
    let tag = format!("r{round}-{}", s.name());
    let st = setup(env, s, o, &tag, true)?;
    let result = measure(env, s, o, round, &st);
    teardown(env, st);
    result
}

fn measure(
    env: &mut BenchEnv,
    s: Scenario,
    o: &Opts,
    round: usize,
    st: &Setup,
) -> Result<RunResult, String> {
    let total = o.warmup_s + o.duration_s;
    let sched = Schedule {
        arrivals: o.arrivals,
        segments: vec![(0.0, o.rate)],
        duration_s: total,
        seed: o.seed + round as u64,
    };
    let warm_ns = (o.warmup_s * 1e9) as u64;
    let end_ns = (total * 1e9) as u64;
    let marks: Arc<Mutex<(Mark, Mark)>> = Arc::new(Mutex::new((Mark::default(), Mark::default())));
    let m2 = Arc::clone(&marks);
    let reports = st.reports.clone();
    let offline_group = st.offline_group.clone();
    let online_group = st.online_group.clone();
    let layout = env.layout.clone();
    let node_reader = BenchEnv::node_reader(env);
    let mark_now = move || Mark {
        units: reports
            .iter()
            .filter_map(|p| read_report(p))
            .map(|(u, _)| u)
            .sum(),
        offline_ns: offline_group
            .as_deref()
            .and_then(GroupPath::new)
            .and_then(|g| layout.cpu_usage_ns(&g).ok())
            .unwrap_or(0),
        online_ns: GroupPath::new(&online_group)
            .and_then(|g| layout.cpu_usage_ns(&g).ok())
            .unwrap_or(0),
        node_ns: node_reader(),
        at: Some(Instant::now()),
    };
    let mut marker = None;
    let r = client_run(
        env,
        st,
        s.uses_tidal(),
        o.connections,
        &sched,
        &[(warm_ns, end_ns)],
        |start| {
            let (w, d) = (o.warmup_s, o.duration_s);
            marker = Some(std::thread::spawn(move || {
                let until = |s: f64| {
                    let t = start + Duration::from_secs_f64(s);
                    let now = Instant::now();
                    if t > now {
                        std::thread::sleep(t - now);
                    }
                };
                until(w);
                let a = mark_now();
                until(w + d);
                let b = mark_now();
                if let Ok(mut m) = m2.lock() {
                    *m = (a, b);
                }
            }));
        },
    )
    .map_err(|e| format!("load generator: {e}"))?;
    if let Some(h) = marker {
        let _ = h.join();
    }
    let (a, b) = marks
        .lock()
        .map(|m| *m)
        .map_err(|_| "marks poisoned".to_string())?;
    let dt = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64().max(1e-3),
        _ => o.duration_s,
    };
    let n = o.n_cpus as f64;
    Ok(RunResult {
        scenario: s,
        round,
        latency: summarize(&r.windows[0].hist),
        sent: r.sent,
        lost: r.lost,
        offline_units_per_s: if st.reports.is_empty() {
            None
        } else {
            Some(b.units.saturating_sub(a.units) as f64 / dt)
        },
        offline_cpus: b.offline_ns.saturating_sub(a.offline_ns) as f64 / 1e9 / dt,
        online_cpus: b.online_ns.saturating_sub(a.online_ns) as f64 / 1e9 / dt,
        utilisation: (b.node_ns.saturating_sub(a.node_ns) as f64 / 1e9 / dt / n).min(1.0),
    })
}

/// CPU seconds the server spends per request, measured alone at a modest rate.
pub fn calibrate(env: &mut BenchEnv, o: &Opts) -> Result<f64, String> {
    let st = setup(env, Scenario::Alone, o, "calibrate", false)?;
    let probe_rate = (0.1 * o.n_cpus as f64 / (o.work_us as f64 * 1e-6)).max(100.0);
    let sched = Schedule::constant_rate(Arrivals::Constant, probe_rate, 2.0);
    let before = env.usage_ns(&st.online_group);
    let r = client_run(
        env,
        &st,
        false,
        o.connections,
        &sched,
        &[(0, u64::MAX)],
        |_| {},
    );
    let after = env.usage_ns(&st.online_group);
    teardown(env, st);
    let r = r.map_err(|e| format!("calibration load: {e}"))?;
    if r.received == 0 {
        return Err("calibration: the server answered nothing".into());
    }
    Ok((after.saturating_sub(before) as f64 / 1e9) / r.received as f64)
}

/// Online rate stepping from 10% to 60% of the machine; how fast offline gets out of the way.
pub fn run_step(
    env: &mut BenchEnv,
    s: Scenario,
    o: &Opts,
    cost_s: f64,
) -> Result<StepResult, String> {
    let tag = format!("step-{}", s.name());
    let st = setup(env, s, o, &tag, true)?;
    let n = o.n_cpus as f64;
    let (lo, hi) = (0.1 * n / cost_s, 0.6 * n / cost_s);
    let (pre, post) = (3.0, 2.5);
    let step_at = o.warmup_s + pre;
    let sched = Schedule {
        arrivals: o.arrivals,
        segments: vec![(0.0, lo), (step_at, hi)],
        duration_s: step_at + post,
        seed: o.seed + 1000,
    };
    let ns = |s: f64| (s * 1e9) as u64;
    let windows = [
        (ns(o.warmup_s), ns(step_at)),
        (ns(step_at), ns(step_at + 1.0)),
    ];
    // Watch what confines offline: tidal's cpuset and freeze files, or the quota controller's log.
    let cpuset = env
        .dir("cpuset", "tidal/offline")
        .map(|d| d.join("cpuset.cpus"));
    let freeze = env
        .dir("freezer", "tidal/offline/offline")
        .map(|d| d.join("cgroup.freeze"));
    let unified_freeze = env.layout.unified().map(|u| {
        u.dir(&GroupPath::new("tidal/offline/offline").unwrap_or_default())
            .join("cgroup.freeze")
    });
    let changes: Arc<Mutex<Vec<(f64, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let c2 = Arc::clone(&changes);
    let watch_tidal = s == Scenario::Tidal;
    let mut watcher = None;
    let mut step_instant = None;
    let r = client_run(
        env,
        &st,
        s.uses_tidal(),
        o.connections,
        &sched,
        &windows,
        |start| {
            step_instant = Some(start + Duration::from_secs_f64(step_at));
            if watch_tidal {
                let files: Vec<PathBuf> = [cpuset, freeze, unified_freeze]
                    .into_iter()
                    .flatten()
                    .collect();
                watcher = Some(std::thread::spawn(move || {
                    let read = || {
                        files
                            .iter()
                            .map(|f| std::fs::read_to_string(f).unwrap_or_default())
                            .collect::<Vec<_>>()
                            .join("|")
                    };
                    let step = start + Duration::from_secs_f64(step_at);
                    let mut last = String::new();
                    while Instant::now() < step {
                        last = read();
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    let end = step + Duration::from_secs_f64(post);
                    while Instant::now() < end {
                        let now = read();
                        if now != last {
                            let t = Instant::now().duration_since(step).as_secs_f64() * 1000.0;
                            if let Ok(mut c) = c2.lock() {
                                c.push((t, now.replace('\n', "")));
                            }
                            last = now;
                        }
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }));
            }
        },
    );
    if let Some(h) = watcher {
        let _ = h.join();
    }
    let quota_log = st
        .quota
        .as_ref()
        .map(|q| q.log.lock().map(|l| l.clone()).unwrap_or_default());
    teardown(env, st);
    let r = r.map_err(|e| format!("load generator: {e}"))?;
    let (reaction_ms, note) = match s {
        Scenario::Tidal => {
            let c = changes.lock().map(|c| c.clone()).unwrap_or_default();
            match c.last() {
                Some((t, state)) => (
                    Some(*t),
                    format!("final confinement {state} after {} change(s)", c.len()),
                ),
                None => (
                    Some(0.0),
                    "no change needed: offline was already at its post-step confinement"
                        .to_string(),
                ),
            }
        }
        Scenario::QuotaSuppress => {
            // The controller moves ≤10% of the machine per 1 s round towards its target.
            let log = quota_log.unwrap_or_default();
            let reached = step_instant.and_then(|step| {
                log.iter()
                    .filter(|(t, _, _)| *t >= step)
                    .find(|(_, cur, target)| (cur - target).abs() < 0.01 * n)
                    .map(|(t, _, _)| t.duration_since(step).as_secs_f64() * 1000.0)
            });
            match reached {
                Some(ms) => (Some(ms), "quota reached its post-step target".into()),
                None => (
                    None,
                    format!(
                        "quota still moving towards its target {:.0} ms after the step (≤10% of the machine per 1 s round)",
                        post * 1000.0
                    ),
                ),
            }
        }
        _ => (None, "static settings: no dynamic reaction".to_string()),
    };
    Ok(StepResult {
        scenario: s,
        reaction_ms,
        note,
        before: summarize(&r.windows[0].hist),
        after_first_second: summarize(&r.windows[1].hist),
    })
}
