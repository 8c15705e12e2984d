//! `tidal agent`, local mode: the control loop. Every tick it takes a snapshot, asks the pure policy
//! for a plan and hands the plan to the actuator; between ticks a light sample (two counter reads)
//! lets a jump in online load trigger a step at once. Serves `/metrics`, `/healthz` and `/state`.

mod http;
pub mod metrics;
pub mod view;

use crate::cli::{AgentArgs, Global};
use crate::exit::{describe, fail};
use metrics::Metrics;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidal_actuator::{Actuator, Outcome};
use tidal_cgroupfs::{detect_capabilities, Layout, RootSpec};
use tidal_model::level::OFFLINE_PARENT;
use tidal_model::{Capabilities, GroupPath, Knob, KnobValue, Op, QosLevel};
use tidal_policy::agent::cpus_needed;
use tidal_policy::{decide, release_plan, Config, PolicyState};
use tidal_snapshot::Collector;
use tracing::{error, info, warn};
use view::{ActionRecord, PlanView, StateView};

/// What the HTTP thread reads.
pub struct Shared {
    pub metrics: Mutex<Metrics>,
    pub view: Mutex<StateView>,
    started: Instant,
    last_tick_ms: AtomicU64,
    /// Set by an HTTP reader: take a full per-workload reading at the next tick.
    pub wanted: AtomicBool,
    /// Bumped after each full reading (readers wait for it).
    pub generation: AtomicU64,
}

