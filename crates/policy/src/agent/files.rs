//! Open files: upstream kernels have no cgroup that limits file handles (openEuler's `files`
//! controller does), so tidal counts each workload's open descriptors and holds each level to its
//! configured ceiling: a workload over it is named in the policy state by its group (the agent logs
//! it once and exports it) and, with `files.stop`, frozen if it is tidal's own offline work (pods
//! and online work are only reported).

use super::state::PolicyState;
use crate::config::Config;
use tidal_model::{Action, Capabilities, Cause, Knob, KnobValue, Plan, Snapshot};

pub fn decide(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    st: &mut PolicyState,
    plan: &mut Plan,
) {
    let f = &cfg.files;
    let mut over = std::collections::BTreeMap::new();
    for w in &snap.workloads {
        let (Some(max), Some(n)) = (f.max_of(w.level).0, w.open_files) else {
            continue;
        };
        if n <= max {
            continue;
        }
        let key = w.group.to_string();
        let new = !st.files_over.contains_key(&key);
        over.insert(key, n);
        if f.stop && new && w.managed && !w.level.is_online() && caps.has(Knob::Freeze) {
            plan.push(
                Action::set(
                    w.group.clone(),
                    Knob::Freeze,
                    KnobValue::Bool(true),
                    format!(
                        "{} holds {n} open files, over the {} ceiling of {max}: stopped",
                        w.name, w.level
                    ),
                )
                .because(Cause::Memory),
            );
        }
    }
    st.files_over = over;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::{Op, QosLevel, Target, WorkloadSnapshot};

    fn w(level: QosLevel, name: &str, open: Option<u64>, managed: bool) -> WorkloadSnapshot {
        WorkloadSnapshot {
            managed,
            open_files: open,
            ..WorkloadSnapshot::unread(
                Target::Tidal(level.group_path().join(name).unwrap()),
                level,
                name,
            )
        }
    }

    fn frozen(p: &Plan) -> Vec<String> {
        p.actions
            .iter()
            .filter_map(|a| match &a.op {
                Op::Set {
                    target,
                    knob: Knob::Freeze,
                    value: KnobValue::Bool(true),
                } => Some(target.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn workloads_over_their_level_s_ceiling_are_named_and_with_stop_offline_frozen_once() {
        let mut cfg = Config::default();
        cfg.files.offline_max = Some(100);
        cfg.files.offline_low_max = Some(10);
        cfg.files.online_max = Some(1000);
        cfg.files.stop = true;
        let caps = Capabilities::full(2);
        let snap = Snapshot {
            workloads: vec![
                w(QosLevel::Offline, "many", Some(101), true),
                w(QosLevel::Offline, "fine", Some(100), true),
                w(QosLevel::OfflineLow, "low", Some(11), true),
                // A pod is reported, never frozen by this rule.
                w(QosLevel::Offline, "pod", Some(1000), false),
                // No ceiling for online-critical here; online's is named, never frozen; the same
                // name at two levels is two workloads.
                w(QosLevel::OnlineCritical, "db", Some(1 << 20), true),
                w(QosLevel::Online, "many", Some(1001), true),
                // An unread count is not 0 and not over.
                w(QosLevel::Offline, "unread", None, true),
            ],
            ..Default::default()
        };
        let mut st = PolicyState::default();
        let mut p = Plan::default();
        decide(&snap, &cfg, &caps, &mut st, &mut p);
        let over: Vec<&str> = st.files_over.keys().map(String::as_str).collect();
        assert_eq!(
            over,
            vec![
                "offline/offline-low/low",
                "offline/offline/many",
                "offline/offline/pod",
                "online/many"
            ]
        );
        assert_eq!(
            frozen(&p),
            vec!["offline/offline/many", "offline/offline-low/low"]
        );
        assert!(p.actions.iter().all(|a| a.reason.contains("open files")));
        // Still over: named again, not frozen again.
        let mut p = Plan::default();
        decide(&snap, &cfg, &caps, &mut st, &mut p);
        assert!(p.actions.is_empty());
        assert_eq!(st.files_over.len(), 4);
        // Without `stop`: named, never frozen.
        cfg.files.stop = false;
        let mut st = PolicyState::default();
        let mut p = Plan::default();
        decide(&snap, &cfg, &caps, &mut st, &mut p);
        assert!(p.actions.is_empty());
        assert_eq!(st.files_over.len(), 4);
    }
}
