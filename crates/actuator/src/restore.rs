//! Undo: write back every journalled original and remove the empty groups tidal created. Idempotent:
//! what was restored or removed leaves the journal; what could not be stays for the next run.

use crate::error::ActError;
use crate::journal::{Entry, Journal};
use std::path::{Path, PathBuf};
use tidal_cgroupfs::layout::{read_file, read_procs, remove_group_dir, write_file};
use tidal_cgroupfs::v2::core::{subtree_delta, SUBTREE_CONTROL};

#[derive(Debug, Default)]
pub struct RestoreReport {
    /// `(file, value)` written back.
    pub restored: Vec<(PathBuf, String)>,
    /// Files already holding their original.
    pub unchanged: Vec<PathBuf>,
    /// Files whose group is gone.
    pub vanished: Vec<PathBuf>,
    pub removed_groups: Vec<PathBuf>,
    /// Groups kept because tasks still live in them.
    pub busy_groups: Vec<(PathBuf, usize)>,
    /// Entries that failed, with the reason.
    pub failed: Vec<(PathBuf, String)>,
    /// Journal lines that could not be read: line number, text, parse error.
    pub bad_entries: Vec<(usize, String, String)>,
}

impl RestoreReport {
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.bad_entries.is_empty() && self.busy_groups.is_empty()
    }
}

fn group_of(file: &Path) -> Option<&Path> {
    file.parent()
}

/// Restores everything the journal in `state_dir` holds (or reports what it would do, with `dry_run`).
pub fn restore(state_dir: &Path, dry_run: bool) -> Result<RestoreReport, ActError> {
    let mut journal = Journal::open(state_dir)?;
    let (entries, bad) = journal.load()?;
    let mut rep = RestoreReport {
        bad_entries: bad
            .into_iter()
            .map(|b| (b.line_no, b.text, b.error))
            .collect(),
        ..Default::default()
    };
    let mut done: Vec<Entry> = Vec::new();

    // Created groups: deepest first, so children go before parents.
    let mut created: Vec<&PathBuf> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Created { path } => Some(path),
            _ => None,
        })
        .collect();
    created.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut removed: Vec<PathBuf> = Vec::new();
    for dir in created {
        if !dir.exists() {
            done.push(Entry::Created { path: dir.clone() });
            continue;
        }
        let tasks = read_procs(&dir.join("cgroup.procs"))
            .map(|p| p.len())
            .unwrap_or(0);
        if tasks > 0 {
            // Its workload still runs: make sure it is not left frozen.
            if !dry_run {
                let _ = write_file(&dir.join("cgroup.freeze"), "0");
                let _ = write_file(&dir.join("freezer.state"), "THAWED");
            }
            rep.busy_groups.push((dir.clone(), tasks));
            continue;
        }
        if dry_run {
            rep.removed_groups.push(dir.clone());
            removed.push(dir.clone());
            continue;
        }
        match remove_group_dir(dir) {
            Ok(()) => {
                rep.removed_groups.push(dir.clone());
                removed.push(dir.clone());
                done.push(Entry::Created { path: dir.clone() });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                done.push(Entry::Created { path: dir.clone() });
            }
            Err(e) => rep
                .failed
                .push((dir.clone(), format!("cannot remove group: {e}"))),
        }
    }

    // Originals, in the order they were recorded.
    for e in &entries {
        let Entry::Original { path, value } = e else {
            continue;
        };
        let in_removed = group_of(path).is_some_and(|g| removed.iter().any(|r| r == g));
        if in_removed || !path.exists() {
            rep.vanished.push(path.clone());
            done.push(e.clone());
            continue;
        }
        let current = match read_file(path) {
            Ok(c) => c,
            Err(err) if err.is_vanished() => {
                rep.vanished.push(path.clone());
                done.push(e.clone());
                continue;
            }
            Err(err) => {
                rep.failed.push((path.clone(), err.to_string()));
                continue;
            }
        };
        let is_subtree = path.file_name().is_some_and(|n| n == SUBTREE_CONTROL);
        let write = if is_subtree {
            subtree_delta(&current, value)
        } else if current.trim() == value.trim() {
            None
        } else {
            Some(value.clone())
        };
        let Some(write) = write else {
            rep.unchanged.push(path.clone());
            done.push(e.clone());
            continue;
        };
        if dry_run {
            rep.restored.push((path.clone(), value.clone()));
            continue;
        }
        match write_file(path, &write) {
            Ok(()) => {
                rep.restored.push((path.clone(), value.clone()));
                done.push(e.clone());
            }
            Err(err) if err.is_vanished() => {
                rep.vanished.push(path.clone());
                done.push(e.clone());
            }
            Err(err) => rep.failed.push((path.clone(), err.to_string())),
        }
    }

    if !dry_run {
        journal.forget(|e| done.contains(e))?;
        journal.set_aside_bad()?;
    }
    Ok(rep)
}
