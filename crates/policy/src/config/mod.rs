//! The agent's configuration: YAML with documented defaults, parsed and validated without IO. Every
//! validation error names the field and the reason; unknown fields are errors (typos must not pass).

pub mod io;
pub mod kubernetes;
pub mod slo;

use serde::{Deserialize, Serialize};
use std::fmt;

/// A duration in milliseconds; YAML takes `100ms`, `2s`, `1m` or a plain number of milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub u64);

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0))
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Millis(n)),
            Raw::S(s) => {
                let d = humantime::parse_duration(s.trim()).map_err(|e| {
                    serde::de::Error::custom(format!("invalid duration '{s}': {e}"))
                })?;
                if d.subsec_nanos() % 1_000_000 != 0 {
                    return Err(serde::de::Error::custom(format!(
                        "invalid duration '{s}': tidal counts whole milliseconds (e.g. 10ms, 1s)"
                    )));
                }
                u64::try_from(d.as_millis()).map(Millis).map_err(|_| {
                    serde::de::Error::custom(format!("invalid duration '{s}': too long"))
                })
            }
        }
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0ms");
        }
        write!(
            f,
            "{}",
            humantime::format_duration(std::time::Duration::from_millis(self.0))
        )
    }
}

/// How offline work is pushed off the CPUs online work needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Suppression {
    /// Offline's cpuset is the CPUs online does not need (idle class stays on). Default.
    Cpuset,
    /// CFS quota on the offline parent sized to the spare CPUs (the peers' way; for comparison).
    Quota,
    /// Idle class only, no dynamic confinement.
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuConfig {
    /// CPUs added to online usage before rounding up to whole CPUs.
    pub headroom_cpus: f64,
    /// Online usage below this is noise (the agent, kernel threads, a large node's daemons): online
    /// then needs no CPU.
    pub noise_floor_cpus: f64,
    /// Offline keeps at least this many CPUs; 0 is allowed only with `allow_freeze`.
    pub min_offline_cpus: u32,
    /// When online needs every CPU, freeze offline work instead of leaving it one CPU.
    pub allow_freeze: bool,
    /// Online need must stay low this long before offline grows by a step (hysteresis).
    pub grow_after: Millis,
    /// CPUs offline gains per grow step.
    pub grow_step: u32,
    pub suppression: Suppression,
    /// Cpuset confinement only on machines with at least this many CPUs. Below, offline keeps every
    /// CPU and the idle class protects online: measured on 2 CPUs, confinement cost offline work
    /// without lowering the online tail (the CPU online does not use is left idle).
    pub confine_min_cpus: u32,
}

impl Default for CpuConfig {
    fn default() -> Self {
        CpuConfig {
            headroom_cpus: 0.25,
            noise_floor_cpus: 0.1,
            min_offline_cpus: 1,
            allow_freeze: false,
            grow_after: Millis(2_000),
            grow_step: 1,
            suppression: Suppression::Cpuset,
            confine_min_cpus: 4,
        }
    }
}

/// Which PSI line of the online groups counts as interference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PsiLine {
    /// Some online task waited: includes online's own queueing behind other online tasks.
    Some,
    /// Every online task of a level waited at once: CPU taken by something else.
    Full,
}

/// How the ladder's CPU-time cap step limits offline work. The default is the duty cycle: a CFS
/// quota on the idle offline parent made online's tail worse, not better, on the kernels measured
/// (docs/RESULTS.md, "The CPU-time cap step").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapMode {
    /// CFS quota (`cpu.max` / `cpu.cfs_quota_us`) on the offline parent and offline pods.
    Quota,
    /// Offline frozen for part of every period of ten ticks, thawed for the rest (offline pods
    /// with liveness or startup probes get a quota instead).
    DutyCycle,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterferenceConfig {
    /// Online `cpu.pressure` avg10 (percent) above which offline is tightened.
    pub psi_threshold: f64,
    /// Which line of `cpu.pressure` is compared with the threshold.
    pub psi_line: PsiLine,
    /// At most one tightening step per this interval.
    pub escalate_every: Millis,
    /// Pressure must stay below the threshold this long before one step is released.
    pub calm_period: Millis,
    /// The ladder's CPU-time cap step: how, and what share of its CPUs offline keeps.
    pub cap_mode: CapMode,
    pub cap_fraction: f64,
    /// After a ladder step is released, the agent ticks every `watch_tick` for this long, so that
    /// interference that comes back with it is met within tens of milliseconds, not a whole tick;
    /// 0 turns it off. A `watch_tick` longer than `tick` is `tick`.
    pub release_watch: Millis,
    pub watch_tick: Millis,
    /// A quantile signal (an objective, run-queue latency) over its target tightens only when its
    /// window's count over the target is unlikely by sampling noise alone: its chance (the binomial
    /// tail, `Signal::excess_z`) is under that of a normal deviate this far out. A miss within the
    /// noise holds growth instead. 1.645 is one-sided 95%; 0 turns the test off (any miss tightens).
    pub min_excess_z: f64,
    /// A quantile signal missed this deeply (slack below it: −0.5 is 1.5× the target), beyond
    /// sampling noise (judged at the target), freezes every offline level at once, passing over the
    /// cpuset shrink and the CPU-time cap: the cap's running part lets the tail through at a load
    /// step. −1000: never.
    pub freeze_below: f64,
    /// When the agent's own loop has not come round for this long (its CPU taken, a read that
    /// hangs), a guard thread (real-time priority where the kernel allows it) freezes every offline
    /// group at once; the next tick takes the freeze into the ladder. 0 turns the guard off (one
    /// off at start stays off until a restart); a value under four `sample_interval`s (the loop
    /// sleeps up to one between rounds) acts as that.
    pub stall_after: Millis,
}

