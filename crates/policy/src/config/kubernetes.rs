//! The `kubernetes:` section of the config: where the kubelet's tree is, how pods are classified,
//! how batch resources are computed and published, and how pods are evicted. Plain data, validated
//! here like the rest of the config; the pod source (crate `tidal-kube`) reads it.

use super::{ConfigError, Millis};
use serde::{Deserialize, Serialize};
use tidal_model::{ForeignGroup, QosLevel};

/// The kubelet's cgroup driver, or `auto` (detected from its tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverSetting {
    Auto,
    Systemd,
    Cgroupfs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The node whose pods tidal manages; unset: the `NODE_NAME` environment variable (the
    /// DaemonSet sets it from the downward API).
    pub node_name: Option<String>,
    /// The kubelet's `--cgroup-root` (`/` unless it was changed).
    pub kubelet_cgroup_root: String,
    /// The kubelet's cgroup driver.
    pub cgroup_driver: DriverSetting,
    /// The kubelet's CPU manager state file (read only).
    pub cpu_manager_state: String,
    /// Kubernetes Events on pods (an invalid marking, an eviction).
    pub events: bool,
    /// At most one eviction per this interval.
    pub eviction_interval: Millis,
    /// The CPU-time cap, in CPUs, that stands in for freezing a pod whose containers have liveness
    /// or startup probes (a frozen pod fails them and the kubelet restarts it).
    pub probe_pod_cap_cpus: f64,
    pub classify: ClassifyConfig,
    pub batch: BatchConfig,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            node_name: None,
            kubelet_cgroup_root: "/".into(),
            cgroup_driver: DriverSetting::Auto,
            cpu_manager_state: "/var/lib/kubelet/cpu_manager_state".into(),
            events: true,
            eviction_interval: Millis(30_000),
            probe_pod_cap_cpus: 0.1,
            classify: ClassifyConfig::default(),
            batch: BatchConfig::default(),
        }
    }
}

/// One PriorityClass value band.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub min: i32,
    pub max: i32,
    pub level: QosLevel,
}

/// How pods get their level (the `kubernetes.classify` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifyConfig {
    /// Level of BestEffort pods that carry no marking.
    pub besteffort: QosLevel,
    /// PriorityClass value bands, first match wins (Koordinator's classes by default).
    pub priority_bands: Vec<Band>,
    /// Namespaces whose pods are never offline.
    pub system_namespaces: Vec<String>,
    /// Let a running pod move from offline to online when its marking changes.
    pub allow_promotion: bool,
}

impl Default for ClassifyConfig {
    fn default() -> Self {
        let b = |min, max, level| Band { min, max, level };
        ClassifyConfig {
            besteffort: QosLevel::Offline,
            priority_bands: vec![
                b(2_000_000_000, i32::MAX, QosLevel::OnlineCritical),
                b(9000, 9999, QosLevel::Online),
                b(7000, 7999, QosLevel::Online),
                b(5000, 5999, QosLevel::Offline),
                b(3000, 3999, QosLevel::OfflineLow),
            ],
            system_namespaces: vec!["kube-system".into()],
            allow_promotion: false,
        }
    }
}

/// Batch resources (the `kubernetes.batch` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Publish `kubernetes.io/batch-cpu` and `kubernetes.io/batch-memory` in node status.
    pub publish: bool,
    /// Kept back from capacity, percent.
    pub safety_margin_percent: f64,
    /// Online usage counts as its peak over this window.
    pub peak_window: Millis,
    /// At most one rise per this interval; a fall is published at once.
    pub rise_interval: Millis,
    /// A rise adds at most this percent of capacity.
    pub rise_step_percent: f64,
    /// Changes smaller than this percent of the published value are not published.
    pub min_change_percent: f64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            publish: true,
            safety_margin_percent: 10.0,
            peak_window: Millis(300_000),
            rise_interval: Millis(60_000),
            rise_step_percent: 10.0,
            min_change_percent: 5.0,
        }
    }
}

