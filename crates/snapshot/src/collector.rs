//! The collector: turns cumulative counters into rates over tick and sample windows, for the node, the
//! offline parent, the online levels' PSI and each workload a [`WorkloadSource`] names. A reading
//! that fails is `None` in the snapshot (the policy then holds its last decision), counted per kind,
//! and logged once per kind; a counter that went backwards (its group was recreated) gives no rate
//! rather than a bogus one.

use crate::clock::Clock;
use crate::math::{cpu_rate, PsiWindow, Sample};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use tidal_cgroupfs::blockdev::real_devices;
use tidal_cgroupfs::hot::HotFile;
use tidal_cgroupfs::proc::{parse_meminfo, parse_vmstat_scanned};
use tidal_cgroupfs::stat::Throttling;
use tidal_cgroupfs::{CgroupError, Layout, Psi, PsiResource, Reader};
use tidal_model::{
    CpuSet, DevNum, Knob, KnobValue, Pressure, QosLevel, Snapshot, Target, WorkloadPressure,
    WorkloadSnapshot,
};
use tidal_source::{Inventory, WorkloadRef, WorkloadSource};
use tracing::warn;

/// Node and offline CPU time at one instant.
#[derive(Debug, Clone, Copy)]
pub struct LightSample {
    pub at_ns: u64,
    pub node_ns: Option<u64>,
    pub offline_ns: Option<u64>,
    /// Which set of offline groups `offline_ns` sums (pods come and go): two samples over
    /// different sets give no offline rate.
    pub offline_set: u64,
}

/// (node busy, offline busy) CPUs between two light samples.
fn light_rate(a: &LightSample, b: &LightSample) -> (Option<f64>, Option<f64>) {
    let r = |x: Option<u64>, y: Option<u64>| {
        cpu_rate(
            Sample {
                at_ns: a.at_ns,
                value: x?,
            },
            Sample {
                at_ns: b.at_ns,
                value: y?,
            },
        )
    };
    let off = if a.offline_set == b.offline_set {
        r(a.offline_ns, b.offline_ns)
    } else {
        None
    };
    (r(a.node_ns, b.node_ns), off)
}

/// Readings that failed, by kind: counted for `/metrics`, logged once per kind.
#[derive(Debug, Default)]
pub struct Problems {
    pub counts: BTreeMap<&'static str, u64>,
    logged: HashSet<&'static str>,
}

impl Problems {
    fn note(&mut self, what: &'static str, e: &CgroupError) {
        *self.counts.entry(what).or_default() += 1;
        if self.logged.insert(what) {
            warn!("cannot read {what}: {e} (taken as missing; logged once, counted in tidal_missing_readings_total)");
        }
    }
}

pub struct Collector {
    layout: Layout,
    source: Box<dyn WorkloadSource>,
    clock: Box<dyn Clock>,
    node: Option<Reader<u64>>,
    offline: Option<Reader<u64>>,
    offline_mem: Option<Reader<u64>>,
    /// Offline pods' CPU time (summed with the offline parent's), and which set that is.
    offline_pods: Vec<Reader<u64>>,
    offline_set: u64,
    online_psi: Vec<(QosLevel, Reader<Psi>)>,
    /// Online pods' CPU pressure: each pod is a group of online work, like a level group.
    online_pod_psi: Vec<(Target, Reader<Psi>)>,
    /// Online levels' and pods' memory pressure.
    online_mem_psi: Vec<(Option<QosLevel>, Reader<Psi>)>,
    psi_windows: HashMap<Target, PsiWindow>,
    last_tick: Option<LightSample>,
    last_short: Option<LightSample>,
    short: (Option<f64>, Option<f64>),
    stats_at_ns: Option<u64>,
    /// Readings of the workload list so far (`Snapshot::workloads_seq`).
    seq: u64,
    wl: HashMap<Target, WorkloadReaders>,
    inventory: Inventory,
    meminfo: HotFile,
    vmstat: HotFile,
    /// Reclaim scans since boot at the last stats refresh, and when.
    scanned: Option<(u64, u64)>,
    scan_rate: Option<f64>,
    cpus: CpuSet,
    /// The real block devices, and when they were listed (devices come and go rarely).
    devices: (Vec<DevNum>, Option<u64>),
    /// Open files are counted on every tree read, not only on full readings.
    open_files_each_read: bool,
    pub problems: Problems,
}

