//! cgroup v1 controllers: one module per controller.
pub mod blkio;
pub mod cpu;
pub mod cpuset;
pub mod freezer;
pub mod memory;
