//! The knob registry: a table per cgroup version of the [`Controller`]s (one per controller and
//! version, each knowing its files in both directions); [`lookup`] finds the controller serving a
//! knob. Writing itself is the actuator's: a controller only describes the write.

use crate::hierarchy::Version;
use crate::{cpuset, v1, v2};
use tidal_model::{Knob, KnobValue};

pub use crate::spec::Controller;

static V1_TABLE: [&dyn Controller; 5] = [
    &v1::cpu::Cpu,
    &cpuset::Cpuset,
    &v1::memory::Memory,
    &v1::blkio::Blkio,
    &v1::freezer::Freezer,
];

static V2_TABLE: [&dyn Controller; 5] = [
    &v2::cpu::Cpu,
    &cpuset::Cpuset,
    &v2::memory::Memory,
    &v2::io::Io,
    &v2::core::Core,
];

/// Every controller of one version.
pub fn table(version: Version) -> &'static [&'static dyn Controller] {
    match version {
        Version::V1 => &V1_TABLE,
        Version::V2 => &V2_TABLE,
    }
}

/// The controller serving `knob` on `version`, if that version has a file for it.
pub fn lookup(knob: Knob, version: Version) -> Option<&'static dyn Controller> {
    table(version)
        .iter()
        .copied()
        .find(|c| c.knobs().contains(&knob))
}

/// Where a knob lives on one version: the controller the hierarchy must carry and the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnobSpec {
    pub controller: Option<&'static str>,
    pub files: &'static [&'static str],
}

pub fn spec(knob: Knob, version: Version) -> Option<KnobSpec> {
    lookup(knob, version).map(|c| KnobSpec {
        controller: c.controller(),
        files: c.files(knob),
    })
}

pub fn encode(knob: Knob, version: Version, value: &KnobValue) -> Result<Vec<String>, String> {
    lookup(knob, version)
        .ok_or_else(|| format!("{knob} has no {version:?} file"))?
        .encode(knob, value)
}

pub fn decode(knob: Knob, version: Version, contents: &[String]) -> Result<KnobValue, String> {
    lookup(knob, version)
        .ok_or_else(|| format!("{knob} has no {version:?} file"))?
        .decode(knob, contents)
}

/// Is `file` the file of some knob on `version` (what `restore` may write back)?
pub fn is_knob_file(file: &str, version: Version) -> bool {
    table(version)
        .iter()
        .any(|c| c.knobs().iter().any(|k| c.files(*k).contains(&file)))
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
    fn every_knob_is_served_once_per_version() {
        for v in [Version::V1, Version::V2] {
            for k in Knob::ALL {
                let n = table(v).iter().filter(|c| c.knobs().contains(&k)).count();
                assert!(n <= 1, "{k} served by {n} {v:?} controllers");
            }
        }
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
                KnobValue::Cpus(CpuSet::from_ids([0, 2, 3])),
            ),
            (Knob::CpusetMems, KnobValue::Cpus(CpuSet::from_ids([0]))),
            (Knob::MemoryMax, KnobValue::Bytes(Some(1 << 30))),
            (Knob::MemoryMax, KnobValue::Bytes(None)),
            (Knob::MemoryHigh, KnobValue::Bytes(Some(1 << 29))),
            (Knob::MemoryLow, KnobValue::Bytes(Some(4096))),
            (Knob::MemoryMin, KnobValue::Bytes(None)),
            (Knob::IoWeight, KnobValue::Weight(500)),
            (
                Knob::IoMax,
                KnobValue::IoMax(vec![tidal_model::IoLimit {
                    rbps: Some(1 << 20),
                    ..tidal_model::IoLimit::none("254:0".parse().unwrap())
                }]),
            ),
            (Knob::IoMax, KnobValue::IoMax(vec![])),
            (Knob::CpuQosLevel, KnobValue::Level(-1)),
            (Knob::MemorySoftLimit, KnobValue::Bytes(Some(0))),
            (Knob::MemorySoftLimit, KnobValue::Bytes(None)),
            (Knob::MemoryQosLevel, KnobValue::Level(-1)),
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
        // Knobs with no v1 equivalent say so rather than writing something else. (v1 `memory.high`
        // is mapped for vendor kernels that backport it; upstream has no file, so capability
        // detection finds it unsupported.)
        assert!(spec(Knob::MemoryLow, Version::V1).is_none());
        assert!(spec(Knob::MemorySoftLimit, Version::V2).is_none());
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
        // BFQ's v2 file: its own [1, 1000] scale, per-device lines after the default; written bare.
        assert_eq!(
            decode(Knob::IoBfqWeight, Version::V2, &s("default 40\n8:0 100\n")).unwrap(),
            KnobValue::Weight(400)
        );
        assert_eq!(
            encode(Knob::IoBfqWeight, Version::V2, &KnobValue::Weight(10)).unwrap(),
            vec!["1".to_string()]
        );
        assert!(lookup(Knob::IoBfqWeight, Version::V1).is_none());
        assert_eq!(
            decode(Knob::Freeze, Version::V1, &s("FREEZING\n")).unwrap(),
            KnobValue::Bool(true)
        );
        assert!(decode(Knob::CpuIdle, Version::V1, &s("yes")).is_err());
    }

    #[test]
    fn knob_files_are_known_to_restore() {
        assert!(is_knob_file("cpu.shares", Version::V1));
        assert!(is_knob_file("cpuset.cpus", Version::V2));
        assert!(is_knob_file("cgroup.freeze", Version::V2));
        assert!(!is_knob_file("cgroup.procs", Version::V2));
        assert!(!is_knob_file("passwd", Version::V1));
        assert!(!is_knob_file("cpu.shares", Version::V2));
    }

    #[test]
    fn memory_limits_are_written_in_whole_pages_so_they_read_back_the_same() {
        for v in [Version::V1, Version::V2] {
            let w = encode(Knob::MemoryMax, v, &KnobValue::Bytes(Some(22_748_859_187))).unwrap();
            let b: u64 = w[0].parse().unwrap();
            assert!(
                b <= 22_748_859_187 && 22_748_859_187 - b < 65536,
                "{v:?}: {b}"
            );
            assert_eq!(b % 4096, 0, "{v:?}: {b}");
        }
    }
}
