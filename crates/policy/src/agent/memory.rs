//! Memory: when MemAvailable falls below the watermark, or offline holds more than its memory
//! ceiling (a v1 limit cannot be lowered below what it holds), the largest `offline-low` workload
//! goes (else the largest `offline` one). Only workloads with tasks and a fresh working-set reading are
//! candidates, and online work never is. A workload tidal manages is killed, at most one per
//! `memory.kill_interval`; a pod is evicted through the apiserver (so PodDisruptionBudgets hold), at
//! most one per `kubernetes.eviction_interval`, never one already terminating nor a node daemon (a
//! DaemonSet's pod comes straight back); one whose eviction a disruption budget refused a moment
//! ago gives way to the next.

use super::state::PolicyState;
use crate::config::Config;
use tidal_model::{Action, Cause, Plan, QosLevel, Snapshot, Target, WorkloadSnapshot};

/// The workload to let go: lowest level first, then the largest fresh working set.
pub fn victim(snap: &Snapshot) -> Option<(&WorkloadSnapshot, u64)> {
    [QosLevel::OfflineLow, QosLevel::Offline]
        .iter()
        .find_map(|l| {
            snap.workloads
                .iter()
                .filter(|w| w.level == *l && w.procs.is_some_and(|p| p > 0))
                .filter(|w| match (&w.group, &w.pod) {
                    (Target::Tidal(_), _) => w.managed,
                    (Target::Foreign(_), Some(p)) => {
                        !p.terminating && !p.node_daemon && !p.eviction_refused
                    }
                    (Target::Foreign(_), None) => false,
                })
                .filter_map(|w| w.memory_bytes.map(|m| (w, m)))
                .max_by(|(a, ma), (b, mb)| ma.cmp(mb).then_with(|| a.group.cmp(&b.group)))
        })
}

pub fn decide(snap: &Snapshot, cfg: &Config, st: &mut PolicyState, plan: &mut Plan) {
    let now = snap.now_ms;
    let (Some(total), Some(avail)) = (snap.mem_total_bytes, snap.mem_available_bytes) else {
        return;
    };
    let mark = cfg.low_watermark(total);
    // Offline holding more than its ceiling (a v1 limit cannot be set below what it holds) is
    // evicted down to it, as a short node is.
    let over_ceiling = match (st.ceiling, snap.offline_memory_bytes) {
        (Some(c), Some(u)) if u > c.saturating_add(c / 10) => Some((u, c)),
        _ => None,
    };
    if total == 0 || (avail >= mark && over_ceiling.is_none()) {
        return;
    }
    let Some((v, mem)) = victim(snap) else {
        return;
    };
    let why = |what: &str| match over_ceiling {
        Some((u, c)) if avail >= mark => format!(
            "offline holds {} MiB over its {} MiB memory ceiling: largest {} {what} ({} MiB)",
            u >> 20,
            c >> 20,
            v.level,
            mem >> 20
        ),
        _ => format!(
            "node MemAvailable {} MiB below watermark {} MiB: largest {} {what} ({} MiB)",
            avail >> 20,
            mark >> 20,
            v.level,
            mem >> 20
        ),
    };
    let since = |t: Option<u64>, every: u64| t.is_none_or(|t| now.saturating_sub(t) >= every);
    match (&v.group, &v.pod) {
        (Target::Tidal(g), _) => {
            if since(st.last_kill_ms, cfg.memory.kill_interval.0) {
                st.last_kill_ms = Some(now);
                plan.push(Action::kill(g.clone(), why("workload")).because(Cause::Memory));
            }
        }
        (Target::Foreign(g), Some(p)) => {
            if since(st.last_evict_ms, cfg.kubernetes.eviction_interval.0) {
                st.last_evict_ms = Some(now);
                plan.push(
                    Action::evict(p.pod.clone(), g.clone(), why("pod")).because(Cause::Memory),
                );
            }
        }
        (Target::Foreign(_), None) => {}
    }
}
