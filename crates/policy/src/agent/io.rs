//! IO limits for offline work (`io.offline_max`, `io.offline_low_max`), per device. On cgroup v2 on
//! the offline parent (all offline work together) and on `offline-low`; v1 throttling is flat (a
//! group's limit binds its own tasks only), so there each offline workload gets them. Offline pods
//! get them on the pod group (v1: on each container). Re-set with the level settings, and at once
//! when the config's limits change, so a limit taken out of the config is lifted at the next tick
//! (offline pods': at their next static interval). A v1 workload's limits that did not take are
//! tried again with the next reading of the workload list (each `stats_interval`).

use super::state::PolicyState;
use crate::config::io::IoLimits;
use crate::config::Config;
use std::collections::BTreeSet;
use std::sync::Arc;
use tidal_model::{
    Action, Capabilities, DevNum, GroupPath, Knob, KnobValue, Plan, QosLevel, Snapshot, Target,
};

/// The devices limits apply to: the config's, else the node's real block devices.
pub fn devices<'a>(snap: &'a Snapshot, cfg: &'a Config) -> &'a [DevNum] {
    if cfg.io.devices.is_empty() {
        &snap.block_devices
    } else {
        &cfg.io.devices
    }
}

/// `limits` on every device, as one value (unset limits lift the device's).
pub fn value(limits: &IoLimits, devs: &[DevNum]) -> KnobValue {
    KnobValue::IoMax(devs.iter().map(|d| limits.on(*d)).collect())
}

