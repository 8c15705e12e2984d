//! The agent as a value: [`Agent::tick`] measures (through the collector and its workload source),
//! asks the pure policy for a plan, applies it through the actuator, and updates what `/metrics` and
//! `/state` show. It reads no clock of its own and sends no signal: the driver in `agent::main` owns
//! time, signals and the HTTP server, as kube-runtime keeps its driver apart from `reconcile`.

use super::metrics::{ActionLabels, Metrics};
use super::view::{self, ActionRecord, PlanView, StateView, WorkloadView};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidal_actuator::{ActError, Actuator, Applied, Outcome};
use tidal_model::{
    Capabilities, Cause, ForeignGroup, Knob, KnobValue, Op, QosLevel, Snapshot, Target,
};
use tidal_policy::{decide, release_plan, settle, Config, PolicyState};
use tidal_snapshot::Collector;
use tidal_source::Eviction;
use tracing::{error, info, warn};

/// What the HTTP thread reads.
pub struct Shared {
    pub metrics: Mutex<Metrics>,
    pub view: Mutex<StateView>,
    pub started: Instant,
    pub last_tick_ms: AtomicU64,
    /// Set by an HTTP reader: take a full per-workload reading at the next tick.
    pub wanted: AtomicBool,
    /// Bumped after each full reading (readers wait for it).
    pub generation: AtomicU64,
}

impl Shared {
    pub fn new(view: StateView) -> Shared {
        Shared {
            metrics: Mutex::new(Metrics::new()),
            view: Mutex::new(view),
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            wanted: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        }
    }
    pub fn last_tick_age_ms(&self) -> u64 {
        (self.started.elapsed().as_millis() as u64)
            .saturating_sub(self.last_tick_ms.load(Ordering::Relaxed))
    }
}

/// What one tick did.
#[derive(Debug)]
pub struct TickReport {
    pub applied: Vec<Applied>,
    /// The workload list was re-read.
    pub refreshed: bool,
    /// Every per-workload statistic was read.
    pub full: bool,
    /// Offline was given a step of the interference ladder back.
    pub released: bool,
    pub took: Duration,
}

pub struct Agent {
    cfg: Config,
    slo: super::slo::SloWatch,
    runq: super::runq::Runq,
    caps: Capabilities,
    act: Actuator,
    collector: Collector,
    state: PolicyState,
    snap: Snapshot,
    /// The last action per target, and apart from it the last one that was not a routine static
    /// write (a drift repair must not hide why offline was confined).
    history: BTreeMap<(Target, bool), ActionRecord>,
    ticks: u64,
    /// Each routine (static) setting last found or written in place: writing the same value again
    /// means something else changed it (drift); a first or a new value is not drift.
    static_in_place: BTreeMap<(Target, Knob), KnobValue>,
    /// What enabling blk-iocost last came to (said once per change).
    iocost: Option<Outcome>,
    /// OOM kills and evictions by level since start.
    counter: view::Counter,
    /// Workloads whose kill left tasks still exiting: killing one again is the same eviction.
    survivors_of: HashSet<Target>,
    shared: Arc<Shared>,
    /// The stall guard, and the groups its brake holds now.
    guard: Option<super::stall::Guard>,
    armed: Option<Vec<Target>>,
    /// Pods' groups at the last reading, and those gone from it whose directories were still
    /// there: their recorded originals are forgotten once the groups are gone.
    pod_groups: HashSet<ForeignGroup>,
    pods_leaving: Vec<ForeignGroup>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Adopts what a previous agent left: offline's current cpuset and freeze states.
fn adopt(act: &Actuator, caps: &Capabilities) -> PolicyState {
    let layout = act.layout();
    let mut st = PolicyState::default();
    let parent = Target::Tidal(QosLevel::offline_parent());
    if let Ok(KnobValue::Cpus(c)) = layout.read_knob(&parent, Knob::CpusetCpus) {
        if !c.is_empty() && c.is_subset(&caps.cpus) {
            st.base_offline = Some(c.len() as u32);
            st.offline_cpus = Some(c);
        }
    }
    let frozen = |l: QosLevel| {
        matches!(
            layout.read_knob(&Target::Tidal(l.group_path()), Knob::Freeze),
            Ok(KnobValue::Bool(true))
        )
    };
    st.frozen.offline = frozen(QosLevel::Offline);
    st.frozen.offline_low = frozen(QosLevel::OfflineLow);
    st
}

impl Agent {
    pub fn new(
        cfg: Config,
        caps: Capabilities,
        mut act: Actuator,
        mut collector: Collector,
        shared: Arc<Shared>,
    ) -> Agent {
        act.set_reprobe_interval(Duration::from_millis(cfg.static_interval.0));
        collector.count_open_files(cfg.files.any());
        Agent {
            slo: super::slo::SloWatch::start(&cfg.slo),
            runq: super::runq::Runq::start(false, 1),
            state: adopt(&act, &caps),
            cfg,
            caps,
            act,
            collector,
            snap: Snapshot::default(),
            history: BTreeMap::new(),
            ticks: 0,
            static_in_place: BTreeMap::new(),
            iocost: None,
            counter: view::Counter::default(),
            survivors_of: HashSet::new(),
            shared,
            guard: None,
            armed: None,
            pod_groups: HashSet::new(),
            pods_leaving: Vec::new(),
        }
    }

