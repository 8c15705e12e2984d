//! Semantic cgroup knobs and their typed values. Which file a knob maps to on cgroup v1 or v2, and the
//! value conversions, live in `tidal-cgroupfs`; this module only names them.

use crate::CpuSet;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Knob {
    /// CPU weight, expressed in v1 `cpu.shares` units (v2 `cpu.weight` is converted).
    CpuWeight,
    /// SCHED_IDLE-like group (`cpu.idle`).
    CpuIdle,
    /// CFS bandwidth limit (quota and period).
    CpuMax,
    /// CFS burst (`cpu.cfs_burst_us` / `cpu.max.burst`).
    CpuBurst,
    CpusetCpus,
    CpusetMems,
    MemoryMax,
    MemoryHigh,
    MemoryLow,
    MemoryMin,
    /// IO weight on the v2 scale [1, 10000].
    IoWeight,
    /// openEuler `cpu.qos_level`.
    CpuQosLevel,
    /// Freeze every task of the group.
    Freeze,
    /// v1 `memory.soft_limit_in_bytes`: under contention, groups over it are reclaimed first.
    MemorySoftLimit,
    /// openEuler `memory.qos_level` (v1): offline memory is reclaimed and killed first.
    MemoryQosLevel,
    /// Per-device IO limits (v2 `io.max`, v1 `blkio.throttle.*`).
    IoMax,
    /// v2 `io.bfq.weight`, on the v2 scale [1, 10000] like [`Knob::IoWeight`]: BFQ reads its own
    /// file on v2, not `io.weight` (v1's `blkio.bfq.weight` is `IoWeight` itself).
    IoBfqWeight,
    /// v1 `cpu.rt_runtime_us` (kernels with RT group scheduling): the real-time time a group's
    /// tasks may take per period; a group without any refuses real-time tasks.
    CpuRtRuntime,
}

impl Knob {
    pub const ALL: [Knob; 18] = [
        Knob::CpuWeight,
        Knob::CpuIdle,
        Knob::CpuMax,
        Knob::CpuBurst,
        Knob::CpusetCpus,
        Knob::CpusetMems,
        Knob::MemoryMax,
        Knob::MemoryHigh,
        Knob::MemoryLow,
        Knob::MemoryMin,
        Knob::IoWeight,
        Knob::CpuQosLevel,
        Knob::Freeze,
        Knob::MemorySoftLimit,
        Knob::MemoryQosLevel,
        Knob::IoMax,
        Knob::IoBfqWeight,
        Knob::CpuRtRuntime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Knob::CpuWeight => "cpu-weight",
            Knob::CpuIdle => "cpu-idle",
            Knob::CpuMax => "cpu-max",
            Knob::CpuBurst => "cpu-burst",
            Knob::CpusetCpus => "cpuset-cpus",
            Knob::CpusetMems => "cpuset-mems",
            Knob::MemoryMax => "memory-max",
            Knob::MemoryHigh => "memory-high",
            Knob::MemoryLow => "memory-low",
            Knob::MemoryMin => "memory-min",
            Knob::IoWeight => "io-weight",
            Knob::CpuQosLevel => "cpu-qos-level",
            Knob::Freeze => "freeze",
            Knob::MemorySoftLimit => "memory-soft-limit",
            Knob::MemoryQosLevel => "memory-qos-level",
            Knob::IoMax => "io-max",
            Knob::IoBfqWeight => "io-bfq-weight",
            Knob::CpuRtRuntime => "cpu-rt-runtime",
        }
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The highest CPU weight, in v1 shares (v2 `cpu.weight` 10000).
pub const MAX_SHARES: u64 = 262_144;

/// A knob's value in tidal's canonical units.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnobValue {
    /// v1 shares, [2, 262144].
    Shares(u64),
    Bool(bool),
    /// `quota_us = None` means unlimited.
    Quota {
        quota_us: Option<u64>,
        period_us: u64,
    },
    Micros(u64),
    Cpus(CpuSet),
    /// `None` means unlimited.
    Bytes(Option<u64>),
    /// v2 io weight, [1, 10000].
    Weight(u64),
    Level(i64),
    /// Per-device IO limits, sorted by device, at most one entry per device. An entry with no limit
    /// lifts the device's limits; reading never yields one.
    IoMax(Vec<IoLimit>),
}