impl Default for InterferenceConfig {
    fn default() -> Self {
        InterferenceConfig {
            psi_threshold: 5.0,
            psi_line: PsiLine::Full,
            escalate_every: Millis(1_000),
            calm_period: Millis(10_000),
            cap_mode: CapMode::DutyCycle,
            cap_fraction: 0.5,
            release_watch: Millis(1_000),
            watch_tick: Millis(20),
            min_excess_z: 1.645,
            freeze_below: -0.5,
            stall_after: Millis(1_000),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Evict offline work when MemAvailable falls below this percentage of MemTotal…
    pub low_watermark_percent: f64,
    /// …or below this many bytes, if set (the larger of the two applies).
    pub low_watermark_bytes: Option<u64>,
    /// At most one kill per this interval.
    pub kill_interval: Millis,
    /// `oom_score_adj` of each level's tasks: the kernel's OOM killer takes offline first.
    pub oom_score_adj: OomScores,
    /// Online levels may go below -997 (what the kubelet gives Guaranteed pods) only with this.
    pub allow_below_guaranteed: bool,
    /// v2: an online workload's `memory.min` and `memory.low` are these shares of its declared
    /// request (`tidal run --memory-request`, a pod's memory request).
    pub min_ratio: f64,
    pub low_ratio: f64,
    /// The offline parent's dynamic memory ceiling.
    pub ceiling: CeilingConfig,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            low_watermark_percent: 5.0,
            low_watermark_bytes: None,
            kill_interval: Millis(10_000),
            oom_score_adj: OomScores::default(),
            allow_below_guaranteed: false,
            min_ratio: 0.0,
            low_ratio: 1.0,
            ceiling: CeilingConfig::default(),
        }
    }
}

/// `oom_score_adj` per level, in [-1000, 1000].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct OomScores {
    pub online_critical: i32,
    pub online_high: i32,
    pub online: i32,
    pub offline: i32,
    pub offline_low: i32,
}

impl Default for OomScores {
    fn default() -> Self {
        OomScores {
            online_critical: -900,
            online_high: -500,
            online: 0,
            offline: 999,
            offline_low: 1000,
        }
    }
}

impl OomScores {
    pub fn of(&self, level: tidal_model::QosLevel) -> i32 {
        use tidal_model::QosLevel as L;
        match level {
            L::OnlineCritical => self.online_critical,
            L::OnlineHigh => self.online_high,
            L::Online => self.online,
            L::Offline => self.offline,
            L::OfflineLow => self.offline_low,
        }
    }
}

/// The offline parent's memory ceiling (v2 `memory.high`, v1 `memory.limit_in_bytes`), kept between
/// two shares of RAM: cut a step when node memory runs short or online memory pressure rises, raised
/// half a step after a calm period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CeilingConfig {
    pub enabled: bool,
    /// Shares of MemTotal the ceiling stays between.
    pub min_fraction: f64,
    pub max_fraction: f64,
    /// Cut when MemAvailable is under this percentage of MemTotal…
    pub reserve_percent: f64,
    /// …or online `memory.pressure` some avg10 is over this percentage…
    pub online_psi_threshold: f64,
    /// …or the kernel scans more than this many pages per second for reclaim (kswapd and direct):
    /// free memory ran out and pages are taken from whoever has them, online's working set and
    /// page cache included. This trigger only trims offline to a step over its working set (its
    /// page cache); 0 turns it off.
    pub reclaim_scan_threshold: f64,
    /// The step, as a share of MemTotal. A cut for short memory or online pressure goes at least a
    /// step down, and at once to a step over offline's working set when the ceiling is far above
    /// it; the reclaim trigger trims to a step over that working set only. A raise is half a step.
    pub step_fraction: f64,
    /// At most one cut per this interval.
    pub interval: Millis,
    /// A raise needs this long without a reason to cut.
    pub calm_period: Millis,
}

