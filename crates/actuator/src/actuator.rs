//! Applies plans: creates groups, writes knobs (journalling originals first), moves tasks, kills.
//!
//! A write the kernel refuses with EINVAL or EOPNOTSUPP marks that knob unsupported for that group:
//! it is logged once, counted, and not tried again until the slow re-probe interval has passed (a
//! peer that retried such writes in a loop burned 0.4 CPU per node).

use crate::error::ActError;
use crate::journal::{Forgotten, Journal};
use crate::kernel;
use crate::systemd::{self, ScopeRequest, Started};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tidal_cgroupfs::controller;
use tidal_cgroupfs::layout::{read_file, read_procs, PROCS};
use tidal_cgroupfs::v2::core::{subtree_delta, CONTROLLERS, KILL, SUBTREE_CONTROL};
use tidal_cgroupfs::{cpuset, iolimit, CgroupError, Layout, Version};
use tidal_model::{
    Action, DevNum, ForeignGroup, GroupPath, IoLimit, Knob, KnobValue, Op, Plan, Target,
};
use tracing::{debug, info, warn};

/// v2 controllers tidal enables for its subtree when the parent offers them.
const V2_CONTROLLERS: [&str; 4] = ["cpu", "cpuset", "memory", "io"];
/// The leaf that holds the process a systemd scope was started with, until it moves on.
pub const ANCHOR: &str = "anchor";
/// How long a kill waits for the killed tasks to leave the group.
const KILL_WAIT: Duration = Duration::from_millis(200);
/// How long a purge leaves an emptied systemd scope's cgroup to systemd before removing it itself.
const SCOPE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Written,
    /// The value was already in place (or a kill found no task): nothing written.
    Unchanged,
    /// The group is gone (its workload ended): a normal event.
    Vanished,
    /// Dry run: logged, not written.
    DryRun,
    /// This host has no file for the knob, or the kernel refused it (not retried until re-probe).
    Unsupported,
    /// The group is busy (rmdir of a group whose tasks are still exiting): retry later.
    Busy,
    /// Not a kernel change (an eviction): the workload source carries it out.
    Elsewhere,
}

#[derive(Debug)]
pub struct Applied {
    pub action: Action,
    pub result: Result<Outcome, ActError>,
}

/// Counters for metrics.
#[derive(Debug, Clone, Default)]
pub struct ActStats {
    /// Files written since start.
    pub writes: u64,
    /// Knobs marked unsupported after the kernel refused a write, by knob.
    pub unsupported: BTreeMap<Knob, u64>,
    /// Tasks that survived a kill.
    pub kill_survivors: u64,
}

pub struct Actuator {
    layout: Layout,
    journal: Journal,
    dry_run: bool,
    stats: ActStats,
    /// Groups this process created, oldest first (for rollback).
    created_now: Vec<PathBuf>,
    /// (group dir, knob) the kernel refused, and when.
    refused: HashMap<(PathBuf, Knob), Instant>,
    reprobe: Duration,
    /// Lowering `oom_score_adj` was refused (no CAP_SYS_RESOURCE): said once.
    oom_refused: bool,
    /// Originals this process journalled: if a record is taken back while it runs, this value (never
    /// one tidal wrote) is journalled again before the next write.
    first_seen: HashMap<PathBuf, String>,
    /// Devices on which blk-iocost was last refused (said once per set).
    iocost_refused: Vec<String>,
    /// Another manager's groups this actuator never writes, nor any group above them (the
    /// kubelet's QoS tiers).
    protected: Vec<ForeignGroup>,
}

fn mkdir_err(path: &Path) -> impl FnOnce(std::io::Error) -> ActError + '_ {
    move |source| {
        ActError::Cgroup(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        })
    }
}

