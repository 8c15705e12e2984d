//! Typed cgroup errors; every variant names the file or directory involved.

use std::io;
use std::path::PathBuf;
use tidal_model::Knob;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write '{value}' to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cannot parse {path}: {reason} (content '{content}')")]
    Parse {
        path: PathBuf,
        content: String,
        reason: String,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot remove cgroup {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("{knob} is not supported on this host: {reason}")]
    Unsupported { knob: Knob, reason: String },
    #[error("value {value} is invalid for {knob}: {reason}")]
    BadValue {
        knob: Knob,
        value: String,
        reason: String,
    },
    #[error("no cgroup hierarchy found in {path}")]
    NoHierarchy { path: PathBuf },
}

impl CgroupError {
    /// The OS error number behind this error, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Read { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Create { source, .. }
            | CgroupError::Remove { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The group (or file) is gone: a normal event, workloads come and go.
    pub fn is_vanished(&self) -> bool {
        match self {
            CgroupError::Read { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Remove { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ENODEV)
            }
            _ => false,
        }
    }

    /// Not allowed to write (not root, read-only cgroupfs, or not delegated).
    pub fn is_permission(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
        )
    }

    /// The kernel refused the value as such (EINVAL) or the file as such (EOPNOTSUPP): for a knob
    /// this means "unsupported here" and is not retried until the next slow re-probe.
    pub fn is_rejected(&self) -> bool {
        matches!(self.errno(), Some(libc::EINVAL) | Some(libc::EOPNOTSUPP))
    }

    /// The group is busy (rmdir with tasks or children, v1 cpuset shrink below a child).
    pub fn is_busy(&self) -> bool {
        self.errno() == Some(libc::EBUSY)
    }

    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            CgroupError::Read { path, .. }
            | CgroupError::Write { path, .. }
            | CgroupError::Parse { path, .. }
            | CgroupError::Create { path, .. }
            | CgroupError::Remove { path, .. }
            | CgroupError::NoHierarchy { path } => Some(path),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, CgroupError>;
