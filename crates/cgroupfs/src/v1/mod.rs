//! cgroup v1 controllers: one module per controller (cpuset is shared with v2: `crate::cpuset`).
pub mod blkio;
pub mod cpu;
pub mod cpuacct;
pub mod freezer;
pub mod memory;
