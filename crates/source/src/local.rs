//! The local source: scans the level groups under the tidal root.

use crate::{Inventory, SourceError, WorkloadRef, WorkloadSource};
use tidal_cgroupfs::Layout;
use tidal_model::{QosLevel, Target};

pub struct LocalSource {
    layout: Layout,
}

impl LocalSource {
    pub fn new(layout: Layout) -> Self {
        LocalSource { layout }
    }
}

impl WorkloadSource for LocalSource {
    fn name(&self) -> &'static str {
        "local"
    }

    /// Lists the level groups that exist and the workload groups in them. A missing tidal root (or
    /// level) is an empty tree, not an error.
    fn scan(&mut self) -> Result<Inventory, SourceError> {
        let mut out = Inventory::default();
        for level in QosLevel::ALL {
            let g = level.group_path();
            let children = match self.layout.children(&g) {
                Ok(c) => c,
                Err(e) if e.is_vanished() => continue,
                Err(e) => return Err(e.into()),
            };
            out.levels_present.insert(level);
            for name in children {
                let Ok(child) = g.join(&name) else {
                    continue;
                };
                // The offline parent's level groups are not workloads of the offline parent.
                if !level.is_online() && QosLevel::from_group(child.as_str()).is_some() {
                    continue;
                }
                out.workloads.push(WorkloadRef {
                    group: Target::Tidal(child),
                    level,
                    name,
                    managed: true,
                    pod: None,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_cgroupfs::mountinfo::{parse_mountinfo, parse_proc_cgroup};
    use tidal_cgroupfs::{Hierarchies, Host, RootSpec};

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
        let mut src = LocalSource::new(Layout::new(h, &RootSpec::default(), Host::default()));
        let scan = src.scan().unwrap();
        assert_eq!(
            scan.levels_present.iter().copied().collect::<Vec<_>>(),
            vec![QosLevel::OfflineLow, QosLevel::Offline, QosLevel::Online]
        );
        let names: Vec<_> = scan
            .workloads
            .iter()
            .map(|w| w.group.tidal().unwrap().as_str())
            .collect();
        assert_eq!(
            names,
            vec!["online/api", "online/web", "offline/offline/etl"]
        );
        assert_eq!(scan.workloads[2].level, QosLevel::Offline);
        assert!(scan.workloads.iter().all(|w| w.managed));
        assert_eq!(
            scan.workloads[0].dirs(&src.layout),
            vec![cpu.join("tidal/online/api")]
        );
    }
}
