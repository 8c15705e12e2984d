//! Undo: write back the journalled originals and remove the empty groups tidal created, for one tidal
//! root. Idempotent: what was restored or removed is forgotten; what could not be stays for the next
//! run. Whatever the journal says, restore only
//! - writes knob files (the registry's, plus `cgroup.subtree_control`) in the tidal root and below,
//!   and `cgroup.subtree_control` of the root's ancestors (tidal enabled controllers there to make the
//!   root usable);
//! - writes knob files in groups another manager owns, for records typed foreign: validated group
//!   paths under a cgroup mount, never the mount itself except blk-iocost's switch (`io.cost.qos`);
//! - removes directories at or below the tidal root.
//!
//! Records outside these are reported and kept. Groups tidal created that still have tasks are kept,
//! thawed, and given their parent's full cpuset and no CPU cap, so no workload stays frozen or pinned.

use crate::error::ActError;
use crate::journal::{Forgotten, Journal};
use crate::kernel;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tidal_cgroupfs::controller;
use tidal_cgroupfs::layout::{list_children, read_file, read_procs, PROCS};
use tidal_cgroupfs::v2::core::{subtree_delta, FREEZE, SUBTREE_CONTROL};
use tidal_cgroupfs::{cpuset, iolimit, v1, v2, Layout, Version};
use tidal_model::ForeignGroup;

#[derive(Debug, Default)]
pub struct RestoreReport {
    /// `(file, value)` written back.
    pub restored: Vec<(PathBuf, String)>,
    /// Files already holding their original.
    pub unchanged: Vec<PathBuf>,
    /// Files whose group is gone.
    pub vanished: Vec<PathBuf>,
    pub removed_groups: Vec<PathBuf>,
    /// Groups kept because tasks (or child groups that have tasks) still live in them.
    pub busy_groups: Vec<(PathBuf, usize)>,
    /// Records restore will not act on (outside this root, or not a knob file), with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Values that cannot go back yet (controllers still used by kept groups): kept for the next
    /// restore, once those workloads end.
    pub deferred: Vec<(PathBuf, String)>,
    /// Entries that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// Journal lines that could not be read: line number, text, parse error.
    pub bad_entries: Vec<(usize, String, String)>,
}

impl RestoreReport {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
            && self.bad_entries.is_empty()
            && self.busy_groups.is_empty()
            && self.skipped.is_empty()
    }
}

/// What kind of file a record names, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// A knob file at or below the tidal root.
    Tidal(Version),
    /// `cgroup.subtree_control` of an ancestor of the root.
    Ancestor,
    /// A knob file in a group another manager owns.
    Foreign,
}

fn classify(layout: &Layout, path: &Path, foreign: bool) -> Result<Place, String> {
    let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(|f| f.to_str())) else {
        return Err("not a file path".into());
    };
    if foreign {
        for h in &layout.hierarchies.list {
            let Ok(rel) = dir.strip_prefix(&h.mount) else {
                continue;
            };
            let rel = rel.to_str().unwrap_or("");
            if rel.is_empty() && h.version == Version::V2 && file == iolimit::IOCOST_QOS {
                // blk-iocost's switch, which only the v2 root has (`io.iocost` in the config).
                return Ok(Place::Foreign);
            }
            if ForeignGroup::new(rel).is_err() {
                return Err(format!(
                    "'{rel}' is not a valid group under {}",
                    h.mount.display()
                ));
            }
            return if controller::is_knob_file(file, h.version) {
                Ok(Place::Foreign)
            } else {
                Err(format!("{file} is not a knob tidal sets"))
            };
        }
        return Err("not under any cgroup mount".into());
    }
    for r in &layout.roots {
        if r.holds(dir) {
            let v = r.version();
            return if controller::is_knob_file(file, v)
                || (v == Version::V2 && file == SUBTREE_CONTROL)
            {
                Ok(Place::Tidal(v))
            } else {
                Err(format!("{file} is not a knob file tidal writes"))
            };
        }
        if r.version() == Version::V2
            && file == SUBTREE_CONTROL
            && r.root_dir.starts_with(dir)
            && dir.starts_with(&r.hierarchy.mount)
        {
            return Ok(Place::Ancestor);
        }
    }
    Err(format!(
        "not under the tidal root ({}): restore it with the --root it was made with",
        layout
            .primary()
            .map(|r| r.root_dir.display().to_string())
            .unwrap_or_default()
    ))
}

