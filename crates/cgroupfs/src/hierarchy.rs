//! Discovery of the cgroup hierarchies on this host and of this process's place in each.

use crate::error::{CgroupError, Result};
use crate::mountinfo::{parse_mountinfo, parse_proc_cgroup, CgroupMount, Membership};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 controller hierarchies.
    V1,
    /// One unified hierarchy carrying the controllers.
    V2,
    /// v1 controllers plus a v2 mount (often carrying only `*.pressure` files).
    Hybrid,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hierarchy {
    pub version: Version,
    pub mount: PathBuf,
    /// v1: mount options' controllers; v2: `cgroup.controllers` of the mount root.
    pub controllers: Vec<String>,
    /// This process's cgroup, relative to the mount (`/` for the mount root).
    pub self_path: String,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
    pub fn name(&self) -> String {
        match self.version {
            Version::V2 => "unified".to_string(),
            Version::V1 => self.controllers.join(","),
        }
    }
    /// Absolute directory of a cgroup path relative to the mount.
    pub fn dir(&self, rel: &str) -> PathBuf {
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.mount.clone()
        } else {
            self.mount.join(rel)
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Hierarchies {
    pub list: Vec<Hierarchy>,
}

/// Strips the mount's root from a `/proc/self/cgroup` path (the two differ inside some containers).
fn relative_to_mount(path: &str, mount_root: &str) -> String {
    if mount_root == "/" {
        return path.to_string();
    }
    match path.strip_prefix(mount_root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            if rest.is_empty() {
                "/".to_string()
            } else {
                rest.to_string()
            }
        }
        _ => path.to_string(),
    }
}

impl Hierarchies {
    /// Reads `/proc/self/mountinfo`, `/proc/self/cgroup` and the v2 root's `cgroup.controllers`.
    pub fn discover() -> Result<Self> {
        let mi = Path::new("/proc/self/mountinfo");
        let pc = Path::new("/proc/self/cgroup");
        let mounts_text = std::fs::read_to_string(mi).map_err(|source| CgroupError::Read {
            path: mi.to_path_buf(),
            source,
        })?;
        let member_text = std::fs::read_to_string(pc).map_err(|source| CgroupError::Read {
            path: pc.to_path_buf(),
            source,
        })?;
        let h = Self::from_parts(
            &parse_mountinfo(&mounts_text),
            &parse_proc_cgroup(&member_text),
            |mount| {
                std::fs::read_to_string(mount.join("cgroup.controllers"))
                    .map(|s| s.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default()
            },
        );
        if h.list.is_empty() {
            return Err(CgroupError::NoHierarchy {
                path: mi.to_path_buf(),
            });
        }
        Ok(h)
    }

    /// Builds the hierarchy list from parsed inputs; `v2_controllers` reads a v2 mount's controllers.
    pub fn from_parts(
        mounts: &[CgroupMount],
        members: &[Membership],
        v2_controllers: impl Fn(&Path) -> Vec<String>,
    ) -> Self {
        let mut list: Vec<Hierarchy> = Vec::new();
        for m in mounts {
            let (version, controllers, member) = if m.v2 {
                let member = members
                    .iter()
                    .find(|x| x.id == 0 && x.controllers.is_empty());
                (Version::V2, v2_controllers(&m.mount_point), member)
            } else {
                let member = members.iter().find(|x| {
                    !x.controllers.is_empty()
                        && x.controllers.len() == m.controllers.len()
                        && m.controllers.iter().all(|c| x.controllers.contains(c))
                });
                (Version::V1, m.controllers.clone(), member)
            };
            // A bind mount of a hierarchy already seen adds nothing.
            if list.iter().any(|h| {
                h.version == version && (version == Version::V2 || h.controllers == controllers)
            }) {
                continue;
            }
            let self_path = member
                .map(|x| relative_to_mount(&x.path, &m.root))
                .unwrap_or_else(|| "/".to_string());
            list.push(Hierarchy {
                version,
                mount: m.mount_point.clone(),
                controllers,
                self_path,
            });
        }
        Hierarchies { list }
    }

    pub fn unified(&self) -> Option<&Hierarchy> {
        self.list.iter().find(|h| h.version == Version::V2)
    }

    pub fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.list
            .iter()
            .find(|h| h.version == Version::V1 && h.has(controller))
    }

    /// The hierarchy that owns `controller`: the unified one if it carries it, else its v1 mount.
    pub fn owner(&self, controller: &str) -> Option<&Hierarchy> {
        self.unified()
            .filter(|u| u.has(controller))
            .or_else(|| self.v1(controller))
    }

    pub fn mode(&self) -> CgroupMode {
        let v1_controllers = self.list.iter().any(|h| {
            h.version == Version::V1 && h.controllers.iter().any(|c| !c.starts_with("name="))
        });
        match (v1_controllers, self.unified().is_some()) {
            (true, true) => CgroupMode::Hybrid,
            (true, false) => CgroupMode::V1,
            _ => CgroupMode::V2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_MEMBERS: &str =
        "9:name=systemd:/\n4:memory:/process_api/f0\n2:cpuacct:/\n1:cpu:/\n0::/\n";

    #[test]
    fn hybrid_mode_and_owners() {
        let h = Hierarchies::from_parts(
            &parse_mountinfo(HYBRID),
            &parse_proc_cgroup(HYBRID_MEMBERS),
            |_| vec!["hugetlb".to_string()],
        );
        assert_eq!(h.mode(), CgroupMode::Hybrid);
        assert_eq!(
            h.owner("cpu").unwrap().mount,
            PathBuf::from("/sys/fs/cgroup/cpu")
        );
        assert_eq!(h.v1("memory").unwrap().self_path, "/process_api/f0");
        assert_eq!(h.unified().unwrap().self_path, "/");
    }

    #[test]
    fn v2_mode_uses_unified_for_everything() {
        let mi = "26 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::from_parts(
            &parse_mountinfo(mi),
            &parse_proc_cgroup("0::/user.slice/session-1.scope\n"),
            |_| {
                vec![
                    "cpuset".into(),
                    "cpu".into(),
                    "io".into(),
                    "memory".into(),
                    "pids".into(),
                ]
            },
        );
        assert_eq!(h.mode(), CgroupMode::V2);
        let cpu = h.owner("cpu").unwrap();
        assert_eq!(cpu.version, Version::V2);
        assert_eq!(cpu.self_path, "/user.slice/session-1.scope");
        assert_eq!(cpu.dir("/a/b"), PathBuf::from("/sys/fs/cgroup/a/b"));
    }

    #[test]
    fn v1_mode_with_comount_and_container_root() {
        let mi =
            "28 24 0:25 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = Hierarchies::from_parts(
            &parse_mountinfo(mi),
            &parse_proc_cgroup("3:cpu,cpuacct:/docker/abc/sub\n"),
            |_| vec![],
        );
        assert_eq!(h.mode(), CgroupMode::V1);
        let cpu = h.owner("cpuacct").unwrap();
        assert_eq!(cpu.self_path, "/sub");
        assert!(h.unified().is_none());
    }
}
