//! Where tidal's groups live: the tidal root in each hierarchy tidal uses, which hierarchy and file(s)
//! serve each knob, and where a [`Target`] is on disk. Reading knobs lives here; changing anything is
//! the actuator's.
//!
//! The default root depends on the host (see [`RootSpec::Named`]): under the cgroup tidal was started
//! in on v1 and hybrid hosts; a top-level group on a pure v2 host without systemd; and a delegated
//! transient scope `tidal.slice/<name>.scope` on a pure v2 host run by systemd, so that tidal never
//! builds a tree behind systemd's back and never has to enable controllers in a populated cgroup.

use crate::controller::{self, Controller};
use crate::error::{CgroupError, Result};
use crate::hierarchy::{CgroupMode, Hierarchies, Hierarchy, Version};
use std::path::{Path, PathBuf};
use tidal_model::path::check_component;
use tidal_model::{ForeignGroup, GroupPath, Knob, KnobValue, Target};

/// Default name of the tidal root.
pub const DEFAULT_ROOT_NAME: &str = "tidal";
/// The slice tidal's delegated scopes live in on a systemd host.
pub const SYSTEMD_SLICE: &str = "tidal.slice";

/// v1 controllers tidal creates groups in (freezer only when there is no v2 mount to freeze through).
const V1_USED: [&str; 5] = ["cpu", "cpuacct", "cpuset", "memory", "blkio"];

/// Where the tidal root is, as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// Where tidal places a root of this name by itself: `<this process's cgroup>/<name>` on v1 and
    /// hybrid hosts; `/<name>` on a pure v2 host without systemd; the delegated transient scope
    /// `/tidal.slice/<name>.scope` on a pure v2 host run by systemd. The default is `tidal`.
    Named(String),
    /// The same absolute path in every hierarchy, relative to its mount (`/tidal.slice`).
    Pinned(String),
    /// A path relative to the cgroup tidal was started in, per hierarchy (`my-tidal` → `<self>/my-tidal`).
    Relative(String),
}

impl Default for RootSpec {
    fn default() -> Self {
        RootSpec::Named(DEFAULT_ROOT_NAME.to_string())
    }
}

impl RootSpec {
    /// The spec as `--root`/`TIDAL_ROOT` take it (None for a named root: that is the default's form).
    pub fn as_arg(&self) -> Option<&str> {
        match self {
            RootSpec::Pinned(p) | RootSpec::Relative(p) => Some(p),
            RootSpec::Named(_) => None,
        }
    }

    /// `--root` flag, else `TIDAL_ROOT`, else the default; the path is checked like any group path.
    pub fn from_flag_or_env(flag: Option<&str>) -> std::result::Result<RootSpec, String> {
        let env = std::env::var("TIDAL_ROOT").ok();
        match flag.or(env.as_deref()) {
            Some(p) if !p.trim().is_empty() => RootSpec::parse(p),
            _ => Ok(RootSpec::default()),
        }
    }

    /// An absolute path is pinned, a relative one is under this process's cgroup. Either is checked
    /// component by component: no `.`/`..`, no empty component (`//`), at most 255 bytes each.
    pub fn parse(p: &str) -> std::result::Result<RootSpec, String> {
        let (abs, rel) = match p.strip_prefix('/') {
            Some(r) => (true, r),
            None => (false, p),
        };
        let rel = rel.strip_suffix('/').unwrap_or(rel);
        if rel.is_empty() {
            return Err(format!(
                "invalid --root '{p}': the root cannot be a hierarchy's mount itself"
            ));
        }
        let mut depth = 0;
        for c in rel.split('/') {
            check_component(c).map_err(|why| format!("invalid --root '{p}': {why}"))?;
            depth += 1;
        }
        if depth > tidal_model::path::MAX_DEPTH {
            return Err(format!("invalid --root '{p}': deeper than 32 levels"));
        }
        Ok(if abs {
            RootSpec::Pinned(format!("/{rel}"))
        } else {
            RootSpec::Relative(rel.to_string())
        })
    }
}

/// Facts about the host that decide the default root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Host {
    /// systemd is the init system (`/run/systemd/system` exists).
    pub systemd: bool,
}

impl Host {
    pub fn detect() -> Host {
        Host {
            systemd: Path::new("/run/systemd/system").is_dir(),
        }
    }
}

/// The delegated transient scope that holds the tidal root on a systemd host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeUnit {
    /// `tidal.scope`.
    pub unit: String,
    /// `tidal.slice`.
    pub slice: String,
}