/// How often the block devices are listed again.
const DEVICES_EVERY_NS: u64 = 30_000_000_000;

impl Collector {
    pub fn new(
        layout: Layout,
        cpus: CpuSet,
        source: Box<dyn WorkloadSource>,
        clock: Box<dyn Clock>,
    ) -> Collector {
        let offline = layout.cpu_usage(&Target::Tidal(QosLevel::offline_parent()));
        let online_psi = QosLevel::ALL
            .into_iter()
            .filter(|l| l.is_online())
            .filter_map(|l| {
                layout
                    .psi(&Target::Tidal(l.group_path()), PsiResource::Cpu)
                    .map(|r| (l, r))
            })
            .collect();
        Collector {
            node: layout.node_cpu_usage(),
            offline_mem: layout.memory_working_set(&Target::Tidal(QosLevel::offline_parent())),
            offline,
            offline_pods: Vec::new(),
            offline_set: 0,
            online_psi,
            online_pod_psi: Vec::new(),
            online_mem_psi: Vec::new(),
            psi_windows: HashMap::new(),
            source,
            clock,
            layout,
            last_tick: None,
            last_short: None,
            short: (None, None),
            stats_at_ns: None,
            seq: 0,
            wl: HashMap::new(),
            inventory: Inventory::default(),
            meminfo: HotFile::new(PathBuf::from("/proc/meminfo")),
            vmstat: HotFile::new(PathBuf::from("/proc/vmstat")),
            scanned: None,
            scan_rate: None,
            cpus,
            devices: (Vec::new(), None),
            open_files_each_read: false,
            problems: Problems::default(),
        }
    }

    /// Counts open files on every tree read (where a ceiling holds workloads to the count).
    pub fn count_open_files(&mut self, on: bool) {
        self.open_files_each_read = on;
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ns() / 1_000_000
    }

