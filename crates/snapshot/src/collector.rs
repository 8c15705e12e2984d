//! The collector: turns cumulative counters into rates over tick and sample windows.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tidal_cgroupfs::hot::HotFile;
use tidal_cgroupfs::stat::parse_flat_keyed;
use tidal_cgroupfs::{Layout, PsiResource, Version};
use tidal_model::level::OFFLINE_PARENT;
use tidal_model::{
    CpuSet, GroupPath, Pressure, QosLevel, Snapshot, WorkloadPressure, WorkloadSnapshot,
};
use tidal_source::local::Scan;
use tidal_source::LocalSource;

/// Node and offline CPU time at one instant.
#[derive(Debug, Clone, Copy)]
pub struct LightSample {
    pub at: Instant,
    pub node_ns: u64,
    pub offline_ns: u64,
}

/// CPUs busy between two samples.
fn rate(a: &LightSample, b: &LightSample) -> (f64, f64) {
    let dt = b.at.duration_since(a.at).as_nanos() as f64;
    if dt <= 0.0 {
        return (0.0, 0.0);
    }
    (
        b.node_ns.saturating_sub(a.node_ns) as f64 / dt,
        b.offline_ns.saturating_sub(a.offline_ns) as f64 / dt,
    )
}

/// Reads the node's total CPU time: the v1 cpuacct root, else the v2 root's `cpu.stat`.
enum NodeCpu {
    V1(HotFile),
    V2(HotFile),
    None,
}

impl NodeCpu {
    fn new(layout: &Layout) -> NodeCpu {
        if let Some(h) = layout.hierarchies.v1("cpuacct") {
            return NodeCpu::V1(HotFile::new(h.mount.join("cpuacct.usage")));
        }
        if let Some(u) = layout.hierarchies.unified() {
            return NodeCpu::V2(HotFile::new(u.mount.join("cpu.stat")));
        }
        NodeCpu::None
    }
    fn read_ns(&mut self) -> u64 {
        match self {
            NodeCpu::V1(f) => f.read_u64().unwrap_or(0),
            NodeCpu::V2(f) => f
                .read()
                .ok()
                .and_then(|s| parse_flat_keyed(s).get("usage_usec").copied())
                .map_or(0, |us| us * 1000),
            NodeCpu::None => 0,
        }
    }
}

/// The offline parent's CPU time.
fn group_usage_file(layout: &Layout, group: &GroupPath) -> Option<(PathBuf, bool)> {
    if let Some(r) = layout
        .roots
        .iter()
        .find(|r| r.version() == Version::V1 && r.hierarchy.has("cpuacct"))
    {
        return Some((r.dir(group).join("cpuacct.usage"), true));
    }
    layout
        .unified()
        .map(|u| (u.dir(group).join("cpu.stat"), false))
}

pub struct Collector {
    layout: Layout,
    source: LocalSource,
    start: Instant,
    node: NodeCpu,
    offline: Option<(HotFile, bool)>,
    online_psi: HashMap<QosLevel, HotFile>,
    /// Recent (time, some total µs, full total µs) per online level, for 1 s windowed pressure.
    psi_hist: HashMap<QosLevel, std::collections::VecDeque<(Instant, u64, u64)>>,
    last_tick: Option<LightSample>,
    last_short: Option<LightSample>,
    short: (f64, f64),
    stats_at: Option<Instant>,
    wl_files: HashMap<GroupPath, WorkloadFiles>,
    scan: Scan,
    meminfo: HotFile,
    cpus: CpuSet,
}