impl Shared {
    fn last_tick_age_ms(&self) -> u64 {
        (self.started.elapsed().as_millis() as u64)
            .saturating_sub(self.last_tick_ms.load(Ordering::Relaxed))
    }
}

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
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read config {}: {e}", p.display()))?;
    Config::from_yaml(&text).map_err(|errs| {
        errs.iter()
            .map(|e| format!("config {}: {e}", p.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Journals the originals of what confinement will write (cpusets, quota, freeze of the offline
/// groups) as soon as the groups appear, so the urgent writes later need no fsync.
fn remember_offline(act: &mut Actuator, snap: &tidal_model::Snapshot, cfg: &Config) {
    let mut groups: Vec<GroupPath> = vec![GroupPath::new(OFFLINE_PARENT).unwrap_or_default()];
    for l in [QosLevel::Offline, QosLevel::OfflineLow] {
        if snap.levels_present.contains(&l) {
            groups.push(GroupPath::new(l.group()).unwrap_or_default());
        }
    }
    if !snap.levels_present.iter().any(|l| !l.is_online()) {
        return;
    }
    groups.extend(
        snap.workloads
            .iter()
            .filter(|w| !w.level.is_online())
            .map(|w| w.group.clone()),
    );
    let mut targets = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        targets.push((g.clone(), Knob::CpusetCpus));
        if i == 0 && cfg.cpu.suppression == tidal_policy::Suppression::Quota {
            targets.push((g.clone(), Knob::CpuMax));
        }
        if (1..3).contains(&i) {
            targets.push((g.clone(), Knob::Freeze));
        }
    }
    if let Err(e) = act.remember(&targets) {
        warn!("cannot journal the offline groups' originals: {e}");
    }
}

fn op_kind(op: &Op) -> String {
    match op {
        Op::EnsureGroup => "create-group".into(),
        Op::Set { knob, .. } => knob.name().into(),
        Op::Kill => "kill".into(),
        Op::RemoveGroup => "remove-group".into(),
    }
}

/// Adopts what a previous agent left: offline's current cpuset and freeze states.
fn adopt(layout: &Layout, caps: &Capabilities) -> PolicyState {
    let mut st = PolicyState::default();
    let parent = GroupPath::new(OFFLINE_PARENT).unwrap_or_default();
    if let Ok(KnobValue::Cpus(c)) = layout.read_knob(&parent, Knob::CpusetCpus) {
        if !c.is_empty() && c.is_subset(&caps.cpus) {
            st.base_offline = Some(c.len() as u32);
            st.offline_cpus = Some(c);
        }
    }
    let frozen = |l: QosLevel| {
        matches!(
            layout.read_knob(&GroupPath::new(l.group()).unwrap_or_default(), Knob::Freeze),
            Ok(KnobValue::Bool(true))
        )
    };
    st.frozen_offline = frozen(QosLevel::Offline);
    st.frozen_offline_low = frozen(QosLevel::OfflineLow);
    st
}

pub fn main(g: &Global, a: &AgentArgs) -> i32 {
    let mut cfg = match load_config(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("tidal: {line}");
            }
            return crate::exit::USAGE;
        }
    };
    if let Some(l) = &a.listen {
        cfg.listen = l.clone();
        if let Err(errs) = cfg.validate() {
            return fail(
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            );
        }
    }
    let layout = match Layout::discover(&RootSpec::from_flag_or_env(g.root.as_deref())) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let caps = detect_capabilities(&layout);
    let mut act = match Actuator::new(layout.clone(), &g.state_dir, g.dry_run) {
        Ok(a) => a,
        Err(e) => return fail(describe(&e)),
    };
    let listener = match std::net::TcpListener::bind(&cfg.listen) {
        Ok(l) => l,
        Err(e) => return fail(format!("cannot listen on {}: {e}", cfg.listen)),
    };
    if let Err(e) = listener.set_nonblocking(true) {
        return fail(format!("listener {}: {e}", cfg.listen));
    }
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();

    let term = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGTERM, &term),
        (signal_hook::consts::SIGINT, &term),
        (signal_hook::consts::SIGHUP, &hup),
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            return fail(format!("cannot handle signal {sig}: {e}"));
        }
    }

    let mode = layout.hierarchies.mode().to_string();
    let shared = Arc::new(Shared {
        metrics: Mutex::new(Metrics::new()),
        view: Mutex::new(StateView {
            now_ms: 0,
            ticks: 0,
            dry_run: g.dry_run,
            cgroup_mode: mode.clone(),
            capabilities: caps.clone(),
            config: cfg.clone(),
            node: None,
            workloads: Vec::new(),
            last_plan: None,
            policy: PolicyState::default(),
        }),
        started: Instant::now(),
        last_tick_ms: AtomicU64::new(0),
        wanted: AtomicBool::new(false),
        generation: AtomicU64::new(0),
    });
    if let Err(e) = http::spawn(listener, Arc::clone(&shared)) {
        return fail(format!("cannot start http server: {e}"));
    }
    let root = layout
        .primary()
        .map(|r| r.root_dir.display().to_string())
        .unwrap_or_default();
    info!(
        "tidal agent: {mode} cgroups, root {root}, {} CPUs, tick {}, listening on {addr}{}",
        caps.cpus.len(),
        cfg.tick,
        if g.dry_run { ", dry run" } else { "" }
    );
    for k in [Knob::CpuIdle, Knob::CpusetCpus, Knob::Freeze] {
        if !caps.has(k) {
            warn!("{k} is not available here: see `tidal doctor` for what tidal does without it");
        }
    }

    raise_fd_limit();
    let mut state = adopt(&layout, &caps);
    let mut snap = tidal_model::Snapshot::default();
    let mut collector = Collector::new(layout, caps.cpus.clone());
    let mut history: BTreeMap<GroupPath, ActionRecord> = BTreeMap::new();
    let mut ticks: u64 = 0;
    let mut first_static_done = false;
    let mut next_tick = Instant::now();
    let n = caps.cpus.len() as u32;

    while !term.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            match load_config(a.config.as_deref()) {
                Ok(mut new) => {
                    new.listen = cfg.listen.clone();
                    info!("config reloaded");
                    cfg = new;
                }
                Err(e) => error!(
                    "config reload failed, keeping the last good config: {}",
                    e.replace('\n', "; ")
                ),
            }
        }
        let (node_s, off_s) = collector.sample_short();
        let need_short = cpus_needed(
            (node_s - off_s).max(0.0),
            cfg.cpu.headroom_cpus,
            cfg.cpu.noise_floor_cpus,
            n,
        );
        let now = Instant::now();
        let early = need_short > state.online_need && state.offline_cpus.is_some();
        if now >= next_tick || early {
            let t0 = Instant::now();
            // Full per-workload readings only when someone looks (/metrics, /state) or memory is
            // getting low (kill decisions need sizes): the control loop itself needs only the tree.
            let mem_low = snap.mem_total_bytes > 0
                && snap.mem_available_bytes
                    < cfg.low_watermark(snap.mem_total_bytes).saturating_mul(3) / 2;
            let full = shared.wanted.swap(false, Ordering::Relaxed) || mem_low || ticks == 0;
            let refreshed = collector.update(&mut snap, cfg.stats_interval.0, full);
            let d = decide(&snap, &cfg, &caps, &state);
            let applied = act.apply(&d.plan);
            state = d.state;
            ticks += 1;
            let at = snap.now_ms;
            let mut records = Vec::new();
            let mut m = match shared.metrics.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            for ap in &applied {
                let labels = metrics::ActionLabels {
                    kind: op_kind(&ap.action.op),
                    reason: ap.action.cause.clone(),
                };
                let outcome = match &ap.result {
                    Ok(o) => format!("{o:?}").to_lowercase(),
                    Err(e) => format!("error: {e}"),
                };
                match &ap.result {
                    Ok(Outcome::Written) | Ok(Outcome::DryRun) => {
                        m.actions.get_or_create(&labels).inc();
                        if ap.action.cause == "static" && first_static_done {
                            warn!("drift repaired: {}", ap.action);
                        }
                    }
                    Err(_) => {
                        m.action_errors.get_or_create(&labels).inc();
                    }
                    _ => continue,
                }
                let r = view::record(&ap.action, at, &outcome);
                history.insert(ap.action.group.clone(), r.clone());
                records.push(r);
            }
            if d.plan.actions.iter().any(|a| a.cause == "static") {
                first_static_done = true;
            }
            let offline_n = state.offline_cpus.as_ref().map_or(0, |c| c.len());
            m.node(&snap, state.online_need, offline_n, state.tighten);
            if full {
                m.workloads(&snap, state.offline_cpus.as_ref().map(|c| c.len()));
            }
            drop(m);
            if refreshed {
                remember_offline(&mut act, &snap, &cfg);
            }
            let m = match shared.metrics.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            m.ticks.inc();
            if early && now < next_tick {
                m.early_ticks.inc();
            }
            m.tick_seconds.observe(t0.elapsed().as_secs_f64());
            drop(m);
            shared.last_tick_ms.store(snap.now_ms, Ordering::Relaxed);
            if refreshed {
                let live: std::collections::HashSet<&GroupPath> =
                    snap.workloads.iter().map(|w| &w.group).collect();
                history.retain(|g, _| g.depth() <= 2 || live.contains(g));
            }
            if let Ok(mut v) = shared.view.lock() {
                v.now_ms = snap.now_ms;
                v.ticks = ticks;
                v.node = Some(view::node_view(&snap, &state));
                v.policy = state.clone();
            }
            if full || !records.is_empty() {
                if let Ok(mut v) = shared.view.lock() {
                    v.config = cfg.clone();
                    v.workloads = snap
                        .workloads
                        .iter()
                        .map(|w| view::WorkloadView {
                            snap: w.clone(),
                            allowed_cpus: if w.level.is_online() {
                                None
                            } else {
                                state.offline_cpus.clone()
                            },
                            frozen: (w.level == QosLevel::Offline && state.frozen_offline)
                                || (w.level == QosLevel::OfflineLow && state.frozen_offline_low),
                            last_action: view::last_for(&history, &w.group),
                        })
                        .collect();
                    if !records.is_empty() {
                        v.last_plan = Some(PlanView {
                            at_ms: at,
                            actions: records,
                        });
                    }
                }
            }
            if full {
                shared.generation.fetch_add(1, Ordering::Release);
            }
            next_tick = now + Duration::from_millis(cfg.tick.0);
        }
        let sample_every = Duration::from_millis(cfg.sample_interval.0);
        let wake = (Instant::now() + sample_every).min(next_tick);
        let sleep = wake.saturating_duration_since(Instant::now());
        std::thread::sleep(sleep.max(Duration::from_millis(1)));
    }

    info!("stopping: giving offline work its CPUs back");
    collector.update(&mut snap, 0, true);
    let mut failed = 0;
    for ap in act.apply(&release_plan(&snap, &caps, &state)) {
        if let Err(e) = ap.result {
            failed += 1;
            error!("{}: {e}", ap.action);
        }
    }
    info!(
        "stopped after {ticks} ticks; journal at {}",
        act.journal().file().display()
    );
    i32::from(failed > 0)
}
