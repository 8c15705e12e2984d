//! The collector: turns cumulative counters into rates over tick and sample windows.

use crate::node::read_meminfo;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Instant;
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
    last_tick: Option<LightSample>,
    last_short: Option<LightSample>,
    short: (f64, f64),
    stats_at: Option<Instant>,
    prev_usage: HashMap<GroupPath, (u64, Instant)>,
    scan: Scan,
    workloads: Vec<WorkloadSnapshot>,
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
            last_tick: None,
            last_short: None,
            short: (0.0, 0.0),
            stats_at: None,
            prev_usage: HashMap::new(),
            scan: Scan::default(),
            workloads: Vec::new(),
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

    fn refresh_workloads(&mut self) {
        self.scan = self.source.scan().unwrap_or_default();
        let now = Instant::now();
        let mut seen = HashMap::new();
        let mut out = Vec::with_capacity(self.scan.workloads.len());
        for w in &self.scan.workloads {
            let usage = self.layout.cpu_usage_ns(&w.group).ok();
            let cpu_usage_cpus = usage.and_then(|u| {
                let r = self.prev_usage.get(&w.group).map(|(pu, pt)| {
                    let dt = now.duration_since(*pt).as_nanos() as f64;
                    if dt > 0.0 {
                        u.saturating_sub(*pu) as f64 / dt
                    } else {
                        0.0
                    }
                });
                seen.insert(w.group.clone(), (u, now));
                r
            });
            let psi = |res| {
                self.layout
                    .psi(&w.group, res)
                    .ok()
                    .flatten()
                    .map(|p| Pressure {
                        some_avg10: p.some.avg10,
                        full_avg10: p.full.avg10,
                    })
            };
            let throttle = self.layout.throttling(&w.group).ok().flatten();
            let cpus = if w.level.is_online() {
                None
            } else {
                self.layout
                    .read_knob(&w.group, tidal_model::Knob::CpusetCpus)
                    .ok()
                    .and_then(|v| match v {
                        tidal_model::KnobValue::Cpus(c) => Some(c),
                        _ => None,
                    })
            };
            out.push(WorkloadSnapshot {
                group: w.group.clone(),
                level: w.level,
                name: w.name.clone(),
                procs: self.layout.procs(&w.group).map(|p| p.len()).unwrap_or(0),
                cpu_usage_cpus,
                memory_bytes: self.layout.memory_usage(&w.group).ok().flatten(),
                pressure: WorkloadPressure {
                    cpu: psi(PsiResource::Cpu),
                    memory: psi(PsiResource::Memory),
                    io: psi(PsiResource::Io),
                },
                nr_throttled: throttle.map(|t| t.nr_throttled),
                throttled_us: throttle.map(|t| t.throttled_us),
                cpus,
            });
        }
        self.prev_usage = seen;
        self.workloads = out;
        self.stats_at = Some(now);
    }

    /// A full snapshot. Per-workload statistics and the tree scan are refreshed when `stats_every_ms`
    /// has passed (or `force`), else the previous ones are reused.
    pub fn snapshot(&mut self, stats_every_ms: u64, force: bool) -> Snapshot {
        let due = force
            || self
                .stats_at
                .is_none_or(|t| t.elapsed().as_millis() as u64 >= stats_every_ms);
        if due {
            self.refresh_workloads();
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
        let levels_present: BTreeSet<QosLevel> = self.scan.levels_present.clone();
        let psis: Vec<tidal_cgroupfs::Psi> = self
            .online_psi
            .iter_mut()
            .filter(|(l, _)| levels_present.contains(l))
            .filter_map(|(_, f)| {
                f.read()
                    .ok()
                    .and_then(|t| tidal_cgroupfs::psi::parse_psi(t).ok())
            })
            .collect();
        let max = |f: fn(&tidal_cgroupfs::Psi) -> f64| {
            psis.iter()
                .map(f)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        };
        let online_cpu_psi = max(|p| p.some.avg10);
        let online_cpu_psi_full = max(|p| p.full.avg10);
        let mem = read_meminfo().unwrap_or_default();
        Snapshot {
            now_ms: self.now_ms(),
            cpus: self.cpus.clone(),
            node_busy_cpus: node_busy,
            node_busy_short_cpus: self.short.0,
            offline_usage_cpus: offline_busy,
            offline_usage_short_cpus: self.short.1,
            online_cpu_psi,
            online_cpu_psi_full,
            mem_total_bytes: mem.total,
            mem_available_bytes: mem.available,
            levels_present,
            workloads: self.workloads.clone(),
        }
    }
}