    pub fn source_name(&self) -> &'static str {
        self.source.name()
    }

    /// The workload source, for what it carries out itself (evictions) and reports.
    pub fn source_mut(&mut self) -> &mut dyn WorkloadSource {
        self.source.as_mut()
    }

    /// Two counter reads: node and offline CPU time. A missing offline parent (no offline work yet)
    /// is not a problem; a node counter that cannot be read is.
    pub fn light(&mut self) -> LightSample {
        let node_ns = match self.node.as_mut().map(Reader::read) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                self.problems.note("node CPU time", &e);
                None
            }
            None => None,
        };
        let mut offline_ns = match self.offline.as_mut().map(Reader::read) {
            Some(Ok(v)) => Some(v),
            // No offline parent: offline uses nothing.
            Some(Err(e)) if e.is_vanished() => Some(0),
            Some(Err(e)) => {
                self.problems.note("offline CPU time", &e);
                None
            }
            None if self.offline_pods.is_empty() => None,
            None => Some(0),
        };
        for r in &mut self.offline_pods {
            match r.read() {
                Ok(v) => offline_ns = offline_ns.map(|s| s.saturating_add(v)),
                // A pod that ended: its CPU time is gone from the sum, so this window has no rate.
                Err(e) => {
                    if !e.is_vanished() {
                        self.problems.note("offline pod CPU time", &e);
                    }
                    offline_ns = None;
                }
            }
        }
        LightSample {
            at_ns: self.clock.now_ns(),
            node_ns,
            offline_ns,
            offline_set: self.offline_set,
        }
    }

    /// Re-opens the per-pod readers the light sample and the pressure reading use, when the set of
    /// pods changed.
    fn track_pods(&mut self) {
        let offline: Vec<&Target> = self
            .inventory
            .workloads
            .iter()
            .filter(|w| w.pod.is_some() && !w.level.is_online())
            .map(|w| &w.group)
            .collect();
        let online: Vec<&Target> = self
            .inventory
            .workloads
            .iter()
            .filter(|w| w.pod.is_some() && w.level.is_online())
            .map(|w| &w.group)
            .collect();
        let same_online = online.len() == self.online_pod_psi.len()
            && online
                .iter()
                .zip(&self.online_pod_psi)
                .all(|(a, (b, _))| *a == b);
        if !same_online || self.online_mem_psi.is_empty() {
            let layout = &self.layout;
            self.online_pod_psi = online
                .iter()
                .filter_map(|t| layout.psi(t, PsiResource::Cpu).map(|r| ((*t).clone(), r)))
                .collect();
            let levels = QosLevel::ALL
                .into_iter()
                .filter(|l| l.is_online())
                .map(|l| (Some(l), Target::Tidal(l.group_path())));
            let pods = online.iter().map(|t| (None, (*t).clone()));
            self.online_mem_psi = levels
                .chain(pods)
                .filter_map(|(l, t)| layout.psi(&t, PsiResource::Memory).map(|r| (l, r)))
                .collect();
            let keep: HashSet<&Target> = online.iter().copied().collect();
            self.psi_windows
                .retain(|t, _| matches!(t, Target::Tidal(_)) || keep.contains(t));
        }
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            offline.hash(&mut h);
            h.finish()
        };
        if key != self.offline_set || (self.offline_pods.is_empty() && !offline.is_empty()) {
            let layout = &self.layout;
            self.offline_pods = offline.iter().filter_map(|t| layout.cpu_usage(t)).collect();
            self.offline_set = key;
        }
    }

    /// Takes a light sample and returns (node busy, offline busy) CPUs since the previous one.
    pub fn sample_short(&mut self) -> (Option<f64>, Option<f64>) {
        let s = self.light();
        if let Some(prev) = self.last_short {
            self.short = light_rate(&prev, &s);
        }
        self.last_short = Some(s);
        self.short
    }

    /// Asks the source and reads each workload: everything when `full`, else only its task count
    /// (what the control loop needs), keeping the last full values for the rest. If the source
    /// cannot answer, its last answer stands.
    fn refresh_workloads(&mut self, full: bool) -> Vec<WorkloadSnapshot> {
        match self.source.scan() {
            Ok(inv) => self.inventory = inv,
            Err(tidal_source::SourceError::Cgroup(e)) => self.problems.note("workload tree", &e),
            Err(e) => {
                let e = CgroupError::Parse {
                    path: PathBuf::from(self.source.name()),
                    content: String::new(),
                    reason: e.to_string(),
                };
                self.problems.note("workload source", &e)
            }
        }
        self.track_pods();
        let full = full || self.source.wants_usage();
        let now = self.clock.now_ns();
        let mut out = Vec::with_capacity(self.inventory.workloads.len());
        let mut readers = std::mem::take(&mut self.wl);
        let mut kept = HashMap::with_capacity(self.inventory.workloads.len());
        for w in &self.inventory.workloads {
            // One workload per group: the policy's per-group bookkeeping counts on it.
            if kept.contains_key(&w.group) {
                continue;
            }
            let mut r = readers
                .remove(&w.group)
                .unwrap_or_else(|| WorkloadReaders::new(&self.layout, w));
            let first = r.last.is_none();
            // A ceiling acts on a fresh open-files count: the first reading may come before the
            // command runs.
            let mut ws = if full || first {
                r.read(w, now, &mut self.problems)
            } else {
                r.read_tasks(&mut self.problems, self.open_files_each_read)
            };
            if full || first {
                r.oom_kills = match self.layout.oom_kills(&w.group) {
                    Some(Ok(n)) => Some(n),
                    Some(Err(e)) if !e.is_vanished() => {
                        self.problems.note("workload OOM kills", &e);
                        None
                    }
                    _ => None,
                };
                r.memory_request = match &w.pod {
                    Some(p) => p.memory_request,
                    None if w.managed => tidal_cgroupfs::stats::memory_request(&r.dirs),
                    None => None,
                };
            }
            ws.memory_request = r.memory_request;
            ws.oom_kills = r.oom_kills;
            // A pod's cpuset orders v1 cpuset writes (containers before the pod, or after).
            if w.pod.is_some() {
                ws.cpuset = match self.layout.read_knob(&w.group, Knob::CpusetCpus) {
                    Ok(KnobValue::Cpus(c)) => Some(c),
                    _ => None,
                };
            }
            out.push(ws);
            kept.insert(w.group.clone(), r);
        }
        // Files of workloads that are gone are closed here (dropped with `readers`).
        self.wl = kept;
        self.stats_at_ns = Some(now);
        out
    }

    /// Reclaim scans per second since the last call (None on the first, or without /proc/vmstat).
    fn reclaim_rate(&mut self, now: u64) -> Option<f64> {
        let n = match self.vmstat.read() {
            Ok(t) => parse_vmstat_scanned(t),
            Err(e) => {
                self.problems.note("/proc/vmstat", &e);
                None
            }
        }?;
        let Some((p, at)) = self.scanned else {
            self.scanned = Some((n, now));
            return None;
        };
        // Over at least a second: forced refreshes (a /metrics scrape) come much closer together.
        let dt = now.saturating_sub(at) as f64 / 1e9;
        if dt < 1.0 {
            return self.scan_rate;
        }
        self.scanned = Some((n, now));
        self.scan_rate = Some(n.saturating_sub(p) as f64 / dt);
        self.scan_rate
    }

    /// A full snapshot (see [`Collector::update`]).
    pub fn snapshot(&mut self, stats_every_ms: u64, force: bool) -> Snapshot {
        let mut snap = Snapshot::default();
        self.update(&mut snap, stats_every_ms, force);
        snap
    }

    /// Reads every workload fully now, leaving the tick's CPU and pressure windows alone (they run
    /// from tick to tick): for a decision that needs sizes read at decision time.
    pub fn reread_workloads(&mut self, snap: &mut Snapshot) {
        let now = self.clock.now_ns();
        self.refresh(snap, now, true);
    }

    /// The per-workload part of a reading, with the inventory and the block devices.
    fn refresh(&mut self, snap: &mut Snapshot, now: u64, full: bool) {
        snap.workloads = self.refresh_workloads(full);
        self.seq = self.seq.wrapping_add(1);
        snap.workloads_seq = Some(self.seq);
        snap.levels_present = self.inventory.levels_present.clone();
        snap.kubelet = self.inventory.kubelet.clone();
        if self
            .devices
            .1
            .is_none_or(|t| now.saturating_sub(t) >= DEVICES_EVERY_NS)
        {
            self.devices = (
                real_devices(Path::new("/sys/block"))
                    .into_iter()
                    .map(|d| d.dev)
                    .collect(),
                Some(now),
            );
        }
        snap.block_devices.clone_from(&self.devices.0);
        snap.reclaim_scan_per_s = self.reclaim_rate(now);
    }

    /// Brings `snap` up to date in place. The workload list and each workload's task count are
    /// refreshed when `stats_every_ms` has passed; `full` refreshes now and reads every per-workload
    /// statistic too (usage, memory, PSI, throttling), which only observers and memory decisions
    /// need. Otherwise `snap.workloads` is left as it was, so a tick copies nothing per workload.
    /// Returns whether the workloads were refreshed.
    pub fn update(&mut self, snap: &mut Snapshot, stats_every_ms: u64, full: bool) -> bool {
        let now = self.clock.now_ns();
        let due = full
            || self
                .stats_at_ns
                .is_none_or(|t| now.saturating_sub(t) >= stats_every_ms.saturating_mul(1_000_000));
        if due {
            self.refresh(snap, now, full);
        }
        let s = self.light();
        let (node_busy, offline_busy) = match self.last_tick {
            Some(prev) => light_rate(&prev, &s),
            None => (None, None),
        };
        self.last_tick = Some(s);
        // The short window ends now too.
        match self.last_short {
            Some(prev) if s.at_ns.saturating_sub(prev.at_ns) >= 5_000_000 => {
                self.short = light_rate(&prev, &s);
                self.last_short = Some(s);
            }
            Some(_) => {}
            None => self.last_short = Some(s),
        }
        let mut avg_some: Option<f64> = None;
        let mut avg_full: Option<f64> = None;
        let mut win_some: Option<f64> = None;
        let mut win_full: Option<f64> = None;
        let max = |m: Option<f64>, v: Option<f64>| match (m, v) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let levels = self
            .online_psi
            .iter_mut()
            .filter(|(l, _)| snap.levels_present.contains(l))
            .map(|(l, r)| (Target::Tidal(l.group_path()), r));
        let pods = self.online_pod_psi.iter_mut().map(|(t, r)| (t.clone(), r));
        for (t, r) in levels.chain(pods) {
            let p = match r.read() {
                Ok(p) => p,
                Err(e) if e.is_vanished() => continue,
                Err(e) => {
                    self.problems.note("online cpu pressure", &e);
                    continue;
                }
            };
            avg_some = max(avg_some, Some(p.some.avg10));
            avg_full = max(avg_full, p.full.map(|f| f.avg10));
            let (ws, wf) = self.psi_windows.entry(t).or_default().push(
                s.at_ns,
                p.some.total_us,
                p.full.map(|f| f.total_us),
            );
            win_some = max(win_some, ws);
            win_full = max(win_full, wf);
        }
        let mem = match self.meminfo.read() {
            Ok(t) => parse_meminfo(t).map_err(|reason| CgroupError::Parse {
                path: PathBuf::from("/proc/meminfo"),
                content: String::new(),
                reason,
            }),
            Err(e) => Err(e),
        };
        let mem = match mem {
            Ok(m) => Some(m),
            Err(e) => {
                self.problems.note("/proc/meminfo", &e);
                None
            }
        };
        snap.now_ms = s.at_ns / 1_000_000;
        snap.cpus = self.cpus.clone();
        snap.node_busy_cpus = node_busy;
        snap.node_busy_short_cpus = self.short.0;
        snap.offline_usage_cpus = offline_busy;
        snap.offline_usage_short_cpus = self.short.1;
        snap.online_cpu_psi = avg_some;
        snap.online_cpu_psi_full = avg_full;
        snap.online_cpu_psi_1s = win_some;
        snap.online_cpu_psi_full_1s = win_full;
        let mut mem_psi: Option<f64> = None;
        // A level group that does not exist is not tried (each try is a failed open).
        let mem_readers = self
            .online_mem_psi
            .iter_mut()
            .filter(|(l, _)| l.is_none_or(|l| snap.levels_present.contains(&l)));
        for (_, r) in mem_readers {
            match r.read() {
                Ok(p) => mem_psi = Some(mem_psi.map_or(p.some.avg10, |m| m.max(p.some.avg10))),
                Err(e) if e.is_vanished() => {}
                Err(e) => self.problems.note("online memory pressure", &e),
            }
        }
        snap.online_mem_psi = mem_psi;
        snap.offline_memory_bytes = match self.offline_mem.as_mut().map(Reader::read) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) if e.is_vanished() => None,
            Some(Err(e)) => {
                self.problems.note("offline memory", &e);
                None
            }
            None => None,
        };
        snap.mem_total_bytes = mem.map(|m| m.total);
        snap.mem_available_bytes = mem.map(|m| m.available);
        due
    }
}