impl fmt::Display for KnobValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnobValue::Shares(s) => write!(f, "shares={s}"),
            KnobValue::Bool(b) => write!(f, "{}", u8::from(*b)),
            KnobValue::Quota {
                quota_us: Some(q),
                period_us,
            } => write!(f, "{q}us/{period_us}us"),
            KnobValue::Quota {
                quota_us: None,
                period_us,
            } => write!(f, "max/{period_us}us"),
            KnobValue::Micros(us) => write!(f, "{us}us"),
            KnobValue::Cpus(c) => write!(f, "[{c}]"),
            KnobValue::Bytes(Some(b)) => write!(f, "{b}B"),
            KnobValue::Bytes(None) => f.write_str("max"),
            KnobValue::Weight(w) => write!(f, "weight={w}"),
            KnobValue::Level(l) => write!(f, "{l}"),
            KnobValue::IoMax(v) if v.is_empty() => f.write_str("no io limits"),
            KnobValue::IoMax(v) => {
                for (i, l) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{l}")?;
                }
                Ok(())
            }
        }
    }
}

/// A block device number (`MAJ:MIN`), as `io.max` and `blkio.throttle.*` name a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl std::str::FromStr for DevNum {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "'{}' is not a block device number (MAJ:MIN)",
                s.chars().take(40).collect::<String>()
            )
        };
        let (a, b) = s.trim().split_once(':').ok_or_else(bad)?;
        let num = |x: &str| {
            if x.is_empty() || !x.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            x.parse::<u32>().map_err(|_| bad())
        };
        Ok(DevNum {
            major: num(a)?,
            minor: num(b)?,
        })
    }
}

impl TryFrom<String> for DevNum {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DevNum> for String {
    fn from(d: DevNum) -> String {
        d.to_string()
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// One device's IO limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IoLimit {
    pub dev: DevNum,
    pub rbps: Option<u64>,
    pub wbps: Option<u64>,
    pub riops: Option<u64>,
    pub wiops: Option<u64>,
}

impl IoLimit {
    /// No limit on `dev`.
    pub fn none(dev: DevNum) -> IoLimit {
        IoLimit {
            dev,
            rbps: None,
            wbps: None,
            riops: None,
            wiops: None,
        }
    }
    pub fn is_unlimited(&self) -> bool {
        self.rbps.is_none() && self.wbps.is_none() && self.riops.is_none() && self.wiops.is_none()
    }
}

impl fmt::Display for IoLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |x: Option<u64>| x.map_or_else(|| "max".to_string(), |n| n.to_string());
        write!(
            f,
            "{} rbps={} wbps={} riops={} wiops={}",
            self.dev,
            v(self.rbps),
            v(self.wbps),
            v(self.riops),
            v(self.wiops)
        )
    }
}

/// The canonical form of a set of limits: one entry per device (the last wins), sorted, without
/// the unlimited ones (what reading the files gives back).
pub fn canonical_io_limits(v: &[IoLimit]) -> Vec<IoLimit> {
    let mut m = std::collections::BTreeMap::new();
    for l in v {
        m.insert(l.dev, *l);
    }
    m.into_values().filter(|l| !l.is_unlimited()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_numbers_parse_strictly() {
        assert_eq!(
            "254:16".parse::<DevNum>(),
            Ok(DevNum {
                major: 254,
                minor: 16
            })
        );
        for bad in [
            "",
            "8",
            "8:",
            ":0",
            "8:0:1",
            "-1:0",
            "8:x",
            "99999999999:0",
            " 8 :0",
        ] {
            assert!(bad.parse::<DevNum>().is_err(), "{bad}");
        }
        let d: DevNum = serde_json::from_str("\"8:0\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"8:0\"");
    }
}
