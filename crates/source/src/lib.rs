//! Workload sources: where tidal learns which workloads exist and at which level. The local source
//! reads the tidal tree itself (a workload's level is where its group is), so workloads started by
//! `tidal run` are found as they appear and disappear, and a restarted agent adopts the tree as it is.

pub mod local;

pub use local::{LocalSource, WorkloadRef};
