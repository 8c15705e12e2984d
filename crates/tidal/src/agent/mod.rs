//! `tidal agent`: the driver. It wires an [`Agent`] to the clock (a tick every `tick`, every
//! `interference.watch_tick` for `release_watch` after a ladder step is released, a light sample
//! every `sample_interval` that can bring a tick forward), to signals (SIGTERM/SIGINT
//! give offline work its CPUs back and exit; SIGHUP reloads the config; SIGUSR1, as `tidal release`
//! sends it, gives everything back and pauses until stopped) and to the HTTP server
//! (`/metrics`, `/healthz`, `/state`). It holds the root's lock for its whole life, so a second agent
//! on the same root refuses to start and `restore` waits for it.

pub mod core;
mod http;
pub mod metrics;
pub mod runq;
pub mod slo;
pub mod stall;
pub mod view;

pub use self::core::{Agent, Shared, TickReport};

use crate::cli::{AgentArgs, Global, SourceKind};
use crate::exit::{self, fail};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidal_actuator::{Actuator, Outcome, RootLock};
use tidal_cgroupfs::detect_capabilities;
use tidal_kube::{Connect, PodSource};
use tidal_policy::{Config, PolicyState};
use tidal_snapshot::{Collector, MonotonicClock};
use tidal_source::{Combined, LocalSource, WorkloadSource};
use tracing::{error, info, warn};
use view::StateView;

/// Largest config file read (a config is a few KiB).
const MAX_CONFIG: u64 = 1 << 20;

/// Per-workload counter files stay open between refreshes: allow as many descriptors as the hard
/// limit permits.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                warn!(
                    "cannot raise the open-file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Reads and validates a config file; each problem on its own line.
