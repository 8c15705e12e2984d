//! The durable journal of original values and created groups, in the state dir as JSON Lines
//! (`journal.jsonl`). Every change rewrites the file through a temp file, fsync and rename, under an
//! exclusive lock, so concurrent `tidal run`s and the agent never lose each other's entries and a crash
//! leaves either the old or the new file. One entry per line, so one bad line spoils only itself.

use crate::error::ActError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const JOURNAL_FILE: &str = "journal.jsonl";
const LOCK_FILE: &str = "journal.lock";
/// Where unreadable journal lines are kept after a restore reported them.
pub const REJECTED_FILE: &str = "journal.rejected";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Entry {
    /// A file's content before tidal first wrote it.
    Original { path: PathBuf, value: String },
    /// A group directory tidal created.
    Created { path: PathBuf },
}

impl Entry {
    pub fn path(&self) -> &Path {
        match self {
            Entry::Original { path, .. } | Entry::Created { path } => path,
        }
    }
}

/// A line that could not be parsed: kept verbatim so restore can name it and nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line_no: usize,
    pub text: String,
    pub error: String,
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Paths whose original is already recorded (this process's cache of the file).
    originals: HashSet<PathBuf>,
    created: HashSet<PathBuf>,
}

fn jerr(path: &Path) -> impl FnOnce(std::io::Error) -> ActError + '_ {
    move |source| ActError::Journal {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses journal text; returns good entries and bad lines.
pub fn parse(text: &str) -> (Vec<Entry>, Vec<BadLine>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => good.push(e),
            Err(e) => bad.push(BadLine {
                line_no: i + 1,
                text: line.to_string(),
                error: e.to_string(),
            }),
        }
    }
    (good, bad)
}