fn rmdir_err(path: &Path) -> impl FnOnce(std::io::Error) -> ActError + '_ {
    move |source| {
        ActError::Cgroup(CgroupError::Remove {
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
            stats: ActStats::default(),
            created_now: Vec::new(),
            refused: HashMap::new(),
            oom_refused: false,
            reprobe: Duration::from_secs(10),
            first_seen: HashMap::new(),
            iocost_refused: Vec::new(),
            protected: Vec::new(),
        })
    }

    /// Groups of another manager never to be written, with every group above them.
    pub fn protect(&mut self, groups: Vec<ForeignGroup>) {
        self.protected = groups;
    }

    /// Refuses a target that is a protected group or above one.
    pub(crate) fn guard(&self, target: &Target) -> Result<(), ActError> {
        let Target::Foreign(f) = target else {
            return Ok(());
        };
        match self.protected.iter().find(|p| f.contains(p)) {
            Some(p) => Err(ActError::Protected {
                path: self
                    .layout
                    .target_dirs(target)
                    .into_iter()
                    .next()
                    .unwrap_or_default(),
                owned: p.to_string(),
            }),
            None => Ok(()),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn journal_mut(&mut self) -> &mut Journal {
        &mut self.journal
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn stats(&self) -> &ActStats {
        &self.stats
    }

    /// How long a knob the kernel refused stays unsupported before it is tried again.
    pub fn set_reprobe_interval(&mut self, d: Duration) {
        self.reprobe = d;
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
                    Ok(Outcome::Elsewhere) => {}
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
            Op::EnsureGroup { group } => self.ensure_group(group),
            Op::Set {
                target,
                knob,
                value,
            } => self.set(target, *knob, value),
            Op::Kill { group } => self.kill(group),
            Op::RemoveGroup { group } => self.remove_group(group),
            Op::Evict { .. } => Ok(Outcome::Elsewhere),
            Op::OomScoreAdj { target, value } => self.oom_score_adj(target, *value),
        }
    }

    /// Is `dir` a group tidal created? Its files have no original worth keeping: restore removes
    /// the group, or gives a busy one its parent's full set.
    fn in_created(&self, dir: &Path) -> bool {
        self.journal.is_created(dir)
    }

    /// Journals the original of `path` (unless it has one, or its group is tidal's own).
    fn journal_original(&mut self, path: &Path, foreign: bool) -> Result<(), ActError> {
        let dir = path.parent().unwrap_or(path);
        if self.journal.has_original(path) || (!foreign && self.in_created(dir)) {
            return Ok(());
        }
        let value = match self.first_seen.get(path) {
            Some(v) => v.clone(),
            None => read_file(path)?.trim_end().to_string(),
        };
        self.journal
            .record_originals(&[(path.to_path_buf(), value.clone())], foreign)?;
        self.first_seen.insert(path.to_path_buf(), value);
        Ok(())
    }

    /// Writes one knob file, journalling its original first: no journal, no write.
    fn write_journalled(
        &mut self,
        path: &Path,
        value: &str,
        foreign: bool,
    ) -> Result<Outcome, ActError> {
        if self.dry_run {
            info!("dry-run: would write '{value}' to {}", path.display());
            return Ok(Outcome::DryRun);
        }
        self.journal_original(path, foreign)?;
        kernel::write_file(path, value)?;
        self.stats.writes += 1;
        Ok(Outcome::Written)
    }

    /// Records the originals of these knobs' files now, without writing and in one journal append,
    /// so later urgent writes (offline confinement) need no fsync. Files in groups tidal created are
    /// skipped: restore removes those groups (or gives them their parent's set), never re-pins them.
    pub fn remember(&mut self, targets: &[(Target, Knob)]) -> Result<(), ActError> {
        if self.dry_run {
            return Ok(());
        }
        self.journal.sync()?;
        let mut items = Vec::new();
        for (target, knob) in targets {
            // Never written, so its originals are not restore's to write back.
            if self.guard(target).is_err() {
                continue;
            }
            let Some((_, paths)) = self.layout.knob_paths(target, *knob) else {
                continue;
            };
            let foreign = matches!(target, Target::Foreign(_));
            for p in paths {
                let dir = p.parent().unwrap_or(&p);
                if self.journal.has_original(&p) || (!foreign && self.in_created(dir)) {
                    continue;
                }
                match read_file(&p) {
                    Ok(v) => {
                        let v = v.trim_end().to_string();
                        self.first_seen
                            .entry(p.clone())
                            .or_insert_with(|| v.clone());
                        items.push((p, v));
                    }
                    Err(e) if e.is_vanished() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let (foreign, tidal): (Vec<_>, Vec<_>) = items
            .into_iter()
            .partition(|(p, _)| !self.layout.roots.iter().any(|r| r.holds(p)));
        self.journal.record_originals(&tidal, false)?;
        self.journal.record_originals(&foreign, true)
    }

    /// Sets a knob unless it already has the value.
    pub fn set(
        &mut self,
        target: &Target,
        knob: Knob,
        value: &KnobValue,
    ) -> Result<Outcome, ActError> {
        self.guard(target)?;
        let Some((version, paths)) = self.layout.knob_paths(target, knob) else {
            return Ok(Outcome::Unsupported);
        };
        let dir = paths
            .first()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if let Some(at) = self.refused.get(&(dir.clone(), knob)) {
            if at.elapsed() < self.reprobe {
                return Ok(Outcome::Unsupported);
            }
        }
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
        let lifted;
        let value = match value {
            KnobValue::IoMax(v) => {
                lifted = KnobValue::IoMax(with_lifted(version, &current, v));
                &lifted
            }
            v => v,
        };
        let wanted =
            controller::encode(knob, version, value).map_err(|reason| ActError::Encode {
                knob,
                path: paths.first().cloned().unwrap_or_default(),
                reason,
            })?;
        // Compare through the decoder so lossy conversions (shares → weight) still count as equal.
        let canonical = controller::decode(knob, version, &wanted).ok();
        if canonical.is_some() && controller::decode(knob, version, &current).ok() == canonical {
            self.refused.remove(&(dir, knob));
            return Ok(Outcome::Unchanged);
        }
        let foreign = matches!(target, Target::Foreign(_));
        let mut outcome = Outcome::Unchanged;
        for ((p, want), cur) in paths.iter().zip(&wanted).zip(&current) {
            if cur.trim() == want.trim() {
                continue;
            }
            match self.write_journalled(p, want, foreign) {
                Err(e) if e.is_vanished() => return Ok(Outcome::Vanished),
                Err(e) if e.is_rejected() => {
                    let first = !self.refused.contains_key(&(dir.clone(), knob));
                    self.refused.insert((dir.clone(), knob), Instant::now());
                    *self.stats.unsupported.entry(knob).or_default() += 1;
                    if first {
                        warn!(
                            "{knob} on {target} is unsupported here ({e}): not retried for {}s",
                            self.reprobe.as_secs()
                        );
                    }
                    return Ok(Outcome::Unsupported);
                }
                Err(e) => return Err(e),
                Ok(o) => outcome = o,
            }
        }
        self.refused.remove(&(dir, knob));
        Ok(outcome)
    }

    /// Makes sure the tidal root exists. On a systemd host whose root is a delegated scope that does
    /// not exist yet, systemd starts it with `anchor` (this process if None) in it, and the anchor
    /// moves into the leaf [`ANCHOR`], so the scope's own cgroup holds no process and can pass
    /// controllers down. Elsewhere the root is made like any group, under an existing parent only.
    pub fn ensure_root(&mut self, anchor: Option<u32>) -> Result<Outcome, ActError> {
        let Some(scope) = self.layout.scope.clone() else {
            return self.ensure_group(&GroupPath::root());
        };
        if self.dry_run {
            info!(
                "dry-run: would start (or join) the systemd scope {}",
                scope.unit
            );
            return Ok(Outcome::DryRun);
        }
        let pid = anchor.unwrap_or_else(std::process::id);
        let anchor_group = GroupPath::root()
            .join(ANCHOR)
            .map_err(|e| ActError::Root(e.to_string()))?;
        // Even when the scope exists, the pid joins it through systemd: a scope whose last workload
        // just ended is stopping, and anything made in it now would go with it.
        let started = systemd::join_scope(
            &ScopeRequest {
                unit: scope.unit.clone(),
                slice: scope.slice.clone(),
                pids: vec![pid],
                description: "tidal workloads (delegated cgroup tree)".to_string(),
            },
            &format!("/{ANCHOR}"),
            &self
                .layout
                .primary()
                .map(|r| r.root_dir.join(PROCS))
                .unwrap_or_default(),
        )?;
        match started {
            Started::New => {
                self.wait_scope(Some(pid))?;
                self.make_anchor(&anchor_group)?;
                self.move_pid(&anchor_group, pid)?;
            }
            Started::Attached => self.wait_in(&anchor_group, pid)?,
            Started::Exists => {
                self.wait_scope(None)?;
                self.make_anchor(&anchor_group)?;
                self.move_pid(&anchor_group, pid)?;
            }
            Started::Placeholder(mut child) => {
                // systemd-run put a placeholder in the scope: our pid takes its place.
                let moved = self
                    .make_anchor(&anchor_group)
                    .and_then(|_| self.move_pid(&anchor_group, pid));
                let _ = child.kill();
                let _ = child.wait();
                moved?;
            }
        }
        // The anchor leaf was made by systemd or by us: journalled either way, so restore removes
        // it once empty.
        if let Some(d) = self.layout.primary().map(|r| r.dir(&anchor_group)) {
            self.journal.record_created(&d)?;
        }
        Ok(Outcome::Written)
    }

    /// Waits (≤ 5 s) until `pid` is in `group`.
    fn wait_in(&self, group: &GroupPath, pid: u32) -> Result<(), ActError> {
        let Some(dir) = self.layout.primary().map(|r| r.dir(group)) else {
            return Err(ActError::Root("no cgroup hierarchy".into()));
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !read_procs(&dir.join(PROCS)).is_ok_and(|p| p.contains(&(pid as i32))) {
            if Instant::now() > deadline {
                return Err(ActError::Systemd(format!(
                    "pid {pid} did not arrive in {} within 5 s",
                    dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The anchor leaf: made before controllers are passed down (the scope still holds the pid
    /// that is about to move into it, so its `cgroup.subtree_control` cannot be written yet).
    fn make_anchor(&mut self, anchor: &GroupPath) -> Result<(), ActError> {
        for d in self.layout.group_dirs(anchor) {
            if d.exists() {
                continue;
            }
            self.journal.record_created(&d)?;
            match kernel::make_dir(&d) {
                Ok(()) => self.created_now.push(d),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(mkdir_err(&d)(e)),
            }
        }
        Ok(())
    }

    /// Waits (≤ 5 s) until the scope's cgroup exists and, if given, holds `pid`.
    fn wait_scope(&self, pid: Option<u32>) -> Result<(), ActError> {
        let Some(root) = self.layout.primary().map(|r| r.root_dir.clone()) else {
            return Err(ActError::Root("no cgroup hierarchy".into()));
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ready = match pid {
                None => root.is_dir(),
                Some(pid) => read_procs(&root.join(PROCS)).is_ok_and(|p| p.contains(&(pid as i32))),
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ActError::Systemd(format!(
                    "the scope's cgroup {} did not appear (or its first process did not move into it) within 5 s",
                    root.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Creates `group` and its ancestors (the tidal root included) in every hierarchy tidal uses.
    pub fn ensure_group(&mut self, group: &GroupPath) -> Result<Outcome, ActError> {
        let mut chain = vec![GroupPath::root()];
        chain.extend(group.lineage());
        let mut outcome = Outcome::Unchanged;
        if self.layout.scope.is_some() && !self.layout.root_exists() {
            let unit = self
                .layout
                .scope
                .as_ref()
                .map(|s| s.unit.clone())
                .unwrap_or_default();
            return Err(ActError::Root(format!(
                "the tidal root (systemd scope {unit}) does not exist yet: `tidal run` starts it"
            )));
        }
        if !self.dry_run {
            // One journal append (one fsync) for every directory about to be made.
            let missing: Vec<PathBuf> = chain
                .iter()
                .flat_map(|g| self.layout.roots.iter().map(move |r| r.dir(g)))
                .filter(|d| !d.exists())
                .collect();
            self.journal.record_created_many(&missing)?;
        }
        for g in &chain {
            for i in 0..self.layout.roots.len() {
                let r = &self.layout.roots[i];
                let dir = r.dir(g);
                let version = r.version();
                let is_cpuset_v1 = version == Version::V1 && r.hierarchy.has("cpuset");
                if dir.exists() {
                    if is_cpuset_v1 {
                        self.init_cpuset(&dir, g.is_root())?;
                    }
                    continue;
                }
                if self.dry_run {
                    info!("dry-run: would create {}", dir.display());
                    outcome = Outcome::DryRun;
                    continue;
                }
                if g.is_root() && dir.parent().is_some_and(|p| !p.is_dir()) {
                    return Err(ActError::Root(format!(
                        "cannot create the tidal root {}: its parent does not exist (tidal creates groups only at or below its root)",
                        dir.display()
                    )));
                }
                self.create_dir(&dir, version, g.is_root())?;
                outcome = Outcome::Written;
            }
        }
        Ok(outcome)
    }

    /// Creates one group directory: journal first, enable v2 controllers in its parent, init v1
    /// cpusets.
    fn create_dir(
        &mut self,
        dir: &Path,
        version: Version,
        is_root: bool,
    ) -> Result<bool, ActError> {
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        if version == Version::V2 {
            self.enable_v2_controllers(&parent)?;
        }
        let added = self.journal.record_created(dir)?;
        match kernel::make_dir(dir) {
            Ok(()) => self.created_now.push(dir.to_path_buf()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another tidal process (a concurrent `tidal run`) made it between our check and
                // mkdir. Its record may be the one just appended here, so the record stays.
                return Ok(false);
            }
            Err(e) => {
                if added {
                    let _ = self
                        .journal
                        .forget(&[(dir.to_path_buf(), Forgotten::Created)]);
                }
                return Err(mkdir_err(dir)(e));
            }
        }
        if version == Version::V1 {
            self.init_cpuset(dir, is_root)?;
        }
        Ok(true)
    }

    /// A v1 cpuset group starts with empty `cpuset.cpus`/`cpuset.mems` and refuses tasks until both
    /// are set: give it its parent's. Also heals a group another process created but has not filled
    /// yet (concurrent `tidal run`s), or one left empty by a crash between mkdir and this write.
    /// Never climbs above the tidal root.
    fn init_cpuset(&mut self, dir: &Path, is_root: bool) -> Result<(), ActError> {
        if self.dry_run || !dir.join(cpuset::CPUS).exists() {
            return Ok(());
        }
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        for f in [cpuset::CPUS, cpuset::MEMS] {
            if !read_file(&dir.join(f))?.trim().is_empty() {
                continue;
            }
            let mut v = read_file(&parent.join(f))?;
            if v.trim().is_empty() && !is_root {
                self.init_cpuset(
                    parent,
                    self.layout.roots.iter().any(|r| r.root_dir == parent),
                )?;
                v = read_file(&parent.join(f))?;
            }
            match self.write_journalled(&dir.join(f), v.trim(), false) {
                Ok(_) => {}
                // Filled by the other process meanwhile.
                Err(_) if !read_file(&dir.join(f))?.trim().is_empty() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn enable_v2_controllers(&mut self, parent: &Path) -> Result<(), ActError> {
        let offered = match read_file(&parent.join(CONTROLLERS)) {
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
            self.write_journalled(&parent.join(SUBTREE_CONTROL), &delta, false)?;
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
        let bad = |e: tidal_model::BadPath| ActError::Root(e.to_string());
        for n in 1..10_000 {
            let candidate = if n == 1 {
                parent.join(name).map_err(bad)?
            } else {
                parent.join(&format!("{name}-{n}")).map_err(bad)?
            };
            let dir = primary.dir(&candidate);
            if dir.exists() {
                continue;
            }
            if self.dry_run {
                info!("dry-run: would create {}", dir.display());
                return Ok(candidate);
            }
            if !self.create_dir(&dir, primary.version(), false)? {
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

    /// Removes the groups this process created for `group` (its own directories, newest first) and
    /// their records: used when setting a workload up fails half-way. Shared parents (level groups,
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
            if let Err(e) = kernel::remove_dir_waiting(d, 25) {
                warn!("rollback: cannot remove {}: {e}", d.display());
            }
        }
        let gone: Vec<(PathBuf, Forgotten)> = dirs
            .into_iter()
            .filter(|d| !d.exists())
            .map(|d| (d, Forgotten::Created))
            .collect();
        if let Err(e) = self.journal.forget(&gone) {
            warn!("rollback: {e}");
        }
    }

    /// Removes an empty group from every hierarchy (one rmdir each, no waiting) and drops its
    /// records. A group with tasks is left alone; one whose tasks are still exiting is `Busy`.
    pub fn remove_group(&mut self, group: &GroupPath) -> Result<Outcome, ActError> {
        self.remove_group_inner(group, 0)
    }

    /// [`Actuator::remove_group`], waiting up to `tries` × 20 ms for exiting tasks (commands that may
    /// wait; never the agent's tick).
    pub fn remove_group_waiting(
        &mut self,
        group: &GroupPath,
        tries: u32,
    ) -> Result<Outcome, ActError> {
        self.remove_group_inner(group, tries)
    }

    fn remove_group_inner(&mut self, group: &GroupPath, tries: u32) -> Result<Outcome, ActError> {
        if group.is_root() {
            return Ok(Outcome::Unchanged);
        }
        if self.layout.has_procs(&Target::Tidal(group.clone())) {
            return Ok(Outcome::Unchanged);
        }
        if self.dry_run {
            info!("dry-run: would remove group {group}");
            return Ok(Outcome::DryRun);
        }
        let mut removed = Vec::new();
        let mut busy = false;
        for d in self.layout.group_dirs(group) {
            match kernel::remove_dir_waiting(&d, tries) {
                Ok(()) => removed.push(d),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed.push(d),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => busy = true,
                Err(e) => return Err(rmdir_err(&d)(e)),
            }
        }
        let mut forget: Vec<(PathBuf, Forgotten)> = Vec::new();
        let (live, _) = self.journal.live()?;
        for (p, _, _) in &live.originals {
            if p.parent().is_some_and(|d| removed.iter().any(|r| r == d)) {
                forget.push((p.clone(), Forgotten::Original));
            }
        }
        forget.extend(removed.iter().map(|d| (d.clone(), Forgotten::Created)));
        self.journal.forget(&forget)?;
        Ok(if busy {
            Outcome::Busy
        } else {
            Outcome::Written
        })
    }

    /// Kills every task at or below `group` and removes the group and every group below it, leaves
    /// first, waiting for exiting tasks: for sandboxes tidal owns whole (the benchmark's). `group` may
    /// be the root itself, which is removed too unless systemd owns it (a scope goes away by itself
    /// once empty). Returns the groups it could not remove.
    pub fn purge(&mut self, group: &GroupPath) -> Result<Vec<PathBuf>, ActError> {
        if self.dry_run {
            info!("dry-run: would kill and remove {group} and everything below it");
            return Ok(Vec::new());
        }
        let mut groups = vec![group.clone()];
        let mut i = 0;
        while i < groups.len() {
            let g = groups[i].clone();
            if let Ok(children) = self.layout.children(&g) {
                groups.extend(children.iter().filter_map(|c| g.join(c).ok()));
            }
            i += 1;
        }
        // Kill from the top (cgroup.kill and the freezer act on whole subtrees), then remove leaves
        // first.
        let mut left = Vec::new();
        match self.kill(group) {
            Ok(_) => {}
            Err(ActError::Survivors { pids, .. }) => {
                warn!(
                    "purge {group}: {} task(s) outlived SIGKILL so far",
                    pids.len()
                )
            }
            Err(e) => return Err(e),
        }
        groups.sort_by_key(|g| std::cmp::Reverse(g.depth()));
        let mut forget = Vec::new();
        for g in &groups {
            if g.is_root() && self.layout.scope.is_some() {
                // The scope emptied with the kill above, while its sub-groups were still here:
                // what systemd could not remove then is removed once it had its chance.
                for d in self.layout.group_dirs(g) {
                    if let Err(e) = kernel::reap_scope_dir(&d, SCOPE_GRACE) {
                        warn!(
                            "purge: cannot remove the scope's cgroup {}: {e}",
                            d.display()
                        );
                        left.push(d);
                    }
                }
                continue;
            }
            for d in self.layout.group_dirs(g) {
                match kernel::remove_dir_waiting(&d, 50) {
                    Ok(()) => forget.push((d, Forgotten::Created)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        forget.push((d, Forgotten::Created))
                    }
                    Err(e) => {
                        warn!("purge: cannot remove {}: {e}", d.display());
                        left.push(d);
                    }
                }
            }
        }
        let (live, _) = self.journal.live()?;
        for (p, _, _) in &live.originals {
            if p.parent()
                .is_some_and(|d| forget.iter().any(|(r, _)| r == d))
            {
                forget.push((p.clone(), Forgotten::Original));
            }
        }
        self.journal.forget(&forget)?;
        Ok(left)
    }

    /// Forgets the originals recorded in groups of other managers that are gone from every
    /// hierarchy (a pod deleted: the kubelet removed its groups), so a long-running agent's journal
    /// and caches do not grow with every pod it ever saw. A group still present anywhere keeps
    /// its records and is returned, to be asked about again.
    pub fn forget_gone(
        &mut self,
        groups: Vec<tidal_model::ForeignGroup>,
    ) -> Result<Vec<tidal_model::ForeignGroup>, ActError> {
        let mut forget: Vec<(PathBuf, Forgotten)> = Vec::new();
        let mut present = Vec::new();
        for g in groups {
            let dirs = self.layout.target_dirs(&Target::Foreign(g.clone()));
            if dirs.iter().any(|d| d.exists()) {
                present.push(g);
                continue;
            }
            for d in &dirs {
                forget.extend(
                    self.journal
                        .originals_under(d)
                        .into_iter()
                        .map(|p| (p, Forgotten::Original)),
                );
                self.first_seen.retain(|p, _| !p.starts_with(d));
            }
        }
        if !forget.is_empty() {
            self.journal.forget(&forget)?;
        }
        Ok(present)
    }

    /// Moves a task back to the cgroups this process started in (after a failed move).
    /// Sets `oom_score_adj` on every task of `target` and of the groups below it (a pod's tasks
    /// are in its container groups) whose value differs; an online value (≤ 0) only ever lowers a
    /// task's, so it never undoes the kubelet's -997. Not journalled: the value dies with the
    /// task, and `restore` never touches `/proc`. Tasks that exit meanwhile are skipped; a group
    /// whose tasks this process cannot see (another PID namespace) has none.
    pub fn oom_score_adj(&mut self, target: &Target, value: i32) -> Result<Outcome, ActError> {
        self.guard(target)?;
        // The first hierarchy that has the group (read, not looked up first: this runs for every
        // workload each static pass).
        let mut found = None;
        for dir in self.layout.target_dirs(target) {
            match tidal_cgroupfs::layout::read_procs_tree(&dir) {
                Ok(p) => {
                    found = Some(p);
                    break;
                }
                Err(e) if e.is_vanished() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(pids) = found else {
            return Ok(Outcome::Vanished);
        };
        let want = value.to_string();
        let mut wrote = false;
        for pid in pids.into_iter().filter(|p| *p > 0) {
            let f = PathBuf::from(format!("/proc/{pid}/oom_score_adj"));
            match read_file(&f) {
                Ok(cur) if cur.trim() == want => continue,
                // An online value (≤ 0) protects: a task already more protected (the kubelet's
                // -997 for Guaranteed pods, a database that lowered its own) is never raised.
                Ok(cur) if value <= 0 && cur.trim().parse::<i32>().is_ok_and(|c| c <= value) => {
                    continue
                }
                Ok(_) => {}
                Err(_) => continue,
            }
            if self.dry_run {
                info!("dry-run: would write {want} to {}", f.display());
                continue;
            }
            match kernel::write_file(&f, &want) {
                Ok(()) => wrote = true,
                Err(e) if e.is_vanished() || e.errno() == Some(libc::ESRCH) => {}
                // Lowering it needs CAP_SYS_RESOURCE, and another user's task's file
                // CAP_DAC_OVERRIDE: without them, say so once and go on.
                Err(e) if matches!(e.errno(), Some(libc::EACCES) | Some(libc::EPERM)) => {
                    if !self.oom_refused {
                        self.oom_refused = true;
                        warn!("cannot set oom_score_adj {value} ({e}): lowering it needs CAP_SYS_RESOURCE, and a task of another user needs CAP_DAC_OVERRIDE; those tasks keep the kernel's value (logged once)");
                    }
                    return Ok(Outcome::Unsupported);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(match (self.dry_run, wrote) {
            (true, _) => Outcome::DryRun,
            (false, true) => Outcome::Written,
            (false, false) => Outcome::Unchanged,
        })
    }

    /// Enables blk-iocost on `devices` (`MAJ:MIN enable=1` in the v2 root's `io.cost.qos`), so IO
    /// weights act without BFQ. A node-wide change made only when the config asks for it; the
    /// original is journalled like any other and `restore` switches back what tidal switched on.
    /// `Unsupported` where the host has no `io.cost.qos` (cgroup v1 or hybrid without io on v2, or a
    /// kernel without blk-iocost).
    pub fn enable_iocost(&mut self, devices: &[DevNum]) -> Result<Outcome, ActError> {
        let Some(path) = self
            .layout
            .hierarchies
            .unified()
            .map(|h| h.mount.join(iolimit::IOCOST_QOS))
            .filter(|p| p.exists())
        else {
            return Ok(Outcome::Unsupported);
        };
        let on = iolimit::enabled(&read_file(&path)?);
        let mut outcome = Outcome::Unchanged;
        let mut refused = Vec::new();
        // Device by device: one the kernel refuses (a bio-based device such as dm-*, a partition)
        // must not keep the others off.
        for d in devices.iter().filter(|d| !on.contains(d)) {
            match self.write_journalled(&path, &format!("{d} enable=1"), true) {
                Ok(o) => outcome = o,
                Err(e) if e.is_rejected() || e.errno() == Some(libc::ENODEV) => {
                    refused.push(format!("{d} ({e})"));
                }
                Err(e) => return Err(e),
            }
        }
        if !refused.is_empty() && self.iocost_refused != refused {
            warn!(
                "blk-iocost refused on {} (logged once per set of devices)",
                refused.join(", ")
            );
            self.iocost_refused = refused.clone();
        }
        if outcome == Outcome::Unchanged && !refused.is_empty() && refused.len() == devices.len() {
            return Ok(Outcome::Unsupported);
        }
        Ok(outcome)
    }

    /// Records a workload's declared memory request on its group (`trusted.tidal.memory_request`),
    /// where the agent reads it to size the workload's protection and its ancestors'. It goes with
    /// the group.
    pub fn set_memory_request(
        &mut self,
        group: &GroupPath,
        bytes: u64,
    ) -> Result<Outcome, ActError> {
        if self.dry_run {
            info!("dry-run: would record a memory request of {bytes} bytes on {group}");
            return Ok(Outcome::DryRun);
        }
        let t = Target::Tidal(group.clone());
        let mut done = false;
        let mut last = None;
        for dir in self.layout.target_dirs(&t) {
            match kernel::set_xattr(
                &dir,
                tidal_cgroupfs::stats::MEMORY_REQUEST_XATTR,
                bytes.to_string().as_bytes(),
            ) {
                Ok(()) => done = true,
                Err(e) => last = Some((dir, e)),
            }
        }
        match (done, last) {
            (true, _) | (false, None) => Ok(Outcome::Written),
            (false, Some((dir, source))) => Err(CgroupError::Write {
                path: dir,
                value: format!(
                    "xattr {}={bytes}",
                    tidal_cgroupfs::stats::MEMORY_REQUEST_XATTR
                ),
                source,
            }
            .into()),
        }
    }

    /// Sets this process's own `oom_score_adj` (before `tidal run` execs its command, so the
    /// command and its children inherit it). As for other tasks, an online value (≤ 0) only ever
    /// lowers it: a command started by a more protected parent keeps the parent's value.
    /// Lowering needs CAP_SYS_RESOURCE; without it the value stays and `Unsupported` says so.
    pub fn oom_score_adj_self(&mut self, value: i32) -> Result<Outcome, ActError> {
        let f = Path::new("/proc/self/oom_score_adj");
        if value <= 0
            && read_file(f)
                .ok()
                .and_then(|c| c.trim().parse::<i32>().ok())
                .is_some_and(|c| c <= value)
        {
            return Ok(Outcome::Unchanged);
        }
        if self.dry_run {
            return Ok(Outcome::DryRun);
        }
        match kernel::write_file(f, &value.to_string()) {
            Ok(()) => Ok(Outcome::Written),
            Err(e) if matches!(e.errno(), Some(libc::EACCES) | Some(libc::EPERM)) => {
                Ok(Outcome::Unsupported)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Moves a task back to the cgroups this process started in, in every hierarchy tidal uses;
    /// tries each and returns the first failure.
    pub fn move_pid_home(&mut self, pid: u32) -> Result<(), ActError> {
        let mut first = None;
        for dir in self.layout.self_dirs() {
            let p = dir.join(PROCS);
            if self.dry_run {
                info!("dry-run: would move pid {pid} to {}", p.display());
                continue;
            }
            if let Err(e) = kernel::write_file(&p, &pid.to_string()) {
                warn!("cannot move pid {pid} back to {}: {e}", p.display());
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Moves a task into the group in every hierarchy tidal uses. The hierarchy carrying `cpu`
    /// comes last: once there, an offline task runs at idle priority and may wait seconds on a
    /// busy machine for the remaining moves (each takes an RCU grace period on v1).
    pub fn move_pid(&mut self, group: &GroupPath, pid: u32) -> Result<(), ActError> {
        let cpu_root = self.layout.owner("cpu").map(|r| r.root_dir.clone());
        let mut dirs: Vec<(bool, PathBuf)> = self
            .layout
            .roots
            .iter()
            .map(|r| (Some(&r.root_dir) == cpu_root.as_ref(), r.dir(group)))
            .collect();
        // Stable: keeps the layout's order otherwise.
        dirs.sort_by_key(|(is_cpu, _)| *is_cpu);
        for (_, dir) in dirs {
            let p = dir.join(PROCS);
            if self.dry_run {
                info!("dry-run: would move pid {pid} to {}", p.display());
                continue;
            }
            kernel::write_file(&p, &pid.to_string())?;
        }
        Ok(())
    }

    /// Every task in the group and below it, in any hierarchy tidal uses.
    fn tasks(&self, group: &GroupPath) -> Result<Vec<i32>, ActError> {
        fn walk(dir: &Path, out: &mut Vec<i32>) -> Result<(), CgroupError> {
            match read_procs(&dir.join(PROCS)) {
                Ok(p) => out.extend(p),
                Err(e) if e.is_vanished() => return Ok(()),
                Err(e) => return Err(e),
            }
            if let Ok(rd) = std::fs::read_dir(dir) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walk(&e.path(), out)?;
                    }
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        for d in self.layout.group_dirs(group) {
            walk(&d, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Kills every task of the group and below: `cgroup.kill` where the kernel has it, else freeze;
    /// SIGKILL to every task the group lists in any hierarchy; thaw (so frozen tasks can die; on
    /// v1 frozen levels above it thaw for the while, and their other work runs until the victim is
    /// gone, ≤ 200 ms); then checks the group emptied (≤ 200 ms), signalling any task that joined
    /// late, and reports the tasks that survived. A group with no task is left alone.
    pub fn kill(&mut self, group: &GroupPath) -> Result<Outcome, ActError> {
        let dir = self
            .layout
            .primary()
            .map(|r| r.dir(group))
            .unwrap_or_default();
        let pids = self.tasks(group)?;
        if pids.is_empty() {
            return Ok(if dir.exists() {
                Outcome::Unchanged
            } else {
                Outcome::Vanished
            });
        }
        if self.dry_run {
            info!("dry-run: would kill the {} task(s) of {group}", pids.len());
            return Ok(Outcome::DryRun);
        }
        let target = Target::Tidal(group.clone());
        let kill_file = self.layout.unified().map(|u| u.dir(group).join(KILL));
        let via_freeze = match kill_file.filter(|p| p.exists()) {
            Some(p) => {
                kernel::write_file(&p, "1")?;
                false
            }
            None => {
                self.set(&target, Knob::Freeze, &KnobValue::Bool(true))?;
                true
            }
        };
        // `cgroup.kill` reaches every task the unified group holds, forks included. On a hybrid
        // host a task can sit in the group in a v1 hierarchy alone (one forked while its parent
        // was being moved across them): there, as on the freezer path, tasks are signalled by pid
        // too. A pid that fails there is left to the wait below, which names the survivors.
        let sweep = via_freeze || self.layout.roots.len() > 1;
        let mut sent = HashSet::new();
        let signalled = if sweep {
            match self.signal_until_quiet(group, &mut sent) {
                Err(e) if !via_freeze => {
                    warn!("killing {group} after cgroup.kill: {e}");
                    Ok(())
                }
                r => r,
            }
        } else {
            Ok(())
        };
        // On a v1 freezer a frozen task dies of SIGKILL only once thawed, whoever froze it: the
        // victim itself (`cgroup.kill` on the v2 side does not thaw it) or a level above it that
        // the ladder froze. Those levels thaw while the victim dies and freeze again after. The
        // victim is thawed whatever happens: left frozen, it would keep its memory.
        let mut thawing = Ok(());
        let mut thawed_above = Vec::new();
        for a in self.frozen_ancestors_v1(group) {
            match self.set(
                &Target::Tidal(a.clone()),
                Knob::Freeze,
                &KnobValue::Bool(false),
            ) {
                Ok(_) => thawed_above.push(a),
                Err(e) => thawing = thawing.and(Err(e)),
            }
        }
        if via_freeze || self.self_frozen_v1(group) {
            if let Err(e) = self.set(&target, Knob::Freeze, &KnobValue::Bool(false)) {
                thawing = thawing.and(Err(e));
            }
        }
        let died = signalled
            .and(thawing)
            .and_then(|()| self.wait_empty(group, &dir, sweep.then_some(&mut sent)));
        let mut refrozen = Ok(());
        for a in thawed_above.iter().rev() {
            if let Err(e) = self.set(
                &Target::Tidal(a.clone()),
                Knob::Freeze,
                &KnobValue::Bool(true),
            ) {
                refrozen = refrozen.and(Err(e));
            }
        }
        died.and_then(|o| refrozen.map(|()| o))
    }

    /// SIGKILL to every task of the group in any hierarchy, read again until no new task appears
    /// (on the freezer path, forks between the read and the freeze land in the group).
    fn signal_until_quiet(
        &mut self,
        group: &GroupPath,
        sent: &mut HashSet<i32>,
    ) -> Result<(), ActError> {
        for _ in 0..8 {
            let now = self.tasks(group)?;
            if kill_unseen(&now, sent, || self.tasks(group))? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Whether `group` is frozen by its own state on a v1 freezer (never on v2, where a fatal
    /// signal ends a frozen task).
    fn self_frozen_v1(&self, group: &GroupPath) -> bool {
        self.layout
            .knob_target(Knob::Freeze)
            .filter(|(root, _)| root.version() == Version::V1)
            .is_some_and(|(root, _)| {
                read_file(
                    &root
                        .dir(group)
                        .join(tidal_cgroupfs::v1::freezer::SELF_FREEZING),
                )
                .is_ok_and(|v| v.trim() == "1")
            })
    }

    /// The groups between tidal's root and `group` that [`Actuator::self_frozen_v1`] holds,
    /// outermost first.
    fn frozen_ancestors_v1(&self, group: &GroupPath) -> Vec<GroupPath> {
        let mut out = Vec::new();
        let mut g = group.parent();
        while let Some(a) = g.filter(|a| !a.is_root()) {
            if self.self_frozen_v1(&a) {
                out.push(a.clone());
            }
            g = a.parent();
        }
        out.reverse();
        out
    }

    /// Waits (≤ `KILL_WAIT`) for a killed group to empty; with `sent`, signalling any task not in
    /// it (a fork that the v1 freezer's window let through joins the group after the last read);
    /// the tasks that survived are an error.
    fn wait_empty(
        &mut self,
        group: &GroupPath,
        dir: &Path,
        mut sent: Option<&mut HashSet<i32>>,
    ) -> Result<Outcome, ActError> {
        self.stats.writes += 1;
        let deadline = Instant::now() + KILL_WAIT;
        loop {
            let left = self.tasks(group)?;
            if left.is_empty() {
                return Ok(Outcome::Written);
            }
            if let Some(sent) = sent.as_deref_mut() {
                if let Err(e) = kill_unseen(&left, sent, || self.tasks(group)) {
                    warn!("killing {group}: {e}");
                }
            }
            if Instant::now() >= deadline {
                self.stats.kill_survivors += left.len() as u64;
                return Err(ActError::Survivors {
                    group: dir.to_path_buf(),
                    pids: left,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// SIGKILL to each of `pids` not in `sent` (which gains them); how many there were. Each is pinned
/// (a pidfd) and the group's tasks read again before the signal: a pid that exited and was reused
/// between the first read and the signal is not in the group, and is not signalled. Kernels
/// without pidfds (before 5.3) get a plain kill.
fn kill_unseen(
    pids: &[i32],
    sent: &mut HashSet<i32>,
    tasks_now: impl FnOnce() -> Result<Vec<i32>, ActError>,
) -> Result<usize, ActError> {
    let new: Vec<i32> = pids.iter().copied().filter(|p| sent.insert(*p)).collect();
    let mut pinned = Vec::new();
    let mut plain = Vec::new();
    for &pid in &new {
        match kernel::pidfd_open(pid) {
            Ok(Some(fd)) => pinned.push((pid, fd)),
            Ok(None) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => plain.push(pid),
            Err(source) => return Err(ActError::Signal { pid, source }),
        }
    }
    if !pinned.is_empty() {
        let still: HashSet<i32> = tasks_now()?.into_iter().collect();
        for (pid, fd) in pinned.iter().filter(|(pid, _)| still.contains(pid)) {
            kernel::pidfd_signal(fd, libc::SIGKILL)
                .map_err(|source| ActError::Signal { pid: *pid, source })?;
        }
    }
    for pid in plain {
        kernel::signal(pid, libc::SIGKILL).map_err(|source| ActError::Signal { pid, source })?;
    }
    Ok(new.len())
}

/// IO limits as wanted, plus a lifting entry for each device the files (`current`) limit and the
/// wanted value does not name (a device dropped from the config, or gone from the node), so the
/// files end up holding exactly what is wanted.
fn with_lifted(version: Version, current: &[String], wanted: &[IoLimit]) -> Vec<IoLimit> {
    let mut out = wanted.to_vec();
    if let Ok(KnobValue::IoMax(cur)) = controller::decode(Knob::IoMax, version, current) {
        for l in cur {
            if !wanted.iter().any(|w| w.dev == l.dev) {
                out.push(IoLimit::none(l.dev));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_no_longer_in_the_group_when_pinned_is_not_signalled() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // The group's tasks read again no longer list it (it exited, its pid reused): spared.
        let mut sent = HashSet::new();
        assert_eq!(kill_unseen(&[pid], &mut sent, || Ok(vec![])).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            child.try_wait().unwrap().is_none(),
            "signalled though not in the group"
        );
        // Still listed: killed. A pid already sent to is not signalled twice.
        let mut sent = HashSet::new();
        assert_eq!(kill_unseen(&[pid], &mut sent, || Ok(vec![pid])).unwrap(), 1);
        assert_eq!(kill_unseen(&[pid], &mut sent, || Ok(vec![pid])).unwrap(), 0);
        let st = child.wait().unwrap();
        assert_eq!(st.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn io_limits_lift_the_devices_no_longer_wanted() {
        let dev = |s: &str| s.parse::<DevNum>().unwrap();
        let want = [IoLimit {
            rbps: Some(1 << 20),
            ..IoLimit::none(dev("254:0"))
        }];
        let current = [
            "8:0 rbps=5 wbps=max riops=max wiops=max\n254:0 rbps=7 wbps=max riops=max wiops=max\n"
                .to_string(),
        ];
        assert_eq!(
            with_lifted(Version::V2, &current, &want),
            vec![want[0], IoLimit::none(dev("8:0"))]
        );
        // Nothing else limited (or unreadable text): the wanted value as it is.
        assert_eq!(
            with_lifted(Version::V2, &[String::new()], &want),
            want.to_vec()
        );
        assert_eq!(
            with_lifted(Version::V2, &["junk".to_string()], &want),
            want.to_vec()
        );
    }
}