fn reason(field: &str, who: &str, limits: &IoLimits, devs: &[DevNum]) -> String {
    if !limits.is_set() {
        return format!("{who}: no IO limit (io.{field} unset)");
    }
    let list = devs
        .iter()
        .map(DevNum::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let v = |x: Option<u64>| x.map_or_else(|| "max".to_string(), |n| n.to_string());
    format!(
        "io.{field}: {who} limited to read {} B/s, write {} B/s, {} read IO/s, {} write IO/s on [{list}]",
        v(limits.read_bps),
        v(limits.write_bps),
        v(limits.read_iops),
        v(limits.write_iops),
    )
}

/// The limits of an offline level: `offline-low` takes `offline_low_max` where it is set.
fn of_level(cfg: &Config, level: QosLevel) -> (&'static str, &IoLimits) {
    if level == QosLevel::OfflineLow && cfg.io.offline_low_max.is_set() {
        ("offline_low_max", &cfg.io.offline_low_max)
    } else {
        ("offline_max", &cfg.io.offline_max)
    }
}

/// tidal's offline groups' limits. v2: on the offline parent and `offline-low`, with the static
/// settings, and at once for a new offline level or new limits. v1 throttling is flat (a limit
/// does not reach child groups): on each offline workload's group, at once for a new one and when
/// the limits change; again with the static settings where its level has limits.
pub fn decide(
    snap: &Snapshot,
    cfg: &Config,
    caps: &Capabilities,
    static_due: bool,
    new_list: bool,
    st: &mut PolicyState,
    plan: &mut Plan,
) {
    if !caps.has(Knob::IoMax) {
        return;
    }
    let devs = devices(snap, cfg);
    let limits = (cfg.io.offline_max, cfg.io.offline_low_max);
    let changed = st.io_config != Some(limits);
    st.io_config = Some(limits);
    if !caps.io_flat {
        let present: BTreeSet<QosLevel> = QosLevel::OFFLINE
            .into_iter()
            .filter(|l| snap.levels_present.contains(l))
            .collect();
        let new_level = !present.is_subset(&st.io_levels);
        st.io_levels = present;
        if !static_due && !new_level && !changed {
            return;
        }
        if !st.io_levels.is_empty() {
            plan.push(Action::set(
                Target::Tidal(QosLevel::offline_parent()),
                Knob::IoMax,
                value(&cfg.io.offline_max, devs),
                reason("offline_max", "offline work", &cfg.io.offline_max, devs),
            ));
        }
        if snap.levels_present.contains(&QosLevel::OfflineLow) {
            plan.push(Action::set(
                Target::Tidal(QosLevel::OfflineLow.group_path()),
                Knob::IoMax,
                value(&cfg.io.offline_low_max, devs),
                reason(
                    "offline_low_max",
                    "offline-low",
                    &cfg.io.offline_low_max,
                    devs,
                ),
            ));
        }
        return;
    }
    if !static_due && !changed && !new_list {
        return;
    }
    // Workloads gone are dropped, but the set of offline groups is built only when one it knows
    // was not met (one workload per group): most ticks nothing went. New ones join after the count.
    let known = st.io_limited.len();
    let mut met = 0;
    let mut added = Vec::new();
    for w in &snap.workloads {
        let (Target::Tidal(g), None) = (&w.group, &w.pod) else {
            continue;
        };
        if w.level.is_online() {
            continue;
        }
        let limited = st.io_limited.contains(g);
        met += usize::from(limited);
        let (field, l) = of_level(cfg, w.level);
        // No limit to keep: nothing to repair at the static pass (a file read per device and
        // field of each workload).
        if changed || !limited || (static_due && l.is_set()) {
            plan.push(Action::set(
                w.group.clone(),
                Knob::IoMax,
                value(l, devs),
                reason(field, &format!("{} (v1: per workload)", w.name), l, devs),
            ));
        }
        if !limited {
            added.push(g.clone());
        }
    }
    if met < known {
        let offline: BTreeSet<&GroupPath> = snap
            .workloads
            .iter()
            .filter(|w| w.pod.is_none() && !w.level.is_online())
            .filter_map(|w| w.group.tidal())
            .collect();
        Arc::make_mut(&mut st.io_limited).retain(|g| offline.contains(g));
    }
    if !added.is_empty() {
        Arc::make_mut(&mut st.io_limited).extend(added);
    }
}

/// One offline pod's (or, on v1, container's) limits.
pub fn pod(snap: &Snapshot, cfg: &Config, level: QosLevel, target: Target, name: &str) -> Action {
    let devs = devices(snap, cfg);
    let (field, l) = of_level(cfg, level);
    Action::set(
        target,
        Knob::IoMax,
        value(l, devs),
        reason(field, &format!("offline pod {name}"), l, devs),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::{IoLimit, Op};

    fn snap_with(levels: &[QosLevel]) -> Snapshot {
        Snapshot {
            levels_present: levels.iter().copied().collect(),
            block_devices: vec!["254:0".parse().unwrap(), "8:0".parse().unwrap()],
            ..Default::default()
        }
    }

    fn io_sets(p: &Plan) -> Vec<(String, Vec<IoLimit>)> {
        p.actions
            .iter()
            .filter_map(|a| match &a.op {
                Op::Set {
                    target,
                    knob: Knob::IoMax,
                    value: KnobValue::IoMax(v),
                } => Some((target.to_string(), v.clone())),
                _ => None,
            })
            .collect()
    }

    fn run(
        snap: &Snapshot,
        cfg: &Config,
        caps: &Capabilities,
        due: bool,
        st: &mut PolicyState,
    ) -> Plan {
        let mut p = Plan::default();
        let new_list = crate::agent::new_list(snap, st);
        st.workloads_seq = snap.workloads_seq;
        decide(snap, cfg, caps, due, new_list, st, &mut p);
        p
    }

    #[test]
    fn configured_limits_go_on_every_real_device_of_the_offline_groups() {
        let mut cfg = Config::default();
        cfg.io.offline_max.write_bps = Some(10 << 20);
        let caps = Capabilities::full(2);
        let mut st = PolicyState::default();
        let p = run(
            &snap_with(&[QosLevel::Offline, QosLevel::OfflineLow]),
            &cfg,
            &caps,
            true,
            &mut st,
        );
        let sets = io_sets(&p);
        assert_eq!(sets.len(), 2, "{sets:?}");
        assert_eq!(sets[0].0, "offline");
        assert_eq!(sets[0].1.len(), 2);
        assert!(sets[0]
            .1
            .iter()
            .all(|l| l.wbps == Some(10 << 20) && l.rbps.is_none()));
        // offline-low has no limit of its own: its devices are lifted (nothing written if none set).
        assert!(sets[1].1.iter().all(IoLimit::is_unlimited));
        // Only with the static settings.
        assert!(run(
            &snap_with(&[QosLevel::Offline]),
            &cfg,
            &caps,
            false,
            &mut st
        )
        .actions
        .is_empty());
        // Or at once when the limits change (a config reload): a limit taken out is lifted.
        cfg.io.offline_max.write_bps = None;
        let sets = io_sets(&run(
            &snap_with(&[QosLevel::Offline]),
            &cfg,
            &caps,
            false,
            &mut st,
        ));
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert!(sets[0].1.iter().all(IoLimit::is_unlimited));
        cfg.io.offline_max.write_bps = Some(10 << 20);
        // The config's devices replace the detected ones.
        cfg.io.devices = vec!["9:1".parse().unwrap()];
        let p = run(&snap_with(&[QosLevel::Offline]), &cfg, &caps, true, &mut st);
        assert_eq!(
            io_sets(&p)[0]
                .1
                .iter()
                .map(|l| l.dev.to_string())
                .collect::<Vec<_>>(),
            ["9:1"]
        );
        // No offline level, or no io.max here: nothing.
        assert!(
            run(&snap_with(&[QosLevel::Online]), &cfg, &caps, true, &mut st)
                .actions
                .is_empty()
        );
        let mut caps = caps;
        caps.knobs.remove(&Knob::IoMax);
        assert!(
            run(&snap_with(&[QosLevel::Offline]), &cfg, &caps, true, &mut st)
                .actions
                .is_empty()
        );
    }

    #[test]
    fn v1_flat_throttling_limits_each_offline_workload_at_once_when_new() {
        let mut cfg = Config::default();
        cfg.io.offline_max.read_bps = Some(1 << 20);
        cfg.io.offline_low_max.read_iops = Some(50);
        let mut caps = Capabilities::full(2);
        caps.io_flat = true;
        let wl = |level: QosLevel, name: &str| tidal_model::WorkloadSnapshot {
            managed: true,
            procs: Some(1),
            ..tidal_model::WorkloadSnapshot::unread(
                Target::Tidal(level.group_path().join(name).unwrap()),
                level,
                format!("{}/{name}", level.group()),
            )
        };
        let mut snap = snap_with(&[QosLevel::Offline, QosLevel::OfflineLow, QosLevel::Online]);
        snap.workloads = vec![wl(QosLevel::Offline, "a"), wl(QosLevel::Online, "web")];
        let mut st = PolicyState::default();
        let sets = io_sets(&run(&snap, &cfg, &caps, false, &mut st));
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert_eq!(sets[0].0, "offline/offline/a");
        assert!(sets[0].1.iter().all(|l| l.rbps == Some(1 << 20)));
        // Known now: not again until the static settings; a new one at once, with its level's.
        assert!(run(&snap, &cfg, &caps, false, &mut st).actions.is_empty());
        snap.workloads.push(wl(QosLevel::OfflineLow, "b"));
        let sets = io_sets(&run(&snap, &cfg, &caps, false, &mut st));
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert!(sets[0]
            .1
            .iter()
            .all(|l| l.riops == Some(50) && l.rbps.is_none()));
        assert_eq!(io_sets(&run(&snap, &cfg, &caps, true, &mut st)).len(), 2);
        // One gone is forgotten (and limited at once when it comes back).
        let a = snap.workloads.remove(0);
        assert!(run(&snap, &cfg, &caps, false, &mut st).actions.is_empty());
        assert_eq!(st.io_limited.len(), 1, "{:?}", st.io_limited);
        snap.workloads.push(a);
        let sets = io_sets(&run(&snap, &cfg, &caps, false, &mut st));
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert_eq!(sets[0].0, "offline/offline/a");
        // Between readings of the workload list (the same `workloads_seq`) nothing is looked at;
        // the next reading or the static settings are.
        snap.workloads_seq = Some(7);
        Arc::make_mut(&mut st.io_limited).clear();
        assert_eq!(io_sets(&run(&snap, &cfg, &caps, false, &mut st)).len(), 2);
        Arc::make_mut(&mut st.io_limited).clear();
        assert!(run(&snap, &cfg, &caps, false, &mut st).actions.is_empty());
        assert_eq!(io_sets(&run(&snap, &cfg, &caps, true, &mut st)).len(), 2);
        snap.workloads_seq = Some(8);
        Arc::make_mut(&mut st.io_limited).clear();
        assert_eq!(io_sets(&run(&snap, &cfg, &caps, false, &mut st)).len(), 2);
        // A level without limits is not re-sent with the static settings (offline-low has its
        // own here, offline none now); a change of limits goes to every workload, lifting the
        // old ones.
        cfg.io.offline_max = IoLimits::default();
        let sets = io_sets(&run(&snap, &cfg, &caps, false, &mut st));
        assert_eq!(sets.len(), 2, "the change: {sets:?}");
        assert!(sets
            .iter()
            .find(|(g, _)| g == "offline/offline/a")
            .is_some_and(|(_, l)| l.iter().all(IoLimit::is_unlimited)));
        let sets = io_sets(&run(&snap, &cfg, &caps, true, &mut st));
        assert_eq!(sets.len(), 1, "{sets:?}");
        assert!(sets[0].0.ends_with("/b"), "{sets:?}");
        cfg.io.offline_low_max = IoLimits::default();
        assert_eq!(io_sets(&run(&snap, &cfg, &caps, false, &mut st)).len(), 2);
        assert!(run(&snap, &cfg, &caps, true, &mut st).actions.is_empty());
    }
}
