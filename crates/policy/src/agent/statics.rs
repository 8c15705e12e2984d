//! Static level settings, re-applied every `static_interval` so changes made behind tidal's back
//! (drift) are repaired.

use super::state::PolicyState;
use crate::config::Config;
use crate::levels::{level_plan, offline_parent_plan};
use tidal_model::{Capabilities, Plan, QosLevel, Snapshot};

/// Adds the level settings when they are due; returns whether they were.
pub fn decide(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    st: &mut PolicyState,
    plan: &mut Plan,
) -> bool {
    let now = snap.now_ms;
    let due = st
        .last_static_ms
        .is_none_or(|t| now.saturating_sub(t) >= cfg.static_interval.0);
    if !due {
        return false;
    }
    st.last_static_ms = Some(now);
    if QosLevel::OFFLINE
        .iter()
        .any(|l| snap.levels_present.contains(l))
    {
        plan.extend(offline_parent_plan(caps));
    }
    let parent = QosLevel::offline_parent();
    for l in QosLevel::ALL {
        if snap.levels_present.contains(&l) {
            let mut lp = level_plan(l, caps);
            // The offline parent was handled once above.
            lp.actions.retain(|a| a.group() != Some(&parent));
            plan.extend(lp);
        }
    }
    true
}
