//! Applies plans: creates groups, writes knobs (journalling originals first), moves tasks, kills.

use crate::error::ActError;
use crate::journal::{Entry, Journal};
use std::path::{Path, PathBuf};
use tidal_cgroupfs::layout::{read_file, read_procs, remove_group_dir, write_file};
use tidal_cgroupfs::v2::core::{subtree_delta, KILL, SUBTREE_CONTROL};
use tidal_cgroupfs::{knobs, CgroupError, Layout, Version};
use tidal_model::{Action, GroupPath, Knob, KnobValue, Op, Plan};
use tracing::{debug, info, warn};

/// v2 controllers tidal enables for its subtree when the parent offers them.
const V2_CONTROLLERS: [&str; 4] = ["cpu", "cpuset", "memory", "io"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Written,
    /// The value was already in place: nothing written.
    Unchanged,
    /// The group is gone (its workload ended): a normal event.
    Vanished,
    /// Dry run: logged, not written.
    DryRun,
    /// This host has no file for the knob.
    Unsupported,
}

#[derive(Debug)]
pub struct Applied {
    pub action: Action,
    pub result: Result<Outcome, ActError>,
}

pub struct Actuator {
    layout: Layout,
    journal: Journal,
    dry_run: bool,
    /// Files written since start (for metrics).
    pub writes: u64,
    /// Groups this process created, oldest first (for rollback).
    created_now: Vec<PathBuf>,
}

