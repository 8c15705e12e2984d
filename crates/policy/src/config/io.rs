//! `io:`: per-device IO limits for offline work (v2 `io.max`, v1 `blkio.throttle.*`) and the
//! node-wide switch that makes IO weights act without BFQ (blk-iocost).

use super::{check, ConfigError};
use serde::{Deserialize, Serialize};
use tidal_model::{DevNum, IoLimit};

/// Limits on one group, per device; unset is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoLimits {
    /// Bytes per second.
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    /// IO operations per second.
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

impl IoLimits {
    pub fn is_set(&self) -> bool {
        self.read_bps.is_some()
            || self.write_bps.is_some()
            || self.read_iops.is_some()
            || self.write_iops.is_some()
    }
    /// These limits on `dev`.
    pub fn on(&self, dev: DevNum) -> IoLimit {
        IoLimit {
            dev,
            rbps: self.read_bps,
            wbps: self.write_bps,
            riops: self.read_iops,
            wiops: self.write_iops,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoConfig {
    /// On the offline parent: all offline work together (in pod mode: each offline pod).
    pub offline_max: IoLimits,
    /// On `offline-low` alone (in pod mode: each `offline-low` pod).
    pub offline_low_max: IoLimits,
    /// The devices limited (`MAJ:MIN`); empty: every real block device (not loop, RAM, zram, nbd,
    /// optical; see `tidal doctor`).
    pub devices: Vec<DevNum>,
    /// Enable blk-iocost on those devices (cgroup v2: `io.cost.qos` in the root), so IO weights act
    /// without BFQ. Node-wide; `tidal restore` switches it back.
    pub iocost: bool,
}

/// Limits accepted: from 2 (older kernels refuse 1 in `io.max`) to 1 PiB/s, and to one under
/// 2^32 IO/s (the kernel keeps IO/s in 32 bits and shows its top value as `max`).
const MIN_LIMIT: u64 = 2;
const MAX_BPS: u64 = 1 << 50;
const MAX_IOPS: u64 = u32::MAX as u64 - 1;

impl IoConfig {
    pub fn validate(&self, e: &mut Vec<ConfigError>) {
        for (name, l) in [
            ("offline_max", &self.offline_max),
            ("offline_low_max", &self.offline_low_max),
        ] {
            for (f, v, hi) in [
                ("read_bps", l.read_bps, MAX_BPS),
                ("write_bps", l.write_bps, MAX_BPS),
                ("read_iops", l.read_iops, MAX_IOPS),
                ("write_iops", l.write_iops, MAX_IOPS),
            ] {
                if let Some(v) = v {
                    check(
                        e,
                        (MIN_LIMIT..=hi).contains(&v),
                        &format!("io.{name}.{f}"),
                        format!(
                            "must be between {MIN_LIMIT} and {hi} (got {v}); leave it out for no limit"
                        ),
                    );
                }
            }
        }
        check(
            e,
            self.devices.len() <= 256,
            "io.devices",
            format!("at most 256 devices (got {})", self.devices.len()),
        );
    }
}
