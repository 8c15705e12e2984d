//! The one door to the kernel. Every cgroup write, group creation and removal, task move and kill goes
//! through [`Actuator`] (the primitives that change the kernel are private to this crate), which first
//! records the original value of a file (or the fact it created a group) in a durable [`Journal`],
//! skips writes that change nothing, logs instead of writing in dry-run mode, and can undo everything
//! with [`restore::restore`]. [`RootLock`] keeps one agent per tidal root, and `restore` away from a
//! running one.

pub mod actuator;
pub mod brake;
pub mod error;
pub mod journal;
mod kernel;
pub mod lock;
pub mod restore;
pub mod systemd;

pub use actuator::{ActStats, Actuator, Applied, Outcome};
pub use brake::{Brake, Pulled};
pub use error::ActError;
pub use journal::{Entry, Journal};
pub use lock::{RootLock, SetupLock};
pub use restore::{restore, RestoreReport};