/// A workload's readers, kept open between refreshes.
struct WorkloadReaders {
    /// Its directories (for the task list behind the open-files count).
    dirs: Vec<PathBuf>,
    usage: Option<Reader<u64>>,
    throttle: Option<Reader<Option<Throttling>>>,
    memory: Option<Reader<u64>>,
    tasks: Option<Reader<usize>>,
    psi: [Option<Reader<Psi>>; 3],
    prev_usage: Option<Sample>,
    /// The last full reading.
    last: Option<WorkloadSnapshot>,
    /// The declared memory request, read on full readings only (an xattr per hierarchy).
    memory_request: Option<u64>,
    /// OOM kills in its tree, read on full readings only.
    oom_kills: Option<u64>,
    /// A pod: its processes are in its container groups, so tasks are counted down the tree.
    pod: bool,
}

/// A reading: missing if its group is gone (normal: workloads end), noted as a problem otherwise.
fn take<T>(r: Option<&mut Reader<T>>, what: &'static str, p: &mut Problems) -> Option<T> {
    match r?.read() {
        Ok(v) => Some(v),
        Err(e) if e.is_vanished() => None,
        Err(e) => {
            p.note(what, &e);
            None
        }
    }
}

impl WorkloadReaders {
    fn new(layout: &Layout, w: &WorkloadRef) -> WorkloadReaders {
        let t = &w.group;
        WorkloadReaders {
            dirs: layout.target_dirs(t),
            usage: layout.cpu_usage(t),
            throttle: layout.throttling(t),
            memory: layout.memory_working_set(t),
            tasks: layout.tasks(t),
            psi: PsiResource::ALL.map(|res| layout.psi(t, res)),
            prev_usage: None,
            last: None,
            memory_request: None,
            oom_kills: None,
            pod: w.pod.is_some(),
        }
    }