impl Journal {
    /// Opens (creating) the state dir and loads what earlier runs recorded.
    pub fn open(dir: &Path) -> Result<Journal, ActError> {
        std::fs::create_dir_all(dir).map_err(jerr(dir))?;
        let mut j = Journal {
            dir: dir.to_path_buf(),
            originals: HashSet::new(),
            created: HashSet::new(),
        };
        // Fail now, with the path, if the state dir is not writable.
        let lock = j.lock()?;
        drop(lock);
        let (entries, _) = j.load()?;
        j.absorb(&entries);
        Ok(j)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    fn absorb(&mut self, entries: &[Entry]) {
        for e in entries {
            match e {
                Entry::Original { path, .. } => self.originals.insert(path.clone()),
                Entry::Created { path } => self.created.insert(path.clone()),
            };
        }
    }

    fn lock(&self) -> Result<File, ActError> {
        let p = self.dir.join(LOCK_FILE);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(jerr(&p))?;
        f.lock().map_err(jerr(&p))?;
        Ok(f)
    }

    /// Reads the journal file: good entries and bad lines.
    pub fn load(&self) -> Result<(Vec<Entry>, Vec<BadLine>), ActError> {
        let p = self.file();
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(parse(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), Vec::new())),
            Err(e) => Err(jerr(&p)(e)),
        }
    }

    /// Atomically replaces the journal with `entries` plus the verbatim `bad` lines.
    fn store(&self, entries: &[Entry], bad: &[BadLine]) -> Result<(), ActError> {
        let p = self.file();
        let tmp = self
            .dir
            .join(format!("{JOURNAL_FILE}.tmp.{}", std::process::id()));
        let mut text = String::new();
        for e in entries {
            let line = serde_json::to_string(e)
                .map_err(|e| jerr(&p)(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
            text.push_str(&line);
            text.push('\n');
        }
        for b in bad {
            text.push_str(&b.text);
            text.push('\n');
        }
        {
            let mut f = File::create(&tmp).map_err(jerr(&tmp))?;
            f.write_all(text.as_bytes()).map_err(jerr(&tmp))?;
            f.sync_all().map_err(jerr(&tmp))?;
        }
        std::fs::rename(&tmp, &p).map_err(jerr(&p))?;
        // The rename itself must survive a crash.
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Runs `f` on the freshly loaded entries under the lock and stores the result.
    pub fn update<T>(&mut self, f: impl FnOnce(&mut Vec<Entry>) -> T) -> Result<T, ActError> {
        let _lock = self.lock()?;
        let (mut entries, bad) = self.load()?;
        let out = f(&mut entries);
        self.store(&entries, &bad)?;
        self.originals.clear();
        self.created.clear();
        self.absorb(&entries);
        Ok(out)
    }

    /// Moves unreadable lines out of the journal into `journal.rejected`, so they are reported once
    /// and kept for a person to read, not re-reported by every restore.
    pub fn set_aside_bad(&mut self) -> Result<usize, ActError> {
        let _lock = self.lock()?;
        let (entries, bad) = self.load()?;
        if bad.is_empty() {
            return Ok(0);
        }
        let rej = self.dir.join(REJECTED_FILE);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&rej)
            .map_err(jerr(&rej))?;
        for b in &bad {
            writeln!(f, "{}", b.text).map_err(jerr(&rej))?;
        }
        f.sync_all().map_err(jerr(&rej))?;
        self.store(&entries, &[])?;
        Ok(bad.len())
    }

    pub fn has_original(&self, path: &Path) -> bool {
        self.originals.contains(path)
    }

    pub fn is_created(&self, path: &Path) -> bool {
        self.created.contains(path)
    }

    /// Records `value` as the original of `path` unless one is recorded already (by anyone).
    pub fn record_original(&mut self, path: &Path, value: &str) -> Result<(), ActError> {
        if self.originals.contains(path) {
            return Ok(());
        }
        self.update(|entries| {
            let known = entries
                .iter()
                .any(|e| matches!(e, Entry::Original { path: p, .. } if p == path));
            if !known {
                entries.push(Entry::Original {
                    path: path.to_path_buf(),
                    value: value.to_string(),
                });
            }
        })
    }

    /// Records many originals in one durable update (one fsync); paths already recorded are skipped.
    pub fn record_originals(&mut self, items: &[(PathBuf, String)]) -> Result<(), ActError> {
        let new: Vec<&(PathBuf, String)> = items
            .iter()
            .filter(|(p, _)| !self.originals.contains(p))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.update(|entries| {
            let known: HashSet<PathBuf> = entries
                .iter()
                .filter_map(|e| match e {
                    Entry::Original { path, .. } => Some(path.clone()),
                    _ => None,
                })
                .collect();
            for (p, v) in new {
                if !known.contains(p) {
                    entries.push(Entry::Original {
                        path: p.clone(),
                        value: v.clone(),
                    });
                }
            }
        })
    }

    /// Records that these directories are about to be created, in one durable update.
    pub fn record_created_many(&mut self, paths: &[PathBuf]) -> Result<(), ActError> {
        let new: Vec<&PathBuf> = paths
            .iter()
            .filter(|p| !self.created.contains(*p))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        self.update(|entries| {
            for p in new {
                let known = entries
                    .iter()
                    .any(|e| matches!(e, Entry::Created { path } if path == p));
                if !known {
                    entries.push(Entry::Created { path: p.clone() });
                }
            }
        })
    }

    /// Records that `path` is about to be created. Returns true if this call added the entry.
    pub fn record_created(&mut self, path: &Path) -> Result<bool, ActError> {
        if self.created.contains(path) {
            return Ok(false);
        }
        self.update(|entries| {
            let known = entries
                .iter()
                .any(|e| matches!(e, Entry::Created { path: p } if p == path));
            if !known {
                entries.push(Entry::Created {
                    path: path.to_path_buf(),
                });
            }
            !known
        })
    }

    /// Drops entries (a creation that did not happen, or restored values).
    pub fn forget(&mut self, pred: impl Fn(&Entry) -> bool) -> Result<(), ActError> {
        self.update(|entries| entries.retain(|e| !pred(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_once_and_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal::open(d.path()).unwrap();
        j.record_original(Path::new("/x/cpu.shares"), "1024")
            .unwrap();
        j.record_original(Path::new("/x/cpu.shares"), "2").unwrap();
        assert!(j.record_created(Path::new("/x/g")).unwrap());
        assert!(!j.record_created(Path::new("/x/g")).unwrap());
        let j2 = Journal::open(d.path()).unwrap();
        let (entries, bad) = j2.load().unwrap();
        assert!(bad.is_empty());
        assert_eq!(
            entries,
            vec![
                Entry::Original {
                    path: "/x/cpu.shares".into(),
                    value: "1024".into()
                },
                Entry::Created {
                    path: "/x/g".into()
                }
            ]
        );
        assert!(j2.has_original(Path::new("/x/cpu.shares")));
        assert!(j2.is_created(Path::new("/x/g")));
    }

    #[test]
    fn bad_lines_are_kept_and_reported() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(JOURNAL_FILE),
            "{\"kind\":\"original\",\"path\":\"/a\",\"value\":\"1\"}\nnot json\n",
        )
        .unwrap();
        let mut j = Journal::open(d.path()).unwrap();
        j.record_original(Path::new("/b"), "2").unwrap();
        let (good, bad) = j.load().unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].text, "not json");
    }

    #[test]
    fn unwritable_state_dir_fails_with_its_path() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let e = Journal::open(&file.join("state")).unwrap_err();
        assert!(e.to_string().contains("plain-file"), "{e}");
    }
}
