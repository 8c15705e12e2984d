//! Signals: per-workload measurements that say online work suffers, beside the node's CPU pressure.
//! Each source (a latency objective today, run-queue latency next) adds readings here and one rule in
//! the policy; every signal drives the same interference ladder.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignalKind {
    /// A latency objective's slack: (target − observed quantile) / target.
    Slo,
    /// Run-queue latency of a workload's tasks (eBPF).
    RunqLatency,
}

/// One reading of one signal for one online workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub kind: SignalKind,
    /// The workload (or objective) it speaks for.
    pub workload: String,
    /// What was measured, as a reason quotes it (`p99 of http_request_duration_seconds`).
    pub what: String,
    /// The observed value and its target, in seconds.
    pub observed: f64,
    pub target: f64,
    /// (target − observed) / target: below 0 the objective is missed.
    pub slack: f64,
    /// How old the reading is, for one renewed less often than every tick (None: of this tick).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_ms: Option<u64>,
}

impl Signal {
    pub fn slack_of(observed: f64, target: f64) -> f64 {
        if target > 0.0 && observed.is_finite() {
            (target - observed) / target
        } else {
            0.0
        }
    }
}