impl Collector {
    pub fn new(layout: Layout, cpus: CpuSet) -> Collector {
        let parent = GroupPath::new(OFFLINE_PARENT).unwrap_or_default();
        let offline = group_usage_file(&layout, &parent).map(|(p, v1)| (HotFile::new(p), v1));
        let online_psi = match layout.unified() {
            Some(u) => QosLevel::ALL
                .into_iter()
                .filter(|l| l.is_online())
                .map(|l| {
                    let g = GroupPath::new(l.group()).unwrap_or_default();
                    (l, HotFile::new(u.dir(&g).join(PsiResource::Cpu.file())))
                })
                .collect(),
            None => HashMap::new(),
        };
        Collector {
            node: NodeCpu::new(&layout),
            source: LocalSource::new(layout.clone()),
            layout,
            start: Instant::now(),
            offline,
            online_psi,
            psi_hist: HashMap::new(),
            last_tick: None,
            last_short: None,
            short: (0.0, 0.0),
            stats_at: None,
            wl_files: HashMap::new(),
            scan: Scan::default(),
            meminfo: HotFile::new(PathBuf::from("/proc/meminfo")),
            cpus,
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn offline_ns(&mut self) -> u64 {
        match &mut self.offline {
            Some((f, true)) => f.read_u64().unwrap_or(0),
            Some((f, false)) => f
                .read()
                .ok()
                .and_then(|s| parse_flat_keyed(s).get("usage_usec").copied())
                .map_or(0, |us| us * 1000),
            None => 0,
        }
    }

    /// Two counter reads: node and offline CPU time.
    pub fn light(&mut self) -> LightSample {
        LightSample {
            at: Instant::now(),
            node_ns: self.node.read_ns(),
            offline_ns: self.offline_ns(),
        }
    }

    /// Takes a light sample and returns (node busy, offline busy) CPUs since the previous one.
    pub fn sample_short(&mut self) -> (f64, f64) {
        let s = self.light();
        if let Some(prev) = self.last_short {
            self.short = rate(&prev, &s);
        }
        self.last_short = Some(s);
        self.short
    }

    /// Scans the tree and reads each workload: everything when `full`, else only its task count (what
    /// the control loop needs), keeping the last full values for the rest.
    fn refresh_workloads(&mut self, full: bool) -> Vec<WorkloadSnapshot> {
        self.scan = self.source.scan().unwrap_or_default();
        let now = Instant::now();
        let mut out = Vec::with_capacity(self.scan.workloads.len());
        let mut files = std::mem::take(&mut self.wl_files);
        let mut kept = HashMap::with_capacity(self.scan.workloads.len());
        for w in &self.scan.workloads {
            let mut f = files
                .remove(&w.group)
                .unwrap_or_else(|| WorkloadFiles::new(&self.layout, &w.group));
            out.push(if full || f.last.is_none() {
                f.read(w, now)
            } else {
                f.read_procs()
            });
            kept.insert(w.group.clone(), f);
        }
        // Files of workloads that are gone are closed here (dropped with `files`).
        self.wl_files = kept;
        self.stats_at = Some(now);
        out
    }

    /// A full snapshot (see [`Collector::update`]).
    pub fn snapshot(&mut self, stats_every_ms: u64, force: bool) -> Snapshot {
        let mut snap = Snapshot::default();
        self.update(&mut snap, stats_every_ms, force);
        snap
    }

    /// Brings `snap` up to date in place. The tree scan and each workload's task count are refreshed
    /// when `stats_every_ms` has passed; `full` (or `force`) refreshes now and reads every per-workload
    /// statistic too (usage, memory, PSI, throttling), which only observers and memory decisions need.
    /// Otherwise `snap.workloads` is left as it was, so a tick copies nothing per workload. Returns
    /// whether the workloads were refreshed.
    pub fn update(&mut self, snap: &mut Snapshot, stats_every_ms: u64, full: bool) -> bool {
        let due = full
            || self
                .stats_at
                .is_none_or(|t| t.elapsed().as_millis() as u64 >= stats_every_ms);
        if due {
            snap.workloads = self.refresh_workloads(full);
            snap.levels_present = self.scan.levels_present.clone();
        }
        let s = self.light();
        let (node_busy, offline_busy) = match self.last_tick {
            Some(prev) => rate(&prev, &s),
            None => (0.0, 0.0),
        };
        self.last_tick = Some(s);
        // The short window ends now too.
        if let Some(prev) = self.last_short {
            if s.at.duration_since(prev.at).as_millis() >= 5 {
                self.short = rate(&prev, &s);
                self.last_short = Some(s);
            }
        } else {
            self.last_short = Some(s);
        }
        let levels_present = &snap.levels_present;
        let now = Instant::now();
        let mut psis: Vec<tidal_cgroupfs::Psi> = Vec::new();
        let (mut win_some, mut win_full): (Option<f64>, Option<f64>) = (None, None);
        for (l, f) in self.online_psi.iter_mut() {
            if !levels_present.contains(l) {
                continue;
            }
            let Some(p) = f
                .read()
                .ok()
                .and_then(|t| tidal_cgroupfs::psi::parse_psi(t).ok())
            else {
                continue;
            };
            psis.push(p);
            let h = self.psi_hist.entry(*l).or_default();
            h.push_back((now, p.some.total_us, p.full.total_us));
            while h.len() > 2
                && h.get(1)
                    .is_some_and(|(t, _, _)| now.duration_since(*t) >= Duration::from_secs(1))
            {
                h.pop_front();
            }
            if let Some((t0, s0, f0)) = h.front().copied() {
                let dt = now.duration_since(t0).as_micros() as f64;
                if dt >= 200_000.0 {
                    let pct = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt * 100.0;
                    let (s, fu) = (pct(s0, p.some.total_us), pct(f0, p.full.total_us));
                    win_some = Some(win_some.map_or(s, |m: f64| m.max(s)));
                    win_full = Some(win_full.map_or(fu, |m: f64| m.max(fu)));
                }
            }
        }
        let max = |f: fn(&tidal_cgroupfs::Psi) -> f64| {
            psis.iter()
                .map(f)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        };
        let online_cpu_psi = max(|p| p.some.avg10);
        let online_cpu_psi_full = max(|p| p.full.avg10);
        let mem = self
            .meminfo
            .read()
            .ok()
            .and_then(crate::node::parse_meminfo)
            .unwrap_or_default();
        snap.now_ms = self.now_ms();
        snap.cpus = self.cpus.clone();
        snap.node_busy_cpus = node_busy;
        snap.node_busy_short_cpus = self.short.0;
        snap.offline_usage_cpus = offline_busy;
        snap.offline_usage_short_cpus = self.short.1;
        snap.online_cpu_psi = online_cpu_psi;
        snap.online_cpu_psi_full = online_cpu_psi_full;
        snap.online_cpu_psi_1s = win_some;
        snap.online_cpu_psi_full_1s = win_full;
        snap.mem_total_bytes = mem.total;
        snap.mem_available_bytes = mem.available;
        due
    }
}

/// A workload's counter files, kept open between refreshes.
struct WorkloadFiles {
    /// `cpuacct.usage` (ns) or v2 `cpu.stat` (`usage_usec`).
    usage: Option<(HotFile, bool)>,
    throttle: Option<HotFile>,
    memory: Option<HotFile>,
    procs: Option<HotFile>,
    psi: [Option<HotFile>; 3],
    prev_usage: Option<(u64, Instant)>,
    /// The last full reading.
    last: Option<WorkloadSnapshot>,
}

impl WorkloadFiles {
    fn new(layout: &Layout, g: &GroupPath) -> WorkloadFiles {
        let usage = group_usage_file(layout, g).map(|(p, v1)| (HotFile::new(p), v1));
        let throttle = layout
            .owner("cpu")
            .map(|r| HotFile::new(r.dir(g).join("cpu.stat")));
        let memory = layout.owner("memory").map(|r| {
            HotFile::new(r.dir(g).join(match r.version() {
                Version::V1 => "memory.usage_in_bytes",
                Version::V2 => "memory.current",
            }))
        });
        let procs = layout
            .primary()
            .map(|r| HotFile::new(r.dir(g).join("cgroup.procs")));
        let psi = PsiResource::ALL.map(|res| {
            layout
                .unified()
                .map(|u| HotFile::new(u.dir(g).join(res.file())))
        });
        WorkloadFiles {
            usage,
            throttle,
            memory,
            procs,
            psi,
            prev_usage: None,
            last: None,
        }
    }

    fn count_procs(&mut self) -> usize {
        self.procs
            .as_mut()
            .and_then(|f| {
                f.read()
                    .ok()
                    .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
            })
            .unwrap_or(0)
    }

    /// The last full reading with a fresh task count.
    fn read_procs(&mut self) -> WorkloadSnapshot {
        let procs = self.count_procs();
        match &mut self.last {
            Some(l) => {
                l.procs = procs;
                l.clone()
            }
            // The caller reads fully first; an empty reading is still a valid answer.
            None => WorkloadSnapshot {
                group: GroupPath::root(),
                level: QosLevel::Online,
                name: String::new(),
                procs,
                cpu_usage_cpus: None,
                memory_bytes: None,
                pressure: WorkloadPressure::default(),
                nr_throttled: None,
                throttled_us: None,
            },
        }
    }

    fn read(&mut self, w: &tidal_source::WorkloadRef, now: Instant) -> WorkloadSnapshot {
        let usage = match &mut self.usage {
            Some((f, true)) => f.read_u64().ok(),
            Some((f, false)) => f
                .read()
                .ok()
                .and_then(|s| parse_flat_keyed(s).get("usage_usec").copied())
                .map(|us| us * 1000),
            None => None,
        };
        let cpu_usage_cpus = usage.and_then(|u| {
            let r = self.prev_usage.map(|(pu, pt)| {
                let dt = now.duration_since(pt).as_nanos() as f64;
                if dt > 0.0 {
                    u.saturating_sub(pu) as f64 / dt
                } else {
                    0.0
                }
            });
            self.prev_usage = Some((u, now));
            r
        });
        let throttle = self.throttle.as_mut().and_then(|f| {
            f.read()
                .ok()
                .and_then(|s| tidal_cgroupfs::stat::throttling_from(&parse_flat_keyed(s)))
        });
        let procs = self.count_procs();
        let memory_bytes = self.memory.as_mut().and_then(|f| f.read_u64().ok());
        let psi = |f: &mut Option<HotFile>| {
            f.as_mut()
                .and_then(|f| {
                    f.read()
                        .ok()
                        .and_then(|t| tidal_cgroupfs::psi::parse_psi(t).ok())
                })
                .map(|p| Pressure {
                    some_avg10: p.some.avg10,
                    full_avg10: p.full.avg10,
                })
        };
        let [c, m, i] = &mut self.psi;
        let pressure = WorkloadPressure {
            cpu: psi(c),
            memory: psi(m),
            io: psi(i),
        };
        let snap = WorkloadSnapshot {
            group: w.group.clone(),
            level: w.level,
            name: w.name.clone(),
            procs,
            cpu_usage_cpus,
            memory_bytes,
            pressure,
            nr_throttled: throttle.map(|t| t.nr_throttled),
            throttled_us: throttle.map(|t| t.throttled_us),
        };
        self.last = Some(snap.clone());
        snap
    }
}
