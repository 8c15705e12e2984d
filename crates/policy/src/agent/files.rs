//! Open files: upstream kernels have no cgroup that limits file handles (openEuler's `files`
//! controller does), so tidal counts each workload's open descriptors and holds offline levels to a
//! configured ceiling: a workload over it is named in the policy state (the agent logs it once and
//! exports it) and, with `files.stop`, frozen (tidal's own workloads; pods are only reported).

use super::state::PolicyState;
use crate::config::Config;
use tidal_model::{Action, Capabilities, Cause, Knob, KnobValue, Plan, QosLevel, Snapshot};

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
        let ceiling = match w.level {
            QosLevel::Offline => f.offline_max,
            QosLevel::OfflineLow => f.offline_low_max,
            _ => None,
        };
        let (Some(max), Some(n)) = (ceiling, w.open_files) else {
            continue;
        };
        if n <= max {
            continue;
        }
        over.insert(w.name.clone(), n);
        let new = !st.files_over.contains_key(&w.name);
        if f.stop && new && w.managed && caps.has(Knob::Freeze) {
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
    use tidal_model::{Op, Target, WorkloadSnapshot};

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
    fn offline_workloads_over_their_ceiling_are_named_and_with_stop_frozen_once() {
        let mut cfg = Config::default();
        cfg.files.offline_max = Some(100);
        cfg.files.offline_low_max = Some(10);
        cfg.files.stop = true;
        let caps = Capabilities::full(2);
        let snap = Snapshot {
            workloads: vec![
                w(QosLevel::Offline, "many", Some(101), true),
                w(QosLevel::Offline, "fine", Some(100), true),
                w(QosLevel::OfflineLow, "low", Some(11), true),
                // A pod is reported, never frozen by this rule.
                w(QosLevel::Offline, "pod", Some(1000), false),
                // Online work has no ceiling; an unread count is not 0 and not over.
                w(QosLevel::OnlineCritical, "db", Some(1 << 20), true),
                w(QosLevel::Offline, "unread", None, true),
            ],
            ..Default::default()
        };
        let mut st = PolicyState::default();
        let mut p = Plan::default();
        decide(&snap, &cfg, &caps, &mut st, &mut p);
        let over: Vec<&str> = st.files_over.keys().map(String::as_str).collect();
        assert_eq!(over, vec!["low", "many", "pod"]);
        assert_eq!(
            frozen(&p),
            vec!["offline/offline/many", "offline/offline-low/low"]
        );
        assert!(p.actions.iter().all(|a| a.reason.contains("open files")));
        // Still over: named again, not frozen again.
        let mut p = Plan::default();
        decide(&snap, &cfg, &caps, &mut st, &mut p);
        assert!(p.actions.is_empty());
        assert_eq!(st.files_over.len(), 3);
        // Without `stop`: named, never frozen.
        cfg.files.stop = false;
        let mut st = PolicyState::default();
        let mut p = Plan::default();
        decide(&snap, &cfg, &caps, &mut st, &mut p);
        assert!(p.actions.is_empty());
        assert_eq!(st.files_over.len(), 3);
    }
}