    /// Takes the stall guard (started by the driver: it owns the thread); armed from the next tick.
    pub fn set_guard(&mut self, g: super::stall::Guard) {
        self.guard = Some(g);
        self.armed = None;
    }

    /// The loop came round (the stall guard's heartbeat).
    pub fn beat(&self) {
        if let Some(g) = &self.guard {
            g.beat();
        }
    }

    /// Arms the stall guard with what the ladder's freeze steps would freeze now (when that
    /// changes); each group's original is journalled before the guard may ever write it.
    fn arm_guard(&mut self) {
        let Some(g) = &self.guard else {
            return;
        };
        let want = tidal_policy::agent::interference::brake_targets(&self.snap, &self.caps);
        if self.armed.as_ref() == Some(&want) {
            return;
        }
        match self.act.brake(&want) {
            Ok(b) => {
                g.arm(Some(b));
                self.armed = Some(want);
            }
            Err(e) => {
                // Unarmed rather than armed with files whose originals are not kept.
                g.arm(None);
                self.armed = None;
                warn!("stall guard unarmed: cannot journal the offline groups' freeze state: {e}");
            }
        }
    }

    /// A stall the guard pulled the brake for since the last tick, as a signal: the ladder takes
    /// the guard's freeze over.
    fn stall_signal(&self) -> Option<tidal_model::Signal> {
        let gap = self.guard.as_ref()?.take_pull()?;
        let (observed, target) = (gap.gap_ms as f64 / 1e3, gap.after_ms as f64 / 1e3);
        Some(tidal_model::Signal {
            kind: tidal_model::SignalKind::Stall,
            workload: "agent".into(),
            what: "the agent's loop".into(),
            observed,
            target,
            slack: tidal_model::Signal::slack_of(observed, target),
            age_ms: None,
            excess_z: None,
        })
    }