    /// The workload's pids: its group's, and for a pod its container groups' too.
    fn pids(&self) -> Option<Result<Vec<i32>, tidal_cgroupfs::CgroupError>> {
        let d = self.dirs.first()?;
        Some(if self.pod {
            tidal_cgroupfs::layout::read_procs_tree(d)
        } else {
            tidal_cgroupfs::layout::read_procs(&d.join(tidal_cgroupfs::layout::PROCS))
        })
    }

    /// The workload's pids, a problem noted if they could not be read (a vanished group has none).
    fn read_pids(&self, p: &mut Problems) -> Option<Vec<i32>> {
        match self.pids()? {
            Ok(pids) => Some(pids),
            Err(e) if e.is_vanished() => None,
            Err(e) => {
                p.note("workload tasks", &e);
                None
            }
        }
    }

    /// The last full reading with a fresh task count (a pod's counted down its tree) and, with
    /// `files`, a fresh open-files count; the pids are read once for both.
    fn read_tasks(&mut self, p: &mut Problems, files: bool) -> WorkloadSnapshot {
        let pids = if self.pod || files {
            self.read_pids(p)
        } else {
            None
        };
        let tasks = if self.pod {
            pids.as_ref().map(Vec::len)
        } else {
            take(self.tasks.as_mut(), "workload tasks", p)
        };
        match &mut self.last {
            Some(l) => {
                l.procs = tasks;
                if files {
                    l.open_files = pids.as_deref().and_then(tidal_cgroupfs::proc::open_files);
                }
                l.clone()
            }
            // The caller reads fully first; this is never reached in practice.
            None => WorkloadSnapshot {
                procs: tasks,
                ..WorkloadSnapshot::unread(
                    Target::Tidal(tidal_model::GroupPath::root()),
                    QosLevel::Online,
                    "",
                )
            },
        }
    }

