//! cgroup v2 controllers and core files: one module per controller (cpuset is shared with v1:
//! `crate::cpuset`).
pub mod core;
pub mod cpu;
pub mod io;
pub mod memory;
