//! The agent's configuration: YAML with documented defaults, parsed and validated without IO. Every
//! validation error names the field and the reason; unknown fields are errors (typos must not pass).

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
            Raw::S(s) => humantime::parse_duration(s.trim())
                .map(|d| Millis(d.as_millis() as u64))
                .map_err(|e| serde::de::Error::custom(format!("invalid duration '{s}': {e}"))),
        }
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
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
    /// Online usage below this is noise (the agent, kernel threads): online then needs no CPU.
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
}

impl Default for InterferenceConfig {
    fn default() -> Self {
        InterferenceConfig {
            psi_threshold: 5.0,
            psi_line: PsiLine::Full,
            escalate_every: Millis(1_000),
            calm_period: Millis(10_000),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Kill offline work when MemAvailable falls below this percentage of MemTotal…
    pub low_watermark_percent: f64,
    /// …or below this many bytes, if set (the larger of the two applies).
    pub low_watermark_bytes: Option<u64>,
    /// At most one kill per this interval.
    pub kill_interval: Millis,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            low_watermark_percent: 5.0,
            low_watermark_bytes: None,
            kill_interval: Millis(10_000),
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
    pub cpu: CpuConfig,
    pub interference: InterferenceConfig,
    pub memory: MemoryConfig,
    pub cleanup: CleanupConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick: Millis(100),
            sample_interval: Millis(50),
            stats_interval: Millis(1_000),
            static_interval: Millis(10_000),
            listen: "127.0.0.1:9477".to_string(),
            cpu: CpuConfig::default(),
            interference: InterferenceConfig::default(),
            memory: MemoryConfig::default(),
            cleanup: CleanupConfig::default(),
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

impl Config {
    /// Parses and validates YAML. An empty document gives the defaults.
    pub fn from_yaml(text: &str) -> Result<Config, Vec<ConfigError>> {
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." || path.is_empty() {
                    "(document)".to_string()
                } else {
                    path
                };
                vec![ConfigError {
                    field,
                    reason: e.into_inner().to_string(),
                }]
            })?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut e = Vec::new();
        check(
            &mut e,
            (10..=10_000).contains(&self.tick.0),
            "tick",
            format!("must be between 10ms and 10s (got {})", self.tick),
        );
        check(
            &mut e,
            self.sample_interval.0 >= 5 && self.sample_interval <= self.tick,
            "sample_interval",
            format!(
                "must be between 5ms and tick ({}) (got {})",
                self.tick, self.sample_interval
            ),
        );
        check(
            &mut e,
            self.stats_interval >= self.tick && self.stats_interval.0 <= 60_000,
            "stats_interval",
            format!(
                "must be at least tick ({}) and at most 60s (got {})",
                self.tick, self.stats_interval
            ),
        );
        check(
            &mut e,
            self.static_interval >= self.tick && self.static_interval.0 <= 3_600_000,
            "static_interval",
            format!(
                "must be at least tick and at most 1h (got {})",
                self.static_interval
            ),
        );
        check(
            &mut e,
            self.listen.parse::<std::net::SocketAddr>().is_ok(),
            "listen",
            format!(
                "must be IP:PORT, e.g. 127.0.0.1:9477 (got '{}')",
                self.listen
            ),
        );
        let c = &self.cpu;
        check(
            &mut e,
            c.headroom_cpus.is_finite() && (0.0..=1024.0).contains(&c.headroom_cpus),
            "cpu.headroom_cpus",
            format!("must be between 0 and 1024 CPUs (got {})", c.headroom_cpus),
        );
        check(
            &mut e,
            c.noise_floor_cpus.is_finite() && (0.0..=1.0).contains(&c.noise_floor_cpus),
            "cpu.noise_floor_cpus",
            format!("must be between 0 and 1 CPU (got {})", c.noise_floor_cpus),
        );
        check(
            &mut e,
            c.min_offline_cpus > 0 || c.allow_freeze,
            "cpu.min_offline_cpus",
            "0 needs cpu.allow_freeze: true (offline work cannot run on no CPU)".to_string(),
        );
        check(
            &mut e,
            c.min_offline_cpus <= 1024,
            "cpu.min_offline_cpus",
            format!("must be at most 1024 (got {})", c.min_offline_cpus),
        );
        check(
            &mut e,
            c.grow_step >= 1,
            "cpu.grow_step",
            "must be at least 1".to_string(),
        );
        check(
            &mut e,
            c.grow_after.0 <= 600_000,
            "cpu.grow_after",
            format!("must be at most 10m (got {})", c.grow_after),
        );
        let i = &self.interference;
        check(
            &mut e,
            i.psi_threshold.is_finite() && i.psi_threshold > 0.0 && i.psi_threshold <= 100.0,
            "interference.psi_threshold",
            format!("must be a percentage in (0, 100] (got {})", i.psi_threshold),
        );
        check(
            &mut e,
            i.calm_period.0 >= 1_000,
            "interference.calm_period",
            format!("must be at least 1s (got {})", i.calm_period),
        );
        let m = &self.memory;
        check(
            &mut e,
            m.low_watermark_percent.is_finite() && (0.0..=50.0).contains(&m.low_watermark_percent),
            "memory.low_watermark_percent",
            format!("must be between 0 and 50 (got {})", m.low_watermark_percent),
        );
        check(
            &mut e,
            m.kill_interval.0 >= 1_000,
            "memory.kill_interval",
            format!("must be at least 1s (got {})", m.kill_interval),
        );
        check(
            &mut e,
            self.cleanup.remove_empty_after.0 >= 1_000,
            "cleanup.remove_empty_after",
            format!(
                "must be at least 1s, so a group being set up is not removed (got {})",
                self.cleanup.remove_empty_after
            ),
        );
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
    fn empty_and_example_files_give_valid_configs() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        let ex = include_str!("../../../examples/tidal.yaml");
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
            ("tick: soon", "tick", "invalid duration"),
            ("stats_interval: 10ms", "stats_interval", "at least tick"),
            (
                "sample_interval: 1s",
                "sample_interval",
                "between 5ms and tick",
            ),
            ("static_interval: 2h", "static_interval", "at most 1h"),
            ("listen: localhost", "listen", "IP:PORT"),
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
            ("cpu:\n  grow_step: 0", "cpu.grow_step", "at least 1"),
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
                "at least 1s",
            ),
            (
                "memory:\n  low_watermark_percent: 80",
                "memory.low_watermark_percent",
                "between 0 and 50",
            ),
            (
                "memory:\n  kill_interval: 0s",
                "memory.kill_interval",
                "at least 1s",
            ),
            (
                "cleanup:\n  remove_empty_after: 1ms",
                "cleanup.remove_empty_after",
                "at least 1s",
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
    fn watermark_takes_the_larger_bound() {
        let mut c = Config::default();
        assert_eq!(c.low_watermark(1000), 50);
        c.memory.low_watermark_bytes = Some(200);
        assert_eq!(c.low_watermark(1000), 200);
    }
}
