//! The durable journal of original values and created groups, in the state dir as JSON Lines
//! (`journal.jsonl`), format version 2.
//!
//! Records are appended, one `write(2)` of whole lines with `O_APPEND` and an fsync each, so
//! journalling costs O(1) per record whatever the journal's size, concurrent writers (`tidal run`s,
//! the agent) never take a lock, and a crash leaves at most one torn last line, which is set aside.
//! Undoing is appending a `forget` record. Compaction rewrites the file (temp, fsync, rename) when
//! forgotten records pile up; it runs only under a non-blocking lock, so a process frozen while
//! holding it delays compaction and nothing else. A writer that appended to a file compaction just
//! replaced appends again to the new one, and compaction copies what was appended while it ran, so no
//! record is lost (a duplicate is harmless: the first original of a path wins).
//!
//! Journals written before version 2 (no header, `original` and `created` records only) are read the
//! same way.

use crate::error::ActError;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub const JOURNAL_FILE: &str = "journal.jsonl";
const COMPACT_LOCK: &str = "journal.lock";
/// Where unreadable journal lines are kept after a restore reported them.
pub const REJECTED_FILE: &str = "journal.rejected";
const TMP_PREFIX: &str = "journal.jsonl.tmp.";
pub const FORMAT_VERSION: u32 = 2;
/// Longest line read back; anything longer is a bad line (a journal is never that wide).
const MAX_LINE: usize = 16 * 1024;
/// The longest an append waits for the journal's lock.
pub const APPEND_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
/// Compaction starts once this many records are dead and they outnumber the live ones.
const COMPACT_AFTER: usize = 512;

/// What a `forget` record takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forgotten {
    Original,
    Created,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Entry {
    /// First line of a version-2 journal.
    Header { version: u32 },
    /// A file's content before tidal first wrote it. `foreign`: the file is in a group another
    /// manager owns (set-only).
    Original {
        path: PathBuf,
        value: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        foreign: bool,
    },
    /// A group directory tidal created.
    Created { path: PathBuf },
    /// Takes back an earlier record of `path` (restored, removed, or rolled back).
    Forget { path: PathBuf, what: Forgotten },
}

impl Entry {
    pub fn original(path: &Path, value: &str) -> Entry {
        Entry::Original {
            path: path.to_path_buf(),
            value: value.to_string(),
            foreign: false,
        }
    }
    pub fn path(&self) -> Option<&Path> {
        match self {
            Entry::Header { .. } => None,
            Entry::Original { path, .. } | Entry::Created { path } | Entry::Forget { path, .. } => {
                Some(path)
            }
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

/// The live content of a journal: originals (first recorded wins) and created groups, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// `(path, value, foreign)` in the order they were recorded.
    pub originals: Vec<(PathBuf, String, bool)>,
    pub created: Vec<PathBuf>,
    pub version: Option<u32>,
}

fn jerr(path: &Path) -> impl FnOnce(std::io::Error) -> ActError + '_ {
    move |source| ActError::Journal {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, msg: String) -> ActError {
    ActError::Journal {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    }
}

/// A journal path must be absolute and plain: no `.`/`..`, no NUL.
fn plain_absolute(p: &Path) -> bool {
    p.is_absolute()
        && !p.as_os_str().as_encoded_bytes().contains(&0)
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Parses one line.
pub fn parse_line(line: &str) -> Result<Entry, String> {
    if line.len() > MAX_LINE {
        return Err(format!("line longer than {MAX_LINE} bytes"));
    }
    let e: Entry = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if let Some(p) = e.path() {
        if !plain_absolute(p) {
            return Err(format!(
                "path '{}' is not a plain absolute path",
                p.display()
            ));
        }
    }
    Ok(e)
}

/// Parses journal text; returns good entries and bad lines.
pub fn parse(text: &str) -> (Vec<Entry>, Vec<BadLine>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(e) => good.push(e),
            Err(error) => bad.push(BadLine {
                line_no: i + 1,
                text: line.chars().take(1000).collect(),
                error,
            }),
        }
    }
    (good, bad)
}

/// Replays records in order into the live state.
pub fn replay(entries: &[Entry]) -> Live {
    let mut live = Live::default();
    let mut seen: HashSet<&Path> = HashSet::new();
    for e in entries {
        match e {
            Entry::Header { version } => live.version = Some(*version),
            Entry::Original {
                path,
                value,
                foreign,
            } => {
                if seen.insert(path) {
                    live.originals.push((path.clone(), value.clone(), *foreign));
                }
            }
            Entry::Created { path } => {
                if !live.created.contains(path) {
                    live.created.push(path.clone());
                }
            }
            Entry::Forget { path, what } => match what {
                Forgotten::Original => {
                    seen.remove(path.as_path());
                    live.originals.retain(|(p, _, _)| p != path);
                }
                Forgotten::Created => live.created.retain(|p| p != path),
            },
        }
    }
    live
}

/// Refuses a state dir or journal another user could have written: its records decide what tidal
/// writes as root.
fn check_trusted(path: &Path) -> Result<(), ActError> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(jerr(path)(e)),
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.file_type().is_symlink() {
        return Err(invalid(
            path,
            "is a symbolic link: refusing to trust it".into(),
        ));
    }
    if md.uid() != me {
        return Err(invalid(
            path,
            format!(
                "is owned by uid {}, not by this user (uid {me}): refusing to trust it",
                md.uid()
            ),
        ));
    }
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(invalid(
            path,
            format!(
                "is writable by group or others (mode {mode:03o}): refusing to trust it (chmod go-w)"
            ),
        ));
    }
    Ok(())
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: File,
    /// (device, inode) of the journal `file` was opened as.
    id: (u64, u64),
    /// Bytes of `file` absorbed into the caches below.
    read_pos: u64,
    /// Records read so far (the current file), for the compaction heuristic.
    records: usize,
    /// Live originals (path → value first recorded) and created groups, as far as read.
    originals: HashMap<PathBuf, String>,
    created: HashSet<PathBuf>,
    /// Records since open that were taken back by later ones.
    dead: usize,
}

