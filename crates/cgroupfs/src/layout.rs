//! Where tidal's groups live: the tidal root in each hierarchy tidal uses, which hierarchy and file(s)
//! serve each knob, and reads of knobs and statistics for a group.

use crate::error::{CgroupError, Result};
use crate::hierarchy::{Hierarchies, Hierarchy, Version};
use crate::knobs::{self, KnobSpec};
use crate::psi::{read_psi, Psi, PsiResource};
use crate::stat::{parse_flat_keyed, throttling_from, Throttling};
use std::io::Write;
use std::path::{Path, PathBuf};
use tidal_model::{GroupPath, Knob, KnobValue};

/// Default name of the tidal root group under the cgroup tidal was started in.
pub const DEFAULT_ROOT_NAME: &str = "tidal";

/// v1 controllers tidal creates groups in (freezer only when there is no v2 mount to freeze through).
const V1_USED: [&str; 5] = ["cpu", "cpuacct", "cpuset", "memory", "blkio"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `<this process's cgroup>/tidal` in each hierarchy (delegation-friendly).
    Default,
    /// The same path in every hierarchy, relative to its mount (`/tidal.slice`).
    Pinned(String),
    /// A path relative to the cgroup tidal was started in, per hierarchy (`my-tidal` → `<self>/my-tidal`).
    Relative(String),
}

impl RootSpec {
    /// `--root` flag, else `TIDAL_ROOT`, else the default.
    pub fn from_flag_or_env(flag: Option<&str>) -> RootSpec {
        let env = std::env::var("TIDAL_ROOT").ok();
        match flag
            .or(env.as_deref())
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(p) if p.starts_with('/') => RootSpec::Pinned(format!("/{}", p.trim_matches('/'))),
            Some(p) => RootSpec::Relative(p.trim_matches('/').to_string()),
            None => RootSpec::Default,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HierarchyRoot {
    pub hierarchy: Hierarchy,
    /// The tidal root's directory in this hierarchy.
    pub root_dir: PathBuf,
}

impl HierarchyRoot {
    pub fn dir(&self, group: &GroupPath) -> PathBuf {
        if group.is_root() {
            self.root_dir.clone()
        } else {
            self.root_dir.join(group.as_str())
        }
    }
    pub fn version(&self) -> Version {
        self.hierarchy.version
    }
    /// The directory that holds the tidal root.
    pub fn base_dir(&self) -> PathBuf {
        self.root_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.hierarchy.mount.clone())
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub hierarchies: Hierarchies,
    /// One entry per hierarchy tidal uses; the first is the one that owns `cpu`.
    pub roots: Vec<HierarchyRoot>,
}

impl Layout {
    pub fn discover(root: &RootSpec) -> Result<Layout> {
        Ok(Layout::new(Hierarchies::discover()?, root))
    }

    pub fn new(hierarchies: Hierarchies, root: &RootSpec) -> Layout {
        let has_unified = hierarchies.unified().is_some();
        let mut roots: Vec<HierarchyRoot> = hierarchies
            .list
            .iter()
            .filter(|h| match h.version {
                Version::V2 => true,
                Version::V1 => {
                    V1_USED.iter().any(|c| h.has(c)) || (!has_unified && h.has("freezer"))
                }
            })
            .map(|h| {
                let rel = match root {
                    RootSpec::Default => {
                        format!(
                            "{}/{}",
                            h.self_path.trim_end_matches('/'),
                            DEFAULT_ROOT_NAME
                        )
                    }
                    RootSpec::Pinned(p) => p.clone(),
                    RootSpec::Relative(p) => format!("{}/{}", h.self_path.trim_end_matches('/'), p),
                };
                HierarchyRoot {
                    hierarchy: h.clone(),
                    root_dir: h.dir(&rel),
                }
            })
            .collect();
        // The cpu owner first: group names are claimed there.
        roots.sort_by_key(|r| {
            let owns_cpu = hierarchies
                .owner("cpu")
                .is_some_and(|o| o.mount == r.hierarchy.mount);
            !owns_cpu
        });
        Layout { hierarchies, roots }
    }

    pub fn primary(&self) -> Option<&HierarchyRoot> {
        self.roots.first()
    }

    pub fn unified(&self) -> Option<&HierarchyRoot> {
        self.roots.iter().find(|r| r.version() == Version::V2)
    }

    /// The hierarchy root that owns `controller` (unified if it carries it).
    pub fn owner(&self, controller: &str) -> Option<&HierarchyRoot> {
        self.unified()
            .filter(|u| u.hierarchy.has(controller))
            .or_else(|| {
                self.roots
                    .iter()
                    .find(|r| r.version() == Version::V1 && r.hierarchy.has(controller))
            })
    }

    /// Which hierarchy, version and files serve `knob` here, or None if no mounted hierarchy can.
    pub fn knob_target(&self, knob: Knob) -> Option<(&HierarchyRoot, Version, KnobSpec)> {
        if let Some(u) = self.unified() {
            if let Some(spec) = knobs::spec(knob, Version::V2) {
                let ok = match spec.controller {
                    None => true,
                    Some(c) => u.hierarchy.has(c),
                };
                if ok {
                    return Some((u, Version::V2, spec));
                }
            }
        }
        let spec = knobs::spec(knob, Version::V1)?;
        let c = spec.controller?;
        let r = self
            .roots
            .iter()
            .find(|r| r.version() == Version::V1 && r.hierarchy.has(c))?;
        Some((r, Version::V1, spec))
    }

    /// The absolute file paths of `knob` for `group`, in write order.
    pub fn knob_paths(&self, group: &GroupPath, knob: Knob) -> Option<(Version, Vec<PathBuf>)> {
        let (r, v, spec) = self.knob_target(knob)?;
        let dir = r.dir(group);
        Some((v, spec.files.iter().map(|f| dir.join(f)).collect()))
    }

    /// The group's directory in every hierarchy tidal uses.
    pub fn group_dirs(&self, group: &GroupPath) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.dir(group)).collect()
    }

