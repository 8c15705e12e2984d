//! Everything tidal knows about cgroupfs: which hierarchies exist (v1, v2, hybrid) and where, which
//! knob maps to which file on each version (one module per controller and version), value conversions,
//! and typed readers for usage, throttling and PSI. Reading lives here; writing is the actuator's job,
//! through [`Layout::write_file`] which only the actuator calls.

pub mod caps;
pub mod error;
pub mod hierarchy;
pub mod hot;
pub mod knobs;
pub mod layout;
pub mod mountinfo;
pub mod psi;
pub mod stat;
pub mod v1;
pub mod v2;

pub use caps::detect_capabilities;
pub use error::CgroupError;
pub use hierarchy::{CgroupMode, Hierarchies, Hierarchy, Version};
pub use layout::{HierarchyRoot, Layout, RootSpec};
pub use psi::{Psi, PsiLine, PsiResource};
