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
use tidal_model::Target;
use tidal_model::{CpuSet, GroupPath, Knob, KnobValue};

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
    /// What the kubelet-tree layout runs.
    pub const KUBELET_TREE: [Scenario; 4] = [
        Scenario::Alone,
        Scenario::Kubelet,
        Scenario::TidalStatic,
        Scenario::Tidal,
    ];
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
    /// CPUs the offline side used (from its cgroup's CPU time; None if unreadable).
    pub offline_cpus: Option<f64>,
    /// CPUs the online server used.
    pub online_cpus: Option<f64>,
    /// Machine CPU utilisation, 0..1.
    pub utilisation: Option<f64>,
    #[serde(default)]
    pub memory: MemoryResult,
    /// The online server's run-queue p99 over the run, in µs (eBPF; None without it).
    pub online_runq_p99_us: Option<f64>,
    /// Memory the run gave back when its processes ended (MemAvailable after teardown less just
    /// before; None when unreadable): what decides whether the next run waits to settle.
    pub released_bytes: Option<u64>,
    /// CPU time the host took from this VM in the measured window, ms over all CPUs (None where
    /// /proc/stat has no steal).
    pub host_steal_ms: Option<f64>,
    /// What the host took in the window of an earlier try of this run, which was run again for it
    /// (`--rerun-steal-ms`); None when this is the first try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_for_steal_ms: Option<f64>,
}

/// Memory over a run: the online server's major faults, and tasks OOM-killed on each side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct MemoryResult {
    pub online_major_faults: Option<u64>,
    pub oom_kills_online: Option<u64>,
    pub oom_kills_offline: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub scenario: Scenario,
    /// Which of the step runs (from 0); runs of one number ran back to back, one per scenario.
    pub run: usize,
    /// Milliseconds from the step to the first change that reached the post-step target; None when
    /// nothing changed (static scenarios, or no change was due), which reads "n/a", never "met".
    pub reaction_ms: Option<f64>,
    pub note: String,
    pub before: Latency,
    pub after_first_second: Latency,
    /// CPU time the host took from this VM over the run, ms over all CPUs (None where unreadable).
    pub host_steal_ms: Option<f64>,
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
    pub layout: crate::cli::BenchLayout,
    /// `--offline memory`'s target, and the server's file-backed working set.
    pub memory_bytes: Option<u64>,
    pub working_set: Option<u64>,
    /// The `tidal` scenario's latency objective: alone p99 × this (None: no objective).
    pub slo_factor: Option<f64>,
    /// The objective's target once measured (seconds).
    pub slo_target_s: Option<f64>,
    /// Where each agent's log goes (`--agent-logs`).
    pub agent_logs: Option<PathBuf>,
    /// A run that lost more CPU time than this to the host in its window is run again, once
    /// (ms over all CPUs; None: never).
    pub rerun_steal_ms: Option<f64>,
}

impl Opts {
    pub fn from_args(a: &BenchArgs, n_cpus: usize) -> Opts {
        let quick = a.quick;
        let duration_s = a.duration.unwrap_or(if quick { 3.0 } else { 5.0 });
        Opts {
            rate: a.rate.unwrap_or(0.0),
            work_us: a.work_us,
            connections: a.connections,
            arrivals: if a.constant {
                Arrivals::Constant
            } else {
                Arrivals::Poisson
            },
            warmup_s: a.warmup.unwrap_or(if quick { 1.0 } else { 1.5 }),
            duration_s,
            offline_kind: a.offline.clone(),
            offline_threads: a.offline_threads.unwrap_or(2 * n_cpus),
            offline_cmd: a.offline_cmd.clone(),
            agent_config: a.agent_config.clone(),
            n_cpus,
            seed: a.seed,
            layout: a.layout,
            memory_bytes: a.memory_bytes,
            working_set: a.working_set,
            slo_factor: (!a.no_slo).then_some(a.slo_factor),
            slo_target_s: None,
            agent_logs: a.agent_logs.clone(),
            rerun_steal_ms: rerun_steal_ms(a.rerun_steal_ms, duration_s, n_cpus),
        }
    }
}

/// `--rerun-steal-ms`, or 1% of a window's CPU time (`duration_s` on `n_cpus`); 0 is never.
fn rerun_steal_ms(set: Option<f64>, duration_s: f64, n_cpus: usize) -> Option<f64> {
    let ms = set.unwrap_or(0.01 * duration_s * n_cpus as f64 * 1e3);
    (ms > 0.0).then_some(ms)
}

/// A scenario's processes and groups for one run.
struct Setup {
    port: u16,
    reports: Vec<PathBuf>,
    online_group: String,
    offline_group: Option<String>,
    quota: Option<QuotaCtl>,
    /// The groups the scenario made: killed by cgroup and removed at its end.
    groups: Vec<GroupPath>,
    /// The offline processes (an early exit means the antagonist failed).
    offline_pids: Vec<u32>,
    /// The stand-in apiserver of a kubelet-tree `tidal` run.
    api: Option<tidal_kube::mock::MockApi>,
    /// The server's `/metrics` port.
    metrics_port: Option<u16>,
}

fn wait_file(env: &BenchEnv, p: &std::path::Path, secs: u64) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if env.interrupted() {
            return Err("interrupted".into());
        }
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
/// The bench's own processes are kept from the OOM killer; an offline workload gives that up
/// (back to the kernel's neutral 0, as any process outside tidal would have).
fn spawn_in(env: &mut BenchEnv, group: &GroupPath, argv: &[String]) -> Result<u32, String> {
    spawn_in_as(env, group, argv, false)
}

fn spawn_offline_in(env: &mut BenchEnv, group: &GroupPath, argv: &[String]) -> Result<u32, String> {
    spawn_in_as(env, group, argv, true)
}

fn spawn_in_as(
    env: &mut BenchEnv,
    group: &GroupPath,
    argv: &[String],
    offline: bool,
) -> Result<u32, String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(if offline {
            format!(
                "echo 0 > /proc/self/oom_score_adj; {}",
                super::env::STOP_THEN_EXEC
            )
        } else {
            super::env::STOP_THEN_EXEC.to_string()
        })
        .arg("sh")
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    env.spawn_placed(c, Some(group))
}

/// Where a scenario run's agent logs: a file in `--agent-logs`, else nowhere.
fn agent_log(o: &Opts, tag: &str) -> Result<std::process::Stdio, String> {
    let Some(dir) = &o.agent_logs else {
        return Ok(std::process::Stdio::null());
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("--agent-logs {}: {e}", dir.display()))?;
    let f = dir.join(format!("{}.log", tag.replace('/', "-")));
    std::fs::File::create(&f)
        .map(std::process::Stdio::from)
        .map_err(|e| format!("--agent-logs {}: {e}", f.display()))
}

/// The service's memory beside its working set (threads, buffers), declared in its request.
const SERVER_OWN_BYTES: u64 = 64 << 20;

/// What the memory antagonist leaves available so that it stops short of the kernel's OOM
/// killer (which would take the bench itself in the no-isolation scenario): 5% of RAM, at least
/// 512 MiB.
fn oom_margin(total: u64) -> u64 {
    (total / 20).max(512 << 20)
}

/// The memory antagonist's target: `--memory-bytes`, else 110% of what is available now (past
/// free RAM, so that something must give), else all of RAM.
fn memory_target(explicit: Option<u64>, available: Option<u64>, total: u64) -> u64 {
    explicit.unwrap_or_else(|| available.map_or(total, |a| (a / 10).saturating_mul(11)))
}

