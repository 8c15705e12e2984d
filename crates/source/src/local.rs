//! The local source: scans the level groups under the tidal root.

use std::collections::BTreeSet;
use tidal_cgroupfs::{CgroupError, Layout};
use tidal_model::{GroupPath, QosLevel};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    pub group: GroupPath,
    pub level: QosLevel,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub levels_present: BTreeSet<QosLevel>,
    pub workloads: Vec<WorkloadRef>,
}

pub struct LocalSource {
    layout: Layout,
}

impl LocalSource {
    pub fn new(layout: Layout) -> Self {
        LocalSource { layout }
    }

    /// Lists the level groups that exist and the workload groups in them. A missing tidal root is an
    /// empty tree, not an error.
    pub fn scan(&self) -> Result<Scan, CgroupError> {
        let mut out = Scan::default();
        for level in QosLevel::ALL {
            let g = GroupPath::new(level.group()).unwrap_or_default();
            let children = match self.layout.children(&g) {
                Ok(c) => c,
                Err(e) if e.is_vanished() => continue,
                Err(e) => return Err(e),
            };
            out.levels_present.insert(level);
            for name in children {
                // The offline parent's level groups are not workloads of the offline parent.
                if level.is_online()
                    || !QosLevel::ALL
                        .iter()
                        .any(|l| l.group() == g.join(&name).as_str())
                {
                    out.workloads.push(WorkloadRef {
                        group: g.join(&name),
                        level,
                        name,
                    });
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_cgroupfs::mountinfo::{parse_mountinfo, parse_proc_cgroup};
    use tidal_cgroupfs::{Hierarchies, RootSpec};

    #[test]
    fn fake_fs_scan_finds_levels_and_workloads() {
        let tmp = tempfile::tempdir().unwrap();
        let cpu = tmp.path().join("cpu");
        for d in [
            "tidal/online/web",
            "tidal/online/api",
            "tidal/offline/offline/etl",
            "tidal/offline/offline-low",
        ] {
            std::fs::create_dir_all(cpu.join(d)).unwrap();
        }
        let mi = format!("1 1 0:1 / {} rw - cgroup cgroup rw,cpu\n", cpu.display());
        let h = Hierarchies::from_parts(
            &parse_mountinfo(&mi),
            &parse_proc_cgroup("1:cpu:/\n"),
            |_| vec![],
        );
        let src = LocalSource::new(Layout::new(h, &RootSpec::Default));
        let scan = src.scan().unwrap();
        assert_eq!(
            scan.levels_present.iter().copied().collect::<Vec<_>>(),
            vec![QosLevel::OfflineLow, QosLevel::Offline, QosLevel::Online]
        );
        let names: Vec<_> = scan.workloads.iter().map(|w| w.group.as_str()).collect();
        assert_eq!(
            names,
            vec!["online/api", "online/web", "offline/offline/etl"]
        );
        assert_eq!(scan.workloads[2].level, QosLevel::Offline);
    }
}