fn mkdir_err(path: &Path) -> impl FnOnce(std::io::Error) -> ActError + '_ {
    move |source| {
        ActError::Cgroup(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl Actuator {
    pub fn new(layout: Layout, state_dir: &Path, dry_run: bool) -> Result<Actuator, ActError> {
        Ok(Actuator {
            layout,
            journal: Journal::open(state_dir)?,
            dry_run,
            writes: 0,
            created_now: Vec::new(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Applies every action in order; a failed action does not stop the rest.
    pub fn apply(&mut self, plan: &Plan) -> Vec<Applied> {
        plan.actions
            .iter()
            .map(|a| {
                let result = self.apply_one(a);
                match &result {
                    Ok(Outcome::Written) => info!("{a}"),
                    Ok(Outcome::DryRun) => info!("dry-run: would {a}"),
                    Ok(o) => debug!("{a}: {o:?}"),
                    Err(e) => warn!("{a}: {e}"),
                }
                Applied {
                    action: a.clone(),
                    result,
                }
            })
            .collect()
    }

    pub fn apply_one(&mut self, a: &Action) -> Result<Outcome, ActError> {
        match &a.op {
            Op::EnsureGroup => self.ensure_group(&a.group),
            Op::Set { knob, value } => self.set(&a.group, *knob, value),
            Op::Kill => self.kill(&a.group),
            Op::RemoveGroup => self.remove_group(&a.group),
        }
    }

    /// Writes one raw file, journalling its original first. Only this function writes knob files.
    fn write_journalled(&mut self, path: &Path, value: &str) -> Result<Outcome, ActError> {
        if self.dry_run {
            info!("dry-run: would write '{value}' to {}", path.display());
            return Ok(Outcome::DryRun);
        }
        // A group tidal created has no original worth keeping: restore removes it (a busy one is
        // thawed). Skipping it saves an fsync per file when a workload starts.
        let in_created = path.parent().is_some_and(|d| self.journal.is_created(d));
        if !in_created && !self.journal.has_original(path) {
            let original = read_file(path)?;
            self.journal.record_original(path, original.trim_end())?;
        }
        write_file(path, value)?;
        self.writes += 1;
        Ok(Outcome::Written)
    }

    /// Records the originals of these knobs' files now, without writing and in one journal update, so
    /// later urgent writes (offline confinement) do not wait for the journal's fsync.
    pub fn remember(&mut self, targets: &[(GroupPath, Knob)]) -> Result<(), ActError> {
        if self.dry_run {
            return Ok(());
        }
        let mut items = Vec::new();
        for (group, knob) in targets {
            let Some((_, paths)) = self.layout.knob_paths(group, *knob) else {
                continue;
            };
            for p in paths {
                if self.journal.has_original(&p) {
                    continue;
                }
                match read_file(&p) {
                    Ok(v) => items.push((p, v.trim_end().to_string())),
                    Err(e) if e.is_vanished() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.journal.record_originals(&items)
    }

    /// Sets a knob on a group unless it already has the value.
    pub fn set(
        &mut self,
        group: &GroupPath,
        knob: Knob,
        value: &KnobValue,
    ) -> Result<Outcome, ActError> {
        let Some((version, paths)) = self.layout.knob_paths(group, knob) else {
            return Ok(Outcome::Unsupported);
        };
        let wanted = knobs::encode(knob, version, value)
            .map_err(|reason| ActError::Encode { knob, reason })?;
        // Compare through the decoder so lossy conversions (shares → weight) still count as equal.
        let canonical = knobs::decode(knob, version, &wanted).ok();
        let mut current = Vec::with_capacity(paths.len());
        for p in &paths {
            match read_file(p) {
                Ok(s) => current.push(s),
                Err(e) if e.is_vanished() => {
                    if p.parent().is_some_and(Path::exists) {
                        return Ok(Outcome::Unsupported);
                    }
                    return Ok(Outcome::Vanished);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if canonical.is_some() && knobs::decode(knob, version, &current).ok() == canonical {
            return Ok(Outcome::Unchanged);
        }
        let mut outcome = Outcome::Unchanged;
        for ((p, want), cur) in paths.iter().zip(&wanted).zip(&current) {
            if cur.trim() == want.trim() {
                continue;
            }
            match self.write_journalled(p, want) {
                Err(e) if e.is_vanished() => return Ok(Outcome::Vanished),
                Err(e) => return Err(e),
                Ok(o) => outcome = o,
            }
        }
        Ok(outcome)
    }

    /// Creates `group` and its ancestors (the tidal root included) in every hierarchy tidal uses.
    pub fn ensure_group(&mut self, group: &GroupPath) -> Result<Outcome, ActError> {
        let mut chain = vec![GroupPath::root()];
        chain.extend(group.lineage());
        let mut outcome = Outcome::Unchanged;
        if !self.dry_run {
            // One journal update (one fsync) for every directory about to be made.
            let missing: Vec<PathBuf> = chain
                .iter()
                .flat_map(|g| self.layout.roots.iter().map(move |r| r.dir(g)))
                .filter(|d| !d.exists())
                .collect();
            self.journal.record_created_many(&missing)?;
        }
        for g in &chain {
            for i in 0..self.layout.roots.len() {
                let dir = self.layout.roots[i].dir(g);
                let version = self.layout.roots[i].version();
                if dir.exists() {
                    if version == Version::V1 && self.layout.roots[i].hierarchy.has("cpuset") {
                        self.init_cpuset(&dir)?;
                    }
                    continue;
                }
                if self.dry_run {
                    info!("dry-run: would create {}", dir.display());
                    outcome = Outcome::DryRun;
                    continue;
                }
                self.create_dir(&dir, version)?;
                outcome = Outcome::Written;
            }
        }
        Ok(outcome)
    }

    /// Creates one group directory: journal first, enable v2 controllers, init v1 cpusets. Missing
    /// parents (of a tidal root given as a deeper path) are created the same way.
    fn create_dir(&mut self, dir: &Path, version: Version) -> Result<bool, ActError> {
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let in_cgroupfs = self
            .layout
            .roots
            .iter()
            .any(|r| parent.starts_with(&r.hierarchy.mount) && parent != r.hierarchy.mount);
        if in_cgroupfs && !parent.exists() {
            self.create_dir(&parent, version)?;
        }
        if version == Version::V2 {
            self.enable_v2_controllers(&parent)?;
        }
        let added = self.journal.record_created(dir)?;
        match std::fs::create_dir(dir) {
            Ok(()) => self.created_now.push(dir.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another tidal process (a concurrent `tidal run`) made it between our check and
                // mkdir. Its entry may be the one just recorded here, so the entry stays.
                return Ok(false);
            }
            Err(e) => {
                if added {
                    let d = dir.to_path_buf();
                    let _ = self
                        .journal
                        .forget(|e| matches!(e, Entry::Created { path } if *path == d));
                }
                return Err(mkdir_err(dir)(e));
            }
        }
        if version == Version::V1 {
            self.init_cpuset(dir)?;
        }
        Ok(true)
    }

    /// A v1 cpuset group starts with empty `cpuset.cpus`/`cpuset.mems` and refuses tasks until both are
    /// set: give it its parent's. Also heals a group another process created but has not filled yet
    /// (concurrent `tidal run`s), or one left empty by a crash between mkdir and this write.
    fn init_cpuset(&mut self, dir: &Path) -> Result<(), ActError> {
        if self.dry_run || !dir.join("cpuset.cpus").exists() {
            return Ok(());
        }
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if !read_file(&dir.join(f))?.trim().is_empty() {
                continue;
            }
            let mut v = read_file(&parent.join(f))?;
            if v.trim().is_empty() {
                self.init_cpuset(parent)?;
                v = read_file(&parent.join(f))?;
            }
            match self.write_journalled(&dir.join(f), v.trim()) {
                Ok(_) => {}
                // Filled by the other process meanwhile.
                Err(_) if !read_file(&dir.join(f))?.trim().is_empty() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn enable_v2_controllers(&mut self, parent: &Path) -> Result<(), ActError> {
        let offered = match read_file(&parent.join("cgroup.controllers")) {
            Ok(s) => s,
            Err(e) if e.is_vanished() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let current = read_file(&parent.join(SUBTREE_CONTROL))?;
        let mut wanted: Vec<&str> = current.split_whitespace().collect();
        for c in V2_CONTROLLERS {
            if offered.split_whitespace().any(|x| x == c) && !wanted.contains(&c) {
                wanted.push(c);
            }
        }
        if let Some(delta) = subtree_delta(&current, &wanted.join(" ")) {
            self.write_journalled(&parent.join(SUBTREE_CONTROL), &delta)?;
        }
        Ok(())
    }

    /// Creates a new group `parent/name` (or `name-2`, `name-3`, … if taken) and returns its path.
    /// The name is claimed atomically by mkdir in the primary hierarchy.
    pub fn create_unique(&mut self, parent: &GroupPath, name: &str) -> Result<GroupPath, ActError> {
        self.ensure_group(parent)?;
        let Some(primary) = self.layout.primary().cloned() else {
            return Err(ActError::Cgroup(CgroupError::NoHierarchy {
                path: PathBuf::from("/proc/self/mountinfo"),
            }));
        };
        for n in 1..10_000 {
            let candidate = if n == 1 {
                parent.join(name)
            } else {
                parent.join(&format!("{name}-{n}"))
            };
            let dir = primary.dir(&candidate);
            if dir.exists() {
                continue;
            }
            if self.dry_run {
                info!("dry-run: would create {}", dir.display());
                return Ok(candidate);
            }
            if !self.create_dir(&dir, primary.version())? {
                continue;
            }
            self.ensure_group(&candidate)?;
            return Ok(candidate);
        }
        Err(ActError::NoFreeName {
            parent: primary.dir(parent),
            name: name.to_string(),
        })
    }

    /// Removes the groups this process created for `group` (its own directories, newest first) and their
    /// journal entries: used when setting a workload up fails half-way. Shared parents (level groups,
    /// the tidal root) stay: a concurrent `tidal run` may be about to use them.
    pub fn rollback_created(&mut self, group: &GroupPath) {
        let own = self.layout.group_dirs(group);
        let dirs: Vec<PathBuf> = self
            .created_now
            .iter()
            .rev()
            .filter(|d| own.iter().any(|o| d.starts_with(o)))
            .cloned()
            .collect();
        self.created_now.retain(|d| !dirs.contains(d));
        for d in &dirs {
            if let Err(e) = remove_group_dir(d) {
                warn!("rollback: cannot remove {}: {e}", d.display());
            }
        }
        let gone: Vec<PathBuf> = dirs.into_iter().filter(|d| !d.exists()).collect();
        if let Err(e) = self
            .journal
            .forget(|e| matches!(e, Entry::Created { path } if gone.contains(path)))
        {
            warn!("rollback: {e}");
        }
    }

    /// Removes an empty group from every hierarchy (deepest hierarchy dirs are leaves: one rmdir each)
    /// and drops its journal entries. A group that still has tasks is left alone.
    pub fn remove_group(&mut self, group: &GroupPath) -> Result<Outcome, ActError> {
        if group.is_root() {
            return Ok(Outcome::Unchanged);
        }
        if self.layout.has_procs(group) {
            return Ok(Outcome::Unchanged);
        }
        if self.dry_run {
            info!("dry-run: would remove group {group}");
            return Ok(Outcome::DryRun);
        }
        let dirs = self.layout.group_dirs(group);
        let mut removed = Vec::new();
        for d in &dirs {
            match remove_group_dir(d) {
                Ok(()) => removed.push(d.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(d.clone()),
                Err(e) => {
                    return Err(ActError::Cgroup(CgroupError::Remove {
                        path: d.clone(),
                        source: e,
                    }))
                }
            }
        }
        self.journal.forget(|e| match e {
            Entry::Created { path } => removed.contains(path),
            Entry::Original { path, .. } => path
                .parent()
                .is_some_and(|p| removed.iter().any(|r| r == p)),
        })?;
        Ok(Outcome::Written)
    }

    /// Moves a task back to the cgroups this process started in (after a failed move).
    pub fn move_pid_home(&mut self, pid: u32) {
        for r in &self.layout.roots {
            let p = r.hierarchy.dir(&r.hierarchy.self_path).join("cgroup.procs");
            if let Err(e) = write_file(&p, &pid.to_string()) {
                warn!("cannot move pid {pid} back to {}: {e}", p.display());
            }
        }
    }

    /// Moves a task into the group in every hierarchy tidal uses.
    pub fn move_pid(&mut self, group: &GroupPath, pid: u32) -> Result<(), ActError> {
        for dir in self.layout.group_dirs(group) {
            let p = dir.join("cgroup.procs");
            if self.dry_run {
                info!("dry-run: would move pid {pid} to {}", p.display());
                continue;
            }
            write_file(&p, &pid.to_string())?;
        }
        Ok(())
    }

    /// Kills every task of the group: `cgroup.kill` where it exists, else SIGKILL per task.
    pub fn kill(&mut self, group: &GroupPath) -> Result<Outcome, ActError> {
        if self.dry_run {
            info!("dry-run: would kill every task of {group}");
            return Ok(Outcome::DryRun);
        }
        if let Some(u) = self.layout.unified() {
            let p = u.dir(group).join(KILL);
            if p.exists() {
                match write_file(&p, "1") {
                    Ok(()) => return Ok(Outcome::Written),
                    Err(e) if e.is_vanished() => return Ok(Outcome::Vanished),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let Some(primary) = self.layout.primary() else {
            return Ok(Outcome::Unsupported);
        };
        let procs = primary.dir(group).join("cgroup.procs");
        let pids = match read_procs(&procs) {
            Ok(p) => p,
            Err(e) if e.is_vanished() => return Ok(Outcome::Vanished),
            Err(e) => return Err(e.into()),
        };
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        Ok(Outcome::Written)
    }
}