/// The page-cache antagonist's file: larger than RAM by 1 GiB, so that streaming it evicts every
/// page the server's working set has (sparse: it costs no disk).
fn pagecache_bytes(total: u64) -> u64 {
    total.saturating_add(1 << 30)
}

fn offline_argv(
    env: &BenchEnv,
    o: &Opts,
    report: &std::path::Path,
) -> Result<Vec<Vec<String>>, String> {
    let exe = env.exe.display().to_string();
    if let Some(cmd) = &o.offline_cmd {
        return Ok(vec![vec!["sh".into(), "-c".into(), cmd.clone()]]);
    }
    if o.offline_kind == "memory" || o.offline_kind == "pagecache" {
        let m = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| tidal_cgroupfs::proc::parse_meminfo(&t).ok())
            .ok_or("--offline memory and pagecache are sized from RAM: /proc/meminfo has no readable MemTotal")?;
        let total = m.total;
        return Ok(vec![if o.offline_kind == "memory" {
            vec![
                exe,
                "worker".into(),
                "memory".into(),
                "--bytes".into(),
                memory_target(o.memory_bytes, Some(m.available), total).to_string(),
                "--margin".into(),
                oom_margin(total).to_string(),
                "--threads".into(),
                o.offline_threads.to_string(),
                "--report".into(),
                format!("{}.0", report.display()),
            ]
        } else {
            vec![
                exe,
                "worker".into(),
                "pagecache".into(),
                "--file".into(),
                env.work_dir().join("pagecache.dat").display().to_string(),
                "--bytes".into(),
                pagecache_bytes(total).to_string(),
                "--threads".into(),
                "2".into(),
                "--report".into(),
                format!("{}.0", report.display()),
            ]
        }]);
    }
    let kinds: Vec<&str> = if o.offline_kind == "mix" {
        vec!["cpu", "stream", "cache"]
    } else {
        vec![o.offline_kind.as_str()]
    };
    let per = (o.offline_threads / kinds.len()).max(1);
    Ok(kinds
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
        .collect())
}

fn setup(
    env: &mut BenchEnv,
    s: Scenario,
    o: &Opts,
    tag: &str,
    with_offline: bool,
) -> Result<Setup, String> {
    let dir = env.work_dir().join(tag);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ready = dir.join("port");
    // A tag used again (the settling probes) must not read the last server's port.
    for stale in [ready.clone(), dir.join("port.metrics")] {
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", stale.display()));
            }
            _ => {}
        }
    }
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
    let server = match o.working_set {
        Some(b) => {
            let mut v = server;
            v.extend(["--working-set".into(), b.to_string()]);
            v
        }
        None => server,
    };
    let offline = if with_offline && s != Scenario::Alone {
        offline_argv(env, o, &report)?
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
        offline_pids: Vec::new(),
        api: None,
        metrics_port: None,
    };
    if o.layout == crate::cli::BenchLayout::KubeletTree {
        kubelet_tree(env, s, o, tag, &server, &offline, &mut st)?;
    } else if s.uses_tidal() {
        st.groups.push(env.tidal_group());
        st.online_group = "tidal/online-critical/server".into();
        // The service declares what it needs: its working set (charged to it: it wrote the
        // file) and room for itself, which v2 protects with memory.low up the chain.
        let request = o.working_set.map(|b| b.saturating_add(SERVER_OWN_BYTES));
        env.tidal_run_requesting("online-critical", "server", request, &server)?;
        for (i, argv) in offline.iter().enumerate() {
            let pid = env.tidal_run("offline", &format!("batch{i}"), argv)?;
            st.offline_pids.push(pid);
        }
        if !offline.is_empty() {
            st.offline_group = Some("tidal/offline".into());
        }
        if s == Scenario::Tidal {
            read_ports(env, &ready, &mut st)?;
            let addr = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .to_string();
            let mut cfg = agent_config(o)?;
            cfg.push_str(&objective_yaml(o, &st, "online-critical/server"));
            let cfg_path = dir.join("agent.yaml");
            std::fs::write(&cfg_path, cfg).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
            let mut c = env.tidal_cmd();
            c.arg("agent")
                .args(["--listen", &addr, "--config"])
                .arg(&cfg_path);
            c.stderr(agent_log(o, tag)?);
            if o.agent_logs.is_some() {
                c.env("TIDAL_LOG", "info");
            }
            let pid = env.spawn_home(c)?;
            super::env::wait_healthz(&addr, &env.stop)?;
            env.adopt_unless_inside(pid)?;
            wait_objective(env, o, &st, tag, &addr);
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
        st.groups
            .push(GroupPath::new(tag).map_err(|e| e.to_string())?);
        let og = env.group(&st.online_group, &on_knobs)?;
        spawn_in(env, &og, &server)?;
        if !offline.is_empty() {
            let name = format!("{tag}/offline");
            let g = env.group(&name, &off_knobs)?;
            for argv in &offline {
                let pid = spawn_offline_in(env, &g, argv)?;
                st.offline_pids.push(pid);
            }
            st.offline_group = Some(name.clone());
            if s == Scenario::QuotaSuppress {
                st.quota = Some(QuotaCtl::start(env, &name, &st.online_group, o.n_cpus)?);
            }
        }
    }
    if st.port == 0 {
        read_ports(env, &ready, &mut st)?;
    }
    Ok(st)
}

/// The server's service port and its `/metrics` port, once it listens.
fn read_ports(env: &BenchEnv, ready: &std::path::Path, st: &mut Setup) -> Result<(), String> {
    st.port = wait_file(env, ready, 15)?
        .trim()
        .parse()
        .map_err(|_| "bad port from the server".to_string())?;
    let mut m = ready.as_os_str().to_owned();
    m.push(".metrics");
    st.metrics_port = std::fs::read_to_string(std::path::PathBuf::from(m))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Ok(())
}

/// The `slo:` section giving the agent its objective on the server's own histogram, over
/// loopback (empty without a target or a metrics port).
fn objective_yaml(o: &Opts, st: &Setup, workload: &str) -> String {
    match (o.slo_target_s, st.metrics_port) {
        (Some(t), Some(mp)) => format!(
            "\nslo:\n  objectives:\n    - workload: {workload}\n      url: http://127.0.0.1:{mp}/metrics\n      metric: {}\n      quantile: 0.99\n      target: {t}\n",
            crate::worker::LATENCY_METRIC
        ),
        _ => String::new(),
    }
}

/// The load starts once the agent has read the objective, as a service is used on a node where
/// the agent already runs: the window holding the service's first requests is then its start,
/// which the agent does not judge.
fn wait_objective(env: &BenchEnv, o: &Opts, st: &Setup, tag: &str, addr: &str) {
    if o.slo_target_s.is_some()
        && st.metrics_port.is_some()
        && !super::env::wait_objective_scraped(addr, &env.stop)
    {
        eprintln!(
            "tidal: {tag}: the agent had not read the service's objective within 3 s; the load starts anyway"
        );
    }
}

/// The agent's config text for the `tidal` scenario: `--agent-config`'s, which must leave the
/// sections the bench sets to it.
fn agent_config(o: &Opts) -> Result<String, String> {
    let text = match &o.agent_config {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => String::new(),
    };
    for section in ["slo:", "kubernetes:"] {
        if (o.slo_target_s.is_some() || section == "kubernetes:")
            && text.lines().any(|l| l.starts_with(section))
        {
            return Err(format!(
                "--agent-config sets '{section}', which the bench sets itself (use --no-slo to give the agent no objective)"
            ));
        }
    }
    Ok(text)
}