pub fn load_config(path: Option<&Path>) -> Result<Config, String> {
    let Some(p) = path else {
        return Ok(Config::default());
    };
    let size = std::fs::metadata(p)
        .map_err(|e| format!("cannot read config {}: {e}", p.display()))?
        .len();
    if size > MAX_CONFIG {
        return Err(format!(
            "config {}: {size} bytes is too large for a config (at most 1 MiB)",
            p.display()
        ));
    }
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read config {}: {e}", p.display()))?;
    Config::from_yaml(&text).map_err(|errs| {
        errs.iter()
            .map(|e| format!("config {}: {e}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// A config's problems, one per line, each prefixed; the usage exit status.
pub(crate) fn print_lines(e: &str) -> i32 {
    for line in e.lines() {
        eprintln!("tidal: {line}");
    }
    exit::USAGE
}

/// The agent's own group, under the tidal root (not a level: the tree scan does not see it).
pub const AGENT_GROUP: &str = "agent";

/// Moves the agent into [`AGENT_GROUP`], at online-critical's CPU weight, unless it already runs
/// inside the tidal tree. Outside the tree a task competes with the whole tree as one entity, and
/// on this project's 6.18 VMs such a task waited seconds for a CPU while offline work ran inside
/// (docs/RESULTS.md); inside, offline's idle class orders offline behind it. Not on a pure v2
/// host run by systemd: there the agent belongs to its unit, and the root to a scope. A failed
/// move puts the agent back where it started, and says so.
fn place_self(act: &mut Actuator, real_time: bool) {
    let layout = act.layout();
    let inside = layout.owner("cpu").is_some_and(|r| {
        r.hierarchy
            .dir(&r.hierarchy.self_path)
            .starts_with(&r.root_dir)
    });
    if inside {
        info!("the agent runs inside the tidal tree already: it stays where it is");
        return;
    }
    if layout.hierarchies.mode() == tidal_cgroupfs::CgroupMode::V2
        && tidal_cgroupfs::Host::detect().systemd
    {
        info!("the agent stays in the cgroup it was started in (its systemd unit)");
        return;
    }
    let Ok(group) = tidal_model::GroupPath::new(AGENT_GROUP) else {
        return;
    };
    let target = tidal_model::Target::Tidal(group.clone());
    let shares = tidal_policy::levels::level_shares(tidal_model::QosLevel::OnlineCritical);
    let me = std::process::id();
    let made = act.ensure_root(None).and_then(|_| act.ensure_group(&group));
    if let Err(e) = made {
        warn!(
            "the agent stays in the cgroup it was started in: {e} (agent_group: false skips this)"
        );
        return;
    }
    if let Err(e) = act.move_pid(&group, me) {
        // Some hierarchies may have taken it: put it back in all of them.
        let back = act.move_pid_home(me).map_or_else(
            |e| format!(", and moving it back failed: {e}"),
            |_| String::new(),
        );
        warn!("the agent stays in the cgroup it was started in: {e}{back} (agent_group: false skips this)");
        return;
    }
    match act.set(&target, tidal_model::Knob::CpuWeight, &tidal_model::KnobValue::Shares(shares)) {
        Ok(Outcome::Written | Outcome::Unchanged) => {
            info!("the agent runs in the group {group} under the tidal root, at online-critical's CPU weight")
        }
        Ok(Outcome::DryRun) => {}
        Ok(o) => warn!("the agent runs in the group {group} under the tidal root, but its CPU weight was not set ({o:?})"),
        Err(e) => warn!("the agent runs in the group {group} under the tidal root, but its CPU weight was not set: {e}"),
    }
    if real_time {
        grant_real_time(act, &group);
    }
}

/// Real-time time per period (1 s by default) for the agent's group: the stall guard's checks take
/// microseconds.
const AGENT_RT_US: u64 = 10_000;

/// On a kernel with RT group scheduling (v1 `cpu.rt_runtime_us`) a group without real-time time
/// refuses real-time tasks: the tidal root and the agent's group get [`AGENT_RT_US`] (a group's
/// children cannot hold more than it), so the stall guard can run at real-time priority. Nothing to
/// do elsewhere: without RT group scheduling any task may.
fn grant_real_time(act: &mut Actuator, group: &tidal_model::GroupPath) {
    use tidal_model::{Knob, KnobValue, Target};
    let mine = Target::Tidal(group.clone());
    let has_file = act
        .layout()
        .knob_paths(&mine, Knob::CpuRtRuntime)
        .is_some_and(|(_, p)| !p.is_empty() && p.iter().all(|f| f.exists()));
    if !has_file {
        return;
    }
    for (t, name) in [
        (
            Target::Tidal(tidal_model::GroupPath::root()),
            "the tidal root".to_string(),
        ),
        (mine, format!("the group {group}")),
    ] {
        if let Ok(KnobValue::Micros(us)) = act.layout().read_knob(&t, Knob::CpuRtRuntime) {
            if us >= AGENT_RT_US {
                continue;
            }
        }
        match act.set(&t, Knob::CpuRtRuntime, &KnobValue::Micros(AGENT_RT_US)) {
            Ok(Outcome::Written | Outcome::Unchanged | Outcome::DryRun) => {}
            // EINVAL: the group above has no real-time time to give (a systemd unit's, a
            // sandbox's); tidal does not take it from groups it does not own.
            Ok(Outcome::Unsupported) => {
                warn!("cannot give {name} real-time time for the stall guard: the group above it has none to give (cpu.rt_runtime_us)");
                return;
            }
            Ok(o) => {
                warn!("cannot give {name} real-time time for the stall guard ({o:?})");
                return;
            }
            Err(e) => {
                warn!("cannot give {name} real-time time for the stall guard: {e}");
                return;
            }
        }
    }
}

pub fn main(g: &Global, a: &AgentArgs) -> i32 {
    let mut cfg = match load_config(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return print_lines(&e),
    };
    if let Some(l) = &a.listen {
        cfg.listen = l.clone();
        if let Err(errs) = cfg.validate() {
            let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            return print_lines(&lines.join("\n"));
        }
    }
    let layout = match g.layout() {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let caps = detect_capabilities(&layout);
    let mem_total = tidal_cgroupfs::proc::parse_meminfo(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
    )
    .ok()
    .map(|m| m.total);
    let n_cpus = caps.cpus.len() as u32;
    if let Err(errs) = cfg.validate_for(n_cpus, mem_total) {
        let lines: Vec<String> = errs.iter().map(|e| format!("config: {e}")).collect();
        return print_lines(&lines.join("\n"));
    }
    let state_dir = g.state_dir();
    let lock = match RootLock::acquire(&layout, &state_dir) {
        Ok(l) => l,
        Err(e) => return exit::act(&e),
    };
    let mut act = match Actuator::new(layout.clone(), &state_dir, g.dry_run) {
        Ok(a) => a,
        Err(e) => return exit::act(&e),
    };
    let listener = match std::net::TcpListener::bind(&cfg.listen) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", cfg.listen)),
    };
    if let Err(e) = listener.set_nonblocking(true) {
        return fail(format!("listener {}: {e}", cfg.listen));
    }
    // Before any thread starts and before /healthz answers: whoever waits for it finds the agent
    // where it stays.
    if cfg.agent_group && a.source == SourceKind::Local {
        place_self(&mut act, cfg.stall_limit().0 > 0);
    }
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();

    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    let usr1 = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGINT, &term),
        (signal_hook::consts::SIGHUP, &hup),
        (signal_hook::consts::SIGUSR1, &usr1),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            return fail(format!("cannot handle signal {sig}: {e}"));
        }
    }

    let mode = layout.hierarchies.mode().to_string();
    let local = Box::new(LocalSource::new(layout.clone()));
    let source: Box<dyn WorkloadSource> = match a.source {
        SourceKind::Local => local,
        SourceKind::Kubernetes => {
            if let Err(e) = tidal_kube::source::node_name(&cfg.kubernetes) {
                return print_lines(&e);
            }
            match PodSource::start(cfg.kubernetes.clone(), layout.clone(), Connect::Infer) {
                Ok(p) => {
                    // Never the kubelet's tiers, whatever a plan says.
                    act.protect(tidal_kube::paths::tiers(
                        &cfg.kubernetes.kubelet_cgroup_root,
                    ));
                    Box::new(Combined::new(local, Box::new(p)))
                }
                Err(e) => return fail(e),
            }
        }
    };
    let source_name = source.name();
    let shared = Arc::new(Shared::new(StateView {
        now_ms: 0,
        ticks: 0,
        dry_run: g.dry_run,
        cgroup_mode: mode.clone(),
        source: source_name.into(),
        capabilities: caps.clone(),
        config: cfg.clone(),
        node: None,
        workloads: Vec::new(),
        last_plan: None,
        policy: PolicyState::default(),
        missing_readings: Default::default(),
        source_health: Default::default(),
        slo: Vec::new(),
        runq_p99_us: Default::default(),
        runq: None,
        stall_guard: None,
        tally: Default::default(),
        io_weights: None,
        unprotected_tiers: Vec::new(),
        protection_gap: None,
    }));
    if let Err(e) = http::spawn(listener, Arc::clone(&shared)) {
        return fail(format!("cannot start http server: {e}"));
    }
    let root = layout
        .primary()
        .map(|r| r.root_dir.display().to_string())
        .unwrap_or_default();
    info!(
        "tidal agent: {mode} cgroups, root {root}, workloads from {source_name}, {} CPUs, tick {}, listening on {addr}{}",
        caps.cpus.len(),
        cfg.tick,
        if g.dry_run { ", dry run" } else { "" }
    );
    for k in [
        tidal_model::Knob::CpuIdle,
        tidal_model::Knob::CpusetCpus,
        tidal_model::Knob::Freeze,
    ] {
        if !caps.has(k) {
            warn!("{k} is not available here: see `tidal doctor` for what tidal does without it");
        }
    }
    if cfg.interference.cap_mode != tidal_policy::agent::cap::mode(&cfg, &caps) {
        warn!("interference.cap_mode duty-cycle needs a freezer: the CPU-time cap step is a CFS quota here");
    }

    raise_fd_limit();
    let collector = Collector::new(
        layout,
        caps.cpus.clone(),
        source,
        Box::new(MonotonicClock::new()),
    );
    let runq = runq::Runq::start(cfg.bpf.enabled && !a.no_bpf, cfg.bpf.sample);
    if let Ok(mut v) = shared.view.lock() {
        v.runq = runq.unavailable.clone();
    }
    let stall_after = cfg.stall_limit().0;
    if stall_after != cfg.interference.stall_after.0 {
        info!(
            "interference.stall_after {} is under four sample intervals: the stall guard acts after {}",
            cfg.interference.stall_after,
            cfg.stall_limit()
        );
    }
    let brakes = match shared.metrics.lock() {
        Ok(m) => m.stall_brakes.clone(),
        Err(p) => p.into_inner().stall_brakes.clone(),
    };
    let mut agent = Agent::new(cfg, caps, act, collector, Arc::clone(&shared));
    agent.set_runq(runq);
    // After the agent placed itself: a kernel with RT group scheduling refuses to move a
    // real-time task into a group without real-time time.
    let view = Arc::clone(&shared);
    let said = move |how: String| {
        if let Ok(mut v) = view.view.lock() {
            v.stall_guard = Some(how);
        }
    };
    if stall_after > 0 {
        match stall::Guard::start(stall_after, brakes, said) {
            Ok(g) => agent.set_guard(g),
            Err(e) => warn!("{e}: the agent runs without it"),
        }
    }
    let mut stall_at = a.inject_stall;
    let mut next_tick = Instant::now();
    let mut watch_until = Instant::now();
    let mut released = false;
    while !term.load(Ordering::Relaxed) {
        agent.beat();
        if usr1.swap(false, Ordering::Relaxed) && !released {
            let failed = agent.release();
            released = true;
            if failed > 0 {
                error!("release: {failed} write(s) failed; not confirming");
            } else if let Err(e) = lock.mark_released() {
                error!("release done, but cannot say so: {e}");
            }
        }
        if released {
            agent.pause();
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if hup.swap(false, Ordering::Relaxed) {
            // Checked as at start: against this machine's CPUs and memory too.
            match load_config(a.config.as_deref()).and_then(|new| {
                new.validate_for(n_cpus, mem_total)
                    .map(|()| new)
                    .map_err(|errs| {
                        let at = a
                            .config
                            .as_deref()
                            .map_or("config".to_string(), |p| format!("config {}", p.display()));
                        errs.iter()
                            .map(|e| format!("{at}: {e}"))
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
            }) {
                Ok(new) => agent.reload(new),
                Err(e) => error!(
                    "config reload failed, keeping the last good config: {}",
                    e.replace('\n', "; ")
                ),
            }
        }
        // A tick due now reads everything itself.
        let early = Instant::now() < next_tick && agent.sample();
        let now = Instant::now();
        if now >= next_tick || early {
            if early && now < next_tick {
                if let Ok(m) = shared.metrics.lock() {
                    m.early_ticks.inc();
                }
            }
            if agent.tick(now).released {
                watch_until =
                    now + Duration::from_millis(agent.config().interference.release_watch.0);
            }
            next_tick =
                now + Duration::from_millis(tick_every(agent.config(), now < watch_until).0);
            if let Some((at, ms)) = stall_at.filter(|(at, _)| agent.ticks() >= *at) {
                warn!("stalling the loop for {ms} ms after tick {at} (--inject-stall)");
                std::thread::sleep(Duration::from_millis(ms));
                stall_at = None;
            }
        }
        let sample_every = Duration::from_millis(agent.config().sample_interval.0);
        let wake = (Instant::now() + sample_every).min(next_tick);
        let sleep = wake.saturating_duration_since(Instant::now());
        std::thread::sleep(sleep.max(Duration::from_millis(1)));
    }
    agent.shutdown()
}

/// The time to the next tick: right after offline got a step back (`watching`), a watch tick, so
/// that interference it brings back is met within one; never longer than `tick`.
fn tick_every(cfg: &Config, watching: bool) -> tidal_policy::config::Millis {
    if watching {
        cfg.interference.watch_tick.min(cfg.tick)
    } else {
        cfg.tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_policy::config::Millis;

    #[test]
    fn a_release_watch_ticks_fast_never_slower_than_the_tick() {
        let mut cfg = Config::default();
        assert_eq!(tick_every(&cfg, false), Millis(100));
        assert_eq!(tick_every(&cfg, true), Millis(20));
        cfg.tick = Millis(10);
        assert_eq!(tick_every(&cfg, true), Millis(10));
    }
}