impl Journal {
    /// Opens (creating) the state dir and the journal, checks both are this user's alone, removes
    /// temp files a crashed writer left, and loads what earlier runs recorded.
    pub fn open(dir: &Path) -> Result<Journal, ActError> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(jerr(dir))?;
        }
        if !dir.is_dir() {
            return Err(invalid(dir, "is not a directory".into()));
        }
        check_trusted(dir)?;
        let p = dir.join(JOURNAL_FILE);
        check_trusted(&p)?;
        remove_stale_temps(dir);
        let (file, id) = open_file(&p)?;
        let mut j = Journal {
            dir: dir.to_path_buf(),
            file,
            id,
            read_pos: 0,
            records: 0,
            originals: HashMap::new(),
            created: HashSet::new(),
            dead: 0,
        };
        j.refresh()?;
        Ok(j)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    /// Reads what others appended since the last read (or everything, if compaction replaced the
    /// file). A torn last line (a crash mid-append) is ended with a newline so the next record
    /// starts clean.
    fn refresh(&mut self) -> Result<(), ActError> {
        let p = self.file();
        if file_id(&p).is_some_and(|id| id != self.id) {
            let (f, id) = open_file(&p)?;
            self.file = f;
            self.id = id;
            self.read_pos = 0;
            self.records = 0;
            self.originals.clear();
            self.created.clear();
        }
        let mut buf = Vec::new();
        let mut f = &self.file;
        f.seek(SeekFrom::Start(self.read_pos)).map_err(jerr(&p))?;
        f.read_to_end(&mut buf).map_err(jerr(&p))?;
        // Absorb whole lines only.
        let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let text = String::from_utf8_lossy(&buf[..whole]);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            self.records += 1;
            if let Ok(e) = parse_line(line) {
                self.absorb(&e);
            }
        }
        self.read_pos += whole as u64;
        if whole < buf.len() && self.read_pos > 0 {
            // An unterminated tail: either a writer is mid-append (its newline follows in the same
            // write) or a crash tore it. Only the second case stays: end it after a moment.
            std::thread::sleep(std::time::Duration::from_millis(2));
            let len = self.file.metadata().map_err(jerr(&p))?.len();
            if len == self.read_pos + (buf.len() - whole) as u64 {
                (&self.file).write_all(b"\n").map_err(jerr(&p))?;
            }
            return self.refresh();
        }
        Ok(())
    }

    fn absorb(&mut self, e: &Entry) {
        match e {
            Entry::Header { .. } => {}
            Entry::Original { path, value, .. } => {
                if self.originals.contains_key(path) {
                    self.dead += 1;
                } else {
                    self.originals.insert(path.clone(), value.clone());
                }
            }
            Entry::Created { path } => {
                if !self.created.insert(path.clone()) {
                    self.dead += 1;
                }
            }
            Entry::Forget { path, what } => {
                self.dead += 2;
                match what {
                    Forgotten::Original => {
                        self.originals.remove(path);
                    }
                    Forgotten::Created => {
                        self.created.remove(path);
                    }
                }
            }
        }
    }

    /// Appends records durably: one write of whole lines, then fsync. If compaction replaced the
    /// file meanwhile, the records go to the new one too.
    ///
    /// Writers take the journal's lock for the append, waiting at most [`APPEND_WAIT`]: concurrent
    /// `tidal run`s then never record the same thing twice. A holder that does not let go (a process
    /// frozen mid-update) costs that wait and a possible duplicate record (harmless: the first
    /// wins), never a stall.
    fn append(&mut self, entries: &[Entry]) -> Result<(), ActError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _lock = self.lock_within(APPEND_WAIT)?;
        self.refresh()?;
        let entries: Vec<&Entry> = entries
            .iter()
            .filter(|e| match e {
                Entry::Original { path, .. } => !self.originals.contains_key(path),
                Entry::Created { path } => !self.created.contains(path),
                _ => true,
            })
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let p = self.file();
        let mut text = String::new();
        let fresh = self.read_pos == 0 && self.records == 0;
        let header = [Entry::Header {
            version: FORMAT_VERSION,
        }];
        for e in header.iter().filter(|_| fresh).chain(entries) {
            let line = serde_json::to_string(e)
                .map_err(|e| invalid(&p, format!("cannot encode a record: {e}")))?;
            text.push_str(&line);
            text.push('\n');
        }
        for _ in 0..8 {
            self.refresh()?;
            (&self.file).write_all(text.as_bytes()).map_err(jerr(&p))?;
            self.file.sync_data().map_err(jerr(&p))?;
            if file_id(&p) == Some(self.id) {
                self.refresh()?;
                return Ok(());
            }
        }
        Err(invalid(
            &p,
            "the journal kept being replaced while appending".into(),
        ))
    }

    pub fn has_original(&self, path: &Path) -> bool {
        self.originals.contains_key(path)
    }

    /// Live originals of files in `dir` or below it, as far as read.
    pub fn originals_under(&self, dir: &Path) -> Vec<PathBuf> {
        self.originals
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect()
    }

    pub fn is_created(&self, path: &Path) -> bool {
        self.created.contains(path)
    }

    /// Catches up with what other processes recorded (cheap: reads only the new tail).
    pub fn sync(&mut self) -> Result<(), ActError> {
        self.refresh()
    }

    /// Records `value` as the original of `path` unless one is recorded already (by anyone).
    pub fn record_original(&mut self, path: &Path, value: &str) -> Result<(), ActError> {
        self.record_originals(&[(path.to_path_buf(), value.to_string())], false)
    }

    /// Records many originals in one durable append; paths already recorded are skipped.
    pub fn record_originals(
        &mut self,
        items: &[(PathBuf, String)],
        foreign: bool,
    ) -> Result<(), ActError> {
        self.refresh()?;
        let mut seen = HashSet::new();
        let new: Vec<Entry> = items
            .iter()
            .filter(|(p, _)| !self.originals.contains_key(p) && seen.insert(p.clone()))
            .map(|(p, v)| Entry::Original {
                path: p.clone(),
                value: v.clone(),
                foreign,
            })
            .collect();
        self.append(&new)
    }

    /// Records that these directories are about to be created, in one durable append.
    pub fn record_created_many(&mut self, paths: &[PathBuf]) -> Result<(), ActError> {
        self.refresh()?;
        let mut seen = HashSet::new();
        let new: Vec<Entry> = paths
            .iter()
            .filter(|p| !self.created.contains(*p) && seen.insert((*p).clone()))
            .map(|p| Entry::Created { path: p.clone() })
            .collect();
        self.append(&new)
    }

    /// Records that `path` is about to be created. Returns true if this call added the record.
    pub fn record_created(&mut self, path: &Path) -> Result<bool, ActError> {
        self.refresh()?;
        if self.created.contains(path) {
            return Ok(false);
        }
        self.append(&[Entry::Created {
            path: path.to_path_buf(),
        }])?;
        Ok(true)
    }

    /// Takes records back (a creation that did not happen, a group removed, a value restored).
    pub fn forget(&mut self, items: &[(PathBuf, Forgotten)]) -> Result<(), ActError> {
        let entries: Vec<Entry> = items
            .iter()
            .map(|(path, what)| Entry::Forget {
                path: path.clone(),
                what: *what,
            })
            .collect();
        self.append(&entries)?;
        self.maybe_compact();
        Ok(())
    }

    /// Reads the whole journal: good records and bad lines.
    pub fn load(&self) -> Result<(Vec<Entry>, Vec<BadLine>), ActError> {
        let p = self.file();
        match std::fs::read(&p) {
            Ok(t) => Ok(parse(&String::from_utf8_lossy(&t))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((Vec::new(), Vec::new())),
            Err(e) => Err(jerr(&p)(e)),
        }
    }

    /// The live state of the whole journal.
    pub fn live(&self) -> Result<(Live, Vec<BadLine>), ActError> {
        let (entries, bad) = self.load()?;
        Ok((replay(&entries), bad))
    }

    /// Compacts when forgotten records outnumber live ones (skipped if another process compacts).
    pub fn maybe_compact(&mut self) {
        let live = self.originals.len() + self.created.len();
        if self.dead >= COMPACT_AFTER && self.dead > live {
            if let Err(e) = self.compact(false) {
                tracing::warn!("journal compaction: {e}");
            }
        }
    }

    /// Rewrites the journal as a header plus its live records, under the compaction lock taken
    /// without waiting (false: someone else holds it, nothing done). With `set_aside_bad`, unreadable
    /// lines move to `journal.rejected`; otherwise they are kept verbatim.
    pub fn compact(&mut self, set_aside_bad: bool) -> Result<bool, ActError> {
        let Some(_lock) = self.try_lock()? else {
            return Ok(false);
        };
        let p = self.file();
        let mut old = File::open(&p).map_err(jerr(&p))?;
        let mut text = Vec::new();
        old.read_to_end(&mut text).map_err(jerr(&p))?;
        // Whole lines only: a record being appended right now is carried over as its bytes are,
        // and the rest of it follows.
        let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let (whole, tail) = text.split_at(end);
        let whole = String::from_utf8_lossy(whole);
        let (entries, bad) = parse(&whole);
        // Bad lines are kept or set aside whole (a bad line's text in reports is shortened).
        let bad_no: HashSet<usize> = bad.iter().map(|b| b.line_no).collect();
        let bad_lines: Vec<&str> = whole
            .lines()
            .enumerate()
            .filter(|(i, _)| bad_no.contains(&(i + 1)))
            .map(|(_, l)| l)
            .collect();
        let live = replay(&entries);
        let mut out = String::new();
        let mut push = |e: &Entry| -> Result<(), ActError> {
            let line = serde_json::to_string(e).map_err(|e| invalid(&p, format!("encode: {e}")))?;
            out.push_str(&line);
            out.push('\n');
            Ok(())
        };
        push(&Entry::Header {
            version: FORMAT_VERSION,
        })?;
        for (path, value, foreign) in &live.originals {
            push(&Entry::Original {
                path: path.clone(),
                value: value.clone(),
                foreign: *foreign,
            })?;
        }
        for path in &live.created {
            push(&Entry::Created { path: path.clone() })?;
        }
        if set_aside_bad && !bad.is_empty() {
            let rej = self.dir.join(REJECTED_FILE);
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&rej)
                .map_err(jerr(&rej))?;
            for l in &bad_lines {
                writeln!(f, "{l}").map_err(jerr(&rej))?;
            }
            f.sync_all().map_err(jerr(&rej))?;
        } else {
            for l in &bad_lines {
                out.push_str(l);
                out.push('\n');
            }
        }
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
        let result = (|| -> Result<(), ActError> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(jerr(&tmp))?;
            f.write_all(out.as_bytes()).map_err(jerr(&tmp))?;
            f.write_all(tail).map_err(jerr(&tmp))?;
            // Records appended while we worked go along.
            let mut more = Vec::new();
            old.read_to_end(&mut more).map_err(jerr(&p))?;
            f.write_all(&more).map_err(jerr(&tmp))?;
            f.sync_all().map_err(jerr(&tmp))?;
            std::fs::rename(&tmp, &p).map_err(jerr(&p))?;
            // …and those appended between the last read and the rename.
            let mut late = Vec::new();
            old.read_to_end(&mut late).map_err(jerr(&p))?;
            if !late.is_empty() {
                let mut nf = OpenOptions::new().append(true).open(&p).map_err(jerr(&p))?;
                nf.write_all(&late).map_err(jerr(&p))?;
                nf.sync_data().map_err(jerr(&p))?;
            }
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        self.dead = 0;
        self.refresh()?;
        Ok(true)
    }

    /// The journal's lock, trying for at most `wait`; None if another process keeps it.
    fn lock_within(&self, wait: std::time::Duration) -> Result<Option<File>, ActError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(f) = self.try_lock()? {
                return Ok(Some(f));
            }
            if std::time::Instant::now() >= deadline {
                tracing::debug!("journal lock busy: appending without it");
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// The journal's lock, without waiting.
    fn try_lock(&self) -> Result<Option<File>, ActError> {
        let p = self.dir.join(COMPACT_LOCK);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&p)
            .map_err(jerr(&p))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(jerr(&p)(e)),
        }
    }
}