#[derive(Debug, Clone)]
pub struct HierarchyRoot {
    pub hierarchy: Hierarchy,
    /// The tidal root's directory in this hierarchy.
    pub root_dir: PathBuf,
}

impl HierarchyRoot {
    /// A group under the root. `GroupPath` is checked, so this never leaves the root.
    pub fn dir(&self, group: &GroupPath) -> PathBuf {
        if group.is_root() {
            self.root_dir.clone()
        } else {
            self.root_dir.join(group.as_str())
        }
    }
    /// Where a target is in this hierarchy: under the root, or relative to the mount.
    pub fn target_dir(&self, target: &Target) -> PathBuf {
        match target {
            Target::Tidal(g) => self.dir(g),
            Target::Foreign(f) => self.foreign_dir(f),
        }
    }
    pub fn foreign_dir(&self, f: &ForeignGroup) -> PathBuf {
        self.hierarchy.mount.join(f.as_str())
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
    /// Is `dir` the root or below it?
    pub fn holds(&self, dir: &Path) -> bool {
        dir.starts_with(&self.root_dir)
    }
    /// The group of `dir` if it is the root or below it (the inverse of [`HierarchyRoot::dir`]).
    pub fn group_of(&self, dir: &Path) -> Option<GroupPath> {
        let rel = dir.strip_prefix(&self.root_dir).ok()?;
        GroupPath::new(rel.to_str()?).ok()
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub hierarchies: Hierarchies,
    /// One entry per hierarchy tidal uses; the first is the one that owns `cpu`.
    pub roots: Vec<HierarchyRoot>,
    /// The systemd scope that holds the root, when the root is one.
    pub scope: Option<ScopeUnit>,
    /// The root as it was asked for.
    pub spec: RootSpec,
}

impl Layout {
    pub fn discover(root: &RootSpec) -> Result<Layout> {
        Ok(Layout::new(Hierarchies::discover()?, root, Host::detect()))
    }

    pub fn new(hierarchies: Hierarchies, root: &RootSpec, host: Host) -> Layout {
        let has_unified = hierarchies.unified().is_some();
        let pure_v2 = hierarchies.mode() == CgroupMode::V2;
        let scope = match root {
            RootSpec::Named(n) if pure_v2 && host.systemd => Some(ScopeUnit {
                unit: format!("{n}.scope"),
                slice: SYSTEMD_SLICE.to_string(),
            }),
            _ => None,
        };
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
                let under_self = |p: &str| format!("{}/{}", h.self_path.trim_end_matches('/'), p);
                let rel = match root {
                    RootSpec::Named(n) => match &scope {
                        Some(s) => format!("/{}/{}", s.slice, s.unit),
                        None if pure_v2 => format!("/{n}"),
                        None => under_self(n),
                    },
                    RootSpec::Pinned(p) => p.clone(),
                    RootSpec::Relative(p) => under_self(p),
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
        Layout {
            hierarchies,
            roots,
            scope,
            spec: root.clone(),
        }
    }

    /// The root named `child` inside this one, in every hierarchy: for tidal processes started inside
    /// a sandbox (the benchmark's). Never a systemd scope of its own.
    pub fn nested(&self, child: &str) -> RootSpec {
        match &self.spec {
            RootSpec::Relative(p) => RootSpec::Relative(format!("{p}/{child}")),
            RootSpec::Pinned(p) => RootSpec::Pinned(format!("{p}/{child}")),
            RootSpec::Named(n) => match (self.hierarchies.mode(), self.primary()) {
                (CgroupMode::V2, Some(r)) => {
                    let rel = r
                        .root_dir
                        .strip_prefix(&r.hierarchy.mount)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    RootSpec::Pinned(format!("/{rel}/{child}"))
                }
                _ => RootSpec::Relative(format!("{n}/{child}")),
            },
        }
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

    /// The v1 hierarchy root carrying `controller`.
    pub fn v1(&self, controller: &str) -> Option<&HierarchyRoot> {
        self.roots
            .iter()
            .find(|r| r.version() == Version::V1 && r.hierarchy.has(controller))
    }

    /// Which hierarchy and controller serve `knob` here, or None if no mounted hierarchy can.
    pub fn knob_target(&self, knob: Knob) -> Option<(&HierarchyRoot, &'static dyn Controller)> {
        if let Some(u) = self.unified() {
            if let Some(c) = controller::lookup(knob, Version::V2) {
                if c.controller().is_none_or(|name| u.hierarchy.has(name)) {
                    return Some((u, c));
                }
            }
        }
        let c = controller::lookup(knob, Version::V1)?;
        let r = self.v1(c.controller()?)?;
        Some((r, c))
    }

    /// The absolute file paths of `knob` for `target`, in write order.
    pub fn knob_paths(&self, target: &Target, knob: Knob) -> Option<(Version, Vec<PathBuf>)> {
        let (r, c) = self.knob_target(knob)?;
        let dir = r.target_dir(target);
        Some((
            r.version(),
            c.files(knob).iter().map(|f| dir.join(f)).collect(),
        ))
    }

    /// The group's directory in every hierarchy tidal uses.
    pub fn group_dirs(&self, group: &GroupPath) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.dir(group)).collect()
    }

    /// The target's directory in every hierarchy tidal uses.
    pub fn target_dirs(&self, target: &Target) -> Vec<PathBuf> {
        self.roots.iter().map(|r| r.target_dir(target)).collect()
    }

    /// Does the root exist in the primary hierarchy?
    pub fn root_exists(&self) -> bool {
        self.primary().is_some_and(|r| r.root_dir.is_dir())
    }

    pub fn read_knob(&self, target: &Target, knob: Knob) -> Result<KnobValue> {
        let (version, paths) =
            self.knob_paths(target, knob)
                .ok_or_else(|| CgroupError::Unsupported {
                    knob,
                    reason: "no mounted hierarchy has its controller".to_string(),
                })?;
        let contents = paths
            .iter()
            .map(|p| read_file(p))
            .collect::<Result<Vec<_>>>()?;
        controller::decode(knob, version, &contents).map_err(|reason| CgroupError::Parse {
            path: paths.first().cloned().unwrap_or_default(),
            content: contents.join(" | ").trim().to_string(),
            reason,
        })
    }

    /// Processes in the group in any hierarchy tidal uses (a group is empty only if all are).
    pub fn has_procs(&self, target: &Target) -> bool {
        self.roots
            .iter()
            .any(|r| read_procs(&r.target_dir(target).join(PROCS)).is_ok_and(|p| !p.is_empty()))
    }

    /// Child group names of `group` in the primary hierarchy.
    pub fn children(&self, group: &GroupPath) -> Result<Vec<String>> {
        let Some(r) = self.primary() else {
            return Ok(Vec::new());
        };
        list_children(&r.dir(group))
    }

    /// The directory of the cgroup this process started in, per hierarchy tidal uses.
    pub fn self_dirs(&self) -> Vec<PathBuf> {
        self.roots
            .iter()
            .map(|r| r.hierarchy.dir(&r.hierarchy.self_path))
            .collect()
    }
}

/// `cgroup.procs`: the processes of a group, one pid per line (v1 and v2).
pub const PROCS: &str = "cgroup.procs";

pub fn read_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The pids in a `cgroup.procs` file; a line that is not a pid is a parse error naming the file.
pub fn read_procs(path: &Path) -> Result<Vec<i32>> {
    let s = read_file(path)?;
    parse_procs(&s).map_err(|reason| CgroupError::Parse {
        path: path.to_path_buf(),
        content: s.chars().take(200).collect(),
        reason,
    })
}

/// How deep, and how many groups, [`visit_tree`] goes below the group it starts from.
pub const PROCS_TREE_DEPTH: usize = 4;
pub const PROCS_TREE_GROUPS: usize = 4096;

/// Calls `f` on the group at `dir` (its error is returned) and on every group below it, depth
/// first; groups that vanish meanwhile are skipped. The walk stops at [`PROCS_TREE_DEPTH`] levels
/// and [`PROCS_TREE_GROUPS`] groups.
pub fn visit_tree(dir: &Path, mut f: impl FnMut(&Path) -> Result<()>) -> Result<()> {
    f(dir)?;
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    let mut groups = 0usize;
    while let Some((d, depth)) = stack.pop() {
        if depth >= PROCS_TREE_DEPTH {
            continue;
        }
        let children = match list_children(&d) {
            Ok(c) => c,
            Err(e) if e.is_vanished() => continue,
            Err(e) => return Err(e),
        };
        for c in children {
            groups += 1;
            if groups > PROCS_TREE_GROUPS {
                return Ok(());
            }
            let cd = d.join(&c);
            match f(&cd) {
                Ok(()) => {}
                Err(e) if e.is_vanished() => continue,
                Err(e) => return Err(e),
            }
            stack.push((cd, depth + 1));
        }
    }
    Ok(())
}

/// The pids in the group at `dir` and in every group below it (see [`visit_tree`]): a pod's
/// processes live in its container groups, not in the pod group.
pub fn read_procs_tree(dir: &Path) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    visit_tree(dir, |d| {
        pids.extend(read_procs(&d.join(PROCS))?);
        Ok(())
    })?;
    // A process can be listed in more than one group (v1 hierarchies, v2 threaded subtrees).
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

pub fn parse_procs(text: &str) -> std::result::Result<Vec<i32>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.parse::<i32>() {
            Ok(p) if p > 0 => Ok(p),
            // The kernel lists a task outside the reader's PID namespace as 0.
            Ok(0) => Err("a task in another PID namespace (listed as 0): tidal needs the host's PID namespace (a pod: hostPID: true)".to_string()),
            _ => Err(format!("'{l}' is not a pid")),
        })
        .collect()
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
        .filter(|n| check_component(n).is_ok())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::{parse_mountinfo, parse_proc_cgroup};

