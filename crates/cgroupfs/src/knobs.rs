//! The knob registry: for each semantic knob, the file(s) it maps to on cgroup v1 and v2 and the value
//! encoding for each. The controller modules under `v1/` and `v2/` hold the per-file details.

use crate::hierarchy::Version;
use crate::{v1, v2};
use tidal_model::{Knob, KnobValue};

/// Where a knob lives on one cgroup version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnobSpec {
    /// The controller that must own the hierarchy; `None` for v2 core files (`cgroup.freeze`).
    pub controller: Option<&'static str>,
    /// Files in write order.
    pub files: &'static [&'static str],
}

pub fn spec(knob: Knob, version: Version) -> Option<KnobSpec> {
    match version {
        Version::V1 => v1::cpu::spec(knob)
            .or_else(|| v1::cpuset::spec(knob))
            .or_else(|| v1::memory::spec(knob))
            .or_else(|| v1::blkio::spec(knob))
            .or_else(|| v1::freezer::spec(knob)),
        Version::V2 => v2::cpu::spec(knob)
            .or_else(|| v2::cpuset::spec(knob))
            .or_else(|| v2::memory::spec(knob))
            .or_else(|| v2::io::spec(knob))
            .or_else(|| v2::core::spec(knob)),
    }
}

/// File contents to write, one per spec file, in spec order.
pub fn encode(knob: Knob, version: Version, value: &KnobValue) -> Result<Vec<String>, String> {
    let r = match version {
        Version::V1 => v1::cpu::encode(knob, value)
            .or_else(|| v1::cpuset::encode(knob, value))
            .or_else(|| v1::memory::encode(knob, value))
            .or_else(|| v1::blkio::encode(knob, value))
            .or_else(|| v1::freezer::encode(knob, value)),
        Version::V2 => v2::cpu::encode(knob, value)
            .or_else(|| v2::cpuset::encode(knob, value))
            .or_else(|| v2::memory::encode(knob, value))
            .or_else(|| v2::io::encode(knob, value))
            .or_else(|| v2::core::encode(knob, value)),
    };
    r.unwrap_or_else(|| {
        Err(format!(
            "{knob} has no {version:?} file or takes no {value}"
        ))
    })
}

/// Parses the contents of the spec files (in spec order) into a value.
pub fn decode(knob: Knob, version: Version, contents: &[String]) -> Result<KnobValue, String> {
    let r = match version {
        Version::V1 => v1::cpu::decode(knob, contents)
            .or_else(|| v1::cpuset::decode(knob, contents))
            .or_else(|| v1::memory::decode(knob, contents))
            .or_else(|| v1::blkio::decode(knob, contents))
            .or_else(|| v1::freezer::decode(knob, contents)),
        Version::V2 => v2::cpu::decode(knob, contents)
            .or_else(|| v2::cpuset::decode(knob, contents))
            .or_else(|| v2::memory::decode(knob, contents))
            .or_else(|| v2::io::decode(knob, contents))
            .or_else(|| v2::core::decode(knob, contents)),
    };
    r.unwrap_or_else(|| Err(format!("{knob} has no {version:?} file")))
}

/// Parses one trimmed integer, naming what was expected.
pub(crate) fn int<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("expected {what}, got '{}'", s.trim()))
}

/// The single content of a one-file knob.
pub(crate) fn one(contents: &[String]) -> Result<&str, String> {
    contents
        .first()
        .map(|s| s.trim())
        .ok_or_else(|| "no content".to_string())
}

/// A `0`/`1` flag file (`cpu.idle`, `cgroup.freeze`).
pub(crate) fn bool01(contents: &[String]) -> Result<KnobValue, String> {
    one(contents).and_then(|s| match s {
        "0" => Ok(KnobValue::Bool(false)),
        "1" => Ok(KnobValue::Bool(true)),
        o => Err(format!("expected 0 or 1, got '{o}'")),
    })
}

