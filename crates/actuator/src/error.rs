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
    #[error("{knob} is not supported on this host (no hierarchy carries its controller)")]
    Unsupported { knob: Knob },
    #[error("cannot encode {knob}: {reason}")]
    Encode { knob: Knob, reason: String },
    #[error("cannot claim a group named '{name}' under {parent}: all candidates exist")]
    NoFreeName { parent: PathBuf, name: String },
}

impl ActError {
    pub fn is_permission(&self) -> bool {
        match self {
            ActError::Cgroup(e) => e.is_permission(),
            ActError::Journal { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
            ),
            _ => false,
        }
    }
    pub fn is_vanished(&self) -> bool {
        matches!(self, ActError::Cgroup(e) if e.is_vanished())
    }
}