impl Default for CeilingConfig {
    fn default() -> Self {
        CeilingConfig {
            enabled: true,
            min_fraction: 0.1,
            max_fraction: 0.9,
            reserve_percent: 10.0,
            online_psi_threshold: 10.0,
            reclaim_scan_threshold: 25600.0,
            step_fraction: 0.05,
            interval: Millis(1_000),
            calm_period: Millis(10_000),
        }
    }
}

/// Run-queue latency from eBPF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BpfConfig {
    /// Load the BPF program (`--no-bpf` turns it off too).
    pub enabled: bool,
    /// An online workload whose run-queue p99 over the last tick is above this has interference:
    /// offline is tightened in the same tick. Default 1 ms, from the bench (docs/RESULTS.md): well
    /// above the waits isolation leaves, well below those of real CPU contention.
    pub runq_p99_threshold: slo::Latency,
    /// Fewer waits than this in a tick give no reading (counted after sampling).
    pub min_samples: u64,
    /// Record 1 in N wakeups, chosen at random (a power of two up to 1024): the in-kernel cost
    /// falls about N-fold; the histogram's quantiles stay unbiased, from fewer waits.
    pub sample: u32,
}

impl Default for BpfConfig {
    fn default() -> Self {
        BpfConfig {
            enabled: true,
            runq_p99_threshold: slo::Latency(0.001),
            min_samples: 20,
            sample: 1,
        }
    }
}

/// Open file descriptors per workload: a ceiling per offline level (upstream kernels have no files
/// cgroup to enforce one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// Open files a workload of each level may hold before tidal says so.
    pub online_critical_max: Option<u64>,
    pub online_high_max: Option<u64>,
    pub online_max: Option<u64>,
    pub offline_max: Option<u64>,
    pub offline_low_max: Option<u64>,
    /// Also freeze an offline workload over its ceiling (tidal's own workloads; pods and online
    /// work are only reported).
    pub stop: bool,
}

impl FilesConfig {
    /// Whether any level has a ceiling (then open files are counted on every tree read).
    pub fn any(&self) -> bool {
        tidal_model::QosLevel::ALL
            .iter()
            .any(|l| self.max_of(*l).0.is_some())
    }

