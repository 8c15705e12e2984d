//! Memory: when MemAvailable falls below the watermark, the largest `offline-low` workload is killed
//! (else the largest `offline` one), at most one per `kill_interval`. Only workloads tidal manages,
//! with tasks and a fresh working-set reading, are candidates; online work never is.

use super::state::PolicyState;
use crate::config::Config;
use tidal_model::{Action, Cause, Plan, QosLevel, Snapshot, Target};

pub fn decide(snap: &Snapshot, cfg: &Config, st: &mut PolicyState, plan: &mut Plan) {
    let now = snap.now_ms;
    let (Some(total), Some(avail)) = (snap.mem_total_bytes, snap.mem_available_bytes) else {
        return;
    };
    let mark = cfg.low_watermark(total);
    if total == 0 || avail >= mark {
        return;
    }
    let may = st
        .last_kill_ms
        .is_none_or(|t| now.saturating_sub(t) >= cfg.memory.kill_interval.0);
    if !may {
        return;
    }
    let victim = [QosLevel::OfflineLow, QosLevel::Offline]
        .iter()
        .find_map(|l| {
            snap.workloads
                .iter()
                .filter(|w| w.level == *l && w.managed && w.procs.is_some_and(|p| p > 0))
                .filter_map(|w| match (&w.group, w.memory_bytes) {
                    (Target::Tidal(g), Some(m)) => Some((m, g, w)),
                    _ => None,
                })
                .max_by_key(|(m, g, _)| (*m, (*g).clone()))
        });
    if let Some((mem, g, v)) = victim {
        st.last_kill_ms = Some(now);
        plan.push(
            Action::kill(
                g.clone(),
                format!(
                    "node MemAvailable {} MiB below watermark {} MiB: largest {} workload ({} MiB)",
                    avail >> 20,
                    mark >> 20,
                    v.level,
                    mem >> 20
                ),
            )
            .because(Cause::Memory),
        );
    }
}