fn file_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

fn open_file(p: &Path) -> Result<(File, (u64, u64)), ActError> {
    let f = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(p)
        .map_err(jerr(p))?;
    let md = f.metadata().map_err(jerr(p))?;
    Ok((f, (md.dev(), md.ino())))
}

/// Removes temp files of compactions whose process is gone (a crash or ENOSPC mid-rewrite).
fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TMP_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
                Entry::Header { version: 2 },
                Entry::original(Path::new("/x/cpu.shares"), "1024"),
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
        std::fs::set_permissions(
            d.path().join(JOURNAL_FILE),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let mut j = Journal::open(d.path()).unwrap();
        j.record_original(Path::new("/b"), "2").unwrap();
        let (good, bad) = j.load().unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].text, "not json");
        // Compaction keeps the bad line unless asked to set it aside.
        assert!(j.compact(false).unwrap());
        assert_eq!(j.load().unwrap().1.len(), 1);
        assert!(j.compact(true).unwrap());
        assert!(j.load().unwrap().1.is_empty());
        assert!(d.path().join(REJECTED_FILE).exists());
        assert_eq!(j.live().unwrap().0.originals.len(), 2);
    }

    #[test]
    fn unwritable_state_dir_fails_with_its_path() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let e = Journal::open(&file.join("state")).unwrap_err();
        assert!(e.to_string().contains("plain-file"), "{e}");
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_on_open() {
        let d = tempfile::tempdir().unwrap();
        // A pid that cannot be alive (above pid_max).
        let stale = d.path().join(format!("{TMP_PREFIX}4999999"));
        std::fs::write(&stale, "x").unwrap();
        let _j = Journal::open(d.path()).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("state");
        std::fs::create_dir(&s).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Journal::open(&s).unwrap_err().to_string();
        assert!(
            e.contains("writable by group or others") && e.contains("state"),
            "{e}"
        );
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(s.join(JOURNAL_FILE), "").unwrap();
        std::fs::set_permissions(s.join(JOURNAL_FILE), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let e = Journal::open(&s).unwrap_err().to_string();
        assert!(e.contains(JOURNAL_FILE), "{e}");
    }

    #[test]
    fn forgets_are_appended_and_compaction_drops_them() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal::open(d.path()).unwrap();
        for i in 0..600 {
            let p = PathBuf::from(format!("/g{i}"));
            j.record_created(&p).unwrap();
            j.forget(&[(p, Forgotten::Created)]).unwrap();
        }
        j.record_created(Path::new("/kept")).unwrap();
        // Compaction has run on the way: far fewer lines than the 1201 records written.
        let text = std::fs::read_to_string(d.path().join(JOURNAL_FILE)).unwrap();
        assert!(text.lines().count() < 700, "{} lines", text.lines().count());
        let (live, _) = j.live().unwrap();
        assert_eq!(live.created, vec![PathBuf::from("/kept")]);
        assert!(j.is_created(Path::new("/kept")) && !j.is_created(Path::new("/g1")));
    }

    #[test]
    fn compaction_keeps_bad_lines_whole_and_a_torn_last_line_as_its_bytes_are() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal::open(d.path()).unwrap();
        j.record_created(Path::new("/a")).unwrap();
        let p = d.path().join(JOURNAL_FILE);
        let long_bad = format!("not json {}", "x".repeat(3000));
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        writeln!(f, "{long_bad}").unwrap();
        // A writer that died mid-append.
        f.write_all(b"{\"kind\":\"created\",\"pa").unwrap();
        assert!(j.compact(false).unwrap());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.lines().any(|l| l == long_bad),
            "the bad line kept whole"
        );
        assert!(text.contains("{\"kind\":\"created\",\"pa"), "{text}");
        // The next record is not swallowed by the torn one.
        j.record_created(Path::new("/b")).unwrap();
        let (live, bad) = j.live().unwrap();
        assert_eq!(live.created, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(bad.len(), 2, "{bad:?}");
    }

    #[test]
    fn a_torn_last_line_does_not_swallow_the_next_record() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut j = Journal::open(d.path()).unwrap();
            j.record_created(Path::new("/a")).unwrap();
        }
        let p = d.path().join(JOURNAL_FILE);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"kind\":\"created\",\"pa").unwrap();
        let mut j = Journal::open(d.path()).unwrap();
        j.record_created(Path::new("/b")).unwrap();
        let (live, bad) = j.live().unwrap();
        assert_eq!(live.created, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn two_writers_and_a_compaction_lose_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut a = Journal::open(d.path()).unwrap();
        let mut b = Journal::open(d.path()).unwrap();
        a.record_created(Path::new("/a1")).unwrap();
        b.record_created(Path::new("/b1")).unwrap();
        a.forget(&[(PathBuf::from("/a1"), Forgotten::Created)])
            .unwrap();
        assert!(a.compact(false).unwrap());
        // b still holds the old file open: its next record must reach the new one.
        b.record_created(Path::new("/b2")).unwrap();
        a.record_created(Path::new("/a2")).unwrap();
        let (live, _) = a.live().unwrap();
        let mut got = live.created.clone();
        got.sort();
        assert_eq!(
            got,
            vec![
                PathBuf::from("/a2"),
                PathBuf::from("/b1"),
                PathBuf::from("/b2")
            ]
        );
        assert!(b.is_created(Path::new("/a2")) || b.sync().is_ok());
    }

    #[test]
    fn version_one_journals_read_as_before() {
        // The format written before version 2: no header, original and created only.
        let text = "{\"kind\":\"original\",\"path\":\"/sys/fs/cgroup/cpu/t/offline/cpu.idle\",\"value\":\"0\"}\n{\"kind\":\"created\",\"path\":\"/sys/fs/cgroup/cpu/t/offline/offline\"}\n";
        let (entries, bad) = parse(text);
        assert!(bad.is_empty());
        let live = replay(&entries);
        assert_eq!(live.version, None);
        assert_eq!(live.originals.len(), 1);
        assert_eq!(live.created.len(), 1);
    }

    #[test]
    fn relative_or_climbing_paths_are_bad_lines() {
        for bad in [
            r#"{"kind":"original","path":"etc/passwd","value":"x"}"#,
            r#"{"kind":"created","path":"/sys/fs/cgroup/cpu/../../etc"}"#,
            r#"{"kind":"original","path":"/a","value":"x","extra":1}"#,
            r#"{"kind":"delete","path":"/a"}"#,
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn journal_lines_never_panic(t in "\\PC{0,300}") {
            let _ = parse(&t);
        }

        #[test]
        fn journal_records_round_trip(path in "/[a-z]{1,8}(/[a-z][a-z.]{0,7}){0,4}", value in "\\PC{0,40}") {
            let e = Entry::original(Path::new(&path), &value);
            let line = serde_json::to_string(&e).unwrap();
            prop_assert_eq!(parse_line(&line).unwrap(), e);
        }
    }
}
