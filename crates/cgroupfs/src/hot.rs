//! A counter file read over and over through one open descriptor (`pread` at offset 0): kernfs
//! regenerates the content on each read, and skipping open/close keeps the per-tick cost down.
//! Not v1's pid lists (`cgroup.procs`, `tasks`): the kernel keeps the list loaded at an open's first
//! read and hands it to that descriptor again while reads keep coming within a second, so those are
//! opened afresh for each read ([`HotFile::fresh`]), relative to their directory, kept open (a walk
//! of the whole path each time was most of what the open cost).

use crate::error::{CgroupError, Result};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct HotFile {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    /// Opened for each read (relative to its directory), closed after it.
    fresh: Option<Fresh>,
}

#[derive(Debug)]
struct Fresh {
    /// The file's directory (`O_PATH`), reopened after an error: the group may have been made
    /// again under the same path.
    dir: Option<OwnedFd>,
    name: CString,
}

impl Fresh {
    fn open(&mut self, path: &Path) -> std::io::Result<File> {
        let dir = match &self.dir {
            Some(d) => d,
            None => {
                let parent = path.parent().unwrap_or(Path::new("/"));
                let d = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                    .open(parent)?;
                self.dir.insert(OwnedFd::from(d))
            }
        };
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                self.name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            self.dir = None;
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: openat returned a new descriptor this process owns and nothing else holds.
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

impl HotFile {
    pub fn new(path: PathBuf) -> Self {
        HotFile {
            path,
            file: None,
            buf: vec![0; 512],
            fresh: None,
        }
    }

    /// A file whose descriptor may serve stale content on later reads: opened for each read.
    pub fn fresh(path: PathBuf) -> Self {
        let name = path
            .file_name()
            .and_then(|n| CString::new(n.as_bytes()).ok())
            .unwrap_or_default();
        HotFile {
            fresh: Some(Fresh { dir: None, name }),
            ..HotFile::new(path)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current content. Reopens after an error (the group may have been recreated).
    pub fn read(&mut self) -> Result<&str> {
        let err = |p: &Path, source| CgroupError::Read {
            path: p.to_path_buf(),
            source,
        };
        if self.file.is_none() {
            let f = match &mut self.fresh {
                Some(fr) => fr.open(&self.path),
                None => File::open(&self.path),
            };
            self.file = Some(f.map_err(|e| err(&self.path, e))?);
        }
        let Some(f) = self.file.as_ref() else {
            return Err(err(&self.path, std::io::ErrorKind::NotFound.into()));
        };
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match f.read_at(&mut self.buf[len..], len as u64) {
                Ok(0) => break,
                Ok(k) => len += k,
                Err(e) => {
                    self.file = None;
                    return Err(err(&self.path, e));
                }
            }
        }
        if self.fresh.is_some() {
            self.file = None;
        }
        std::str::from_utf8(&self.buf[..len]).map_err(|_| CgroupError::Parse {
            path: self.path.clone(),
            content: String::new(),
            reason: "not UTF-8".to_string(),
        })
    }

    /// The first whitespace-separated token as an integer (`cpuacct.usage`).
    pub fn read_u64(&mut self) -> Result<u64> {
        let path = self.path.clone();
        let s = self.read()?;
        s.split_whitespace()
            .next()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| CgroupError::Parse {
                path,
                content: s.trim().to_string(),
                reason: "expected an integer".to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rereads_changed_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cpuacct.usage");
        std::fs::write(&p, "100\n").unwrap();
        let mut h = HotFile::new(p.clone());
        assert_eq!(h.read_u64().unwrap(), 100);
        std::fs::write(&p, "2000000\n").unwrap();
        assert_eq!(h.read_u64().unwrap(), 2_000_000);
        let mut missing = HotFile::new(d.path().join("nope"));
        assert!(missing.read().unwrap_err().is_vanished());
    }

    #[test]
    fn fake_fs_a_fresh_file_is_opened_for_each_read_a_kept_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cgroup.procs");
        std::fs::write(&p, "1\n").unwrap();
        let mut kept = HotFile::new(p.clone());
        let mut fresh = HotFile::fresh(p.clone());
        assert_eq!(kept.read().unwrap(), "1\n");
        assert_eq!(fresh.read().unwrap(), "1\n");
        // A new file in its place: only a new open sees it (as only a new open of a v1 pid list
        // is served a new list).
        let new = d.path().join("new");
        std::fs::write(&new, "1\n2\n").unwrap();
        std::fs::rename(&new, &p).unwrap();
        assert_eq!(kept.read().unwrap(), "1\n");
        assert_eq!(fresh.read().unwrap(), "1\n2\n");
        // Its directory gone, then made again: vanished, then read from the new one.
        let sub = d.path().join("g");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("cgroup.procs"), "7\n").unwrap();
        let mut f = HotFile::fresh(sub.join("cgroup.procs"));
        assert_eq!(f.read().unwrap(), "7\n");
        std::fs::remove_dir_all(&sub).unwrap();
        assert!(f.read().unwrap_err().is_vanished());
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("cgroup.procs"), "8\n").unwrap();
        assert_eq!(f.read().unwrap(), "8\n");
    }
}
