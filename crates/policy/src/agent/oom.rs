//! OOM ordering: every workload's tasks get their level's `oom_score_adj` (offline-low 1000,
//! offline 999, online levels lower), so the kernel's OOM killer takes offline work first. A
//! workload gets it when first seen, again as soon as its task count passes the count it had when
//! last set (a pod's new container, a task moved in), and each static interval (tasks that replaced
//! others). Tasks a workload forks inherit its value, so a count that falls and rises again (a
//! build's short-lived processes) triggers nothing before the static interval. The list and its
//! task counts change only when the list is read (each `stats_interval`): that is when they are
//! looked at, and when a write that failed is tried again. Not journalled: the value dies with the
//! task.

use super::state::PolicyState;
use crate::config::Config;
use std::sync::Arc;
use tidal_model::{Action, Cause, Plan, Snapshot, Target};

pub fn decide(
    snap: &Snapshot,
    cfg: &Config,
    static_due: bool,
    new_list: bool,
    st: &mut PolicyState,
    plan: &mut Plan,
) {
    if !static_due && !new_list {
        return;
    }
    // Entries of workloads that went away are dropped, but the set of live groups is built only
    // when some entry was not met among the workloads (one per group): most ticks nothing went.
    // New entries join after the count.
    let known = st.oom_set.len();
    let mut met = 0;
    let mut added = Vec::new();
    for w in &snap.workloads {
        let grew = match (w.procs, st.oom_tasks.get(&w.group)) {
            (Some(n), Some(was)) => n > *was,
            _ => false,
        };
        let set = st.oom_set.contains(&w.group);
        met += usize::from(set);
        let due = static_due || grew || !set;
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
        if !set {
            added.push(w.group.clone());
        }
        // The shared maps are copied only where they change.
        match w.procs {
            Some(n) if st.oom_tasks.get(&w.group) != Some(&n) => {
                Arc::make_mut(&mut st.oom_tasks).insert(w.group.clone(), n);
            }
            None if st.oom_tasks.contains_key(&w.group) => {
                Arc::make_mut(&mut st.oom_tasks).remove(&w.group);
            }
            _ => {}
        }
    }
    if met < known {
        let live: std::collections::BTreeSet<&Target> =
            snap.workloads.iter().map(|w| &w.group).collect();
        Arc::make_mut(&mut st.oom_set).retain(|t| live.contains(t));
        Arc::make_mut(&mut st.oom_tasks).retain(|t, _| live.contains(t));
    }
    if !added.is_empty() {
        Arc::make_mut(&mut st.oom_set).extend(added);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::{Op, QosLevel, WorkloadSnapshot};

    fn snap(procs: Option<usize>) -> Snapshot {
        let level = QosLevel::Offline;
        Snapshot {
            workloads: vec![WorkloadSnapshot {
                procs,
                ..WorkloadSnapshot::unread(
                    Target::Tidal(level.group_path().join("job").unwrap()),
                    level,
                    "job",
                )
            }],
            ..Default::default()
        }
    }

    fn set(procs: Option<usize>, static_due: bool, st: &mut PolicyState) -> Vec<i32> {
        let mut p = Plan::default();
        decide(
            &snap(procs),
            &Config::default(),
            static_due,
            true,
            st,
            &mut p,
        );
        p.actions
            .iter()
            .filter_map(|a| match a.op {
                Op::OomScoreAdj { value, .. } => Some(value),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_workload_s_tasks_are_set_when_first_seen_when_their_count_passes_the_last_set_and_each_static_pass(
    ) {
        let mut st = PolicyState::default();
        assert_eq!(set(Some(2), false, &mut st), vec![999], "first seen");
        assert!(set(Some(2), false, &mut st).is_empty(), "same tasks");
        assert_eq!(set(Some(3), false, &mut st), vec![999], "a task joined");
        // Fewer tasks need nothing; growing back to the count last set is forks, which inherit.
        assert!(set(Some(1), false, &mut st).is_empty(), "a task left");
        assert!(set(Some(3), false, &mut st).is_empty(), "back to the count");
        assert_eq!(set(Some(4), false, &mut st), vec![999], "past it");
        // An unread count is not growth; the static pass covers tasks replaced at one count.
        assert!(set(None, false, &mut st).is_empty(), "count unread");
        assert_eq!(set(Some(2), true, &mut st), vec![999], "static pass");
        // The static pass set the baseline to what it found.
        assert_eq!(
            set(Some(3), false, &mut st),
            vec![999],
            "past the new count"
        );
        // An empty group has no tasks to set.
        assert!(set(Some(0), true, &mut st).is_empty(), "no tasks");
        // A workload that went away is forgotten, and set again when it comes back.
        let mut p = Plan::default();
        decide(
            &Snapshot::default(),
            &Config::default(),
            false,
            true,
            &mut st,
            &mut p,
        );
        assert!(st.oom_set.is_empty() && st.oom_tasks.is_empty());
        assert_eq!(set(Some(1), false, &mut st), vec![999], "back");
        // One workload replaced by another at the same count: the one gone is forgotten.
        let mut other = snap(Some(1));
        other.workloads[0].group =
            Target::Tidal(QosLevel::Offline.group_path().join("other").unwrap());
        let mut p = Plan::default();
        decide(&other, &Config::default(), false, true, &mut st, &mut p);
        assert_eq!(p.actions.len(), 1, "the new one is set");
        assert_eq!(
            st.oom_set.iter().collect::<Vec<_>>(),
            vec![&other.workloads[0].group]
        );
        assert_eq!(st.oom_tasks.len(), 1);
    }

    #[test]
    fn the_workloads_are_looked_at_with_each_reading_of_them_and_each_static_pass() {
        // Through the whole policy: a tick between readings (the same `workloads_seq`) does not
        // look, and neither journals the originals ahead again.
        let cfg = Config::default();
        let caps = tidal_model::Capabilities::full(2);
        let mut st = PolicyState {
            last_static_ms: Some(0),
            ..PolicyState::default()
        };
        let run = |seq, now_ms, st: &mut PolicyState| {
            let mut s = snap(Some(2));
            s.workloads_seq = seq;
            s.now_ms = now_ms;
            s.levels_present = [QosLevel::Offline].into();
            let d = crate::agent::decide(&s, &cfg, &caps, st);
            *st = d.state;
            // Forget the set, so any look at the list sets it again.
            Arc::make_mut(&mut st.oom_set).clear();
            let oom = d
                .plan
                .actions
                .iter()
                .filter(|a| matches!(a.op, Op::OomScoreAdj { .. }))
                .count();
            (oom, !d.plan.remember.is_empty())
        };
        assert_eq!(run(Some(1), 100, &mut st), (1, true), "a reading");
        assert_eq!(run(Some(1), 200, &mut st), (0, false), "the same reading");
        assert_eq!(run(Some(2), 300, &mut st), (1, true), "the next reading");
        let static_ms = cfg.static_interval.0 + 1;
        assert_eq!(run(Some(2), static_ms, &mut st).0, 1, "the static pass");
        // A reader that does not count its readings: every tick looks.
        assert_eq!(run(None, static_ms + 100, &mut st), (1, true));
        assert_eq!(run(None, static_ms + 200, &mut st), (1, true));
    }
}
