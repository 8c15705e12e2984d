//! The agent's Prometheus metrics (OpenMetrics text via prometheus-client).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use tidal_model::{QosLevel, Snapshot};

type FGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Wl {
    pub workload: String,
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WlRes {
    pub workload: String,
    pub level: String,
    pub resource: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Lvl {
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Tier {
    /// The kubelet's tier group, as the kubelet names it.
    pub tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Protect {
    /// The group, relative to the tidal root ("" is the root).
    pub group: String,
    /// `min` or `low`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub kind: String,
    pub reason: String,
}

pub struct Metrics {
    pub registry: Registry,
    wl_cpu: Family<Wl, FGauge>,
    wl_mem: Family<Wl, FGauge>,
    wl_procs: Family<Wl, FGauge>,
    wl_cpuset: Family<Wl, FGauge>,
    wl_throttled: Family<Wl, FGauge>,
    wl_throttled_periods: Family<Wl, FGauge>,
    wl_files: Family<Wl, FGauge>,
    wl_mem_request: Family<Wl, FGauge>,
    mem_ceiling: FGauge,
    online_mem_psi: FGauge,
    files_over: FGauge,
    protection: Family<Protect, FGauge>,
    protection_labels: Vec<Protect>,
    oom_adj: Family<Lvl, FGauge>,
    oom_kills: Family<Lvl, FGauge>,
    evictions: Family<Lvl, FGauge>,
    eviction_requests: Family<Lvl, FGauge>,
    io_limited: FGauge,
    io_weights: FGauge,
    unprotected: Family<Tier, FGauge>,
    unprotected_labels: Vec<Tier>,
    tiers_read: FGauge,
    /// The node-fact gauges are registered once first known (never a 0 that means "not read").
    io_registered: bool,
    tiers_registered: bool,
    wl_psi: Family<WlRes, FGauge>,
    level_cpu: Family<Lvl, FGauge>,
    level_workloads: Family<Lvl, FGauge>,
    pub actions: Family<ActionLabels, Counter>,
    pub action_errors: Family<ActionLabels, Counter>,
    pub tick_seconds: Histogram,
    pub ticks: Counter,
    pub early_ticks: Counter,
    /// Times the stall guard froze offline because the agent's loop had stopped.
    pub stall_brakes: Counter,
    node_busy: FGauge,
    offline_usage: FGauge,
    online_need: FGauge,
    offline_cpus: FGauge,
    online_psi: FGauge,
    tighten: FGauge,
    mem_available: FGauge,
    agent_cpu: FGauge,
    agent_rss: FGauge,
    tick_worst: FGauge,
    writes: Counter,
    unsupported: Family<KnobLabel, FGauge>,
    kill_survivors: FGauge,
    missing: Family<WhatLabel, FGauge>,
    source_events: Family<EventLabel, FGauge>,
    source_values: Family<NameLabel, FGauge>,
    source_degraded: FGauge,
    slo_observed: Family<ObjectiveLabel, FGauge>,
    slo_target: Family<ObjectiveLabel, FGauge>,
    slo_slack: Family<ObjectiveLabel, FGauge>,
    slo_stale: Family<ObjectiveLabel, FGauge>,
    slo_errors: Family<ObjectiveLabel, FGauge>,
    runq_workload: Family<Wl, RunqHist>,
    runq_level: Family<Lvl, RunqHist>,
    known: HashSet<(String, String)>,
    /// Objectives with gauges: those gone (a pod deleted, an annotation changed) lose them.
    known_slo: HashSet<ObjectiveLabel>,
}

/// A run-queue latency histogram fed with the BPF program's log2 slots.
#[derive(Clone, Debug, Default)]
pub struct RunqHist(std::sync::Arc<std::sync::Mutex<tidal_bpf::Hist>>);

impl RunqHist {
    fn add(&self, h: &tidal_bpf::Hist) {
        if let Ok(mut g) = self.0.lock() {
            g.merge(h);
        }
    }
}

impl prometheus_client::metrics::TypedMetric for RunqHist {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for RunqHist {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let h = match self.0.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        // Slot i holds waits in [2^i, 2^(i+1)) ns: its upper bound in seconds.
        let mut buckets: Vec<(f64, u64)> = h
            .slots
            .iter()
            .enumerate()
            .map(|(i, c)| ((1u64 << (i + 1)) as f64 / 1e9, *c))
            .collect();
        buckets.push((f64::INFINITY, 0));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_ns as f64 / 1e9,
            h.count,
            &buckets,
            None,
        )
    }
    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectiveLabel {
    pub workload: String,
    pub objective: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabel {
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KnobLabel {
    pub knob: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhatLabel {
    pub what: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("tidal");
        let m = Metrics {
            wl_cpu: Family::default(),
            wl_mem: Family::default(),
            wl_procs: Family::default(),
            wl_cpuset: Family::default(),
            wl_throttled: Family::default(),
            wl_throttled_periods: Family::default(),
            wl_files: Family::default(),
            wl_mem_request: Family::default(),
            mem_ceiling: FGauge::default(),
            online_mem_psi: FGauge::default(),
            files_over: FGauge::default(),
            protection: Family::default(),
            protection_labels: Vec::new(),
            oom_adj: Family::default(),
            oom_kills: Family::default(),
            evictions: Family::default(),
            eviction_requests: Family::default(),
            io_limited: FGauge::default(),
            io_weights: FGauge::default(),
            unprotected: Family::default(),
            unprotected_labels: Vec::new(),
            tiers_read: FGauge::default(),
            io_registered: false,
            tiers_registered: false,
            wl_psi: Family::default(),
            level_cpu: Family::default(),
            level_workloads: Family::default(),
            actions: Family::default(),
            action_errors: Family::default(),
            tick_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 18)),
            ticks: Counter::default(),
            early_ticks: Counter::default(),
            stall_brakes: Counter::default(),
            node_busy: FGauge::default(),
            offline_usage: FGauge::default(),
            online_need: FGauge::default(),
            offline_cpus: FGauge::default(),
            online_psi: FGauge::default(),
            tighten: FGauge::default(),
            mem_available: FGauge::default(),
            agent_cpu: FGauge::default(),
            agent_rss: FGauge::default(),
            tick_worst: FGauge::default(),
            writes: Counter::default(),
            unsupported: Family::default(),
            kill_survivors: FGauge::default(),
            missing: Family::default(),
            source_events: Family::default(),
            source_values: Family::default(),
            source_degraded: FGauge::default(),
            slo_observed: Family::default(),
            slo_target: Family::default(),
            slo_slack: Family::default(),
            slo_stale: Family::default(),
            slo_errors: Family::default(),
            runq_workload: Family::default(),
            runq_level: Family::default(),
            known: HashSet::new(),
            known_slo: HashSet::new(),
            registry: Registry::default(),
        };
        r.register(
            "workload_cpu_usage_cpus",
            "CPUs used by the workload over the last stats window",
            m.wl_cpu.clone(),
        );
        r.register(
            "workload_memory_bytes",
            "Memory charged to the workload",
            m.wl_mem.clone(),
        );
        r.register(
            "workload_tasks",
            "Tasks in the workload's group",
            m.wl_procs.clone(),
        );
        r.register(
            "workload_cpuset_cpus",
            "CPUs in the workload's cpuset (offline workloads)",
            m.wl_cpuset.clone(),
        );
        r.register(
            "workload_throttled_seconds",
            "Cumulative CFS throttled time of the workload",
            m.wl_throttled.clone(),
        );
        r.register(
            "workload_throttled_periods",
            "Cumulative CFS periods in which the workload was throttled",
            m.wl_throttled_periods.clone(),
        );
        r.register(
            "workload_pressure_avg10_percent",
            "PSI avg10 of the workload by resource (cpu, memory, io) and kind (some, full)",
            m.wl_psi.clone(),
        );
        r.register(
            "level_cpu_usage_cpus",
            "CPUs used by all workloads of a level",
            m.level_cpu.clone(),
        );
        r.register(
            "level_workloads",
            "Workloads per level",
            m.level_workloads.clone(),
        );
        r.register(
            "actions",
            "Writes the agent made, by kind and reason",
            m.actions.clone(),
        );
        r.register(
            "action_errors",
            "Actions that failed, by kind and reason",
            m.action_errors.clone(),
        );
        r.register(
            "tick_duration_seconds",
            "Time one control step took (measure, decide, apply)",
            m.tick_seconds.clone(),
        );
        r.register("ticks", "Control steps taken", m.ticks.clone());
        r.register(
            "early_ticks",
            "Control steps taken early because a short sample showed online need rising or a deep run-queue wait",
            m.early_ticks.clone(),
        );
        r.register(
            "stall_brakes",
            "Times the stall guard froze offline because the agent's own loop had stopped (interference.stall_after)",
            m.stall_brakes.clone(),
        );
        r.register(
            "node_busy_cpus",
            "Busy CPUs on the node over the last tick",
            m.node_busy.clone(),
        );
        r.register(
            "offline_usage_cpus",
            "CPUs used by offline work over the last tick",
            m.offline_usage.clone(),
        );
        r.register(
            "online_need_cpus",
            "Whole CPUs online work needs (usage + headroom, rounded up)",
            m.online_need.clone(),
        );
        r.register(
            "offline_cpus",
            "CPUs offline work may use",
            m.offline_cpus.clone(),
        );
        r.register(
            "online_cpu_pressure_avg10_percent",
            "Highest cpu.pressure some avg10 of the online levels",
            m.online_psi.clone(),
        );
        r.register(
            "interference_step",
            "Tightening step under online pressure (0 none .. 3 offline frozen)",
            m.tighten.clone(),
        );
        r.register(
            "node_memory_available_bytes",
            "MemAvailable",
            m.mem_available.clone(),
        );
        r.register(
            "agent_cpu_seconds",
            "CPU time the agent has used",
            m.agent_cpu.clone(),
        );
        r.register(
            "agent_resident_bytes",
            "The agent's resident memory",
            m.agent_rss.clone(),
        );
        r.register(
            "tick_worst_seconds",
            "Longest control step since start (the tick's worst case)",
            m.tick_worst.clone(),
        );
        r.register(
            "cgroup_writes",
            "cgroup files written by the agent's actuator",
            m.writes.clone(),
        );
        r.register(
            "unsupported_knob_marks",
            "Writes the kernel refused (EINVAL/EOPNOTSUPP), by knob: the knob is then left alone until the next slow re-probe",
            m.unsupported.clone(),
        );
        r.register(
            "kill_survivors",
            "Tasks that survived a kill (freeze, SIGKILL, thaw)",
            m.kill_survivors.clone(),
        );
        r.register(
            "missing_readings",
            "Readings that failed and were taken as missing (never as zero), by kind",
            m.missing.clone(),
        );
        r.register(
            "workload_open_files",
            "Open file descriptors of the workload's tasks",
            m.wl_files.clone(),
        );
        r.register(
            "workload_memory_request_bytes",
            "The workload's declared memory request (what its protection is sized from)",
            m.wl_mem_request.clone(),
        );
        r.register(
            "offline_memory_ceiling_bytes",
            "The offline parent's memory ceiling in force (v2 memory.high, v1 limit)",
            m.mem_ceiling.clone(),
        );
        r.register(
            "online_memory_pressure",
            "Highest memory.pressure some avg10 (percent) among online groups",
            m.online_mem_psi.clone(),
        );
        r.register(
            "workloads_over_open_files",
            "Workloads holding more open files than their level's ceiling",
            m.files_over.clone(),
        );
        r.register(
            "memory_protection_bytes",
            "memory.min / memory.low tidal keeps on online workloads and their ancestors (v2)",
            m.protection.clone(),
        );
        r.register(
            "oom_score_adj",
            "The oom_score_adj each level's tasks get",
            m.oom_adj.clone(),
        );
        r.register(
            "oom_kills",
            "Tasks the kernel's OOM killer took from each level's workloads since the agent started",
            m.oom_kills.clone(),
        );
        r.register(
            "evictions",
            "Local workloads of each level tidal killed for memory since the agent started",
            m.evictions.clone(),
        );
        r.register(
            "eviction_requests",
            "Pods of each level whose eviction tidal requested from the Eviction API since the agent started (the API may refuse one)",
            m.eviction_requests.clone(),
        );
        r.register(
            "offline_io_limited_groups",
            "Offline groups holding the configured IO limits (io.max / blkio.throttle)",
            m.io_limited.clone(),
        );
        r.register(
            "source_events",
            "Events of the workload source since start, by kind (evictions, evictions_refused, batch_patch_conflicts, watch_errors, invalid_markings, …)",
            m.source_events.clone(),
        );
        r.register(
            "source_value",
            "Values of the workload source: each input of the batch-resource formula and the published batch_cpu_milli / batch_memory_bytes",
            m.source_values.clone(),
        );
        r.register(
            "source_degraded",
            "1 while the workload source cannot refresh (apiserver unreachable): the last known workloads stay enforced",
            m.source_degraded.clone(),
        );
        r.register(
            "runq_latency_seconds",
            "Run-queue wait of online workloads' tasks (eBPF): from becoming runnable to running; counted from the end of the agent's first tick (its own start is not counted)",
            m.runq_workload.clone(),
        );
        r.register(
            "level_runq_latency_seconds",
            "Run-queue wait of each online level's tasks (eBPF), counted from the end of the agent's first tick",
            m.runq_level.clone(),
        );
        r.register(
            "slo_observed_seconds",
            "A latency objective's quantile over the last slo.interval (absent while there is no fresh reading)",
            m.slo_observed.clone(),
        );
        r.register(
            "slo_target_seconds",
            "A latency objective's target",
            m.slo_target.clone(),
        );
        r.register(
            "slo_slack",
            "(target - observed) / target: below 0 the objective is missed and offline is tightened",
            m.slo_slack.clone(),
        );
        r.register(
            "slo_stale",
            "1 while an objective has no fresh reading (unreachable, unreadable or too few requests): pressure rules only",
            m.slo_stale.clone(),
        );
        r.register(
            "slo_scrape_errors",
            "Failed scrapes of an objective's metrics since start",
            m.slo_errors.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Records a tick's duration as the worst case if it is one.
    pub fn tick_worst(&self, secs: f64) {
        if secs > self.tick_worst.get() {
            self.tick_worst.set(secs);
        }
    }

    pub fn actuator(&self, s: &tidal_actuator::ActStats) {
        let done = self.writes.get();
        if s.writes > done {
            self.writes.inc_by(s.writes - done);
        }
        for (k, n) in &s.unsupported {
            self.unsupported
                .get_or_create(&KnobLabel {
                    knob: k.name().to_string(),
                })
                .set(*n as f64);
        }
        self.kill_survivors.set(s.kill_survivors as f64);
    }

    /// OOM kills, kills and eviction requests by level; every level is there once anything was
    /// read (a zero is a result), and OOM kills only where they can be read.
    pub fn tally(&self, t: &super::view::Tally) {
        type ByLevel = std::collections::BTreeMap<tidal_model::QosLevel, u64>;
        for l in tidal_model::QosLevel::ALL {
            let lvl = Lvl {
                level: l.to_string(),
            };
            let n = |m: &ByLevel| m.get(&l).copied().unwrap_or(0) as f64;
            if let Some(k) = &t.oom_kills {
                self.oom_kills.get_or_create(&lvl).set(n(k));
            }
            self.evictions.get_or_create(&lvl).set(n(&t.evictions));
            self.eviction_requests
                .get_or_create(&lvl)
                .set(n(&t.eviction_requests));
        }
    }

    /// The workload source's state: its counts (evictions, refusals, patch conflicts, watch
    /// errors…), its values (each input of the batch formula) and whether it is degraded.
    pub fn source(&self, h: &tidal_source::SourceHealth) {
        for (event, n) in &h.counters {
            self.source_events
                .get_or_create(&EventLabel {
                    event: event.clone(),
                })
                .set(*n as f64);
        }
        for (name, v) in &h.gauges {
            self.source_values
                .get_or_create(&NameLabel { name: name.clone() })
                .set(*v);
        }
        self.source_degraded.set(if h.degraded { 1.0 } else { 0.0 });
    }

    /// Adds a tick's run-queue waits per online workload and level.
    pub fn runq(&self, waits: &[super::runq::Waits]) {
        for w in waits {
            self.runq_workload
                .get_or_create(&Wl {
                    workload: w.workload.clone(),
                    level: w.level.to_string(),
                })
                .add(&w.hist);
            self.runq_level
                .get_or_create(&Lvl {
                    level: w.level.to_string(),
                })
                .add(&w.hist);
        }
    }

    /// Each latency objective's last reading; an objective without one has no observed value or
    /// slack, and one no longer declared has no gauges.
    pub fn slo(&mut self, readings: &[super::slo::Reading]) {
        let mut now = HashSet::with_capacity(readings.len());
        for r in readings {
            let l = ObjectiveLabel {
                workload: r.workload.clone(),
                objective: r.what.clone(),
            };
            // A stale reading is no reading: its last value is not the present one.
            match r.observed_s.filter(|_| !r.stale) {
                Some(o) => {
                    self.slo_observed.get_or_create(&l).set(o);
                }
                None => {
                    self.slo_observed.remove(&l);
                }
            }
            match r.slack.filter(|_| !r.stale) {
                Some(s) => {
                    self.slo_slack.get_or_create(&l).set(s);
                }
                None => {
                    self.slo_slack.remove(&l);
                }
            }
            self.slo_target.get_or_create(&l).set(r.target_s);
            self.slo_stale
                .get_or_create(&l)
                .set(if r.stale { 1.0 } else { 0.0 });
            self.slo_errors
                .get_or_create(&l)
                .set(r.scrape_errors as f64);
            now.insert(l);
        }
        for l in self.known_slo.difference(&now) {
            self.slo_observed.remove(l);
            self.slo_slack.remove(l);
            self.slo_target.remove(l);
            self.slo_stale.remove(l);
            self.slo_errors.remove(l);
        }
        self.known_slo = now;
    }

    pub fn missing(&self, counts: &std::collections::BTreeMap<&'static str, u64>) {
        for (what, n) in counts {
            self.missing
                .get_or_create(&WhatLabel {
                    what: (*what).to_string(),
                })
                .set(*n as f64);
        }
    }

    /// Node gauges; a reading that is missing leaves its gauge at the last value it had.
    pub fn node(&self, snap: &Snapshot, need: u32, offline_cpus: usize, tighten: u8) {
        let set = |g: &FGauge, v: Option<f64>| {
            if let Some(v) = v {
                g.set(v);
            }
        };
        set(&self.node_busy, snap.node_busy_cpus);
        set(&self.offline_usage, snap.offline_usage_cpus);
        self.online_need.set(f64::from(need));
        self.offline_cpus.set(offline_cpus as f64);
        set(&self.online_psi, snap.online_cpu_psi);
        self.tighten.set(f64::from(tighten));
        set(
            &self.mem_available,
            snap.mem_available_bytes.map(|b| b as f64),
        );
        set(&self.online_mem_psi, snap.online_mem_psi);
    }

    /// The memory ceiling, the open-files ceiling's state, memory protection, OOM ordering and
    /// the IO limits in force.
    pub fn memory_qos(&mut self, st: &tidal_policy::PolicyState, cfg: &tidal_policy::Config) {
        if let Some(c) = st.ceiling {
            self.mem_ceiling.set(c as f64);
        }
        self.files_over.set(st.files_over.len() as f64);
        let mut now = Vec::new();
        for (t, (min, low)) in &st.mem_protect {
            for (kind, v) in [("min", min), ("low", low)] {
                let l = Protect {
                    group: t.to_string(),
                    kind: kind.into(),
                };
                self.protection.get_or_create(&l).set(*v as f64);
                now.push(l);
            }
        }
        // Protection taken back (a level left without protected workloads) drops out; the rest
        // stays in place, so a scrape never sees the family empty.
        for gone in self.protection_labels.iter().filter(|l| !now.contains(l)) {
            self.protection.remove(gone);
        }
        self.protection_labels = now;
        for l in tidal_model::QosLevel::ALL {
            self.oom_adj
                .get_or_create(&Lvl {
                    level: l.to_string(),
                })
                .set(f64::from(cfg.memory.oom_score_adj.of(l)));
        }
        // Groups written with "no limit" do not count: only configured limits do.
        let io = &cfg.io;
        let limited = if io.offline_max.is_set() || io.offline_low_max.is_set() {
            st.io_levels.len() + st.io_limited.len() + st.io_limited_foreign.len()
        } else {
            0
        };
        self.io_limited.set(limited as f64);
    }

    /// What the static pass found about the node: whether the IO weights act, and in pod mode
    /// how many kubelet tiers could be read and which carry no memory protection (a tier that
    /// gained it drops out). Each gauge appears once known.
    pub fn node_facts(&mut self, io_in_force: bool, tiers: Option<(usize, &[String])>) {
        if !self.io_registered {
            self.registry.register(
                "io_weights_in_force",
                "1 when an IO scheduler reads the files the level IO weights are in (BFQ, or blk-iocost enabled), else 0",
                self.io_weights.clone(),
            );
            self.io_registered = true;
        }
        self.io_weights.set(if io_in_force { 1.0 } else { 0.0 });
        let Some((read, tiers)) = tiers else {
            return;
        };
        if !self.tiers_registered {
            self.registry.register(
                "kubelet_tiers_read",
                "kubelet QoS tiers whose memory.min/low could be read (pod mode): with none read, nothing is known about their protection",
                self.tiers_read.clone(),
            );
            self.registry.register(
                "kubelet_tier_unprotected",
                "1 for each kubelet QoS tier without memory.min/low (pod mode): online pods' protection stops at the pod",
                self.unprotected.clone(),
            );
            self.tiers_registered = true;
        }
        self.tiers_read.set(read as f64);
        let now: Vec<Tier> = tiers.iter().map(|t| Tier { tier: t.clone() }).collect();
        for l in &now {
            self.unprotected.get_or_create(l).set(1.0);
        }
        for gone in self.unprotected_labels.iter().filter(|l| !now.contains(l)) {
            self.unprotected.remove(gone);
        }
        self.unprotected_labels = now;
    }

    /// Per-workload and per-level gauges; label sets of workloads that are gone are dropped.
    /// `offline_cpus`: how many CPUs offline workloads may use now (None: all).
    pub fn workloads(&mut self, snap: &Snapshot, offline_cpus: Option<usize>) {
        let mut now = HashSet::new();
        // Per level: the CPU of the workloads read (None: none of them was), and how many.
        let mut level_cpu = std::collections::BTreeMap::<QosLevel, (Option<f64>, u32)>::new();
        for w in &snap.workloads {
            let l = Wl {
                workload: w.group.to_string(),
                level: w.level.to_string(),
            };
            now.insert((l.workload.clone(), l.level.clone()));
            let e = level_cpu.entry(w.level).or_default();
            if let Some(v) = w.cpu_usage_cpus {
                e.0 = Some(e.0.unwrap_or(0.0) + v);
            }
            e.1 += 1;
            // A workload whose reading is missing has no sample this time, rather than a zero.
            match w.cpu_usage_cpus {
                Some(v) => {
                    self.wl_cpu.get_or_create(&l).set(v);
                }
                None => {
                    self.wl_cpu.remove(&l);
                }
            }
            match w.memory_bytes {
                Some(v) => {
                    self.wl_mem.get_or_create(&l).set(v as f64);
                }
                None => {
                    self.wl_mem.remove(&l);
                }
            }
            match w.procs {
                Some(v) => {
                    self.wl_procs.get_or_create(&l).set(v as f64);
                }
                None => {
                    self.wl_procs.remove(&l);
                }
            }
            let allowed = match (w.level.is_online(), offline_cpus) {
                (false, Some(n)) => n,
                _ => snap.cpus.len(),
            };
            self.wl_cpuset.get_or_create(&l).set(allowed as f64);
            match w.open_files {
                Some(v) => {
                    self.wl_files.get_or_create(&l).set(v as f64);
                }
                None => {
                    self.wl_files.remove(&l);
                }
            }
            if let Some(r) = w.memory_request {
                self.wl_mem_request.get_or_create(&l).set(r as f64);
            }
            if let Some(t) = w.throttled_us {
                self.wl_throttled.get_or_create(&l).set(t as f64 / 1e6);
            }
            if let Some(t) = w.nr_throttled {
                self.wl_throttled_periods.get_or_create(&l).set(t as f64);
            }
            for (res, p) in [
                ("cpu", w.pressure.cpu),
                ("memory", w.pressure.memory),
                ("io", w.pressure.io),
            ] {
                if let Some(p) = p {
                    for (kind, v) in [("some", Some(p.some_avg10)), ("full", p.full_avg10)] {
                        let Some(v) = v else { continue };
                        self.wl_psi
                            .get_or_create(&WlRes {
                                workload: l.workload.clone(),
                                level: l.level.clone(),
                                resource: res.to_string(),
                                kind: kind.to_string(),
                            })
                            .set(v);
                    }
                }
            }
        }
        for (workload, level) in self.known.difference(&now) {
            let l = Wl {
                workload: workload.clone(),
                level: level.clone(),
            };
            self.wl_cpu.remove(&l);
            self.wl_mem.remove(&l);
            self.wl_procs.remove(&l);
            self.wl_cpuset.remove(&l);
            self.wl_throttled.remove(&l);
            self.wl_throttled_periods.remove(&l);
            self.wl_files.remove(&l);
            self.wl_mem_request.remove(&l);
            for res in ["cpu", "memory", "io"] {
                for kind in ["some", "full"] {
                    self.wl_psi.remove(&WlRes {
                        workload: workload.clone(),
                        level: level.clone(),
                        resource: res.to_string(),
                        kind: kind.to_string(),
                    });
                }
            }
        }
        self.known = now;
        for l in QosLevel::ALL {
            let (cpu, n) = level_cpu.get(&l).copied().unwrap_or_default();
            let lbl = Lvl {
                level: l.to_string(),
            };
            // No workloads use no CPU; workloads none of which could be read give no value.
            match (cpu, n) {
                (Some(c), _) => {
                    self.level_cpu.get_or_create(&lbl).set(c);
                }
                (None, 0) => {
                    self.level_cpu.get_or_create(&lbl).set(0.0);
                }
                (None, _) => {
                    self.level_cpu.remove(&lbl);
                }
            }
            self.level_workloads.get_or_create(&lbl).set(f64::from(n));
        }
        if let Ok(me) = tidal_cgroupfs::proc::self_stat() {
            self.agent_cpu.set(me.cpu_seconds);
            self.agent_rss.set(me.rss_bytes as f64);
        }
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::slo::Reading;

    fn reading(workload: &str, observed: Option<f64>) -> Reading {
        Reading {
            workload: workload.into(),
            what: "p99 of m".into(),
            target_s: 0.005,
            observed_s: observed,
            slack: observed.map(|o| (0.005 - o) / 0.005),
            requests: None,
            age_s: None,
            stale: observed.is_none(),
            error: None,
            scrape_errors: 0,
        }
    }

    #[test]
    fn an_objective_without_a_reading_has_no_observed_value_and_one_gone_has_no_gauges() {
        let mut m = Metrics::new();
        m.slo(&[reading("ns/a", Some(0.004)), reading("ns/b", Some(0.001))]);
        let t = m.encode();
        assert!(
            t.contains("tidal_slo_observed_seconds{workload=\"ns/a\""),
            "{t}"
        );
        assert!(t.contains("workload=\"ns/b\""), "{t}");
        // a's last reading is stale (its value kept, not exported); b's pod is gone.
        let mut stale = reading("ns/a", Some(0.004));
        stale.stale = true;
        m.slo(&[stale]);
        let t = m.encode();
        assert!(
            !t.contains("tidal_slo_observed_seconds{workload=\"ns/a\""),
            "{t}"
        );
        assert!(!t.contains("tidal_slo_slack{workload=\"ns/a\""), "{t}");
        assert!(t.contains("tidal_slo_stale{workload=\"ns/a\""), "{t}");
        assert!(!t.contains("workload=\"ns/b\""), "{t}");
    }

    #[test]
    fn a_level_s_cpu_is_the_sum_of_its_workloads_read_and_absent_when_none_was() {
        use tidal_model::{QosLevel, Target, WorkloadSnapshot};
        let wl = |name: &str, level: QosLevel, cpu: Option<f64>| {
            let mut w = WorkloadSnapshot::unread(
                Target::Tidal(level.group_path().join(name).unwrap()),
                level,
                name,
            );
            w.cpu_usage_cpus = cpu;
            w
        };
        let mut m = Metrics::new();
        let snap = Snapshot {
            workloads: vec![
                wl("a", QosLevel::Online, Some(0.5)),
                wl("b", QosLevel::Online, None),
                wl("c", QosLevel::Offline, None),
            ],
            ..Default::default()
        };
        m.workloads(&snap, None);
        let t = m.encode();
        let gauge = |level: &str| {
            t.lines()
                .find(|l| {
                    l.starts_with(&format!("tidal_level_cpu_usage_cpus{{level=\"{level}\"}}"))
                })
                .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
        };
        assert_eq!(gauge("online").as_deref(), Some("0.5"), "{t}");
        assert_eq!(gauge("offline"), None, "none read: no value, not 0\n{t}");
        assert_eq!(
            gauge("offline-low").as_deref(),
            Some("0.0"),
            "no workloads: 0\n{t}"
        );
    }
}
