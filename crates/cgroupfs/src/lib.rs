//! Everything tidal knows about cgroupfs: which hierarchies exist (v1, v2, hybrid) and where, where the
//! tidal root is on this host, which knob maps to which file on each version (one module per controller
//! and version, in a table: [`controller`]), value conversions, readers of statistics and PSI, and
//! capability detection. It only reads: every write, mkdir, rmdir and kill is the actuator's.

pub mod blockdev;
pub mod caps;
pub mod controller;
pub mod cpuset;
pub mod error;
pub mod hierarchy;
pub mod hot;
pub mod iolimit;
pub mod layout;
pub mod mountinfo;
pub mod proc;
pub mod psi;
pub mod spec;
pub mod stat;
pub mod stats;
pub mod v1;
pub mod v2;

pub use caps::detect_capabilities;
pub use error::CgroupError;
pub use hierarchy::{CgroupMode, Hierarchies, Hierarchy, Version};
pub use layout::{HierarchyRoot, Host, Layout, RootSpec, ScopeUnit};
pub use psi::{Psi, PsiLine, PsiResource};
pub use stats::Reader;