/// Encodes a CPU or memory-node list (`cpuset.cpus`, `cpuset.mems`, same format on v1 and v2).
pub(crate) fn cpus_encode(knob: Knob, v: &KnobValue) -> Result<Vec<String>, String> {
    match v {
        KnobValue::Cpus(c) => Ok(vec![c.to_string()]),
        _ => Err(bad(knob, v)),
    }
}

pub(crate) fn cpus_decode(contents: &[String]) -> Result<KnobValue, String> {
    one(contents).and_then(|s| {
        s.parse::<tidal_model::CpuSet>()
            .map(KnobValue::Cpus)
            .map_err(|e| e.to_string())
    })
}

pub(crate) fn bad(knob: Knob, v: &KnobValue) -> String {
    format!("{knob} cannot take {v}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::CpuSet;

    fn round_trip(knob: Knob, version: Version, v: KnobValue) {
        let enc = encode(knob, version, &v).unwrap();
        assert_eq!(enc.len(), spec(knob, version).unwrap().files.len());
        assert_eq!(
            decode(knob, version, &enc).unwrap(),
            v,
            "{knob} {version:?}"
        );
    }

    #[test]
    fn every_knob_round_trips_where_it_exists() {
        let cases = [
            (Knob::CpuWeight, KnobValue::Shares(1024)),
            (Knob::CpuIdle, KnobValue::Bool(true)),
            (
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us: Some(50_000),
                    period_us: 100_000,
                },
            ),
            (
                Knob::CpuMax,
                KnobValue::Quota {
                    quota_us: None,
                    period_us: 100_000,
                },
            ),
            (Knob::CpuBurst, KnobValue::Micros(20_000)),
            (
                Knob::CpusetCpus,
                KnobValue::Cpus(CpuSet::from_ids([0, 1, 3])),
            ),
            (Knob::CpusetMems, KnobValue::Cpus(CpuSet::from_ids([0]))),
            (Knob::MemoryMax, KnobValue::Bytes(Some(1 << 30))),
            (Knob::MemoryMax, KnobValue::Bytes(None)),
            (Knob::MemoryHigh, KnobValue::Bytes(Some(1 << 29))),
            (Knob::MemoryLow, KnobValue::Bytes(Some(4096))),
            (Knob::MemoryMin, KnobValue::Bytes(None)),
            (Knob::IoWeight, KnobValue::Weight(500)),
            (Knob::CpuQosLevel, KnobValue::Level(-1)),
            (Knob::Freeze, KnobValue::Bool(true)),
            (Knob::Freeze, KnobValue::Bool(false)),
        ];
        for (k, v) in cases {
            for ver in [Version::V1, Version::V2] {
                if spec(k, ver).is_some() {
                    round_trip(k, ver, v.clone());
                }
            }
        }
        // Knobs with no v1 equivalent say so rather than writing something else.
        assert!(spec(Knob::MemoryHigh, Version::V1).is_none());
        assert!(spec(Knob::CpuQosLevel, Version::V2).is_none());
    }

    #[test]
    fn real_format_contents_decode() {
        let s = |x: &str| vec![x.to_string()];
        assert_eq!(
            decode(Knob::MemoryMax, Version::V1, &s("9223372036854771712\n")).unwrap(),
            KnobValue::Bytes(None)
        );
        assert_eq!(
            decode(Knob::CpuMax, Version::V2, &s("max 100000\n")).unwrap(),
            KnobValue::Quota {
                quota_us: None,
                period_us: 100_000
            }
        );
        assert_eq!(
            decode(
                Knob::CpuMax,
                Version::V1,
                &["100000\n".to_string(), "-1\n".to_string()]
            )
            .unwrap(),
            KnobValue::Quota {
                quota_us: None,
                period_us: 100_000
            }
        );
        assert_eq!(
            decode(Knob::IoWeight, Version::V2, &s("default 100\n")).unwrap(),
            KnobValue::Weight(100)
        );
        assert_eq!(
            decode(Knob::Freeze, Version::V1, &s("FREEZING\n")).unwrap(),
            KnobValue::Bool(true)
        );
        assert!(decode(Knob::CpuIdle, Version::V1, &s("yes")).is_err());
    }
}
