//! The pure policy: functions from what tidal knows (capabilities, a snapshot, the config) to a
//! [`Plan`](tidal_model::Plan) in which every action carries its reason. No IO and no clock reads:
//! time arrives as data in the snapshot, so every decision is unit- and property-testable.

pub mod agent;
pub mod config;
pub mod levels;

pub use agent::{
    decide, release_plan, settle, Decision, Phase, PolicyState, Step, PROBE_BACKOFF_MAX,
};
pub use config::kubernetes::{self, KubernetesConfig};
pub use config::{CapMode, Config, ConfigError, Millis, PsiLine, Suppression};
pub use levels::{level_plan, workload_limits, Limits};
