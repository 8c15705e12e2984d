//! cgroup v2 controllers and core files: one module per controller.
pub mod core;
pub mod cpu;
pub mod cpuset;
pub mod io;
pub mod memory;