    /// Takes the run-queue latency collector (started by the driver: it loads BPF).
    pub fn set_runq(&mut self, r: super::runq::Runq) {
        self.runq = r;
        let layout = self.act.layout().clone();
        self.runq.map(&layout, &self.snap.workloads);
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn state(&self) -> &PolicyState {
        &self.state
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Forgets the journalled originals of pods gone from the workload list once their groups
    /// are gone (a long-running agent sees thousands of pods come and go).
    fn forget_gone_pods(&mut self) {
        let now: HashSet<ForeignGroup> = self
            .snap
            .workloads
            .iter()
            .filter_map(|w| match &w.group {
                Target::Foreign(g) if w.pod.is_some() => Some(g.clone()),
                _ => None,
            })
            .collect();
        let mut leaving = std::mem::take(&mut self.pods_leaving);
        leaving.retain(|g| !now.contains(g));
        leaving.extend(self.pod_groups.difference(&now).cloned());
        self.pod_groups = now;
        if leaving.is_empty() {
            return;
        }
        match self.act.forget_gone(leaving) {
            Ok(still) => self.pods_leaving = still,
            Err(e) => warn!("cannot forget the originals of pods that are gone: {e}"),
        }
    }

    /// Takes a new config (SIGHUP), checked as at start by the caller. The listen address cannot change without a restart: the old
    /// one stays, and the log says so.
    pub fn reload(&mut self, mut new: Config) {
        if new.listen != self.cfg.listen {
            warn!(
                "config reloaded, but listen changed ({} -> {}): restart the agent for that; still listening on {}",
                self.cfg.listen, new.listen, self.cfg.listen
            );
            new.listen = self.cfg.listen.clone();
        } else {
            info!("config reloaded");
        }
        let pod_mode = self.collector.source_name() != "local";
        let kept = keep_start_only(&self.cfg, &mut new, pod_mode);
        if !kept.is_empty() {
            warn!(
                "config reloaded, but {} changed: taken at start only; restart the agent for that (the running values stay, and /state shows them)",
                kept.join(", ")
            );
        }
        self.collector.count_open_files(new.files.any());
        self.act
            .set_reprobe_interval(Duration::from_millis(new.static_interval.0));
        self.slo.set_config(&new.slo);
        match &self.guard {
            Some(g) => g.set_after(new.stall_limit().0),
            None if new.stall_limit().0 > 0 => {
                warn!("interference.stall_after: the stall guard was off when the agent started; restart the agent to start it")
            }
            None => {}
        }
        // A duty cycle's periods are counted in ticks: a new period starts it afresh.
        if new.tick != self.cfg.tick
            || new.interference.cap_fraction != self.cfg.interference.cap_fraction
        {
            self.state.interference.duty_from_ms = None;
        }
        self.cfg = new;
    }

    /// One light sample (two counter reads, and the run-queue waits so far). True if a tick is due
    /// at once: online now needs more CPUs than offline has left it and confinement can act on
    /// that, or an online workload's tasks wait to run far past the threshold.
    pub fn sample(&mut self) -> bool {
        let (node, off) = self.collector.sample_short();
        if let (Some(node), Some(off)) = (node, off) {
            if tidal_policy::agent::confine::early_tick(
                node - off,
                &self.cfg,
                &self.caps,
                &self.state,
            ) {
                return true;
            }
        }
        let now_ms = self.collector.now_ms();
        if !self.runq.active()
            || !tidal_policy::agent::interference::may_hurry(
                &self.snap,
                &self.cfg,
                &self.caps,
                &self.state,
                now_ms,
            )
        {
            return false;
        }
        let waits = self
            .runq
            .peek(self.cfg.bpf.runq_p99_threshold.0, self.cfg.bpf.min_samples);
        self.show_runq();
        tidal_policy::agent::interference::deep_wait(&waits, &self.cfg)
    }

    /// `/state` says why run-queue latency is off once it went off (a read that failed).
    fn show_runq(&self) {
        if let Some(why) = &self.runq.unavailable {
            let mut v = lock(&self.shared.view);
            if v.runq.as_ref() != Some(why) {
                v.runq = Some(why.clone());
            }
        }
    }

    /// One control step at `now`: measure, decide, apply, report.
    pub fn tick(&mut self, now: Instant) -> TickReport {
        // Full per-workload readings only when someone looks (/metrics, /state) or memory is tight
        // (kill decisions need fresh sizes): the control loop itself needs only the tree.
        let full = self.shared.wanted.swap(false, Ordering::Relaxed)
            || self.memory_tight()
            || self.ticks == 0;
        let mut refreshed = self
            .collector
            .update(&mut self.snap, self.cfg.stats_interval.0, full);
        // Memory turned tight since the last tick: an eviction may be due now, on sizes read now.
        let full = full || {
            let now_tight = self.memory_tight();
            if now_tight {
                self.collector.reread_workloads(&mut self.snap);
                refreshed = true;
            }
            now_tight
        };
        if refreshed {
            self.slo.set_specs(super::slo::specs(
                &self.cfg.slo.objectives,
                &self.snap.workloads,
            ));
            let layout = self.act.layout().clone();
            self.runq.map(&layout, &self.snap.workloads);
            self.forget_gone_pods();
        }
        let (mut signals, readings) = self.slo.read();
        let (runq_signals, waits) = self
            .runq
            .read(self.cfg.bpf.runq_p99_threshold.0, self.cfg.bpf.min_samples);
        self.show_runq();
        signals.extend(runq_signals);
        signals.extend(self.stall_signal());
        self.snap.signals = signals;
        if !waits.is_empty() {
            lock(&self.shared.metrics).runq(&waits);
            let mut v = lock(&self.shared.view);
            for w in &waits {
                if let Some(p) = w.hist.quantile_ns(0.99) {
                    v.runq_p99_us.insert(w.workload.clone(), p / 1e3);
                }
            }
        }
        let d = decide(&self.snap, &self.cfg, &self.caps, &self.state);
        if refreshed {
            let targets: Vec<(Target, Knob)> = d
                .plan
                .remember
                .iter()
                .map(|r| (r.target.clone(), r.knob))
                .collect();
            if let Err(e) = self.act.remember(&targets) {
                warn!("cannot journal the offline groups' originals ahead: {e} (each write journals its own first)");
            }
        }
        let mut applied = self.act.apply(&d.plan);
        self.evictions(&mut applied);
        let static_pass = d.state.last_static_ms != self.state.last_static_ms;
        if self.cfg.io.iocost && static_pass {
            self.iocost();
        }
        if static_pass || self.ticks == 0 {
            self.node_facts();
        }
        let evicted = self.count_evictions(&applied);
        // An oom_score_adj the kernel refuses to lower (no CAP_SYS_RESOURCE) is not tried again
        // every tick: its static pass comes soon enough.
        let ok: Vec<bool> = applied
            .iter()
            .map(|a| match a.result {
                Ok(Outcome::Unsupported) => matches!(a.action.op, Op::OomScoreAdj { .. }),
                Ok(_) => true,
                Err(_) => false,
            })
            .collect();
        for (group, n) in &d.state.files_over {
            if !self.state.files_over.contains_key(group) {
                let stopped = applied.iter().any(|ap| {
                    matches!(&ap.action.op, Op::Set { target, knob: Knob::Freeze, .. }
                        if target.to_string() == *group)
                        && matches!(ap.result, Ok(Outcome::Written | Outcome::Unchanged))
                });
                warn!(
                    "{group} holds {n} open files, over its level's ceiling (files.*_max){}",
                    if stopped { ": stopped" } else { "" }
                );
            }
        }
        // A step taken while offline is already where it puts it (frozen by the duty cycle, say)
        // writes nothing: say so here, or the log never shows it. (Settling leaves the steps alone.)
        if d.state.interference.steps != self.state.interference.steps {
            let names = |s: &[tidal_policy::Step]| {
                s.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
            };
            // Why, from the plan: a step whose write found offline where it puts it says so here.
            let why = d
                .plan
                .actions
                .iter()
                .find(|a| matches!(a.cause, Cause::Interference | Cause::Release))
                .map(|a| format!(": {}", a.reason))
                .unwrap_or_default();
            info!(
                "interference ladder: [{}] (was [{}]){why}",
                names(&d.state.interference.steps),
                names(&self.state.interference.steps)
            );
        }
        // A step given back (the duty cycle's own thaws are not: they come every period; a step
        // undone as useless is not either: the ladder then backs off and cannot tighten).
        let released = d.state.interference.steps.len() < self.state.interference.steps.len()
            && !matches!(
                d.state.interference.phase,
                tidal_policy::Phase::BackedOff { .. }
            );
        self.state = settle(d.state, &self.state, &d.plan, &ok);
        let first = self.ticks == 0;
        if first {
            // The first tick is the agent's start: its gap is no stall (before the guard is armed).
            if let Some(g) = &self.guard {
                g.restart();
            }
        }
        if self.cfg.stall_limit().0 == 0 {
            if let Some(g) = self.guard.as_ref().filter(|_| self.armed.is_some()) {
                g.arm(None);
                self.armed = None;
            }
        } else if refreshed || self.armed.is_none() {
            // What the brake holds changes only with the workload list.
            self.arm_guard();
        }
        self.ticks += 1;
        if refreshed {
            // A consistent snapshot: the source may publish from it (batch resources).
            let dry = self.act.dry_run();
            self.collector.source_mut().observe(&self.snap, dry);
        }
        self.note_drift(&applied);
        self.publish(&applied, refreshed, full, evicted, readings);
        if first {
            // The agent's own start (its programs attaching, this first full snapshot, its writes
            // and reports) runs at online priority, and the waits it causes are not interference:
            // this tick's read was every workload's baseline, and the first window opens here.
            self.runq.restart();
            self.show_runq();
        }
        let took = now.elapsed();
        let m = lock(&self.shared.metrics);
        m.ticks.inc();
        m.tick_seconds.observe(took.as_secs_f64());
        m.tick_worst(took.as_secs_f64());
        drop(m);
        TickReport {
            applied,
            refreshed,
            full,
            released,
            took,
        }
    }

    /// Enables blk-iocost where the config asks for it (with the static settings, so it is repaired
    /// like them); says what came of it whenever that changes.
    fn iocost(&mut self) {
        let devs = tidal_policy::agent::io::devices(&self.snap, &self.cfg).to_vec();
        let r = self.act.enable_iocost(&devs);
        let now = r.as_ref().ok().copied();
        let list = devs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        match &r {
            Ok(Outcome::Written) => info!("io.iocost: blk-iocost enabled on [{list}] (node-wide; tidal restore switches it back)"),
            Ok(Outcome::Unsupported) if self.iocost != now => warn!("io.iocost: this host has no blk-iocost switch (io.cost.qos in a cgroup v2 root with the io controller): IO weights act only under BFQ"),
            Err(e) => warn!("io.iocost: cannot enable blk-iocost on [{list}]: {e}"),
            _ => {}
        }
        self.iocost = now;
    }

    /// Memory is getting low, or offline is over its ceiling: an eviction may be due.
    fn memory_tight(&self) -> bool {
        let low = match (self.snap.mem_total_bytes, self.snap.mem_available_bytes) {
            (Some(t), Some(a)) => a < self.cfg.low_watermark(t).saturating_mul(3) / 2,
            _ => false,
        };
        let over_ceiling = matches!(
            (self.state.ceiling, self.snap.offline_memory_bytes),
            (Some(c), Some(u)) if u > c
        );
        low || over_ceiling
    }

    /// Node-wide facts `status` shows beside the agent's own state, refreshed with the static
    /// settings: whether IO weights act (schedulers, blk-iocost), and in pod mode which of the
    /// kubelet's tiers lack memory protection.
    fn node_facts(&mut self) {
        let layout = self.act.layout().clone();
        // Capabilities can change under a running agent (BFQ loaded, a controller enabled above
        // the root): the next static pass then writes what the new ones allow.
        let caps = tidal_cgroupfs::detect_capabilities(&layout);
        if caps != self.caps {
            let names = |a: &Capabilities, b: &Capabilities| {
                a.knobs
                    .difference(&b.knobs)
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (gained, lost) = (names(&caps, &self.caps), names(&self.caps, &caps));
            if !gained.is_empty() || !lost.is_empty() {
                info!("capabilities changed: gained [{gained}], lost [{lost}]");
            }
            lock(&self.shared.view).capabilities = caps.clone();
            self.caps = caps;
        }
        let (in_force, detail) = crate::doctor::io_weights(&layout, &self.caps);
        // Pod mode: (tiers read, tiers without protection); no driver found reads none.
        let tiers = (self.collector.source_mut().name() == "kubernetes").then(|| {
            crate::doctor::kubelet_driver(&layout, &self.cfg.kubernetes)
                .map(|d| {
                    crate::doctor::unprotected_tiers(
                        &layout,
                        &self.cfg.kubernetes.kubelet_cgroup_root,
                        d,
                    )
                })
                .unwrap_or_default()
        });
        lock(&self.shared.metrics)
            .node_facts(in_force, tiers.as_ref().map(|(n, t)| (*n, t.as_slice())));
        let gap = tiers
            .is_none()
            .then(|| crate::doctor::protection_gap(&layout, &self.caps))
            .flatten();
        let mut v = lock(&self.shared.view);
        v.io_weights = Some(view::IoWeights { in_force, detail });
        v.unprotected_tiers = tiers.map(|(_, t)| t).unwrap_or_default();
        v.protection_gap = gap.map(|p| p.display().to_string());
    }

    /// Local workloads killed for memory by this tick's plan, and pods whose eviction was
    /// requested, by level. A kill counts once SIGKILL went out: the group was empty within the
    /// actuator's wait, or some tasks were still exiting (survivors, counted apart; killing
    /// those again is the same eviction, not counted twice).
    fn count_evictions(&mut self, applied: &[Applied]) -> bool {
        let mut counted = false;
        // A workload gone since its kill is forgotten: a new one on its path is a new eviction.
        let snap = &self.snap;
        self.survivors_of
            .retain(|t| snap.workloads.iter().any(|w| &w.group == t));
        for ap in applied {
            let sent = matches!(
                (&ap.result, &ap.action.op),
                (Ok(Outcome::Written), Op::Kill { .. } | Op::Evict { .. })
                    | (Err(ActError::Survivors { .. }), Op::Kill { .. })
            );
            if !sent {
                continue;
            }
            let target = ap.action.op.target();
            if matches!(ap.action.op, Op::Kill { .. }) {
                // A kill that left survivors is remembered until a kill of it empties the group.
                let again = if matches!(ap.result, Err(ActError::Survivors { .. })) {
                    !self.survivors_of.insert(target.clone())
                } else {
                    self.survivors_of.remove(&target)
                };
                if again {
                    continue;
                }
            }
            // A local workload's level is also its parent group's.
            let Some(level) = self
                .snap
                .workloads
                .iter()
                .find(|w| w.group == target)
                .map(|w| w.level)
                .or_else(|| match &target {
                    Target::Tidal(g) => g.parent().and_then(|p| QosLevel::from_group(p.as_str())),
                    Target::Foreign(_) => None,
                })
            else {
                continue;
            };
            if matches!(ap.action.op, Op::Kill { .. }) {
                self.counter.evicted(level);
            } else {
                self.counter.eviction_requested(level);
            }
            counted = true;
        }
        counted
    }

    /// Hands the plan's evictions to the workload source (the actuator leaves them alone).
    fn evictions(&mut self, applied: &mut [Applied]) {
        let dry = self.act.dry_run();
        for ap in applied.iter_mut() {
            let (Ok(Outcome::Elsewhere), Op::Evict { pod, .. }) = (&ap.result, &ap.action.op)
            else {
                continue;
            };
            ap.result = match self
                .collector
                .source_mut()
                .evict(pod, &ap.action.reason, dry)
            {
                Ok(Eviction::Requested) => {
                    info!("{}", ap.action);
                    Ok(Outcome::Written)
                }
                Ok(Eviction::Logged) => Ok(Outcome::DryRun),
                Err(e) => {
                    warn!("{}: {e}", ap.action);
                    Err(ActError::Source(e.to_string()))
                }
            };
        }
    }

    /// Says when a routine setting had to be written again at the value last found or written in
    /// place (something else changed it); a first or a new value is not drift.
    fn note_drift(&mut self, applied: &[Applied]) {
        // A static pass re-sends every routine setting: what it did not address is gone.
        if self.state.last_static_ms == Some(self.snap.now_ms) {
            let sent: HashSet<(&Target, Knob)> = applied
                .iter()
                .filter_map(|ap| match &ap.action.op {
                    Op::Set { target, knob, .. } if ap.action.cause == Cause::Static => {
                        Some((target, *knob))
                    }
                    _ => None,
                })
                .collect();
            self.static_in_place
                .retain(|(t, k), _| sent.contains(&(t, *k)));
        }
        for ap in applied {
            let (
                Op::Set {
                    target,
                    knob,
                    value,
                },
                Ok(o),
            ) = (&ap.action.op, &ap.result)
            else {
                continue;
            };
            let key = (target.clone(), *knob);
            match (ap.action.cause, o) {
                (Cause::Static, Outcome::Written | Outcome::Unchanged) => {
                    let before = self.static_in_place.insert(key, value.clone());
                    if *o == Outcome::Written && before.as_ref() == Some(value) {
                        warn!("drift repaired: {}", ap.action);
                    }
                }
                // Tidal itself moved it for another reason: not drift when put back.
                (_, Outcome::Written) => {
                    self.static_in_place.remove(&key);
                }
                _ => {}
            }
        }
    }

    /// Metrics and `/state` after a tick (`evicted`: the tick killed or evicted a workload).
    fn publish(
        &mut self,
        applied: &[Applied],
        refreshed: bool,
        full: bool,
        evicted: bool,
        slo: Vec<super::slo::Reading>,
    ) {
        let at = self.snap.now_ms;
        let mut records = Vec::new();
        let mut outcomes = Vec::new();
        let mut m = lock(&self.shared.metrics);
        for ap in applied {
            let labels = ActionLabels {
                kind: ap.action.op.kind().to_string(),
                reason: ap.action.cause.name().to_string(),
            };
            let outcome = match &ap.result {
                Ok(o) => format!("{o:?}").to_lowercase(),
                Err(e) => format!("error: {e}"),
            };
            outcomes.push(outcome.clone());
            match &ap.result {
                Ok(Outcome::Written) | Ok(Outcome::DryRun) => {
                    m.actions.get_or_create(&labels).inc();
                }
                Err(_) => {
                    m.action_errors.get_or_create(&labels).inc();
                }
                _ => continue,
            }
            let r = view::record(&ap.action, at, &outcome);
            let routine = ap.action.cause == Cause::Static;
            self.history
                .insert((ap.action.op.target(), routine), r.clone());
            records.push(r);
        }
        let offline_n = self.state.offline_cpus.as_ref().map_or(0, |c| c.len());
        m.node(
            &self.snap,
            self.state.online_need,
            offline_n,
            self.state.interference.level(),
        );
        m.actuator(self.act.stats());
        m.missing(&self.collector.problems.counts);
        m.slo(&slo);
        m.memory_qos(&self.state, &self.cfg);
        if refreshed {
            let synced =
                self.collector.source_mut().name() == "local" || !self.snap.workloads.is_empty();
            self.counter
                .oom(&self.snap.workloads, self.snap.now_ms, synced);
        }
        // The counts move only with a reading or an eviction.
        let counts_moved = refreshed || evicted;
        if counts_moved {
            m.tally(&self.counter.tally);
        }
        let source_health = refreshed.then(|| self.collector.source_mut().health());
        if let Some(h) = &source_health {
            m.source(h);
        }
        if full {
            m.workloads(
                &self.snap,
                self.state.offline_cpus.as_ref().map(|c| c.len()),
            );
        }
        drop(m);
        self.shared.last_tick_ms.store(
            self.shared.started.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
        if refreshed {
            let live: HashSet<&Target> = self.snap.workloads.iter().map(|w| &w.group).collect();
            self.history.retain(|(g, _), _| match g {
                Target::Tidal(p) => p.depth() <= 2 || live.contains(g),
                Target::Foreign(_) => live.contains(g),
            });
        }
        let mut v = lock(&self.shared.view);
        v.now_ms = self.snap.now_ms;
        v.ticks = self.ticks;
        v.node = Some(view::node_view(&self.snap, &self.state));
        v.policy = self.state.clone();
        v.slo = slo;
        if counts_moved {
            v.tally = self.counter.tally.clone();
        }
        if let Some(h) = source_health {
            v.source_health = h;
        }
        v.missing_readings = self
            .collector
            .problems
            .counts
            .iter()
            .map(|(k, n)| ((*k).to_string(), *n))
            .collect();
        if full || !records.is_empty() {
            v.config = self.cfg.clone();
            v.workloads = self
                .snap
                .workloads
                .iter()
                .map(|w| WorkloadView {
                    snap: w.clone(),
                    allowed_cpus: if w.level.is_online() {
                        None
                    } else {
                        self.state.offline_cpus.clone()
                    },
                    frozen: (w.level == QosLevel::Offline && self.state.frozen.offline)
                        || (w.level == QosLevel::OfflineLow && self.state.frozen.offline_low),
                    last_action: view::last_for(&self.history, &w.group),
                })
                .collect();
            if !records.is_empty() {
                v.last_plan = Some(PlanView {
                    at_ms: at,
                    actions: applied.iter().map(|a| a.action.clone()).collect(),
                    remember: Vec::new(),
                    outcomes,
                });
            }
        }
        drop(v);
        if full {
            self.shared.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Gives offline work every CPU back, thawed and uncapped; how many writes failed. The agent
    /// then only keeps its health fresh ([`Agent::pause`]) until it is stopped.
    pub fn release(&mut self) -> usize {
        info!("releasing: offline work gets every CPU back, thawed and uncapped; paused until stopped");
        if let Some(g) = &self.guard {
            g.arm(None);
        }
        self.armed = None;
        self.collector.update(&mut self.snap, 0, true);
        let mut failed = 0;
        for ap in self.act.apply(&release_plan(
            &self.snap,
            &self.cfg,
            &self.caps,
            &self.state,
        )) {
            if let Err(e) = ap.result {
                failed += 1;
                error!("{}: {e}", ap.action);
            }
        }
        failed
    }

    /// Keeps `/healthz` fresh while released (nothing is measured or written).
    pub fn pause(&self) {
        self.shared.last_tick_ms.store(
            self.shared.started.elapsed().as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    /// Gives offline work every CPU back and thaws it; the exit code (1 if a write failed).
    pub fn shutdown(&mut self) -> i32 {
        info!("stopping: giving offline work its CPUs back");
        if let Some(g) = &self.guard {
            g.stop();
        }
        self.collector.update(&mut self.snap, 0, true);
        let mut failed = 0;
        for ap in self.act.apply(&release_plan(
            &self.snap,
            &self.cfg,
            &self.caps,
            &self.state,
        )) {
            if let Err(e) = ap.result {
                failed += 1;
                error!("{}: {e}", ap.action);
            }
        }
        info!(
            "stopped after {} ticks; journal at {}",
            self.ticks,
            self.act.journal().file().display()
        );
        i32::from(failed > 0)
    }
}

/// Puts back in `new` the settings the agent takes at start only (its own group, the pod source's,
/// the BPF program's load): a reload that changed them would show values not in force. Returns
/// the names of those that changed and matter in this mode (the pod source's only in pod mode).
fn keep_start_only(old: &Config, new: &mut Config, pod_mode: bool) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($say:expr, $($f:ident).+, $name:literal) => {
            if new.$($f).+ != old.$($f).+ {
                new.$($f).+ = old.$($f).+.clone();
                if $say {
                    kept.push($name);
                }
            }
        };
    }
    keep!(!pod_mode, agent_group, "agent_group");
    keep!(pod_mode, kubernetes.node_name, "kubernetes.node_name");
    keep!(
        pod_mode,
        kubernetes.kubelet_cgroup_root,
        "kubernetes.kubelet_cgroup_root"
    );
    keep!(
        pod_mode,
        kubernetes.cgroup_driver,
        "kubernetes.cgroup_driver"
    );
    keep!(
        pod_mode,
        kubernetes.cpu_manager_state,
        "kubernetes.cpu_manager_state"
    );
    keep!(pod_mode, kubernetes.events, "kubernetes.events");
    keep!(pod_mode, kubernetes.classify, "kubernetes.classify");
    keep!(pod_mode, kubernetes.batch, "kubernetes.batch");
    keep!(true, bpf.enabled, "bpf.enabled");
    keep!(true, bpf.sample, "bpf.sample");
    kept
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reload_keeps_the_settings_taken_at_start_and_says_which() {
        let old = Config::default();
        let mut new = old.clone();
        new.kubernetes.events = !old.kubernetes.events;
        new.kubernetes.cpu_manager_state = "/elsewhere".into();
        new.bpf.sample = 8;
        new.tick = tidal_policy::config::Millis(old.tick.0 * 2);
        new.kubernetes.eviction_interval = tidal_policy::config::Millis(1);
        new.agent_group = !old.agent_group;
        let mut local = new.clone();
        let kept = super::keep_start_only(&old, &mut new, true);
        assert_eq!(
            kept,
            vec![
                "kubernetes.cpu_manager_state",
                "kubernetes.events",
                "bpf.sample"
            ]
        );
        assert_eq!(new.agent_group, old.agent_group);
        // In local mode the pod source's settings are not in use: kept, not spoken of.
        let kept = super::keep_start_only(&old, &mut local, false);
        assert_eq!(kept, vec!["agent_group", "bpf.sample"]);
        assert_eq!(local.kubernetes.events, old.kubernetes.events);
        assert_eq!(new.kubernetes.events, old.kubernetes.events);
        assert_eq!(
            new.kubernetes.cpu_manager_state,
            old.kubernetes.cpu_manager_state
        );
        assert_eq!(new.bpf.sample, old.bpf.sample);
        // What the agent takes live stays as reloaded.
        assert_eq!(new.tick.0, old.tick.0 * 2);
        assert_eq!(new.kubernetes.eviction_interval.0, 1);
        assert!(super::keep_start_only(&old, &mut old.clone(), true).is_empty());
    }

    use super::*;
    use tidal_cgroupfs::mountinfo::{parse_mountinfo, parse_proc_cgroup};
    use tidal_cgroupfs::{Hierarchies, Host, Layout, RootSpec};
    use tidal_model::{ForeignGroup, GroupPath};
    use tidal_snapshot::FakeClock;
    use tidal_source::{Inventory, SourceError, WorkloadRef, WorkloadSource};

    /// A source that reports what the test says: one offline workload under the tidal root and one
    /// pod-like workload in another manager's tree, which tidal may only set values on.
    struct TestSource(Inventory);

    impl WorkloadSource for TestSource {
        fn name(&self) -> &'static str {
            "test"
        }
        fn scan(&mut self) -> Result<Inventory, SourceError> {
            Ok(self.0.clone())
        }
    }

    fn put(p: &std::path::Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    /// A v2 group as the kernel shows it (the files the agent reads and writes).
    fn group(d: &std::path::Path) {
        for (f, v) in [
            ("cgroup.procs", "123\n"),
            ("cgroup.controllers", "cpuset cpu io memory\n"),
            ("cgroup.subtree_control", "cpuset cpu io memory\n"),
            ("cgroup.freeze", "0\n"),
            ("cpu.weight", "100\n"),
            ("cpu.idle", "0\n"),
            ("cpu.max", "max 100000\n"),
            ("cpu.stat", "usage_usec 0\n"),
            ("cpuset.cpus", "\n"),
            ("memory.current", "0\n"),
            ("memory.stat", "inactive_file 0\n"),
        ] {
            put(&d.join(f), v);
        }
    }

    #[test]
    fn fake_fs_a_test_only_source_drives_the_agent_through_a_full_tick() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path().join("cg");
        put(&m.join("cpu.stat"), "usage_usec 0\n");
        put(&m.join("cgroup.controllers"), "cpuset cpu io memory\n");
        put(&m.join("cgroup.subtree_control"), "cpuset cpu io memory\n");
        put(&m.join("cpuset.cpus.effective"), "0-3\n");
        let root = m.join("tidal");
        for g in [
            "",
            "offline",
            "offline/offline",
            "offline/offline/etl",
            "online",
        ] {
            group(&root.join(g));
        }
        group(&m.join("kubepods/besteffort/pod1"));
        let mi = format!("1 1 0:1 / {} rw - cgroup2 cgroup2 rw\n", m.display());
        let h =
            Hierarchies::from_parts(&parse_mountinfo(&mi), &parse_proc_cgroup("0::/\n"), |_| {
                vec!["cpuset".into(), "cpu".into(), "io".into(), "memory".into()]
            });
        let layout = Layout::new(h, &RootSpec::default(), Host::default());
        let caps = tidal_cgroupfs::detect_capabilities(&layout);
        let inv = Inventory {
            levels_present: [QosLevel::Offline, QosLevel::Online].into_iter().collect(),
            workloads: vec![
                WorkloadRef {
                    group: Target::Tidal(GroupPath::new("offline/offline/etl").unwrap()),
                    level: QosLevel::Offline,
                    name: "etl".into(),
                    managed: true,
                    pod: None,
                },
                WorkloadRef {
                    group: Target::Foreign(ForeignGroup::new("kubepods/besteffort/pod1").unwrap()),
                    level: QosLevel::Offline,
                    name: "pod1".into(),
                    managed: false,
                    pod: None,
                },
            ],
            kubelet: None,
        };
        let clock = FakeClock::default();
        let collector = Collector::new(
            layout.clone(),
            caps.cpus.clone(),
            Box::new(TestSource(inv)),
            Box::new(clock.clone()),
        );
        let state = tmp.path().join("state");
        let act = Actuator::new(layout, &state, false).unwrap();
        let shared = Arc::new(Shared::new(StateView {
            now_ms: 0,
            ticks: 0,
            dry_run: false,
            cgroup_mode: "v2".into(),
            source: "test".into(),
            capabilities: caps.clone(),
            config: Config::default(),
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
        let mut agent = Agent::new(Config::default(), caps, act, collector, Arc::clone(&shared));
        clock.advance_ms(100);
        let rep = agent.tick(Instant::now());
        assert!(rep.full && rep.refreshed);
        assert!(
            rep.applied.iter().all(|a| a.result.is_ok()),
            "{:?}",
            rep.applied
        );
        // The static settings reached the kernel's files: offline parent in the idle class.
        assert_eq!(
            std::fs::read_to_string(root.join("offline/cpu.idle"))
                .unwrap()
                .trim(),
            "1"
        );
        // Both workloads are in /state; the foreign one is not tidal's to manage.
        let v = shared.view.lock().unwrap().clone();
        assert_eq!(v.workloads.len(), 2);
        assert!(v.workloads.iter().any(|w| !w.snap.managed));
        let plan = v.last_plan.expect("a plan");
        assert!(!plan.actions.is_empty() && plan.outcomes.len() == plan.actions.len());
        // Nothing the policy did touched the foreign group except by setting values (a group's
        // knobs, or its tasks' oom_score_adj).
        for a in &plan.actions {
            if matches!(a.op.target(), Target::Foreign(_)) {
                assert!(
                    a.setting().is_some() || matches!(a.op, Op::OomScoreAdj { .. }),
                    "{a}"
                );
            }
        }
        // /state round-trips through its own types, and its plan is a plan `apply` takes.
        let json = serde_json::to_string(&*shared.view.lock().unwrap()).unwrap();
        let back: StateView = serde_json::from_str(&json).unwrap();
        assert_eq!(back.workloads.len(), 2);
        let plan_json = serde_json::to_string(back.last_plan.as_ref().unwrap()).unwrap();
        let parsed = crate::apply::parse_plan(&plan_json).unwrap();
        assert_eq!(parsed.actions, plan.actions);
    }
}
