//! The one door to the kernel. Every cgroup write, group creation, task move and kill goes through
//! [`Actuator`], which first records the original value of a file (or the fact it created a group) in a
//! durable [`Journal`], skips writes that change nothing, logs instead of writing in dry-run mode, and
//! can undo everything with [`restore::restore`].

pub mod actuator;
pub mod error;
pub mod journal;
pub mod restore;

pub use actuator::{Actuator, Applied, Outcome};
pub use error::ActError;
pub use journal::{Entry, Journal};
pub use restore::{restore, RestoreReport};