/// A DNS-1123 subdomain (a node name).
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn err(e: &mut Vec<ConfigError>, ok: bool, field: &str, reason: String) {
    if !ok {
        e.push(ConfigError {
            field: format!("kubernetes.{field}"),
            reason,
        });
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

impl KubernetesConfig {
    pub fn validate(&self, e: &mut Vec<ConfigError>) {
        if let Some(n) = &self.node_name {
            err(
                e,
                dns_subdomain(n),
                "node_name",
                format!(
                    "must be a node name (lowercase DNS subdomain) (got '{}')",
                    short(n)
                ),
            );
        }
        let root = self.kubelet_cgroup_root.trim_matches('/');
        err(
            e,
            root.is_empty() || ForeignGroup::new(root).is_ok(),
            "kubelet_cgroup_root",
            format!(
                "must be a cgroup path such as / or /kubelet, without '..' (got '{}')",
                short(&self.kubelet_cgroup_root)
            ),
        );
        err(
            e,
            self.cpu_manager_state.starts_with('/')
                && self.cpu_manager_state.len() <= 4096
                && !self.cpu_manager_state.contains('\0'),
            "cpu_manager_state",
            format!(
                "must be an absolute file path (got '{}')",
                short(&self.cpu_manager_state)
            ),
        );
        let iv = self.eviction_interval;
        err(
            e,
            (Millis(1_000)..=Millis(3_600_000)).contains(&iv),
            "eviction_interval",
            format!("must be between 1s and 1h (got {iv})"),
        );
        let cap = self.probe_pod_cap_cpus;
        err(
            e,
            cap.is_finite() && (0.01..=1024.0).contains(&cap),
            "probe_pod_cap_cpus",
            format!("must be between 0.01 and 1024 CPUs (got {cap})"),
        );
        let c = &self.classify;
        for (i, b) in c.priority_bands.iter().enumerate() {
            err(
                e,
                b.min <= b.max,
                &format!("classify.priority_bands[{i}]"),
                format!("min {} is above max {}", b.min, b.max),
            );
        }
        err(
            e,
            c.priority_bands.len() <= 64,
            "classify.priority_bands",
            format!("at most 64 bands (got {})", c.priority_bands.len()),
        );
        for n in &c.system_namespaces {
            err(
                e,
                dns_subdomain(n) && n.len() <= 63,
                "classify.system_namespaces",
                format!("'{}' is not a namespace name", short(n)),
            );
        }
        let b = &self.batch;
        for (f, v) in [
            ("safety_margin_percent", b.safety_margin_percent),
            ("rise_step_percent", b.rise_step_percent),
            ("min_change_percent", b.min_change_percent),
        ] {
            err(
                e,
                v.is_finite() && (0.0..=100.0).contains(&v),
                &format!("batch.{f}"),
                format!("must be between 0 and 100 percent (got {v})"),
            );
        }
        err(
            e,
            b.rise_step_percent > 0.0,
            "batch.rise_step_percent",
            "must be above 0 (the value could never rise)".into(),
        );
        for (f, v) in [
            ("peak_window", b.peak_window),
            ("rise_interval", b.rise_interval),
        ] {
            err(
                e,
                (Millis(1_000)..=Millis(86_400_000)).contains(&v),
                &format!("batch.{f}"),
                format!("must be between 1s and 1day (got {v})"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_checked() {
        for ok in ["node-1", "ip-10-0-0-1.ec2.internal", "a"] {
            assert!(dns_subdomain(ok), "{ok}");
        }
        for bad in ["", "Node", "-a", "a..b", "a_b", &"x".repeat(254)] {
            assert!(!dns_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn every_bad_kubernetes_field_is_named() {
        let k = KubernetesConfig {
            node_name: Some("Bad Name".into()),
            kubelet_cgroup_root: "../x".into(),
            cpu_manager_state: "relative".into(),
            eviction_interval: Millis(10),
            probe_pod_cap_cpus: f64::NAN,
            classify: ClassifyConfig {
                priority_bands: vec![Band {
                    min: 5,
                    max: 1,
                    level: QosLevel::Offline,
                }],
                ..ClassifyConfig::default()
            },
            batch: BatchConfig {
                safety_margin_percent: 200.0,
                peak_window: Millis(1),
                ..BatchConfig::default()
            },
            ..KubernetesConfig::default()
        };
        let mut e = Vec::new();
        k.validate(&mut e);
        let fields: Vec<&str> = e.iter().map(|x| x.field.as_str()).collect();
        for f in [
            "kubernetes.node_name",
            "kubernetes.kubelet_cgroup_root",
            "kubernetes.cpu_manager_state",
            "kubernetes.eviction_interval",
            "kubernetes.probe_pod_cap_cpus",
            "kubernetes.classify.priority_bands[0]",
            "kubernetes.batch.safety_margin_percent",
            "kubernetes.batch.peak_window",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let mut e = Vec::new();
        KubernetesConfig::default().validate(&mut e);
        assert!(e.is_empty(), "{e:?}");
    }
}
