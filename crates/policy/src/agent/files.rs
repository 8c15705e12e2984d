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
