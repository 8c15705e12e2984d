//! The stall guard's one act: freeze a fixed set of offline groups from another thread while the
//! agent's loop (which owns the [`Actuator`]) cannot run. A [`Brake`] is made only by
//! [`Actuator::brake`], which journals the freeze files' originals first, so the guard never needs
//! the journal and `restore` thaws what it froze like any other write.

use crate::actuator::Actuator;
use crate::error::ActError;
use crate::kernel;
use std::path::PathBuf;
use tidal_cgroupfs::controller;
use tidal_model::{Knob, KnobValue, Target};
use tracing::{info, warn};

/// Freeze files and the value that freezes each, resolved when the brake was made.
#[derive(Debug, Clone, Default)]
pub struct Brake {
    files: Vec<(PathBuf, String)>,
    dry_run: bool,
}

/// What one pull of the brake did.
#[derive(Debug, Default)]
pub struct Pulled {
    /// Files written (or, in a dry run, that would have been).
    pub frozen: usize,
    /// Files that failed, each with why (a group that ended meanwhile is not one).
    pub failed: Vec<String>,
}

impl Brake {
    /// Whether pulling it would freeze anything.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The groups' freeze files, for the log.
    pub fn files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// Freezes every group now. A group that ended meanwhile is skipped.
    pub fn pull(&self) -> Pulled {
        let mut out = Pulled::default();
        for (path, value) in &self.files {
            if self.dry_run {
                info!("dry-run: would write '{value}' to {}", path.display());
                out.frozen += 1;
                continue;
            }
            match kernel::write_file(path, value) {
                Ok(()) => out.frozen += 1,
                Err(e) if e.is_vanished() => {}
                Err(e) => out.failed.push(e.to_string()),
            }
        }
        out
    }
}

impl Actuator {
    /// A brake for `targets`: their freeze files, each original journalled now (none is written).
    /// Targets without a freezer file here are left out, and protected ones (said): the rest
    /// still brake.
    pub fn brake(&mut self, targets: &[Target]) -> Result<Brake, ActError> {
        let mut kept = Vec::with_capacity(targets.len());
        for t in targets {
            match self.guard(t) {
                Ok(()) => kept.push(t.clone()),
                Err(e) => warn!("stall brake: {e}: left out"),
            }
        }
        let targets = &kept[..];
        let knobs: Vec<(Target, Knob)> =
            targets.iter().map(|t| (t.clone(), Knob::Freeze)).collect();
        self.remember(&knobs)?;
        let mut files = Vec::new();
        for t in targets {
            let Some((version, paths)) = self.layout().knob_paths(t, Knob::Freeze) else {
                continue;
            };
            let values = controller::encode(Knob::Freeze, version, &KnobValue::Bool(true))
                .map_err(|reason| ActError::Encode {
                    knob: Knob::Freeze,
                    path: paths.first().cloned().unwrap_or_default(),
                    reason,
                })?;
            files.extend(paths.into_iter().zip(values));
        }
        Ok(Brake {
            files,
            dry_run: self.dry_run(),
        })
    }
}