    /// A level's ceiling, and the field that sets it (for messages).
    pub fn max_of(&self, level: tidal_model::QosLevel) -> (Option<u64>, &'static str) {
        use tidal_model::QosLevel;
        match level {
            QosLevel::OnlineCritical => (self.online_critical_max, "files.online_critical_max"),
            QosLevel::OnlineHigh => (self.online_high_max, "files.online_high_max"),
            QosLevel::Online => (self.online_max, "files.online_max"),
            QosLevel::Offline => (self.offline_max, "files.offline_max"),
            QosLevel::OfflineLow => (self.offline_low_max, "files.offline_low_max"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanupConfig {
    /// A workload group empty this long is removed.
    pub remove_empty_after: Millis,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        CleanupConfig {
            remove_empty_after: Millis(30_000),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Control loop period.
    pub tick: Millis,
    /// Between ticks, node and offline CPU time are sampled this often; a jump in online need
    /// triggers a tick at once (reaction time ≈ this interval).
    pub sample_interval: Millis,
    /// The tree and each workload's task count are re-read this often (full per-workload statistics
    /// are read on demand: /metrics, /state, low memory).
    pub stats_interval: Millis,
    /// Level settings are re-applied (drift repair) this often.
    pub static_interval: Millis,
    /// HTTP endpoint (`/metrics`, `/healthz`, `/state`).
    pub listen: String,
    /// The agent (local source) moves itself into a group of its own under the tidal root, at
    /// online-critical's CPU weight, unless it already runs inside the tree or on a pure v2 host run
    /// by systemd. Read at start only.
    pub agent_group: bool,
    pub cpu: CpuConfig,
    pub interference: InterferenceConfig,
    pub memory: MemoryConfig,
    pub cleanup: CleanupConfig,
    /// Open files per workload.
    pub files: FilesConfig,
    /// IO limits for offline work, blk-iocost.
    pub io: io::IoConfig,
    /// Run-queue latency (eBPF).
    pub bpf: BpfConfig,
    /// Latency objectives of online workloads.
    pub slo: slo::SloConfig,
    /// Pod mode (`tidal agent --source kubernetes`).
    pub kubernetes: kubernetes::KubernetesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick: Millis(100),
            sample_interval: Millis(50),
            stats_interval: Millis(1_000),
            static_interval: Millis(10_000),
            listen: "127.0.0.1:9477".to_string(),
            agent_group: true,
            cpu: CpuConfig::default(),
            interference: InterferenceConfig::default(),
            memory: MemoryConfig::default(),
            cleanup: CleanupConfig::default(),
            files: FilesConfig::default(),
            io: io::IoConfig::default(),
            bpf: BpfConfig::default(),
            slo: slo::SloConfig::default(),
            kubernetes: kubernetes::KubernetesConfig::default(),
        }
    }
}

/// One problem with a config: the field (dotted path) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn check(errs: &mut Vec<ConfigError>, ok: bool, field: &str, reason: String) {
    if !ok {
        errs.push(ConfigError {
            field: field.to_string(),
            reason,
        });
    }
}

fn between(errs: &mut Vec<ConfigError>, field: &str, v: Millis, lo: Millis, hi: Millis) {
    check(
        errs,
        v >= lo && v <= hi,
        field,
        format!("must be between {lo} and {hi} (got {v})"),
    );
}

fn range_f(errs: &mut Vec<ConfigError>, field: &str, v: f64, lo: f64, hi: f64, unit: &str) {
    check(
        errs,
        v.is_finite() && (lo..=hi).contains(&v),
        field,
        format!("must be between {lo} and {hi} {unit} (got {v})"),
    );
}

fn range_i(errs: &mut Vec<ConfigError>, field: &str, v: i32, lo: i32, hi: i32) {
    check(
        errs,
        (lo..=hi).contains(&v),
        field,
        format!("must be between {lo} and {hi} (got {v})"),
    );
}

fn range_u(errs: &mut Vec<ConfigError>, field: &str, v: u64, lo: u64, hi: u64) {
    check(
        errs,
        (lo..=hi).contains(&v),
        field,
        format!("must be between {lo} and {hi} (got {v})"),
    );
}

/// Removes the mapping entry at `path` (to parse the rest again); false if there is none.
fn remove_path(v: &mut serde_yaml_ng::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for k in parents {
        match cur.get_mut(k.as_str()) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    cur.as_mapping_mut()
        .and_then(|m| m.remove(last.as_str()))
        .is_some()
}

impl Config {
    /// Parses and validates YAML. An empty document gives the defaults. Every bad field is reported,
    /// one error each: a field that does not parse is set aside and the rest parsed again, so one type
    /// error does not hide the others.
    pub fn from_yaml(text: &str) -> Result<Config, Vec<ConfigError>> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
            vec![ConfigError {
                field: "(document)".into(),
                reason: e.to_string(),
            }]
        })?;
        let mut errs = Vec::new();
        let mut cfg = None;
        for _ in 0..64 {
            match serde_path_to_error::deserialize::<_, Config>(value.clone()) {
                Ok(c) => {
                    cfg = Some(c);
                    break;
                }
                Err(e) => {
                    let path: Vec<String> = e
                        .path()
                        .iter()
                        .filter_map(|s| match s {
                            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                            _ => None,
                        })
                        .collect();
                    let field = if path.is_empty() {
                        "(document)".to_string()
                    } else {
                        path.join(".")
                    };
                    errs.push(ConfigError {
                        field,
                        reason: e.into_inner().to_string(),
                    });
                    if !remove_path(&mut value, &path) {
                        break;
                    }
                }
            }
        }
        if let Some(c) = &cfg {
            if let Err(more) = c.validate() {
                // A field set aside above reads as its default here: no second error for it.
                let more: Vec<ConfigError> = more
                    .into_iter()
                    .filter(|m| !errs.iter().any(|x| x.field == m.field))
                    .collect();
                errs.extend(more);
            }
        }
        match cfg {
            Some(c) if errs.is_empty() => Ok(c),
            _ => Err(errs),
        }
    }