/// What the load generator runs: its schedule, the windows it measures, and when the run-queue
/// window opens (after the start, and for which group).
struct Load<'a> {
    sched: &'a Schedule,
    windows: &'a [(u64, u64)],
    runq_from: Option<(Duration, &'a str)>,
}

/// Runs the load generator as a process in the scenario's online group (see `client.rs`); `on_start`
/// gets the instant its schedule started, as `loadgen::run` would give it.
fn client_run(
    env: &mut BenchEnv,
    st: &Setup,
    tidal: bool,
    conns: usize,
    load: Load<'_>,
    on_start: impl FnOnce(Instant),
) -> Result<loadgen::LoadResult, String> {
    let Load {
        sched,
        windows,
        runq_from,
    } = load;
    let n = CLIENTS.fetch_add(1, Ordering::Relaxed);
    let dir = env.work_dir().to_path_buf();
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
        let g = GroupPath::new(&st.online_group).map_err(|e| e.to_string())?;
        spawn_in(env, &g, &argv)?
    };
    let start = wait_file(env, &ready, 20)?;
    let mono: u64 = start
        .trim()
        .parse()
        .map_err(|_| "bad client start time".to_string())?;
    let started = super::client::instant_of(mono);
    on_start(started);
    // The run-queue window opens with the measured window: what came before (the warm-up, and
    // with it the antagonist before the agent reined it in) is read and dropped here.
    let mut runq_from = runq_from.map(|(after, g)| (started + after, g));
    // The client writes its result and exits; wait for the exit (the file is then whole).
    let deadline = Instant::now() + Duration::from_secs_f64(sched.duration_s + 30.0);
    while env.exited(pid).is_none() {
        if let Some((at, g)) = runq_from {
            if Instant::now() >= at {
                let _ = env.runq_since_last(g);
                runq_from = None;
            }
        }
        if env.interrupted() {
            return Err("interrupted".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the load generator did not finish within {:.0} s of its schedule",
                sched.duration_s + 30.0
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    super::client::read_result(&out)
}

static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn teardown(env: &mut BenchEnv, st: Setup) {
    if let Some(q) = st.quota {
        q.stop();
    }
    env.end_scenario(&st.groups);
    if let Some(api) = st.api {
        api.stop();
    }
}

const POD_ONLINE: &str = "0b0e0000-0000-4000-8000-00000000000a";
const POD_OFFLINE: &str = "0b0e0000-0000-4000-8000-00000000000b";
const CTR_ONLINE: &str = "c0";
const CTR_OFFLINE: &str = "c1";
const POD_AGENT: &str = "0b0e0000-0000-4000-8000-00000000000c";
const CTR_AGENT: &str = "c2";
/// What the kubelet gives the agent's DaemonSet pod: shares for a 50m request, and a 500m limit's
/// quota per 100 ms period.
const AGENT_POD_SHARES: u64 = 51;
const AGENT_POD_QUOTA_US: u64 = 50_000;

/// A pod as the apiserver shows it, enough for tidal's pod source.
fn pod_json(uid: &str, name: &str, qos: &str, ctr: &str, offline: bool) -> serde_json::Value {
    let mut annotations = serde_json::Map::new();
    if offline {
        annotations.insert("tidal.io/qos-level".into(), "offline".into());
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "uid": uid, "annotations": annotations,
                     "resourceVersion": "1"},
        "spec": {"nodeName": "bench-node", "containers": [{"name": "main", "image": "bench"}]},
        "status": {"phase": "Running", "qosClass": qos,
                   "containerStatuses": [{"name": "main", "containerID": format!("containerd://{ctr}"),
                                          "image": "bench", "imageID": "", "ready": true, "restartCount": 0}]}
    })
}