/// Restores everything the journal in `state_dir` holds for `layout`'s root (or reports what it
/// would do, with `dry_run`). The caller holds the root's lock (no agent is running).
pub fn restore(
    layout: &Layout,
    state_dir: &Path,
    dry_run: bool,
) -> Result<RestoreReport, ActError> {
    let mut journal = Journal::open(state_dir)?;
    let (live, bad) = journal.live()?;
    let mut rep = RestoreReport {
        bad_entries: bad
            .into_iter()
            .map(|b| (b.line_no, b.text, b.error))
            .collect(),
        ..Default::default()
    };
    let mut done: Vec<(PathBuf, Forgotten)> = Vec::new();

    // The groups restore may remove: created records at or below the root.
    let mut created: Vec<PathBuf> = Vec::new();
    for p in &live.created {
        if layout.roots.iter().any(|r| r.holds(p)) {
            created.push(p.clone());
        } else {
            rep.skipped.push((
                p.clone(),
                "a created group outside the tidal root: not removed".into(),
            ));
        }
    }
    let created_set: HashSet<&Path> = created.iter().map(PathBuf::as_path).collect();
    let in_created = |dir: &Path| created_set.contains(dir);

    // 1. Originals but those of step 3; v1 cpusets parents first (they grow back).
    let mut originals: Vec<(PathBuf, String, Place)> = Vec::new();
    for (path, value, foreign) in &live.originals {
        match classify(layout, path, *foreign) {
            Ok(place) => {
                let dir = path.parent().unwrap_or(path);
                if place != Place::Foreign && place != Place::Ancestor && in_created(dir) {
                    // tidal's own group: removed below, or given its parent's set if busy.
                    done.push((path.clone(), Forgotten::Original));
                    continue;
                }
                originals.push((path.clone(), value.clone(), place));
            }
            Err(why) => rep.skipped.push((path.clone(), why)),
        }
    }
    // What a group's children limit: controllers they use, the real-time time they hold.
    let is_late = |p: &Path| is_rt(p) || p.file_name().is_some_and(|n| n == SUBTREE_CONTROL);
    // Shallow first, but real-time time last and children first (a parent cannot hold less than
    // its children).
    originals.sort_by_key(|(p, _, _)| {
        let depth = p.components().count() as i64;
        (is_late(p), is_rt(p), if is_rt(p) { -depth } else { depth })
    });
    let (later, first): (Vec<_>, Vec<_>) = originals.into_iter().partition(|(p, _, _)| is_late(p));
    restore_values(&first, dry_run, &mut rep, &mut done);

    // 2. Created groups: remove the empty ones deepest first; keep busy ones, thawed and unpinned.
    let mut order = created.clone();
    order.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut kept: Vec<PathBuf> = Vec::new();
    for dir in &order {
        if !dir.exists() {
            done.push((dir.clone(), Forgotten::Created));
            continue;
        }
        let tasks = read_procs(&dir.join(PROCS)).map(|p| p.len()).unwrap_or(0);
        let children = list_children(dir).map(|c| c.len()).unwrap_or(0);
        if tasks > 0 || children > 0 {
            kept.push(dir.clone());
            rep.busy_groups.push((dir.clone(), tasks));
            continue;
        }
        if dry_run {
            rep.removed_groups.push(dir.clone());
            continue;
        }
        match kernel::remove_dir_waiting(dir, 25) {
            Ok(()) => {
                rep.removed_groups.push(dir.clone());
                done.push((dir.clone(), Forgotten::Created));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                done.push((dir.clone(), Forgotten::Created));
            }
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                kept.push(dir.clone());
                rep.busy_groups.push((dir.clone(), tasks));
            }
            Err(e) => rep
                .failed
                .push((dir.clone(), format!("cannot remove group: {e}"))),
        }
    }
    // Busy groups whose parent is busy too have a child with tasks: report the ones with tasks.
    rep.busy_groups
        .retain(|(d, n)| *n > 0 || !kept.iter().any(|k| k.starts_with(d) && k != d));
    kept.sort_by_key(|p| p.components().count());
    if !dry_run {
        for dir in &kept {
            release_kept(layout, dir, &mut rep);
        }
    }

    // 3. subtree_control and v1 cpu.rt_runtime_us last: controllers, and real-time time, can be
    // taken back only once the groups that use them are gone.
    restore_values(&later, dry_run, &mut rep, &mut done);

    if !dry_run {
        journal.forget(&done)?;
        journal.compact(true)?;
    }
    Ok(rep)
}

/// A v1 `cpu.rt_runtime_us` file: a group's real-time time.
fn is_rt(p: &Path) -> bool {
    p.file_name().is_some_and(|n| n == v1::cpu::RT_RUNTIME)
}

