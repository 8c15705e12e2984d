//! Cleanup: groups of workloads tidal manages that have been empty for `remove_empty_after` are
//! removed (the actuator leaves a group alone if a task appeared meanwhile).

use super::state::PolicyState;
use crate::config::Config;
use std::collections::BTreeMap;
use tidal_model::{Action, Cause, Plan, Snapshot, Target};

pub fn decide(
    snap: &Snapshot,
    cfg: &Config,
    prev: &PolicyState,
    st: &mut PolicyState,
    plan: &mut Plan,
) {
    let now = snap.now_ms;
    let mut empty = BTreeMap::new();
    for w in snap
        .workloads
        .iter()
        .filter(|w| w.managed && w.procs == Some(0))
    {
        let Target::Tidal(g) = &w.group else {
            continue;
        };
        let since = prev.empty_since_ms.get(g).copied().unwrap_or(now);
        if now.saturating_sub(since) >= cfg.cleanup.remove_empty_after.0 {
            plan.push(
                Action::remove(
                    g.clone(),
                    format!(
                        "empty for {}s: its workload ended",
                        now.saturating_sub(since) / 1000
                    ),
                )
                .because(Cause::Cleanup),
            );
        } else {
            empty.insert(g.clone(), since);
        }
    }
    st.empty_since_ms = empty;
}
