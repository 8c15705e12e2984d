//! OOM ordering: every workload's tasks get their level's `oom_score_adj` (offline-low 1000,
//! offline 999, online levels lower), so the kernel's OOM killer takes offline work first. A
//! workload gets it when first seen and again each static interval (tasks that joined since: a
//! pod's new containers). Not journalled: the value dies with the task.

use super::state::PolicyState;
use crate::config::Config;
use tidal_model::{Action, Cause, Plan, Snapshot, Target};

pub fn decide(
    snap: &Snapshot,
    cfg: &Config,
    static_due: bool,
    st: &mut PolicyState,
    plan: &mut Plan,
) {
    let live: std::collections::BTreeSet<&Target> =
        snap.workloads.iter().map(|w| &w.group).collect();
    st.oom_set.retain(|t| live.contains(t));
    for w in &snap.workloads {
        let due = static_due || !st.oom_set.contains(&w.group);
        if !due || w.procs == Some(0) {
            continue;
        }
        let v = cfg.memory.oom_score_adj.of(w.level);
        plan.push(
            Action::oom_score_adj(
                w.group.clone(),
                v,
                format!(
                    "{} tasks: the OOM killer takes offline work first (oom_score_adj {v})",
                    w.level
                ),
            )
            .because(Cause::Static),
        );
        st.oom_set.insert(w.group.clone());
    }
}
