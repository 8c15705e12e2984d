//! Workload sources: where tidal learns which workloads exist, at which level, where their cgroups
//! are, and whether tidal may create, move into, freeze, kill or remove them. Every source implements
//! [`WorkloadSource`]; the snapshot collector and the agent take the trait. The local source reads the
//! tidal tree itself (a workload's level is where its group is), so workloads started by `tidal run`
//! are found as they appear and disappear, and a restarted agent adopts the tree as it is.

pub mod local;

pub use local::LocalSource;

use std::collections::BTreeSet;
use std::path::PathBuf;
use tidal_cgroupfs::{CgroupError, Layout};
use tidal_model::{KubeletFacts, PodInfo, PodRef, QosLevel, Target};

/// One workload as a source knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRef {
    /// Its group: under the tidal root (local workloads), or in another manager's tree (pods).
    pub group: Target,
    pub level: QosLevel,
    pub name: String,
    /// Tidal may create, move tasks into, freeze, kill and remove this group. Pods: never; tidal
    /// only sets values on them.
    pub managed: bool,
    /// The pod, for a workload that is one.
    pub pod: Option<PodInfo>,
}

impl WorkloadRef {
    /// The workload's cgroup directory in each hierarchy tidal uses (the same relative path in each:
    /// under the tidal root, or under each mount for another manager's tree).
    pub fn dirs(&self, layout: &Layout) -> Vec<PathBuf> {
        layout.target_dirs(&self.group)
    }
}

/// What a source knows at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// Level groups that exist under the tidal root.
    pub levels_present: BTreeSet<QosLevel>,
    pub workloads: Vec<WorkloadRef>,
    /// The kubelet's facts, for a source of pods.
    pub kubelet: Option<KubeletFacts>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("{source_name}: {reason}")]
    Other {
        source_name: &'static str,
        reason: String,
    },
}

/// A source of workloads.
pub trait WorkloadSource: Send {
    /// A short name for logs and `/state` ("local", "kubernetes").
    fn name(&self) -> &'static str;
    /// Which workloads exist now. A source that cannot answer says why; the caller keeps its last
    /// answer rather than taking silence for an empty node.
    fn scan(&mut self) -> Result<Inventory, SourceError>;
    /// Whether the per-workload statistics (usage, memory) are needed at every refresh, not only
    /// when someone looks (a source that publishes capacity from them).
    fn wants_usage(&self) -> bool {
        false
    }
    /// Asks the workload's manager to evict a pod. Sources without pods refuse.
    fn evict(
        &mut self,
        pod: &PodRef,
        reason: &str,
        dry_run: bool,
    ) -> Result<Eviction, SourceError> {
        let _ = (reason, dry_run);
        Err(SourceError::Other {
            source_name: self.name(),
            reason: format!("cannot evict pod {pod}: this source has no pods"),
        })
    }
    /// Sees each consistent snapshot after a tick (a pod source publishes batch resources from it).
    fn observe(&mut self, snap: &tidal_model::Snapshot, dry_run: bool) {
        let _ = (snap, dry_run);
    }
    /// How the source is doing, for `/healthz`, `/state` and `tidal status`.
    fn health(&self) -> SourceHealth {
        SourceHealth::default()
    }
}

/// What happened to an eviction request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// Sent; the result comes later (a refusal is logged and counted, and the policy asks again
    /// after its interval).
    Requested,
    /// Dry run: logged only.
    Logged,
}

/// A source's state, as `/healthz` and `/state` show it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceHealth {
    /// The source's view may be stale (the apiserver is unreachable): tidal keeps enforcing the last
    /// known state.
    pub degraded: bool,
    /// Why, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Source-specific figures (the batch-resource formula with its numbers).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub report: serde_json::Value,
    /// Counts by event (evictions, refusals, patch conflicts, watch errors…), for `/metrics`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Values by name (each input of the batch formula), for `/metrics`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub gauges: std::collections::BTreeMap<String, f64>,
}

/// Two sources as one: tidal's own tree and another manager's workloads (pods). The tidal tree's
/// levels and the other's node facts are kept; pod requests (evictions, publishing) go to the
/// other source. If one cannot answer, the other's answer still counts, with the failing one's
/// last answer kept.
pub struct Combined {
    local: Box<dyn WorkloadSource>,
    other: Box<dyn WorkloadSource>,
    last_local: Inventory,
    last_other: Inventory,
}

impl Combined {
    pub fn new(local: Box<dyn WorkloadSource>, other: Box<dyn WorkloadSource>) -> Combined {
        Combined {
            local,
            other,
            last_local: Inventory::default(),
            last_other: Inventory::default(),
        }
    }
}

impl WorkloadSource for Combined {
    fn name(&self) -> &'static str {
        self.other.name()
    }

    /// Fails only if neither part answers; a part that fails keeps its last answer (the other
    /// source reports its own state through [`WorkloadSource::health`]).
    fn scan(&mut self) -> Result<Inventory, SourceError> {
        let local = self.local.scan();
        let other = self.other.scan();
        match (local, other) {
            (Err(e), Err(_)) => return Err(e),
            (Ok(l), Ok(o)) => {
                self.last_local = l;
                self.last_other = o;
            }
            (Ok(l), Err(_)) => self.last_local = l,
            (Err(_), Ok(o)) => self.last_other = o,
        }
        Ok(self.merged())
    }

    fn wants_usage(&self) -> bool {
        self.local.wants_usage() || self.other.wants_usage()
    }

    fn evict(
        &mut self,
        pod: &PodRef,
        reason: &str,
        dry_run: bool,
    ) -> Result<Eviction, SourceError> {
        self.other.evict(pod, reason, dry_run)
    }

    fn observe(&mut self, snap: &tidal_model::Snapshot, dry_run: bool) {
        self.local.observe(snap, dry_run);
        self.other.observe(snap, dry_run);
    }

    fn health(&self) -> SourceHealth {
        self.other.health()
    }
}

impl Combined {
    fn merged(&self) -> Inventory {
        let mut out = self.last_local.clone();
        out.workloads
            .extend(self.last_other.workloads.iter().cloned());
        out.kubelet = self.last_other.kubelet.clone().or(out.kubelet);
        out
    }
}