/// Writes originals back, in order; v1 cpuset writes refused while a neighbour is in the way
/// (EBUSY, EINVAL) get two more passes once the others are done.
fn restore_values(
    items: &[(PathBuf, String, Place)],
    dry_run: bool,
    rep: &mut RestoreReport,
    done: &mut Vec<(PathBuf, Forgotten)>,
) {
    let mut pending: Vec<&(PathBuf, String, Place)> = items.iter().collect();
    // A removed group's real-time time returns to its parent only once the kernel has let the
    // group go (about 100 ms here): those writes are tried for up to half a second.
    let passes = if items.iter().any(|(p, _, _)| is_rt(p)) {
        10
    } else {
        3
    };
    for pass in 0..passes {
        let mut retry = Vec::new();
        for item in pending {
            let (path, value, _) = item;
            let current = match read_file(path) {
                Ok(c) => c,
                Err(e) if e.is_vanished() => {
                    rep.vanished.push(path.clone());
                    done.push((path.clone(), Forgotten::Original));
                    continue;
                }
                Err(e) => {
                    rep.failed.push((path.clone(), e.to_string()));
                    continue;
                }
            };
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let write = if name == SUBTREE_CONTROL {
                subtree_delta(&current, value)
            } else if iolimit::line_per_write(name) {
                iolimit::restore_text(name, &current, value)
            } else if current.trim() == value.trim() {
                None
            } else {
                Some(value.clone())
            };
            let Some(write) = write else {
                rep.unchanged.push(path.clone());
                done.push((path.clone(), Forgotten::Original));
                continue;
            };
            if dry_run {
                rep.restored.push((path.clone(), value.clone()));
                continue;
            }
            match kernel::write_file(path, &write) {
                Ok(()) => {
                    rep.restored.push((path.clone(), value.clone()));
                    done.push((path.clone(), Forgotten::Original));
                }
                Err(e) if e.is_vanished() => {
                    rep.vanished.push(path.clone());
                    done.push((path.clone(), Forgotten::Original));
                }
                Err(e) if pass + 1 < passes && (e.is_busy() || e.is_rejected()) => {
                    retry.push(item)
                }
                Err(e)
                    if e.is_busy() && path.file_name().is_some_and(|n| n == SUBTREE_CONTROL) =>
                {
                    rep.deferred.push((
                        path.clone(),
                        "controllers still used by groups that are kept: restored once their workloads end".into(),
                    ))
                }
                Err(e) => rep.failed.push((path.clone(), e.to_string())),
            }
        }
        if retry.is_empty() {
            break;
        }
        if retry.iter().any(|(p, _, _)| is_rt(p)) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        pending = retry;
    }
}

/// A group tidal created that still has tasks: thaw it, give it its parent's full cpuset and lift
/// any CPU cap (and, on the offline parent, the memory ceiling), so its workload runs on as if
/// tidal had never confined it. Failures are reported.
fn release_kept(layout: &Layout, dir: &Path, rep: &mut RestoreReport) {
    let Some(r) = layout.roots.iter().find(|r| r.holds(dir)) else {
        return;
    };
    let Some(parent) = dir.parent() else {
        return;
    };
    let mut writes: Vec<(PathBuf, String)> = Vec::new();
    let exists = |f: &str| dir.join(f).exists();
    // The offline memory ceiling is the agent's (on the offline parent, not journalled as tidal
    // made the group): lifted as the agent lifts it when it stops. A workload's own `--memory`
    // limit is its command's, and stays.
    let offline_parent = r.target_dir(&tidal_model::Target::Tidal(
        tidal_model::QosLevel::offline_parent(),
    )) == dir;
    if offline_parent {
        match r.version() {
            Version::V2 => {
                for f in [v2::memory::HIGH, v2::memory::MAX] {
                    if exists(f) {
                        writes.push((dir.join(f), "max".into()));
                    }
                }
            }
            Version::V1 => {
                if exists(v1::memory::LIMIT) {
                    writes.push((dir.join(v1::memory::LIMIT), "-1".into()));
                }
            }
        }
    }
    match r.version() {
        Version::V2 => {
            if exists(FREEZE) {
                writes.push((dir.join(FREEZE), "0".into()));
            }
            if exists(cpuset::CPUS) {
                // The parent's CPUs (an empty list, "inherit", is refused for a group with tasks).
                match read_file(&parent.join(cpuset::V2_EFFECTIVE_CPUS)) {
                    Ok(p) => writes.push((dir.join(cpuset::CPUS), p.trim().to_string())),
                    Err(e) => rep.failed.push((dir.join(cpuset::CPUS), e.to_string())),
                }
            }
            if exists(v2::cpu::MAX) {
                writes.push((dir.join(v2::cpu::MAX), "max".into()));
            }
        }
        Version::V1 => {
            if exists(v1::freezer::STATE) {
                writes.push((dir.join(v1::freezer::STATE), "THAWED".into()));
            }
            if exists(cpuset::CPUS) {
                match read_file(&parent.join(cpuset::CPUS)) {
                    Ok(p) => writes.push((dir.join(cpuset::CPUS), p.trim().to_string())),
                    Err(e) => rep.failed.push((dir.join(cpuset::CPUS), e.to_string())),
                }
            }
            if exists(v1::cpu::QUOTA) {
                writes.push((dir.join(v1::cpu::QUOTA), "-1".into()));
            }
        }
    }
    for (p, v) in writes {
        let same = read_file(&p).is_ok_and(|c| c.trim() == v.trim());
        if same {
            continue;
        }
        if let Err(e) = kernel::write_file(&p, &v) {
            if !e.is_vanished() {
                rep.failed.push((p, e.to_string()));
            }
        }
    }
}