    fn v2(self_path: &str) -> Hierarchies {
        Hierarchies::from_parts(
            &parse_mountinfo("26 22 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"),
            &parse_proc_cgroup(&format!("0::{self_path}\n")),
            |_| vec!["cpu".into(), "cpuset".into(), "memory".into()],
        )
    }

    fn hybrid() -> Hierarchies {
        Hierarchies::from_parts(
            &parse_mountinfo(
                "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            ),
            &parse_proc_cgroup("1:cpu:/process_api/x\n0::/\n"),
            |_| vec![],
        )
    }

    #[test]
    fn default_root_per_host_kind() {
        let session = "/user.slice/user-0.slice/session-1.scope";
        let l = Layout::new(v2(session), &RootSpec::default(), Host { systemd: true });
        assert_eq!(
            l.primary().unwrap().root_dir,
            PathBuf::from("/sys/fs/cgroup/tidal.slice/tidal.scope")
        );
        assert_eq!(l.scope.as_ref().unwrap().unit, "tidal.scope");
        let l = Layout::new(v2(session), &RootSpec::default(), Host { systemd: false });
        assert_eq!(
            l.primary().unwrap().root_dir,
            PathBuf::from("/sys/fs/cgroup/tidal")
        );
        assert!(l.scope.is_none());
        // v1 and hybrid keep the root under the cgroup tidal started in.
        let l = Layout::new(hybrid(), &RootSpec::default(), Host { systemd: true });
        assert_eq!(
            l.primary().unwrap().root_dir,
            PathBuf::from("/sys/fs/cgroup/cpu/process_api/x/tidal")
        );
        assert!(l.scope.is_none());
        // An explicit root is taken as given.
        let l = Layout::new(
            v2(session),
            &RootSpec::parse("/tidal.slice").unwrap(),
            Host { systemd: true },
        );
        assert_eq!(
            l.primary().unwrap().root_dir,
            PathBuf::from("/sys/fs/cgroup/tidal.slice")
        );
        assert!(l.scope.is_none());
    }

    #[test]
    fn root_flag_is_checked() {
        for bad in ["..", "/..", "a/../b", "//x", "a//b", "/", &"x".repeat(300)] {
            assert!(RootSpec::parse(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            RootSpec::parse("/tidal.slice/").unwrap(),
            RootSpec::Pinned("/tidal.slice".into())
        );
        assert_eq!(
            RootSpec::parse("my/tidal").unwrap(),
            RootSpec::Relative("my/tidal".into())
        );
    }

    #[test]
    fn targets_resolve_inside_their_place() {
        let l = Layout::new(v2("/"), &RootSpec::default(), Host { systemd: false });
        let r = l.primary().unwrap();
        let g = GroupPath::new("offline/offline/job").unwrap();
        assert_eq!(
            r.target_dir(&Target::Tidal(g.clone())),
            PathBuf::from("/sys/fs/cgroup/tidal/offline/offline/job")
        );
        assert_eq!(r.group_of(&r.dir(&g)), Some(g));
        let f = ForeignGroup::new("kubepods/besteffort/pod1").unwrap();
        assert_eq!(
            r.target_dir(&Target::Foreign(f)),
            PathBuf::from("/sys/fs/cgroup/kubepods/besteffort/pod1")
        );
    }

    #[test]
    fn procs_files_parse_strictly() {
        assert_eq!(parse_procs("12\n 13 \n\n"), Ok(vec![12, 13]));
        assert!(parse_procs("12\nx\n").is_err());
        assert!(parse_procs("-1\n").is_err());
        // A task outside this PID namespace: says what it takes.
        assert!(parse_procs("12\n0\n").is_err_and(|e| e.contains("host's PID namespace")));
    }
}
