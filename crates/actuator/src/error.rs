//! Actuator errors: each names the file or directory and, for writes, the value.

use std::path::PathBuf;
use tidal_cgroupfs::CgroupError;
use tidal_model::Knob;

#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode {knob} for {}: {reason}", path.display())]
    Encode {
        knob: Knob,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot claim a group named '{name}' under {parent}: all candidates exist")]
    NoFreeName { parent: PathBuf, name: String },
    #[error("{} task(s) of {group} survived SIGKILL: {pids:?}", pids.len())]
    Survivors { group: PathBuf, pids: Vec<i32> },
    #[error("cannot signal pid {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
    #[error("the tidal root {root} is held by a running agent (pid {pid}); stop it first, or use --force")]
    Locked { root: PathBuf, pid: String },
    #[error(
        "the tidal root {root} is still busy with {by} after {waited_ms} ms ({path}): try again once it is done"
    )]
    SetupBusy {
        root: PathBuf,
        path: PathBuf,
        by: &'static str,
        waited_ms: u64,
    },
    #[error("lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is the kubelet's {owned} or above it: tidal never writes it", path.display())]
    Protected { path: PathBuf, owned: String },
    #[error("{0}")]
    Root(String),
    #[error("systemd: {0}")]
    Systemd(String),
    #[error("workload source: {0}")]
    Source(String),
}

impl ActError {
    pub fn is_permission(&self) -> bool {
        let errno = match self {
            ActError::Cgroup(e) => return e.is_permission(),
            ActError::Journal { source, .. }
            | ActError::Lock { source, .. }
            | ActError::Signal { source, .. } => source.raw_os_error(),
            _ => None,
        };
        matches!(
            errno,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
        )
    }
    pub fn is_vanished(&self) -> bool {
        matches!(self, ActError::Cgroup(e) if e.is_vanished())
    }
    pub fn is_busy(&self) -> bool {
        matches!(self, ActError::Cgroup(e) if e.is_busy())
    }
    pub fn is_rejected(&self) -> bool {
        matches!(self, ActError::Cgroup(e) if e.is_rejected())
    }
    pub fn errno(&self) -> Option<i32> {
        match self {
            ActError::Cgroup(e) => e.errno(),
            _ => None,
        }
    }
}