    fn read(&mut self, w: &WorkloadRef, now_ns: u64, p: &mut Problems) -> WorkloadSnapshot {
        let usage = take(self.usage.as_mut(), "workload CPU time", p).map(|value| Sample {
            at_ns: now_ns,
            value,
        });
        let cpu_usage_cpus = match (self.prev_usage, usage) {
            (Some(a), Some(b)) => cpu_rate(a, b),
            _ => None,
        };
        if usage.is_some() {
            self.prev_usage = usage;
        }
        let throttle = take(self.throttle.as_mut(), "workload cpu.stat", p).flatten();
        // Read once: a pod's task count and the open-files count both need them.
        let pids = self.read_pids(p);
        let procs = if self.pod {
            pids.as_ref().map(Vec::len)
        } else {
            take(self.tasks.as_mut(), "workload tasks", p)
        };
        let memory_bytes = take(self.memory.as_mut(), "workload memory", p);
        let [c, m, i] = &mut self.psi;
        let mut psi = |r: &mut Option<Reader<Psi>>| {
            take(r.as_mut(), "workload pressure", p).map(|x| Pressure {
                some_avg10: x.some.avg10,
                full_avg10: x.full.map(|f| f.avg10),
            })
        };
        let pressure = WorkloadPressure {
            cpu: psi(c),
            memory: psi(m),
            io: psi(i),
        };
        let snap = WorkloadSnapshot {
            group: w.group.clone(),
            level: w.level,
            name: w.name.clone(),
            managed: w.managed,
            procs,
            cpu_usage_cpus,
            memory_bytes,
            pressure,
            nr_throttled: throttle.map(|t| t.nr_throttled),
            throttled_us: throttle.map(|t| t.throttled_us),
            pod: w.pod.clone(),
            cpuset: None,
            memory_request: None,
            open_files: pids.as_deref().and_then(tidal_cgroupfs::proc::open_files),
            oom_kills: None,
        };
        self.last = Some(snap.clone());
        snap
    }
}