/// The kubelet's tree (cgroupfs driver) in the scenario's group: the online server in a Burstable
/// pod with the shares its request gives, offline work in a BestEffort pod under the BestEffort tier
/// (shares 2). `tidal-static` adds what tidal's static settings give pods (pod-level idle); `tidal`
/// runs the agent in pod mode, in a Burstable pod as its DaemonSet gives it, against a stand-in
/// apiserver on loopback, with its objective from the node's config.
fn kubelet_tree(
    env: &mut BenchEnv,
    s: Scenario,
    o: &Opts,
    tag: &str,
    server: &[String],
    offline: &[Vec<String>],
    st: &mut Setup,
) -> Result<(), String> {
    let req = ((0.3 * o.n_cpus as f64 * 1024.0) as u64).max(2);
    let shares = |v: u64| vec![(Knob::CpuWeight, KnobValue::Shares(v))];
    let base = format!("{tag}/kubepods");
    st.groups
        .push(GroupPath::new(tag).map_err(|e| e.to_string())?);
    env.group(tag, &[])?;
    env.group(&base, &[])?;
    // The tier's shares are its pods' requests together, as the kubelet keeps them: the agent's
    // pod (below) is one of them where the agent runs.
    let with_agent = s == Scenario::Tidal && !offline.is_empty();
    let tier = req + if with_agent { AGENT_POD_SHARES } else { 0 };
    env.group(&format!("{base}/burstable"), &shares(tier))?;
    let pod_on = format!("{base}/burstable/pod{POD_ONLINE}");
    env.group(&pod_on, &shares(req))?;
    let ctr_on = format!("{pod_on}/{CTR_ONLINE}");
    let og = env.group(&ctr_on, &shares(req))?;
    spawn_in(env, &og, server)?;
    st.online_group = ctr_on;
    read_ports(env, &env.work_dir().join(tag).join("port"), st)?;
    if offline.is_empty() {
        return Ok(());
    }
    env.group(&format!("{base}/besteffort"), &shares(2))?;
    let pod_off = format!("{base}/besteffort/pod{POD_OFFLINE}");
    let mut pod_knobs = shares(2);
    if s == Scenario::TidalStatic {
        // After the shares: the kernel refuses shares on an idle group.
        pod_knobs.push((Knob::CpuIdle, KnobValue::Bool(true)));
    }
    env.group(&pod_off, &pod_knobs)?;
    let g = env.group(&format!("{pod_off}/{CTR_OFFLINE}"), &shares(2))?;
    for argv in offline {
        let pid = spawn_offline_in(env, &g, argv)?;
        st.offline_pids.push(pid);
    }
    st.offline_group = Some(pod_off);
    if s == Scenario::Tidal {
        let api = tidal_kube::mock::MockApi::start(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "bench-node"},
            "status": {"capacity": {"cpu": o.n_cpus.to_string(), "memory": "1Gi"},
                       "allocatable": {"cpu": o.n_cpus.to_string(), "memory": "1Gi"}}
        }))
        .map_err(|e| format!("stand-in apiserver: {e}"))?;
        let online = pod_json(POD_ONLINE, "online", "Burstable", CTR_ONLINE, false);
        let offline_pod = pod_json(POD_OFFLINE, "offline", "BestEffort", CTR_OFFLINE, true);
        api.with(|x| x.pods = vec![online, offline_pod]);
        let dir = env.work_dir().join(tag);
        let kc = dir.join("kubeconfig");
        std::fs::write(&kc, api.kubeconfig()).map_err(|e| format!("{}: {e}", kc.display()))?;
        let root = env
            .layout
            .primary()
            .and_then(|r| {
                r.root_dir
                    .strip_prefix(&r.hierarchy.mount)
                    .ok()
                    .map(|p| p.display().to_string())
            })
            .ok_or("the sandbox has no cpu hierarchy")?;
        let mut cfg = agent_config(o)?;
        // The objective comes from the node's config, not the pod's annotations: the stand-in
        // pod's IP would be loopback, which the agent never fetches for a pod.
        cfg.push_str(&objective_yaml(o, st, "bench/online"));
        cfg.push_str(&format!(
            "\nkubernetes:\n  node_name: bench-node\n  kubelet_cgroup_root: /{root}/{tag}\n  cgroup_driver: cgroupfs\n  cpu_manager_state: {}\n  events: false\n",
            dir.join("no-cpu-manager-state").display()
        ));
        let cfg_path = dir.join("agent.yaml");
        std::fs::write(&cfg_path, cfg).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .to_string();
        let mut c = env.tidal_cmd();
        c.args([
            "agent",
            "--source",
            "kubernetes",
            "--listen",
            &addr,
            "--config",
        ])
        .arg(&cfg_path)
        .env("KUBECONFIG", &kc)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stderr(agent_log(o, tag)?);
        if o.agent_logs.is_some() {
            c.env("TIDAL_LOG", "info");
        }
        // The agent where its DaemonSet puts it (deploy/daemonset.yaml): a Burstable pod beside
        // the online one, with the shares of its 50m request and the quota of its 500m limit.
        let agent_knobs = [
            (Knob::CpuWeight, KnobValue::Shares(AGENT_POD_SHARES)),
            (
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us: Some(AGENT_POD_QUOTA_US),
                    period_us: 100_000,
                },
            ),
        ];
        let agent_pod = format!("{base}/burstable/pod{POD_AGENT}");
        env.group(&agent_pod, &agent_knobs)?;
        let ag = env.group(&format!("{agent_pod}/{CTR_AGENT}"), &agent_knobs)?;
        env.spawn_placed(c, Some(&ag))?;
        st.api = Some(api);
        super::env::wait_healthz(&addr, &env.stop)?;
        // Measure only once the agent has the pod in hand (its first settings are written).
        let pod = Target::Tidal(
            GroupPath::new(&format!("{base}/besteffort/pod{POD_OFFLINE}"))
                .map_err(|e| e.to_string())?,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while !matches!(
            env.layout.read_knob(&pod, Knob::CpuIdle),
            Ok(KnobValue::Bool(true))
        ) {
            if Instant::now() > deadline || env.interrupted() {
                return Err("the agent did not take the offline pod within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_objective(env, o, st, tag, &addr);
    }
    Ok(())
}

/// Fails the run if an offline process ended before the measurement did: the antagonist failed.
fn check_offline_alive(env: &mut BenchEnv, st: &Setup) -> Result<(), String> {
    for pid in &st.offline_pids {
        if let Some(status) = env.exited(*pid) {
            return Err(format!(
                "the offline workload (pid {pid}) ended early with {status}: check --offline-cmd"
            ));
        }
    }
    Ok(())
}

/// Koordinator-style CFS-quota suppression of the offline group, once a second: the allowance is
/// CPUs × 65% − online used − system used (at least 2 ms per period). The first write is the formula
/// itself; later a lower allowance is cut at once and a higher one approached by at most 10% of the
/// machine per round; changes under 1% are skipped.
struct QuotaCtl {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// (when, quota in force in CPUs, target in CPUs) per round.
    pub log: Arc<Mutex<Vec<(Instant, f64, f64)>>>,
}

/// The next quota (in CPUs) from the one in force (None before the first write) and the target.
pub fn quota_step(cur: Option<f64>, target: f64, n: f64) -> Option<f64> {
    let next = match cur {
        None => target,
        Some(c) if target < c => target,
        Some(c) => target.min(c + 0.1 * n),
    };
    match cur {
        Some(c) if (next - c).abs() / n < 0.01 => None,
        _ => Some(next),
    }
}

impl QuotaCtl {
    fn start(env: &BenchEnv, offline: &str, online: &str, n: usize) -> Result<QuotaCtl, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut act =
            Actuator::new(env.layout.clone(), env.state_dir(), false).map_err(|e| e.to_string())?;
        let off = Target::Tidal(GroupPath::new(offline).map_err(|e| e.to_string())?);
        let on = Target::Tidal(GroupPath::new(online).map_err(|e| e.to_string())?);
        let (mut node_r, mut on_r, mut off_r) = (
            env.layout.node_cpu_usage(),
            env.layout.cpu_usage(&on),
            env.layout.cpu_usage(&off),
        );
        let (s2, l2) = (Arc::clone(&stop), Arc::clone(&log));
        let handle = std::thread::spawn(move || {
            let period = 100_000u64;
            let nf = n as f64;
            let mut cur: Option<f64> = None;
            let mut prev: Option<(Instant, u64, u64, u64)> = None;
            let read = |r: &mut Option<tidal_cgroupfs::Reader<u64>>| {
                r.as_mut().and_then(|r| r.read().ok())
            };
            while !s2.load(Ordering::Relaxed) {
                let now = Instant::now();
                let reading = match (read(&mut node_r), read(&mut on_r), read(&mut off_r)) {
                    (Some(a), Some(b), Some(c)) => Some((a, b, c)),
                    _ => None,
                };
                if let (Some((t, pn, pon, poff)), Some((node, on_ns, off_ns))) = (prev, reading) {
                    let dt = now.duration_since(t).as_nanos().max(1) as f64;
                    let online = on_ns.saturating_sub(pon) as f64 / dt;
                    let offline = off_ns.saturating_sub(poff) as f64 / dt;
                    let system = (node.saturating_sub(pn) as f64 / dt - online - offline).max(0.0);
                    let target = (nf * 0.65 - online - system).max(0.02);
                    if let Some(next) = quota_step(cur, target, nf) {
                        let q = KnobValue::Quota {
                            quota_us: Some(((next * period as f64) as u64).max(2000)),
                            period_us: period,
                        };
                        if act.set(&off, Knob::CpuMax, &q).is_ok() {
                            cur = Some(next);
                        }
                    }
                    if let Ok(mut l) = l2.lock() {
                        l.push((now, cur.unwrap_or(nf), target));
                    }
                }
                prev = reading.map(|(a, b, c)| (now, a, b, c));
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

/// Counters at one edge of the measured window; a counter that could not be read is None.
#[derive(Clone, Copy, Default)]
struct Mark {
    units: Option<u64>,
    offline_ns: Option<u64>,
    online_ns: Option<u64>,
    node_ns: Option<u64>,
    /// The online server's major faults so far.
    online_faults: Option<u64>,
    steal_ms: Option<u64>,
    at: Option<Instant>,
    /// When the window should have opened (first edge only).
    opened: Option<Instant>,
}

/// Per-second rate of a counter between two marks (None if either edge is missing or it went back).
fn per_s(a: Option<u64>, b: Option<u64>, dt: f64, scale: f64) -> Option<f64> {
    Some(grew(a, b)? / scale / dt)
}

/// How much a counter grew between two reads (None if either is missing or it went back).
fn grew(a: Option<u64>, b: Option<u64>) -> Option<f64> {
    Some(b?.checked_sub(a?)? as f64)
}

const WINDOW_MISSED: &str = "the measurement window was missed";

/// Whether a run's window lost more to the host than `limit` (ms): unreadable steal is not over.
fn steal_over(stolen_ms: Option<f64>, limit: Option<f64>) -> bool {
    stolen_ms.zip(limit).is_some_and(|(s, l)| s > l)
}

/// One measured run of scenario `s`: run again once if the bench missed its measurement window,
/// and once (apart from that) if the host took more than `--rerun-steal-ms` of its window.
pub fn run_once(
    env: &mut BenchEnv,
    s: Scenario,
    o: &Opts,
    round: usize,
) -> Result<RunResult, String> {
    let mut tries = 0;
    let mut missed = false;
    let mut stolen = None;
    loop {
        tries += 1;
        let tag = format!("r{round}-{}-{tries}", s.name());
        let st = setup(env, s, o, &tag, true)?;
        let result = measure(env, s, o, round, &st);
        let held = crate::worker::mem_available();
        teardown(env, st);
        let released = held
            .zip(crate::worker::mem_available())
            .map(|(h, a)| a.saturating_sub(h));
        let result = result.map(|mut r| {
            r.released_bytes = released;
            r.rerun_for_steal_ms = stolen;
            r
        });
        match result {
            Err(e) if e.starts_with(WINDOW_MISSED) && !missed => {
                missed = true;
                eprintln!(
                    "tidal: {} (round {}): {e}; running it again",
                    s.name(),
                    round + 1
                );
            }
            Ok(r) if stolen.is_none() && steal_over(r.host_steal_ms, o.rerun_steal_ms) => {
                eprintln!(
                    "tidal: {} (round {}): the host took {:.0} ms of CPU time in the window (over {:.0} ms); running it again",
                    s.name(),
                    round + 1,
                    r.host_steal_ms.unwrap_or(0.0),
                    o.rerun_steal_ms.unwrap_or(0.0)
                );
                stolen = r.host_steal_ms;
            }
            r => return r,
        }
    }
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
        seed: o.seed.wrapping_add(round as u64),
    };
    let warm_ns = (o.warmup_s * 1e9) as u64;
    let end_ns = (total * 1e9) as u64;
    let marks: Arc<Mutex<(Mark, Mark)>> = Arc::new(Mutex::new((Mark::default(), Mark::default())));
    let m2 = Arc::clone(&marks);
    let reports = st.reports.clone();
    // Start the run-queue window (the bench's own BPF reader, when it loads).
    let _ = env.runq_since_last(&st.online_group);
    let reader = |g: Option<&str>| {
        g.and_then(|g| GroupPath::new(g).ok())
            .and_then(|g| env.layout.cpu_usage(&Target::Tidal(g)))
    };
    let mut off_r = reader(st.offline_group.as_deref());
    let mut on_r = reader(Some(&st.online_group));
    let mut node_r = env.layout.node_cpu_usage();
    // OOM kills over the whole run (warm-up included: a kill then counts too); major faults over
    // the measured window only, as CPU time is, so the server's start-up and what an earlier
    // scenario left evicted do not count.
    // OOM kills read down each group's tree (v1 counts each group alone).
    let kills = |layout: &tidal_cgroupfs::Layout, g: Option<&str>| {
        g.and_then(|g| GroupPath::new(g).ok())
            .and_then(|g| layout.oom_kills(&Target::Tidal(g)))
            .and_then(Result::ok)
    };
    let mut faults_r = GroupPath::new(&st.online_group)
        .ok()
        .and_then(|g| env.layout.major_faults(&Target::Tidal(g)));
    let kills0 = (
        kills(&env.layout, Some(&st.online_group)),
        kills(&env.layout, st.offline_group.as_deref()),
    );
    let runq_group = st.online_group.clone();
    let mut mark_now = move || {
        let read =
            |r: &mut Option<tidal_cgroupfs::Reader<u64>>| r.as_mut().and_then(|r| r.read().ok());
        let online_faults = faults_r.as_mut().and_then(|r| r.read().ok());
        let units: Option<u64> = if reports.is_empty() {
            None
        } else {
            reports.iter().map(|p| read_report(p)).sum()
        };
        Mark {
            units,
            offline_ns: read(&mut off_r),
            online_ns: read(&mut on_r),
            node_ns: read(&mut node_r),
            online_faults,
            steal_ms: crate::env::host_steal_ms(),
            at: Some(Instant::now()),
            opened: None,
        }
    };
    let mut marker = None;
    let r = client_run(
        env,
        st,
        s.uses_tidal(),
        o.connections,
        Load {
            sched: &sched,
            windows: &[(warm_ns, end_ns)],
            runq_from: Some((Duration::from_nanos(warm_ns), st.online_group.as_str())),
        },
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
                let mut a = mark_now();
                a.opened = Some(start + Duration::from_secs_f64(w));
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
    let kills1 = (
        kills(&env.layout, Some(&st.online_group)),
        kills(&env.layout, st.offline_group.as_deref()),
    );
    let online_runq = env.runq_since_last(&runq_group);
    // A tree that lost a killed group counts less than before: no kill is invented.
    let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    let (a, b) = marks
        .lock()
        .map(|m| *m)
        .map_err(|_| "marks poisoned".to_string())?;
    let memory = MemoryResult {
        online_major_faults: b
            .online_faults
            .zip(a.online_faults)
            .and_then(|(b, a)| b.checked_sub(a)),
        oom_kills_online: delta(kills0.0, kills1.0),
        oom_kills_offline: delta(kills0.1, kills1.1),
    };
    // A memory antagonist the OOM killer took is a result, not a failed run.
    if memory.oom_kills_offline.unwrap_or(0) == 0 {
        check_offline_alive(env, st)?;
    }
    // The window's edges must be as far apart as the window: a bench thread held off the CPU past
    // both edges would otherwise read the same counters twice and report zeros.
    let dt = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => return Err("the measurement window was not marked".into()),
    };
    if dt < 0.5 * o.duration_s {
        let late = match (a.at, a.opened) {
            (Some(x), Some(s)) => format!(
                "; the first edge came {:.0} ms after the window opened",
                x.saturating_duration_since(s).as_secs_f64() * 1000.0
            ),
            _ => String::new(),
        };
        return Err(format!(
            "{WINDOW_MISSED}: its edges were {:.0} ms apart, not {:.0} ms{late}",
            dt * 1000.0,
            o.duration_s * 1000.0
        ));
    }
    let n = o.n_cpus as f64;
    let Some(latency) = r.windows.first().map(|w| summarize(&w.hist)) else {
        return Err("the load generator returned no measurement window".into());
    };
    Ok(RunResult {
        scenario: s,
        round,
        latency,
        sent: r.sent,
        lost: r.lost,
        offline_units_per_s: per_s(a.units, b.units, dt, 1.0),
        offline_cpus: if st.offline_group.is_some() {
            per_s(a.offline_ns, b.offline_ns, dt, 1e9)
        } else {
            Some(0.0)
        },
        online_cpus: per_s(a.online_ns, b.online_ns, dt, 1e9),
        utilisation: per_s(a.node_ns, b.node_ns, dt, 1e9).map(|c| (c / n).min(1.0)),
        memory,
        online_runq_p99_us: online_runq
            .as_ref()
            .and_then(|h| h.quantile_ns(0.99))
            .map(|ns| ns / 1e3),
        released_bytes: None,
        host_steal_ms: grew(a.steal_ms, b.steal_ms),
        rerun_for_steal_ms: None,
    })
}

/// The highest rate the bench derives from a calibration (the measured rate is bounded the same).
pub const MAX_DERIVED_RATE: f64 = 200_000.0;

/// CPU seconds the server spends per request, measured alone at a modest rate.
pub fn calibrate(env: &mut BenchEnv, o: &Opts) -> Result<f64, String> {
    let st = setup(env, Scenario::Alone, o, "calibrate", false)?;
    // Within what the load generator takes (`--work-us 1` on many CPUs would ask past it).
    let probe_rate =
        (0.1 * o.n_cpus as f64 / (o.work_us as f64 * 1e-6)).clamp(100.0, MAX_DERIVED_RATE);
    let sched = Schedule::constant_rate(Arrivals::Constant, probe_rate, 2.0);
    let before = env.usage_ns(&st.online_group);
    let r = client_run(
        env,
        &st,
        false,
        o.connections,
        Load {
            sched: &sched,
            windows: &[(0, u64::MAX)],
            runq_from: None,
        },
        |_| {},
    );
    let after = env.usage_ns(&st.online_group);
    teardown(env, st);
    let r = r.map_err(|e| format!("calibration load: {e}"))?;
    if r.received == 0 {
        return Err("calibration: the server answered nothing".into());
    }
    let used = match (before, after) {
        (Some(b), Some(a)) if a > b => a - b,
        _ => return Err("calibration: cannot read the server group's CPU time".into()),
    };
    Ok((used as f64 / 1e9) / r.received as f64)
}

/// Alone probes behind the alone p99, and how many where the first ones disagree.
pub const ALONE_PROBES: usize = 3;
pub const ALONE_PROBES_MAX: usize = 5;
/// The first probes agree when their highest is within this of their lowest; else two more are
/// taken: a host's stall in two probes of three once made the objective twice the rounds' own
/// alone p99.
pub const PROBE_SPREAD: f64 = 1.25;

/// The online p99 alone at the calibrated rate (seconds), once per probe: their median is the base
/// of the `tidal` scenario's latency objective and of settling.
pub fn alone_probes(env: &mut BenchEnv, o: &Opts) -> Result<Vec<f64>, String> {
    let mut probes = Vec::new();
    let mut want = ALONE_PROBES;
    while probes.len() < want {
        probes.push(probe_p99(
            env,
            o,
            &format!("slo-target-{}", probes.len()),
            o.warmup_s,
            o.duration_s.max(3.0),
        )?);
        if probes.len() == ALONE_PROBES && !probes_agree(&probes) {
            want = ALONE_PROBES_MAX;
        }
    }
    Ok(probes)
}

/// Whether probes agree: their highest within [`PROBE_SPREAD`] of their lowest (none, or one not
/// above 0, do not).
pub fn probes_agree(v: &[f64]) -> bool {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    lo > 0.0 && lo.is_finite() && hi / lo <= PROBE_SPREAD
}

/// The online p99 alone over `secs` after `warmup_s` (seconds).
fn probe_p99(
    env: &mut BenchEnv,
    o: &Opts,
    tag: &str,
    warmup_s: f64,
    secs: f64,
) -> Result<f64, String> {
    let st = setup(env, Scenario::Alone, o, tag, false)?;
    let secs = warmup_s + secs;
    let sched = Schedule::constant_rate(o.arrivals, o.rate, secs);
    let warm_ns = (warmup_s * 1e9) as u64;
    let r = client_run(
        env,
        &st,
        false,
        o.connections,
        Load {
            sched: &sched,
            windows: &[(warm_ns, (secs * 1e9) as u64)],
            runq_from: None,
        },
        |_| {},
    );
    teardown(env, st);
    let r = r.map_err(|e| format!("alone p99: {e}"))?;
    let h = &r.windows.first().ok_or("alone p99: no window")?.hist;
    if h.is_empty() {
        return Err("alone p99: no request answered".into());
    }
    Ok(h.value_at_quantile(0.99) as f64 / 1e9)
}

/// A run that gave back at least this much memory is followed by a settling wait.
pub const SETTLE_AFTER_BYTES: u64 = 1 << 30;

/// How a settling wait ended.
#[derive(Debug, Clone, Serialize)]
pub struct Settle {
    /// The run it followed.
    pub after: Scenario,
    pub round: usize,
    pub released_bytes: u64,
    pub waited_s: f64,
    /// The last probe's p99, ms.
    pub last_p99_ms: Option<f64>,
    /// False when the machine was still disturbed at `--settle-max`.
    pub settled: bool,
}

/// Quiet probes in a row that end a settling wait.
pub const SETTLE_QUIET_PROBES: u32 = 3;

/// Waits until the online service alone is back to `base_p99_s` (its p99 within 2× of it) after a
/// run that released a lot of memory, probing with 2-s alone runs for at most `max_s` seconds.
/// On a virtual machine the hypervisor's handling of freed memory (free page reporting) can slow
/// the guest for a minute after a large release, while nothing inside the guest shows it; the next
/// run would otherwise inherit it. The slowdown comes in bursts (stalls of tens of ms, then quiet
/// seconds), so one quiet probe proves little: the wait ends after `SETTLE_QUIET_PROBES` in a row.
pub fn settle(
    env: &mut BenchEnv,
    o: &Opts,
    base_p99_s: f64,
    max_s: f64,
) -> Result<(f64, Option<f64>, bool), String> {
    let start = Instant::now();
    let mut last = None;
    let mut quiet = 0;
    loop {
        // A probe that fails (no answer in time) is one more sign of a disturbed machine.
        let p = match probe_p99(env, o, "settle", 0.5, 1.5) {
            Ok(p) => Some(p),
            Err(e) if env.interrupted() => return Err(e),
            Err(_) => None,
        };
        last = p.map(|p| p * 1e3).or(last);
        let waited = start.elapsed().as_secs_f64();
        quiet = settle_count(quiet, p, base_p99_s);
        if quiet >= SETTLE_QUIET_PROBES {
            return Ok((waited, last, true));
        }
        if waited >= max_s {
            return Ok((waited, last, false));
        }
    }
}

/// Quiet probes in a row after one more probe (None: it failed): one over 2× the base restarts.
fn settle_count(quiet: u32, p99_s: Option<f64>, base_p99_s: f64) -> u32 {
    if p99_s.is_some_and(|p| p <= 2.0 * base_p99_s) {
        quiet.saturating_add(1)
    } else {
        0
    }
}

/// What the step watcher saw of offline at one moment: its cpuset and whether it was frozen.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineState {
    pub cpus: Option<CpuSet>,
    pub frozen: bool,
}

impl OfflineState {
    /// From the watched files' contents: the cpuset first, then freeze files (v2 `1`, v1 `FROZEN`).
    /// An empty cpuset is none written (v2: every CPU), not zero CPUs.
    pub fn parse(cpuset: Option<&str>, freeze: &[String]) -> OfflineState {
        OfflineState {
            cpus: cpuset
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .and_then(|c| c.parse().ok()),
            frozen: freeze
                .iter()
                .any(|f| matches!(f.trim(), "1" | "FROZEN" | "FREEZING")),
        }
    }

    /// Offline is out of the CPUs online needs: frozen, or on at most `max_cpus` CPUs.
    fn out_of_the_way(&self, max_cpus: usize) -> bool {
        self.frozen || self.cpus.as_ref().is_some_and(|c| c.len() <= max_cpus)
    }

    fn show(&self) -> String {
        let cpus = self
            .cpus
            .as_ref()
            .map_or("?".to_string(), |c| c.to_string());
        if self.frozen {
            format!("[{cpus}] frozen")
        } else {
            format!("[{cpus}]")
        }
    }
}

/// How long offline must stay out of the way for a change to count as the reaction: a duty
/// cycle's period (ten 100-ms ticks), so its frozen part is not one.
pub const STEP_HOLD_MS: f64 = 1000.0;

/// The step's reaction: the time of the first change after which offline was out of the CPUs the
/// post-step load needs (on at most `max_cpus` CPUs, or frozen) and stayed so for [`STEP_HOLD_MS`]
/// or to the end of the window (`end_ms`). `Err` with the last state when offline changed but never
/// got there; None when nothing changed (nothing to time).
pub fn step_reaction(
    changes: &[(f64, OfflineState)],
    max_cpus: usize,
    end_ms: f64,
) -> Option<Result<f64, OfflineState>> {
    let (_, last) = changes.last()?;
    let held_from = |i: usize| {
        let until = changes[i..]
            .iter()
            .find(|(_, s)| !s.out_of_the_way(max_cpus))
            .map_or(end_ms, |(t, _)| *t);
        until - changes[i].0 >= STEP_HOLD_MS.min(end_ms - changes[i].0)
    };
    Some(
        (0..changes.len())
            .find(|&i| changes[i].1.out_of_the_way(max_cpus) && held_from(i))
            .map(|i| changes[i].0)
            .ok_or_else(|| last.clone()),
    )
}

/// The changes as a short timeline for the report ("48 ms [6-15], 1210 ms [9-15] frozen").
fn timeline(changes: &[(f64, OfflineState)]) -> String {
    const SHOWN: usize = 6;
    let mut parts: Vec<String> = changes
        .iter()
        .take(SHOWN)
        .map(|(t, s)| format!("{t:.0} ms {}", s.show()))
        .collect();
    if changes.len() > SHOWN {
        parts.push(format!("… {} more", changes.len() - SHOWN));
    }
    parts.join(", ")
}

/// Milliseconds from the step until the quota in force first met the target computed after the step;
/// None if the quota never changed after the step or never got there.
pub fn quota_reaction(log: &[(Instant, f64, f64)], step: Instant, n: f64) -> Option<f64> {
    let before = log
        .iter()
        .rfind(|(t, _, _)| *t < step)
        .map(|(_, cur, _)| *cur);
    log.iter()
        .filter(|(t, _, _)| *t >= step)
        .find(|(_, cur, target)| {
            before.is_none_or(|b| (cur - b).abs() >= 0.01 * n) && (cur - target).abs() < 0.01 * n
        })
        .map(|(t, _, _)| t.duration_since(step).as_secs_f64() * 1000.0)
}

/// Online rate stepping from 10% to 60% of the machine; how fast offline gets out of the way.
/// `run` numbers the step runs (its own arrivals, its own agent log).
pub fn run_step(
    env: &mut BenchEnv,
    s: Scenario,
    o: &Opts,
    cost_s: f64,
    run: usize,
) -> Result<StepResult, String> {
    let tag = if run == 0 {
        format!("step-{}", s.name())
    } else {
        format!("step{}-{}", run + 1, s.name())
    };
    let st = setup(env, s, o, &tag, true)?;
    let n = o.n_cpus as f64;
    let (lo, hi) = (
        (0.1 * n / cost_s).min(MAX_DERIVED_RATE),
        (0.6 * n / cost_s).min(MAX_DERIVED_RATE),
    );
    let (pre, post) = (3.0, 2.5);
    let step_at = o.warmup_s + pre;
    let sched = Schedule {
        arrivals: o.arrivals,
        segments: vec![(0.0, lo), (step_at, hi)],
        duration_s: step_at + post,
        seed: o.seed.wrapping_add(1000 + run as u64),
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
    // v1's freezer.state, or cgroup.freeze where the freezer is v2's; whichever is missing reads as nothing.
    let freeze_dir = env.dir("freezer", "tidal/offline/offline");
    let freeze = freeze_dir
        .as_ref()
        .map(|d| d.join(tidal_cgroupfs::v1::freezer::STATE));
    let freeze_v2 = freeze_dir.map(|d| d.join(tidal_cgroupfs::v2::core::FREEZE));
    let unified_freeze = env.layout.unified().map(|u| {
        u.dir(&GroupPath::new("tidal/offline/offline").unwrap_or_default())
            .join(tidal_cgroupfs::v2::core::FREEZE)
    });
    let changes: Arc<Mutex<Vec<(f64, OfflineState)>>> = Arc::new(Mutex::new(Vec::new()));
    let c2 = Arc::clone(&changes);
    let watch_tidal = s == Scenario::Tidal;
    let mut watcher = None;
    let mut step_instant = None;
    let steal0 = crate::env::host_steal_ms();
    let r = client_run(
        env,
        &st,
        s.uses_tidal(),
        o.connections,
        Load {
            sched: &sched,
            windows: &windows,
            runq_from: None,
        },
        |start| {
            step_instant = Some(start + Duration::from_secs_f64(step_at));
            if watch_tidal {
                // On pure v2 the freezer's dir is the unified one: read each file once.
                let mut freezes: Vec<PathBuf> = [freeze, freeze_v2, unified_freeze]
                    .into_iter()
                    .flatten()
                    .collect();
                freezes.sort();
                freezes.dedup();
                watcher = Some(std::thread::spawn(move || {
                    let read = || {
                        let cpus = cpuset
                            .as_ref()
                            .and_then(|f| std::fs::read_to_string(f).ok());
                        let frozen: Vec<String> = freezes
                            .iter()
                            .filter_map(|f| std::fs::read_to_string(f).ok())
                            .collect();
                        OfflineState::parse(cpus.as_deref(), &frozen)
                    };
                    let step = start + Duration::from_secs_f64(step_at);
                    let mut last = read();
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
                                c.push((t, now.clone()));
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
    let host_steal_ms = grew(steal0, crate::env::host_steal_ms());
    let quota_log = st
        .quota
        .as_ref()
        .map(|q| q.log.lock().map(|l| l.clone()).unwrap_or_default());
    teardown(env, st);
    let r = r.map_err(|e| format!("load generator: {e}"))?;
    let (reaction_ms, note) = match s {
        Scenario::Tidal => {
            let c = changes.lock().map(|c| c.clone()).unwrap_or_default();
            // Offline is out of online's way once it holds no more than the CPUs the 60% load leaves
            // (at least one: confinement never takes offline's last CPU, only a freeze does). A
            // CPU-time cap (cpu.max) is not watched.
            let max_cpus = o.n_cpus.saturating_sub((0.6 * n).ceil() as usize).max(1);
            match step_reaction(&c, max_cpus, post * 1000.0) {
                Some(Ok(ms)) => (
                    Some(ms),
                    format!(
                        "offline on at most {max_cpus} CPUs or frozen after {ms:.0} ms; changes: {}",
                        timeline(&c)
                    ),
                ),
                // Never out of the way within the window: the window is a lower bound, not n/a.
                Some(Err(last)) => (
                    Some(post * 1000.0),
                    format!(
                        "offline never got down to {max_cpus} CPUs or frozen within {:.0} ms (counted as that; last {}); changes: {}",
                        post * 1000.0,
                        last.show(),
                        timeline(&c)
                    ),
                ),
                None => (
                    None,
                    "no change after the step: nothing to time (n/a)".to_string(),
                ),
            }
        }
        Scenario::QuotaSuppress => {
            let log = quota_log.unwrap_or_default();
            match step_instant.and_then(|step| quota_reaction(&log, step, n)) {
                Some(ms) => (Some(ms), "quota reached its post-step target".into()),
                None => (
                    None,
                    format!(
                        "the quota did not reach its post-step target within {:.0} ms (n/a)",
                        post * 1000.0
                    ),
                ),
            }
        }
        _ => (
            None,
            "static settings: no dynamic reaction (n/a)".to_string(),
        ),
    };
    if r.windows.len() < 2 {
        return Err("the load generator returned fewer windows than asked".into());
    }
    Ok(StepResult {
        scenario: s,
        run,
        reaction_ms,
        note,
        before: summarize(&r.windows[0].hist),
        after_first_second: summarize(&r.windows[1].hist),
        host_steal_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_run_again_only_for_steal_over_the_limit_and_the_default_is_a_hundredth_of_the_window(
    ) {
        // 5 s on 2 CPUs: 10 s of CPU time, 100 ms of it.
        assert_eq!(rerun_steal_ms(None, 5.0, 2), Some(100.0));
        assert_eq!(rerun_steal_ms(Some(250.0), 5.0, 2), Some(250.0));
        assert_eq!(rerun_steal_ms(Some(0.0), 5.0, 2), None);
        assert!(steal_over(Some(110.0), Some(100.0)));
        assert!(!steal_over(Some(100.0), Some(100.0)));
        // Unreadable steal, or no limit: never run again.
        assert!(!steal_over(None, Some(100.0)));
        assert!(!steal_over(Some(1e6), None));
    }

    #[test]
    fn the_memory_antagonist_is_sized_past_free_memory_and_stops_at_a_margin_from_ram() {
        const GIB: u64 = 1 << 30;
        // 5% of RAM, never under 512 MiB.
        assert_eq!(oom_margin(24 * GIB), 24 * GIB / 20);
        assert_eq!(oom_margin(4 * GIB), 512 << 20);
        assert_eq!(oom_margin(0), 512 << 20);
        assert_eq!(oom_margin(u64::MAX), u64::MAX / 20);
        // Past what is available, unless told; all of RAM when availability is unknown.
        assert_eq!(memory_target(None, Some(10 * GIB), 24 * GIB), 11 * GIB);
        assert_eq!(memory_target(Some(GIB), Some(10 * GIB), 24 * GIB), GIB);
        assert_eq!(memory_target(None, None, 24 * GIB), 24 * GIB);
        assert_eq!(memory_target(None, Some(u64::MAX), 1), u64::MAX);
        // The page-cache file outgrows RAM, without overflow.
        assert_eq!(pagecache_bytes(24 * GIB), 25 * GIB);
        assert_eq!(pagecache_bytes(u64::MAX), u64::MAX);
    }

    fn state(cpus: &str, frozen: bool) -> OfflineState {
        OfflineState {
            cpus: cpus.parse().ok(),
            frozen,
        }
    }

    #[test]
    fn settling_needs_quiet_probes_in_a_row() {
        let base = 0.4e-3;
        let mut quiet = 0;
        // quiet, quiet, a burst (restarts), a failed probe (restarts), then three quiet ones.
        let probes = [
            Some(0.5e-3),
            Some(0.7e-3),
            Some(31e-3),
            None,
            Some(0.4e-3),
            Some(0.8e-3),
        ];
        let mut counts = Vec::new();
        for p in probes {
            quiet = settle_count(quiet, p, base);
            counts.push(quiet);
        }
        assert_eq!(counts, [1, 2, 0, 0, 1, 2]);
        quiet = settle_count(quiet, Some(0.3e-3), base);
        assert_eq!(quiet, SETTLE_QUIET_PROBES);
        assert_eq!(settle_count(u32::MAX, Some(0.3e-3), base), u32::MAX);
    }

    #[test]
    fn step_reaction_is_timed_to_offline_leaving_the_cpus_the_load_needs() {
        // 16 CPUs, 60% load: offline must get down to 6 CPUs. A first shrink to 8 is not enough,
        // and a later ladder step (one CPU less) is not the reaction either.
        let c = vec![
            (40.0, state("8-15", false)),
            (130.0, state("10-15", false)),
            (2090.0, state("11-15", false)),
        ];
        assert_eq!(step_reaction(&c, 6, 2500.0), Some(Ok(130.0)));
        // Freezing gets offline out of the way whatever its cpuset.
        let c = vec![(12.0, state("0-15", true)), (900.0, state("10-15", false))];
        assert_eq!(step_reaction(&c, 6, 2500.0), Some(Ok(12.0)));
        // A brief freeze (a duty cycle's) is not the reaction; the lasting one after it is.
        let c = vec![
            (10.0, state("0-15", true)),
            (60.0, state("0-15", false)),
            (300.0, state("0-15", true)),
        ];
        assert_eq!(step_reaction(&c, 6, 2500.0), Some(Ok(300.0)));
        // A duty cycle's frozen half (500 ms of every second) is not either.
        let c = vec![
            (20.0, state("0-15", true)),
            (520.0, state("0-15", false)),
            (1020.0, state("0-15", true)),
            (1520.0, state("0-15", false)),
        ];
        assert_eq!(
            step_reaction(&c, 6, 2500.0),
            Some(Err(state("0-15", false)))
        );
        // A change in the window's last 100 ms counts if it lasts to the end.
        assert_eq!(
            step_reaction(&[(2450.0, state("12-15", false))], 6, 2500.0),
            Some(Ok(2450.0))
        );
        // Changes that never get there: the last state, not a time.
        let c = vec![(50.0, state("4-15", false))];
        assert_eq!(
            step_reaction(&c, 6, 2500.0),
            Some(Err(state("4-15", false)))
        );
        // Nothing changed: nothing to time, not "0 ms".
        assert_eq!(step_reaction(&[], 6, 2500.0), None);
    }

    #[test]
    fn offline_state_reads_v1_and_v2_freeze_files() {
        let s = OfflineState::parse(Some("2-3\n"), &["THAWED\n".into(), "1\n".into()]);
        assert_eq!(s, state("2-3", true));
        let s = OfflineState::parse(Some("garbage"), &["FROZEN\n".into()]);
        assert_eq!(s, state("x", true));
        assert_eq!(OfflineState::parse(None, &["0".into()]), state("x", false));
        // v2's unwritten cpuset (every CPU) is not zero CPUs.
        assert_eq!(OfflineState::parse(Some("\n"), &[]), state("x", false));
        assert!(!state("x", false).out_of_the_way(1));
        assert_eq!(state("10-15", true).show(), "[10-15] frozen");
        let many: Vec<_> = (0..8).map(|i| (f64::from(i), state("1", false))).collect();
        assert!(timeline(&many).ends_with("… 2 more"), "{}", timeline(&many));
    }

    #[test]
    fn quota_controller_cuts_at_once_and_ramps_up_slowly() {
        // First write: the formula itself.
        assert_eq!(quota_step(None, 0.3, 2.0), Some(0.3));
        // Lower target: at once.
        assert_eq!(quota_step(Some(1.3), 0.2, 2.0), Some(0.2));
        // Higher target: at most 10% of the machine per round.
        let up = quota_step(Some(0.2), 1.3, 2.0).unwrap();
        assert!((up - 0.4).abs() < 1e-9, "{up}");
        // Under 1%: skipped.
        assert_eq!(quota_step(Some(1.0), 1.01, 2.0), None);
    }

    #[test]
    fn quota_reaction_is_against_the_post_step_target() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let log = vec![
            (at(0), 1.0, 1.0),
            (at(1000), 1.0, 1.0),
            (at(2000), 0.2, 0.2),
        ];
        let r = quota_reaction(&log, at(1500), 2.0).unwrap();
        assert!((r - 500.0).abs() < 1.0, "{r}");
        // No change after the step: n/a.
        let flat = vec![(at(0), 1.0, 1.0), (at(2000), 1.0, 1.0)];
        assert_eq!(quota_reaction(&flat, at(1500), 2.0), None);
    }
}