    pub fn read_knob(&self, group: &GroupPath, knob: Knob) -> Result<KnobValue> {
        let (version, paths) =
            self.knob_paths(group, knob)
                .ok_or_else(|| CgroupError::Unsupported {
                    knob,
                    reason: "no mounted hierarchy has its controller".to_string(),
                })?;
        let contents = paths
            .iter()
            .map(|p| read_file(p))
            .collect::<Result<Vec<_>>>()?;
        knobs::decode(knob, version, &contents).map_err(|reason| CgroupError::Parse {
            path: paths[0].clone(),
            content: contents.join(" | ").trim().to_string(),
            reason,
        })
    }

    /// Process ids in the group (primary hierarchy).
    pub fn procs(&self, group: &GroupPath) -> Result<Vec<i32>> {
        let Some(r) = self.primary() else {
            return Ok(Vec::new());
        };
        read_procs(&r.dir(group).join("cgroup.procs"))
    }

    /// Processes in the group in any hierarchy tidal uses (a group is empty only if all are).
    pub fn has_procs(&self, group: &GroupPath) -> bool {
        self.roots
            .iter()
            .any(|r| read_procs(&r.dir(group).join("cgroup.procs")).is_ok_and(|p| !p.is_empty()))
    }

    /// Child group names of `group` in the primary hierarchy.
    pub fn children(&self, group: &GroupPath) -> Result<Vec<String>> {
        let Some(r) = self.primary() else {
            return Ok(Vec::new());
        };
        list_children(&r.dir(group))
    }

    /// Cumulative CPU time of the group in nanoseconds.
    pub fn cpu_usage_ns(&self, group: &GroupPath) -> Result<u64> {
        if let Some(r) = self
            .roots
            .iter()
            .find(|r| r.version() == Version::V1 && r.hierarchy.has("cpuacct"))
        {
            let p = r.dir(group).join("cpuacct.usage");
            let s = read_file(&p)?;
            return s.trim().parse().map_err(|_| CgroupError::Parse {
                path: p,
                content: s.trim().to_string(),
                reason: "expected nanoseconds".to_string(),
            });
        }
        let r = self.unified().ok_or_else(|| CgroupError::NoHierarchy {
            path: PathBuf::from("/proc/self/mountinfo"),
        })?;
        let p = r.dir(group).join("cpu.stat");
        let s = read_file(&p)?;
        parse_flat_keyed(&s)
            .get("usage_usec")
            .map(|us| us * 1000)
            .ok_or_else(|| CgroupError::Parse {
                path: p,
                content: s.trim().to_string(),
                reason: "no usage_usec".to_string(),
            })
    }

    /// CFS bandwidth statistics, if the cpu controller is mounted.
    pub fn throttling(&self, group: &GroupPath) -> Result<Option<Throttling>> {
        let Some(r) = self.owner("cpu") else {
            return Ok(None);
        };
        let s = read_file(&r.dir(group).join("cpu.stat"))?;
        Ok(throttling_from(&parse_flat_keyed(&s)))
    }

    /// Memory charged to the group, in bytes.
    pub fn memory_usage(&self, group: &GroupPath) -> Result<Option<u64>> {
        let Some(r) = self.owner("memory") else {
            return Ok(None);
        };
        let file = match r.version() {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        let p = r.dir(group).join(file);
        let s = read_file(&p)?;
        s.trim().parse().map(Some).map_err(|_| CgroupError::Parse {
            path: p,
            content: s.trim().to_string(),
            reason: "expected bytes".to_string(),
        })
    }

    /// The group's PSI for one resource, if per-cgroup PSI exists here.
    pub fn psi(&self, group: &GroupPath, res: PsiResource) -> Result<Option<Psi>> {
        let Some(u) = self.unified() else {
            return Ok(None);
        };
        let p = u.dir(group).join(res.file());
        if !p.exists() && u.dir(group).exists() {
            return Ok(None);
        }
        read_psi(&p).map(Some)
    }
}

pub fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One `write(2)` of the whole value, as cgroupfs expects. Only the actuator calls this.
pub fn write_file(path: &Path, value: &str) -> Result<()> {
    let err = |source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    };
    // O_TRUNC is harmless on cgroupfs and keeps fake trees (tests) byte-exact.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// rmdir of a group; EBUSY is retried briefly, because a group whose last task just exited can stay
/// populated for a moment after `cgroup.procs` reads empty.
pub fn remove_group_dir(dir: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 25 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

pub fn read_procs(path: &Path) -> Result<Vec<i32>> {
    let s = read_file(path)?;
    Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

pub fn list_children(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|source| CgroupError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    Ok(out)
}