    /// The stall guard's limit in force: `interference.stall_after`, at least four
    /// `sample_interval`s (0: off).
    pub fn stall_limit(&self) -> Millis {
        match self.interference.stall_after.0 {
            0 => Millis(0),
            v => Millis(v.max(self.sample_interval.0.saturating_mul(4))),
        }
    }

    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut e = Vec::new();
        let tick = self.tick;
        between(&mut e, "tick", tick, Millis(10), Millis(10_000));
        between(
            &mut e,
            "sample_interval",
            self.sample_interval,
            Millis(5),
            tick,
        );
        between(
            &mut e,
            "stats_interval",
            self.stats_interval,
            tick,
            Millis(60_000),
        );
        between(
            &mut e,
            "static_interval",
            self.static_interval,
            tick,
            Millis(3_600_000),
        );
        check(
            &mut e,
            self.listen.parse::<std::net::SocketAddr>().is_ok(),
            "listen",
            format!(
                "must be IP:PORT, e.g. 127.0.0.1:9477 (got '{}')",
                self.listen.chars().take(80).collect::<String>()
            ),
        );
        let c = &self.cpu;
        range_f(
            &mut e,
            "cpu.headroom_cpus",
            c.headroom_cpus,
            0.0,
            1024.0,
            "CPUs",
        );
        range_f(
            &mut e,
            "cpu.noise_floor_cpus",
            c.noise_floor_cpus,
            0.0,
            1024.0,
            "CPUs",
        );
        check(
            &mut e,
            c.min_offline_cpus > 0 || c.allow_freeze,
            "cpu.min_offline_cpus",
            "0 needs cpu.allow_freeze: true (offline work cannot run on no CPU)".to_string(),
        );
        range_u(
            &mut e,
            "cpu.min_offline_cpus",
            c.min_offline_cpus.into(),
            0,
            1024,
        );
        range_u(&mut e, "cpu.grow_step", c.grow_step.into(), 1, 1024);
        range_u(
            &mut e,
            "cpu.confine_min_cpus",
            c.confine_min_cpus.into(),
            1,
            4096,
        );
        between(
            &mut e,
            "cpu.grow_after",
            c.grow_after,
            Millis(0),
            Millis(600_000),
        );
        let i = &self.interference;
        check(
            &mut e,
            i.psi_threshold.is_finite() && i.psi_threshold > 0.0 && i.psi_threshold <= 100.0,
            "interference.psi_threshold",
            format!("must be a percentage in (0, 100] (got {})", i.psi_threshold),
        );
        between(
            &mut e,
            "interference.escalate_every",
            i.escalate_every,
            tick,
            Millis(600_000),
        );
        range_f(
            &mut e,
            "interference.min_excess_z",
            i.min_excess_z,
            0.0,
            10.0,
            "(a normal deviate)",
        );
        range_f(
            &mut e,
            "interference.freeze_below",
            i.freeze_below,
            -1000.0,
            0.0,
            "(a slack: −0.5 is 1.5× the target)",
        );
        between(
            &mut e,
            "interference.calm_period",
            i.calm_period,
            Millis(1_000),
            Millis(3_600_000),
        );
        between(
            &mut e,
            "interference.release_watch",
            i.release_watch,
            Millis(0),
            Millis(60_000),
        );
        let floor = Millis(200);
        let cap = Millis(60_000);
        check(
            &mut e,
            i.stall_after.0 == 0 || (i.stall_after >= floor && i.stall_after <= cap),
            "interference.stall_after",
            format!(
                "must be 0 (off) or between {floor} and {cap} (got {})",
                i.stall_after
            ),
        );
        between(
            &mut e,
            "interference.watch_tick",
            i.watch_tick,
            Millis(5),
            Millis(10_000),
        );
        range_f(
            &mut e,
            "interference.cap_fraction",
            i.cap_fraction,
            0.05,
            0.95,
            "of offline's CPUs",
        );
        let m = &self.memory;
        range_f(
            &mut e,
            "memory.low_watermark_percent",
            m.low_watermark_percent,
            0.0,
            50.0,
            "percent",
        );
        if let Some(b) = m.low_watermark_bytes {
            range_u(&mut e, "memory.low_watermark_bytes", b, 0, 1 << 40);
        }
        for (f, v) in [
            ("online-critical", m.oom_score_adj.online_critical),
            ("online-high", m.oom_score_adj.online_high),
            ("online", m.oom_score_adj.online),
            ("offline", m.oom_score_adj.offline),
            ("offline-low", m.oom_score_adj.offline_low),
        ] {
            range_i(&mut e, &format!("memory.oom_score_adj.{f}"), v, -1000, 1000);
            if !f.starts_with("offline") && v < -997 && !m.allow_below_guaranteed {
                check(
                    &mut e,
                    false,
                    &format!("memory.oom_score_adj.{f}"),
                    format!("{v} is below -997, what the kubelet gives Guaranteed pods; set memory.allow_below_guaranteed: true to allow it"),
                );
            }
        }
        let o = &m.oom_score_adj;
        check(
            &mut e,
            o.offline_low >= o.offline
                && o.offline > o.online.max(o.online_high).max(o.online_critical)
                && o.online >= o.online_high
                && o.online_high >= o.online_critical,
            "memory.oom_score_adj",
            format!(
                "offline-low ({}) ≥ offline ({}) > online ({}) ≥ online-high ({}) ≥ online-critical ({}): the OOM killer must take offline first, then the lowest online level",
                o.offline_low, o.offline, o.online, o.online_high, o.online_critical
            ),
        );
        for (f, v) in [
            ("memory.min_ratio", m.min_ratio),
            ("memory.low_ratio", m.low_ratio),
        ] {
            range_f(&mut e, f, v, 0.0, 1.0, "of the request");
        }
        check(
            &mut e,
            m.min_ratio <= m.low_ratio,
            "memory.min_ratio",
            format!(
                "must not exceed memory.low_ratio ({} > {})",
                m.min_ratio, m.low_ratio
            ),
        );
        let c = &m.ceiling;
        for (f, v) in [
            ("memory.ceiling.min_fraction", c.min_fraction),
            ("memory.ceiling.max_fraction", c.max_fraction),
            ("memory.ceiling.step_fraction", c.step_fraction),
        ] {
            range_f(&mut e, f, v, 0.0, 1.0, "of MemTotal");
        }
        check(
            &mut e,
            c.min_fraction <= c.max_fraction,
            "memory.ceiling.min_fraction",
            format!(
                "the floor {} is above the ceiling's top {}",
                c.min_fraction, c.max_fraction
            ),
        );
        check(
            &mut e,
            c.step_fraction > 0.0,
            "memory.ceiling.step_fraction",
            "must be above 0".into(),
        );
        range_f(
            &mut e,
            "memory.ceiling.reserve_percent",
            c.reserve_percent,
            0.0,
            90.0,
            "percent",
        );
        range_f(
            &mut e,
            "memory.ceiling.online_psi_threshold",
            c.online_psi_threshold,
            0.0,
            100.0,
            "percent",
        );
        range_f(
            &mut e,
            "memory.ceiling.reclaim_scan_threshold",
            c.reclaim_scan_threshold,
            0.0,
            1e12,
            "pages per second",
        );
        between(
            &mut e,
            "memory.ceiling.interval",
            c.interval,
            Millis(100),
            Millis(600_000),
        );
        between(
            &mut e,
            "memory.ceiling.calm_period",
            c.calm_period,
            Millis(1_000),
            Millis(3_600_000),
        );
        for level in tidal_model::QosLevel::ALL {
            if let (Some(v), f) = self.files.max_of(level) {
                range_u(&mut e, f, v, 1, 1 << 30);
            }
        }
        between(
            &mut e,
            "memory.kill_interval",
            m.kill_interval,
            Millis(1_000),
            Millis(3_600_000),
        );
        between(
            &mut e,
            "cleanup.remove_empty_after",
            self.cleanup.remove_empty_after,
            Millis(1_000),
            Millis(86_400_000),
        );
        self.slo.validate(self.tick, &mut e);
        self.kubernetes.validate(&mut e);
        self.io.validate(&mut e);
        check(
            &mut e,
            self.bpf.sample.is_power_of_two() && self.bpf.sample <= 1024,
            "bpf.sample",
            format!("{}: must be a power of two from 1 to 1024", self.bpf.sample),
        );
        range_u(
            &mut e,
            "bpf.min_samples",
            self.bpf.min_samples,
            1,
            1_000_000,
        );
        check(
            &mut e,
            (1e-6..=10.0).contains(&self.bpf.runq_p99_threshold.0),
            "bpf.runq_p99_threshold",
            format!(
                "{}s: must be between 1us and 10s",
                self.bpf.runq_p99_threshold.0
            ),
        );
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Checks what only the machine can bound: CPU counts against its CPUs, memory against its RAM.
    pub fn validate_for(&self, cpus: u32, mem_total: Option<u64>) -> Result<(), Vec<ConfigError>> {
        let mut e = Vec::new();
        check(
            &mut e,
            self.cpu.min_offline_cpus <= cpus,
            "cpu.min_offline_cpus",
            format!(
                "must be at most the {cpus} CPUs of this machine (got {})",
                self.cpu.min_offline_cpus
            ),
        );
        if let (Some(b), Some(total)) = (self.memory.low_watermark_bytes, mem_total) {
            check(
                &mut e,
                b <= total / 2,
                "memory.low_watermark_bytes",
                format!(
                    "must be at most half of this machine's {} MiB of memory (got {} MiB): a higher watermark kills offline work with memory to spare",
                    total >> 20,
                    b >> 20
                ),
            );
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// The memory watermark in bytes for a node with `total` bytes.
    pub fn low_watermark(&self, total: u64) -> u64 {
        let pct = (total as f64 * self.memory.low_watermark_percent / 100.0) as u64;
        pct.max(self.memory.low_watermark_bytes.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_limit_is_never_under_four_sample_intervals_and_zero_is_off() {
        let mut c = Config::default();
        assert_eq!(c.stall_limit(), Millis(1_000));
        c.sample_interval = Millis(500);
        c.tick = Millis(500);
        assert!(
            c.validate().is_ok(),
            "a default limit under the floor is raised, not refused"
        );
        assert_eq!(c.stall_limit(), Millis(2_000));
        c.interference.stall_after = Millis(0);
        assert_eq!(c.stall_limit(), Millis(0));
    }

    #[test]
    fn empty_and_example_files_give_valid_configs() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        let ex = include_str!("../../../../examples/tidal.yaml");
        let c = Config::from_yaml(ex).unwrap();
        // The example documents the defaults: they must agree.
        assert_eq!(c, Config::default());
    }

    #[test]
    fn durations_take_units_or_milliseconds() {
        let c = Config::from_yaml("tick: 50ms\nstats_interval: 2s\ncpu:\n  grow_after: 1500\n")
            .unwrap();
        assert_eq!(c.tick, Millis(50));
        assert_eq!(c.stats_interval, Millis(2000));
        assert_eq!(c.cpu.grow_after, Millis(1500));
    }

    #[test]
    fn each_bad_field_has_its_own_message() {
        let table: &[(&str, &str, &str)] = &[
            ("tick: 1ms", "tick", "between 10ms and 10s"),
            ("tick: 100us", "tick", "whole milliseconds"),
            ("tick: soon", "tick", "invalid duration"),
            (
                "stats_interval: 10ms",
                "stats_interval",
                "between 100ms and 1m",
            ),
            (
                "sample_interval: 1s",
                "sample_interval",
                "between 5ms and 100ms",
            ),
            (
                "static_interval: 2h",
                "static_interval",
                "between 100ms and 1h",
            ),
            ("listen: localhost", "listen", "IP:PORT"),
            ("bpf:\n  sample: 3", "bpf.sample", "power of two"),
            ("bpf:\n  sample: 2048", "bpf.sample", "power of two"),
            ("bpf:\n  min_samples: 0", "bpf.min_samples", "between 1 and"),
            (
                "bpf:\n  runq_p99_threshold: 0s",
                "bpf.runq_p99_threshold",
                "between 1us and 10s",
            ),
            (
                "cpu:\n  headroom_cpus: -1",
                "cpu.headroom_cpus",
                "between 0 and 1024",
            ),
            (
                "cpu:\n  min_offline_cpus: 0",
                "cpu.min_offline_cpus",
                "allow_freeze",
            ),
            (
                "cpu:\n  grow_step: 0",
                "cpu.grow_step",
                "between 1 and 1024",
            ),
            (
                "cpu:\n  grow_step: 4000000000",
                "cpu.grow_step",
                "between 1 and 1024",
            ),
            (
                "cpu:\n  grow_after: 1h",
                "cpu.grow_after",
                "between 0ms and 10m",
            ),
            (
                "cpu:\n  suppression: magic",
                "suppression",
                "unknown variant",
            ),
            (
                "interference:\n  psi_threshold: 0",
                "interference.psi_threshold",
                "percentage",
            ),
            (
                "interference:\n  calm_period: 10ms",
                "interference.calm_period",
                "between 1s and 1h",
            ),
            (
                "interference:\n  stall_after: 100ms",
                "interference.stall_after",
                "0 (off) or between 200ms and 1m",
            ),
            (
                "interference:\n  stall_after: 2m",
                "interference.stall_after",
                "0 (off)",
            ),
            (
                "interference:\n  calm_period: 2h",
                "interference.calm_period",
                "between 1s",
            ),
            (
                "interference:\n  watch_tick: 1ms",
                "interference.watch_tick",
                "between 5ms",
            ),
            (
                "interference:\n  release_watch: 2m",
                "interference.release_watch",
                "between 0ms and 1m",
            ),
            (
                "interference:\n  escalate_every: 0ms",
                "interference.escalate_every",
                "between 100ms",
            ),
            (
                "memory:\n  low_watermark_percent: 80",
                "memory.low_watermark_percent",
                "between 0 and 50",
            ),
            (
                "memory:\n  kill_interval: 0s",
                "memory.kill_interval",
                "between 1s",
            ),
            (
                "memory:\n  kill_interval: 2h",
                "memory.kill_interval",
                "between 1s",
            ),
            (
                "memory:\n  low_watermark_bytes: 1000000000000000",
                "memory.low_watermark_bytes",
                "between 0 and",
            ),
            (
                "cleanup:\n  remove_empty_after: 1ms",
                "cleanup.remove_empty_after",
                "between 1s",
            ),
            (
                "cleanup:\n  remove_empty_after: 30d",
                "cleanup.remove_empty_after",
                "between 1s",
            ),
            (
                "memory:\n  low_ratio: 1.5",
                "memory.low_ratio",
                "between 0 and 1",
            ),
            (
                "memory:\n  min_ratio: -0.1",
                "memory.min_ratio",
                "between 0 and 1",
            ),
            (
                "memory:\n  min_ratio: 0.9\n  low_ratio: 0.5",
                "memory.min_ratio",
                "must not exceed",
            ),
            (
                "memory:\n  ceiling:\n    min_fraction: 0.8\n    max_fraction: 0.5",
                "memory.ceiling.min_fraction",
                "floor",
            ),
            (
                "memory:\n  ceiling:\n    max_fraction: 2",
                "memory.ceiling.max_fraction",
                "between 0 and 1",
            ),
            (
                "memory:\n  low_watermark_bytes: -5",
                "memory.low_watermark_bytes",
                "invalid value",
            ),
            (
                "memory:\n  oom_score_adj:\n    online-critical: -999",
                "memory.oom_score_adj.online-critical",
                "-997",
            ),
            (
                "memory:\n  oom_score_adj:\n    offline: -5",
                "memory.oom_score_adj",
                "OOM killer must take offline first",
            ),
            (
                "memory:\n  oom_score_adj:\n    online-critical: 1000",
                "memory.oom_score_adj",
                "OOM killer must take offline first",
            ),
            (
                "memory:\n  oom_score_adj:\n    online-high: 100",
                "memory.oom_score_adj",
                "then the lowest online level",
            ),
            ("files:\n  offline_max: 0", "files.offline_max", "between 1"),
            (
                "files:\n  online_critical_max: 0",
                "files.online_critical_max",
                "between 1",
            ),
            (
                "io:\n  offline_max:\n    read_iops: 1",
                "io.offline_max.read_iops",
                "between 2",
            ),
            (
                "io:\n  offline_low_max:\n    write_iops: 4294967295",
                "io.offline_low_max.write_iops",
                "between 2",
            ),
            (
                "io:\n  offline_max:\n    read_bps: -5",
                "read_bps",
                "invalid",
            ),
            ("io:\n  devices: [sda]", "devices", "MAJ:MIN"),
            (
                "memory:\n  ceiling:\n    reclaim_scan_threshold: -1",
                "reclaim_scan_threshold",
                "between",
            ),
            ("tickk: 100ms", "tickk", "unknown field"),
            ("cpu:\n  headroom: 1", "headroom", "unknown field"),
            ("cpu: [1, 2]", "cpu", "invalid type"),
        ];
        for (yaml, field, reason) in table {
            let errs = Config::from_yaml(yaml).expect_err(yaml);
            let joined: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            assert!(
                errs.iter()
                    .any(|e| e.field.contains(field) || e.reason.contains(field)),
                "{yaml}: expected field {field} in {joined:?}"
            );
            assert!(
                joined.iter().any(|m| m.contains(reason)),
                "{yaml}: expected '{reason}' in {joined:?}"
            );
        }
    }

    #[test]
    fn every_bad_field_is_reported_even_after_a_type_error() {
        let errs = Config::from_yaml(
            "tick: soon\ncpu:\n  grow_step: many\n  headroom_cpus: -1\nmemory:\n  kill_interval: 0s\nbogus: 1\n",
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "tick",
            "cpu.grow_step",
            "cpu.headroom_cpus",
            "memory.kill_interval",
            "bogus",
        ] {
            assert!(
                fields.iter().any(|x| x.contains(f)),
                "{f} missing from {errs:?}"
            );
        }
        // One line each, each naming its field.
        for e in &errs {
            assert!(e.to_string().starts_with(&e.field), "{e}");
        }
    }

    #[test]
    fn machine_bounds() {
        let mut c = Config::default();
        c.cpu.min_offline_cpus = 64;
        c.memory.low_watermark_bytes = Some(1_000_000_000_000_000);
        let errs = c.validate_for(2, Some(24 << 30)).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].to_string().contains("2 CPUs"), "{errs:?}");
        assert!(Config::default().validate_for(2, Some(24 << 30)).is_ok());
    }

    #[test]
    fn watermark_takes_the_larger_bound() {
        let mut c = Config::default();
        assert_eq!(c.low_watermark(1000), 50);
        c.memory.low_watermark_bytes = Some(200);
        assert_eq!(c.low_watermark(1000), 200);
    }
}
