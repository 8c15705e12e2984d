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
}

impl Knob {
    pub const ALL: [Knob; 15] = [
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
        }
    }
}

impl fmt::Display for Knob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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
        }
    }
}
