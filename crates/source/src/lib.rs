//! Workload sources: where tidal learns which workloads exist, at which level, where their cgroups
//! are, and whether tidal may create, move into, freeze, kill or remove them. Every source implements
//! [`WorkloadSource`]; the snapshot collector and the agent take the trait. The local source reads the
//! tidal tree itself (a workload's level is where its group is), so workloads started by `tidal run`
//! are found as they appear and disappear, and a restarted agent adopts the tree as it is.

pub mod local;

pub use local::LocalSource;

use std::collections::BTreeSet;
use std::path::PathBuf;
use tidal_cgroupfs::{CgroupError, Layout};
use tidal_model::{QosLevel, Target};

/// One workload as a source knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    /// Its group: under the tidal root (local workloads), or in another manager's tree (pods).
    pub group: Target,
    pub level: QosLevel,
    pub name: String,
    /// Tidal may create, move tasks into, freeze, kill and remove this group. Pods: never; tidal
    /// only sets values on them.
    pub managed: bool,
}

impl WorkloadRef {
    /// The workload's cgroup directory in each hierarchy tidal uses (the same relative path in each:
    /// under the tidal root, or under each mount for another manager's tree).
    pub fn dirs(&self, layout: &Layout) -> Vec<PathBuf> {
        layout.target_dirs(&self.group)
    }
}

/// What a source knows at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Level groups that exist under the tidal root.
    pub levels_present: BTreeSet<QosLevel>,
    pub workloads: Vec<WorkloadRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{source_name}: {reason}")]
    Other {
        source_name: &'static str,
        reason: String,
    },
}

/// A source of workloads.
pub trait WorkloadSource: Send {
    /// A short name for logs and `/state` ("local", "kubernetes").
    fn name(&self) -> &'static str;
    /// Which workloads exist now. A source that cannot answer says why; the caller keeps its last
    /// answer rather than taking silence for an empty node.
    fn scan(&mut self) -> Result<Inventory, SourceError>;
}
