//! Where the kubelet puts pods and containers in the cgroup tree, for both cgroup drivers and the
//! container runtimes tidal knows (containerd, CRI-O, docker), on v1, v2 and hybrid hosts (the same
//! relative path under every hierarchy). tidal never creates, moves or removes anything here; it only
//! sets values on pod and container groups, never on the kubelet's QoS-tier groups.

use serde::{Deserialize, Serialize};
use std::path::Path;
use tidal_model::{BadPath, ForeignGroup, QosClass};

/// The kubelet's cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

/// `--cgroup-root` of the kubelet (`/` by default), without slashes at either end.
fn root(cgroup_root: &str) -> String {
    cgroup_root.trim_matches('/').to_string()
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

/// The tier group of a QoS class (`kubepods/besteffort`, `kubepods.slice/kubepods-besteffort.slice`).
pub fn tier_group(
    cgroup_root: &str,
    driver: Driver,
    qos: QosClass,
) -> Result<ForeignGroup, BadPath> {
    let r = root(cgroup_root);
    let p = match (driver, qos) {
        (Driver::Cgroupfs, QosClass::Guaranteed) => join(&[&r, "kubepods"]),
        (Driver::Cgroupfs, QosClass::Burstable) => join(&[&r, "kubepods", "burstable"]),
        (Driver::Cgroupfs, QosClass::BestEffort) => join(&[&r, "kubepods", "besteffort"]),
        (Driver::Systemd, QosClass::Guaranteed) => join(&[&r, "kubepods.slice"]),
        (Driver::Systemd, QosClass::Burstable) => {
            join(&[&r, "kubepods.slice", "kubepods-burstable.slice"])
        }
        (Driver::Systemd, QosClass::BestEffort) => {
            join(&[&r, "kubepods.slice", "kubepods-besteffort.slice"])
        }
    };
    ForeignGroup::new(&p)
}

/// The pod's group.
pub fn pod_group(
    cgroup_root: &str,
    driver: Driver,
    qos: QosClass,
    uid: &str,
) -> Result<ForeignGroup, BadPath> {
    let tier = tier_group(cgroup_root, driver, qos)?;
    let name = match (driver, qos) {
        (Driver::Cgroupfs, _) => format!("pod{uid}"),
        (Driver::Systemd, QosClass::Guaranteed) => {
            format!("kubepods-pod{}.slice", uid.replace('-', "_"))
        }
        (Driver::Systemd, QosClass::Burstable) => {
            format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"))
        }
        (Driver::Systemd, QosClass::BestEffort) => {
            format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"))
        }
    };
    tier.join(&name)
}

/// A container's group inside its pod's, from its `containerID` (`containerd://<id>`).
pub fn container_group(
    pod: &ForeignGroup,
    driver: Driver,
    container_id: &str,
) -> Result<ForeignGroup, BadPath> {
    let (runtime, id) = container_id
        .split_once("://")
        .unwrap_or(("containerd", container_id));
    let name = match (driver, runtime) {
        (Driver::Cgroupfs, "cri-o") => format!("crio-{id}"),
        (Driver::Cgroupfs, _) => id.to_string(),
        (Driver::Systemd, "cri-o") => format!("crio-{id}.scope"),
        (Driver::Systemd, "docker") => format!("docker-{id}.scope"),
        (Driver::Systemd, _) => format!("cri-containerd-{id}.scope"),
    };
    pod.join(&name)
}

/// The driver, from the tree under a hierarchy's mount: `kubepods.slice` is systemd's.
pub fn detect_driver(mount: &Path, cgroup_root: &str) -> Option<Driver> {
    let base = mount.join(root(cgroup_root));
    if base.join("kubepods.slice").is_dir() {
        Some(Driver::Systemd)
    } else if base.join("kubepods").is_dir() {
        Some(Driver::Cgroupfs)
    } else {
        None
    }
}

/// The kubelet's tier groups under `cgroup_root`, for both drivers (never written: the actuator
/// is told to refuse them and the groups above them).
pub fn tiers(cgroup_root: &str) -> Vec<ForeignGroup> {
    [Driver::Cgroupfs, Driver::Systemd]
        .iter()
        .flat_map(|d| {
            [
                QosClass::Guaranteed,
                QosClass::Burstable,
                QosClass::BestEffort,
            ]
            .map(|q| tier_group(cgroup_root, *d, q))
        })
        .filter_map(Result::ok)
        .collect()
}

/// Is `g` one of the kubelet's tier groups (never written)?
pub fn is_tier(cgroup_root: &str, g: &ForeignGroup) -> bool {
    tiers(cgroup_root).contains(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0c4ee4c0-2f1a-4b3e-9d8a-1234567890ab";

    #[test]
    fn layouts_for_both_drivers_and_every_runtime() {
        let p = pod_group("/", Driver::Cgroupfs, QosClass::BestEffort, UID).unwrap();
        assert_eq!(p.as_str(), format!("kubepods/besteffort/pod{UID}"));
        let g = pod_group("/", Driver::Cgroupfs, QosClass::Guaranteed, UID).unwrap();
        assert_eq!(g.as_str(), format!("kubepods/pod{UID}"));
        assert_eq!(
            container_group(&p, Driver::Cgroupfs, "containerd://abc")
                .unwrap()
                .as_str(),
            format!("kubepods/besteffort/pod{UID}/abc")
        );
        assert_eq!(
            container_group(&p, Driver::Cgroupfs, "cri-o://abc")
                .unwrap()
                .name(),
            "crio-abc"
        );
        let s = pod_group("", Driver::Systemd, QosClass::Burstable, UID).unwrap();
        let under = UID.replace('-', "_");
        assert_eq!(
            s.as_str(),
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice")
        );
        let gs = pod_group("/", Driver::Systemd, QosClass::Guaranteed, UID).unwrap();
        assert_eq!(
            gs.as_str(),
            format!("kubepods.slice/kubepods-pod{under}.slice")
        );
        for (id, want) in [
            ("containerd://abc", "cri-containerd-abc.scope"),
            ("cri-o://abc", "crio-abc.scope"),
            ("docker://abc", "docker-abc.scope"),
        ] {
            assert_eq!(
                container_group(&s, Driver::Systemd, id).unwrap().name(),
                want
            );
        }
        // A kubelet --cgroup-root moves everything under it.
        let r = pod_group("/custom/root", Driver::Cgroupfs, QosClass::BestEffort, UID).unwrap();
        assert!(r.as_str().starts_with("custom/root/kubepods/besteffort/"));
        assert!(is_tier(
            "/",
            &tier_group("/", Driver::Systemd, QosClass::BestEffort).unwrap()
        ));
        assert!(!is_tier("/", &p));
        // Both drivers' three tiers, under a custom root too.
        let t = tiers("/custom");
        assert_eq!(t.len(), 6);
        assert!(t.iter().all(|g| g.as_str().starts_with("custom/kubepods")));
        assert!(t.iter().any(|g| g.as_str() == "custom/kubepods"));
    }

    #[test]
    fn ids_that_would_climb_are_refused() {
        let p = pod_group("/", Driver::Cgroupfs, QosClass::BestEffort, UID).unwrap();
        assert!(container_group(&p, Driver::Cgroupfs, "containerd://..").is_err());
        assert!(container_group(&p, Driver::Cgroupfs, "containerd://a/b").is_err());
        assert!(pod_group("/", Driver::Cgroupfs, QosClass::BestEffort, "../x").is_err());
    }

    #[test]
    fn fake_fs_driver_is_detected_from_the_tree() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(detect_driver(d.path(), "/"), None);
        std::fs::create_dir_all(d.path().join("kubepods.slice")).unwrap();
        assert_eq!(detect_driver(d.path(), "/"), Some(Driver::Systemd));
        let e = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(e.path().join("r/kubepods")).unwrap();
        assert_eq!(detect_driver(e.path(), "/r"), Some(Driver::Cgroupfs));
    }
}
